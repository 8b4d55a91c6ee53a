"""More wrong solutions of notebook 9, written as learners write them: RMS norm for layer norm, and group norm
backwards whose dgamma/dbeta are averaged or per group, or whose dx divides by M twice.

``nb09`` adds these to its ``WRONG``; each forward here is the right one the backward is chained to.
"""

import numpy as np


def ln_fwd_rms(x, gamma, beta, eps=1e-5):
    rms = np.sqrt((x ** 2).mean(axis=1, keepdims=True) + eps)
    return gamma * (x / rms) + beta, None


def ln_fwd_rms_norm_of_row(x, gamma, beta, eps=1e-5):
    D = x.shape[1]
    x_hat = x / np.sqrt(np.sum(x * x, axis=1, keepdims=True) / D + eps)
    return x_hat * gamma + beta, None


def ln_fwd_rms_no_eps(x, gamma, beta, eps=1e-5):
    return gamma * x / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True)) + beta, None


def gn_fwd_rms(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    x_hat = (xg / np.sqrt((xg ** 2).mean(2, keepdims=True) + eps)).reshape(x.shape)
    return x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), None


def gn_forward(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    mu = xg.mean(2, keepdims=True)
    var = xg.var(2, keepdims=True)
    x_hat = ((xg - mu) / np.sqrt(var + eps)).reshape(N, C, H, W)
    return x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), (x, x_hat, var, gamma, G, eps)


def _gn_dx(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    N, C, H, W = x.shape
    g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, -1)
    xh = x_hat.reshape(N, G, -1)
    M = g.shape[2]
    return (1 / np.sqrt(var + eps) / M * (M * g - g.sum(2, keepdims=True) - xh * (g * xh).sum(2, keepdims=True))
            ).reshape(x.shape)


def gn_bwd_dparams_averaged(dout, cache):
    x_hat = cache[1]
    return _gn_dx(dout, cache), (dout * x_hat).mean(axis=(0, 2, 3)), dout.mean(axis=(0, 2, 3))


def gn_bwd_dparams_per_group(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    N, C, H, W = x.shape
    dgamma = (dout * x_hat).reshape(N, G, -1).sum(axis=(0, 2))
    dbeta = dout.reshape(N, G, -1).sum(axis=(0, 2))
    return _gn_dx(dout, cache), dgamma, dbeta


def gn_bwd_dparams_per_group_after_sum(dout, cache):
    G = cache[4]
    dgamma = (dout * cache[1]).sum((0, 2, 3)).reshape(G, -1).sum(1)
    return _gn_dx(dout, cache), dgamma, dout.sum((0, 2, 3)).reshape(G, -1).sum(1)


def gn_bwd_means_then_over_m(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    N, C, H, W = x.shape
    g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, -1)
    xh = x_hat.reshape(N, G, -1)
    M = g.shape[2]
    dx = 1 / np.sqrt(var + eps) / M * (g - g.mean(2, keepdims=True) - xh * (g * xh).mean(2, keepdims=True))
    return dx.reshape(x.shape), (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))


def gn_bwd_sums_over_m_squared(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    N, C, H, W = x.shape
    g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, -1)
    xh = x_hat.reshape(N, G, -1)
    M = g.shape[2]
    s1, s2 = g.sum(2, keepdims=True), (g * xh).sum(2, keepdims=True)
    dx = 1 / np.sqrt(var + eps) * (g - s1 / M ** 2 - xh * s2 / M ** 2)
    return dx.reshape(x.shape), (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))


WRONG = [
    ("layernorm_forward", ["RMS norm"], ln_fwd_rms),
    ("layernorm_forward", ["RMS norm"], ln_fwd_rms_norm_of_row),
    ("layernorm_forward", ["RMS norm", "mean not subtracted"], ln_fwd_rms_no_eps),
    ("groupnorm_forward", ["RMS norm"], gn_fwd_rms),
    ("groupnorm_backward", ["averaged"], (gn_forward, gn_bwd_dparams_averaged)),
    ("groupnorm_backward", ["per group"], (gn_forward, gn_bwd_dparams_per_group)),
    ("groupnorm_backward", ["per group"], (gn_forward, gn_bwd_dparams_per_group_after_sum)),
    ("groupnorm_backward", ["divided by M twice"], (gn_forward, gn_bwd_means_then_over_m)),
    ("groupnorm_backward", ["divided by M twice"], (gn_forward, gn_bwd_sums_over_m_squared)),
]



def ln_fwd_times_std(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    return gamma * (x - mu) * np.sqrt(x.var(axis=1, keepdims=True) + eps) + beta, None


WRONG += [("layernorm_forward", ["multiplied by sqrt(var + eps)"], ln_fwd_times_std)]
RIGHT = []

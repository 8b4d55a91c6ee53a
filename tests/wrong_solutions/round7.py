"""Wrong solutions a seventh held-out round found unnamed (and their neighbours), by notebook (``WRONG_BY_NB``):
each as a learner writes it. Notebook 4's are in ``round7_torch``."""

import numpy as np

from bncourse.reference import batchnorm as ref


# ------------------------------------------------------------------------------ notebook 2


def fwd_gamma_before_normalizing(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=0), x.var(axis=0)
    return (gamma * x - mu) / np.sqrt(var + eps) + beta, None


def fwd_gamma_and_beta_before_subtracting(x, gamma, beta, eps=1e-5):
    mu, std = x.mean(0), np.sqrt(x.var(0) + eps)
    return (x * gamma + beta - mu) / std, None


def fwd_scaled_then_standardized(x, gamma, beta, eps=1e-5):
    y = gamma * x
    return (y - y.mean(0)) / np.sqrt(y.var(0) + eps) + beta, None


def running_not_decayed(x, running_mean, running_var, momentum=0.1):
    return running_mean + momentum * x.mean(0), running_var + momentum * x.var(0, ddof=1)


def running_old_times_momentum(x, running_mean, running_var, momentum=0.1):
    new_mean = running_mean * momentum + x.mean(axis=0)
    new_var = running_var * momentum + x.var(axis=0, ddof=1)
    return new_mean, new_var


def running_only_batch_weighted(x, running_mean, running_var, momentum=0.1):
    return momentum * x.mean(0), momentum * x.var(0, ddof=1)


# ------------------------------------------------------------------------------ notebook 3


def bwd_mean_term_added(dout, cache):
    n = dout.shape[0]
    dxhat = dout * cache.gamma
    dx = (n * dxhat + dxhat.sum(0) - cache.x_hat * (dxhat * cache.x_hat).sum(0)) * cache.inv_std / n
    return dx, (dout * cache.x_hat).sum(0), dout.sum(0)


def bwd_dx_negated(dout, cache):
    n = dout.shape[0]
    dxhat = dout * cache.gamma
    dx = cache.inv_std / n * (dxhat.sum(0) + cache.x_hat * (dxhat * cache.x_hat).sum(0) - n * dxhat)
    return dx, (dout * cache.x_hat).sum(0), dout.sum(0)


def staged_var_node_n_minus_1(dout, cache):
    n = dout.shape[0]
    dx_hat = dout * cache.gamma
    dinv_std = (dx_hat * cache.xmu).sum(0)
    dstd = -dinv_std / cache.std ** 2
    dvar = dstd / (2 * cache.std)
    dsq = np.ones_like(dout) * dvar / (n - 1)
    dxmu = dx_hat * cache.inv_std + 2 * cache.xmu * dsq
    dmu = -dxmu.sum(0)
    return dxmu + dmu / n, (dout * cache.x_hat).sum(0), dout.sum(0)


def staged_gamma_twice(dout, cache):
    n = dout.shape[0]
    dx_hat = dout * cache.gamma
    dinv_std = (dx_hat * cache.xmu).sum(0)
    dvar = -dinv_std / cache.std ** 2 / (2 * cache.std)
    dxmu = dx_hat * cache.inv_std + 2 * cache.xmu * dvar / n
    dx = dxmu - dxmu.sum(0) / n
    return dx * cache.gamma, (dout * cache.x_hat).sum(0), dout.sum(0)


def spatial_fwd_per_image(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=(1, 2, 3), keepdims=True)
    var = x.var(axis=(1, 2, 3), keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    out = gamma.reshape(1, -1, 1, 1) * x_hat + beta.reshape(1, -1, 1, 1)
    return out, (x_hat, var, gamma)


def spatial_fwd_gamma_last_axis(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, (x_hat, var, gamma)


def spatial_fwd_4d(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    g = gamma.reshape(1, -1, 1, 1)
    return g * x_hat + beta.reshape(1, -1, 1, 1), (x_hat, 1 / np.sqrt(var + eps), g)


def _spatial_bwd(kind):
    def backward(dout, cache):
        x_hat, inv_std, g = cache
        m = dout.size // dout.shape[1]
        axes = (2, 3) if kind == "per-image" else (0, 2, 3)
        dgamma, dbeta = (dout * x_hat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))
        dxhat = dout * g
        if kind == "per-image":
            m = dout.shape[2] * dout.shape[3]
        mean_term = 0 if kind == "no-mean" else dxhat.sum(axis=axes, keepdims=True)
        var_term = x_hat * (dxhat * x_hat).sum(axis=axes, keepdims=True)
        if kind == "plus-var":
            var_term = -var_term
        return inv_std / m * (m * dxhat - mean_term - var_term), dgamma, dbeta
    backward.__name__ = f"spatial_bwd_{kind.replace('-', '_')}"
    return backward


# ------------------------------------------------------------------------------ notebook 7


def drift_pooled_std(h_before, h_after):
    d_mean = np.abs(h_after.mean(axis=0) - h_before.mean(axis=0)).mean()
    d_std = abs(h_after.std() - h_before.std())
    return float((d_mean + d_std) / h_before.std(axis=0).mean())


def drift_pooled_std_everywhere(h_before, h_after):
    d_mean = np.mean(np.abs(np.mean(h_after, 0) - np.mean(h_before, 0)))
    return float((d_mean + np.abs(np.std(h_after) - np.std(h_before))) / np.std(h_before))


def gradient_cosine_mean(g_before, g_after):
    a, b = g_before.ravel(), g_after.ravel()
    rel = np.linalg.norm(b - a) / np.linalg.norm(a)
    cos = np.mean(a * b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return float(rel), float(cos)


WRONG_BY_NB = {"7": [
    ("input_drift", ["one std over all entries", "pooled"], drift_pooled_std),
    ("input_drift", ["one std over all entries", "pooled"], drift_pooled_std_everywhere),
    ("gradient_change", ["inner product a mean"], gradient_cosine_mean),
], "2-3": [
    ("batchnorm_backward", ["sign error on the path through the mean"], bwd_mean_term_added),
    ("batchnorm_backward", ["wrong sign"], bwd_dx_negated),
    ("batchnorm_backward_staged", ["N - 1"], staged_var_node_n_minus_1),
    ("batchnorm_backward_staged", ["gamma applied twice"], staged_gamma_twice),
    ("spatial_batchnorm_forward", ["per image"], spatial_fwd_per_image),
    ("spatial_batchnorm_forward", ["last axis"], spatial_fwd_gamma_last_axis),
    ("spatial_batchnorm_backward", ["through the mean"], (spatial_fwd_4d, _spatial_bwd("no-mean"))),
    ("spatial_batchnorm_backward", ["sign error on the path through the variance"],
     (spatial_fwd_4d, _spatial_bwd("plus-var"))),
    ("spatial_batchnorm_backward", ["per image"], (spatial_fwd_4d, _spatial_bwd("per-image"))),
    ("batchnorm_forward", ["gamma is applied before normalizing"], fwd_gamma_before_normalizing),
    ("batchnorm_forward", ["before normalizing"], fwd_gamma_and_beta_before_subtracting),
    ("batchnorm_forward", ["before normalizing"], fwd_scaled_then_standardized),
    ("update_running_stats", ["not decayed"], running_not_decayed),
    ("update_running_stats", ["not decayed"], running_old_times_momentum),
    ("update_running_stats", ["not decayed"], running_only_batch_weighted),
]}


# neighbours: the backward recomputing an unbiased variance, the precedence slip, dx's M taken as H*W
def bwd_recomputed_unbiased(dout, cache):
    n = dout.shape[0]
    std = np.sqrt(cache.xmu.var(axis=0, ddof=1) + cache.eps)
    x_hat = cache.xmu / std
    dxhat = dout * cache.gamma
    dx = (n * dxhat - dxhat.sum(0) - x_hat * (dxhat * x_hat).sum(0)) / (n * std)
    return dx, (dout * cache.x_hat).sum(0), dout.sum(0)


def fwd_precedence(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(0) / np.sqrt(x.var(0) + eps)) + beta, None


def _spatial_bwd_count_hw(dout, cache):
    x_hat, inv_std, g = cache
    m = dout.shape[2] * dout.shape[3]
    dxhat = dout * g
    dx = inv_std / m * (m * dxhat - dxhat.sum(axis=(0, 2, 3), keepdims=True)
                        - x_hat * (dxhat * x_hat).sum(axis=(0, 2, 3), keepdims=True))
    return dx, (dout * x_hat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))


WRONG_BY_NB["2-3"] += [
    ("batchnorm_backward", ["unbiased variance"], bwd_recomputed_unbiased),
    ("batchnorm_forward", ["precedence"], fwd_precedence),
    ("spatial_batchnorm_backward", ["H*W instead of N*H*W"], (spatial_fwd_4d, _spatial_bwd_count_hw)),
]


def gradient_rel_rms_numerator(g_before, g_after):
    a, b = g_before.ravel(), g_after.ravel()
    rel = np.sqrt(np.mean((b - a) ** 2)) / np.linalg.norm(a)
    return float(rel), float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


WRONG_BY_NB["7"] += [("gradient_change", ["root-mean-square"], gradient_rel_rms_numerator)]

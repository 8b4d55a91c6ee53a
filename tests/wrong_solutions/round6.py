"""Wrong solutions a sixth held-out round found unnamed, by notebook (``WRONG_BY_NB``): each as a learner writes it."""

import numpy as np

from bncourse.reference import batchnorm as ref


# ------------------------------------------------------------------------------ notebook 3


def bwd_n_missing_on_dout(dout, cache):
    """Closed form with dout where N * dout belongs."""
    x, x_hat, mu, var, gamma, eps = cache.x, cache.x_hat, cache.mu, cache.var, cache.gamma, cache.eps
    n = dout.shape[0]
    inv_std = 1 / np.sqrt(var + eps)
    dbeta = dout.sum(0)
    dgamma = (dout * x_hat).sum(0)
    dx = gamma * inv_std / n * (dout - dbeta - x_hat * dgamma)
    return dx, dgamma, dbeta


def spatial_fwd_same_transpose_back(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    out, cache = ref.batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, c), gamma, beta, eps)
    return out.reshape(n, h, w, c).transpose(0, 2, 3, 1), cache


def spatial_fwd_rows(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    rows = x.transpose(0, 2, 3, 1).reshape(-1, c)
    mu, var = rows.mean(0), rows.var(0)
    inv_std = 1 / np.sqrt(var + eps)
    x_hat = (rows - mu) * inv_std
    out = (gamma * x_hat + beta).reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return out, (x_hat, inv_std, gamma, x.shape)


def spatial_fwd_not_transposed_back(x, gamma, beta, eps=1e-5):
    """The (N, H, W, C) result returned as it is (right shape only when H = W = C)."""
    n, c, h, w = x.shape
    out, cache = ref.batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, c), gamma, beta, eps)
    return out.reshape(n, h, w, c), cache


def spatial_fwd_channels_first_back(x, gamma, beta, eps=1e-5):
    """(N, H, W, C) transposed with (3, 0, 1, 2): channels moved in front of the batch."""
    n, c, h, w = x.shape
    out, cache = ref.batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, c), gamma, beta, eps)
    return out.reshape(n, h, w, c).transpose(3, 0, 1, 2), cache


def spatial_bwd_divides_by_n(dout, cache):
    """Closed form on the (N*H*W, C) rows with the batch size N as the count."""
    x_hat, inv_std, gamma, shape = cache
    n, c, h, w = shape
    rows = dout.transpose(0, 2, 3, 1).reshape(-1, c)
    dbeta = rows.sum(0)
    dgamma = (rows * x_hat).sum(0)
    dx = gamma * inv_std / n * (n * rows - dbeta - x_hat * dgamma)
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma, dbeta


# ------------------------------------------------------------------------------ notebook 9


def ln_forward(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=1, keepdims=True), x.var(axis=1, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, (x, x_hat, mu, var, gamma, eps)


def ln_bwd_xmu_in_variance_term(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    d = x.shape[1]
    inv_std = 1 / np.sqrt(var + eps)
    g = dout * gamma
    dx = inv_std / d * (d * g - g.sum(1, keepdims=True) - (x - mu) * (g * x_hat).sum(1, keepdims=True))
    return dx, (dout * x_hat).sum(0), dout.sum(0)


def gn_forward(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    mu, var = xg.mean(2, keepdims=True), xg.var(2, keepdims=True)
    x_hat = ((xg - mu) / np.sqrt(var + eps)).reshape(N, C, H, W)
    return x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), (x, x_hat, var, gamma, G, eps)


def gn_bwd_sums_over_batch(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    N, C, H, W = x.shape
    g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, C // G, H, W)
    xh = x_hat.reshape(N, G, C // G, H, W)
    M = C // G * H * W
    inv_std = (1 / np.sqrt(var + eps)).reshape(N, G, 1, 1, 1)
    dx = inv_std / M * (M * g - g.sum((0, 2, 3, 4), keepdims=True) - xh * (g * xh).sum((0, 2, 3, 4), keepdims=True))
    return dx.reshape(x.shape), (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))


def gn_forward_strided(x, gamma, beta, G, eps=1e-5):
    """Channel c in group c % G: the channels viewed as (C // G, G)."""
    N, C, H, W = x.shape
    xg = x.reshape(N, C // G, G, H, W)
    mu, var = xg.mean((1, 3, 4), keepdims=True), xg.var((1, 3, 4), keepdims=True)
    x_hat = (xg - mu) / np.sqrt(var + eps)
    out = x_hat.reshape(x.shape) * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1)
    return out, (x, x_hat, var, gamma, G, eps)


def gn_bwd_strided(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    N, C, H, W = x.shape
    g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, C // G, G, H, W)
    M = C // G * H * W
    dx = 1 / np.sqrt(var + eps) / M * (M * g - g.sum((1, 3, 4), keepdims=True)
                                        - x_hat * (g * x_hat).sum((1, 3, 4), keepdims=True))
    x_hat = x_hat.reshape(x.shape)
    return dx.reshape(x.shape), (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))


# ------------------------------------------------------------------------------ notebook 7


def drift_median_over_units(h_before, h_after):
    a, b = np.asarray(h_before, dtype=np.float64), np.asarray(h_after, dtype=np.float64)
    moved = np.median(np.abs(b.mean(0) - a.mean(0))) + np.median(np.abs(b.std(0) - a.std(0)))
    return float(moved / np.median(a.std(0)))


def grad_change_elementwise_relative(g_before, g_after):
    a, b = np.asarray(g_before, dtype=np.float64).ravel(), np.asarray(g_after, dtype=np.float64).ravel()
    rel = np.mean(np.abs(a - b) / np.abs(a))
    return float(rel), float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


WRONG_BY_NB = {
    "2-3": [
        ("batchnorm_backward", ["n * dout", "factor n on dout", "n*dout"], bwd_n_missing_on_dout),
        ("spatial_batchnorm_forward", ["wrong permutation", "inverse"], spatial_fwd_same_transpose_back),
        ("spatial_batchnorm_forward", ["wrong permutation", "inverse"], spatial_fwd_not_transposed_back),
        ("spatial_batchnorm_forward", ["wrong permutation", "inverse"], spatial_fwd_channels_first_back),
        ("spatial_batchnorm_backward", ["batch size", "n*h*w"], (spatial_fwd_rows, spatial_bwd_divides_by_n)),
    ],
    "9": [("layernorm_backward", ["x - mu in place of x_hat"], (ln_forward, ln_bwd_xmu_in_variance_term)),
          ("groupnorm_backward", ["over the batch as well"], (gn_forward, gn_bwd_sums_over_batch)),
          ("groupnorm_backward", ["non-adjacent channels"], (gn_forward_strided, gn_bwd_strided)),
          ("groupnorm_forward", ["non-adjacent channels"], gn_forward_strided)],
    "7": [
        ("input_drift", ["median"], drift_median_over_units),
        ("gradient_change", ["elementwise", "element-wise"], grad_change_elementwise_relative),
    ],
}

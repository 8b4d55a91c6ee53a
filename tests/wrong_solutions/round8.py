"""Wrong solutions an eighth held-out round found unnamed (and their neighbours), by notebook (``WRONG_BY_NB``):
each as a learner writes it. Notebook 8's run on gloo ranks, so this module is sent to the workers by value."""

import sys

import cloudpickle
import numpy as np
import torch
import torch.distributed as dist

from bncourse.nn_sync import SyncBNCache
from bncourse.reference import batchnorm as ref

cloudpickle.register_pickle_by_value(sys.modules[__name__])


# ------------------------------------------------------------------------------ notebook 2: the variance uncentred


def fwd_var_mean_of_squares(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=0)
    var = np.mean(x ** 2, axis=0)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None


def fwd_var_mean_of_squares_minus_zero(x, gamma, beta, eps=1e-5):
    mu = x.mean(0)
    var = np.mean(x**2, 0) - 0
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, None


def fwd_var_sum_of_squares_over_n(x, gamma, beta, eps=1e-5):
    n = x.shape[0]
    mu = x.sum(axis=0) / n
    var = (x * x).sum(axis=0) / n
    return gamma * ((x - mu) / np.sqrt(var + eps)) + beta, None


def fwd_rms_no_centring(x, gamma, beta, eps=1e-5):
    """Neither the variance nor x centred: RMS norm."""
    return gamma * x / np.sqrt(np.mean(x ** 2, axis=0) + eps) + beta, None


def running_var_uncentred(x, running_mean, running_var, momentum=0.1):
    n = x.shape[0]
    new_mean = (1 - momentum) * running_mean + momentum * x.mean(0)
    new_var = (1 - momentum) * running_var + momentum * (x ** 2).sum(0) / (n - 1)
    return new_mean, new_var


def running_var_mean_of_squares(x, running_mean, running_var, momentum=0.1):
    return (1 - momentum) * running_mean + momentum * x.mean(0), (1 - momentum) * running_var + momentum * np.mean(x**2, 0)


# ------------------------------------------------------------------------------ notebook 3: N read from axis 1


def bwd_n_from_axis_1(dout, cache):
    n = dout.shape[1]
    dxhat = dout * cache.gamma
    dx = (n * dxhat - dxhat.sum(0) - cache.x_hat * (dxhat * cache.x_hat).sum(0)) * cache.inv_std / n
    return dx, (dout * cache.x_hat).sum(0), dout.sum(0)


def bwd_n_unpacked_wrong(dout, cache):
    D, N = dout.shape
    dbeta = dout.sum(axis=0)
    dgamma = (dout * cache.x_hat).sum(axis=0)
    dx = cache.gamma * cache.inv_std / N * (N * dout - dbeta - cache.x_hat * dgamma)
    return dx, dgamma, dbeta


def staged_n_from_axis_1(dout, cache):
    n = dout.shape[1]
    dx_hat = dout * cache.gamma
    dinv_std = (dx_hat * cache.xmu).sum(0)
    dstd = -dinv_std / cache.std ** 2
    dvar = dstd / (2 * cache.std)
    dsq = np.ones_like(dout) * dvar / n
    dxmu = dx_hat * cache.inv_std + 2 * cache.xmu * dsq
    dmu = -dxmu.sum(0)
    return dxmu + dmu / n, (dout * cache.x_hat).sum(0), dout.sum(0)


# ------------------------------------------------------------------------------ notebook 3: spatial, rows and back


def spatial_fwd_rows_w_before_h(x, gamma, beta, eps=1e-5):
    """Rows built from (N, W, H, C), reshaped back as if they were (N, H, W, C)."""
    N, C, H, W = x.shape
    out, cache = ref.batchnorm_forward(x.transpose(0, 3, 2, 1).reshape(-1, C), gamma, beta, eps)
    return out.reshape(N, H, W, C).transpose(0, 3, 1, 2), cache


def spatial_fwd_back_as_w_before_h(x, gamma, beta, eps=1e-5):
    """Rows built from (N, H, W, C), read back as (N, W, H, C) and transposed with that order's inverse."""
    N, C, H, W = x.shape
    out, cache = ref.batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, C), gamma, beta, eps)
    return out.reshape(N, W, H, C).transpose(0, 3, 2, 1), cache


def spatial_fwd_back_same_transpose(x, gamma, beta, eps=1e-5):
    N, C, H, W = x.shape
    rows = x.transpose(0, 2, 3, 1).reshape(N * H * W, C)
    out, cache = ref.batchnorm_forward(rows, gamma, beta, eps)
    return out.reshape(N, H, W, C).transpose(0, 2, 3, 1), cache


def spatial_fwd_back_reshaped_only(x, gamma, beta, eps=1e-5):
    N, C, H, W = x.shape
    rows = np.moveaxis(x, 1, -1).reshape(-1, C)
    out, cache = ref.batchnorm_forward(rows, gamma, beta, eps)
    return out.reshape(N, C, H, W), cache


def spatial_fwd_rows_w_last(x, gamma, beta, eps=1e-5):
    """C moved with (0, 3, 1, 2), the inverse permutation: W ends up last, and undone correctly."""
    N, C, H, W = x.shape
    out, cache = ref.batchnorm_forward(x.transpose(0, 3, 1, 2).reshape(-1, C), gamma, beta, eps)
    return out.reshape(N, W, C, H).transpose(0, 2, 3, 1), cache


# ------------------------------------------------------------------------------ notebook 9: the affine step grouped


def _grouped_x_hat(x, G, eps):
    N = x.shape[0]
    xg = x.reshape(N, G, -1)
    return (xg - xg.mean(axis=2, keepdims=True)) / np.sqrt(xg.var(axis=2, keepdims=True) + eps)


def gn_affine_grouped_tiled(x, gamma, beta, G, eps=1e-5):
    """gamma and beta tiled to the group's length in the (N, G, M) layout: channel order lost."""
    N, C, H, W = x.shape
    x_hat = _grouped_x_hat(x, G, eps)
    g = np.tile(gamma, H * W).reshape(1, G, -1)
    b = np.tile(beta, H * W).reshape(1, G, -1)
    return (x_hat * g + b).reshape(N, C, H, W), None


def gn_affine_grouped_mean(x, gamma, beta, G, eps=1e-5):
    """One gamma and beta per group: the mean of its channels'."""
    N, C, H, W = x.shape
    x_hat = _grouped_x_hat(x, G, eps)
    g = gamma.reshape(G, -1).mean(axis=1)[None, :, None]
    b = beta.reshape(G, -1).mean(axis=1)[None, :, None]
    return (x_hat * g + b).reshape(N, C, H, W), None


def gn_affine_grouped_reshaped(x, gamma, beta, G, eps=1e-5):
    """gamma and beta reshaped to (1, G, C/G) to meet the (N, G, M) layout: numpy refuses the broadcast."""
    N, C, H, W = x.shape
    x_hat = _grouped_x_hat(x, G, eps)
    return (x_hat * gamma.reshape(1, G, -1) + beta.reshape(1, G, -1)).reshape(N, C, H, W), None


def gn_affine_grouped_channel_column(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    x_hat = _grouped_x_hat(x, G, eps)
    out = x_hat * gamma[None, :, None] + beta[None, :, None]
    return out.reshape(N, C, H, W), None


# ------------------------------------------------------------------------------ notebook 8


def _update(rm, rv, mean, var_unbiased, momentum):
    with torch.no_grad():
        rm.mul_(1 - momentum).add_(momentum * mean.to(rm.dtype))
        rv.mul_(1 - momentum).add_(momentum * var_unbiased.to(rv.dtype))


def sync_fwd_var_mean_of_squares(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])]).double()
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean = buf[:C] / n
    var = buf[C:2 * C] / n
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    invstd = 1 / torch.sqrt(var + eps)
    x_hat = (x - mean) * invstd
    return (weight * x_hat + bias).to(x.dtype), SyncBNCache(x_hat, invstd, weight, n)


def sync_fwd_var_q_over_n_separate(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    s, q = x.double().sum(0), (x.double() ** 2).sum(0)
    n = torch.tensor([float(x.shape[0])], dtype=torch.float64)
    for t in (s, q, n):
        dist.all_reduce(t)
    n = n.item()
    mean = s / n
    var = q / n
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    invstd = torch.rsqrt(var + eps)
    x_hat = (x - mean) * invstd
    return (weight * x_hat + bias).to(x.dtype), SyncBNCache(x_hat.to(x.dtype), invstd.to(x.dtype), weight, n)


def sync_bwd_sums_over_world(dy, cache):
    x_hat, invstd, weight, n = cache
    C = dy.shape[1]
    buf = torch.cat([dy.sum(0), (dy * x_hat).sum(0)]).double()
    dist.all_reduce(buf)
    buf = buf / dist.get_world_size()
    dx = weight * invstd * (dy - buf[:C] / n - x_hat * buf[C:] / n)
    return dx.to(dy.dtype), (dy * x_hat).sum(0), dy.sum(0)


def sync_bwd_sums_over_world_as_means(dy, cache):
    x_hat, invstd, weight, n = cache
    C = dy.shape[1]
    buf = torch.cat([dy.sum(0), (dy * x_hat).sum(0)]).double()
    dist.all_reduce(buf)
    buf /= dist.get_world_size()
    dx = weight * invstd * (dy - buf[:C] - x_hat * buf[C:])
    return dx.to(dy.dtype), (dy * x_hat).sum(0), dy.sum(0)


def sync_bwd_sums_over_world_local_count(dy, cache):
    x_hat, invstd, weight, n = cache
    sum_dy, sum_dy_xhat = dy.sum(0).double(), (dy * x_hat).sum(0).double()
    dist.all_reduce(sum_dy)
    dist.all_reduce(sum_dy_xhat)
    world = dist.get_world_size()
    m = dy.shape[0]
    dx = weight * invstd * (dy - sum_dy / world / m - x_hat * sum_dy_xhat / world / m)
    return dx.to(dy.dtype), (dy * x_hat).sum(0), dy.sum(0)


WRONG_BY_NB = {
    "2-3": [
        ("batchnorm_forward", ["without subtracting the mean"], fwd_var_mean_of_squares),
        ("batchnorm_forward", ["without subtracting the mean"], fwd_var_mean_of_squares_minus_zero),
        ("batchnorm_forward", ["without subtracting the mean"], fwd_var_sum_of_squares_over_n),
        ("batchnorm_forward", ["rms norm"], fwd_rms_no_centring),
        ("update_running_stats", ["mean of x**2"], running_var_uncentred),
        ("update_running_stats", ["mean of x**2"], running_var_mean_of_squares),
        ("batchnorm_backward", ["dout.shape[1]"], bwd_n_from_axis_1),
        ("batchnorm_backward", ["dout.shape[1]"], bwd_n_unpacked_wrong),
        ("batchnorm_backward_staged", ["dout.shape[1]"], staged_n_from_axis_1),
        ("spatial_batchnorm_forward", ["another order than the rows were built in"], spatial_fwd_rows_w_before_h),
        ("spatial_batchnorm_forward", ["another order than the rows were built in"], spatial_fwd_back_as_w_before_h),
        ("spatial_batchnorm_forward", ["wrong permutation", "inverse"], spatial_fwd_back_same_transpose),
        ("spatial_batchnorm_forward", ["wrong permutation", "inverse"], spatial_fwd_back_reshaped_only),
        ("spatial_batchnorm_forward", ["another axis than c last"], spatial_fwd_rows_w_last),
    ],
    "9": [
        ("groupnorm_forward", ["grouped (N, G, M) layout"], gn_affine_grouped_tiled),
        ("groupnorm_forward", ["per group instead of per channel"], gn_affine_grouped_mean),
        ("groupnorm_forward", ["grouped (N, G, M) layout"], gn_affine_grouped_reshaped),
        ("groupnorm_forward", ["grouped (N, G, M) layout"], gn_affine_grouped_channel_column),
    ],
    "8": [
        ("sync_batch_norm_forward", ["without subtracting"], sync_fwd_var_mean_of_squares),
        ("sync_batch_norm_forward", ["without subtracting"], sync_fwd_var_q_over_n_separate),
        ("sync_batch_norm_backward", ["world_size"], sync_bwd_sums_over_world),
        ("sync_batch_norm_backward", ["world_size"], sync_bwd_sums_over_world_local_count),
        ("sync_batch_norm_backward", ["world_size"], sync_bwd_sums_over_world_as_means),
    ],
}

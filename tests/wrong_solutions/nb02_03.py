"""Wrong solutions of notebooks 2 and 3, written as learners write them (each form of a mistake a few ways).

Each wrong one is ``(exercise, words, fn)``: ``words`` are phrases one of which the check's
diagnosis must contain for the mistake to count as named.
"""

import numpy as np

# ------------------------------------------------------------------------------ batchnorm_forward


def fwd_beta_in_bracket(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=0)
    var = x.var(axis=0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * (x_hat + beta), (x, x_hat, mu, var)


def fwd_beta_times_gamma(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return gamma * x_hat + gamma * beta, None


def fwd_beta_subtracted(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return gamma * x_hat - beta, None


def fwd_divided_by_gamma(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return x_hat / gamma + beta, None


# ------------------------------------------------------------------------------ update_running_stats


def running_var_around_running_mean(x, running_mean, running_var, momentum=0.1):
    n = x.shape[0]
    batch_mean = x.mean(axis=0)
    batch_var = ((x - running_mean) ** 2).sum(axis=0) / (n - 1)
    new_mean = (1 - momentum) * running_mean + momentum * batch_mean
    new_var = (1 - momentum) * running_var + momentum * batch_var
    return new_mean, new_var


def running_var_around_new_running_mean(x, running_mean, running_var, momentum=0.1):
    n = x.shape[0]
    new_mean = (1 - momentum) * running_mean + momentum * x.mean(0)
    new_var = (1 - momentum) * running_var + momentum * ((x - new_mean) ** 2).sum(0) / (n - 1)
    return new_mean, new_var


def running_var_around_running_mean_biased(x, running_mean, running_var, momentum=0.1):
    new_mean = (1 - momentum) * running_mean + momentum * x.mean(0)
    new_var = (1 - momentum) * running_var + momentum * np.mean((x - running_mean) ** 2, axis=0)
    return new_mean, new_var


# ------------------------------------------------------------------------------ batchnorm_inference


def inference_batch_mean_running_var(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - x.mean(axis=0)) / np.sqrt(running_var + eps) + beta


def inference_running_mean_batch_var(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(x.var(axis=0) + eps) + beta


def inference_beta_in_bracket(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * ((x - running_mean) / np.sqrt(running_var + eps) + beta)


# ------------------------------------------------------------------------------ batchnorm_backward


def backward_dgamma_from_xmu(dout, cache):
    n = dout.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.sum(dout * cache.xmu, axis=0)
    dxhat = dout * cache.gamma
    dx = cache.inv_std / n * (n * dxhat - dxhat.sum(0) - cache.x_hat * (dxhat * cache.x_hat).sum(0))
    return dx, dgamma, dbeta


def backward_times_std(dout, cache):
    n = dout.shape[0]
    dgamma = (dout * cache.x_hat).sum(0)
    dbeta = dout.sum(0)
    dx = cache.gamma * cache.std / n * (n * dout - dbeta - cache.x_hat * dgamma)
    return dx, dgamma, dbeta


def backward_over_var(dout, cache):
    n = dout.shape[0]
    dgamma = (dout * cache.x_hat).sum(0)
    dbeta = dout.sum(0)
    dx = cache.gamma * cache.inv_std ** 2 / n * (n * dout - dbeta - cache.x_hat * dgamma)
    return dx, dgamma, dbeta


def backward_no_inv_std(dout, cache):
    n = dout.shape[0]
    dgamma = (dout * cache.x_hat).sum(0)
    dbeta = dout.sum(0)
    dx = cache.gamma / n * (n * dout - dbeta - cache.x_hat * dgamma)
    return dx, dgamma, dbeta


def backward_sqrt_var_no_eps(dout, cache):
    n = dout.shape[0]
    dgamma = (dout * cache.x_hat).sum(0)
    dbeta = dout.sum(0)
    dx = cache.gamma / np.sqrt(cache.var) / n * (n * dout - dbeta - cache.x_hat * dgamma)
    return dx, dgamma, dbeta


def backward_hard_coded_eps_inv_std_only(dout, cache):
    n = dout.shape[0]
    dgamma = (dout * cache.x_hat).sum(0)
    dbeta = dout.sum(0)
    dx = cache.gamma / np.sqrt(cache.var + 1e-5) / n * (n * dout - dbeta - cache.x_hat * dgamma)
    return dx, dgamma, dbeta


def backward_dgamma_times_gamma(dout, cache):
    n = dout.shape[0]
    dxhat = dout * cache.gamma
    dgamma = (dxhat * cache.x_hat).sum(0)
    dbeta = dout.sum(0)
    dx = cache.inv_std / n * (n * dxhat - dxhat.sum(0) - cache.x_hat * (dxhat * cache.x_hat).sum(0))
    return dx, dgamma, dbeta


def backward_sign_variance(dout, cache):
    n = dout.shape[0]
    dgamma = (dout * cache.x_hat).sum(0)
    dbeta = dout.sum(0)
    dx = cache.gamma * cache.inv_std / n * (n * dout - dbeta + cache.x_hat * dgamma)
    return dx, dgamma, dbeta


_BETA = ["beta scaled by gamma"]
WRONG = [
    ("batchnorm_forward", _BETA, fwd_beta_in_bracket),
    ("batchnorm_forward", _BETA, fwd_beta_times_gamma),
    ("batchnorm_forward", ["beta subtracted"], fwd_beta_subtracted),
    ("batchnorm_forward", ["divided by gamma"], fwd_divided_by_gamma),
    ("update_running_stats", ["around the running mean"], running_var_around_running_mean),
    ("update_running_stats", ["around the running mean"], running_var_around_new_running_mean),
    ("update_running_stats", ["around the running mean"], running_var_around_running_mean_biased),
    ("batchnorm_inference", ["batch's mean used with the running variance"], inference_batch_mean_running_var),
    ("batchnorm_inference", ["running mean used with the batch's variance"], inference_running_mean_batch_var),
    ("batchnorm_inference", _BETA, inference_beta_in_bracket),
    ("batchnorm_backward", ["from x - mu"], backward_dgamma_from_xmu),
    ("batchnorm_backward", ["multiplied by the standard deviation"], backward_times_std),
    ("batchnorm_backward", ["1 / (var + eps)"], backward_over_var),
    ("batchnorm_backward", ["missing the factor inv_std"], backward_no_inv_std),
    ("batchnorm_backward", ["without eps"], backward_sqrt_var_no_eps),
    ("batchnorm_backward", ["eps=1e-5"], backward_hard_coded_eps_inv_std_only),
    ("batchnorm_backward", ["dgamma multiplied by gamma"], backward_dgamma_times_gamma),
    ("batchnorm_backward", ["sign"], backward_sign_variance),
]
RIGHT = []


# errors raised inside the learner's function, named from their shapes
def fwd_axis1_no_keepdims(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=1)
    var = np.var(x, axis=1)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None


def backward_sums_axis1(dout, cache):
    n = dout.shape[0]
    g = dout * cache.gamma
    dx = cache.inv_std / n * (n * g - g.sum(1) - cache.x_hat * (g * cache.x_hat).sum(1))
    return dx, (dout * cache.x_hat).sum(0), dout.sum(0)


WRONG += [
    ("batchnorm_forward", ["wrong axis"], fwd_axis1_no_keepdims),
    ("batchnorm_backward", ["wrong axis"], backward_sums_axis1),
]


# the staged backward, one step wrong at a time (the notebook's table of eight steps)
def _staged_with(step):
    def backward(dout, cache):
        N = dout.shape[0]
        dbeta = dout.sum(axis=0)
        dgamma = (dout * cache.x_hat).sum(axis=0)
        dx_hat = dout * cache.gamma
        dxmu = dx_hat * cache.inv_std
        if step == 2:
            dinv_std = dx_hat * cache.xmu  # not summed
        elif step == 22:
            dinv_std = (dx_hat * cache.x_hat).sum(axis=0)
        else:
            dinv_std = (dx_hat * cache.xmu).sum(axis=0)
        dstd = -dinv_std / cache.std if step == 3 else -dinv_std / cache.std ** 2
        dvar = dstd / cache.std if step == 4 else dstd / (2 * cache.std)
        dsq = dvar / N
        if step == 6:
            dxmu = 2 * cache.xmu * dsq
        else:
            dxmu = dxmu + 2 * cache.xmu * dsq
        dmu = dxmu.sum(axis=0) if step == 7 else -dxmu.sum(axis=0)
        dx = dxmu + dmu / N
        return dx, dgamma, dbeta
    backward.__name__ = f"staged_step_{step}"
    return backward


WRONG += [
    ("batchnorm_backward_staged", ["dinv_std not summed"], _staged_with(2)),
    ("batchnorm_backward_staged", ["from x_hat instead of xmu"], _staged_with(22)),
    ("batchnorm_backward_staged", ["square missing"], _staged_with(3)),
    ("batchnorm_backward_staged", ["factor 1/2"], _staged_with(4)),
    ("batchnorm_backward_staged", ["overwritten"], _staged_with(6)),
    ("batchnorm_backward_staged", ["sign of dmu"], _staged_with(7)),
]


# more neighbours: a step left out or turned
def fwd_not_divided(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(0)) + beta, None


def fwd_eps_added_after(x, gamma, beta, eps=1e-5):
    return gamma * ((x - x.mean(0)) / np.sqrt(x.var(0)) + eps) + beta, None


def running_batch_unweighted(x, running_mean, running_var, momentum=0.1):
    return (1 - momentum) * running_mean + x.mean(0), (1 - momentum) * running_var + x.var(0, ddof=1)


def running_correction_inverted(x, running_mean, running_var, momentum=0.1):
    n = x.shape[0]
    return ((1 - momentum) * running_mean + momentum * x.mean(0),
            (1 - momentum) * running_var + momentum * x.var(0) * (n - 1) / n)


def inference_batch_unbiased(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + eps) + beta


def inference_mean_not_subtracted(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * x / np.sqrt(running_var + eps) + beta


def backward_x_in_variance_term(dout, cache):
    n = dout.shape[0]
    dbeta, dgamma = dout.sum(0), (dout * cache.x_hat).sum(0)
    return cache.gamma * cache.inv_std / n * (n * dout - dbeta - cache.x * dgamma), dgamma, dbeta


def backward_xmu_in_variance_term(dout, cache):
    n = dout.shape[0]
    dbeta, dgamma = dout.sum(0), (dout * cache.x_hat).sum(0)
    return cache.gamma * cache.inv_std / n * (n * dout - dbeta - cache.xmu * dgamma), dgamma, dbeta


def backward_n_minus_1(dout, cache):
    n = dout.shape[0]
    dbeta, dgamma = dout.sum(0), (dout * cache.x_hat).sum(0)
    return cache.gamma * cache.inv_std / (n - 1) * ((n - 1) * dout - dbeta - cache.x_hat * dgamma), dgamma, dbeta


WRONG += [
    ("batchnorm_forward", ["not divided by the standard deviation"], fwd_not_divided),
    ("batchnorm_forward", ["eps added to x_hat"], fwd_eps_added_after),
    ("update_running_stats", ["momentum missing on the batch"], running_batch_unweighted),
    ("update_running_stats", ["correction inverted"], running_correction_inverted),
    ("batchnorm_inference", ["batch statistics used in inference"], inference_batch_unbiased),
    ("batchnorm_inference", ["mean not subtracted"], inference_mean_not_subtracted),
    ("batchnorm_backward", ["x in place of x_hat"], backward_x_in_variance_term),
    ("batchnorm_backward", ["xmu in place of x_hat"], backward_xmu_in_variance_term),
    ("batchnorm_backward", ["M - 1"], backward_n_minus_1),
]


# ------------------------------------------------------------------------------ spatial forward and backward


def _bn_rows(x, gamma, beta, eps):
    mu, var = x.mean(0), x.var(0)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, (x_hat, gamma, 1 / np.sqrt(var + eps))


def spatial_transpose_applied_twice(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    out, cache = _bn_rows(x.transpose(0, 2, 3, 1).reshape(-1, c), gamma, beta, eps)
    return out.reshape(n, h, w, c).transpose(0, 2, 3, 1), cache


def spatial_h_and_w_swapped_back(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    out, cache = _bn_rows(np.moveaxis(x, 1, 3).reshape(-1, c), gamma, beta, eps)
    return out.reshape(n, h, w, c).transpose(0, 3, 2, 1), cache


def spatial_forward_rows(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    out, cache = _bn_rows(x.transpose(0, 2, 3, 1).reshape(-1, c), gamma, beta, eps)
    return out.reshape(n, h, w, c).transpose(0, 3, 1, 2), (cache, x.shape)


def _bn_rows_backward(dout, cache):
    x_hat, gamma, inv = cache
    m = dout.shape[0]
    dbeta, dgamma = dout.sum(0), (dout * x_hat).sum(0)
    g = dout * gamma
    return inv / m * (m * g - g.sum(0) - x_hat * (g * x_hat).sum(0)), dgamma, dbeta


def spatial_backward_dout_not_transposed(dout, cache):
    rows, (n, c, h, w) = cache
    dx, dgamma, dbeta = _bn_rows_backward(dout.reshape(-1, c), rows)
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma, dbeta


def spatial_backward_dout_not_transposed_dx_neither(dout, cache):
    rows, shape = cache
    dx, dgamma, dbeta = _bn_rows_backward(dout.reshape(-1, shape[1]), rows)
    return dx.reshape(shape), dgamma, dbeta


def spatial_backward_dparams_over_pixels(dout, cache):
    rows, (n, c, h, w) = cache
    dx, dgamma, dbeta = _bn_rows_backward(dout.transpose(0, 2, 3, 1).reshape(-1, c), rows)
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma / (h * w), dbeta / (h * w)


def spatial_backward_dparams_mean(dout, cache):
    rows, (n, c, h, w) = cache
    dx, _, _ = _bn_rows_backward(dout.transpose(0, 2, 3, 1).reshape(-1, c), rows)
    x_hat = rows[0].reshape(n, h, w, c).transpose(0, 3, 1, 2)
    return dx.reshape(n, h, w, c).transpose(0, 3, 1, 2), (dout * x_hat).mean((0, 2, 3)), dout.mean((0, 2, 3))


WRONG += [
    ("spatial_batchnorm_forward", ["wrong permutation"], spatial_transpose_applied_twice),
    ("spatial_batchnorm_forward", ["wrong permutation"], spatial_h_and_w_swapped_back),
    ("spatial_batchnorm_backward", ["without moving C last"], (spatial_forward_rows, spatial_backward_dout_not_transposed)),
    ("spatial_batchnorm_backward", ["without moving C last"],
     (spatial_forward_rows, spatial_backward_dout_not_transposed_dx_neither)),
    ("spatial_batchnorm_backward", ["averaged over the pixels"], (spatial_forward_rows, spatial_backward_dparams_over_pixels)),
    ("spatial_batchnorm_backward", ["averaged"], (spatial_forward_rows, spatial_backward_dparams_mean)),
]


def spatial_swap_c_and_w(x, gamma, beta, eps=1e-5):
    """Right: x.transpose(0, 3, 2, 1) is its own inverse, so undoing it with the same permutation is right."""
    n, c, h, w = x.shape
    out, cache = _bn_rows(x.transpose(0, 3, 2, 1).reshape(-1, c), gamma, beta, eps)
    return out.reshape(n, w, h, c).transpose(0, 3, 2, 1), cache


RIGHT += [("spatial_batchnorm_forward", spatial_swap_c_and_w)]


def fwd_times_std(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(0)) * np.sqrt(x.var(0) + eps) + beta, None


WRONG += [("batchnorm_forward", ["multiplied by sqrt(var + eps)"], fwd_times_std)]


from .round6 import WRONG_BY_NB as _ROUND6  # noqa: E402 - a sixth held-out round's misses

WRONG += _ROUND6.get("2-3", [])

from .round7 import WRONG_BY_NB as _ROUND7  # noqa: E402 - a seventh held-out round's misses and their neighbours

WRONG += _ROUND7.get("2-3", [])

from .round8 import WRONG_BY_NB as _ROUND8  # noqa: E402 - an eighth held-out round's misses and their neighbours

WRONG += _ROUND8.get("2-3", [])

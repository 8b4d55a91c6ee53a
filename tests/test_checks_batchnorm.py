"""Do the batch-norm checks reject each known mistake by its name, and pass every correct implementation?

Each mistake is written here the way a learner would write it (not taken from the checks module),
so these tests fail if a check stops recognizing the mistake in a learner's own code.
"""

from __future__ import annotations

import numpy as np
import pytest

from bncourse.checks import catalogue
from bncourse.checks import backward, forward
from bncourse.checks import batchnorm as checks
from bncourse.reference import batchnorm as ref

# ---------------------------------------------------------------------------------------------
# Forward: correct variants and learner-style mistakes
# ---------------------------------------------------------------------------------------------


def fwd_two_pass(x, gamma, beta, eps=1e-5):
    n = x.shape[0]
    mu = x.sum(axis=0) / n
    xc = x - mu
    var = (xc**2).sum(axis=0) / n
    out = gamma * (xc / np.sqrt(var + eps)) + beta
    return out, (xc, var)


def fwd_np_var(x, gamma, beta, eps=1e-5):
    x_hat = (x - np.mean(x, axis=0)) / np.sqrt(np.var(x, axis=0) + eps)
    return gamma * x_hat + beta, {"x_hat": x_hat}


def fwd_float64_inside(x, gamma, beta, eps=1e-5):
    """Computes in float64 whatever comes in, then returns x's dtype."""
    x64 = x.astype(np.float64)
    x_hat = (x64 - x64.mean(0)) / np.sqrt(x64.var(0) + eps)
    return (gamma.astype(np.float64) * x_hat + beta).astype(x.dtype), None


def fwd_other_order(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=0, keepdims=True)
    inv = 1.0 / np.sqrt(np.mean((x - mu) ** 2, axis=0, keepdims=True) + eps)
    scale = gamma * inv
    return x * scale + (beta - mu * scale), None


def fwd_einsum_keepdim(x, gamma, beta, eps=1e-5):
    """Statistics by einsum, kept as (1, D)."""
    n = x.shape[0]
    mu = np.einsum("nd->d", x)[None, :] / n
    xmu = x - mu
    var = np.einsum("nd,nd->d", xmu, xmu)[None, :] / n
    return gamma * xmu / np.sqrt(var + eps) + beta, {"mu": mu, "var": var}


CORRECT_FORWARDS = [fwd_two_pass, fwd_np_var, fwd_float64_inside, fwd_other_order, fwd_einsum_keepdim]


def fwd_unbiased(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + eps) + beta, None


def fwd_eps_outside(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(0)) / (np.sqrt(x.var(0)) + eps) + beta, None


def fwd_no_eps(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(0)) / x.std(0) + beta, None


def fwd_hardcoded_eps(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) + beta, None


def fwd_wrong_axis(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None


def fwd_swapped(x, gamma, beta, eps=1e-5):
    return beta * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + gamma, None


def fwd_in_place(x, gamma, beta, eps=1e-5):
    x -= x.mean(axis=0)
    x /= np.sqrt(x.var(axis=0) + eps)
    return gamma * x + beta, None


def fwd_naive_var(x, gamma, beta, eps=1e-5):
    mu = x.mean(0)
    var = (x**2).mean(0) - mu**2
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None


def fwd_wrong_shape(x, gamma, beta, eps=1e-5):
    out, cache = fwd_np_var(x, gamma, beta, eps)
    return out.T, cache


def fwd_no_affine(x, gamma, beta, eps=1e-5):
    return (x - x.mean(0)) / np.sqrt(x.var(0) + eps), None


def fwd_affine_first(x, gamma, beta, eps=1e-5):
    z = gamma * x + beta
    return (z - z.mean(0)) / np.sqrt(z.var(0) + eps), None


def fwd_sqrt_std(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(0)) / np.sqrt(x.std(0) + eps) + beta, None


def fwd_no_keepdims_rows(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(1)) / np.sqrt(x.var(0) + eps) + beta, None


FORWARD_MISTAKES = [
    (fwd_affine_first, "gamma and beta applied before normalizing"),
    (fwd_sqrt_std, "square root taken of the standard deviation"),
    (fwd_no_keepdims_rows, "shape mismatch"),
    (fwd_unbiased, "unbiased variance used to normalize"),
    (fwd_eps_outside, "eps outside the square root"),
    (fwd_no_eps, "eps missing"),
    (fwd_hardcoded_eps, "eps argument ignored"),
    (fwd_wrong_axis, "statistics over the wrong axis"),
    (fwd_swapped, "gamma and beta swapped"),
    (fwd_in_place, "the input array modified in place"),
    (fwd_naive_var, "variance computed as E[x^2] - E[x]^2"),
    (fwd_wrong_shape, "wrong output shape"),
    (fwd_no_affine, "gamma and beta not applied"),
]


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("fn", CORRECT_FORWARDS, ids=lambda f: f.__name__)
def test_does_every_correct_forward_pass(fn, hidden):
    result = checks.check_batchnorm_forward(fn, hidden=hidden)
    assert result.passed, str(result)


@pytest.mark.parametrize("fn,name", FORWARD_MISTAKES, ids=[n for _, n in FORWARD_MISTAKES])
def test_is_each_forward_mistake_named(fn, name):
    result = checks.check_batchnorm_forward(fn)
    assert not result.passed
    assert result.diagnosis.startswith(name), result.diagnosis
    with pytest.raises(AssertionError, match=name.replace("^", r"\^").replace("[", r"\[")):
        result.assert_passed()


def test_is_a_float64_output_for_float32_input_called_a_dtype_problem_not_an_eps_mistake():
    def upcasts(x, gamma, beta, eps=1e-5):
        x = x.astype(np.float64)
        return gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + beta, None

    result = checks.check_batchnorm_forward(upcasts)
    assert not result.passed
    assert result.diagnosis.startswith("wrong output dtype: out has dtype float64, expected float32"), result.diagnosis


def test_are_forward_mistakes_also_caught_by_the_hidden_cases():
    for fn, name in FORWARD_MISTAKES:
        result = checks.check_batchnorm_forward(fn, hidden=True)
        assert not result.passed, name
        assert result.diagnosis.startswith(name), (name, result.diagnosis)


# ---------------------------------------------------------------------------------------------
# Running statistics
# ---------------------------------------------------------------------------------------------


def run_np_var(x, running_mean, running_var, momentum=0.1):
    return ((1 - momentum) * running_mean + momentum * x.mean(0),
            (1 - momentum) * running_var + momentum * np.var(x, axis=0, ddof=1))


def run_lerp(x, running_mean, running_var, momentum=0.1):
    n = x.shape[0]
    mu = x.sum(0) / n
    var_u = ((x - mu) ** 2).sum(0) / (n - 1)
    return running_mean + momentum * (mu - running_mean), running_var + momentum * (var_u - running_var)


def run_copy_then_in_place(x, running_mean, running_var, momentum=0.1):
    m, v = running_mean.copy(), running_var.copy()
    m *= 1 - momentum
    m += momentum * x.mean(0)
    v *= 1 - momentum
    v += momentum * x.var(0) * x.shape[0] / (x.shape[0] - 1)
    return m, v


CORRECT_RUNNING = [run_np_var, run_lerp, run_copy_then_in_place]


def run_flipped(x, running_mean, running_var, momentum=0.1):
    return (momentum * running_mean + (1 - momentum) * x.mean(0),
            momentum * running_var + (1 - momentum) * x.var(0, ddof=1))


def run_biased(x, running_mean, running_var, momentum=0.1):
    return ((1 - momentum) * running_mean + momentum * x.mean(0),
            (1 - momentum) * running_var + momentum * x.var(0))


def run_not_updated(x, running_mean, running_var, momentum=0.1):
    return running_mean, running_var


def run_in_place(x, running_mean, running_var, momentum=0.1):
    running_mean *= 1 - momentum
    running_mean += momentum * x.mean(0)
    running_var *= 1 - momentum
    running_var += momentum * x.var(0, ddof=1)
    return running_mean, running_var


RUNNING_MISTAKES = [
    (run_flipped, "momentum convention flipped"),
    (run_biased, "running_var updated with the biased variance"),
    (run_not_updated, "running statistics not updated"),
    (run_in_place, "running statistics modified in place"),
]


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("fn", CORRECT_RUNNING, ids=lambda f: f.__name__)
def test_does_every_correct_running_update_pass(fn, hidden):
    result = checks.check_update_running_stats(fn, hidden=hidden)
    assert result.passed, str(result)


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("fn,name", RUNNING_MISTAKES, ids=[n for _, n in RUNNING_MISTAKES])
def test_is_each_running_stats_mistake_named(fn, name, hidden):
    result = checks.check_update_running_stats(fn, hidden=hidden)
    assert not result.passed
    assert result.diagnosis.startswith(name), result.diagnosis


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


def inf_direct(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta


def inf_folded(x, gamma, beta, running_mean, running_var, eps=1e-5):
    scale = gamma / np.sqrt(running_var + eps)
    return x * scale + (beta - running_mean * scale)


CORRECT_INFERENCE = [inf_direct, inf_folded]


def inf_batch_stats(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + beta


def inf_updates_stats(x, gamma, beta, running_mean, running_var, eps=1e-5):
    running_mean[:] = 0.9 * running_mean + 0.1 * x.mean(0)
    running_var[:] = 0.9 * running_var + 0.1 * x.var(0, ddof=1) if len(x) > 1 else running_var
    return gamma * (x - running_mean) / np.sqrt(running_var + eps) + beta


def inf_eps_outside(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return gamma * (x - running_mean) / (np.sqrt(running_var) + eps) + beta


def inf_swapped(x, gamma, beta, running_mean, running_var, eps=1e-5):
    return beta * (x - running_mean) / np.sqrt(running_var + eps) + gamma


INFERENCE_MISTAKES = [
    (inf_batch_stats, "batch statistics used in inference"),
    (inf_updates_stats, "running statistics changed in inference"),
    (inf_eps_outside, "eps outside the square root"),
    (inf_swapped, "gamma and beta swapped"),
]


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("fn", CORRECT_INFERENCE, ids=lambda f: f.__name__)
def test_does_every_correct_inference_pass(fn, hidden):
    result = checks.check_batchnorm_inference(fn, hidden=hidden)
    assert result.passed, str(result)


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("fn,name", INFERENCE_MISTAKES, ids=[n for _, n in INFERENCE_MISTAKES])
def test_is_each_inference_mistake_named(fn, name, hidden):
    result = checks.check_batchnorm_inference(fn, hidden=hidden)
    assert not result.passed
    assert result.diagnosis.startswith(name), result.diagnosis


def test_is_using_updated_running_stats_without_mutating_named():
    def fn(x, gamma, beta, running_mean, running_var, eps=1e-5):
        m = 0.9 * running_mean + 0.1 * x.mean(0)
        with np.errstate(all="ignore"):
            v = 0.9 * running_var + 0.1 * np.var(x, axis=0, ddof=1)
        return gamma * (x - m) / np.sqrt(v + eps) + beta

    result = checks.check_batchnorm_inference(fn)
    assert result.diagnosis.startswith("running statistics updated in inference"), result.diagnosis


# ---------------------------------------------------------------------------------------------
# Backward (cache from the reference forward)
# ---------------------------------------------------------------------------------------------


def bwd_textbook(dout, cache):
    n = dout.shape[0]
    dbeta = dout.sum(0)
    dgamma = (dout * cache.x_hat).sum(0)
    dx_hat = dout * cache.gamma
    dvar = (dx_hat * cache.xmu).sum(0) * -0.5 * (cache.var + cache.eps) ** -1.5
    dmu = -(dx_hat * cache.inv_std).sum(0) + dvar * (-2 * cache.xmu).mean(0)
    dx = dx_hat * cache.inv_std + dvar * 2 * cache.xmu / n + dmu / n
    return dx, dgamma, dbeta


def bwd_compact(dout, cache):
    dx_hat = dout * cache.gamma
    dx = cache.inv_std * (dx_hat - dx_hat.mean(0) - cache.x_hat * (dx_hat * cache.x_hat).mean(0))
    return dx, np.sum(dout * cache.x_hat, axis=0), np.sum(dout, axis=0)


def bwd_float64_einsum(dout, cache):
    """Float64 gradients (allowed by the contract) for any input dtype, sums by einsum."""
    d, xh = dout.astype(np.float64), cache.x_hat.astype(np.float64)
    dbeta, dgamma = np.einsum("nd->d", d), np.einsum("nd,nd->d", d, xh)
    n = d.shape[0]
    return cache.gamma * cache.inv_std / n * (n * d - dbeta - xh * dgamma), dgamma, dbeta


CORRECT_BACKWARDS = [bwd_textbook, bwd_compact, bwd_float64_einsum]


def bwd_direct_only(dout, cache):
    return dout * cache.gamma * cache.inv_std, (dout * cache.x_hat).sum(0), dout.sum(0)


def bwd_no_var_path(dout, cache):
    dx_hat = dout * cache.gamma
    return cache.inv_std * (dx_hat - dx_hat.mean(0)), (dout * cache.x_hat).sum(0), dout.sum(0)


def bwd_no_mean_path(dout, cache):
    dx_hat = dout * cache.gamma
    dx = cache.inv_std * (dx_hat - cache.x_hat * (dx_hat * cache.x_hat).mean(0))
    return dx, (dout * cache.x_hat).sum(0), dout.sum(0)


def bwd_dgamma_unsummed(dout, cache):
    dx, _, dbeta = bwd_compact(dout, cache)
    return dx, dout * cache.x_hat, dbeta


def bwd_dbeta_unsummed(dout, cache):
    dx, dgamma, _ = bwd_compact(dout, cache)
    return dx, dgamma, dout


def bwd_two_mistakes(dout, cache):
    return dout * cache.gamma * cache.inv_std, dout * cache.x_hat, dout.sum(0)


def bwd_wrong_shape(dout, cache):
    dx, dgamma, dbeta = bwd_compact(dout, cache)
    return dx, dgamma[None, :], dbeta


def bwd_closed_form_without_1_over_n(dout, cache):
    n = dout.shape[0]
    dbeta, dgamma = dout.sum(0), (dout * cache.x_hat).sum(0)
    return cache.gamma * cache.inv_std * (n * dout - dbeta - cache.x_hat * dgamma), dgamma, dbeta


def bwd_closed_form_dbeta_dgamma_swapped(dout, cache):
    n = dout.shape[0]
    dbeta, dgamma = dout.sum(0), (dout * cache.x_hat).sum(0)
    return cache.gamma * cache.inv_std / n * (n * dout - dgamma - cache.x_hat * dbeta), dgamma, dbeta


def bwd_staged_with(two=2.0, dstd_sign=-1.0, dsq_over_n=True, dmu_over_n=True):
    """A learner's staged backward, row by row from the notebook's table, with one slip."""
    def backward(dout, cache):
        n = dout.shape[0]
        dbeta, dgamma = dout.sum(axis=0), (dout * cache.x_hat).sum(axis=0)
        dx_hat = dout * cache.gamma
        dxmu = dx_hat * cache.inv_std
        dinv_std = (dx_hat * cache.xmu).sum(axis=0)
        dstd = dstd_sign * dinv_std / cache.std ** 2
        dvar = dstd / (2 * cache.std)
        dsq = dvar / n if dsq_over_n else dvar
        dxmu = dxmu + two * cache.xmu * dsq
        dmu = -dxmu.sum(axis=0)
        dx = dxmu + (dmu / n if dmu_over_n else dmu)
        return dx, dgamma, dbeta
    return backward


BACKWARD_MISTAKES = [
    (bwd_staged_with(two=1.0), "factor 2 missing in the path through the square (step 6)"),
    (bwd_staged_with(dstd_sign=1.0), "sign of the path through 1/std flipped (step 3"),
    (bwd_staged_with(dsq_over_n=False), "the variance's gradient not shared out over the N rows (step 5)"),
    (bwd_staged_with(dmu_over_n=False), "the mean's gradient not shared out over the N rows (step 8)"),
    (bwd_closed_form_without_1_over_n, "closed form without the 1/N"),
    (bwd_closed_form_dbeta_dgamma_swapped, "dbeta and dgamma swapped inside the closed form"),
    (bwd_direct_only, "dx missing the terms that flow through the mean and the variance"),
    (bwd_no_var_path, "dx missing the term that flows through the variance"),
    (bwd_no_mean_path, "dx missing the term that flows through the mean"),
    (bwd_dgamma_unsummed, "dgamma not summed over the batch"),
    (bwd_dbeta_unsummed, "dbeta not summed over the batch"),
    (bwd_wrong_shape, "wrong output shape"),
]


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("fn", CORRECT_BACKWARDS, ids=lambda f: f.__name__)
def test_does_every_correct_backward_pass_both_checks(fn, hidden):
    assert checks.check_batchnorm_backward(fn, hidden=hidden).passed
    assert checks.check_batchnorm_backward_staged(fn, hidden=hidden).passed


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("fn,name", BACKWARD_MISTAKES, ids=[n for _, n in BACKWARD_MISTAKES])
def test_is_each_backward_mistake_named(fn, name, hidden):
    result = checks.check_batchnorm_backward_staged(fn, hidden=hidden)
    assert not result.passed
    assert result.diagnosis.startswith(name), result.diagnosis


def test_are_two_backward_mistakes_at_once_both_named():
    diagnosis = checks.check_batchnorm_backward(bwd_two_mistakes).diagnosis
    assert "dx missing the terms that flow through the mean and the variance" in diagnosis
    assert "dgamma not summed over the batch" in diagnosis
    assert "[dbeta]" not in diagnosis  # dbeta was right: no mistake is blamed on it


@pytest.mark.parametrize("fn", CORRECT_BACKWARDS, ids=lambda f: f.__name__)
def test_does_the_numerical_gradient_check_pass_correct_backwards(fn):
    result = checks.check_gradients_numerically(fn)
    assert result.passed, str(result)
    assert "relative error" in str(result)


def test_does_the_numerical_gradient_check_reject_and_name_a_missing_path():
    result = checks.check_gradients_numerically(bwd_no_var_path)
    assert not result.passed
    assert result.diagnosis.startswith("dx disagree")
    assert "dx missing the term that flows through the variance" in result.diagnosis


# ---------------------------------------------------------------------------------------------
# Spatial
# ---------------------------------------------------------------------------------------------


def spatial_fwd_moveaxis(x, gamma, beta, eps=1e-5):
    n, c, h, w = x.shape
    rows = np.moveaxis(x, 1, -1).reshape(-1, c)
    out, cache = ref.batchnorm_forward(rows, gamma, beta, eps)
    return np.moveaxis(out.reshape(n, h, w, c), -1, 1), (cache, x.shape)


def spatial_bwd_moveaxis(dout, cache):
    cache2d, (n, c, h, w) = cache
    dx, dgamma, dbeta = ref.batchnorm_backward(np.moveaxis(dout, 1, -1).reshape(-1, c), cache2d)
    return np.moveaxis(dx.reshape(n, h, w, c), -1, 1), dgamma, dbeta


def spatial_fwd_direct(x, gamma, beta, eps=1e-5):
    axes = (0, 2, 3)
    mu = x.mean(axes, keepdims=True)
    var = x.var(axes, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma[None, :, None, None] * x_hat + beta[None, :, None, None], (x_hat, var, gamma, eps)


def spatial_bwd_direct(dout, cache):
    x_hat, var, gamma, eps = cache
    axes = (0, 2, 3)
    dx_hat = dout * gamma[None, :, None, None]
    dx = (dx_hat - dx_hat.mean(axes, keepdims=True)
          - x_hat * (dx_hat * x_hat).mean(axes, keepdims=True)) / np.sqrt(var + eps)
    return dx, (dout * x_hat).sum(axes), dout.sum(axes)


def spatial_fwd_no_transpose(x, gamma, beta, eps=1e-5):
    out, cache = ref.batchnorm_forward(x.reshape(-1, x.shape[1]), gamma, beta, eps)
    return out.reshape(x.shape), cache


def spatial_fwd_per_position(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return gamma[None, :, None, None] * x_hat + beta[None, :, None, None], None


def spatial_bwd_sum_n_only(dout, cache):
    dx, _, _ = spatial_bwd_moveaxis(dout, cache)
    cache2d, shape = cache
    x_hat = np.moveaxis(cache2d.x_hat.reshape(shape[0], shape[2], shape[3], shape[1]), -1, 1)
    return dx, (dout * x_hat).sum(0), dout.sum(0)


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("pair", [(spatial_fwd_moveaxis, spatial_bwd_moveaxis),
                                  (spatial_fwd_direct, spatial_bwd_direct)], ids=["moveaxis", "direct"])
def test_does_every_correct_spatial_pair_pass(pair, hidden):
    fwd, bwd = pair
    assert checks.check_spatial_batchnorm_forward(fwd, hidden=hidden).passed
    result = checks.check_spatial_batchnorm_backward(fwd, bwd, hidden=hidden)
    assert result.passed, str(result)


def spatial_fwd_no_transpose_back(x, gamma, beta, eps=1e-5):
    rows = x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
    out, cache = ref.batchnorm_forward(rows, gamma, beta, eps)
    return out.reshape(x.shape), cache


@pytest.mark.parametrize("fn,name", [
    (spatial_fwd_no_transpose, "reshaped to (N*H*W, C) without moving C last"),
    (spatial_fwd_no_transpose_back, "output reshaped back without the inverse transpose"),
    (spatial_fwd_per_position, "statistics per pixel position instead of per channel"),
])
def test_is_each_spatial_forward_mistake_named(fn, name):
    result = checks.check_spatial_batchnorm_forward(fn)
    assert result.diagnosis.startswith(name), result.diagnosis


def spatial_bwd_no_inverse_transpose(dout, cache):
    cache2d, shape = cache
    dx, dgamma, dbeta = ref.batchnorm_backward(np.moveaxis(dout, 1, -1).reshape(-1, shape[1]), cache2d)
    return dx.reshape(shape), dgamma, dbeta


def spatial_bwd_direct_only(dout, cache):
    cache2d, shape = cache
    scale = (cache2d.gamma * cache2d.inv_std)[None, :, None, None]
    _, dgamma, dbeta = spatial_bwd_moveaxis(dout, cache)
    return dout * scale, dgamma, dbeta


def spatial_bwd_sum_hw_only(dout, cache):
    dx, _, _ = spatial_bwd_moveaxis(dout, cache)
    cache2d, shape = cache
    x_hat = np.moveaxis(cache2d.x_hat.reshape(shape[0], shape[2], shape[3], shape[1]), -1, 1)
    return dx, (dout * x_hat).sum((2, 3)), dout.sum((2, 3))


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("fn,name", [
    (spatial_bwd_sum_n_only, "dgamma and dbeta summed over N only (not H and W)"),
    (spatial_bwd_sum_hw_only, "dgamma and dbeta not summed over N"),
    (spatial_bwd_no_inverse_transpose, "dx reshaped back without the inverse transpose"),
    (spatial_bwd_direct_only, "dx missing the terms that flow through the mean and the variance"),
])
def test_is_each_spatial_backward_mistake_named(fn, name, hidden):
    result = checks.check_spatial_batchnorm_backward(spatial_fwd_moveaxis, fn, hidden=hidden)
    assert not result.passed
    assert result.diagnosis.startswith(name), result.diagnosis
    assert name in [m.name for m in catalogue.mistakes("spatial_batchnorm_backward")]


def test_does_passing_a_non_function_say_so():
    result = checks.check_spatial_batchnorm_backward(spatial_fwd_moveaxis, "spatial_bwd")
    assert not result.passed and "expected a function, got str" in str(result)
    assert "expected a function" in str(checks.check_batchnorm_forward(None))


def test_does_a_spatial_backward_check_point_at_a_broken_forward():
    def bwd(dout, cache):
        return spatial_bwd_moveaxis(dout, cache)

    result = checks.check_spatial_batchnorm_backward(spatial_fwd_no_transpose_cache, bwd)
    assert not result.passed
    assert any("fix the forward first" in n for n in result.notes)


def spatial_fwd_no_transpose_cache(x, gamma, beta, eps=1e-5):
    out, cache = spatial_fwd_no_transpose(x, gamma, beta, eps)
    return out, (cache, x.shape)


# ---------------------------------------------------------------------------------------------
# Every check: unattempted exercises, stderr, and the registry of names
# ---------------------------------------------------------------------------------------------


def _not_implemented(*args, **kwargs):
    raise NotImplementedError()


@pytest.mark.parametrize("check", [
    checks.check_batchnorm_forward, checks.check_update_running_stats, checks.check_batchnorm_inference,
    checks.check_batchnorm_backward_staged, checks.check_batchnorm_backward, checks.check_gradients_numerically,
    checks.check_spatial_batchnorm_forward,
    lambda fn: checks.check_spatial_batchnorm_backward(fn, fn),
])
def test_does_an_unattempted_exercise_fail_saying_so(check, capsys):
    result = check(_not_implemented)
    assert not result.passed
    assert "NotImplementedError" in result.diagnosis
    assert capsys.readouterr().err == ""


def test_does_a_passing_check_write_nothing_to_stderr(capsys):
    checks.check_batchnorm_forward(fwd_np_var).assert_passed()
    checks.check_batchnorm_inference(inf_direct).assert_passed()
    checks.check_gradients_numerically(bwd_compact).assert_passed()
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("mistakes,check", [
    (catalogue.mistakes("batchnorm_forward"), checks.check_batchnorm_forward),
    (catalogue.mistakes("update_running_stats"), checks.check_update_running_stats),
    (catalogue.mistakes("batchnorm_inference"), checks.check_batchnorm_inference),
    (catalogue.mistakes("batchnorm_backward"), checks.check_batchnorm_backward),
    (catalogue.mistakes("spatial_batchnorm_forward"), checks.check_spatial_batchnorm_forward),
], ids=["forward", "running", "inference", "backward", "spatial_forward"])
def test_is_every_registered_mistake_recognized_by_its_own_check(mistakes, check):
    """Each Mistake's own implementation, handed in as the learner's, must be named as itself."""
    for m in mistakes:
        for hidden in (False, True):
            result = check(m.fn, hidden=hidden)
            assert not result.passed, (m.name, hidden)
            assert result.diagnosis.startswith(m.name), (m.name, hidden, result.diagnosis)


@pytest.mark.parametrize("fn,name", [
    (lambda x, g, b, eps=1e-5: ((x - x.mean(0)) / np.sqrt(x.var(0) + eps) + b, None), "gamma not applied"),
    (lambda x, g, b, eps=1e-5: (g * (x - x.mean(0)) / np.sqrt(x.var(0) + eps), None), "beta not added"),
], ids=["no-gamma", "no-beta"])
def test_is_forgetting_gamma_or_beta_alone_named(fn, name):
    assert checks.check_batchnorm_forward(fn).diagnosis.startswith(name)


def bwd_averaged(dout, cache):
    dx, dgamma, dbeta = bwd_compact(dout, cache)
    return dx, dgamma / len(dout), dbeta / len(dout)


def bwd_dbeta_averaged(dout, cache):
    dx, dgamma, dbeta = bwd_compact(dout, cache)
    return dx, dgamma, dout.mean(axis=0)


@pytest.mark.parametrize("fn,name", [(bwd_averaged, "dgamma and dbeta averaged over the batch"),
                                     (bwd_dbeta_averaged, "dbeta averaged over the batch")])
def test_is_an_averaged_dgamma_or_dbeta_named(fn, name):
    for hidden in (False, True):
        assert checks.check_batchnorm_backward(fn, hidden=hidden).diagnosis.startswith(name)


def test_does_the_gradient_check_pass_a_correct_backward_on_cs231ns_input():
    """CS231n's own test input, x = 4 * randn + 10: the elementwise relative error fails a correct
    backward there (about 1e-6); the norm-wise error of gradcheck's kind passes it and still fails a wrong one."""
    x = 4 * np.random.default_rng(231).standard_normal((4, 5)) + 10
    result = checks.check_gradients_numerically(bwd_compact, x=x)
    assert result.passed, str(result)
    assert not checks.check_gradients_numerically(bwd_no_var_path, x=x).passed


def test_does_importing_the_checks_leave_torch_unimported():
    import subprocess
    import sys

    code = ("import sys, bncourse.checks.batchnorm, bncourse.reference.batchnorm, bncourse.gradcheck; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"

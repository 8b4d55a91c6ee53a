"""The synchronized batch norm checks: a right solution passes, and each learner-style slip is named.

Every check starts real gloo process groups; the learner-style functions below run on the ranks.
"""

from __future__ import annotations

import os
import sys

import cloudpickle
import pytest
import torch
import torch.distributed as dist

from bncourse.checks.sync_batchnorm import check_sync_batchnorm_backward, check_sync_batchnorm_forward
from bncourse.nn_sync import SyncBNCache

pytestmark = pytest.mark.slow
# Send these functions to the workers by value, as a notebook's are (and without importing this file there).
cloudpickle.register_pickle_by_value(sys.modules[__name__])


def _update(running_mean, running_var, mean, var_unbiased, momentum):
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(momentum * mean)
        running_var.mul_(1 - momentum).add_(momentum * var_unbiased)


def _finish(x, weight, bias, mean, var, n, eps):
    invstd = 1 / torch.sqrt(var + eps)
    x_hat = (x - mean) * invstd
    return (weight * x_hat + bias).to(weight.dtype), SyncBNCache(x_hat, invstd, weight, n)  # y in the input's dtype


# ------------------------------------------------------------------ forward: right and wrong


def forward_right(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    rows = torch.tensor([x.shape[0]], dtype=torch.float64)  # not in x's dtype: bfloat16 reads 257 as 256
    buf = torch.cat([x.sum(0).double(), (x * x).sum(0).double(), rows])
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean = buf[:C] / n
    var = buf[C:2 * C] / n - mean ** 2
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_count_in_x_dtype(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    """Right but for the row count, built in x's dtype (for a bfloat16 x, 257 rows count as 256)."""
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])]).double()
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean = buf[:C] / n
    var = buf[C:2 * C] / n - mean ** 2
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_two_passes(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    """Right, with three all_reduce calls (two passes, in float64): passes, with a note."""
    n = torch.tensor([float(x.shape[0])], dtype=torch.float64)
    x = x.double()
    s = x.sum(0)
    dist.all_reduce(n)
    dist.all_reduce(s)
    mean = s / n
    sq = ((x - mean) ** 2).sum(0)
    dist.all_reduce(sq)
    var = sq / n
    n = n.item()
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_no_all_reduce(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    n = x.shape[0]
    mean, var = x.mean(0), x.var(0, unbiased=False)
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_means_averaged(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    world = dist.get_world_size()
    moments = torch.stack([x.mean(0), (x * x).mean(0)])
    dist.all_reduce(moments)
    moments /= world
    mean, var = moments[0], moments[1] - moments[0] ** 2
    n = torch.tensor(float(x.shape[0]), dtype=torch.float64)
    dist.all_reduce(n)
    n = n.item()
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_variances_averaged(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    buf = torch.cat([x.sum(0), x.var(0, unbiased=False), x.new_tensor([x.shape[0]])])
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean = buf[:C] / n
    var = buf[C:2 * C] / dist.get_world_size()
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_variances_pooled(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    m = x.shape[0]
    buf = torch.cat([x.sum(0), m * x.var(0, unbiased=False), x.new_tensor([m])])
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean, var = buf[:C] / n, buf[C:2 * C] / n
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_local_count(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0)])
    dist.all_reduce(buf)
    n = x.shape[0]
    mean = buf[:C] / n
    var = buf[C:] / n - mean ** 2
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_local_count_running(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])])
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean, var = buf[:C] / n, buf[C:2 * C] / n - (buf[:C] / n) ** 2
    m = x.shape[0]
    _update(running_mean, running_var, mean, var * m / (m - 1), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_biased_running(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])])
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean, var = buf[:C] / n, buf[C:2 * C] / n - (buf[:C] / n) ** 2
    _update(running_mean, running_var, mean, var, momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_unbiased_normalize(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])])
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean = buf[:C] / n
    var = (buf[C:2 * C] - n * mean ** 2) / (n - 1)
    _update(running_mean, running_var, mean, var, momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_running_from_local(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])])
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean, var = buf[:C] / n, buf[C:2 * C] / n - (buf[:C] / n) ** 2
    _update(running_mean, running_var, x.mean(0), x.var(0), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_momentum_flipped(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])])
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean, var = buf[:C] / n, buf[C:2 * C] / n - (buf[:C] / n) ** 2
    _update(running_mean, running_var, mean, var * n / (n - 1), 1 - momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_eps_outside(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])])
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean, var = buf[:C] / n, buf[C:2 * C] / n - (buf[:C] / n) ** 2
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    invstd = 1 / (torch.sqrt(var) + eps)
    x_hat = (x - mean) * invstd
    return weight * x_hat + bias, SyncBNCache(x_hat, invstd, weight, n)


def forward_float32(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])]).float()
    dist.all_reduce(buf)
    buf = buf.to(x.dtype)
    n = buf[-1].item()
    mean, var = buf[:C] / n, buf[C:2 * C] / n - (buf[:C] / n) ** 2
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_in_x_dtype(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    """Right for float64 x; for float32 x it all-reduces float32 (notebook 8 asks for float64)."""
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])])
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean, var = buf[:C] / n, buf[C:2 * C] / n - (buf[:C] / n) ** 2
    _update(running_mean, running_var, mean, var * n / (n - 1), momentum)
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_running_rebound(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    """Running statistics rebound to new tensors: the caller's buffers never change."""
    C = x.shape[1]
    buf = torch.cat([x.sum(0), (x * x).sum(0), x.new_tensor([x.shape[0]])]).double()
    dist.all_reduce(buf)
    n = buf[-1].item()
    mean, var = buf[:C] / n, buf[C:2 * C] / n - (buf[:C] / n) ** 2
    running_mean = (1 - momentum) * running_mean + momentum * mean  # noqa: F841 - the slip
    return _finish(x, weight, bias, mean, var, n, eps)


def forward_cache_std(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    y, cache = forward_right(x, weight, bias, running_mean, running_var, momentum, eps)
    return y, SyncBNCache(cache.x_hat, 1 / cache.invstd, weight, cache.count)


FORWARD_MISTAKES = [
    (forward_no_all_reduce, "no all_reduce: each rank used only its own slice"),
    (forward_means_averaged, "the ranks' means averaged"),
    (forward_variances_averaged, "the ranks' variances averaged instead of combining sums"),
    (forward_variances_pooled, "without the spread of the ranks' means"),
    (forward_local_count, "divided the global sums by the local count"),
    (forward_local_count_running, "local count in the unbiased running variance"),
    (forward_biased_running, "running_var updated with the biased variance"),
    (forward_unbiased_normalize, "unbiased variance used to normalize"),
    (forward_running_from_local, "running statistics from this rank's slice only"),
    (forward_momentum_flipped, "momentum convention flipped"),
    (forward_eps_outside, "eps outside the square root"),
    (forward_float32, "all-reduced in float32"),
    (forward_in_x_dtype, "all-reduced in float32"),
    (forward_running_rebound, "running statistics not updated in place"),
    (forward_cache_std, "cache.invstd holds the standard deviation"),
    (forward_count_in_x_dtype, "the row count built in x's dtype"),
]


def test_does_a_right_forward_pass_visible_and_hidden_cases():
    for hidden in (False, True):
        result = check_sync_batchnorm_forward(forward_right, hidden=hidden)
        assert result.passed, str(result)
        assert not result.notes


def test_does_a_right_forward_with_three_all_reduces_pass_with_a_note():
    result = check_sync_batchnorm_forward(forward_two_passes)
    assert result.passed, str(result)
    assert any("dist.all_reduce 3 times per forward" in n for n in result.notes)


@pytest.mark.parametrize("wrong, name", FORWARD_MISTAKES, ids=[f.__name__ for f, _ in FORWARD_MISTAKES])
def test_is_each_forward_mistake_named(wrong, name):
    result = check_sync_batchnorm_forward(wrong)
    assert not result.passed
    assert name in result.diagnosis, f"{wrong.__name__}: {result}"


# ------------------------------------------------------------------ backward: right and wrong


def backward_right(dy, cache):
    x_hat, invstd, weight, n = cache
    C = dy.shape[1]
    sum_dy, sum_dy_xhat = dy.sum(0), (dy * x_hat).sum(0)
    buf = torch.cat([sum_dy, sum_dy_xhat]).double()
    dist.all_reduce(buf)
    dx = weight * invstd * (dy - buf[:C] / n - x_hat * buf[C:] / n)
    return dx, sum_dy_xhat, sum_dy


def backward_no_all_reduce(dy, cache):
    x_hat, invstd, weight, n = cache
    dx = weight * invstd * (dy - dy.sum(0) / n - x_hat * (dy * x_hat).sum(0) / n)
    return dx, (dy * x_hat).sum(0), dy.sum(0)


def backward_plain(dy, cache):
    x_hat, invstd, weight, _ = cache
    m = dy.shape[0]
    dx = weight * invstd * (dy - dy.mean(0) - x_hat * (dy * x_hat).sum(0) / m)
    return dx, (dy * x_hat).sum(0), dy.sum(0)


def backward_local_count(dy, cache):
    x_hat, invstd, weight, _ = cache
    m = dy.shape[0]
    s, t = dy.sum(0), (dy * x_hat).sum(0)
    gs, gt = s.clone(), t.clone()
    dist.all_reduce(gs)
    dist.all_reduce(gt)
    return weight * invstd * (dy - gs / m - x_hat * gt / m), t, s


def backward_averaged(dy, cache):
    x_hat, invstd, weight, n = cache
    C = dy.shape[1]
    s, t = dy.sum(0), (dy * x_hat).sum(0)
    buf = torch.cat([s, t])
    dist.all_reduce(buf)
    buf /= dist.get_world_size()
    return weight * invstd * (dy - buf[:C] / n - x_hat * buf[C:] / n), t, s


def backward_params_reduced(dy, cache):
    x_hat, invstd, weight, n = cache
    C = dy.shape[1]
    buf = torch.cat([dy.sum(0), (dy * x_hat).sum(0)])
    dist.all_reduce(buf)
    return weight * invstd * (dy - buf[:C] / n - x_hat * buf[C:] / n), buf[C:], buf[:C]


def backward_no_mean_terms(dy, cache):
    x_hat, invstd, weight, n = cache
    return weight * invstd * dy, (dy * x_hat).sum(0), dy.sum(0)


def backward_no_weight(dy, cache):
    x_hat, invstd, weight, n = cache
    C = dy.shape[1]
    s, t = dy.sum(0), (dy * x_hat).sum(0)
    buf = torch.cat([s, t])
    dist.all_reduce(buf)
    return invstd * (dy - buf[:C] / n - x_hat * buf[C:] / n), t, s


def backward_float32(dy, cache):
    x_hat, invstd, weight, n = cache
    C = dy.shape[1]
    s, t = dy.sum(0), (dy * x_hat).sum(0)
    buf = torch.cat([s, t]).float()
    dist.all_reduce(buf)
    buf = buf.to(dy.dtype)
    return weight * invstd * (dy - buf[:C] / n - x_hat * buf[C:] / n), t, s


BACKWARD_MISTAKES = [
    (backward_no_all_reduce, "backward all_reduce forgotten"),
    (backward_plain, "plain batch norm's backward on each slice"),
    (backward_local_count, "divided the global sums by the local count"),
    (backward_averaged, "sums averaged over the ranks"),
    (backward_params_reduced, "dweight and dbias all-reduced"),
    (backward_no_mean_terms, "dx missing the terms that flow through the mean and the variance"),
    (backward_no_weight, "weight (gamma) left out of dx"),
    (backward_float32, "all-reduced in float32"),
]


def test_does_a_right_backward_pass_visible_and_hidden_cases():
    for hidden in (False, True):
        result = check_sync_batchnorm_backward(backward_right, hidden=hidden)
        assert result.passed, str(result)


@pytest.mark.parametrize("wrong, name", BACKWARD_MISTAKES, ids=[f.__name__ for f, _ in BACKWARD_MISTAKES])
def test_is_each_backward_mistake_named(wrong, name):
    result = check_sync_batchnorm_backward(wrong)
    assert not result.passed
    assert name in result.diagnosis, f"{wrong.__name__}: {result}"


# ------------------------------------------------------------------ not attempted, crashes, delegation


def forward_stub(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    raise NotImplementedError


def backward_crashes_on_rank_1(dy, cache):
    if dist.get_rank() == 1:
        os._exit(7)
    return backward_right(dy, cache)


def forward_hands_over(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    from bncourse.nn_sync import sync_batch_norm_forward

    return sync_batch_norm_forward(x, weight, bias, running_mean, running_var, momentum, eps)


def test_is_the_untouched_stub_reported_as_not_attempted():
    result = check_sync_batchnorm_forward(forward_stub)
    assert not result.passed
    assert "not attempted" in result.diagnosis


def test_does_a_crashing_worker_fail_the_check_naming_the_rank():
    result = check_sync_batchnorm_backward(backward_crashes_on_rank_1)
    assert not result.passed
    assert "on rank 1: died (exited with code 7)" in str(result)


def test_does_handing_the_work_to_the_course_reference_fail():
    result = check_sync_batchnorm_forward(forward_hands_over)
    assert not result.passed
    assert "the course's bncourse.nn_sync reference is switched off here" in str(result)


def test_is_a_called_function_instead_of_the_function_named():
    result = check_sync_batchnorm_backward(None)
    assert not result.passed
    assert "pass the function itself" in result.diagnosis


def test_do_the_right_variants_of_notebook_8_pass():
    """keepdim (1, C) statistics and invstd, a one-element count tensor with float64 sums, einsum sums."""
    from wrong_solutions import measure, nb08

    for exercise, fn in nb08.RIGHT:
        result = measure.check(exercise, fn)
        assert result.passed, f"{fn.__name__}: {result}"


def _round8_sync():
    from wrong_solutions import round8

    return round8.WRONG_BY_NB["8"]


@pytest.mark.parametrize("exercise, words, fn", _round8_sync(), ids=[fn.__name__ for _, _, fn in _round8_sync()])
def test_is_an_eighth_round_wrong_solution_rejected_and_named(exercise, words, fn):
    """The global variance as sum_sq / N (no mean**2 subtracted); the backward's sums divided by world_size."""
    from wrong_solutions import measure

    result = measure.check(exercise, fn)
    assert not result.passed and measure.named(result, words), f"{fn.__name__}: {result}"


def test_is_a_right_forward_storing_the_local_count_in_its_cache_named_so_and_not_as_no_all_reduce():
    from wrong_solutions import measure, nb08

    result = measure.check("sync_batch_norm_forward", nb08.fwd_local_count_in_cache)
    assert not result.passed and result.diagnosis.startswith("cache.count holds this rank's row count"), str(result)


# ------------------------------------------------------------------ what a rank holds (red team 7's R4)


def _more_rows_than_mine(rows: int) -> list[str]:
    """Every array or tensor of more rows than this rank's, in the locals of the frames that called us."""
    import inspect

    import numpy as np

    found = []
    for info in inspect.stack()[2:]:
        for name, value in info.frame.f_locals.items():
            if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 2 and value.shape[0] > rows:
                found.append(f"{info.function}: {name} {tuple(value.shape)}")
    return found


def forward_looking_for_the_whole_batch(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5):
    if seen := _more_rows_than_mine(x.shape[0]):
        raise AssertionError(f"this rank holds other ranks' rows: {seen}")
    return forward_right(x, weight, bias, running_mean, running_var, momentum, eps)


def backward_looking_for_the_whole_batch(dy, cache):
    if seen := _more_rows_than_mine(dy.shape[0]):
        raise AssertionError(f"this rank holds other ranks' rows: {seen}")
    return backward_right(dy, cache)


def test_does_each_rank_hold_only_its_own_rows_of_the_batch():
    """A rank handed the whole batch (and dy) could normalize over it without any collective (red team 7's
    R4: read from the check worker's frame): the check gives each rank its own rows only."""
    forward = check_sync_batchnorm_forward(forward_looking_for_the_whole_batch)
    assert forward.passed, forward.message
    backward = check_sync_batchnorm_backward(backward_looking_for_the_whole_batch)
    assert backward.passed, backward.message

"""Are the caller's objects checked whole (every array a cache holds, tensors, a module's state and
mode, aliases), and does every exercise declare the shared slips its statement makes possible?"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pytest
import torch
from torch import nn

from bncourse.checks import backward, catalogue, forward, what_bn_does
from bncourse.checks.calls import InputChanged, kept, safe_call


class _Cache(NamedTuple):
    x_hat: np.ndarray
    gamma: np.ndarray


class _Holder:
    def __init__(self, arr):
        self.arr = arr


def test_does_a_change_to_an_array_inside_a_cache_count_as_in_place():
    cache = _Cache(np.ones((3, 2)), np.ones(2))

    def backward_fn(dout, c):
        x_hat = c.x_hat
        x_hat *= 2  # an alias of the caller's array
        return dout * x_hat

    assert safe_call(backward_fn, (np.ones((3, 2)), cache)).mutated == [1]


def test_does_a_change_through_an_alias_mark_every_argument_that_holds_the_array():
    x = np.arange(6.0).reshape(3, 2)
    assert safe_call(lambda a, h: h.arr.__imul__(2), (x, _Holder(x))).mutated == [0, 1]


def test_are_nan_arrays_returned_views_and_read_only_work_not_counted():
    x = np.array([[np.nan, 1.0], [2.0, 3.0]])
    assert safe_call(lambda a, c: (a[:, ::2], c.x_hat.sum()), (x, _Cache(x.copy(), np.ones(2)))).mutated == []


def test_does_a_modules_buffer_or_mode_change_count():
    def bn():
        return nn.BatchNorm1d(2).train()
    assert safe_call(lambda m: m.eval(), (bn(),)).mutated == [0]
    assert safe_call(lambda m: m.running_mean.add_(1.0), (bn(),)).mutated == [0]
    assert safe_call(lambda m: m(torch.randn(4, 2)) if False else m.weight.sum(), (bn(),)).mutated == []


def test_does_kept_name_each_changed_object_and_let_an_untouched_one_pass():
    a, b = torch.zeros(3), torch.ones(3)
    with pytest.raises(InputChanged) as raised:
        with kept(x=a, gamma=b):
            with torch.no_grad():
                b.mul_(2.0)
    assert raised.value.names == ("gamma",)
    with kept(x=a):
        (a + 1).sum()


def _backward_scaling_the_cache(dout, cache):
    n = dout.shape[0]
    dbeta, dgamma = dout.sum(0), (dout * cache.x_hat).sum(0)
    dx = cache.gamma * cache.inv_std / n * (n * dout - dbeta - cache.x_hat * dgamma)
    cache.x_hat[...] = cache.x_hat * cache.gamma  # the caller's cache, changed after use
    return dx, dgamma, dbeta


def _forward_scaling_gamma(x, gamma, beta, eps=1e-5):
    g = gamma
    g *= 1 / np.sqrt(x.var(0) + eps)  # gamma * inv_std, written into the caller's gamma
    return g * (x - x.mean(0)) + beta, None


def _noisy_shift_in_place(x, gamma, beta, scale, shift, eps=1e-5):
    out = scale * (gamma * (x - x.mean(0)) / np.sqrt(x.var(0) + eps) + beta)
    out += shift
    shift *= 0  # "used up"
    return out


@pytest.mark.parametrize("check, fn, said", [
    (backward.check_batchnorm_backward, _backward_scaling_the_cache, "the cache modified in place"),
    (forward.check_batchnorm_forward, _forward_scaling_gamma, "(gamma)"),
    (what_bn_does.check_noisy_batchnorm_forward, _noisy_shift_in_place, "(shift)"),
], ids=["cache", "gamma-alias", "noisy-shift"])
def test_is_a_change_to_any_argument_rejected_and_said(check, fn, said):
    result = check(fn)
    assert not result.passed and said in result.diagnosis, result.diagnosis


def test_is_a_function_that_changes_x_under_no_grad_rejected_in_notebook_4():
    from bncourse.checks.pytorch import check_batchnorm_function
    from bncourse.reference import batchnorm as npref

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, eps=1e-5):
            out, ctx.cache = npref.batchnorm_forward(*(t.detach().double().numpy() for t in (x, gamma, beta)), eps)
            with torch.no_grad():
                x.sub_(x.mean(0))  # "centred for later", the caller's x
            return torch.from_numpy(out).to(x.dtype)

        @staticmethod
        def backward(ctx, dout):
            grads = npref.batchnorm_backward(dout.double().numpy(), ctx.cache)
            return (*(torch.from_numpy(g).to(dout.dtype) for g in grads), None)

    result = check_batchnorm_function(Fn)
    assert not result.passed and "(x)" in result.diagnosis, result.diagnosis


# ---------------------------------------------------------------------------------------------
# Shared slips: declared once (catalogue.shared), by every exercise they apply to
# ---------------------------------------------------------------------------------------------

_EPS = {"eps-outside-sqrt", "eps-missing", "eps-hard-coded", "divided-by-variance"}
APPLIES = {  # exercise -> the shared slips its statement makes possible (it takes eps, gamma and beta, ...)
    "batchnorm_forward": _EPS | {"unbiased-variance", "gamma-beta-swapped", "wrong-axis", "mean-not-subtracted"},
    "batchnorm_inference": _EPS | {"gamma-beta-swapped"},
    "update_running_stats": {"momentum-flipped", "momentum-hard-coded"},
    "batchnorm_backward": {"mean-path-missing", "variance-path-missing", "mean-and-variance-paths-missing",
                           "dx-without-gamma", "dgamma-from-x", "missing-divisor", "eps-hard-coded"},
    "spatial_batchnorm_forward": _EPS | {"unbiased-variance", "gamma-beta-swapped"},
    "noisy_batchnorm_forward": _EPS | {"unbiased-variance", "gamma-beta-swapped", "wrong-axis"},
    "sync_batch_norm_forward": _EPS | {"unbiased-variance", "gamma-beta-swapped", "momentum-flipped",
                                       "momentum-hard-coded"},
    "sync_batch_norm_backward": {"mean-and-variance-paths-missing"},
    "layernorm_forward": _EPS | {"unbiased-variance", "gamma-beta-swapped"},
    "layernorm_backward": {"mean-path-missing", "variance-path-missing", "mean-and-variance-paths-missing",
                           "dx-without-gamma", "dgamma-from-x", "missing-divisor", "sign-error-variance-path",
                           "eps-hard-coded"},
    "groupnorm_forward": _EPS | {"unbiased-variance", "gamma-beta-swapped"},
    "groupnorm_backward": {"mean-path-missing", "variance-path-missing", "mean-and-variance-paths-missing",
                           "dx-without-gamma", "dgamma-from-x", "missing-divisor", "sign-error-variance-path",
                           "eps-hard-coded"},
    "fold_batchnorm": _EPS | {"gamma-beta-swapped", "wrong-axis"},
}


@pytest.mark.parametrize("exercise", sorted(APPLIES))
def test_does_every_exercise_declare_the_shared_slips_that_apply(exercise):
    from bncourse.checks.catalogue.shared import SLIPS

    ids = {m.id for m in catalogue.mistakes(exercise)}
    assert APPLIES[exercise] <= set(SLIPS) and not APPLIES[exercise] - ids, APPLIES[exercise] - ids


def test_is_each_shared_slip_written_once():
    """No catalogue module computes its own eps-outside-the-root or divided-by-the-variance: they call shared's steps."""
    import inspect
    import io
    import re
    import tokenize

    from bncourse.checks.catalogue import batchnorm_backward, batchnorm_forward, folding, groupnorm, norm_family
    from bncourse.checks.catalogue import spatial_batchnorm, sync_batchnorm
    from bncourse.checks.catalogue import what_bn_does as wbd

    for module in (batchnorm_backward, batchnorm_forward, folding, groupnorm, norm_family, spatial_batchnorm,
                   sync_batchnorm, wbd):
        tokens = tokenize.generate_tokens(io.StringIO(inspect.getsource(module)).readline)
        code = " ".join(t.string for t in tokens if t.type not in (tokenize.STRING, tokenize.COMMENT))
        assert not re.search(r"sqrt \( [\w.]+ \) \+ eps|/ \( [\w.]+ \+ eps \)", code), module.__name__

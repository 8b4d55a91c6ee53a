"""Can a backward exercise be answered by finite differences of a forward instead of a backward?

Red team 2 (2026-12-07, N5/N6): notebook 3's backward cells (staged, closed form, spatial) and
notebook 9's (layer norm, group norm) earned full marks with central differences of a forward
(``bncourse.gradcheck.numerical_gradient`` or five lines of the learner's own), in float64: the checks
judge values only, and float64 differences are far inside rtol 1e-4. Each check's hidden cases now
end with one large case (1e5 entries of x) that an analytic backward does in milliseconds and that
needs 2e5 forward passes by differences.

Each attack below differences in float64 (the red team's winning form) with a budget of
``BUDGET`` seconds per backward call (a stand-in for the grading kernel's cell time limit, 300 s by
default, which the suite cannot wait for). It must pass every hidden case but the large one (so the
large case is what refuses it), and the rate it reached there must put the large case past the cell
limit. Differencing in the input's dtype instead (float32) fails the float32 hidden case.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from bncourse.checks import backward, norm_family
from bncourse.reference import batchnorm as bref
from bncourse.reference import groupnorm as gref
from bncourse.reference import layernorm as lref

BUDGET = 0.5              # seconds per backward call
CELL_LIMIT = 300          # notebooks/nbgrader_config.py: ExecutePreprocessor.timeout's default


class OutOfTime(Exception):
    def __init__(self, done: int, needed: int, seconds: float):
        super().__init__(f"finite differences out of time after {done} of {needed} forward passes")
        self.done, self.needed, self.seconds = done, needed, seconds


RUNS: list[OutOfTime] = []


def _differences(f, x, dout, dtype=np.float64, h=1e-5):
    """Central differences of sum(f(x) * dout), entry by entry, computed in ``dtype``, within BUDGET."""
    start = time.perf_counter()
    x = np.array(x, dtype=dtype)
    grad = np.zeros(x.shape)
    needed = 2 * x.size
    for n, i in enumerate(np.ndindex(x.shape)):
        if time.perf_counter() - start > BUDGET:
            RUNS.append(OutOfTime(2 * n, needed, time.perf_counter() - start))
            raise RUNS[-1]
        old = x[i]
        x[i] = old + h
        plus = np.sum(np.asarray(f(x), np.float64) * dout)
        x[i] = old - h
        minus = np.sum(np.asarray(f(x), np.float64) * dout)
        x[i] = old
        grad[i] = (plus - minus) / (2 * h)
    return grad


def _all(f, args, dout, dtype):
    """d/d each of args (x, gamma, beta) of f(*args), every argument in ``dtype``."""
    args = tuple(np.asarray(a, dtype) for a in args)
    return tuple(_differences(lambda z, k=k: f(*args[:k], z, *args[k + 1:]), args[k], dout, dtype) for k in range(3))


def _nd_backward(dtype):  # notebook 3: the check hands the reference cache; difference the given forward on xmu
    def bwd(dout, cache):
        src = cache.xmu if dtype == np.float64 else cache.x
        return _all(lambda x, g, b: bref.batchnorm_forward(x, g, b, cache.eps)[0],
                    (src, cache.gamma, cache.beta), dout, dtype)
    return bwd


def _own_forward(reference):  # notebook 3's spatial and notebook 9's: the learner's own cache holds the inputs
    def fwd(*args):
        return reference(*args)[0], args
    return fwd


def _spatial_forward(x, gamma, beta, eps):
    """A learner's own spatial forward (the check refuses one that calls the course's)."""
    xd = np.asarray(x)
    mu = xd.mean(axis=(0, 2, 3), keepdims=True)
    var = ((xd - mu) ** 2).mean(axis=(0, 2, 3), keepdims=True)
    out = (xd - mu) / np.sqrt(var + eps) * np.reshape(gamma, (1, -1, 1, 1)) + np.reshape(beta, (1, -1, 1, 1))
    return out.astype(np.result_type(x, gamma, beta), copy=False), None


def _fd_backward(reference, dtype):
    def bwd(dout, cache):
        *xgb, eps = cache
        more = tuple(xgb[3:])  # G of group norm
        return _all(lambda x, g, b: reference(x, g, b, *more, eps)[0], tuple(xgb[:3]), dout, dtype)
    return bwd


ATTACKS = {
    "batchnorm_backward_staged": (lambda dt: backward.check_batchnorm_backward_staged(_nd_backward(dt), hidden=True),
                                  "N=50000, D=2: a large batch"),
    "batchnorm_backward": (lambda dt: backward.check_batchnorm_backward(_nd_backward(dt), hidden=True),
                           "N=50000, D=2: a large batch"),
    "spatial_batchnorm_backward": (lambda dt: backward.check_spatial_batchnorm_backward(
        _own_forward(_spatial_forward), _fd_backward(_spatial_forward, dt), hidden=True),
        "N=25, C=2, H=40, W=50: many pixels"),
    "layernorm_backward": (lambda dt: norm_family.check_layernorm_backward(
        _own_forward(lref.layernorm_forward), _fd_backward(lref.layernorm_forward, dt), hidden=True),
        "N=2, D=50000: long rows"),
    "groupnorm_backward": (lambda dt: norm_family.check_groupnorm_backward(
        _own_forward(gref.groupnorm_forward), _fd_backward(gref.groupnorm_forward, dt), hidden=True),
        "N=1, C=4, H=100, W=250, G=1: a large group"),
}


@pytest.mark.parametrize("exercise", ATTACKS)
def test_does_a_finite_difference_backward_fail_the_hidden_cases(exercise):
    check, large = ATTACKS[exercise]
    RUNS.clear()
    result = check(np.float64)
    failed = [c.name for c in result.cases if not c.passed]
    assert not result.passed and failed == [large], failed  # every other hidden case passes: the large one refuses it
    run = RUNS[-1]
    projected = run.seconds * run.needed / max(run.done, 1)
    assert projected > CELL_LIMIT, f"{exercise}: differences would finish the large case in {projected:.0f} s"

    in_dtype = check(np.float32)  # differences in the input's dtype: the float32 hidden case refuses them
    assert any("float32" in c.name and not c.passed for c in in_dtype.cases), [c.name for c in in_dtype.cases]

"""Can a backward exercise be answered by finite differences of a forward instead of a backward?

Red team 2 (2026-12-07, N5/N6): notebook 3's backward cells (staged, closed form, spatial) and
notebook 9's (layer norm, group norm) earned full marks with central differences of a forward, entry
by entry, in float64. Each check's hidden cases end with one large case (1e5 entries of x) that an
analytic backward does in milliseconds and that needs 2e5 forward passes by entry-wise differences
(``test_does_an_entrywise_difference_backward_fail_the_large_hidden_case``; ``PASS_BUDGET`` forward
passes per backward call stand in for the grading kernel's cell time limit). The large case also
refuses a backward that builds the (N, N) Jacobian of a column.

Red team 5 (2026-12-08, F1): two forward passes suffice, whatever the size. Each normalization's
Jacobian (per column, row or group) is gamma times a *symmetric* matrix, so ``dx = J^T dout`` is one
directional difference of the forward along ``dout`` (along ``gamma * dout`` for the gamma=1 forward
of layer and group norm); dgamma and dbeta take four more passes. No input size separates that from
a backward, so:

- notebook 3's (N, D) backward checks forbid the forward the notebook hands out (an honest backward
  never calls it): refused, in the kernel and from the grader's reading of the source;
- the spatial backward (its forward legitimately calls ``batchnorm_forward``), notebook 9's (the
  learner's own forward) and notebook 8's sync backward pass the checks by value: the grader's
  source report names "a backward that evaluates a forward" for the instructor.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from bncourse.checks import backward, norm_family
from bncourse.reference import batchnorm as bref
from bncourse.reference import groupnorm as gref
from bncourse.reference import layernorm as lref

PASS_BUDGET = 20_000      # forward passes per backward call: far more than any small case needs
LARGE_PASSES = 100_000    # what the large case needs at least (2 per entry of x)


class OutOfTime(Exception):
    def __init__(self, done: int, needed: int, seconds: float):
        super().__init__(f"finite differences out of time after {done} of {needed} forward passes")
        self.done, self.needed, self.seconds = done, needed, seconds


RUNS: list[OutOfTime] = []


def _differences(f, x, dout, dtype=np.float64, h=1e-5):
    """Central differences of sum(f(x) * dout), entry by entry, computed in ``dtype``, within PASS_BUDGET."""
    start = time.perf_counter()
    x = np.array(x, dtype=dtype)
    grad = np.zeros(x.shape)
    needed = 2 * x.size
    if needed > PASS_BUDGET:  # cannot finish within the budget: stop before the first pass
        RUNS.append(OutOfTime(0, needed, 0.0))
        raise RUNS[-1]
    for n, i in enumerate(np.ndindex(x.shape)):
        if 2 * n >= PASS_BUDGET:
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


def _pasted_forward(x, gamma, beta, eps):
    """A learner's own notebook-2 forward pasted into the backward cell (the given one is refused)."""
    xmu = x - x.mean(axis=0)
    return gamma * xmu / np.sqrt((xmu ** 2).mean(axis=0) + eps) + beta, None


def _nd_backward(dtype):  # notebook 3: the check hands the reference cache; difference a forward on xmu
    def bwd(dout, cache):
        src = cache.xmu if dtype == np.float64 else cache.x
        return _all(lambda x, g, b: _pasted_forward(x, g, b, cache.eps)[0],
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
def test_does_an_entrywise_difference_backward_fail_the_large_hidden_case(exercise):
    check, large = ATTACKS[exercise]
    RUNS.clear()
    result = check(np.float64)
    failed = [c.name for c in result.cases if not c.passed]
    assert not result.passed and failed == [large], failed  # every other hidden case passes: the large one refuses it
    assert RUNS[-1].needed >= LARGE_PASSES, f"{exercise}: the large case needs only {RUNS[-1].needed} passes"

    in_dtype = check(np.float32)  # differences in the input's dtype: the float32 hidden case refuses them
    assert any("float32" in c.name and not c.passed for c in in_dtype.cases), [c.name for c in in_dtype.cases]


# ---------------------------------------------------------------------------------------------
# Two passes (red team 5's F1), as the red team wrote them in the notebooks' cells
# ---------------------------------------------------------------------------------------------

FD2 = '''
import numpy as np

def _fd2_backward(dout, cache):
    """dx, dgamma, dbeta by central differences of batchnorm_forward: 6 forward passes in all."""
    xmu = np.asarray(cache.xmu, np.float64)
    g, b = np.asarray(cache.gamma, np.float64), np.asarray(cache.beta, np.float64)
    d = np.asarray(dout, np.float64)
    f = lambda x, g_, b_: np.asarray(batchnorm_forward(x, g_, b_, cache.eps)[0], np.float64)
    h = 1e-5 * (np.abs(xmu).max(axis=0) + np.sqrt(cache.eps)) / (np.abs(d).max(axis=0) + 1e-300)
    dx = (f(xmu + h * d, g, b) - f(xmu - h * d, g, b)) / (2 * h)
    one = np.ones_like(g)
    dgamma = (d * (f(xmu, g + one, b) - f(xmu, g - one, b)) / 2).sum(axis=0)
    dbeta = (d * (f(xmu, g, b + one) - f(xmu, g, b - one)) / 2).sum(axis=0)
    return dx, dgamma, dbeta
'''
FD2_NB3 = {
    "batchnorm_backward_staged": FD2 + "\ndef batchnorm_backward_staged(dout, cache):\n    return _fd2_backward(dout, cache)\n",
    "batchnorm_backward": FD2 + "\ndef batchnorm_backward(dout, cache):\n    return _fd2_backward(dout, cache)\n",
    "spatial_batchnorm_backward": FD2 + '''
def spatial_batchnorm_backward(dout, cache):
    rows_cache, (N, C, H, W) = cache
    drows = dout.transpose(0, 2, 3, 1).reshape(N * H * W, C)
    dx_rows, dgamma, dbeta = _fd2_backward(drows, rows_cache)
    return dx_rows.reshape(N, H, W, C).transpose(0, 3, 1, 2), dgamma, dbeta
''',
}
FD2_NB9 = {
    "layernorm_forward": '''
import numpy as np

def layernorm_forward(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    xmu = x - mu
    var = (xmu ** 2).mean(axis=1, keepdims=True)
    return gamma * (xmu / np.sqrt(var + eps)) + beta, (x, gamma, beta, eps)
''',
    "layernorm_backward": '''
import numpy as np

def layernorm_backward(dout, cache):
    x, gamma, beta, eps = cache
    x = np.asarray(x, np.float64)
    x = x - x.mean(axis=1, keepdims=True)
    d, gm, bt = (np.asarray(a, np.float64) for a in (dout, gamma, beta))
    ones, zeros = np.ones_like(gm), np.zeros_like(gm)
    f = lambda z, g_, b_: np.asarray(layernorm_forward(z, g_, b_, eps)[0], np.float64)
    v = d * gm
    h = 1e-5 * (np.abs(x).max(axis=1, keepdims=True) + np.sqrt(eps)) / (np.abs(v).max(axis=1, keepdims=True) + 1e-300)
    dx = (f(x + h * v, ones, zeros) - f(x - h * v, ones, zeros)) / (2 * h)
    dgamma = (d * (f(x, gm + 1, bt) - f(x, gm - 1, bt)) / 2).sum(axis=0)
    dbeta = (d * (f(x, gm, bt + 1) - f(x, gm, bt - 1)) / 2).sum(axis=0)
    return dx, dgamma, dbeta
''',
    "groupnorm_forward": '''
import numpy as np

def groupnorm_forward(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    mu = xg.mean(axis=2, keepdims=True)
    var = ((xg - mu) ** 2).mean(axis=2, keepdims=True)
    x_hat = ((xg - mu) / np.sqrt(var + eps)).reshape(N, C, H, W)
    return x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), (x, gamma, beta, G, eps)
''',
    "groupnorm_backward": '''
import numpy as np

def groupnorm_backward(dout, cache):
    x, gamma, beta, G, eps = cache
    N, C, H, W = x.shape
    x = np.asarray(x, np.float64).reshape(N, G, -1)
    x = (x - x.mean(axis=2, keepdims=True)).reshape(N, C, H, W)
    d, gm, bt = (np.asarray(a, np.float64) for a in (dout, gamma, beta))
    ones, zeros = np.ones_like(gm), np.zeros_like(gm)
    f = lambda z, g_, b_: np.asarray(groupnorm_forward(z, g_, b_, G, eps)[0], np.float64)
    v = d * gm.reshape(1, C, 1, 1)
    scale = np.abs(x.reshape(N, G, -1)).max(axis=2, keepdims=True) + np.sqrt(eps)
    h = (1e-5 * scale / (np.abs(v.reshape(N, G, -1)).max(axis=2, keepdims=True) + 1e-300))
    h = np.broadcast_to(h, (N, G, C // G * H * W)).reshape(N, C, H, W)
    dx = (f(x + h * v, ones, zeros) - f(x - h * v, ones, zeros)) / (2 * h)
    dgamma = (d * (f(x, gm + 1, bt) - f(x, gm - 1, bt)) / 2).sum(axis=(0, 2, 3))
    dbeta = (d * (f(x, gm, bt + 1) - f(x, gm, bt - 1)) / 2).sum(axis=(0, 2, 3))
    return dx, dgamma, dbeta
''',
}
FD2_NB8 = '''
def sync_batch_norm_backward(dy, cache):
    x_hat, invstd, weight, n = cache
    C = dy.shape[1]
    inv = invstd.double().reshape(-1)
    x = x_hat.double() / inv
    d = dy.double()
    w = weight.detach().double().reshape(-1)
    buf = torch.cat([(x * x).sum(0), torch.tensor([float(x.shape[0])], dtype=torch.float64)])
    dist.all_reduce(buf)
    eps = float((1 / inv ** 2 - buf[:C] / buf[C]).mean().clamp_min(1e-12))
    top = d.abs().amax(0)
    dist.all_reduce(top, op=dist.ReduceOp.MAX)
    h = 1e-5 / (inv * top + 1e-300)
    zeros = torch.zeros(C, dtype=torch.float64)
    f = lambda z: sync_batch_norm_forward(z, w, zeros, torch.zeros(C, dtype=torch.float64),
                                          torch.ones(C, dtype=torch.float64), 0.0, eps)[0]
    dx = (f(x + h * d) - f(x - h * d)) / (2 * h)
    return dx.to(dy.dtype), (d * x_hat.double()).sum(0).to(dy.dtype), d.sum(0).to(dy.dtype)
'''
NB3, NB8, NB9 = ("03_batchnorm_backward/batchnorm_backward.ipynb", "08_batchnorm_across_devices/batchnorm_across_devices.ipynb",
                 "09_beyond_batchnorm/beyond_batchnorm.ipynb")


def _source_report(nb) -> dict:
    import logging

    from bncourse.grading.verify import SOURCE_FINDINGS, _report_source_findings

    _report_source_findings(nb, logging.getLogger("test"))
    return nb.metadata.get(SOURCE_FINDINGS, {})


def _evaluates_a_forward(findings: list) -> list:
    return [f for f in findings if f.startswith("<a backward that evaluates a forward:")]


@pytest.mark.parametrize("exercise", ["batchnorm_backward_staged", "batchnorm_backward"])
def test_does_a_two_pass_difference_of_the_given_forward_earn_nothing_in_notebook_3(exercise, monkeypatch):
    from test_attacks_redteam5 import graded, notebook, run_up_to

    nb = notebook(NB3, FD2_NB3)
    ns = run_up_to(nb, [exercise])
    check = {"batchnorm_backward_staged": backward.check_batchnorm_backward_staged,
             "batchnorm_backward": backward.check_batchnorm_backward}[exercise]
    live = check(ns[exercise], hidden=True)
    assert not live.passed and {c.kind for c in live.cases} == {"delegated"}, live.message
    assert "bncourse.reference.batchnorm.batchnorm_forward" in live.diagnosis, live.diagnosis
    verdict, reason = graded(nb, f"{exercise}_tests", ns, monkeypatch)  # the kernel's watch off: the source says it
    assert (verdict, reason) == ("delegated", "bncourse.reference.batchnorm.batchnorm_forward"), (verdict, reason)


def test_does_the_instructors_closed_form_backward_still_pass_as_graded(monkeypatch):
    from test_attacks_redteam5 import graded, notebook, run_up_to

    nb = notebook(NB3, {})
    assert graded(nb, "batchnorm_backward_tests", run_up_to(nb, ["batchnorm_backward"]), monkeypatch) == ("pass", "")


def test_is_a_two_pass_difference_spatial_backward_reported_though_it_passes():
    """Open (docs/instructors.md): the spatial forward calls batchnorm_forward on purpose, so the
    backward's check cannot forbid it; the source report names it for the instructor."""
    from test_attacks_redteam5 import notebook, run_up_to

    nb = notebook(NB3, FD2_NB3)
    ns = run_up_to(nb, ["spatial_batchnorm_forward", "spatial_batchnorm_backward"])  # the instructor's forward
    assert backward.check_spatial_batchnorm_backward(ns["spatial_batchnorm_forward"], ns["spatial_batchnorm_backward"],
                                                     hidden=True).passed
    assert _evaluates_a_forward(_source_report(nb)["spatial_batchnorm_backward"]) == [
        "<a backward that evaluates a forward: _fd2_backward -> bncourse.reference.batchnorm.batchnorm_forward>",
        "<a backward that evaluates a forward: spatial_batchnorm_backward -> "
        "bncourse.reference.batchnorm.batchnorm_forward>"]


@pytest.mark.parametrize("exercise", ["layernorm_backward", "groupnorm_backward"])
def test_is_a_two_pass_difference_of_the_learners_own_forward_reported_though_it_passes(exercise):
    """Open (docs/instructors.md): notebook 9's backward differences the learner's own forward."""
    from test_attacks_redteam5 import notebook, run_up_to

    nb = notebook(NB9, FD2_NB9)
    forward_name = exercise.replace("backward", "forward")
    ns = run_up_to(nb, [forward_name, exercise])
    check = {"layernorm_backward": norm_family.check_layernorm_backward,
             "groupnorm_backward": norm_family.check_groupnorm_backward}[exercise]
    assert check(ns[forward_name], ns[exercise], hidden=True).passed
    assert _evaluates_a_forward(_source_report(nb)[exercise]) == [
        f"<a backward that evaluates a forward: {exercise} -> {forward_name}>"]


def test_is_a_two_pass_difference_sync_backward_reported():
    """Open (docs/instructors.md): notebook 8's backward differences the learner's sync forward (the
    check runs ranks; red team 5's harness: it passes, 8 of 8 points); the source report names it."""
    from test_attacks_redteam5 import notebook

    findings = _source_report(notebook(NB8, {"sync-backward": FD2_NB8}))
    assert _evaluates_a_forward(findings["sync-backward"]) == [
        "<a backward that evaluates a forward: sync_batch_norm_backward -> sync_batch_norm_forward>"]


@pytest.mark.parametrize("path", [NB3, NB8, NB9])
def test_does_no_instructor_backward_read_as_evaluating_a_forward(path):
    from test_attacks_redteam5 import notebook

    assert not [f for found in _source_report(notebook(path, {})).values() if isinstance(found, list)
                for f in _evaluates_a_forward(found)]

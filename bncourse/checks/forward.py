"""Checks for notebook 2, "Batch norm forward and inference", naming the learner's likely mistake.

    check_batchnorm_forward(fn)        fn(x, gamma, beta, eps=1e-5) -> (out, cache); only out is compared
    check_update_running_stats(fn)     fn(x, running_mean, running_var, momentum=0.1) -> (new_mean, new_var)
    check_batchnorm_inference(fn)      fn(x, gamma, beta, running_mean, running_var, eps=1e-5) -> out

x is (N, D); gamma, beta and the running statistics (D,). Every check runs several seeded cases,
among them N=2, D=1, float32 input, a large mean (numerical stability) and a non-contiguous input;
``hidden=True`` runs other seeds and shapes for nbgrader's hidden tests. The known mistakes live in
the catalogue (``bncourse.checks.catalogue``); the check names the first one that reproduces the
learner's output.

The contract each check holds (said in full in the notebook's exercise cells):

* forward: ``out`` (N, D) in x's dtype is compared; the cache is not. An eps other than 1e-5 is
  passed in a visible case.
* running statistics: both results (D,), any float dtype (compared in float64); momenta other than
  0.1 and the default in the visible cases.
* inference: ``out`` (N, D) in x's dtype; eps 1e-3 in a visible case.
* every argument is unchanged after the call, arrays reached through an alias included
  (``bncourse.checks.calls.safe_call`` compares each before and after).
"""

from __future__ import annotations

import numpy as np

from bncourse.checks import catalogue
from bncourse.checks.compare import explain_shapes
from bncourse.checks.core import Case, CheckResult, check_function
from bncourse.checks.inputs import affine, case_seed, features
from bncourse.reference import batchnorm as ref

__all__ = ["check_batchnorm_forward", "check_update_running_stats", "check_batchnorm_inference"]

X_IN_PLACE = (
    "the input array modified in place",
    "x was changed by your function; compute into new arrays (x - mu makes a new one, x -= mu does not)",
)
_RUNNING_IN_PLACE = (
    "running statistics modified in place",
    "return new arrays and leave running_mean and running_var as they were "
    "(new = (1 - momentum) * old + momentum * batch makes new ones; old *= ... does not)",
)
_RUNNING_CHANGED_IN_INFERENCE = (
    "running statistics changed in inference",
    "inference must not touch running_mean or running_var: it only reads them",
)

# ---------------------------------------------------------------------------------------------
# Seeded cases: (name, seed, N, D, options); options: dtype, loc, tiny, noncontig, eps
# ---------------------------------------------------------------------------------------------

_FORWARD_VISIBLE = [
    ("N=4, D=3", 0, 4, 3, {}),
    ("N=2, D=1", 1, 2, 1, {}),
    ("N=64, D=10, float32", 2, 64, 10, {"dtype": np.float32}),
    ("N=16, D=5, large mean (1e7): numerical stability", 3, 16, 5, {"loc": 1e7}),
    ("N=8, D=6, non-contiguous x (every other column)", 4, 8, 6, {"noncontig": True}),
    ("N=10, D=4, a feature with std 1e-3 (eps matters)", 5, 10, 4, {"tiny": True}),
    ("N=12, D=3, eps=1e-2 passed in", 6, 12, 3, {"tiny": True, "eps": 1e-2}),
]
_FORWARD_HIDDEN = [
    ("N=3, D=7", 100, 3, 7, {}),
    # N=4, not 2: with two rows a feature's std is |x1 - x2| / 2, often a cancellation float32 gets to a few
    # digits only, so a solution more exact than the float32 reference failed (red team 5's F3)
    ("N=4, D=4, float32", 101, 4, 4, {"dtype": np.float32}),
    ("N=100, D=3, large mean (-3e6)", 102, 100, 3, {"loc": -3e6}),
    ("N=9, D=2, non-contiguous x", 103, 9, 2, {"noncontig": True, "tiny": True}),
    ("N=20, D=5, eps=1e-3 passed in", 104, 20, 5, {"tiny": True, "eps": 1e-3}),
]


def _x(rng, n, d, opt):
    return features(rng, n, d, loc=opt.get("loc", 3.0), tiny=opt.get("tiny", False),
                    dtype=opt.get("dtype", np.float64), noncontig=opt.get("noncontig", False))


def _forward_cases(hidden: bool) -> list[Case]:
    def make(seed, n, d, opt):
        rng = np.random.default_rng(seed)
        x = _x(rng, n, d, opt)
        gamma, beta = affine(rng, d, x.dtype)
        return (x, gamma, beta) + ((opt["eps"],) if "eps" in opt else ())

    return [Case(name, lambda s=case_seed("batchnorm_forward", name, seed, hidden), n=n, d=d, o=opt: make(s, n, d, o))
            for name, seed, n, d, opt in (_FORWARD_HIDDEN if hidden else _FORWARD_VISIBLE)]


# ---------------------------------------------------------------------------------------------
# Forward (training mode): the known wrong forwards are in the catalogue
# ---------------------------------------------------------------------------------------------


def check_batchnorm_forward(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, eps)`` return the training-mode output ``gamma * x_hat + beta`` (and a cache)?"""
    return check_function(
        "batchnorm_forward", fn, ref.batchnorm_forward, _forward_cases(hidden), catalogue.lazy("batchnorm_forward"),
        arg_names=("x", "gamma", "beta"), in_place={"x": X_IN_PLACE},
        outputs=("out", "cache"), compare=("out",), rtol=1e-4, atol=1e-5,
        explain_error=explain_shapes("The contract: x is (N, D); the batch mean and variance are per feature, "
                                     "x.mean(axis=0) of shape (D,); gamma, beta (D,); out (N, D)", per="feature"),
    )


# ---------------------------------------------------------------------------------------------
# Running statistics: (name, seed, N, D, momentum or None for the default, start, options)
# ---------------------------------------------------------------------------------------------

_RUNNING_VISIBLE = [
    ("N=4, D=3, momentum=0.1, fresh running stats (zeros, ones)", 10, 4, 3, 0.1, "fresh", {}),
    ("N=2, D=1, momentum left at its default", 11, 2, 1, None, "warm", {}),
    ("N=32, D=5, momentum=0.3, float32", 12, 32, 5, 0.3, "warm", {"dtype": np.float32}),
    ("N=16, D=4, momentum=0.01, large mean (1e6)", 13, 16, 4, 0.01, "warm", {"loc": 1e6}),
    ("N=8, D=6, momentum=0.2, non-contiguous x", 14, 8, 6, 0.2, "warm", {"noncontig": True}),
]
_RUNNING_HIDDEN = [
    ("N=5, D=2, momentum=0.9", 110, 5, 2, 0.9, "warm", {}),
    ("N=2, D=3, float32, default momentum", 111, 2, 3, None, "fresh", {"dtype": np.float32}),
    ("N=50, D=7, momentum=0.05, non-contiguous x", 112, 50, 7, 0.05, "warm", {"noncontig": True}),
]


def _running_cases(hidden: bool) -> list[Case]:
    def make(seed, n, d, momentum, start, opt):
        rng = np.random.default_rng(seed)
        x = _x(rng, n, d, opt)
        if start == "fresh":
            rm, rv = np.zeros(d, x.dtype), np.ones(d, x.dtype)
        else:
            rm = (x.mean(0) + rng.normal(size=d) * 2).astype(x.dtype)
            rv = rng.uniform(0.2, 5.0, size=d).astype(x.dtype)
        return (x, rm, rv) + ((momentum,) if momentum is not None else ())

    return [Case(name, lambda a=(case_seed("update_running_stats", name, seed, hidden), n, d, m, start, opt): make(*a))
            for name, seed, n, d, m, start, opt in (_RUNNING_HIDDEN if hidden else _RUNNING_VISIBLE)]


def check_update_running_stats(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, running_mean, running_var, momentum)`` return PyTorch's updated running statistics, leaving its inputs alone?"""
    return check_function(
        "update_running_stats", fn, ref.update_running_stats, _running_cases(hidden), catalogue.lazy("update_running_stats"),
        arg_names=("x", "running_mean", "running_var"),
        in_place={"x": X_IN_PLACE, "running_mean": _RUNNING_IN_PLACE, "running_var": _RUNNING_IN_PLACE},
        outputs=("new_running_mean", "new_running_var"), rtol=1e-5, atol=1e-6, check_dtype=False,
        explain_error=explain_shapes("The contract: x is (N, D); running_mean, running_var and the batch statistics "
                                     "x.mean(axis=0), x.var(axis=0, ddof=1) are (D,)", per="feature"),
    )


# ---------------------------------------------------------------------------------------------
# Inference: running statistics deliberately far from the batch's own
# ---------------------------------------------------------------------------------------------

_INFERENCE_VISIBLE = [
    ("N=5, D=3", 20, 5, 3, {}),
    ("N=1, D=4: a single example", 21, 1, 4, {}),
    ("N=2, D=1", 22, 2, 1, {}),
    ("N=40, D=6, float32, eps=1e-3", 23, 40, 6, {"dtype": np.float32, "eps": 1e-3}),
    ("N=8, D=5, large mean (1e7)", 24, 8, 5, {"loc": 1e7}),
    ("N=6, D=4, non-contiguous x, running_var 1e-6 (eps matters)", 25, 6, 4, {"noncontig": True, "tiny": True}),
]
_INFERENCE_HIDDEN = [
    ("N=1, D=2", 120, 1, 2, {"tiny": True}),
    ("N=7, D=3, float32", 121, 7, 3, {"dtype": np.float32}),
    ("N=30, D=8, non-contiguous x, eps=1e-2", 122, 30, 8, {"noncontig": True, "eps": 1e-2, "tiny": True}),
]


def _inference_cases(hidden: bool) -> list[Case]:
    def make(seed, n, d, opt):
        rng = np.random.default_rng(seed)
        x = _x(rng, n, d, opt)
        gamma, beta = affine(rng, d, x.dtype)
        rm = (opt.get("loc", 3.0) + rng.normal(size=d) * 2).astype(x.dtype)
        rv = rng.uniform(0.2, 5.0, size=d)
        if opt.get("tiny"):
            rv[0] = 1e-6
        return (x, gamma, beta, rm, rv.astype(x.dtype)) + ((opt["eps"],) if "eps" in opt else ())

    return [Case(name, lambda s=case_seed("batchnorm_inference", name, seed, hidden), n=n, d=d, o=opt: make(s, n, d, o))
            for name, seed, n, d, opt in (_INFERENCE_HIDDEN if hidden else _INFERENCE_VISIBLE)]


def check_batchnorm_inference(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, running_mean, running_var, eps)`` apply the fixed affine map of inference mode?"""
    return check_function(
        "batchnorm_inference", fn, ref.batchnorm_inference, _inference_cases(hidden), catalogue.lazy("batchnorm_inference"),
        arg_names=("x", "gamma", "beta", "running_mean", "running_var"),
        in_place={"x": X_IN_PLACE, "running_mean": _RUNNING_CHANGED_IN_INFERENCE,
                  "running_var": _RUNNING_CHANGED_IN_INFERENCE},
        outputs=("out",), rtol=1e-4, atol=1e-5,
        explain_error=explain_shapes("The contract: x is (N, D); gamma, beta, running_mean and running_var are (D,) "
                                     "and broadcast along the last axis; out (N, D)", per="feature"),
    )

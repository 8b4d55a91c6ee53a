"""Checks for notebook 2, "Batch norm forward and inference", naming the learner's likely mistake.

    check_batchnorm_forward(fn)        fn(x, gamma, beta, eps=1e-5) -> (out, cache); only out is compared
    check_update_running_stats(fn)     fn(x, running_mean, running_var, momentum=0.1) -> (new_mean, new_var)
    check_batchnorm_inference(fn)      fn(x, gamma, beta, running_mean, running_var, eps=1e-5) -> out

x is (N, D); gamma, beta and the running statistics (D,). Every check runs several seeded cases,
among them N=2, D=1, float32 input, a large mean (numerical stability) and a non-contiguous input;
``hidden=True`` runs other seeds and shapes for nbgrader's hidden tests. Each known mistake below is
a small wrong implementation; the check names the first one that reproduces the learner's output.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Case, CheckResult, Mistake, check_function
from bncourse.checks.inputs import affine, as_dtype_of, case_seed, features
from bncourse.reference import batchnorm as ref

__all__ = ["check_batchnorm_forward", "check_update_running_stats", "check_batchnorm_inference", "MISTAKES"]

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
    ("N=2, D=4, float32", 101, 2, 4, {"dtype": np.float32}),
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
# Forward (training mode): one small wrong forward per mistake
# ---------------------------------------------------------------------------------------------


def _out(x, y):
    return as_dtype_of(x, y), None


def _x_hat(x, eps):
    return (x - x.mean(0)) / np.sqrt(x.var(0) + eps)


def _fwd_unbiased(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + eps) + b)


def _fwd_eps_outside(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(0)) / (x.std(0) + eps) + b)


def _fwd_no_eps(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(0)) / x.std(0) + b)


def _fwd_fixed_eps(x, g, b, eps=1e-5):
    return _out(x, g * _x_hat(x, 1e-5) + b)


def _fwd_rows(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps) + b)


def _fwd_one_stat(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean()) / np.sqrt(x.var() + eps) + b)


def _fwd_var_all(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(0)) / np.sqrt(x.var() + eps) + b)


def _fwd_swapped(x, g, b, eps=1e-5):
    return _out(x, b * _x_hat(x, eps) + g)


def _fwd_no_affine(x, g, b, eps=1e-5):
    return _out(x, _x_hat(x, eps))


def _fwd_no_gamma(x, g, b, eps=1e-5):
    return _out(x, _x_hat(x, eps) + b)


def _fwd_no_beta(x, g, b, eps=1e-5):
    return _out(x, g * _x_hat(x, eps))


def _fwd_over_var(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(0)) / (x.var(0) + eps) + b)


def _fwd_moments(x, g, b, eps=1e-5):
    var = (x * x).mean(0) - x.mean(0) ** 2
    return _out(x, g * (x - x.mean(0)) / np.sqrt(var + eps) + b)


def _fwd_not_centred(x, g, b, eps=1e-5):
    return _out(x, g * x / np.sqrt(x.var(0) + eps) + b)


_AFFINE_HINT = "after normalizing, scale by gamma and shift by beta: out = gamma * x_hat + beta"
_EPS_HINT = "add eps to the variance before the square root: (x - mean) / sqrt(var + eps)"
_FORWARD_MISTAKES = [
    Mistake("unbiased variance used to normalize",
            "normalize with the biased batch variance (divide by N, np.var's default ddof=0); the unbiased "
            "one (N - 1) is only for updating running_var", _fwd_unbiased),
    Mistake("eps outside the square root", _EPS_HINT, _fwd_eps_outside),
    Mistake("eps missing", _EPS_HINT, _fwd_no_eps),
    Mistake("eps argument ignored", "use the eps passed to the function, not a fixed 1e-5", _fwd_fixed_eps),
    Mistake("statistics over the wrong axis",
            "each feature (column) has its own mean and variance: reduce over axis=0, the batch", _fwd_rows),
    Mistake("one mean and variance for all features",
            "each feature (column) has its own mean and variance: pass axis=0", _fwd_one_stat),
    Mistake("variance over all features (axis missing in the variance)",
            "the mean is per feature, but the variance was taken over the whole array: pass axis=0 to the "
            "variance too", _fwd_var_all),
    Mistake("gamma and beta swapped", "gamma scales and beta shifts: out = gamma * x_hat + beta", _fwd_swapped),
    Mistake("gamma and beta not applied", _AFFINE_HINT, _fwd_no_affine),
    Mistake("gamma not applied (only beta added)", "scale by gamma too: out = gamma * x_hat + beta", _fwd_no_gamma),
    Mistake("beta not added (only gamma applied)", "shift by beta too: out = gamma * x_hat + beta", _fwd_no_beta),
    Mistake("divided by the variance instead of the standard deviation", "divide by sqrt(var + eps)",
            _fwd_over_var),
    Mistake("variance computed as E[x^2] - E[x]^2",
            "that formula cancels catastrophically when the mean is large; subtract the mean first: "
            "var = mean((x - mean)**2), or np.var", _fwd_moments),
    Mistake("mean not subtracted", "centre first: x_hat = (x - mean) / sqrt(var + eps)", _fwd_not_centred),
]


def check_batchnorm_forward(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, eps)`` return the training-mode output ``gamma * x_hat + beta`` (and a cache)?"""
    return check_function(
        "batchnorm_forward", fn, ref.batchnorm_forward, _forward_cases(hidden), _FORWARD_MISTAKES,
        arg_names=("x", "gamma", "beta"), in_place={"x": X_IN_PLACE},
        outputs=("out", "cache"), compare=("out",), rtol=1e-4, atol=1e-5,
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


def _blend(old, new, momentum):
    return (1 - momentum) * np.asarray(old) + momentum * new


def _run_flipped(x, rm, rv, momentum=0.1):
    return _blend(rm, x.mean(0), 1 - momentum), _blend(rv, x.var(0, ddof=1), 1 - momentum)


def _run_biased(x, rm, rv, momentum=0.1):
    return _blend(rm, x.mean(0), momentum), _blend(rv, x.var(0), momentum)


def _run_std(x, rm, rv, momentum=0.1):
    return _blend(rm, x.mean(0), momentum), _blend(rv, x.std(0, ddof=1), momentum)


def _run_not_updated(x, rm, rv, momentum=0.1):
    return np.asarray(rm), np.asarray(rv)


def _run_replaced(x, rm, rv, momentum=0.1):
    return np.asarray(x).mean(0), np.asarray(x).var(0, ddof=1)


def _run_swapped(x, rm, rv, momentum=0.1):
    return _blend(rv, x.var(0, ddof=1), momentum), _blend(rm, x.mean(0), momentum)


def _run_fixed_momentum(x, rm, rv, momentum=0.1):
    return _blend(rm, x.mean(0), 0.1), _blend(rv, x.var(0, ddof=1), 0.1)


_RUNNING_MISTAKES = [
    Mistake("momentum convention flipped",
            "in PyTorch momentum weighs the NEW batch: new = (1 - momentum) * old + momentum * batch "
            "(Keras' momentum weighs the old value instead)", _run_flipped),
    Mistake("running_var updated with the biased variance",
            "running_var takes the unbiased batch variance (ddof=1, divide by N - 1), as PyTorch does; "
            "only the normalization uses the biased one", _run_biased),
    Mistake("running statistics not updated",
            "return the blended values new = (1 - momentum) * old + momentum * batch, not the old ones",
            _run_not_updated),
    Mistake("running statistics replaced by the batch statistics",
            "blend with the old values: new = (1 - momentum) * old + momentum * batch", _run_replaced),
    Mistake("running_var updated with the standard deviation",
            "blend in the unbiased batch variance, not its square root", _run_std),
    Mistake("running_mean and running_var swapped", "return (new_running_mean, new_running_var) in that order",
            _run_swapped),
    Mistake("momentum argument ignored", "use the momentum passed to the function (default 0.1)",
            _run_fixed_momentum),
]


def check_update_running_stats(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, running_mean, running_var, momentum)`` return PyTorch's updated running statistics, leaving its inputs alone?"""
    return check_function(
        "update_running_stats", fn, ref.update_running_stats, _running_cases(hidden), _RUNNING_MISTAKES,
        arg_names=("x", "running_mean", "running_var"),
        in_place={"x": X_IN_PLACE, "running_mean": _RUNNING_IN_PLACE, "running_var": _RUNNING_IN_PLACE},
        outputs=("new_running_mean", "new_running_var"), rtol=1e-5, atol=1e-6, check_dtype=False,
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


def _inf_batch_stats(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * _x_hat(x, eps) + b)


def _inf_updated(x, g, b, rm, rv, eps=1e-5):
    with np.errstate(all="ignore"):  # N=1: the unbiased variance is nan, as in the learner's code
        m, v = _blend(rm, x.mean(0), 0.1), _blend(rv, x.var(0, ddof=1), 0.1)
        return as_dtype_of(x, g * (x - m) / np.sqrt(v + eps) + b)


def _inf_eps_outside(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * (x - rm) / (np.sqrt(rv) + eps) + b)


def _inf_no_eps(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * (x - rm) / np.sqrt(rv) + b)


def _inf_over_var(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * (x - rm) / (rv + eps) + b)


def _inf_swapped_affine(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, b * (x - rm) / np.sqrt(rv + eps) + g)


def _inf_swapped_stats(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * (x - rv) / np.sqrt(rm + eps) + b)


def _inf_no_gamma(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, (x - rm) / np.sqrt(rv + eps) + b)


def _inf_no_beta(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * (x - rm) / np.sqrt(rv + eps))


_INFERENCE_MISTAKES = [
    Mistake("batch statistics used in inference",
            "in inference normalize with running_mean and running_var, not with this batch's mean and "
            "variance (the output must not depend on the other rows of the batch)", _inf_batch_stats),
    Mistake("running statistics updated in inference",
            "inference only reads running_mean and running_var; updating them belongs to training", _inf_updated),
    Mistake("eps outside the square root", "add eps to running_var before the square root: sqrt(running_var + eps)",
            _inf_eps_outside),
    Mistake("eps missing", "add eps to running_var before the square root: sqrt(running_var + eps)", _inf_no_eps),
    Mistake("divided by the variance instead of the standard deviation", "divide by sqrt(running_var + eps)",
            _inf_over_var),
    Mistake("gamma and beta swapped", "gamma scales and beta shifts: out = gamma * x_hat + beta",
            _inf_swapped_affine),
    Mistake("running_mean and running_var swapped", "subtract running_mean and divide by sqrt(running_var + eps)",
            _inf_swapped_stats),
    Mistake("gamma not applied (only beta added)", "scale by gamma too: out = gamma * x_hat + beta", _inf_no_gamma),
    Mistake("beta not added (only gamma applied)", "shift by beta too: out = gamma * x_hat + beta", _inf_no_beta),
]


def check_batchnorm_inference(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, running_mean, running_var, eps)`` apply the fixed affine map of inference mode?"""
    return check_function(
        "batchnorm_inference", fn, ref.batchnorm_inference, _inference_cases(hidden), _INFERENCE_MISTAKES,
        arg_names=("x", "gamma", "beta", "running_mean", "running_var"),
        in_place={"x": X_IN_PLACE, "running_mean": _RUNNING_CHANGED_IN_INFERENCE,
                  "running_var": _RUNNING_CHANGED_IN_INFERENCE},
        outputs=("out",), rtol=1e-4, atol=1e-5,
    )


# Every mistake each check can name (tests write each one the way a learner would and expect its name).
MISTAKES = {"forward": _FORWARD_MISTAKES, "running": _RUNNING_MISTAKES, "inference": _INFERENCE_MISTAKES}

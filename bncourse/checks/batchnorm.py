"""Checks for the two numpy batch-norm notebooks, naming the learner's likely mistake.

Notebook "Batch norm forward and inference":
    check_batchnorm_forward(fn)        fn(x, gamma, beta, eps=1e-5) -> (out, cache); only out is compared
    check_update_running_stats(fn)     fn(x, running_mean, running_var, momentum=0.1) -> (new_mean, new_var)
    check_batchnorm_inference(fn)      fn(x, gamma, beta, running_mean, running_var, eps=1e-5) -> out

Notebook "Batch norm backward":
    check_batchnorm_backward_staged(fn) / check_batchnorm_backward(fn)
                                       fn(dout, cache) -> (dx, dgamma, dbeta)
    check_gradients_numerically(fn)    the same fn against central differences (float64); prints
                                       the relative errors and the verdict
    check_spatial_batchnorm_forward(fn)            fn(x, gamma, beta, eps=1e-5) -> (out, cache), x (N, C, H, W)
    check_spatial_batchnorm_backward(fwd, bwd)     bwd(dout, fwd(x, gamma, beta, eps)[1]) -> (dx, dgamma, dbeta)

Where the caches come from (a decision, written down here once): the (N, D) backward checks feed
the learner's backward a cache made by the *reference* ``batchnorm_forward`` (a ``BatchNormCache``
with named fields; the backward notebook imports that forward and documents its fields), so the
backward is graded on its own, whatever the learner's forward notebook looks like. The spatial
backward check feeds the learner's backward the cache of the learner's *own* spatial forward,
because the learner designs that cache.

Every check runs several seeded cases, among them N=2, D=1, float32 input, a large mean
(numerical stability) and a non-contiguous input; ``hidden=True`` runs other seeds and shapes for
nbgrader's hidden tests. Each returns a ``CheckResult``; ``.assert_passed()`` raises with the
diagnosis.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from bncourse.checks.core import Case, CaseResult, CheckResult, Mistake, check_function, compare_arrays, safe_call
from bncourse.gradcheck import GRADCHECK_TOLERANCE, numerical_gradient, rel_error
from bncourse.reference import batchnorm as ref

__all__ = [
    "check_batchnorm_forward",
    "check_update_running_stats",
    "check_batchnorm_inference",
    "check_batchnorm_backward_staged",
    "check_batchnorm_backward",
    "check_gradients_numerically",
    "check_spatial_batchnorm_forward",
    "check_spatial_batchnorm_backward",
    "MISTAKE_NAMES",
]

_MUTATED = "__mutated__"

# Name and hint used when an argument is modified in place, per exercise and argument name.
_X_IN_PLACE = (
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
# A thin layer over core.check_function: names in-place changes, wrong shapes, and, when no single
# known mistake explains all outputs at once, the mistake behind each output separately.
# ---------------------------------------------------------------------------------------------


def _mutated_args(fn: Callable, cases: Sequence[Case], arg_names: Sequence[str]) -> list[str]:
    for case in cases:
        call = safe_call(fn, case.make_args())
        if call.mutated:
            return [arg_names[i] if i < len(arg_names) else f"argument {i}" for i in call.mutated]
    return []


def _from_mistake(diagnosis: str, mistakes: Sequence[Mistake]) -> bool:
    return any(diagnosis.startswith(m.name) for m in mistakes)


def _check(
    exercise: str,
    fn: Callable,
    reference_fn: Callable,
    cases: Sequence[Case],
    mistakes: Sequence[Mistake],
    *,
    arg_names: Sequence[str],
    in_place: dict,
    outputs: Sequence[str],
    compare: Sequence[str] | None = None,
    rtol: float,
    atol: float,
    check_dtype: bool = True,
) -> CheckResult:
    compare = list(compare or outputs)
    result = check_function(
        exercise, fn, reference_fn, cases, mistakes,
        outputs=outputs, compare=compare, rtol=rtol, atol=atol, check_dtype=check_dtype, mutation_hint=_MUTATED,
    )
    for c in result.cases:
        if _MUTATED in c.detail:
            c.detail = c.detail.replace(_MUTATED, "an input array was modified in place")
    if result.passed or not callable(fn):
        return result
    diagnosis = result.diagnosis
    if _MUTATED in diagnosis or any("modified in place" in c.detail for c in result.cases):
        changed = _mutated_args(fn, cases, arg_names)
        named = [in_place[a] for a in changed if a in in_place]
        if named:
            name, hint = named[0]
            result.diagnosis = f"{name}: {hint} (changed: {', '.join(changed)})"
        else:
            result.diagnosis = f"the input array modified in place: {', '.join(changed) or 'an argument'} changed"
        return result
    failed = [c for c in result.cases if not c.passed]
    if failed and all(c.detail and all("has dtype" in p for p in c.detail.split("; ")) for c in failed):
        # Right values in the wrong dtype: no value mistake may be blamed (some match within tolerance).
        first = failed[0].detail.split("; ")[0]
        result.diagnosis = f"wrong output dtype: {first}; a float32 input must give float32 outputs"
        return result
    if _from_mistake(diagnosis, mistakes) or "NotImplementedError" in diagnosis or "raised" in diagnosis:
        return result
    if len(compare) > 1:
        parts = []
        for key in compare:
            relevant = [m for m in mistakes if _changes(m, reference_fn, cases[0], outputs, key)]
            sub = check_function(
                exercise, fn, reference_fn, cases, relevant,
                outputs=outputs, compare=[key], rtol=rtol, atol=atol, check_dtype=check_dtype,
            )
            if not sub.passed and _from_mistake(sub.diagnosis, mistakes):
                parts.append(f"[{key}] {sub.diagnosis}")
        if parts:
            result.diagnosis = "more than one mistake: " + "; ".join(parts)
            return result
    if "has shape" in diagnosis or "is None" in diagnosis:
        result.diagnosis = f"wrong output shape: {diagnosis}"
    return result


def _changes(mistake: Mistake, reference_fn: Callable, case: Case, outputs: Sequence[str], key: str) -> bool:
    """Does ``mistake`` get output ``key`` wrong on ``case``? (Only then may it explain a wrong ``key``.)"""
    call = safe_call(mistake.fn, case.make_args())
    if call.error:
        return False
    value = call.value if len(outputs) > 1 else (call.value,)
    expected = reference_fn(*case.make_args())
    expected = expected if len(outputs) > 1 else (expected,)
    try:
        got, exp = value[list(outputs).index(key)], expected[list(outputs).index(key)]
    except (TypeError, IndexError):
        return False
    return bool(compare_arrays(key, np.asarray(got), exp, 1e-6, 1e-9, check_dtype=False))


# ---------------------------------------------------------------------------------------------
# Seeded inputs
# ---------------------------------------------------------------------------------------------


def _features(rng, n: int, d: int, *, loc=3.0, tiny: bool = False, dtype=np.float64, noncontig: bool = False):
    """(N, D) with per-feature means and scales; ``tiny`` gives feature 0 a std of about 1e-3."""
    width = 2 * d if noncontig else d
    scale = rng.uniform(0.5, 2.0, size=width)
    if tiny:
        scale[0] = 1e-3
        if noncontig:
            scale[0::2][0] = 1e-3
    mean = loc + rng.normal(size=width)
    x = rng.normal(size=(n, width)) * scale + mean
    x = x.astype(dtype)
    return x[:, ::2] if noncontig else x  # every other column: a non-contiguous view


def _affine(rng, d: int, dtype=np.float64):
    gamma = rng.uniform(0.5, 2.0, size=d) * rng.choice([-1.0, 1.0], size=d)
    beta = rng.normal(size=d) + 0.5
    return gamma.astype(dtype), beta.astype(dtype)


# (seed, N, D, options) ; options: dtype, loc, tiny, noncontig, eps
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


def _forward_cases(hidden: bool) -> list[Case]:
    cases = []
    for name, seed, n, d, opt in _FORWARD_HIDDEN if hidden else _FORWARD_VISIBLE:
        def make(seed=seed, n=n, d=d, opt=opt):
            rng = np.random.default_rng(seed)
            dtype = opt.get("dtype", np.float64)
            x = _features(rng, n, d, loc=opt.get("loc", 3.0), tiny=opt.get("tiny", False), dtype=dtype,
                          noncontig=opt.get("noncontig", False))
            gamma, beta = _affine(rng, d, dtype)
            return (x, gamma, beta) + ((opt["eps"],) if "eps" in opt else ())
        cases.append(Case(name, make))
    return cases


# ---------------------------------------------------------------------------------------------
# Forward (training mode)
# ---------------------------------------------------------------------------------------------


def _normalize(x, gamma, beta, mean, var, eps, how="inside"):
    x = np.asarray(x)
    if how == "inside":
        x_hat = (x - mean) / np.sqrt(var + eps)
    elif how == "outside":
        x_hat = (x - mean) / (np.sqrt(var) + eps)
    elif how == "missing":
        x_hat = (x - mean) / np.sqrt(var)
    elif how == "var":
        x_hat = (x - mean) / (var + eps)
    return (gamma * x_hat + beta).astype(x.dtype, copy=False)


def _fwd(stats: Callable, how: str = "inside", swap: bool = False, affine: bool = True, fixed_eps=None):
    """A forward built from ``stats(x) -> (mean, var)``, returning (out, None)."""
    def forward(x, gamma, beta, eps=1e-5):
        mean, var = stats(np.asarray(x))
        g, b = (beta, gamma) if swap else (gamma, beta)
        if not affine:
            g, b = np.ones_like(gamma), np.zeros_like(beta)
        return _normalize(x, g, b, mean, var, fixed_eps if fixed_eps is not None else eps, how), None
    return forward


def _stats(x):
    return x.mean(axis=0), x.var(axis=0)


def _forward_mistakes() -> list[Mistake]:
    return [
        Mistake("unbiased variance used to normalize",
                "normalize with the biased batch variance (divide by N, np.var's default ddof=0); the unbiased "
                "one (N - 1) is only for updating running_var",
                _fwd(lambda x: (x.mean(0), x.var(0, ddof=1)))),
        Mistake("eps outside the square root",
                "add eps to the variance before the square root: (x - mean) / sqrt(var + eps)",
                _fwd(_stats, "outside")),
        Mistake("eps missing",
                "add eps to the variance before the square root: (x - mean) / sqrt(var + eps)",
                _fwd(_stats, "missing")),
        Mistake("eps argument ignored",
                "use the eps passed to the function, not a fixed 1e-5",
                _fwd(_stats, fixed_eps=1e-5)),
        Mistake("statistics over the wrong axis",
                "each feature (column) has its own mean and variance: reduce over axis=0, the batch",
                _fwd(lambda x: (x.mean(1, keepdims=True), x.var(1, keepdims=True)))),
        Mistake("one mean and variance for all features",
                "each feature (column) has its own mean and variance: pass axis=0",
                _fwd(lambda x: (x.mean(), x.var()))),
        Mistake("variance over all features (axis missing in the variance)",
                "the mean is per feature, but the variance was taken over the whole array: "
                "pass axis=0 to the variance too",
                _fwd(lambda x: (x.mean(0), x.var()))),
        Mistake("gamma and beta swapped",
                "gamma scales and beta shifts: out = gamma * x_hat + beta",
                _fwd(_stats, swap=True)),
        Mistake("gamma and beta not applied",
                "after normalizing, scale by gamma and shift by beta: out = gamma * x_hat + beta",
                _fwd(_stats, affine=False)),
        Mistake("divided by the variance instead of the standard deviation",
                "divide by sqrt(var + eps)",
                _fwd(_stats, "var")),
        Mistake("variance computed as E[x^2] - E[x]^2",
                "that formula cancels catastrophically when the mean is large; subtract the mean first: "
                "var = mean((x - mean)**2), or np.var",
                _fwd(lambda x: (x.mean(0), (x * x).mean(0) - x.mean(0) ** 2))),
        Mistake("mean not subtracted",
                "centre first: x_hat = (x - mean) / sqrt(var + eps)",
                _fwd(lambda x: (np.zeros(x.shape[1], x.dtype), x.var(0)))),
    ]


def check_batchnorm_forward(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, eps)`` return the training-mode output ``gamma * x_hat + beta`` (and a cache)?"""
    return _check(
        "batchnorm_forward", fn, ref.batchnorm_forward, _forward_cases(hidden), _forward_mistakes(),
        arg_names=("x", "gamma", "beta"), in_place={"x": _X_IN_PLACE},
        outputs=("out", "cache"), compare=("out",), rtol=1e-4, atol=1e-5,
    )


# ---------------------------------------------------------------------------------------------
# Running statistics
# ---------------------------------------------------------------------------------------------

# (name, seed, N, D, momentum or None for the default, start: "fresh" zeros/ones or "warm", options)
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
    cases = []
    for name, seed, n, d, momentum, start, opt in _RUNNING_HIDDEN if hidden else _RUNNING_VISIBLE:
        def make(seed=seed, n=n, d=d, momentum=momentum, start=start, opt=opt):
            rng = np.random.default_rng(seed)
            dtype = opt.get("dtype", np.float64)
            x = _features(rng, n, d, loc=opt.get("loc", 3.0), dtype=dtype, noncontig=opt.get("noncontig", False))
            if start == "fresh":
                rm, rv = np.zeros(d, dtype), np.ones(d, dtype)
            else:
                rm = (x.mean(0) + rng.normal(size=d) * 2).astype(dtype)
                rv = rng.uniform(0.2, 5.0, size=d).astype(dtype)
            return (x, rm, rv) + ((momentum,) if momentum is not None else ())
        cases.append(Case(name, make))
    return cases


def _upd(mean_fn, var_fn, mix=lambda m, old, new: (1 - m) * old + m * new):
    def update(x, running_mean, running_var, momentum=0.1):
        x = np.asarray(x)
        return (mix(momentum, np.asarray(running_mean), mean_fn(x)),
                mix(momentum, np.asarray(running_var), var_fn(x)))
    return update


def _running_mistakes() -> list[Mistake]:
    mean0 = lambda x: x.mean(0)  # noqa: E731
    unbiased = lambda x: x.var(0, ddof=1)  # noqa: E731
    return [
        Mistake("momentum convention flipped",
                "in PyTorch momentum weighs the NEW batch: new = (1 - momentum) * old + momentum * batch "
                "(Keras' momentum weighs the old value instead)",
                _upd(mean0, unbiased, mix=lambda m, old, new: m * old + (1 - m) * new)),
        Mistake("running_var updated with the biased variance",
                "running_var takes the unbiased batch variance (ddof=1, divide by N - 1), as PyTorch does; "
                "only the normalization uses the biased one",
                _upd(mean0, lambda x: x.var(0))),
        Mistake("running statistics not updated",
                "return the blended values new = (1 - momentum) * old + momentum * batch, not the old ones",
                lambda x, rm, rv, momentum=0.1: (np.asarray(rm), np.asarray(rv))),
        Mistake("running statistics replaced by the batch statistics",
                "blend with the old values: new = (1 - momentum) * old + momentum * batch",
                lambda x, rm, rv, momentum=0.1: (np.asarray(x).mean(0), np.asarray(x).var(0, ddof=1))),
        Mistake("running_var updated with the standard deviation",
                "blend in the unbiased batch variance, not its square root",
                _upd(mean0, lambda x: x.std(0, ddof=1))),
        Mistake("running_mean and running_var swapped",
                "return (new_running_mean, new_running_var) in that order",
                lambda x, rm, rv, momentum=0.1: tuple(reversed(ref.update_running_stats(x, rm, rv, momentum)))),
        Mistake("momentum argument ignored",
                "use the momentum passed to the function (default 0.1)",
                lambda x, rm, rv, momentum=0.1: ref.update_running_stats(x, rm, rv, 0.1)),
    ]


def check_update_running_stats(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, running_mean, running_var, momentum)`` return PyTorch's updated running statistics, leaving its inputs alone?"""
    return _check(
        "update_running_stats", fn, ref.update_running_stats, _running_cases(hidden), _running_mistakes(),
        arg_names=("x", "running_mean", "running_var"),
        in_place={"x": _X_IN_PLACE, "running_mean": _RUNNING_IN_PLACE, "running_var": _RUNNING_IN_PLACE},
        outputs=("new_running_mean", "new_running_var"), rtol=1e-5, atol=1e-6, check_dtype=False,
    )


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------

# (name, seed, N, D, options); running statistics deliberately far from the batch's own.
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
    cases = []
    for name, seed, n, d, opt in _INFERENCE_HIDDEN if hidden else _INFERENCE_VISIBLE:
        def make(seed=seed, n=n, d=d, opt=opt):
            rng = np.random.default_rng(seed)
            dtype = opt.get("dtype", np.float64)
            loc = opt.get("loc", 3.0)
            x = _features(rng, n, d, loc=loc, dtype=dtype, noncontig=opt.get("noncontig", False))
            gamma, beta = _affine(rng, d, dtype)
            rm = (loc + rng.normal(size=d) * 2).astype(dtype)
            rv = rng.uniform(0.2, 5.0, size=d)
            if opt.get("tiny"):
                rv[0] = 1e-6
            rv = rv.astype(dtype)
            return (x, gamma, beta, rm, rv) + ((opt["eps"],) if "eps" in opt else ())
        cases.append(Case(name, make))
    return cases


def _inf(how="inside", swap_affine=False, swap_stats=False):
    def inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
        g, b = (beta, gamma) if swap_affine else (gamma, beta)
        m, v = (running_var, running_mean) if swap_stats else (running_mean, running_var)
        return _normalize(x, g, b, m, v, eps, how)
    return inference


def _batch_stats_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    x = np.asarray(x)
    return _normalize(x, gamma, beta, x.mean(0), x.var(0), eps)


def _updated_then_inference(x, gamma, beta, running_mean, running_var, eps=1e-5):
    x = np.asarray(x)
    with np.errstate(all="ignore"):  # N=1: the unbiased variance is nan, as in the learner's code
        m = 0.9 * np.asarray(running_mean) + 0.1 * x.mean(0)
        v = 0.9 * np.asarray(running_var) + 0.1 * x.var(0, ddof=1)
        return _normalize(x, gamma, beta, m, v, eps)


def _inference_mistakes() -> list[Mistake]:
    return [
        Mistake("batch statistics used in inference",
                "in inference normalize with running_mean and running_var, not with this batch's mean and "
                "variance (the output must not depend on the other rows of the batch)",
                _batch_stats_inference),
        Mistake("running statistics updated in inference",
                "inference only reads running_mean and running_var; updating them belongs to training",
                _updated_then_inference),
        Mistake("eps outside the square root",
                "add eps to running_var before the square root: sqrt(running_var + eps)",
                _inf("outside")),
        Mistake("eps missing",
                "add eps to running_var before the square root: sqrt(running_var + eps)",
                _inf("missing")),
        Mistake("divided by the variance instead of the standard deviation",
                "divide by sqrt(running_var + eps)",
                _inf("var")),
        Mistake("gamma and beta swapped",
                "gamma scales and beta shifts: out = gamma * x_hat + beta",
                _inf(swap_affine=True)),
        Mistake("running_mean and running_var swapped",
                "subtract running_mean and divide by sqrt(running_var + eps)",
                _inf(swap_stats=True)),
    ]


def check_batchnorm_inference(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, running_mean, running_var, eps)`` apply the fixed affine map of inference mode?"""
    return _check(
        "batchnorm_inference", fn, ref.batchnorm_inference, _inference_cases(hidden), _inference_mistakes(),
        arg_names=("x", "gamma", "beta", "running_mean", "running_var"),
        in_place={"x": _X_IN_PLACE, "running_mean": _RUNNING_CHANGED_IN_INFERENCE,
                  "running_var": _RUNNING_CHANGED_IN_INFERENCE},
        outputs=("out",), rtol=1e-4, atol=1e-5,
    )


# ---------------------------------------------------------------------------------------------
# Backward (N, D): the cache comes from the reference forward
# ---------------------------------------------------------------------------------------------

_BACKWARD_VISIBLE = [
    ("N=4, D=3", 30, 4, 3, {}),
    ("N=2, D=1", 31, 2, 1, {}),
    ("N=50, D=8, float32", 32, 50, 8, {"dtype": np.float32}),
    ("N=10, D=4, large mean (1e7)", 33, 10, 4, {"loc": 1e7}),
    ("N=6, D=5, non-contiguous x and dout", 34, 6, 5, {"noncontig": True}),
]
_BACKWARD_HIDDEN = [
    ("N=3, D=6", 130, 3, 6, {}),
    ("N=3, D=2, float32", 131, 3, 2, {"dtype": np.float32}),
    ("N=64, D=3, non-contiguous", 132, 64, 3, {"noncontig": True, "eps": 1e-3}),
]


def _backward_cases(hidden: bool) -> list[Case]:
    cases = []
    for name, seed, n, d, opt in _BACKWARD_HIDDEN if hidden else _BACKWARD_VISIBLE:
        def make(seed=seed, n=n, d=d, opt=opt):
            rng = np.random.default_rng(seed)
            dtype = opt.get("dtype", np.float64)
            nc = opt.get("noncontig", False)
            x = _features(rng, n, d, loc=opt.get("loc", 3.0), dtype=dtype, noncontig=nc)
            gamma, beta = _affine(rng, d, dtype)
            dout = rng.normal(size=(n, 2 * d if nc else d)).astype(dtype)
            dout = dout[:, ::2] if nc else dout
            _, cache = ref.batchnorm_forward(x, gamma, beta, opt.get("eps", 1e-5))
            return dout, cache
        cases.append(Case(name, make))
    return cases


def _bwd(dx_fn, dgamma_fn=None, dbeta_fn=None, swap=False):
    """A backward whose dx comes from ``dx_fn(dout, cache)``; dgamma/dbeta correct unless replaced."""
    def backward(dout, cache):
        dout = np.asarray(dout)
        dgamma = dgamma_fn(dout, cache) if dgamma_fn else (dout * cache.x_hat).sum(0)
        dbeta = dbeta_fn(dout, cache) if dbeta_fn else dout.sum(0)
        if swap:
            dgamma, dbeta = dbeta, dgamma
        return dx_fn(dout, cache), dgamma, dbeta
    return backward


def _dx(dout, c):
    return ref.batchnorm_backward(dout, c)[0]


def _staged_slip(two=2.0, sign=-1.0, var_over_n=True, mu_over_n=True):
    """The staged backward of the notebook's table with one step's factor gotten wrong."""
    def backward(dout, c):
        dout = np.asarray(dout)
        n = dout.shape[0]
        dx_hat = dout * c.gamma
        dxmu = dx_hat * c.inv_std
        dstd = sign * (dx_hat * c.xmu).sum(0) / c.std ** 2
        dvar = dstd / (2 * c.std)
        dsq = dvar / n if var_over_n else dvar
        dxmu = dxmu + two * c.xmu * dsq
        dmu = -dxmu.sum(0)
        dx = dxmu + (dmu / n if mu_over_n else dmu)
        return dx, (dout * c.x_hat).sum(0), dout.sum(0)
    return backward


def _backward_mistakes() -> list[Mistake]:
    return [
        Mistake("dx missing the terms that flow through the mean and the variance",
                "x reaches the output directly AND through the batch mean and variance; "
                "dx = gamma / std * (dout - mean(dout) - x_hat * mean(dout * x_hat))",
                _bwd(lambda g, c: g * c.gamma * c.inv_std)),
        Mistake("dx missing the term that flows through the variance",
                "the variance depends on x too: add the path through var (the -x_hat * mean(dout * x_hat) term)",
                _bwd(lambda g, c: c.gamma * c.inv_std * (g - g.mean(0)))),
        Mistake("dx missing the term that flows through the mean",
                "the mean depends on x too: add the path through mu (the -mean(dout) term)",
                _bwd(lambda g, c: c.gamma * c.inv_std * (g - c.x_hat * (g * c.x_hat).mean(0)))),
        Mistake("dx missing the factor gamma",
                "out = gamma * x_hat + beta, so dx_hat = dout * gamma",
                _bwd(lambda g, c: _dx(g, c) / c.gamma)),
        Mistake("dgamma not summed over the batch",
                "gamma is shared by all N rows: dgamma = sum over axis 0 of dout * x_hat, shape (D,)",
                _bwd(_dx, dgamma_fn=lambda g, c: g * c.x_hat)),
        Mistake("dbeta not summed over the batch",
                "beta is shared by all N rows: dbeta = dout.sum(axis=0), shape (D,)",
                _bwd(_dx, dbeta_fn=lambda g, c: g)),
        Mistake("dgamma and dbeta not summed over the batch",
                "gamma and beta are shared by all N rows: sum their gradients over axis 0, shape (D,)",
                _bwd(_dx, dgamma_fn=lambda g, c: g * c.x_hat, dbeta_fn=lambda g, c: g)),
        Mistake("dgamma and dbeta summed over the wrong axis",
                "sum over the batch, axis 0, so they have shape (D,) like gamma and beta",
                _bwd(_dx, dgamma_fn=lambda g, c: (g * c.x_hat).sum(1), dbeta_fn=lambda g, c: g.sum(1))),
        Mistake("dgamma and dbeta swapped",
                "return (dx, dgamma, dbeta) in that order; dgamma = sum(dout * x_hat), dbeta = sum(dout)",
                _bwd(_dx, swap=True)),
        Mistake("dgamma computed from x instead of x_hat",
                "out = gamma * x_hat + beta, so dgamma = sum(dout * x_hat, axis=0)",
                _bwd(_dx, dgamma_fn=lambda g, c: (g * c.x).sum(0))),
        Mistake("factor 2 missing in the path through the square (step 6)",
                "sq = xmu**2, so its local derivative is 2 * xmu: dxmu += 2 * xmu * dsq",
                _staged_slip(two=1.0)),
        Mistake("sign of the path through 1/std flipped (step 3)",
                "the derivative of 1/std is -1/std**2: dstd = -dinv_std / std**2",
                _staged_slip(sign=1.0)),
        Mistake("the variance's gradient not shared out over the N rows (step 5)",
                "var = mean(sq) averages N rows, so each row gets 1/N of it: dsq = dvar / N",
                _staged_slip(var_over_n=False)),
        Mistake("the mean's gradient not shared out over the N rows (step 8)",
                "mu = mean(x) averages N rows, so each row gets 1/N of it: dx += dmu / N",
                _staged_slip(mu_over_n=False)),
        Mistake("closed form without the 1/N",
                "the mean and the variance average over N rows: "
                "dx = gamma * inv_std / N * (N * dout - dbeta - x_hat * dgamma)",
                _bwd(lambda g, c: _dx(g, c) * g.shape[0])),
        Mistake("dbeta and dgamma swapped inside the closed form",
                "the mean path subtracts dbeta = sum(dout), the variance path subtracts x_hat * dgamma: "
                "dx = gamma * inv_std / N * (N * dout - dbeta - x_hat * dgamma)",
                _bwd(lambda g, c: c.gamma * c.inv_std / g.shape[0] * (
                    g.shape[0] * g - (g * c.x_hat).sum(0) - c.x_hat * g.sum(0)))),
    ]


def _check_backward(exercise: str, fn, hidden: bool) -> CheckResult:
    return _check(
        exercise, fn, ref.batchnorm_backward, _backward_cases(hidden), _backward_mistakes(),
        arg_names=("dout",), in_place={"dout": ("the upstream gradient dout modified in place",
                                                 "dout belongs to the caller: compute into new arrays")},
        outputs=("dx", "dgamma", "dbeta"), rtol=1e-4, atol=1e-4,
    )


def check_batchnorm_backward_staged(fn, hidden: bool = False) -> CheckResult:
    """Does the staged ``fn(dout, cache)`` return dx, dgamma, dbeta of training-mode batch norm?"""
    return _check_backward("batchnorm_backward_staged", fn, hidden)


def check_batchnorm_backward(fn, hidden: bool = False) -> CheckResult:
    """Does the closed-form ``fn(dout, cache)`` return dx, dgamma, dbeta of training-mode batch norm?"""
    return _check_backward("batchnorm_backward (closed form)", fn, hidden)


def check_gradients_numerically(fn, seed: int = 0, n: int = 5, d: int = 4,
                                tolerance: float = GRADCHECK_TOLERANCE) -> CheckResult:
    """Compare ``fn(dout, cache)`` with central differences of the reference forward, in float64.

    Each of dx, dgamma, dbeta is one case; its name carries the measured relative error, and it
    passes when that error is below ``tolerance``. The verdict is the check's, not the reader's.
    """
    rng = np.random.default_rng(seed)
    x = _features(rng, n, d)
    gamma, beta = _affine(rng, d)
    dout = rng.normal(size=(n, d))
    _, cache = ref.batchnorm_forward(x, gamma, beta)
    call = safe_call(fn, (dout, cache))
    exercise = f"numerical gradient check (float64, N={n}, D={d}, central differences)"
    if call.error:
        diag = ("not attempted yet: the function still raises NotImplementedError"
                if "NotImplementedError" in call.error else f"the function raised {call.error}")
        return CheckResult(exercise, [CaseResult("backward", False, call.error)], diagnosis=diag)
    value = call.value
    if type(value) not in (tuple, list) or len(value) != 3:
        return CheckResult(exercise, [CaseResult("backward", False, "expected a tuple (dx, dgamma, dbeta)")],
                           diagnosis="return a tuple (dx, dgamma, dbeta)")
    numeric = {
        "dx": numerical_gradient(lambda z: ref.batchnorm_forward(z, gamma, beta)[0], x, dout),
        "dgamma": numerical_gradient(lambda z: ref.batchnorm_forward(x, z, beta)[0], gamma, dout),
        "dbeta": numerical_gradient(lambda z: ref.batchnorm_forward(x, gamma, z)[0], beta, dout),
    }
    cases, bad = [], []
    for (key, num), got in zip(numeric.items(), value):
        got = np.asarray(got, dtype=np.float64) if got is not None else None
        if got is None or got.shape != num.shape:
            shape = None if got is None else got.shape
            cases.append(CaseResult(f"{key}: shape {shape}", False, f"{key} should have shape {num.shape}"))
            bad.append(key)
            continue
        err = rel_error(got, num)
        ok = bool(err < tolerance)
        cases.append(CaseResult(f"{key}: relative error {err:.2e} ({'<' if ok else '>='} {tolerance:g})", ok,
                                "" if ok else f"the analytic {key} disagrees with the numerical gradient"))
        if not ok:
            bad.append(key)
    diagnosis = ""
    if bad:
        diagnosis = f"{', '.join(bad)} disagree(s) with the numerical gradient"
        named = _check_backward("backward", fn, False)
        if not named.passed and _from_mistake(named.diagnosis.replace("more than one mistake: [dx] ", ""),
                                              _backward_mistakes()):
            diagnosis += f"; likely mistake: {named.diagnosis}"
    return CheckResult(exercise, cases, diagnosis=diagnosis, tolerance=f"relative error < {tolerance:g}")


# ---------------------------------------------------------------------------------------------
# Spatial (N, C, H, W)
# ---------------------------------------------------------------------------------------------

_SPATIAL_VISIBLE = [
    ("N=2, C=3, H=4, W=5", 40, (2, 3, 4, 5), {}),
    ("N=2, C=1, H=1, W=1", 41, (2, 1, 1, 1), {}),
    ("N=4, C=6, H=3, W=3, float32", 42, (4, 6, 3, 3), {"dtype": np.float32}),
    ("N=3, C=2, H=2, W=4, large mean (1e7)", 43, (3, 2, 2, 4), {"loc": 1e7}),
    ("N=5, C=4, H=3, W=2, non-contiguous x", 44, (5, 4, 3, 2), {"noncontig": True}),
    ("N=1, C=3, H=4, W=4: one image, many pixels", 45, (1, 3, 4, 4), {"eps": 1e-3}),
]
_SPATIAL_HIDDEN = [
    ("N=3, C=5, H=2, W=3", 140, (3, 5, 2, 3), {}),
    ("N=2, C=2, H=5, W=1, float32", 141, (2, 2, 5, 1), {"dtype": np.float32}),
    ("N=6, C=3, H=2, W=2, non-contiguous x", 142, (6, 3, 2, 2), {"noncontig": True, "eps": 1e-2}),
]


def _images(rng, shape, dtype=np.float64, loc=3.0, noncontig=False):
    n, c, h, w = shape
    mean = (loc + rng.normal(size=c)).reshape(1, c, 1, 1)
    scale = rng.uniform(0.5, 2.0, size=c).reshape(1, c, 1, 1)
    if noncontig:
        x = (rng.normal(size=(n, c, h, 2 * w)) * scale + mean).astype(dtype)[..., ::2]
    else:
        x = (rng.normal(size=shape) * scale + mean).astype(dtype)
    return x


def _spatial_make(seed, shape, opt, with_dout=False):
    def make():
        rng = np.random.default_rng(seed)
        dtype = opt.get("dtype", np.float64)
        x = _images(rng, shape, dtype, opt.get("loc", 3.0), opt.get("noncontig", False))
        gamma, beta = _affine(rng, shape[1], dtype)
        eps = opt.get("eps", 1e-5)
        if with_dout:
            return x, gamma, beta, eps, rng.normal(size=shape).astype(dtype)
        return x, gamma, beta, eps
    return make


def _spatial_cases(hidden: bool, with_dout: bool = False) -> list[Case]:
    return [Case(name, _spatial_make(seed, shape, opt, with_dout))
            for name, seed, shape, opt in (_SPATIAL_HIDDEN if hidden else _SPATIAL_VISIBLE)]


def _per_channel_affine(y, gamma, beta):
    c = y.shape[1]
    return y * np.reshape(gamma, (1, c, 1, 1)) + np.reshape(beta, (1, c, 1, 1))


def _spatial_stats_over(axes):
    def forward(x, gamma, beta, eps=1e-5):
        x = np.asarray(x)
        y = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, keepdims=True) + eps)
        return _per_channel_affine(y, gamma, beta).astype(x.dtype), None
    return forward


def _spatial_no_transpose(x, gamma, beta, eps=1e-5):
    x = np.asarray(x)
    rows = x.reshape(-1, x.shape[1])
    out, _ = ref.batchnorm_forward(rows, gamma, beta, eps)
    return out.reshape(x.shape), None


def _spatial_no_transpose_back(x, gamma, beta, eps=1e-5):
    x = np.asarray(x)
    rows = np.moveaxis(x, 1, -1).reshape(-1, x.shape[1])
    out, _ = ref.batchnorm_forward(rows, gamma, beta, eps)
    return out.reshape(x.shape), None


def _spatial_forward_mistakes() -> list[Mistake]:
    return [
        Mistake("statistics per pixel position instead of per channel",
                "each channel has ONE mean and variance over N, H and W; move C last and reshape to "
                "(N*H*W, C) before calling the (N, D) forward",
                _spatial_stats_over((0,))),
        Mistake("statistics per image (over H and W only)",
                "batch norm pools over the batch too: each channel's statistics are over N, H and W",
                _spatial_stats_over((2, 3))),
        Mistake("statistics over the wrong axes",
                "each channel's statistics are over N, H and W, axes (0, 2, 3)",
                _spatial_stats_over((0, 1))),
        Mistake("reshaped to (N*H*W, C) without moving C last",
                "x.reshape(-1, C) mixes channels; transpose to (N, H, W, C) first, and back afterwards",
                _spatial_no_transpose),
        Mistake("output reshaped back without the inverse transpose",
                "the rows are in (N, H, W, C) order: reshape them to (N, H, W, C), then transpose to "
                "(N, C, H, W); out.reshape(N, C, H, W) alone scrambles pixels and channels",
                _spatial_no_transpose_back),
        Mistake("unbiased variance used to normalize",
                "normalize with the biased variance (divide by N*H*W)",
                lambda x, g, b, eps=1e-5: (_per_channel_affine(
                    (x - x.mean((0, 2, 3), keepdims=True)) / np.sqrt(x.var((0, 2, 3), ddof=1, keepdims=True) + eps),
                    g, b).astype(x.dtype), None)),
        Mistake("gamma and beta swapped",
                "gamma scales and beta shifts",
                lambda x, g, b, eps=1e-5: ref.spatial_batchnorm_forward(x, b, g, eps)),
    ]


def check_spatial_batchnorm_forward(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, eps)`` normalize each channel of (N, C, H, W) over N, H and W?"""
    return _check(
        "spatial_batchnorm_forward", fn, ref.spatial_batchnorm_forward, _spatial_cases(hidden),
        _spatial_forward_mistakes(), arg_names=("x", "gamma", "beta"), in_place={"x": _X_IN_PLACE},
        outputs=("out", "cache"), compare=("out",), rtol=1e-4, atol=1e-5,
    )


def _spatial_pair(forward_fn, backward_fn):
    def run(x, gamma, beta, eps, dout):
        _, cache = forward_fn(x, gamma, beta, eps)
        return backward_fn(dout, cache)
    return run


def _ref_spatial_backward_from(transform):
    """Reference gradients, then ``transform(dx, dgamma, dbeta, x, dout, cache)``."""
    def run(x, gamma, beta, eps, dout):
        _, cache = ref.spatial_batchnorm_forward(x, gamma, beta, eps)
        dx, dgamma, dbeta = ref.spatial_batchnorm_backward(dout, cache)
        return transform(dx, dgamma, dbeta, dout, cache)
    return run


def _x_hat_images(cache):
    return ref._from_rows(cache.cache.x_hat, cache.shape)


def _spatial_backward_mistakes() -> list[Mistake]:
    return [
        Mistake("dgamma and dbeta summed over N only (not H and W)",
                "gamma and beta are shared by every pixel of a channel: sum over axes (0, 2, 3), shape (C,)",
                _ref_spatial_backward_from(lambda dx, dg, db, dout, c: (
                    dx, (dout * _x_hat_images(c)).sum(0), dout.sum(0)))),
        Mistake("dgamma and dbeta not summed over N",
                "gamma and beta are shared by every image and pixel of a channel: sum over axes (0, 2, 3), shape (C,)",
                _ref_spatial_backward_from(lambda dx, dg, db, dout, c: (
                    dx, (dout * _x_hat_images(c)).sum((2, 3)), dout.sum((2, 3))))),
        Mistake("dx reshaped back without the inverse transpose",
                "undo the forward's reshape exactly: (N*H*W, C) -> (N, H, W, C) -> transpose to (N, C, H, W)",
                lambda x, g, b, eps, dout: _spatial_bwd_no_transpose(x, g, b, eps, dout)),
        Mistake("dx missing the terms that flow through the mean and the variance",
                "call the full (N, D) backward on the (N*H*W, C) rows",
                _ref_spatial_backward_from(lambda dx, dg, db, dout, c: (
                    dout * np.reshape(c.cache.gamma * c.cache.inv_std, (1, -1, 1, 1)), dg, db))),
    ]


def _spatial_bwd_no_transpose(x, gamma, beta, eps, dout):
    _, cache = ref.spatial_batchnorm_forward(x, gamma, beta, eps)
    dx_rows, dgamma, dbeta = ref.batchnorm_backward(ref._to_rows(np.asarray(dout)), cache.cache)
    return dx_rows.reshape(cache.shape), dgamma, dbeta


def check_spatial_batchnorm_backward(forward_fn, backward_fn, hidden: bool = False) -> CheckResult:
    """Does ``backward_fn(dout, forward_fn(x, gamma, beta, eps)[1])`` return dx, dgamma, dbeta of BatchNorm2d?

    The cache is the one the learner's own spatial forward returns.
    """
    if not callable(forward_fn) or not callable(backward_fn):
        not_fn = forward_fn if not callable(forward_fn) else backward_fn
        return check_function("spatial_batchnorm_backward", not_fn, None, [])  # "expected a function, got ..."
    pair = _spatial_pair(forward_fn, backward_fn)
    result = _check(
        "spatial_batchnorm_backward", pair, _ref_spatial_backward_from(lambda dx, dg, db, dout, c: (dx, dg, db)),
        _spatial_cases(hidden, with_dout=True), _spatial_backward_mistakes(),
        arg_names=("x", "gamma", "beta", "eps", "dout"),
        in_place={"x": _X_IN_PLACE, "dout": ("the upstream gradient dout modified in place",
                                             "dout belongs to the caller: compute into new arrays")},
        outputs=("dx", "dgamma", "dbeta"), rtol=1e-4, atol=1e-5,
    )
    if not result.passed and not check_spatial_batchnorm_forward(forward_fn, hidden).passed:
        result.notes.append("your spatial forward does not pass its check yet; the backward uses its cache, "
                            "so fix the forward first")
    return result


# Every mistake a check can name, per exercise (the tests assert each is recognized by name).
MISTAKE_NAMES = {
    "forward": [m.name for m in _forward_mistakes()],
    "running": [m.name for m in _running_mistakes()],
    "inference": [m.name for m in _inference_mistakes()],
    "backward": [m.name for m in _backward_mistakes()],
    "spatial_forward": [m.name for m in _spatial_forward_mistakes()],
    "spatial_backward": [m.name for m in _spatial_backward_mistakes()],
}

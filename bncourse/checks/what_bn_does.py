"""Checks for notebook 7, "What batch norm really does": internal covariate shift, two ways, and noisy BN.

* ``check_input_drift(fn)``: ``fn(h_before, h_after) -> drift``, how far a layer's input
  distribution moved (each unit's mean and std over a probe batch), relative to its spread.
* ``check_gradient_change(fn)``: ``fn(g_before, g_after) -> (relative_change, cosine)``, the
  internal covariate shift of one layer measured the way Santurkar et al. (2018) measure it.
* ``check_noisy_batchnorm_forward(fn)``: ``fn(x, gamma, beta, scale, shift) -> out``, batch norm
  followed by a per-channel random scale and shift ("noisy batch norm").

``hidden=True`` runs other seeds and shapes for nbgrader's hidden tests. Every input and output is
a plain numpy array (or a float), so the grader can re-judge a graded cell from its receipts.

The contract: a number is a Python float, a numpy scalar or a 0-d array, compared in float64; the
noisy forward's ``out`` is (N, D), float32 or float64 for float32 input; every argument is unchanged
after the call. A visible noisy case passes eps=1e-2.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks import catalogue
from bncourse.checks.compare import explain_shapes
from bncourse.checks.core import Case, CheckResult, check_function
from bncourse.checks.inputs import case_seed
from bncourse.reference import what_bn_does as ref

GRADIENT_OUTPUTS = ("relative_change", "cosine")


# ---------------------------------------------------------------------------------------------
# input_drift
# ---------------------------------------------------------------------------------------------


def _activations(seed: int, n: int, d: int, dtype=np.float64, permute: bool = False):
    """A layer's input on N probe examples at two times: units with different means and spreads,
    some moving up and some down (so signed changes cancel), one unit that barely moves."""
    def make():
        rng = np.random.default_rng(seed)
        mean = rng.normal(size=d) * 2.0
        std = rng.uniform(0.2, 3.0, size=d)
        z = rng.normal(size=(n, d))
        before = z * std + mean
        d_mean = rng.choice([-1.0, 1.0], size=d) * rng.uniform(0.2, 1.5, size=d)
        factor = np.exp(rng.choice([-1.0, 1.0], size=d) * rng.uniform(0.1, 0.7, size=d))
        d_mean[0], factor[0] = 0.0, 1.0
        z2 = 0.6 * z + 0.8 * rng.normal(size=(n, d))  # the same examples, activations moved
        after = z2 * (std * factor) + mean + d_mean
        if permute:
            after = after[rng.permutation(n)]
        return before.astype(dtype), after.astype(dtype)

    return make


_DRIFT_VISIBLE = [
    ("N=256 probe examples, D=100 units", 0, 256, 100, np.float64, False),
    ("N=64, D=10", 1, 64, 10, np.float64, False),
    ("N=30, D=5, rows of h_after in another order", 2, 30, 5, np.float64, True),
    ("N=128, D=20, float32", 3, 128, 20, np.float32, False),
]
_DRIFT_HIDDEN = [
    ("N=9, D=4", 100, 9, 4, np.float64, False),
    ("N=200, D=50, rows in another order", 101, 200, 50, np.float64, True),
    ("N=40, D=7, float32", 102, 40, 7, np.float32, False),
]


def _drift_cases(hidden: bool) -> list[Case]:
    table = _DRIFT_HIDDEN if hidden else _DRIFT_VISIBLE
    return [Case(name, _activations(case_seed("input_drift", name, seed, hidden), n, d, dt, perm))
            for name, seed, n, d, dt, perm in table]


def _number_as_array(fn):
    """A learner's single number as a shape-(1,) array, so the engine compares it."""
    def call(*args):
        value = fn(*args)
        try:
            arr = np.asarray(value) if not isinstance(value, (tuple, list)) else None
        except Exception:  # noqa: BLE001 - an odd object stays as it is and is reported
            return value
        return arr.reshape(1) if arr is not None and arr.ndim == 0 and arr.dtype.kind in "fiub" else value

    return call


def check_input_drift(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(h_before, h_after)`` return the per-unit mean and std change, relative to the spread?"""
    learner_fn = _number_as_array(fn) if callable(fn) else fn
    return check_function(
        "input_drift", learner_fn, _number_as_array(ref.input_drift), _drift_cases(hidden), catalogue.lazy("input_drift"),
        outputs=("drift",), rtol=1e-4, atol=1e-7, check_dtype=False, arg_names=("h_before", "h_after"),
        explain_error=explain_shapes("The contract: h_before and h_after are (N, units); each unit's mean and std "
                                     "are over the batch, axis=0, shape (units,); the drift is one number",
                                     per="feature"),
    )


# ---------------------------------------------------------------------------------------------
# gradient_change
# ---------------------------------------------------------------------------------------------


def _gradient_pair(seed: int, d_out: int, d_in: int, kind: str, dtype=np.float64):
    """A layer's weight gradient (D_out, D_in) before and after the layers below moved.

    Rows get very different scales (some units receive far larger gradients than others), so
    per-row and flattened norms disagree. ``kind``: "small" (a small change), "large" (the
    gradient changes more than its own size), "turned" (it points partly backwards).
    """
    def make():
        rng = np.random.default_rng(seed)
        rows = rng.uniform(0.05, 3.0, size=(d_out, 1)) * np.exp(rng.normal(size=(d_out, 1)))
        g = rng.normal(size=(d_out, d_in)) * rows
        noise = rng.normal(size=(d_out, d_in)) * rows[::-1]
        if kind == "small":
            after = 1.2 * g + 0.3 * noise
        elif kind == "large":
            after = 0.5 * g + 2.5 * noise
        else:  # turned
            after = -0.6 * g + 0.8 * noise
        return g.astype(dtype), after.astype(dtype)

    return make


_GRADIENT_VISIBLE = [
    ("(100, 64) weight gradient, small change", 0, 100, 64, "small", np.float64),
    ("(10, 100) output layer, change larger than the gradient", 1, 10, 100, "large", np.float64),
    ("(30, 20), the gradient turned partly backwards", 2, 30, 20, "turned", np.float64),
    ("(50, 50) float32", 3, 50, 50, "small", np.float32),
]
_GRADIENT_HIDDEN = [
    ("(7, 3), small change", 100, 7, 3, "small", np.float64),
    ("(64, 128), turned", 101, 64, 128, "turned", np.float64),
    ("(20, 40) float32, large change", 102, 20, 40, "large", np.float32),
]


def _gradient_cases(hidden: bool) -> list[Case]:
    table = _GRADIENT_HIDDEN if hidden else _GRADIENT_VISIBLE
    return [Case(name, _gradient_pair(case_seed("gradient_change", name, seed, hidden), o, i, kind, dt))
            for name, seed, o, i, kind, dt in table]


def _as_float_arrays(value):
    """(relative_change, cosine) with each number as a shape-(1,) array, so the engine compares it.

    The learner returns two floats (Python or numpy); anything else (an array of per-row values,
    a single number, None) is passed on unchanged and reported as it is.
    """
    if type(value) in (tuple, list) and len(value) == 2:
        out = []
        for v in value:
            try:
                arr = np.asarray(v)
            except Exception:  # noqa: BLE001 - an odd object stays as it is and is reported
                return value
            out.append(arr.reshape(1) if arr.ndim == 0 and arr.dtype.kind in "fiub" else v)
        return tuple(out)
    return value


def _numbers_as_arrays(fn):
    return lambda a, b: _as_float_arrays(fn(a, b))


def check_gradient_change(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(g_before, g_after)`` return (||g_after - g_before|| / ||g_before||, cosine)?"""
    learner_fn = _numbers_as_arrays(fn) if callable(fn) else fn
    return check_function(
        "gradient_change", learner_fn, _numbers_as_arrays(ref.gradient_change), _gradient_cases(hidden), catalogue.lazy("gradient_change"),
        outputs=GRADIENT_OUTPUTS, rtol=1e-4, atol=1e-7, check_dtype=False, arg_names=("g_before", "g_after"),
        explain_error=explain_shapes("The contract: g_before and g_after are weight gradients of one shape; both "
                                     "measures treat each as one flattened vector and return two numbers"),
    )


# ---------------------------------------------------------------------------------------------
# noisy_batchnorm_forward
# ---------------------------------------------------------------------------------------------


def _noisy_case(seed: int, n: int, d: int, tiny: bool = False, dtype=np.float64, eps: float | None = None):
    """x (N, D) with features on different scales and offsets (one with std 1e-3 when ``tiny``),
    gamma of both signs, beta, and one step's noise: scale in [0.5, 1.5], shift ~ N(0, 0.5^2)."""
    def make():
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(n, d)) * rng.uniform(0.5, 5.0, size=d) + rng.normal(size=d) * 3.0
        if tiny:
            x[:, 0] = rng.normal(size=n) * 1e-3 + 0.2
        gamma = rng.uniform(0.5, 2.0, size=d) * rng.choice([-1.0, 1.0], size=d)
        beta = rng.normal(size=d) + 0.5
        scale = rng.uniform(0.5, 1.5, size=d)
        shift = rng.normal(size=d) * 0.5
        arrays = tuple(a.astype(dtype) for a in (x, gamma, beta, scale, shift))
        return arrays if eps is None else arrays + (eps,)

    return make


_NOISY_VISIBLE = [
    ("N=8, D=3", 0, 8, 3, False, np.float64),
    ("N=64, D=10", 1, 64, 10, False, np.float64),
    ("N=16, D=4, a feature with std 1e-3 (eps matters)", 2, 16, 4, True, np.float64),
    ("N=2, D=1", 3, 2, 1, False, np.float64),
    ("N=32, D=5, float32", 4, 32, 5, False, np.float32),
    ("N=12, D=3, a feature with std 1e-3, eps=1e-2 passed in", 5, 12, 3, True, np.float64),
]
_NOISY_HIDDEN = [
    ("N=5, D=7", 100, 5, 7, False, np.float64),
    ("N=40, D=3, a feature with std 1e-3, eps=1e-2 passed in", 101, 40, 3, True, np.float64),
    ("N=20, D=6, float32", 102, 20, 6, False, np.float32),
]


def _noisy_cases(hidden: bool) -> list[Case]:
    table = _NOISY_HIDDEN if hidden else _NOISY_VISIBLE
    return [Case(name, _noisy_case(case_seed("noisy_batchnorm_forward", name, seed, hidden), n, d, tiny, dt,
                                   1e-2 if "eps=1e-2" in name else None))
            for name, seed, n, d, tiny, dt in table]


def check_noisy_batchnorm_forward(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, scale, shift)`` return ``scale * batchnorm(x) + shift``?"""
    return check_function(
        "noisy_batchnorm_forward", fn, ref.noisy_batchnorm_forward, _noisy_cases(hidden),
        catalogue.lazy("noisy_batchnorm_forward"), rtol=1e-4, atol=1e-6,
        check_dtype=False,  # float32 input may be computed in float32 or float64
        arg_names=("x", "gamma", "beta", "scale", "shift"),
        explain_error=explain_shapes("The contract: x is (N, D); the batch mean and variance are per feature, "
                                     "x.mean(axis=0) of shape (D,); gamma, beta, scale, shift (D,); out (N, D)",
                                     per="feature"),
    )

"""Checks for notebook 7, "What batch norm really does": internal covariate shift, two ways, and noisy BN.

* ``check_input_drift(fn)``: ``fn(h_before, h_after) -> drift``, how far a layer's input
  distribution moved (each unit's mean and std over a probe batch), relative to its spread.
* ``check_gradient_change(fn)``: ``fn(g_before, g_after) -> (relative_change, cosine)``, the
  internal covariate shift of one layer measured the way Santurkar et al. (2018) measure it.
* ``check_noisy_batchnorm_forward(fn)``: ``fn(x, gamma, beta, scale, shift) -> out``, batch norm
  followed by a per-channel random scale and shift ("noisy batch norm").

``hidden=True`` runs other seeds and shapes for nbgrader's hidden tests. Every input and output is
a plain numpy array (or a float), so the grader can re-judge a graded cell from its receipts.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Case, CheckResult, Mistake, check_function
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


def _drift(axis=0, ddof=0, absolute=True, relative="before", power=1.0, stds=True, pooled=False):
    """input_drift as a learner might write it, with the knobs the mistakes turn."""
    def fn(h_before, h_after):
        a = np.asarray(h_before, dtype=np.float64)
        b = np.asarray(h_after, dtype=np.float64)
        ax = None if pooled else axis
        ma, mb = a.mean(axis=ax), b.mean(axis=ax)
        sa, sb = a.std(axis=ax, ddof=ddof) ** power, b.std(axis=ax, ddof=ddof) ** power
        dm, ds = mb - ma, sb - sa
        if absolute:
            dm, ds = np.abs(dm), np.abs(ds)
        moved = np.mean(dm) + (np.mean(ds) if stds else 0.0)
        if relative == "before":
            return float(moved / np.mean(sa))
        if relative == "after":
            return float(moved / np.mean(sb))
        return float(moved)

    return fn


def drift_mistakes() -> list[Mistake]:
    """The known wrong ways to measure a layer's input drift, each written as a learner would."""
    return [
        Mistake(
            "activations compared, not distributions",
            "compare each unit's mean and std over the batch, not example by example: "
            "|h_after - h_before| measures how single activations moved",
            lambda a, b: float(np.mean(np.abs(np.asarray(b, float) - np.asarray(a, float)))
                               / np.mean(np.asarray(a, float).std(axis=0))),
        ),
        Mistake(
            "statistics over the wrong axis",
            "each unit (column) has its own mean and std over the batch: reduce over axis=0",
            _drift(axis=1),
        ),
        Mistake(
            "one mean and std for the whole layer",
            "take a mean and std per unit (axis=0), then average their changes over the units",
            _drift(pooled=True),
        ),
        Mistake(
            "signed changes (units moving up and down cancel)",
            "take the absolute value of each unit's change before averaging: np.abs(mean_after - mean_before)",
            _drift(absolute=False),
        ),
        Mistake(
            "not relative to the input's spread",
            "divide by the mean std of h_before, so layers with large and small activations compare",
            _drift(relative="none"),
        ),
        Mistake(
            "divided by the spread after instead of before",
            "divide by the mean std of h_before (where the input was)",
            _drift(relative="after"),
        ),
        Mistake(
            "sample standard deviation (ddof=1)",
            "use the population std over the batch (np.std's default, ddof=0)",
            _drift(ddof=1),
        ),
        Mistake(
            "variance instead of standard deviation",
            "compare standard deviations (np.std), in the same units as the means",
            _drift(power=2.0),
        ),
        Mistake(
            "only the means compared",
            "add the mean change of each unit's std: a distribution can widen without its mean moving",
            _drift(stds=False),
        ),
    ]


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
    mistakes = [Mistake(m.name, m.hint, _number_as_array(m.fn)) for m in drift_mistakes()]
    return check_function(
        "input_drift", learner_fn, _number_as_array(ref.input_drift), _drift_cases(hidden), mistakes,
        outputs=("drift",), rtol=1e-4, atol=1e-7, check_dtype=False,
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


def _l2(a) -> float:
    a = np.asarray(a, dtype=np.float64).ravel()
    return float(np.sqrt(a @ a))


def _dot(a, b) -> float:
    return float(np.asarray(a, dtype=np.float64).ravel() @ np.asarray(b, dtype=np.float64).ravel())


def _per_row(a, b):
    """Relative change and cosine of each row (output unit), then averaged over the rows."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    rel = np.linalg.norm(b - a, axis=1) / na
    cos = (a * b).sum(axis=1) / (na * nb)
    return float(rel.mean()), float(cos.mean())


def _spectral(a, b):
    """Every norm taken as np.linalg.norm(M, 2): for a matrix, the largest singular value."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na, nb = np.linalg.norm(a, 2), np.linalg.norm(b, 2)
    return float(np.linalg.norm(b - a, 2) / na), float((a * b).sum() / (na * nb))


def gradient_mistakes() -> list[Mistake]:
    """The known wrong ways to measure a layer's gradient change, each written as a learner would."""
    cos = lambda a, b: _dot(a, b) / (_l2(a) * _l2(b))  # noqa: E731
    rel = lambda a, b: _l2(np.asarray(b, float) - np.asarray(a, float)) / _l2(a)  # noqa: E731
    return [
        Mistake(
            "cosine not normalized (a plain dot product)",
            "divide the dot product by the product of the two norms, ||g_before|| * ||g_after||",
            lambda a, b: (rel(a, b), _dot(a, b)),
        ),
        Mistake(
            "cosine divided by ||g_before|| twice",
            "the cosine divides by both norms: ||g_before|| * ||g_after||",
            lambda a, b: (rel(a, b), _dot(a, b) / _l2(a) ** 2),
        ),
        Mistake(
            "norms per row instead of over the flattened gradient",
            "treat the whole weight gradient as one vector (g.ravel(), or np.linalg.norm(g) with no axis); "
            "averaging one value per row (output unit) weighs small and large rows alike",
            _per_row,
        ),
        Mistake(
            "one value per row returned instead of one number",
            "flatten the gradients (g.ravel()) and return two single numbers, not an array per output unit",
            lambda a, b: (np.linalg.norm(np.asarray(b, float) - np.asarray(a, float), axis=1)
                          / np.linalg.norm(np.asarray(a, float), axis=1),
                          (np.asarray(a, float) * np.asarray(b, float)).sum(axis=1)
                          / (np.linalg.norm(np.asarray(a, float), axis=1) * np.linalg.norm(np.asarray(b, float), axis=1))),
        ),
        Mistake(
            "matrix 2-norm (largest singular value) instead of the l2 norm of all entries",
            "np.linalg.norm(g, 2) of a matrix is its spectral norm; use np.linalg.norm(g) (Frobenius: "
            "the l2 norm of the flattened gradient)",
            _spectral,
        ),
        Mistake(
            "relative change divided by the wrong norm (||g_after||)",
            "relative to the gradient before the update: ||g_after - g_before|| / ||g_before||",
            lambda a, b: (_l2(np.asarray(b, float) - np.asarray(a, float)) / _l2(b), cos(a, b)),
        ),
        Mistake(
            "absolute change instead of relative change",
            "divide ||g_after - g_before|| by ||g_before||, so layers with large and small gradients compare",
            lambda a, b: (_l2(np.asarray(b, float) - np.asarray(a, float)), cos(a, b)),
        ),
        Mistake(
            "difference of the norms instead of the norm of the difference",
            "||g_after - g_before|| sees a change of direction; ||g_after|| - ||g_before|| only sees a change of length",
            lambda a, b: ((_l2(b) - _l2(a)) / _l2(a), cos(a, b)),
        ),
        Mistake(
            "squared norms (no square root)",
            "the l2 norm is the square root of the sum of squares",
            lambda a, b: (rel(a, b) ** 2, cos(a, b)),
        ),
        Mistake(
            "the two values returned in the wrong order",
            "return (relative_change, cosine)",
            lambda a, b: (cos(a, b), rel(a, b)),
        ),
    ]


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
    mistakes = [Mistake(m.name, m.hint, _numbers_as_arrays(m.fn)) for m in gradient_mistakes()]
    return check_function(
        "gradient_change", learner_fn, _numbers_as_arrays(ref.gradient_change), _gradient_cases(hidden), mistakes,
        outputs=GRADIENT_OUTPUTS, rtol=1e-4, atol=1e-7, check_dtype=False,
    )


# ---------------------------------------------------------------------------------------------
# noisy_batchnorm_forward
# ---------------------------------------------------------------------------------------------


def _noisy_case(seed: int, n: int, d: int, tiny: bool = False, dtype=np.float64):
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
        return tuple(a.astype(dtype) for a in (x, gamma, beta, scale, shift))

    return make


_NOISY_VISIBLE = [
    ("N=8, D=3", 0, 8, 3, False, np.float64),
    ("N=64, D=10", 1, 64, 10, False, np.float64),
    ("N=16, D=4, a feature with std 1e-3 (eps matters)", 2, 16, 4, True, np.float64),
    ("N=2, D=1", 3, 2, 1, False, np.float64),
    ("N=32, D=5, float32", 4, 32, 5, False, np.float32),
]
_NOISY_HIDDEN = [
    ("N=5, D=7", 100, 5, 7, False, np.float64),
    ("N=40, D=3, a feature with std 1e-3", 101, 40, 3, True, np.float64),
    ("N=20, D=6, float32", 102, 20, 6, False, np.float32),
]


def _noisy_cases(hidden: bool) -> list[Case]:
    table = _NOISY_HIDDEN if hidden else _NOISY_VISIBLE
    return [Case(name, _noisy_case(case_seed("noisy_batchnorm_forward", name, seed, hidden), n, d, tiny, dt))
            for name, seed, n, d, tiny, dt in table]


def _bn(x, gamma, beta, eps=1e-5, axis=0, ddof=0, outside=False):
    """Batch norm as a learner might write it, with the knobs the mistakes turn."""
    x = np.asarray(x, dtype=np.float64)
    mu = x.mean(axis=axis, keepdims=True)
    var = x.var(axis=axis, ddof=ddof, keepdims=True)
    x_hat = (x - mu) / (np.sqrt(var) + eps if outside else np.sqrt(var + eps))
    return gamma * x_hat + beta


def noisy_mistakes() -> list[Mistake]:
    """The known wrong ways to write noisy batch norm, each written as a learner would."""
    return [
        Mistake(
            "noise injected before normalizing (the normalization removes it)",
            "normalize first, then apply the noise: scale * (gamma * x_hat + beta) + shift; a per-feature "
            "scale and shift of x are exactly what batch norm takes out",
            lambda x, g, b, s, m, eps=1e-5: _bn(s * np.asarray(x, float) + m, g, b, eps),
        ),
        Mistake(
            "noise left out (plain batch norm)",
            "multiply batch norm's output by scale and add shift, per feature",
            lambda x, g, b, s, m, eps=1e-5: _bn(x, g, b, eps),
        ),
        Mistake(
            "noise scale added instead of multiplied",
            "scale multiplies batch norm's output; only shift is added: scale * bn(x) + shift",
            lambda x, g, b, s, m, eps=1e-5: _bn(x, g, b, eps) + s + m,
        ),
        Mistake(
            "scale and shift swapped",
            "scale multiplies, shift is added: scale * bn(x) + shift",
            lambda x, g, b, s, m, eps=1e-5: m * _bn(x, g, b, eps) + s,
        ),
        Mistake(
            "noise applied to x_hat, before gamma and beta",
            "the noise comes after the whole batch norm layer: scale * (gamma * x_hat + beta) + shift",
            lambda x, g, b, s, m, eps=1e-5: g * (s * _bn(x, 1.0, 0.0, eps) + m) + b,
        ),
        Mistake(
            "shift forgotten",
            "add shift after scaling: scale * bn(x) + shift",
            lambda x, g, b, s, m, eps=1e-5: s * _bn(x, g, b, eps),
        ),
        Mistake(
            "scale forgotten",
            "multiply by scale before adding shift: scale * bn(x) + shift",
            lambda x, g, b, s, m, eps=1e-5: _bn(x, g, b, eps) + m,
        ),
        Mistake(
            "statistics over the wrong axis",
            "each feature (column) is normalized over the batch: mean and variance over axis=0",
            lambda x, g, b, s, m, eps=1e-5: s * _bn(x, g, b, eps, axis=1) + m,
        ),
        Mistake(
            "unbiased variance used to normalize",
            "batch norm normalizes with the biased batch variance (divide by N, np.var's default ddof=0)",
            lambda x, g, b, s, m, eps=1e-5: s * _bn(x, g, b, eps, ddof=1) + m,
        ),
        Mistake(
            "eps outside the square root",
            "x_hat = (x - mean) / sqrt(var + eps), with eps inside the square root",
            lambda x, g, b, s, m, eps=1e-5: s * _bn(x, g, b, eps, outside=True) + m,
        ),
    ]


def check_noisy_batchnorm_forward(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, scale, shift)`` return ``scale * batchnorm(x) + shift``?"""
    return check_function(
        "noisy_batchnorm_forward", fn, ref.noisy_batchnorm_forward, _noisy_cases(hidden), noisy_mistakes(),
        rtol=1e-4, atol=1e-6, check_dtype=False,  # float32 input may be computed in float32 or float64
    )

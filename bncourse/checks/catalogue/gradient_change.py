"""The catalogue's entries for notebook 7's gradient_change: (relative change, cosine) as a learner gets it wrong.

Each entry is the measure with one choice turned: which norm, relative to what, cosine or angle or
its absolute value, per row or flattened, the two values' order.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Mistake
from bncourse.checks.catalogue.what_bn_does import _wrapped
from bncourse.checks.what_bn_does import _numbers_as_arrays


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
            "ratio of the norms (||g_after|| / ||g_before||) instead of the relative change",
            "||g_after - g_before|| / ||g_before|| measures how far the gradient moved, direction included; the ratio of "
            "the norms only compares lengths", lambda a, b: (_l2(b) / _l2(a), cos(a, b)), id="norm-ratio"),
        Mistake(
            "squared norms (no square root)",
            "the l2 norm is the square root of the sum of squares",
            lambda a, b: (rel(a, b) ** 2, cos(a, b)),
        ),
        Mistake(
            "the angle (arccos) returned instead of the cosine",
            "return the cosine itself, dot / (||g_before|| * ||g_after||), not np.arccos of it",
            lambda a, b: (rel(a, b), float(np.arccos(np.clip(cos(a, b), -1, 1)))), id="angle-instead-of-cosine",
        ),
        Mistake(
            "the angle in degrees returned instead of the cosine",
            "return the cosine itself, dot / (||g_before|| * ||g_after||), not the angle",
            lambda a, b: (rel(a, b), float(np.degrees(np.arccos(np.clip(cos(a, b), -1, 1))))),
            id="angle-instead-of-cosine",
        ),
        Mistake(
            "cosine distance (1 - cosine) returned instead of the cosine",
            "return the cosine similarity, dot / (||g_before|| * ||g_after||), not 1 minus it",
            lambda a, b: (rel(a, b), 1 - cos(a, b)), id="cosine-distance",
        ),
        Mistake(
            "the absolute value of the cosine (a reversed gradient reads as unchanged)",
            "keep the cosine's sign: dot / (||g_before|| * ||g_after||) is -1 when the gradient reversed",
            lambda a, b: (rel(a, b), abs(cos(a, b))), id="cosine-absolute",
        ),
        *(Mistake(f"relative change divided by {what} instead of ||g_before||",
                  "relative to the gradient before the update only: ||g_after - g_before|| / ||g_before||",
                  (lambda a, b, d=denom: (_l2(np.asarray(b, float) - np.asarray(a, float)) / d(_l2(a), _l2(b)),
                                          cos(a, b))), id="relative-to-wrong-norm")
          for what, denom in (("the mean of the two norms", lambda x, y: (x + y) / 2),
                              ("the geometric mean of the two norms", lambda x, y: (x * y) ** 0.5),
                              ("||g_before|| squared", lambda x, y: x * x))),
        Mistake(
            "Pearson correlation (np.corrcoef) instead of the cosine",
            "the cosine does not centre the vectors: dot / (||g_before|| * ||g_after||), not np.corrcoef",
            lambda a, b: (rel(a, b), float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])), id="cosine-as-correlation",
        ),
        Mistake(
            "cosine divided by the squared norms",
            "divide by the norms themselves: dot / (||g_before|| * ||g_after||), with ||g|| = sqrt(sum(g**2))",
            lambda a, b: (rel(a, b), _dot(a, b) / (_l2(a) ** 2 * _l2(b) ** 2)), id="wrong-norm",
        ),
        Mistake(
            "squared norm of the change (no square root in the numerator)",
            "||g_after - g_before|| is the square root of the sum of squares: np.linalg.norm(g_after - g_before)",
            lambda a, b: (_l2(np.asarray(b, float) - np.asarray(a, float)) ** 2 / _l2(a), cos(a, b)), id="wrong-norm",
        ),
        Mistake(
            "norms per column instead of over the flattened gradient",
            "treat the whole weight gradient as one vector (g.ravel(), or np.linalg.norm(g) with no axis); "
            "averaging one value per column (input unit) weighs small and large columns alike",
            lambda a, b: _per_row(np.asarray(a, float).T, np.asarray(b, float).T), id="per-row",
        ),
        Mistake(
            "the two values returned in the wrong order",
            "return (relative_change, cosine)",
            lambda a, b: (cos(a, b), rel(a, b)),
        ),
        Mistake("relative change divided by ||g_before|| + ||g_after||",
                "relative to the gradient before the update only: ||g_after - g_before|| / ||g_before||",
                lambda a, b: (_l2(np.asarray(b, float) - np.asarray(a, float)) / (_l2(a) + _l2(b)), cos(a, b)),
                id="relative-to-wrong-norm"),
        Mistake("relative change taken element by element (mean of |b - a| / |a|)",
                "compare whole vectors: ||g_after - g_before|| / ||g_before||; element-wise ratios explode where "
                "a gradient entry is near zero",
                lambda a, b: (float(np.mean(np.abs(np.ravel(b) - np.ravel(a)) / (np.abs(np.ravel(a)) + 1e-12))),
                              cos(a, b)), id="relative-elementwise"),
        Mistake("the cosine's inner product a mean (np.mean(a * b)) instead of a sum",
                "the cosine is the dot product, a SUM over entries, divided by the two l2 norms: "
                "np.sum(a * b) / (||a|| * ||b||); np.mean divides it by the number of entries again",
                lambda a, b: (rel(a, b), float(np.mean(np.ravel(a) * np.ravel(b))) / (_l2(a) * _l2(b))),
                id="cosine-inner-product-mean"),
        *(Mistake(f"the relative change's {which} a root-mean-square (np.sqrt(np.mean(v**2))) while the other is a norm",
                  "both are l2 norms, sqrt(sum of squares): ||g_after - g_before|| / ||g_before||, "
                  "np.linalg.norm of the flattened gradients; a mean inside one of them divides by the size",
                  lambda a, b, f=factor: (rel(a, b) * f(np.size(a)), cos(a, b)), id="relative-mean-and-sum-mixed")
          for which, factor in (("numerator", lambda n: n ** -0.5), ("denominator", lambda n: n ** 0.5))),
        Mistake("the cosine's norms root-mean-squares while its inner product is a sum",
                "the cosine is np.sum(a * b) / (||a|| * ||b||) with l2 norms sqrt(np.sum(a**2)); sums and means must "
                "not be mixed (mean over mean with root-mean-squares gives the same cosine)",
                lambda a, b: (rel(a, b), _dot(a, b) / (_l2(a) * _l2(b)) * np.size(a)), id="cosine-inner-product-mean"),
        Mistake("l1 norms (sums of absolute values) instead of l2 norms",
                "use the l2 norm, np.linalg.norm(g.ravel()) = sqrt(sum(g**2)), in both the relative change and "
                "the cosine", lambda a, b: _with_norm(a, b, lambda v: float(np.abs(v).sum())), id="wrong-norm"),
        Mistake("the relative change in l1 norms (sums of absolute values) instead of l2",
                "use the l2 norm, np.linalg.norm(g.ravel()) = sqrt(sum(g**2))",
                lambda a, b: (_with_norm(a, b, lambda v: float(np.abs(v).sum()))[0], cos(a, b)), id="wrong-norm"),
        Mistake("max norms (largest absolute entry) instead of l2 norms",
                "use the l2 norm, np.linalg.norm(g.ravel()) = sqrt(sum(g**2))",
                lambda a, b: (_with_norm(a, b, lambda v: float(np.abs(v).max()))[0], cos(a, b)), id="wrong-norm"),
    ]


def _with_norm(a, b, norm):
    """(relative change, cosine) with ``norm`` in place of the l2 norm."""
    a, b = np.ravel(np.asarray(a, np.float64)), np.ravel(np.asarray(b, np.float64))
    return norm(b - a) / norm(a), float(a @ b) / (norm(a) * norm(b))


ENTRIES = {"gradient_change": lambda: _wrapped(gradient_mistakes(), _numbers_as_arrays)}

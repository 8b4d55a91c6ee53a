"""Seeded inputs shared by the batch-norm checks: features (N, D), images (N, C, H, W), gamma and beta.

Every case builds its arrays from its own seed, so a case is the same in the learner's kernel and
in the grader's re-judging. Options cover what breaks naive code: float32, a large mean (numerical
stability), a feature with a tiny spread (eps matters), a non-contiguous view.
"""

from __future__ import annotations

import numpy as np


def features(rng, n: int, d: int, *, loc=3.0, tiny: bool = False, dtype=np.float64, noncontig: bool = False):
    """(N, D) with per-feature means and scales; ``tiny`` gives feature 0 a std of about 1e-3."""
    width = 2 * d if noncontig else d
    scale = rng.uniform(0.5, 2.0, size=width)
    if tiny:
        scale[0] = 1e-3
    mean = loc + rng.normal(size=width)
    x = (rng.normal(size=(n, width)) * scale + mean).astype(dtype)
    return x[:, ::2] if noncontig else x  # every other column: a non-contiguous view


def affine(rng, d: int, dtype=np.float64):
    """gamma (D,) of both signs, away from 0, and beta (D,) away from 0."""
    gamma = rng.uniform(0.5, 2.0, size=d) * rng.choice([-1.0, 1.0], size=d)
    beta = rng.normal(size=d) + 0.5
    return gamma.astype(dtype), beta.astype(dtype)


def images(rng, shape, dtype=np.float64, loc=3.0, noncontig=False):
    """(N, C, H, W) with per-channel means and scales; ``noncontig``: every other column of W."""
    n, c, h, w = shape
    mean = (loc + rng.normal(size=c)).reshape(1, c, 1, 1)
    scale = rng.uniform(0.5, 2.0, size=c).reshape(1, c, 1, 1)
    if noncontig:
        return (rng.normal(size=(n, c, h, 2 * w)) * scale + mean).astype(dtype)[..., ::2]
    return (rng.normal(size=shape) * scale + mean).astype(dtype)


def as_dtype_of(x, out):
    """``out`` in ``x``'s dtype (the known mistakes keep the learner's dtype, like the reference)."""
    return np.asarray(out).astype(np.asarray(x).dtype, copy=False)

"""Seeded inputs shared by the batch-norm checks: features (N, D), images (N, C, H, W), gamma and beta.

Every case builds its arrays from its own seed, so a case is the same in the learner's kernel and
in the grader's re-judging. Options cover what breaks naive code: float32, a large mean (numerical
stability), a feature with a tiny spread (eps matters), a non-contiguous view.

Hidden cases are drawn at grading time: their seeds come from ``hidden_seed()`` (set by
``use_hidden_seed``, else the environment variable ``BNCOURSE_HIDDEN_SEED``, else a fixed default for
self-paced use), the exercise and the case's name, through ``np.random.SeedSequence``. Their shapes
and options stay in each check's tables; the visible cases keep their fixed seeds.
"""

from __future__ import annotations

import os
import zlib

import numpy as np

HIDDEN_SEED_ENV = "BNCOURSE_HIDDEN_SEED"
DEFAULT_HIDDEN_SEED = 20_251_207  # self-paced use: the hidden cases a learner's "hidden=True" check runs
_hidden_seed: int | None = None


def use_hidden_seed(seed: int | None) -> None:
    """Draw every hidden case from ``seed`` from now on in this process (None: back to the default rule)."""
    global _hidden_seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"the hidden seed must be a non-negative int, got {seed!r}")
    _hidden_seed = None if seed is None else int(seed)


def hidden_seed() -> int:
    """The seed of this run's hidden cases: ``use_hidden_seed``'s, else $BNCOURSE_HIDDEN_SEED, else the default."""
    if _hidden_seed is not None:
        return _hidden_seed
    text = os.environ.get(HIDDEN_SEED_ENV, "").strip()
    if not text:
        return DEFAULT_HIDDEN_SEED
    try:
        seed = int(text)
    except ValueError:
        raise ValueError(f"{HIDDEN_SEED_ENV} must be a non-negative integer, got {text!r}") from None
    if seed < 0:
        raise ValueError(f"{HIDDEN_SEED_ENV} must be a non-negative integer, got {text!r}")
    return seed


def hidden_case_seed(exercise: str, case: str) -> int:
    """A 32-bit seed for one hidden case, from ``hidden_seed()``, the exercise and the case's name."""
    words = [zlib.crc32(exercise.encode()), zlib.crc32(case.encode())]
    return int(np.random.SeedSequence([hidden_seed(), *words]).generate_state(1, dtype=np.uint32)[0])


def case_seed(exercise: str, case: str, fixed: int, hidden: bool) -> int:
    """``fixed`` for a visible case; for a hidden one, a seed drawn from this run's hidden seed."""
    return hidden_case_seed(exercise, case) if hidden else fixed


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

"""Checks for the "Why normalize?" notebook: standardization and min-max scaling.

``check_standardize(fn)`` and ``check_min_max_scale(fn)`` take the learner's function
``fn(X_train, X_test) -> (X_train_scaled, X_test_scaled)``; ``hidden=True`` runs other seeds
and shapes for nbgrader's hidden tests.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks import catalogue
from bncourse.checks.core import Case, CheckResult, check_function
from bncourse.checks.inputs import hidden_case_seed
from bncourse.reference import normalize as ref

OUTPUTS = ("X_train_scaled", "X_test_scaled")


def _bike_like(seed: int, n: int, m: int, d: int, dtype=np.float64):
    """Columns on wildly different scales, like age (years) and kilometres driven."""
    def make():
        rng = np.random.default_rng(seed)
        scales = np.array([20.0, 250_000.0, 3.0, 1e-3])[:d] if d <= 4 else rng.uniform(1e-3, 1e5, size=d)
        offsets = rng.uniform(-1, 1, size=d) * scales
        X_train = (rng.uniform(0, 1, size=(n, d)) * scales + offsets).astype(dtype)
        X_test = (rng.uniform(-0.2, 1.2, size=(m, d)) * scales + offsets).astype(dtype)
        return X_train, X_test

    return make


def _cases(hidden: bool) -> list[Case]:
    if hidden:
        table = [("N=7, M=3, D=4", 7, 3, 4, np.float64), ("N=50, M=20, D=6 (float32 input)", 50, 20, 6, np.float32),
                 ("N=2, M=1, D=1", 2, 1, 1, np.float64)]
        return [Case(name, _bike_like(hidden_case_seed("normalize", name), n, m, d, dtype))
                for name, n, m, d, dtype in table]
    return [
        Case("N=6, M=4, D=2 (age, km)", _bike_like(0, 6, 4, 2)),
        Case("N=30, M=10, D=3", _bike_like(1, 30, 10, 3)),
        Case("N=3, M=5, D=1", _bike_like(2, 3, 5, 1)),
    ]


def check_standardize(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(X_train, X_test)`` standardize both with X_train's per-feature mean and std?"""
    return check_function(
        "standardize", fn, ref.standardize, _cases(hidden), catalogue.lazy("standardize"),
        outputs=OUTPUTS, rtol=1e-4, atol=1e-6, check_dtype=False,  # float32 input may be computed in float32
    )


def check_min_max_scale(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(X_train, X_test)`` map each feature's training range to [0, 1], test data alike?"""
    return check_function(
        "min_max_scale", fn, ref.min_max_scale, _cases(hidden), catalogue.lazy("min_max_scale"),
        outputs=OUTPUTS, rtol=1e-4, atol=1e-6, check_dtype=False,  # float32 input may be computed in float32
    )

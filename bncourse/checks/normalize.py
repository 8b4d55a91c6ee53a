"""Checks for the "Why normalize?" notebook: standardization and min-max scaling.

``check_standardize(fn)`` and ``check_min_max_scale(fn)`` take the learner's function
``fn(X_train, X_test) -> (X_train_scaled, X_test_scaled)``; ``hidden=True`` runs other seeds
and shapes for nbgrader's hidden tests.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Case, CheckResult, Mistake, check_function
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


def _train_test(stat_fn):
    """Build a scaler that takes its statistics from ``stat_fn(X_train, X_test)``."""
    def scaler(X_train, X_test):
        X_train, X_test = np.asarray(X_train, dtype=np.float64), np.asarray(X_test, dtype=np.float64)
        a, b, c, d = stat_fn(X_train, X_test)
        return (X_train - a) / b, (X_test - c) / d

    return scaler


def _std_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "test data scaled with its own statistics",
            "compute the mean and std from X_train only and apply those same numbers to X_test",
            _train_test(lambda tr, te: (tr.mean(0), tr.std(0), te.mean(0), te.std(0))),
        ),
        Mistake(
            "statistics taken from train and test together",
            "the test set must not influence the scaling: use X_train's mean and std only",
            _train_test(lambda tr, te: (m := np.concatenate([tr, te]).mean(0), s := np.concatenate([tr, te]).std(0), m, s)),
        ),
        Mistake(
            "statistics over the wrong axis",
            "each feature (column) gets its own mean and std: reduce over axis=0, the rows",
            _train_test(lambda tr, te: (tr.mean(1, keepdims=True), tr.std(1, keepdims=True),
                                        te.mean(1, keepdims=True), te.std(1, keepdims=True))),
        ),
        Mistake(
            "one mean and std for all features",
            "each feature (column) gets its own mean and std: pass axis=0",
            _train_test(lambda tr, te: (tr.mean(), tr.std(), tr.mean(), tr.std())),
        ),
        Mistake(
            "divided by the variance instead of the standard deviation",
            "divide by the square root of the variance (np.std), so each feature ends with std 1",
            _train_test(lambda tr, te: (tr.mean(0), tr.var(0), tr.mean(0), tr.var(0))),
        ),
        Mistake(
            "sample standard deviation (ddof=1)",
            "use the population std (np.std's default ddof=0): the same biased estimate batch norm uses",
            _train_test(lambda tr, te: (tr.mean(0), tr.std(0, ddof=1), tr.mean(0), tr.std(0, ddof=1))),
        ),
        Mistake(
            "mean not subtracted",
            "standardization centres each feature first: (X - mean) / std",
            _train_test(lambda tr, te: (0.0, tr.std(0), 0.0, tr.std(0))),
        ),
        Mistake(
            "only X_train was scaled",
            "return X_test scaled too, with X_train's statistics",
            lambda tr, te: (ref.standardize(tr, te)[0], np.asarray(te, dtype=np.float64)),
        ),
    ]


def _minmax_mistakes() -> list[Mistake]:
    return [
        Mistake(
            "test data scaled with its own minimum and maximum",
            "take min and max from X_train only; X_test may then fall outside [0, 1], and that is correct",
            _train_test(lambda tr, te: (tr.min(0), np.ptp(tr, 0), te.min(0), np.ptp(te, 0))),
        ),
        Mistake(
            "divided by the maximum instead of the range",
            "divide by (max - min) so the training data spans exactly [0, 1]",
            _train_test(lambda tr, te: (tr.min(0), tr.max(0), tr.min(0), tr.max(0))),
        ),
        Mistake(
            "minimum not subtracted",
            "shift first: (X - min) / (max - min)",
            _train_test(lambda tr, te: (0.0, np.ptp(tr, 0), 0.0, np.ptp(tr, 0))),
        ),
        Mistake(
            "statistics over the wrong axis",
            "each feature (column) gets its own min and max: reduce over axis=0",
            _train_test(lambda tr, te: (tr.min(1, keepdims=True), np.ptp(tr, 1, keepdims=True),
                                        te.min(1, keepdims=True), np.ptp(te, 1, keepdims=True))),
        ),
        Mistake(
            "one minimum and maximum for all features",
            "each feature gets its own range: pass axis=0",
            _train_test(lambda tr, te: (tr.min(), np.ptp(tr), tr.min(), np.ptp(tr))),
        ),
        Mistake(
            "standardized instead of min-max scaled",
            "this exercise maps the training range to [0, 1]: (X - min) / (max - min)",
            ref.standardize,
        ),
    ]


def check_standardize(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(X_train, X_test)`` standardize both with X_train's per-feature mean and std?"""
    return check_function(
        "standardize", fn, ref.standardize, _cases(hidden), _std_mistakes(),
        outputs=OUTPUTS, rtol=1e-4, atol=1e-6, check_dtype=False,  # float32 input may be computed in float32
    )


def check_min_max_scale(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(X_train, X_test)`` map each feature's training range to [0, 1], test data alike?"""
    return check_function(
        "min_max_scale", fn, ref.min_max_scale, _cases(hidden), _minmax_mistakes(),
        outputs=OUTPUTS, rtol=1e-4, atol=1e-6, check_dtype=False,  # float32 input may be computed in float32
    )

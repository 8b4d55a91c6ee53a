"""The catalogue's entries for notebook 1: standardize and min_max_scale."""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Mistake
from bncourse.reference import normalize as ref

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


ENTRIES = {"standardize": _std_mistakes, "min_max_scale": _minmax_mistakes}

"""Feature scaling: standardization and min-max scaling, fitted on training data only.

Both take X_train (N, D) and X_test (M, D) and return both scaled, (N, D) and (M, D) float64.
The statistics (one per feature, shape (D,)) come from X_train alone and are applied unchanged
to X_test: the test set stands for data the model has not seen, so it may not shape the scaling.
"""

from __future__ import annotations

import numpy as np


def _check_pair(X_train, X_test) -> tuple[np.ndarray, np.ndarray]:
    X_train, X_test = np.asarray(X_train), np.asarray(X_test)
    for name, X in (("X_train", X_train), ("X_test", X_test)):
        if X.ndim != 2:
            raise ValueError(f"expected {name} of shape (N, D), got {X.ndim}D input of shape {X.shape}")
        if X.dtype.kind not in "fiu":
            raise ValueError(f"expected a numeric {name}, got dtype {X.dtype}")
    if X_train.shape[0] < 2:
        raise ValueError(f"expected at least 2 training rows to estimate statistics, got shape {X_train.shape}")
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(f"X_train has {X_train.shape[1]} features but X_test has {X_test.shape[1]}")
    return X_train.astype(np.float64), X_test.astype(np.float64)


def standardize(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X - mean) / std per feature, with mean and std (ddof=0) of X_train: -> (N, D), (M, D)."""
    X_train, X_test = _check_pair(X_train, X_test)
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    return (X_train - mean) / std, (X_test - mean) / std


def min_max_scale(X_train: np.ndarray, X_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(X - min) / (max - min) per feature, with min and max of X_train: -> (N, D), (M, D).

    X_train lands in [0, 1]; X_test may fall outside it, and that is correct.
    """
    X_train, X_test = _check_pair(X_train, X_test)
    lo, hi = X_train.min(axis=0), X_train.max(axis=0)
    return (X_train - lo) / (hi - lo), (X_test - lo) / (hi - lo)

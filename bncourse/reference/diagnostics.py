"""Reference solutions of notebook 11's exercises, in numpy (the checks compare against these).

- ``saturated_fraction(h, kind) -> (1,)``: the share of values with |h| > 0.97 ("tanh"), with
  |2h - 1| > 0.97 ("sigmoid"), or of units never active over the batch ("relu"); h is (N, ...).
- ``update_to_data_ratio(before, after) -> (1,)``: std(after - before) / std(before).

``bncourse.diagnostics`` computes the same on torch tensors inside its hooks.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.97


def dead_units(h: np.ndarray) -> float:
    """Share of units (every axis but the batch axis 0) that are not positive for any example."""
    return float(1.0 - (h > 0).reshape(len(h), -1).any(0).mean())


def saturated_fraction(h, kind: str) -> np.ndarray:
    h = np.asarray(h, dtype=np.float64)
    if kind == "tanh":
        got = np.mean(np.abs(h) > THRESHOLD)
    elif kind == "sigmoid":
        got = np.mean(np.abs(2 * h - 1) > THRESHOLD)
    elif kind == "relu":
        got = dead_units(h)
    else:
        raise ValueError(f"kind must be 'tanh', 'sigmoid' or 'relu', got {kind!r}")
    return np.asarray([float(got)])


def update_to_data_ratio(before, after) -> np.ndarray:
    b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
    return np.asarray([float(np.std(a - b) / np.std(b))])

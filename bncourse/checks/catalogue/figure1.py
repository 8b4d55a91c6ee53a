"""The catalogue's entries for notebook 5: the sigmoid input's percentiles."""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Mistake

_ROWWISE_HINT = ("row t of records is one snapshot of the N examples: take the percentiles of each row, "
                 "over axis=1, then transpose: np.percentile(records, [15, 50, 85], axis=1).T")


MISTAKES = [
    Mistake("fractions instead of percentiles",
            "np.percentile takes numbers from 0 to 100 (15, 50, 85); np.quantile takes 0.15, 0.5, 0.85",
            lambda r: np.percentile(r, [0.15, 0.5, 0.85], axis=1).T),
    Mistake("mean and standard deviation instead of percentiles",
            "the paper plots percentiles, which do not assume a symmetric distribution: use np.percentile",
            lambda r: np.stack([r.mean(1) - r.std(1), r.mean(1), r.mean(1) + r.std(1)], axis=1)),
    Mistake("mean instead of median for the middle line",
            "the middle line is the 50th percentile (the median), not the mean",
            lambda r: np.stack([np.percentile(r, 15, axis=1), r.mean(1), np.percentile(r, 85, axis=1)], axis=1)),
    Mistake("percentiles in the wrong order", "return the columns in the order 15th, 50th, 85th",
            lambda r: np.percentile(r, [85, 50, 15], axis=1).T),
    Mistake("percentiles not transposed",
            "np.percentile(records, [15, 50, 85], axis=1) has shape (3, T), one row per percentile: "
            "transpose it (.T) to get one row per snapshot, shape (T, 3)",
            lambda r: np.percentile(r, [15, 50, 85], axis=1)),
    Mistake("percentiles over the wrong axis (axis=0, across snapshots)", _ROWWISE_HINT,
            lambda r: np.percentile(r, [15, 50, 85], axis=0).T),
    Mistake("percentiles over the wrong axis (axis=0), not transposed", _ROWWISE_HINT,
            lambda r: np.percentile(r, [15, 50, 85], axis=0)),
    Mistake("percentiles of all snapshots together",
            "each row t is the percentiles of records[t] alone: reduce over axis=1",
            lambda r: np.repeat(np.percentile(r, [15, 50, 85])[None, :], len(r), axis=0)),
]


ENTRIES = {"sigmoid_input_percentiles": MISTAKES}

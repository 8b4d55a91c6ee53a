"""Checks for notebook 5, "Reproducing Ioffe & Szegedy, Figure 1": the sigmoid input's percentiles.

``check_sigmoid_input_percentiles(fn)``: ``fn(records) -> bands``, records (T, N) numpy array
(T snapshots of one sigmoid's input on N fixed examples), bands (T, 3): the 15th, 50th and 85th
percentiles of each snapshot. ``hidden=True`` runs other seeds and shapes. The reference is the
package's ``bncourse.plots.percentile_bands``, which the learner's function may not call.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Case, CheckResult, Mistake, check_function
from bncourse.checks.inputs import hidden_case_seed
from bncourse.plots import percentile_bands

__all__ = ["check_sigmoid_input_percentiles", "MISTAKES"]

_ROWWISE_HINT = ("row t of records is one snapshot of the N examples: take the percentiles of each row, "
                 "over axis=1, then transpose: np.percentile(records, [15, 50, 85], axis=1).T")


def _records(seed: int, T: int, N: int):
    """Skewed, drifting snapshots: like a sigmoid input whose distribution moves during training."""
    def make():
        rng = np.random.default_rng(seed)
        drift = np.linspace(0.0, 2.0, T)[:, None]
        return (rng.gamma(2.0, 1.0, size=(T, N)) * (1 + drift) - drift * 3,)

    return make


def _reference_percentiles(records):
    return percentile_bands(np.asarray(records))


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


def check_sigmoid_input_percentiles(fn, hidden: bool = False) -> CheckResult:
    """Check ``fn(records (T, N)) -> (T, 3)`` 15th/50th/85th percentiles per row."""
    cases = (
        [Case(name, _records(hidden_case_seed("sigmoid_input_percentiles", name), t, n))
         for name, t, n in (("T=4, N=50", 4, 50), ("T=1, N=7", 1, 7), ("T=30, N=500", 30, 500))]
        if hidden else
        [Case("T=3, N=20", _records(0, 3, 20)), Case("T=10, N=100", _records(1, 10, 100)),
         Case("T=2, N=5", _records(2, 2, 5))]
    )
    return check_function("sigmoid_input_percentiles", fn, _reference_percentiles, cases, MISTAKES,
                          outputs=("bands",), rtol=1e-6, atol=1e-8, check_dtype=False,
                          forbidden=("percentile_bands",))

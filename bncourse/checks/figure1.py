"""Checks for notebook 5, "Reproducing Ioffe & Szegedy, Figure 1": the sigmoid input's percentiles.

``check_sigmoid_input_percentiles(fn)``: ``fn(records) -> bands``, records (T, N) numpy array
(T snapshots of one sigmoid's input on N fixed examples), bands (T, 3): the 15th, 50th and 85th
percentiles of each snapshot. ``hidden=True`` runs other seeds and shapes. The reference is the
package's ``bncourse.plots.percentile_bands``, which the learner's function may not call.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks import catalogue
from bncourse.checks.core import Case, CheckResult, check_function
from bncourse.checks.inputs import hidden_case_seed
from bncourse.plots import percentile_bands

__all__ = ["check_sigmoid_input_percentiles"]

def _records(seed: int, T: int, N: int):
    """Skewed, drifting snapshots: like a sigmoid input whose distribution moves during training."""
    def make():
        rng = np.random.default_rng(seed)
        drift = np.linspace(0.0, 2.0, T)[:, None]
        return (rng.gamma(2.0, 1.0, size=(T, N)) * (1 + drift) - drift * 3,)

    return make


def _reference_percentiles(records):
    return percentile_bands(np.asarray(records))


def check_sigmoid_input_percentiles(fn, hidden: bool = False) -> CheckResult:
    """Check ``fn(records (T, N)) -> (T, 3)`` 15th/50th/85th percentiles per row."""
    cases = (
        [Case(name, _records(hidden_case_seed("sigmoid_input_percentiles", name), t, n))
         for name, t, n in (("T=4, N=50", 4, 50), ("T=1, N=7", 1, 7), ("T=30, N=500", 30, 500))]
        if hidden else
        [Case("T=3, N=20", _records(0, 3, 20)), Case("T=10, N=100", _records(1, 10, 100)),
         Case("T=2, N=5", _records(2, 2, 5))]
    )
    return check_function("sigmoid_input_percentiles", fn, _reference_percentiles, cases, catalogue.lazy("sigmoid_input_percentiles"),
                          outputs=("bands",), rtol=1e-6, atol=1e-8, check_dtype=False,
                          forbidden=("percentile_bands",))

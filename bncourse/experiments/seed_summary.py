"""One metric of one arm over the seeds, and how the experiments print a number.

``Summary(values)``: ``values`` is a tuple of S floats, one per seed; ``mean``, ``std`` (ddof=1),
``min`` and ``max`` are floats (nan for no seeds), and ``str(summary)`` reads
``mean ± std [min, max]``. ``format_number(x)`` prints a number with about three significant digits.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Summary:
    """One metric of one arm over the seeds: the per-seed values and their spread."""

    values: tuple[float, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """Sample standard deviation over seeds (ddof=1; 0 for one seed)."""
        return float(np.std(self.values, ddof=1)) if len(self.values) > 1 else 0.0

    @property
    def min(self) -> float:
        return float(np.min(self.values)) if self.values else math.nan

    @property
    def max(self) -> float:
        return float(np.max(self.values)) if self.values else math.nan

    def __str__(self) -> str:
        spread = f"± {format_number(self.std)} [{format_number(self.min)}, {format_number(self.max)}]"
        return f"{format_number(self.mean)} {spread}"


def format_number(x: float) -> str:
    """One number for a table: 3 significant figures, or fewer decimals for large values; "nan" for a missing one."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "nan"
    if x == 0:
        return "0"
    ax = abs(x)
    if ax >= 1000 or ax < 1e-3:
        return f"{x:.3g}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    return f"{x:.3f}"

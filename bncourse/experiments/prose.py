"""Sentences about results, printed from the result objects (never typed into a notebook's markdown).

A notebook's "what we saw" paragraph written by hand quotes one run's numbers, which a learner's run
(another size, other seeds) does not reproduce. These helpers build the sentences from an
``ExperimentResult`` instead:

    print(compare(result, "final_test_acc", percent=True))
    # final_test_acc (mean ± std over 3 seeds): with BN 97.5% ± 0.4%, without BN 95.5% ± 1.7%
    print(verdicts(result))
    # held: final_test_acc: with BN higher than without BN by more than ... (effect 0.02, spread 0.017)
"""

from __future__ import annotations

import math
from typing import Sequence

from bncourse.experiments.seed_summary import format_number


def number(x: float, percent: bool = False) -> str:
    """``x`` as a percentage (one decimal) or with ``harness.format_number``'s significant digits."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "nan"
    return f"{x:.1%}" if percent else format_number(x)


def value(result, arm: str, metric: str, percent: bool = False) -> str:
    """'97.5% ± 0.4%': one arm's mean ± std over the seeds."""
    s = result.summary(arm, metric)
    return f"{number(s.mean, percent)} ± {number(s.std, percent)}"


def compare(result, metric: str, arms: Sequence[str] | None = None, percent: bool = False,
            label: str | None = None) -> str:
    """'<label> (mean ± std over N seeds): arm a x ± s, arm b y ± s'."""
    arms = list(arms) if arms is not None else list(result.arms)
    body = ", ".join(f"{a} {value(result, a, metric, percent)}" for a in arms)
    return f"{label or metric} (mean ± std over {len(result.seeds)} seeds): {body}"


def verdicts(result) -> str:
    """One line per rule: its verdict, the rule as fixed before the run, the effect and its spread;
    then the guard's finding (invalid, censored) if any."""
    lines = [f"{o.verdict}: {o.rule} (effect {number(o.effect)}, spread {number(o.spread)})" for o in result.outcomes]
    lines.append(f"verdict of '{result.name}': {result.verdict.upper()}")
    if getattr(result, "guard_note", ""):
        lines.append(result.guard_note)
    return "\n".join(lines)


def share(values, predicate) -> str:
    """'2 of 3 seeds' for the per-seed ``values`` that satisfy ``predicate``."""
    values = list(values)
    return f"{sum(bool(predicate(v)) for v in values)} of {len(values)} seeds"

"""An experiment's result: every arm's metrics at every seed, the rules' outcomes and the verdict.

``ExperimentResult`` is plain data: ``metrics[arm]`` is a list of S dicts (one per seed, metric name
-> float), ``artifacts[arm]`` the matching S dicts of everything else a trial returned (curves,
arrays). The outcomes are decided from the rules when the result is made; ``verdict`` applies the
guards first (``invalid``, ``censored``), then the rules. It shows as an HTML table in JupyterLab,
as text elsewhere, and as JSON through ``to_dict()``.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any

from bncourse.experiments.rules import MustLearn, Outcome, Rule
from bncourse.experiments.seed_summary import Summary, format_number
from bncourse.experiments.verdicts import _COLOR, CENSORED, EXPERIMENT, INVALID, KINDS, combine


@dataclass
class ExperimentResult:
    """Every arm's metrics for every seed, the rules' outcomes and the verdict (plain data)."""

    name: str
    claim: str
    arms: list[str]
    seeds: list[int]
    metrics: dict[str, list[dict[str, float]]]  # arm -> one dict of numbers per seed
    artifacts: dict[str, list[dict[str, Any]]]  # arm -> one dict of non-numbers per seed
    rules: list[Rule]
    seconds: float
    outcomes: list[Outcome] = field(default_factory=list)
    must_learn: MustLearn | None = None
    kind: str = EXPERIMENT
    trained: bool = True  # False: the arms are not trained (a measurement of a layer, a sampling)

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if not self.outcomes:
            self.outcomes = [r.decide(self) for r in self.rules]

    @property
    def invalid_reasons(self) -> list[str]:
        """Why no verdict can be given: an arm that did not learn or diverged (guard ``must_learn``)."""
        return self.must_learn.problems(self) if self.must_learn is not None else []

    @property
    def censored_reasons(self) -> list[str]:
        """Learning-rate searches whose best value stayed at the edge of the grid."""
        return [f"arm {a!r}, seed {s}: {art['censored']}" for a in self.arms
                for s, art in zip(self.seeds, self.artifacts[a]) if art.get("censored")]

    @property
    def rule_verdict(self) -> str:
        """What the rules alone decide (before the guards)."""
        return combine([o.verdict for o in self.outcomes])

    @property
    def verdict(self) -> str:
        """``invalid`` if an arm did not learn, ``censored`` if a grid's best stayed at its edge, else the rules'."""
        if self.invalid_reasons:
            return INVALID
        if self.censored_reasons:
            return CENSORED
        return self.rule_verdict

    @property
    def guard_note(self) -> str:
        """The guards' findings in one sentence ("" when there are none)."""
        if self.invalid_reasons:
            return "INVALID, no verdict: " + "; ".join(self.invalid_reasons[:4]) + (
                f" (and {len(self.invalid_reasons) - 4} more)" if len(self.invalid_reasons) > 4 else "")
        if self.censored_reasons:
            return (f"CENSORED (the rules alone say {self.rule_verdict}): the best learning rate stayed at the edge "
                    "of the grid: " + "; ".join(self.censored_reasons[:4]))
        return ""

    @property
    def rule_text(self) -> str:
        """The decision rule as written before the run."""
        parts = "; ".join(r.describe() for r in self.rules)
        return f"held if every comparison holds ({parts}); contradicted if any reverses; inconclusive otherwise"

    def values(self, arm: str, metric: str) -> list[float]:
        if arm not in self.metrics:
            raise KeyError(f"no arm {arm!r} in experiment {self.name!r} (arms: {', '.join(self.arms)})")
        try:
            return [float(m[metric]) for m in self.metrics[arm]]
        except KeyError:
            have = sorted(self.metrics[arm][0]) if self.metrics[arm] else []
            raise KeyError(f"no metric {metric!r} in arm {arm!r} (metrics: {', '.join(have)})") from None

    def summary(self, arm: str, metric: str) -> Summary:
        return Summary(tuple(self.values(arm, metric)))

    def metric_names(self) -> list[str]:
        names: list[str] = []
        for arm in self.arms:
            for m in self.metrics[arm]:
                names.extend(k for k in m if k not in names)
        return names

    def to_dict(self) -> dict:
        """JSON-ready: arms, seeds, per-seed metrics, summaries, outcomes, verdict, rule."""
        return {
            "name": self.name, "claim": self.claim, "verdict": self.verdict, "rule": self.rule_text,
            "kind": self.kind, "guard": self.guard_note,
            "must_learn": self.must_learn.describe() if self.must_learn else None,
            "arms": self.arms, "seeds": self.seeds, "seconds": round(self.seconds, 2),
            "metrics": self.metrics,
            "summary": {a: {m: {"mean": s.mean, "std": s.std, "min": s.min, "max": s.max}
                            for m in self.metric_names() for s in [self.summary(a, m)]} for a in self.arms},
            "outcomes": [o.__dict__ for o in self.outcomes],
        }

    def __str__(self) -> str:
        lines = [f"{self.name}: {self.verdict.upper()}  ({len(self.seeds)} seeds: {self.seeds}; {self.seconds:.0f} s)"]
        if self.claim:
            lines.append(f"  claim: {self.claim}")
        names = self.metric_names()
        w = max([4] + [len(a) for a in self.arms])
        for m in names:
            lines.append(f"  {m}  (mean ± std [min, max] over seeds)")
            for a in self.arms:
                lines.append(f"    {a:<{w}}  {self.summary(a, m)}")
        for o in self.outcomes:
            lines.append(f"  [{o.verdict}] {o.rule}: effect {format_number(o.effect)}, "
                         f"spread {format_number(o.spread)}, "
                         f"threshold {format_number(o.threshold)}")
        lines.append(f"  rule (fixed before the run): {self.rule_text}")
        if self.must_learn is not None:
            lines.append(f"  guard: {self.must_learn.describe()}")
        if self.guard_note:
            lines.append(f"  {self.guard_note}")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        e = html.escape
        color = _COLOR[self.verdict]
        names = self.metric_names()
        head = "".join(f"<th>{e(m)}</th>" for m in names)
        rows = "".join(
            f"<tr><td style='text-align:left'><b>{e(a)}</b></td>"
            + "".join(f"<td title='per seed: {e(', '.join(format_number(v) for v in self.values(a, m)))}'>"
                      f"{e(str(self.summary(a, m)))}</td>" for m in names)
            + "</tr>"
            for a in self.arms
        )
        outs = "".join(
            f"<li><span style='color:{_COLOR[o.verdict]}'><b>{o.verdict}</b></span>: {e(o.rule)} "
            f"(effect {e(format_number(o.effect))}, spread {e(format_number(o.spread))}, "
            f"threshold {e(format_number(o.threshold))})</li>"
            for o in self.outcomes
        )
        claim = f"<p><i>{e(self.claim)}</i></p>" if self.claim else ""
        if self.guard_note:
            outs += f"<li><b style='color:{color}'>{e(self.guard_note)}</b></li>"
        return (
            f"<div style='border-left:4px solid {color};padding-left:8px'>"
            f"<p><b>{e(self.name)}</b>: <span style='color:{color}'><b>{self.verdict}</b></span> "
            f"<span style='color:#666'>({len(self.seeds)} seeds {e(str(self.seeds))}, {self.seconds:.0f} s)</span></p>"
            f"{claim}<table><tr><th>arm</th>{head}</tr>{rows}</table>"
            f"<p style='color:#666'>cells: mean ± std [min, max] over seeds (hover for the per-seed values)</p>"
            f"<ul>{outs}</ul><p style='color:#666'>Decision rule, fixed before the run: {e(self.rule_text)}</p></div>"
        )

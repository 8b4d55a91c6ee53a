"""Demonstrations: a claim settled by one computation (algebra, an API fact, a count, a construction).

An *experiment* trains or samples over seeds and decides with a rule that weighs an effect against
its seed-to-seed spread (``harness.run_experiment``). Some claims are not of that kind: "batch norm
never sees a label" is a fact about what the layer computes; "transformers use layer norm" is a
count of the layers in ``nn.Transformer``. Running such a computation over seeds and showing an
"effect ± spread" would dress a construction up as an experiment. A ``Demonstration`` holds the
computed facts and whether they match what the claim says, and is shown as such: no seeds, no spread.

    demo = demonstrate("transformer-norms", claim="batch norm is standard in NLP",
                       compute=lambda: {"batch-norm layers": 0, "layer-norm layers": 25},
                       claim_holds=lambda f: f["batch-norm layers"] > f["layer-norm layers"],
                       expectation="nn.Transformer would hold more batch-norm than layer-norm layers")
    demo.verdict   # "contradicted"
"""

from __future__ import annotations

import html
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from bncourse.experiments.rules import Outcome
from bncourse.experiments.seed_summary import format_number
from bncourse.experiments.verdicts import CONTRADICTED, DEMONSTRATION, HELD, _COLOR


@dataclass
class Demonstration:
    """What one computation showed: its facts (name -> number or text) and the verdict on the claim."""

    name: str
    claim: str
    expectation: str  # what the claim, taken at its word, says the computation gives
    facts: dict[str, Any]
    holds: bool
    seconds: float = 0.0
    kind: str = DEMONSTRATION
    seeds: list[int] = field(default_factory=list)  # none: a demonstration is not sampled
    arms: list[str] = field(default_factory=list)
    rules: list = field(default_factory=list)
    guard_note: str = ""

    @property
    def verdict(self) -> str:
        return HELD if self.holds else CONTRADICTED

    @property
    def outcomes(self) -> list[Outcome]:
        return [Outcome(f"demonstration: {self.expectation}", math.nan, math.nan, math.nan, self.verdict)]

    @property
    def rule_text(self) -> str:
        return f"held if the computation shows that {self.expectation}; contradicted otherwise"

    def facts_text(self) -> str:
        return "; ".join(f"{k} = {format_number(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v}"
                         for k, v in self.facts.items())

    def to_dict(self) -> dict:
        return {"name": self.name, "claim": self.claim, "kind": self.kind, "verdict": self.verdict,
                "rule": self.rule_text, "facts": self.facts, "seconds": round(self.seconds, 2)}

    def __str__(self) -> str:
        return (f"{self.name}: {self.verdict.upper()}  (a demonstration: one computation, no seeds)\n"
                f"  claim: {self.claim}\n  facts: {self.facts_text()}\n  rule: {self.rule_text}")

    __repr__ = __str__

    def _repr_html_(self) -> str:
        e = html.escape
        color = _COLOR[self.verdict]
        rows = "".join(f"<tr><td style='text-align:left'>{e(str(k))}</td><td>{e(str(v))}</td></tr>"
                       for k, v in self.facts.items())
        return (f"<div style='border-left:4px solid {color};padding-left:8px'><p><b>{e(self.name)}</b>: "
                f"<span style='color:{color}'><b>{self.verdict}</b></span> <span style='color:#666'>(a demonstration: "
                f"one computation, no seeds, no spread)</span></p><p><i>{e(self.claim)}</i></p>"
                f"<table>{rows}</table><p style='color:#666'>{e(self.rule_text)}</p></div>")


def demonstrate(name: str, claim: str, compute: Callable[[], Mapping[str, Any]],
                claim_holds: Callable[[Mapping[str, Any]], bool], expectation: str) -> Demonstration:
    """Run ``compute()`` once and judge the claim with ``claim_holds(facts)``, written before the run."""
    t0 = time.perf_counter()
    facts = dict(compute())
    return Demonstration(name, claim, expectation, facts, bool(claim_holds(facts)), time.perf_counter() - t0)

"""Decision rules, written before the run, that turn an experiment's per-seed metrics into verdicts.

A rule compares arms on one metric over S seeds. ``rule.decide(result) -> Outcome(rule, effect,
spread, threshold, verdict)``: the effect (a mean over seeds, of a paired difference where two arms
are compared), its seed-to-seed spread, the threshold it had to clear and the verdict
(``held`` / ``contradicted`` / ``inconclusive``).

- ``Better(metric, treatment, control)``: the treatment beats the control beyond the noise.
- ``Similar(metric, a, b, margin)`` / ``Differs(...)``: the arms agree within, or differ beyond, a margin.
- ``AtLeast(metric, arm, value)`` / ``AtMost(...)``: an arm's mean clears a fixed value.

``MustLearn(metric, chance)`` is not a rule but a guard: every trained arm must score beyond
chance at every seed and never diverge, else the result is ``invalid`` (see ``experiment_result``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bncourse.experiments.seed_summary import Summary, format_number
from bncourse.experiments.verdicts import CONTRADICTED, HELD, INCONCLUSIVE


class SeedResults(Protocol):
    """What a rule reads of a result (``experiment_result.ExperimentResult`` is one): S seeds, arms by name."""

    arms: list[str]
    seeds: list[int]  # S of them
    metrics: dict[str, list[dict[str, float]]]  # arm -> S dicts of numbers
    artifacts: dict[str, list[dict[str, Any]]]  # arm -> S dicts of everything else

    def values(self, arm: str, metric: str) -> list[float]:  # S floats, one per seed
        ...

    def summary(self, arm: str, metric: str) -> Summary:
        ...


@dataclass(frozen=True)
class Outcome:
    """What one rule decided: the effect, its seed-to-seed spread, the threshold and the verdict."""

    rule: str
    effect: float
    spread: float
    threshold: float
    verdict: str


class Rule:
    """A comparison fixed before the run. ``decide(result)`` gives an ``Outcome``."""

    def describe(self) -> str:  # pragma: no cover - every rule overrides it
        raise NotImplementedError

    def decide(self, result: SeedResults) -> Outcome:  # pragma: no cover
        raise NotImplementedError


def _beyond(effect: float, threshold: float) -> str:
    """Held when the effect exceeds the threshold, contradicted when its reverse does, else inconclusive."""
    if effect > threshold:
        return HELD
    if -effect > threshold:
        return CONTRADICTED
    return INCONCLUSIVE


def _paired(result: SeedResults, metric: str, a: str, b: str) -> np.ndarray:
    return np.asarray(result.values(a, metric), float) - np.asarray(result.values(b, metric), float)


@dataclass(frozen=True)
class Better(Rule):
    """``treatment`` beats ``control`` on ``metric``.

    The effect is the mean over seeds of the paired difference (treatment minus control, signed
    so that positive is better); the spread is the standard deviation of those differences.
    Held when the effect exceeds ``k`` times the spread and ``floor``; contradicted when the
    reverse does; inconclusive otherwise.
    """

    metric: str
    treatment: str
    control: str
    higher_is_better: bool = True
    k: float = 2.0
    floor: float = 0.0

    def describe(self) -> str:
        word = "higher" if self.higher_is_better else "lower"
        floor = f" and by more than {format_number(self.floor)}" if self.floor else ""
        return (f"{self.metric}: {self.treatment} {word} than {self.control} by more than {format_number(self.k)}x the "
                f"seed-to-seed spread of the paired difference{floor}")

    def decide(self, result: SeedResults) -> Outcome:
        d = _paired(result, self.metric, self.treatment, self.control)
        if not self.higher_is_better:
            d = -d
        effect = float(np.mean(d))
        spread = float(np.std(d, ddof=1)) if len(d) > 1 else math.inf
        threshold = max(self.k * spread, self.floor)
        verdict = _beyond(effect, threshold) if np.all(np.isfinite(d)) else INCONCLUSIVE
        return Outcome(self.describe(), effect, spread, threshold, verdict)


@dataclass(frozen=True)
class _WithinMargin(Rule):
    """Two arms ``a`` and ``b`` compared on ``metric`` against a ``margin``, ``k`` spreads of noise included."""

    metric: str
    a: str
    b: str
    margin: float
    k: float = 2.0


@dataclass(frozen=True)
class Similar(_WithinMargin):
    """``a`` and ``b`` agree on ``metric`` within ``margin``.

    Held when |mean paired difference| plus ``k`` spreads stays within ``margin``; contradicted
    when it minus ``k`` spreads exceeds ``margin``; inconclusive otherwise.
    """

    def describe(self) -> str:
        return (f"{self.metric}: {self.a} within {format_number(self.margin)} of {self.b}, "
                f"{format_number(self.k)}x the seed-to-seed spread of the difference included")

    def decide(self, result: SeedResults) -> Outcome:
        d = _paired(result, self.metric, self.a, self.b)
        effect = float(np.mean(d))
        spread = float(np.std(d, ddof=1)) if len(d) > 1 else math.inf
        if not np.all(np.isfinite(d)):
            verdict = INCONCLUSIVE
        elif abs(effect) + self.k * spread <= self.margin:
            verdict = HELD
        elif abs(effect) - self.k * spread > self.margin:
            verdict = CONTRADICTED
        else:
            verdict = INCONCLUSIVE
        return Outcome(self.describe(), effect, spread, self.margin, verdict)


@dataclass(frozen=True)
class AtLeast(Rule):
    """``arm``'s ``metric`` is at least ``value`` (use ``AtMost`` for an upper bound).

    The effect is mean minus ``value``; held when it exceeds ``k`` standard deviations over
    seeds, contradicted when it is below minus ``k`` standard deviations, else inconclusive.
    """

    metric: str
    arm: str
    value: float
    k: float = 2.0
    _sign: float = field(default=1.0, repr=False)

    def describe(self) -> str:
        word = "at least" if self._sign > 0 else "at most"
        return (f"{self.metric} of {self.arm} {word} {format_number(self.value)}, "
                f"by more than {format_number(self.k)}x its seed-to-seed spread")

    def decide(self, result: SeedResults) -> Outcome:
        s = result.summary(self.arm, self.metric)
        effect = self._sign * (s.mean - self.value)
        spread = s.std
        threshold = self.k * spread
        verdict = _beyond(effect, threshold) if math.isfinite(effect) else INCONCLUSIVE
        return Outcome(self.describe(), effect, spread, threshold, verdict)


@dataclass(frozen=True)
class Differs(_WithinMargin):
    """``a`` and ``b`` differ on ``metric`` by more than ``margin`` (the mirror of ``Similar``).

    For claims that something *matters*: held when |mean paired difference| minus ``k`` spreads
    exceeds ``margin``; contradicted when |difference| plus ``k`` spreads stays within ``margin``
    (it does not matter, beyond the noise); inconclusive otherwise.
    """

    def describe(self) -> str:
        return (f"{self.metric}: {self.a} differs from {self.b} by more than {format_number(self.margin)}, "
                f"{format_number(self.k)}x the seed-to-seed spread of the difference included")

    def decide(self, result: SeedResults) -> Outcome:
        same = Similar(self.metric, self.a, self.b, self.margin, self.k).decide(result)
        flipped = {HELD: CONTRADICTED, CONTRADICTED: HELD}.get(same.verdict, same.verdict)
        return Outcome(self.describe(), same.effect, same.spread, same.threshold, flipped)


def AtMost(metric: str, arm: str, value: float, k: float = 2.0) -> AtLeast:  # noqa: N802 - reads as a rule
    """``arm``'s ``metric`` is at most ``value`` (the mirror of ``AtLeast``)."""
    return AtLeast(metric, arm, value, k, _sign=-1.0)


@dataclass(frozen=True)
class MustLearn:
    """Every trained arm learns: ``metric`` beyond ``chance + margin`` at every seed, no divergence.

    ``arms``: the arms that must learn (None: every arm). An arm whose failure to learn *is* the
    claim under test (e.g. batch norm trained on batches of one) may be left out, and the
    experiment says so in its claim text. ``chance``: the metric of a model that guesses (0.1 for
    accuracy over 10 balanced classes).
    """

    metric: str | tuple[str, ...]
    chance: float
    margin: float = 0.05
    arms: tuple[str, ...] | None = None

    def describe(self) -> str:
        who = "every arm" if self.arms is None else ", ".join(self.arms)
        what = self.metric if isinstance(self.metric, str) else " and ".join(self.metric)
        return (f"{who} must learn: {what} above chance ({format_number(self.chance)}) "
                f"+ {format_number(self.margin)} at every "
                f"seed, never diverged")

    def problems(self, result: SeedResults) -> list[str]:
        """Why the result cannot give a verdict (empty when every arm learned)."""
        out = []
        for arm in (self.arms if self.arms is not None else result.arms):
            for seed, m, art in zip(result.seeds, result.metrics[arm], result.artifacts[arm]):
                if art.get("diverged"):
                    out.append(f"arm {arm!r} diverged at seed {seed}")
                    continue
                for metric in ((self.metric,) if isinstance(self.metric, str) else self.metric):
                    v = m.get(metric, math.nan)
                    if not math.isfinite(v):
                        out.append(f"arm {arm!r} has {metric} = {v} at seed {seed}")
                    elif v <= self.chance + self.margin:
                        out.append(f"arm {arm!r} did not learn at seed {seed}: {metric} {format_number(v)} is within "
                                   f"{format_number(self.margin)} of chance ({format_number(self.chance)})")
        return out

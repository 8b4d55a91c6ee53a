"""Experiments over seeds and arms, with a decision rule fixed before the run.

An experiment is a ``trial(config, seed) -> {metric: number, ...}`` run for every arm (a named
config) and every seed. Rules, written before the run, compare the arms' per-seed metrics and
each gives ``held``, ``contradicted`` or ``inconclusive``; the experiment's verdict combines them.

    result = run_experiment(
        "faster-convergence",
        trial=train_and_measure,                      # (config, seed) -> {"steps_to_95": 150.0, ...}
        arms={"plain": {"bn": False}, "bn": {"bn": True}},
        rules=[Better("steps_to_95", "bn", "plain", higher_is_better=False, floor=10)],
    )
    result                 # an HTML table in JupyterLab, text elsewhere
    result.verdict         # "held" | "contradicted" | "inconclusive"

Seeds come from ``default_seeds()``: 3 in fast mode, 5 in the full run, all shifted by ``BNCOURSE_SEED``
(default 0), so a learner can rerun with other seeds and see whether a verdict survives.

What a trial returns besides numbers (curves, arrays) is kept as an artifact for plots:
``result.artifacts[arm][i]`` for the i-th seed. Every arm runs on the same seeds, one seed at a
time (arm after arm), so comparisons are paired by seed.

Guards, so that a verdict cannot rest on a broken comparison:

- ``must_learn=MustLearn("test_acc", chance=0.1, margin=0.05)``: every trained arm (or the arms it
  names) must score beyond chance plus the margin at every seed and never diverge (a trial that
  returns ``"diverged": True``, or a non-finite value of the metric). Otherwise the result is
  ``invalid`` with the reason, never a verdict.
- A trial that returns ``"censored": "<why>"`` (a learning-rate grid whose best value stayed at its
  edge after the search was extended, see ``common.tune_lr``) makes the verdict ``censored``.
- ``kind``: an *experiment* (trained or sampled over seeds, a rule with a spread) or, through
  ``demonstrate(...)``, a *demonstration* (algebra, an API fact, a count, a construction): one
  computation with a stated expectation, shown without a spread.
"""

from __future__ import annotations

import html
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bncourse.runtime import pick

HELD, CONTRADICTED, INCONCLUSIVE, UNTESTED = "held", "contradicted", "inconclusive", "untested"
INVALID, CENSORED = "invalid", "censored"
VERDICTS = (HELD, CONTRADICTED, INCONCLUSIVE, UNTESTED, INVALID, CENSORED)
EXPERIMENT, DEMONSTRATION = "experiment", "demonstration"
KINDS = (EXPERIMENT, DEMONSTRATION)
SEED_ENV = "BNCOURSE_SEED"
_COLOR = {HELD: "#1a7f37", CONTRADICTED: "#cf222e", INCONCLUSIVE: "#9a6700", UNTESTED: "#57606a",
          INVALID: "#8250df", CENSORED: "#bc4c00"}


def default_seeds(fast: int = 3, full: int = 5, grading: int | None = None) -> list[int]:
    """The seeds of one experiment: ``fast`` of them in fast mode, ``full`` otherwise.

    Shifted by ``$BNCOURSE_SEED`` (default 0): ``BNCOURSE_SEED=100`` gives 100, 101, ...
    """
    if fast < 3 or full < 5:
        raise ValueError(f"experiments run at least 3 seeds in fast mode and 5 in full (got fast={fast}, full={full})")
    raw = os.environ.get(SEED_ENV, "0").strip() or "0"
    try:
        base = int(raw)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be a whole number, got {raw!r}") from None
    n = pick(fast=fast, full=full) if grading is None else pick(fast=fast, full=full, grading=max(3, grading))
    return [base + i for i in range(n)]


# ---------------------------------------------------------------------------------------------
# Summaries
# ---------------------------------------------------------------------------------------------


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
        return f"{_fmt(self.mean)} ± {_fmt(self.std)} [{_fmt(self.min)}, {_fmt(self.max)}]"


def _fmt(x: float) -> str:
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


# ---------------------------------------------------------------------------------------------
# Decision rules
# ---------------------------------------------------------------------------------------------


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

    def decide(self, result: "ExperimentResult") -> Outcome:  # pragma: no cover
        raise NotImplementedError


def _beyond(effect: float, threshold: float) -> str:
    """Held when the effect exceeds the threshold, contradicted when its reverse does, else inconclusive."""
    if effect > threshold:
        return HELD
    if -effect > threshold:
        return CONTRADICTED
    return INCONCLUSIVE


def _paired(result: "ExperimentResult", metric: str, a: str, b: str) -> np.ndarray:
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
        floor = f" and by more than {_fmt(self.floor)}" if self.floor else ""
        return (f"{self.metric}: {self.treatment} {word} than {self.control} by more than {_fmt(self.k)}x the "
                f"seed-to-seed spread of the paired difference{floor}")

    def decide(self, result: "ExperimentResult") -> Outcome:
        d = _paired(result, self.metric, self.treatment, self.control)
        if not self.higher_is_better:
            d = -d
        effect = float(np.mean(d))
        spread = float(np.std(d, ddof=1)) if len(d) > 1 else math.inf
        threshold = max(self.k * spread, self.floor)
        verdict = _beyond(effect, threshold) if np.all(np.isfinite(d)) else INCONCLUSIVE
        return Outcome(self.describe(), effect, spread, threshold, verdict)


@dataclass(frozen=True)
class Similar(Rule):
    """``a`` and ``b`` agree on ``metric`` within ``margin``.

    Held when |mean paired difference| plus ``k`` spreads stays within ``margin``; contradicted
    when it minus ``k`` spreads exceeds ``margin``; inconclusive otherwise.
    """

    metric: str
    a: str
    b: str
    margin: float
    k: float = 2.0

    def describe(self) -> str:
        return (f"{self.metric}: {self.a} within {_fmt(self.margin)} of {self.b}, "
                f"{_fmt(self.k)}x the seed-to-seed spread of the difference included")

    def decide(self, result: "ExperimentResult") -> Outcome:
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
        return f"{self.metric} of {self.arm} {word} {_fmt(self.value)}, by more than {_fmt(self.k)}x its seed-to-seed spread"

    def decide(self, result: "ExperimentResult") -> Outcome:
        s = result.summary(self.arm, self.metric)
        effect = self._sign * (s.mean - self.value)
        spread = s.std
        threshold = self.k * spread
        verdict = _beyond(effect, threshold) if math.isfinite(effect) else INCONCLUSIVE
        return Outcome(self.describe(), effect, spread, threshold, verdict)


@dataclass(frozen=True)
class Differs(Rule):
    """``a`` and ``b`` differ on ``metric`` by more than ``margin`` (the mirror of ``Similar``).

    For claims that something *matters*: held when |mean paired difference| minus ``k`` spreads
    exceeds ``margin``; contradicted when |difference| plus ``k`` spreads stays within ``margin``
    (it does not matter, beyond the noise); inconclusive otherwise.
    """

    metric: str
    a: str
    b: str
    margin: float
    k: float = 2.0

    def describe(self) -> str:
        return (f"{self.metric}: {self.a} differs from {self.b} by more than {_fmt(self.margin)}, "
                f"{_fmt(self.k)}x the seed-to-seed spread of the difference included")

    def decide(self, result: "ExperimentResult") -> Outcome:
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
        return (f"{who} must learn: {what} above chance ({_fmt(self.chance)}) + {_fmt(self.margin)} at every "
                f"seed, never diverged")

    def problems(self, result: "ExperimentResult") -> list[str]:
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
                        out.append(f"arm {arm!r} did not learn at seed {seed}: {metric} {_fmt(v)} is within "
                                   f"{_fmt(self.margin)} of chance ({_fmt(self.chance)})")
        return out


def combine(verdicts: Sequence[str]) -> str:
    """A claim made of several comparisons: contradicted if any is, held if all are, else inconclusive."""
    if not verdicts:
        return UNTESTED
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if all(v == HELD for v in verdicts):
        return HELD
    return INCONCLUSIVE


# ---------------------------------------------------------------------------------------------
# Results
# ---------------------------------------------------------------------------------------------


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
            lines.append(f"  [{o.verdict}] {o.rule}: effect {_fmt(o.effect)}, spread {_fmt(o.spread)}, "
                         f"threshold {_fmt(o.threshold)}")
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
            + "".join(f"<td title='per seed: {e(', '.join(_fmt(v) for v in self.values(a, m)))}'>"
                      f"{e(str(self.summary(a, m)))}</td>" for m in names)
            + "</tr>"
            for a in self.arms
        )
        outs = "".join(
            f"<li><span style='color:{_COLOR[o.verdict]}'><b>{o.verdict}</b></span>: {e(o.rule)} "
            f"(effect {e(_fmt(o.effect))}, spread {e(_fmt(o.spread))}, threshold {e(_fmt(o.threshold))})</li>"
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


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


def run_experiment(
    name: str,
    trial: Callable[[Any, int], Mapping[str, Any]],
    arms: Mapping[str, Any],
    rules: Sequence[Rule],
    seeds: Sequence[int] | None = None,
    claim: str = "",
    progress: bool = True,
    must_learn: MustLearn | None = None,
    trained: bool = True,
) -> ExperimentResult:
    """Run ``trial(config, seed)`` for every seed and every arm, then apply ``rules``.

    Args:
        name: a short id, shown in the table and the progress bar.
        trial: returns a mapping of metric name to number (anything else is kept as an artifact).
        arms: arm name -> the config handed to ``trial``.
        rules: the decision rule, fixed before the run (at least one).
        seeds: default ``default_seeds()`` (3 in fast mode, 5 in full, shifted by ``$BNCOURSE_SEED``).
        claim: the claim under test, in words, shown with the result.
        progress: show a tqdm progress bar over the (seed, arm) trials.
        must_learn: the guard every trained arm must pass (``MustLearn``), else the result is ``invalid``.
        trained: False when the arms are not trained (then ``must_learn`` is not needed).
    """
    if not rules:
        raise ValueError(f"experiment {name!r} has no decision rule; write it before the run")
    if not arms:
        raise ValueError(f"experiment {name!r} has no arms")
    seed_list = list(seeds) if seeds is not None else default_seeds()
    arm_names = list(arms)
    metrics: dict[str, list[dict[str, float]]] = {a: [] for a in arm_names}
    artifacts: dict[str, list[dict[str, Any]]] = {a: [] for a in arm_names}
    start = time.perf_counter()
    bar = _progress_bar(len(seed_list) * len(arm_names), name) if progress else None
    try:
        for seed in seed_list:
            for arm in arm_names:
                if bar is not None:
                    bar.set_postfix_str(f"{arm}, seed {seed}", refresh=False)
                out = trial(arms[arm], seed)
                if not isinstance(out, Mapping):
                    raise TypeError(f"trial of {name!r} must return a dict of metrics, got {type(out).__name__}")
                nums = {k: float(v) for k, v in out.items() if _is_number(v)}
                metrics[arm].append(nums)
                artifacts[arm].append({k: v for k, v in out.items() if not _is_number(v)})
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return ExperimentResult(name, claim, arm_names, seed_list, metrics, artifacts, list(rules),
                            time.perf_counter() - start, must_learn=must_learn, trained=trained)


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, numbers.Real) or (isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "fiu")


def _progress_bar(total: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="trial", leave=False)

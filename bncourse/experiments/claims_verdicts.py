"""Deciding a claim: run the experiments behind it and turn their outcomes into one verdict.

``decide_claims(claims) -> [ClaimRow]``: for each ``Claim`` (``claims_catalogue``), its experiments
(``"module:function"``, imported by ``resolve`` when the claim is run, so an experiment module that
is not there only makes its claims ``untested``) run once each, their rules' outcomes combine into
the claim's verdict, a guard that failed makes it ``invalid`` or ``censored``, and the row keeps the
deciding comparison's effect and spread, each arm's measured value (mean, std over the S seeds),
and what the literature found (``agrees``: whether the course's verdict matches it).
"""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from bncourse.experiments.claims_catalogue import BOTH_KINDS, DEMONSTRATION_KIND, EXPERIMENT_KIND, Claim
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.rules import Outcome
from bncourse.experiments.verdicts import CONTRADICTED, DEMONSTRATION, EXPERIMENT, HELD, INVALID, UNTESTED, combine

PACKAGE = "bncourse.experiments"


def resolve(path: str) -> Callable[..., ExperimentResult]:
    """The experiment function for ``"module:function"`` (under ``bncourse.experiments``).

    Raises ``ImportError`` when the module is not there, ``AttributeError`` when the function is not.
    """
    module, _, func = path.partition(":")
    if not func:
        raise ValueError(f"an experiment path is 'module:function', got {path!r}")
    mod = importlib.import_module(f"{PACKAGE}.{module}")
    try:
        return getattr(mod, func)
    except AttributeError:
        raise AttributeError(f"{PACKAGE}.{module} has no experiment {func!r}") from None


@dataclass
class ClaimRow:
    """One claim's verdict: from its experiments' outcomes (plain data, JSON-ready via ``to_dict``)."""

    id: str
    claim: str
    sources: str
    notebook: str
    verdict: str
    effect: float | None  # the deciding comparison's effect (see ``rule``)
    spread: float | None  # its seed-to-seed spread
    seeds: int
    rule: str = ""  # the deciding comparison, as written before the run
    reason: str = ""  # why untested, or the experiments behind the verdict
    outcomes: list[Outcome] = field(default_factory=list)
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    kind: str = EXPERIMENT_KIND
    literature: str = ""
    literature_verdict: str = ""
    values: list[dict] = field(default_factory=list)  # each arm's measured value: metric, arm, mean, std, n (or a fact)
    guard: str = ""  # why the verdict is invalid or censored
    data: str = ""  # the data set, and why that one

    @property
    def agrees(self) -> str:
        """"yes" / "no" when the course's verdict and the literature's are both held or contradicted, else "-"."""
        decided = (HELD, CONTRADICTED)
        if self.verdict not in decided or self.literature_verdict not in decided:
            return "-"
        return "yes" if self.verdict == self.literature_verdict else "no"

    def to_dict(self) -> dict:
        clean = lambda v: None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v  # noqa: E731
        return {"id": self.id, "claim": self.claim, "sources": self.sources, "kind": self.kind, "verdict": self.verdict,
                "effect": clean(self.effect), "spread": clean(self.spread), "seeds": self.seeds,
                "notebook": self.notebook, "rule": self.rule, "reason": self.reason, "guard": self.guard,
                "literature": self.literature, "literature_verdict": self.literature_verdict, "agrees": self.agrees, "data": self.data,
                "values": [{k: clean(v) if isinstance(v, float) else v for k, v in d.items()} for d in self.values],
                "outcomes": [{"rule": o.rule, "verdict": o.verdict, "effect": clean(o.effect),
                              "spread": clean(o.spread), "threshold": clean(o.threshold)} for o in self.outcomes],
                "seconds": round(self.seconds, 2), "cpu_seconds": round(self.cpu_seconds, 2)}


def _outcomes_for(result: ExperimentResult, metrics: tuple[str, ...] | None) -> list[Outcome]:
    if metrics is None:
        return list(result.outcomes)
    return [o for r, o in zip(result.rules, result.outcomes) if getattr(r, "metric", None) in metrics]


def _deciding(outcomes: list[Outcome], verdict: str) -> Outcome | None:
    """The outcome that explains the verdict: the first that reverses, the first that is not held, else the first."""
    for want in (("contradicted",) if verdict == "contradicted" else ("inconclusive", "contradicted")):
        for o in outcomes:
            if o.verdict == want:
                return o
    return outcomes[0] if outcomes else None


def decide_claims(claims: Sequence[Claim], seeds=None, progress: bool = False,
                  on_result: Callable[[ClaimRow], None] | None = None) -> list[ClaimRow]:
    """One ``ClaimRow`` per claim, in the order of ``claims``, in this process.

    An experiment that decides several claims runs once. ``on_result`` is called with each row as
    soon as it is decided.
    """
    cache: dict[str, tuple[ExperimentResult, float, float]] = {}
    rows = []
    for claim in claims:
        row = _decide(claim, cache, seeds, progress)
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return rows


def _rule_arms(rule) -> tuple[str | None, list[str]]:
    """(metric, arms) a rule compares (a precondition: its inner rule's)."""
    inner = getattr(rule, "rule", None)
    if inner is not None:
        return _rule_arms(inner)
    metric = getattr(rule, "metric", None)
    arms = [getattr(rule, a) for a in ("treatment", "control", "a", "b", "arm", "plain", "bn", "noisy")
            if isinstance(getattr(rule, a, None), str)]
    return metric, arms


def _values(result, metrics: tuple[str, ...] | None) -> list[dict]:
    """Each arm's measured value behind the claim's rules (mean, std over seeds), or a demonstration's facts."""
    if result.kind == DEMONSTRATION:
        return [{"fact": k, "value": v if isinstance(v, (int, float, str)) else str(v)} for k, v in result.facts.items()]
    out, seen = [], set()
    for rule in result.rules:
        metric, arms = _rule_arms(rule)
        if metric is None or (metrics is not None and metric not in metrics):
            continue
        for arm in arms:
            if (metric, arm) in seen or arm not in result.arms:
                continue
            seen.add((metric, arm))
            s = result.summary(arm, metric)
            out.append({"metric": metric, "arm": arm, "mean": s.mean, "std": s.std, "n": len(s.values)})
    return out


def _decide(claim: Claim, cache: dict, seeds, progress: bool) -> ClaimRow:
    base = dict(id=claim.id, claim=claim.claim, sources=claim.sources, notebook=claim.notebook, kind=claim.kind,
                literature=claim.literature, literature_verdict=claim.literature_verdict, data=claim.data)
    if not claim.checks:
        return ClaimRow(**base, verdict=UNTESTED, effect=None, spread=None, seeds=0, reason=claim.untested)
    outcomes: list[Outcome] = []
    n_seeds, seconds, cpu, names, values, guards, kinds, bad = [], 0.0, 0.0, [], [], [], set(), []
    for check in claim.checks:
        if check.path not in cache:
            try:
                func = resolve(check.path)
            except (ImportError, AttributeError) as err:
                return ClaimRow(**base, verdict=UNTESTED, effect=None, spread=None, seeds=0,
                                reason=f"experiment {check.path} is not available here ({err})")
            t0, c0 = time.perf_counter(), time.process_time()
            try:
                result = func(seeds=seeds, progress=progress)
            except Exception as err:  # one broken experiment must not lose the others' verdicts
                import traceback

                where = traceback.extract_tb(err.__traceback__)[-1]
                return ClaimRow(**base, verdict=UNTESTED, effect=None, spread=None, seeds=0,
                                reason=f"experiment {check.path} failed: {type(err).__name__}: {err} "
                                       f"({where.filename.rsplit('/', 1)[-1]}:{where.lineno})",
                                seconds=time.perf_counter() - t0, cpu_seconds=time.process_time() - c0)
            cache[check.path] = (result, time.perf_counter() - t0, time.process_time() - c0)
            seconds += cache[check.path][1]
            cpu += cache[check.path][2]
        result = cache[check.path][0]
        kinds.add(result.kind)
        if result.kind == EXPERIMENT:
            if result.trained and result.must_learn is None:
                bad.append(f"{result.name} trains its arms but states no must_learn guard")
            if result.guard_note:
                bad.append(f"{result.name}: {result.guard_note}")
                guards.append(result.verdict)
            n_seeds.append(len(result.seeds))
        outcomes += _outcomes_for(result, check.metrics)
        values += _values(result, check.metrics)
        names.append(f"{result.name} ({check.path}, {result.kind})")
    declared = {EXPERIMENT_KIND: {EXPERIMENT}, DEMONSTRATION_KIND: {DEMONSTRATION},
                BOTH_KINDS: {EXPERIMENT, DEMONSTRATION}}[claim.kind]
    if kinds != declared:
        raise ValueError(f"claim {claim.id!r} declares kind {claim.kind!r} but its checks are {sorted(kinds)}")
    verdict = combine([o.verdict for o in outcomes])
    if guards:
        verdict = INVALID if INVALID in guards or any("no must_learn" in b for b in bad) else guards[0]
    elif bad:
        verdict = INVALID
    o = _deciding(outcomes, verdict) if claim.kind != DEMONSTRATION_KIND else None
    return ClaimRow(**base, verdict=verdict, effect=o.effect if o else None, spread=o.spread if o else None,
                    seeds=min(n_seeds) if n_seeds else 0, rule=o.rule if o else outcomes[0].rule if outcomes else "",
                    reason="; ".join(names), outcomes=outcomes, seconds=seconds, cpu_seconds=cpu, values=values,
                    guard="; ".join(bad))

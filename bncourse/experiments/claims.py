"""The claims the course puts to experiments: the table, and running it.

``CLAIMS`` is the course's list of every claim the five explainer texts make about batch norm
(ids stable; the course's own copy of the table), each with the explainers that make it, the
notebook section that teaches it, and the experiment that decides it: an import path
``"module:function"`` under ``bncourse.experiments`` (resolved when the claim is run, so an
experiment module that is not there yet only makes its claims unavailable), optionally restricted
to the rules on some metrics when one experiment decides several claims.

    from bncourse.experiments.claims import run_claims
    rows = run_claims(only=["scale-invariance"])     # [ClaimRow(...)], each with a verdict
    print(format_table(rows))

``bncourse claims [--fast] [--only ID ...] [--json]`` is this, on the command line.
"""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass, field
from typing import Callable

from bncourse.experiments.harness import UNTESTED, ExperimentResult, Outcome, _fmt, combine

PACKAGE = "bncourse.experiments"


@dataclass(frozen=True)
class Check:
    """One experiment behind a claim: ``"module:function"``, and which of its rules decide it.

    ``metrics``: only the rules on these metrics count for this claim (None: all of them).
    """

    path: str
    metrics: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    sources: str  # the explainers (000-004) that make it; in parentheses: implied
    notebook: str  # where the course teaches it
    checks: tuple[Check, ...] = ()
    untested: str = ""  # why no experiment answers it here (only when checks is empty)


NB5, NB6, NB7 = "5 Figure 1", "6 CNNs", "7 What batch norm really does"

CLAIMS: tuple[Claim, ...] = (
    Claim("ics-reduced", "batch norm reduces internal covariate shift: a layer's input distribution drifts less "
          "during training", "000 001 002 003 004", f"{NB7} §1; {NB5} (Figure 1 b, c)",
          (Check("optimization:internal_covariate_shift"),)),
    Claim("ics-is-why", "that reduction is why batch norm helps; each layer can learn more independently of the "
          "others", "000 002 003 (001)", f"{NB7} §2-3", (Check("optimization:noisy_batchnorm"),)),
    Claim("faster-convergence", "training reaches a given accuracy in fewer steps", "all", f"{NB7} §4; {NB5}",
          (Check("learning_rates:learning_rates", ("steps_to_target",)),)),
    Claim("higher-learning-rates", "larger learning rates can be used without divergence", "all", f"{NB7} §4; {NB5}",
          (Check("learning_rates:learning_rates", ("log10_largest_stable_lr",)),)),
    Claim("regularizes", "it regularizes: less overfitting, better generalization (smaller train-test gap)", "all",
          f"{NB7} §5", (Check("generalization:regularization"),)),
    Claim("noise-like-dropout", "an example's output depends on its batch-mates; this noise acts like dropout; batch "
          "norm is used with (or instead of) dropout", "000 001 002 003", f"{NB7} §5",
          (Check("generalization:batch_noise"), Check("generalization:regularization", ("gap",)))),
    Claim("init-insensitive", "training is less sensitive to the weight initialization", "000 001 002 003",
          f"{NB5} (initialization sweep)", (Check("sensitivity:init_sensitivity"),)),
    Claim("deeper-networks", "deeper networks become trainable", "001 003 004", f"{NB7} §6",
          (Check("depth:depth"),)),
    Claim("stable-gradients", "fewer exploding or vanishing gradients; training is more stable", "000 002 003 004",
          f"{NB7} §6", (Check("depth:gradient_stability"),)),
    Claim("scale-invariance", "a layer's output and gradients do not depend on the scale of its weights (Ioffe & "
          "Szegedy, section 3.3)", "004", f"{NB7} §7", (Check("invariance:scale_invariance"),)),
    Claim("hyperparameter-robust", "hyperparameter tuning becomes less sensitive", "004", f"{NB7} §4 (related)",
          (Check("sensitivity:hyperparameter_robustness"),)),
    Claim("output-mean0-std1", "the layer's outputs have mean 0 and standard deviation 1 (true of x_hat in training "
          "mode; gamma and beta can undo it)", "000 001 003", "2 Batch norm forward",
          (Check("layer:output_statistics"),)),
    Claim("bounded-activations", "no activation can be too high or too low after batch norm", "003",
          "2 Batch norm forward", (Check("layer:bounded_activations"),)),
    Claim("inference-consistent", "with moving averages, inference is deterministic and consistent with training",
          "000 001 002 003", f"{NB6} (train/eval lab)", (Check("layer:inference_consistency"),)),
    Claim("needs-batch-gt-1", "training mode needs more than one example per batch", "000",
          f"2 Batch norm forward; {NB6} (train/eval lab)", (Check("layer:batch_of_one"),)),
    Claim("small-batches-unstable", "small batches give poor estimates of the statistics and unstable training",
          "001", f"{NB6} (train/eval lab)", (Check("batches:small_batches"),)),
    Claim("overhead", "batch norm costs computation and extra parameters (in training; at inference it can be "
          "folded away)", "001", f"4 Batch norm in PyTorch; {NB6}", (Check("overhead:overhead"),)),
    Claim("sequences-hard", "batch norm is hard to apply to recurrent networks and sequence data", "001",
          f"{NB7} §8", (Check("misstatements:padding_in_sequences"),)),
    Claim("before-after-activation", "it is placed before the activation (some place it after) and this matters",
          "000 001 003 004", f"{NB6}", (Check("architecture:before_after_activation"),)),
    Claim("cnn-per-channel", "it is especially effective in CNNs, where it normalizes each channel over the batch "
          "and the spatial positions", "000 002 003", f"3 Batch norm backward (spatial); {NB6}",
          (Check("architecture:cnn_per_channel"),)),
    Claim("not-supervised", "misstatement: \"batch norm is a supervised learning method\" (its statistics never see "
          "a label)", "000 003", f"{NB7} §8", (Check("misstatements:shuffled_labels"),)),
    Claim("dropout-rate", "misstatement: batch norm \"reduces the dropout rate\" and so increases precision",
          "000 003", f"{NB7} §8", (Check("misstatements:dropout_rate"),)),
    Claim("standardized-is-normal", "misstatement: after standardization \"each data point has a normal "
          "distribution\" (standardizing changes location and scale, not shape)", "004", f"1 Why normalize?; {NB7} §8",
          (Check("misstatements:skew_survives_standardization"),)),
    Claim("nlp-standard", "batch norm is a standard tool in NLP and machine translation (layer norm is what "
          "transformers use)", "000 003", f"{NB7} §8",
          (Check("misstatements:transformer_norms"),)),
)

CLAIM_IDS = tuple(c.id for c in CLAIMS)


def get_claim(claim_id: str) -> Claim:
    for c in CLAIMS:
        if c.id == claim_id:
            return c
    raise KeyError(f"no claim {claim_id!r}; the ids are: {', '.join(CLAIM_IDS)}")


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


def available(claim: Claim) -> bool:
    """True when every experiment of ``claim`` can be imported here."""
    try:
        for check in claim.checks:
            resolve(check.path)
    except (ImportError, AttributeError):
        return False
    return True


# ---------------------------------------------------------------------------------------------
# Running
# ---------------------------------------------------------------------------------------------


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

    def to_dict(self) -> dict:
        clean = lambda v: None if v is None or (isinstance(v, float) and not math.isfinite(v)) else v  # noqa: E731
        return {"id": self.id, "claim": self.claim, "sources": self.sources, "verdict": self.verdict,
                "effect": clean(self.effect), "spread": clean(self.spread), "seeds": self.seeds,
                "notebook": self.notebook, "rule": self.rule, "reason": self.reason,
                "outcomes": [{"rule": o.rule, "verdict": o.verdict, "effect": clean(o.effect),
                              "spread": clean(o.spread), "threshold": clean(o.threshold)} for o in self.outcomes],
                "seconds": round(self.seconds, 2)}


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


def run_claims(only: list[str] | None = None, seeds=None, progress: bool = False,
               on_result: Callable[[ClaimRow], None] | None = None) -> list[ClaimRow]:
    """Run the experiments behind ``only`` (default: every claim) and decide each claim.

    An experiment that decides several claims runs once. A claim whose experiment module is not
    installed comes back ``untested`` with the import error as the reason. ``on_result`` is called
    with each row as soon as it is decided.
    """
    if only:
        unknown = [i for i in only if i not in CLAIM_IDS]
        if unknown:
            raise KeyError(f"unknown claim id(s) {', '.join(map(repr, unknown))}; the ids are: {', '.join(CLAIM_IDS)}")
    wanted = [c for c in CLAIMS if not only or c.id in only]
    cache: dict[str, tuple[ExperimentResult, float, float]] = {}
    rows = []
    for claim in wanted:
        row = _decide(claim, cache, seeds, progress)
        rows.append(row)
        if on_result is not None:
            on_result(row)
    return rows


def _decide(claim: Claim, cache: dict, seeds, progress: bool) -> ClaimRow:
    base = dict(id=claim.id, claim=claim.claim, sources=claim.sources, notebook=claim.notebook)
    if not claim.checks:
        return ClaimRow(**base, verdict=UNTESTED, effect=None, spread=None, seeds=0, reason=claim.untested)
    outcomes: list[Outcome] = []
    n_seeds, seconds, cpu, names = [], 0.0, 0.0, []
    for check in claim.checks:
        if check.path not in cache:
            try:
                func = resolve(check.path)
            except (ImportError, AttributeError) as err:
                return ClaimRow(**base, verdict=UNTESTED, effect=None, spread=None, seeds=0,
                                reason=f"experiment {check.path} is not available here ({err})")
            t0, c0 = time.perf_counter(), time.process_time()
            result = func(seeds=seeds, progress=progress)
            cache[check.path] = (result, time.perf_counter() - t0, time.process_time() - c0)
            seconds += cache[check.path][1]
            cpu += cache[check.path][2]
        result = cache[check.path][0]
        outcomes += _outcomes_for(result, check.metrics)
        n_seeds.append(len(result.seeds))
        names.append(f"{result.name} ({check.path})")
    verdict = combine([o.verdict for o in outcomes])
    o = _deciding(outcomes, verdict)
    return ClaimRow(**base, verdict=verdict, effect=o.effect if o else None, spread=o.spread if o else None,
                    seeds=min(n_seeds), rule=o.rule if o else "", reason="; ".join(names), outcomes=outcomes,
                    seconds=seconds, cpu_seconds=cpu)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _effect_text(row: ClaimRow) -> str:
    if row.effect is None:
        return "-"
    return f"{_fmt(row.effect)} ± {_fmt(row.spread)}" if row.spread is not None else _fmt(row.effect)


def format_table(rows: list[ClaimRow], width: int = 60) -> str:
    """The claims table as text: id, claim, sources, verdict, effect ± spread, seeds, notebook section."""
    import textwrap

    head = ("id", "claim", "sources", "verdict", "effect ± spread", "seeds", "notebook")
    body = [(r.id, r.claim, r.sources, r.verdict, _effect_text(r), str(r.seeds), r.notebook) for r in rows]
    wrapped = [[textwrap.wrap(cell, width) or [""] if i == 1 else textwrap.wrap(cell, 28) or [""]
                for i, cell in enumerate(line)] for line in body]
    widths = [max([len(head[i])] + [len(part) for w in wrapped for part in w[i]]) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths])]
    for w, r in zip(wrapped, rows):
        for k in range(max(len(c) for c in w)):
            lines.append(fmt([c[k] if k < len(c) else "" for c in w]))
        detail = r.rule if r.verdict != UNTESTED else f"untested: {r.reason}"
        if detail:
            for part in textwrap.wrap(f"deciding rule: {detail}", sum(widths[1:4]) + 4):
                lines.append(fmt(["", part]))
    counts = {v: sum(r.verdict == v for r in rows) for v in ("held", "contradicted", "inconclusive", "untested")}
    lines.append("")
    lines.append(", ".join(f"{n} {v}" for v, n in counts.items()) + f" ({len(rows)} claims)")
    return "\n".join(lines)

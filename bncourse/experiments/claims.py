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

``bncourse claims [--fast] [--only ID ...] [--json] [--record FILE]`` is this, on the command line.

Each claim declares its ``kind``: ``experiment`` (trained or sampled over seeds, decided by a rule
that weighs an effect against its seed-to-seed spread), ``demonstration`` (one computation: algebra,
an API fact, a count, a construction; shown without a spread) or both (``experiment +
demonstration``). Each names what the literature found (``literature``) and the verdict that finding
implies (``literature_verdict``); a row says whether the course agrees (``agrees``).
``claims_doc.render_markdown`` writes ``docs/claims.md`` from a recorded run.
"""

from __future__ import annotations

import importlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.rules import Outcome
from bncourse.experiments.seed_summary import _fmt
from bncourse.experiments.verdicts import (
    CONTRADICTED, DEMONSTRATION, EXPERIMENT, HELD, INVALID, UNTESTED, VERDICTS, combine)

PACKAGE = "bncourse.experiments"


@dataclass(frozen=True)
class Check:
    """One experiment behind a claim: ``"module:function"``, and which of its rules decide it.

    ``metrics``: only the rules on these metrics count for this claim (None: all of them).
    """

    path: str
    metrics: tuple[str, ...] | None = None


EXPERIMENT_KIND, DEMONSTRATION_KIND, BOTH_KINDS = "experiment", "demonstration", "experiment + demonstration"


@dataclass(frozen=True)
class Claim:
    id: str
    claim: str
    sources: str  # the explainers (000-004) that make it; in parentheses: implied
    notebook: str  # where the course teaches it (the lead may point a claim to a newer notebook here)
    checks: tuple[Check, ...] = ()
    untested: str = ""  # why no experiment answers it here (only when checks is empty)
    kind: str = EXPERIMENT_KIND  # experiment, demonstration or both: checked against the results' kinds
    literature: str = ""  # what the literature found, with the source
    literature_verdict: str = ""  # "held", "contradicted" or "mixed": the verdict the literature implies
    data: str = ""  # the data set the experiment uses, and why that one


NB5, NB6, NB7 = "5 Figure 1", "6 CNNs", "7 What batch norm really does"

CLAIMS: tuple[Claim, ...] = (
    Claim("ics-reduced", "batch norm reduces internal covariate shift: a layer's input distribution drifts less "
          "during training", "000 001 002 003 004", f"{NB7} §1; {NB5} (Figure 1 b, c)",
          (Check("optimization:internal_covariate_shift"),)),
    Claim("ics-is-why", "that reduction is why batch norm helps; each layer can learn more independently of the "
          "others", "000 002 003 (001)", f"{NB7} §2-3", (Check("ics_why:noisy_batchnorm_tuned"),)),
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
          f"11 Inside the network (per layer); {NB5} (initialization sweep)", (Check("inside:init_insensitive"),)),
    Claim("deeper-networks", "deeper networks become trainable", "001 003 004", f"{NB7} §6",
          (Check("depth:depth"),)),
    Claim("stable-gradients", "fewer exploding or vanishing gradients; training is more stable", "000 002 003 004",
          f"11 Inside the network (per layer); {NB7} §6", (Check("inside:stable_gradients"),)),
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

# What the literature found, per claim: (the finding with its source, the verdict it implies).
LITERATURE: dict[str, tuple[str, str]] = {
    "ics-reduced": ("Santurkar et al. 2018 (How does batch normalization help optimization?): measured as the change "
                    "of a layer's gradient when the layers below update, batch norm does not reduce internal covariate "
                    "shift; in their VGG and deep linear networks it was as large or larger with batch norm",
                    "contradicted"),
    "ics-is-why": ("Santurkar et al. 2018: batch norm followed by random noise that makes the layer inputs shift trains "
                   "about as fast as batch norm, so a steadier input distribution is not why it helps", "contradicted"),
    "faster-convergence": ("Ioffe & Szegedy 2015: Inception reached its accuracy in 14x fewer steps; Bjorck et al. 2018: "
                           "the speed-up comes through the larger learning rates batch norm allows", "held"),
    "higher-learning-rates": ("Bjorck et al. 2018 (Understanding batch normalization): batch norm allows much larger "
                              "learning rates without divergence, the main source of its benefit", "held"),
    "regularizes": ("Luo et al. 2019 (Towards understanding regularization in batch normalization): the noise of the "
                    "batch statistics regularizes; Bjorck et al. 2018: better generalization comes mostly through the "
                    "larger learning rates", "held"),
    "noise-like-dropout": ("Luo et al. 2019: batch norm's noise regularizes like dropout in some settings; Ioffe & "
                           "Szegedy 2015 reduced or removed dropout in batch-norm Inception", "held"),
    "init-insensitive": ("Ioffe & Szegedy 2015 claim it; Yang et al. 2019 (A mean field theory of batch "
                         "normalization): deep batch-norm networks have exploding gradients at initialization whatever "
                         "the weight scale, so insensitivity to the scale does not mean trainability", "mixed"),
    "deeper-networks": ("Yang et al. 2019: without skip connections, gradients explode with depth at initialization "
                        "in batch-norm networks, limiting the trainable depth; deep ResNets pair batch norm with skip "
                        "connections", "mixed"),
    "stable-gradients": ("Yang et al. 2019: batch norm itself causes gradient explosion at initialization in deep "
                         "networks; Santurkar et al. 2018: gradients are more predictive (smoother loss) during "
                         "training", "mixed"),
    "scale-invariance": ("Ioffe & Szegedy 2015, section 3.3: BN(aWu) = BN(Wu), and the gradient with respect to W "
                         "scales as 1/a (algebra)", "held"),
    "hyperparameter-robust": ("Bjorck et al. 2018 and Santurkar et al. 2018: a wider range of learning rates trains "
                              "well with batch norm", "held"),
    "output-mean0-std1": ("Ioffe & Szegedy 2015: x_hat has mean 0 and variance 1 over the batch; the layer's output "
                          "gamma * x_hat + beta is free to have any mean and scale", "contradicted"),
    "bounded-activations": ("no study claims a bound; Ioffe 2017 (batch renormalization): in eval mode the moving "
                            "averages can differ from the batch statistics, so activations are not held in a range",
                            "contradicted"),
    "inference-consistent": ("Ioffe 2017: with small or non-i.i.d. batches the moving averages differ from the batch "
                             "statistics used in training, and inference departs from training", "mixed"),
    "needs-batch-gt-1": ("Ioffe & Szegedy 2015: the statistics are over the mini-batch; Wu & He 2018: batch norm "
                         "degrades as the batch shrinks to 2 images per device", "held"),
    "small-batches-unstable": ("Wu & He 2018 (Group normalization): ResNet-50 error 23.6% at 32 images per GPU, 34.7% "
                               "at 2; group norm stays near 24%", "held"),
    "overhead": ("Ioffe & Szegedy 2015: two parameters per channel and the statistics in training; folding into the "
                 "preceding layer removes it at inference (standard practice)", "held"),
    "sequences-hard": ("Ba et al. 2016 (Layer normalization): batch norm is hard to apply to recurrent networks and "
                       "variable-length sequences; Cooijmans et al. 2016 made it work with per-time-step statistics",
                       "held"),
    "before-after-activation": ("Ioffe & Szegedy 2015 put it before the nonlinearity; later reports differ and no "
                                "study settles a general rule", "mixed"),
    "cnn-per-channel": ("Ioffe & Szegedy 2015, section 3.2: one mean and variance per feature map, over the batch and "
                        "the locations; its large gains were on CNNs (Inception)", "held"),
    "not-supervised": ("Ioffe & Szegedy 2015: the statistics are computed from the layer inputs only; no label "
                       "enters", "contradicted"),
    "dropout-rate": ("Ioffe & Szegedy 2015 *chose* to reduce or remove dropout with batch norm; the rate is a "
                     "hyperparameter the layer does not change", "contradicted"),
    "standardized-is-normal": ("standardization is an affine map: it keeps a distribution's shape (skewness, "
                               "kurtosis)", "contradicted"),
    "nlp-standard": ("Ba et al. 2016 and Vaswani et al. 2017 use layer norm; Shen et al. 2020 (PowerNorm) found batch "
                     "norm degrades transformers in NLP", "contradicted"),
}

# What kind of evidence decides each claim (see the module docstring).
KIND: dict[str, str] = {
    "output-mean0-std1": EXPERIMENT_KIND, "scale-invariance": DEMONSTRATION_KIND, "inference-consistent": BOTH_KINDS,
    "needs-batch-gt-1": BOTH_KINDS, "sequences-hard": BOTH_KINDS, "cnn-per-channel": BOTH_KINDS,
    "not-supervised": DEMONSTRATION_KIND, "dropout-rate": DEMONSTRATION_KIND, "nlp-standard": DEMONSTRATION_KIND,
    "standardized-is-normal": DEMONSTRATION_KIND,  # algebra: an affine map keeps a distribution's shape
}

# The checks that replaced a construction shown as an experiment (issue 22).
CHECKS: dict[str, tuple[Check, ...]] = {
    "noise-like-dropout": (Check("generalization:like_dropout"), Check("generalization:batch_noise")),
    "needs-batch-gt-1": (Check("layer:batch_of_one_api"), Check("layer:batch_of_one")),
    "sequences-hard": (Check("misstatements:padding_in_sequences"), Check("misstatements:trained_sequences")),
    "cnn-per-channel": (Check("architecture:per_channel_formula"), Check("architecture:cnn_per_channel")),
    "inference-consistent": (Check("layer:eval_determinism"), Check("layer:inference_consistency")),
}

# The data set behind each claim, and why that one (issue 22: MNIST-1D wherever the digits saturate).
DATA: dict[str, str] = {
    'ics-reduced': "scikit-learn's digits: a measurement of what one SGD step does to the layers' inputs and gradients at one shared rate, not an accuracy comparison, so saturation does not decide it",
    'ics-is-why': 'MNIST-1D: on the digits the deep MLP learns about equally well with and without batch norm (no benefit to explain); on MNIST-1D it stays far below saturation',
    'faster-convergence': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'higher-learning-rates': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'regularizes': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ), a 400-example training set so that it overfits",
    'noise-like-dropout': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'init-insensitive': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'deeper-networks': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'stable-gradients': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'scale-invariance': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ) (inputs to one layer)",
    'hyperparameter-robust': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'output-mean0-std1': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ) (a trained MLP's layer outputs)",
    'bounded-activations': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ) (a trained MLP, test inputs shifted)",
    'inference-consistent': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'needs-batch-gt-1': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ) as 8x8 images",
    'small-batches-unstable': "harder digits as 8x8 images with shifts (notebook 9's task)",
    'overhead': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ) (timing only)",
    'sequences-hard': 'generated sequences of variable length (a sequence task by construction)',
    'before-after-activation': "harder digits (scikit-learn's 8x8 digits with pixel noise: a good MLP near 85%, so arms can differ)",
    'cnn-per-channel': 'MNIST-1D: on 64 pixels a CNN and an MLP reach similar accuracies; MNIST-1D was made so that they differ',
    'not-supervised': 'harder digits (one batch; a demonstration)',
    'dropout-rate': 'random activations (a demonstration)',
    'standardized-is-normal': 'samples from an exponential and a normal distribution',
    'nlp-standard': 'none (a count of layers in nn.Transformer)',
}

CLAIMS = tuple(replace(c, kind=KIND.get(c.id, EXPERIMENT_KIND), literature=LITERATURE[c.id][0],
                       literature_verdict=LITERATURE[c.id][1], checks=CHECKS.get(c.id, c.checks), data=DATA[c.id])
               for c in CLAIMS)
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


def run_claims(only: list[str] | None = None, seeds=None, progress: bool = False,
               on_result: Callable[[ClaimRow], None] | None = None, workers: int = 1) -> list[ClaimRow]:
    """Run the experiments behind ``only`` (default: every claim) and decide each claim.

    An experiment that decides several claims runs once. A claim whose experiment module is not
    installed comes back ``untested`` with the import error as the reason. ``on_result`` is called
    with each row as soon as it is decided. ``workers`` > 1: the experiments run in that many
    processes, one torch thread each (``claims_workers``; the same verdicts and values as one).
    """
    if only:
        unknown = [i for i in only if i not in CLAIM_IDS]
        if unknown:
            raise KeyError(f"unknown claim id(s) {', '.join(map(repr, unknown))}; the ids are: {', '.join(CLAIM_IDS)}")
    wanted = [c for c in CLAIMS if not only or c.id in only]
    if workers > 1:
        from bncourse.experiments.claims_workers import jobs, run_in_workers

        if len(jobs(wanted)) > 1:
            return run_in_workers(wanted, seeds=seeds, workers=workers, progress=progress, on_result=on_result)
    cache: dict[str, tuple[ExperimentResult, float, float]] = {}
    rows = []
    for claim in wanted:
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


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _effect_text(row: ClaimRow) -> str:
    if row.effect is None or row.kind == DEMONSTRATION_KIND:
        return "-"
    return f"{_fmt(row.effect)} ± {_fmt(row.spread)}" if row.spread is not None else _fmt(row.effect)


def format_table(rows: list[ClaimRow], width: int = 60) -> str:
    """The claims table as text: id, claim, sources, verdict, effect ± spread, seeds, notebook section."""
    import textwrap

    head = ("id", "claim", "sources", "kind", "verdict", "effect ± spread", "seeds", "notebook")
    body = [(r.id, r.claim, r.sources, r.kind, r.verdict, _effect_text(r), str(r.seeds), r.notebook) for r in rows]
    wrapped = [[textwrap.wrap(cell, width) or [""] if i == 1 else textwrap.wrap(cell, 28) or [""]
                for i, cell in enumerate(line)] for line in body]
    widths = [max([len(head[i])] + [len(part) for w in wrapped for part in w[i]]) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths])]
    for w, r in zip(wrapped, rows):
        for k in range(max(len(c) for c in w)):
            lines.append(fmt([c[k] if k < len(c) else "" for c in w]))
        detail = r.rule if r.verdict != UNTESTED else f"untested: {r.reason}"
        if r.guard:
            detail = f"{r.guard}; {detail}"
        if detail:
            for part in textwrap.wrap(f"deciding rule: {detail}", sum(widths[1:4]) + 4):
                lines.append(fmt(["", part]))
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    lines.append("")
    lines.append(", ".join(f"{n} {v}" for v, n in counts.items()) + f" ({len(rows)} claims)")
    return "\n".join(lines)

"""Why batch norm helps optimization: internal covariate shift, noisy batch norm, smoothness.

The three experiments of Santurkar, Tsipras, Ilyas and Madry (2018), "How does batch normalization
help optimization?", on a CPU-sized problem: a deep ReLU MLP (He initialization) on scikit-learn's
digits, plain SGD, the same learning rate for every arm (each experiment measures what one SGD step
of a given size does, so the step size is the setting under comparison, not a knob to tune).

* ``internal_covariate_shift()`` (claim ``ics-reduced``): the input drift of each layer (how much
  its input's per-unit mean and std move between measurements, on a fixed probe batch), and
  Santurkar et al.'s measure: at regular steps of training, for every layer with layers below it,
  the gradient of its weights, then the same gradient (same batch) after the layers *below* it
  take this step's update; the relative change ``||g_after - g_before|| / ||g_before||`` and the
  cosine between the two, with and without batch norm.
* ``noisy_batchnorm()`` (claim ``ics-is-why``): batch norm followed by a random per-step,
  per-unit scale and shift, so that the next layer's input distribution moves at every step,
  more than without batch norm. If a steadier input distribution were why batch norm helps, the
  noise should take the benefit away.
* ``smoothness()``: along the gradient direction, at steps of 1/2, 1, 2 and 4 times the learning
  rate, how much the loss varies and how much the gradient changes, with and without batch norm.

Each returns a ``bncourse.experiments.harness.ExperimentResult`` whose decision rule is written
below, before any run. Sizes follow ``bncourse.runtime.pick`` (fast, full, grading).
"""


from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from bncourse.experiments.deep_mlp import DeepMLP, Setup, _digits, _fresh
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import Better, MustLearn, Outcome, Rule
from bncourse.experiments.seed_summary import format_number
from bncourse.experiments.step_measures import _input_stats, along_gradient, input_drift, layer_gradient_change
from bncourse.experiments.verdicts import CONTRADICTED, HELD, INCONCLUSIVE
from bncourse.runtime import pick


def _sizes(**over) -> dict:
    """Steps and measurement interval: fast (CI, ~seconds), full (a learner's run), grading."""
    steps = pick(fast=200, full=1500, grading=100)
    every = pick(fast=20, full=50, grading=20)
    return {"steps": steps, "every": every, **over}


def example_gradients(norm: str = "batch", seed: int = 0, steps: int = 50, lr: float = 0.1) -> list[dict]:
    """One measurement of ``layer_gradient_change``, after ``steps`` SGD steps of a fresh MLP.

    For a notebook to feed a learner's ``gradient_change``: one dict per layer 1 .. depth with
    ``g_before`` and ``g_after`` (numpy, (D_out, D_in)) and the reference's two numbers.
    """
    model, _, next_batch, sgd_steps = _fresh(norm, seed, lr)
    sgd_steps(steps)
    xb, yb = next_batch()
    return layer_gradient_change(model, xb, yb, lr)


def example_layer_inputs(norm: str = "batch", seed: int = 0, steps: int = 50, gap: int = 20,
                         lr: float = 0.1, probe: int = 256) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every hidden layer's output (the next layer's input) on a fixed probe batch, at two times.

    A fresh MLP trains ``steps`` SGD steps, then ``gap`` more. Returns one ``(h_before, h_after)``
    pair per hidden layer, numpy arrays of shape (probe, width), training mode (with noisy batch
    norm: the noise of that step). For a notebook to feed a learner's ``input_drift``.
    """
    import torch

    model, X, next_batch, sgd_steps = _fresh(norm, seed, lr)
    xp = X[torch.randperm(len(X), generator=torch.Generator().manual_seed(seed))[:probe]]

    def inputs():
        from torch.func import functional_call

        bufs = {k: v.clone() for k, v in model.named_buffers()}
        with torch.no_grad():
            _, hs = functional_call(model, {**dict(model.named_parameters()), **bufs}, (xp,), {"collect": True})
        return [h.double().numpy() for h in hs]

    sgd_steps(steps)
    next_batch()  # this step's noise
    before = inputs()
    sgd_steps(gap)
    next_batch()
    return list(zip(before, inputs()))




# ---------------------------------------------------------------------------------------------
# One training run
# ---------------------------------------------------------------------------------------------


def train_and_measure(setup: Setup, seed: int) -> dict:
    """Train the MLP of ``setup`` with plain SGD for ``setup.steps`` steps, measuring every ``setup.every``.

    Numbers (one per run): ``train_acc_auc`` (training-set accuracy, eval mode, averaged over the
    measurements: higher = learns sooner), ``loss_auc`` (the same for the training loss),
    ``final_train_loss``, ``test_acc`` (at the end), ``input_drift`` (see ``input_drift``),
    ``grad_change`` and ``grad_cosine`` (``layer_gradient_change``, averaged over layers and
    measurements), ``loss_range`` (max - min of the loss along the gradient), ``grad_shift`` (the
    largest gradient change along it) and ``beta`` (``along_gradient``, averaged over measurements).
    Artifacts: the curves behind each number.

    Runs are cached per (setup, seed) in this process (``clear_runs()`` empties the cache), so the
    three experiments share their plain and batch norm runs; each call returns a fresh copy.
    """
    out = _run(setup, int(seed))
    return {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in out.items()}


def clear_runs() -> None:
    """Forget the cached training runs of ``train_and_measure``."""
    _run.cache_clear()


@functools.lru_cache(maxsize=64)
def _run(setup: Setup, seed: int) -> dict:
    import torch
    import torch.nn.functional as F

    from bncourse.device import configure_cpu_threads, set_seed

    configure_cpu_threads()
    X, y, X_test, y_test = _digits()
    set_seed(seed)
    model = DeepMLP(X.shape[1], int(y.max()) + 1, setup)
    gen = torch.Generator().manual_seed(10_000 + seed)  # data order: the same for every arm
    noise_gen = torch.Generator().manual_seed(20_000 + seed)
    probe = X[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[: setup.probe]]

    def evaluate():
        model.eval()
        with torch.no_grad():
            logits = model(X)
            v = (float(F.cross_entropy(logits, y)), float((logits.argmax(1) == y).float().mean()))
        model.train()
        return v

    losses, accs, steps, stats, eval_stats, ics_rows, smooth_rows = [], [], [], [], [], [], []
    names = [k for k, _ in model.named_parameters()]
    params = list(model.parameters())
    model.train()
    for step in range(setup.steps + 1):
        idx = torch.randint(len(y), (setup.batch_size,), generator=gen)
        xb, yb = X[idx], y[idx]
        model.resample_noise(noise_gen)
        measure = step % setup.every == 0
        if measure:
            loss_v, acc_v = evaluate()
            losses.append(loss_v)
            accs.append(acc_v)
            steps.append(step)
            stats.append(_input_stats(model, probe))
            eval_stats.append(_input_stats(model, probe, eval_mode=True))
            smooth_rows.append(along_gradient(model, xb, yb, setup.lr))
        if step == setup.steps:
            break
        loss = F.cross_entropy(model(xb), yb)
        grads = torch.autograd.grad(loss, params)
        if measure:
            ics_rows.append(layer_gradient_change(model, xb, yb, setup.lr, grads=dict(zip(names, grads))))
        with torch.no_grad():
            for p, g in zip(params, grads):
                p -= setup.lr * g

    model.eval()
    with torch.no_grad():
        test_acc = float((model(X_test).argmax(1) == y_test).float().mean())
    rel = np.array([[r["relative_change"] for r in row] for row in ics_rows])  # (measurements, layers)
    cos = np.array([[r["cosine"] for r in row] for row in ics_rows])
    along = np.stack([r["losses"] for r in smooth_rows])  # (measurements, 5): c = 0, 1/2, 1, 2, 4
    shifts = np.stack([r["grad_change"] for r in smooth_rows])  # (measurements, 4)
    return {
        "train_acc_auc": float(np.mean(accs)), "loss_auc": float(np.mean(losses)), "final_train_loss": losses[-1],
        "test_acc": test_acc, "input_drift": input_drift(stats), "input_drift_eval": input_drift(eval_stats),
        "grad_change": float(rel.mean()), "grad_cosine": float(cos.mean()),
        "loss_range": float(np.mean(along[:, 1:].max(1) - along[:, 1:].min(1))),
        "grad_shift": float(np.mean(shifts.max(1))), "beta": float(np.mean([r["beta"] for r in smooth_rows])),
        # artifacts (curves), one row per measurement
        "steps": np.array(steps), "train_loss_curve": np.array(losses), "train_acc_curve": np.array(accs),
        "unit_stats": np.array([[st[-1][0][0], st[-1][1][0]] for st in stats]),  # last hidden layer, unit 0
        "grad_change_curve": rel, "grad_cosine_curve": cos, "losses_along": along, "grad_shift_curve": shifts,
    }


# ---------------------------------------------------------------------------------------------
# The three experiments
# ---------------------------------------------------------------------------------------------


def _showing(*metrics: str):
    """A trial that keeps only ``metrics`` as numbers (the table shows those) and every curve."""
    def trial(setup: Setup, seed: int) -> dict:
        out = train_and_measure(setup, seed)
        return {k: v for k, v in out.items() if k in metrics or not isinstance(v, float)}

    return trial


def internal_covariate_shift(seeds=None, progress: bool = True) -> ExperimentResult:
    """Claim ``ics-reduced``, measured the Santurkar et al. way: does batch norm make a layer's
    gradient change less when the layers below it take their update?

    Rule (fixed here, before the run): held if, with batch norm, the input drift measured in eval
    mode (the claim as the explainers word it: the layer inputs' distribution moves less; eval mode,
    because in training mode the probe batch normalizes itself and its per-unit mean and std are
    fixed by construction) is lower, AND the relative gradient change lower, AND the cosine higher
    (Santurkar et al.'s measure), each by more than twice the seed-to-seed spread of the paired
    difference; contradicted if any reverses by that much; inconclusive otherwise. The
    training-mode drift is shown, not decided on. Every arm must learn (test accuracy above 20%).
    """
    sizes = _sizes()
    arms = {"plain": Setup(norm="none", **sizes), "batch norm": Setup(norm="batch", **sizes)}
    rules = [
        Better("input_drift_eval", "batch norm", "plain", higher_is_better=False),
        Better("grad_change", "batch norm", "plain", higher_is_better=False),
        Better("grad_cosine", "batch norm", "plain", higher_is_better=True),
    ]
    return run_experiment(
        "ics-reduced", _showing("grad_change", "grad_cosine", "input_drift_eval", "input_drift", "test_acc"), arms,
        rules, seeds=seeds, must_learn=MustLearn("test_acc", chance=0.1, margin=0.1),
        claim="batch norm reduces internal covariate shift, measured as Santurkar et al. (2018) do: a layer's "
              "weight gradient changes less when the layers below it take their SGD step",
        progress=progress,
    )


@dataclass(frozen=True)
class Requires(Rule):
    """A precondition: ``rule``'s verdict when it holds, else inconclusive (never contradicted:
    a failed precondition means the experiment cannot speak to the claim, not that it is false)."""

    rule: Rule

    def describe(self) -> str:
        return f"precondition: {self.rule.describe()}"

    def decide(self, result: ExperimentResult) -> Outcome:
        o = self.rule.decide(result)
        return Outcome(self.describe(), o.effect, o.spread, o.threshold, HELD if o.verdict == HELD else INCONCLUSIVE)


@dataclass(frozen=True)
class NoiseKeepsBenefit(Rule):
    """The ``ics-is-why`` rule: how much of batch norm's benefit does noisy batch norm keep?

    Per seed, the fraction kept: ``(noisy - plain) / (bn - plain)`` on ``metric`` (1: all of it,
    0: none). The claim predicts the noise takes the benefit away: held if the fraction is below
    ``low`` by more than ``k`` spreads; contradicted if it is above ``high`` by more than ``k``
    spreads; inconclusive otherwise, and whenever a precondition fails: the noise makes the inputs
    drift more than without batch norm (``drift``), and batch norm beats plain on ``metric`` (there
    is a benefit to explain), each ``Better`` held.
    """

    metric: str = "train_acc_auc"
    higher_is_better: bool = True
    drift: str | None = "input_drift"  # None: no drift precondition (the noise's drift shown by construction)
    plain: str = "plain"
    bn: str = "batch norm"
    noisy: str = "noisy batch norm"
    low: float = 0.25
    high: float = 0.75
    k: float = 2.0
    floor: float = 0.0  # the benefit precondition: batch norm beats plain by more than this too

    def preconditions(self) -> list[Rule]:
        drift = [Better(self.drift, self.noisy, self.plain, True, self.k)] if self.drift else []
        return drift + [Better(self.metric, self.bn, self.plain, self.higher_is_better, self.k, self.floor)]

    def describe(self) -> str:
        return (f"fraction of {self.bn}'s {self.metric} benefit over {self.plain} that {self.noisy} keeps: "
                f"below {format_number(self.low)} (the claim held) "
                f"or above {format_number(self.high)} (the claim contradicted) "
                f"by more than {format_number(self.k)}x its seed-to-seed spread, when "
                f"{'both preconditions hold' if self.drift else 'the precondition holds'}")

    def decide(self, result: ExperimentResult) -> Outcome:
        pre = [r.decide(result) for r in self.preconditions()]
        p = np.asarray(result.values(self.plain, self.metric))
        b = np.asarray(result.values(self.bn, self.metric))
        n = np.asarray(result.values(self.noisy, self.metric))
        with np.errstate(all="ignore"):
            kept = (n - p) / (b - p)
        effect = float(np.mean(kept))
        spread = float(np.std(kept, ddof=1)) if len(kept) > 1 else math.inf
        if any(o.verdict != HELD for o in pre) or not np.all(np.isfinite(kept)):
            verdict = INCONCLUSIVE
        elif effect + self.k * spread < self.low:
            verdict = HELD
        elif effect - self.k * spread > self.high:
            verdict = CONTRADICTED
        else:
            verdict = INCONCLUSIVE
        return Outcome(self.describe(), effect, spread, self.k * spread, verdict)


def noisy_batchnorm(seeds=None, progress: bool = True) -> ExperimentResult:
    """Claim ``ics-is-why``: is a steadier layer-input distribution why batch norm helps?

    Santurkar et al.'s test: batch norm followed by a random scale ~ U(0.5, 1.5) and shift
    ~ U(-0.5, 0.5) per unit, drawn anew at every step ("noisy batch norm"), so each layer's input
    distribution moves more than without batch norm. Metric: training-set accuracy (eval mode)
    averaged over the run (higher = learns sooner). Rule (fixed here): ``NoiseKeepsBenefit`` with
    its two preconditions, shown with the result.
    """
    sizes = _sizes()
    arms = {"plain": Setup(norm="none", **sizes), "batch norm": Setup(norm="batch", **sizes),
            "noisy batch norm": Setup(norm="noisy", **sizes)}
    main = NoiseKeepsBenefit()
    rules = [Requires(r) for r in main.preconditions()] + [main]
    return run_experiment(
        "ics-is-why", _showing("train_acc_auc", "input_drift", "test_acc"), arms, rules, seeds=seeds,
        must_learn=MustLearn("test_acc", chance=0.1, margin=0.1),
        claim="a steadier input distribution is why batch norm helps: noise that makes the inputs shift "
              "again should take batch norm's benefit away",
        progress=progress,
    )


def smoothness(seeds=None, progress: bool = True) -> ExperimentResult:
    """Santurkar et al.'s explanation: batch norm makes the loss landscape smoother.

    At every measurement, on the current batch, the loss and the gradient at ``w - c * lr * g`` for
    c in (1/2, 1, 2, 4). Rule (fixed here): held if, with batch norm, the range of those losses
    (``loss_range``) AND the largest change of the gradient (``grad_shift``) are both lower by more
    than twice the seed-to-seed spread of the paired difference; contradicted if either reverses;
    inconclusive otherwise. ``beta`` (effective smoothness) is shown, not decided on.
    """
    sizes = _sizes()
    arms = {"plain": Setup(norm="none", **sizes), "batch norm": Setup(norm="batch", **sizes)}
    rules = [
        Better("loss_range", "batch norm", "plain", higher_is_better=False),
        Better("grad_shift", "batch norm", "plain", higher_is_better=False),
    ]
    return run_experiment(
        "smoothness", _showing("loss_range", "grad_shift", "beta", "test_acc"), arms, rules, seeds=seeds,
        must_learn=MustLearn("test_acc", chance=0.1, margin=0.1),
        claim="batch norm makes the loss landscape smoother: along the gradient, the loss and the gradient "
              "change less (Santurkar et al. 2018)",
        progress=progress,
    )

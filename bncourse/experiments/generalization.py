"""Does batch norm regularize, and is its batch noise like dropout?

``regularization()``: a small training set (a few hundred harder digits) and a wide ReLU MLP that
can memorize it; four arms: no normalization, batch norm, dropout (p=0.5), both. Each arm at its
own best learning rate (chosen on a validation split), and, in the same runs, at one shared rate.
Metrics: the train-test gap (eval-mode accuracies) and the test accuracy. Claim ``regularizes``:
batch norm shrinks the gap *and* raises test accuracy against no normalization, at own best rates.

``batch_noise()``: in training mode an example's output depends on the other examples of its
batch. For a trained batch-norm MLP we put each of a set of test examples into many random batches
of training examples and measure how much its predicted probabilities move (std over batches,
mean over examples and classes) and how often its predicted class changes, at batch sizes 8, 32
and 128; a dropout network's movement over dropout masks and a plain network's (zero) are the
reference. Claim ``noise-like-dropout`` (with ``regularization``'s gap rule): the output moves with
the batch-mates, and less so in larger batches.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from bncourse.experiments.common import harder_digits, mlp, trained_mlp, tune_lr
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import Better, MustLearn, Outcome, Rule
from bncourse.experiments.seed_summary import format_number
from bncourse.experiments.verdicts import CONTRADICTED, HELD, INCONCLUSIVE
from bncourse.runtime import pick

ARMS = {
    "none": dict(norm=None, dropout=0.0),
    "batch norm": dict(norm="batch", dropout=0.0),
    "dropout": dict(norm=None, dropout=0.5),
    "batch norm + dropout": dict(norm="batch", dropout=0.5),
}
SHARED_LR = 0.1  # the one rate every arm is also reported at (a member of the grid)


def _reg_sizes() -> dict:
    return dict(n_train=pick(fast=300, full=400),
                steps=pick(fast=200, full=1200, grading=100, cpu=600, what="steps per run (regularization experiment)"),
                hidden=pick(fast=128, full=256),
                lrs=pick(fast=(0.03, 0.1, 0.3), full=(0.003, 0.01, 0.03, 0.1, 0.3, 1.0), grading=(0.03, 0.1),
                         cpu=(0.01, 0.03, 0.1, 0.3, 1.0), what="learning rates tried (regularization experiment)"))


def regularization_trial(config: dict, seed: int) -> dict:
    s = _reg_sizes()
    task = harder_digits(seed, n_train=s["n_train"])
    build = lambda: mlp(task.num_features, task.num_classes, s["hidden"], 2, "relu",  # noqa: E731
                        norm=config["norm"], dropout=config["dropout"])
    tuning = tune_lr(build, task, s["lrs"], seed, steps=s["steps"], batch_size=32, momentum=0.9)
    best, fits = tuning
    shared = next(f for f in fits if f.lr == SHARED_LR)
    return {"gap": best.gap, "test_acc": best.test_acc, "train_acc": best.train_acc, "best_lr": best.lr,
            "gap_at_shared_lr": shared.gap, "test_acc_at_shared_lr": shared.test_acc,
            "censored": tuning.censored, "diverged": best.diverged}


_REG_CACHE: dict = {}


def _regularization_runs(seeds, progress) -> ExperimentResult:
    """``regularization()``'s runs, once per process and seed list (two claims read them)."""
    from bncourse.experiments.harness import default_seeds

    key = (tuple(seeds) if seeds is not None else tuple(default_seeds()), str(_reg_sizes()))
    if key not in _REG_CACHE:
        _REG_CACHE[key] = _regularization(list(key[0]), progress)
    return _REG_CACHE[key]


def regularization(seeds=None, progress: bool = True) -> ExperimentResult:
    """Train-test gap and test accuracy on a few hundred digits: none / BN / dropout / both."""
    return _regularization_runs(seeds, progress)


def _regularization(seeds, progress: bool) -> ExperimentResult:
    s = _reg_sizes()
    rules = [
        Better("gap", "batch norm", "none", higher_is_better=False, floor=0.01),
        Better("test_acc", "batch norm", "none", floor=0.01),
    ]
    return run_experiment(
        "regularization", regularization_trial, ARMS, rules, seeds=seeds, progress=progress,
        must_learn=MustLearn("test_acc", chance=0.1, margin=0.1),
        claim=(f"batch norm regularizes: a smaller train-test gap and a higher test accuracy than no "
               f"normalization ({s['n_train']} harder digits, ReLU MLP 2x{s['hidden']}, each arm at its own "
               f"best rate of {list(s['lrs'])} chosen on validation data; also reported at lr {SHARED_LR})"))


# ---------------------------------------------------------------------------------------------
# Batch noise
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def output_movement(model: torch.nn.Module, x: torch.Tensor, pool: torch.Tensor, batch_size: int,
                    draws: int, generator: torch.Generator) -> tuple[float, float]:
    """How much the outputs of examples ``x`` (E, D) move with their batch-mates, in training mode.

    Each example is placed, ``draws`` times, in a batch with ``batch_size - 1`` random rows of
    ``pool`` (N, D). Returns (mean over examples and classes of the std over draws of the softmax
    probabilities, fraction of examples whose predicted class is not the same in every draw).
    The model's running statistics are not changed (it is run on a copy).
    """
    m = copy.deepcopy(model).train()
    probs = []
    for _ in range(draws):
        mates = pool[torch.randint(0, len(pool), (len(x), batch_size - 1), generator=generator)]  # (E, B-1, D)
        batch = torch.cat([x[:, None], mates], 1).reshape(-1, x.shape[1])  # example i first in batch i
        out = m(batch).reshape(len(x), batch_size, -1)[:, 0]
        probs.append(out.softmax(1))
    p = torch.stack(probs)  # (draws, E, classes)
    flips = (p.argmax(2) != p.argmax(2)[0]).any(0).float().mean().item()
    return p.std(0).mean().item(), flips


@torch.no_grad()
def _dropout_movement(model, x, draws):
    m = copy.deepcopy(model).train()
    p = torch.stack([m(x).softmax(1) for _ in range(draws)])
    return p.std(0).mean().item(), (p.argmax(2) != p.argmax(2)[0]).any(0).float().mean().item()


NOISE_ARMS = {
    "no norm, batch 32": dict(kind="plain", batch=32),
    "batch norm, batch 8": dict(kind="bn", batch=8),
    "batch norm, batch 32": dict(kind="bn", batch=32),
    "batch norm, batch 128": dict(kind="bn", batch=128),
    "dropout 0.1, masks": dict(kind="dropout", batch=32),
}


def noise_trial(config: dict, seed: int) -> dict:
    examples, draws = pick(fast=100, full=300, grading=50), pick(fast=12, full=30, grading=8)
    kind = config["kind"]
    model, task = trained_mlp(seed, "batch" if kind == "bn" else None, 0.1 if kind == "dropout" else 0.0)
    x = task.X_test[:examples]
    g = torch.Generator().manual_seed(seed)
    if kind == "dropout":
        std, flips = _dropout_movement(model, x, draws)
    else:
        std, flips = output_movement(model, x, task.X_train, config["batch"], draws, g)
    return {"prob_std": std, "prediction_changes": flips}


def batch_noise(seeds=None, progress: bool = True) -> ExperimentResult:
    """How much an example's output moves with its batch-mates (training mode), by batch size."""
    rules = [Better("prob_std", "batch norm, batch 8", "batch norm, batch 128", floor=1e-3)]
    return run_experiment(
        "batch-noise", noise_trial, NOISE_ARMS, rules, seeds=seeds, progress=progress,
        trained=False,  # the networks are trained once (common.trained_mlp); the trials sample batches
        claim=("in training mode an example's output depends on its batch-mates (std over random batches of "
               "its predicted probabilities), and this noise shrinks with the batch size (batch 8 against 128); "
               "the plain network (deterministic: zero by construction) and a dropout network's movement over "
               "masks are shown for scale, not decided on"))


def like_dropout(seeds=None, progress: bool = True) -> ExperimentResult:
    """Claim ``noise-like-dropout``: batch norm's batch noise acts like dropout, and can stand in for it.

    The runs of ``regularization()`` (none / batch norm / dropout 0.5 / both, each at its own rate
    chosen on validation data) read with the claim's rules, fixed here before the run: (1) dropout
    shrinks the train-test gap against no normalization (the reference effect batch norm's noise is
    said to resemble); (2) batch norm shrinks it too, by more than 1 point; (3) "instead of dropout":
    batch norm's test accuracy is not lower than dropout's by more than 1 point, noise included
    (``Better(dropout over batch norm)`` must not hold). Each may come out either way.
    """
    base = regularization(seeds, progress)
    rules = [Better("gap", "dropout", "none", higher_is_better=False, floor=0.01),
             Better("gap", "batch norm", "none", higher_is_better=False, floor=0.01),
             NotWorse("test_acc", "batch norm", "dropout", margin=0.01)]
    return ExperimentResult("noise-like-dropout", "batch norm's batch noise acts like dropout: like dropout (0.5) it "
                            "shrinks the train-test gap, and it can replace dropout (test accuracy not lower)",
                            base.arms, base.seeds, base.metrics, base.artifacts, rules, base.seconds,
                            must_learn=base.must_learn)


@dataclass(frozen=True)
class NotWorse(Rule):
    """``a`` is not worse than ``b`` on ``metric`` by more than ``margin``: held when the paired
    difference a - b minus ``k`` spreads stays above -margin; contradicted when it plus ``k`` spreads
    is below -margin; inconclusive otherwise."""

    metric: str
    a: str
    b: str
    margin: float
    k: float = 2.0

    def describe(self) -> str:
        return (f"{self.metric}: {self.a} not lower than {self.b} by more than {format_number(self.margin)}, "
                f"{format_number(self.k)}x the seed-to-seed spread of the difference included")

    def decide(self, result: ExperimentResult) -> Outcome:
        d = np.asarray(result.values(self.a, self.metric)) - np.asarray(result.values(self.b, self.metric))
        effect = float(np.mean(d))
        spread = float(np.std(d, ddof=1)) if len(d) > 1 else float("inf")
        if not np.all(np.isfinite(d)):
            verdict = INCONCLUSIVE
        elif effect - self.k * spread >= -self.margin:
            verdict = HELD
        elif effect + self.k * spread < -self.margin:
            verdict = CONTRADICTED
        else:
            verdict = INCONCLUSIVE
        return Outcome(self.describe(), effect, spread, self.margin, verdict)

"""Learning rates, fairly: does batch norm allow larger ones, and does it train faster at its best?

A deep ReLU MLP (He initialization) on the harder digits (``common.harder_digits``), trained with
plain SGD at learning rates from 0.003 (0.01 in fast mode) to 3, with and without batch norm. Per arm and seed:

- ``log10_largest_stable_lr``: the largest rate at which training neither diverged nor stayed
  below 50% validation accuracy (log10, so one grid step is about 0.5);
- ``steps_to_target``: steps to reach ``TARGET`` test accuracy at the arm's *own* best rate (the
  rate that reached ``TARGET`` first on the *validation* split: the choice never sees the test
  split, which is read only at the chosen rate); a run that never gets there counts as the step budget plus one
  evaluation interval (a penalty, so the comparison stays defined);
- ``best_lr`` and ``best_test_acc``, for the table.

Claims: ``higher-learning-rates`` (the largest stable rate is higher with batch norm, by more than
one grid step) and ``faster-convergence`` (fewer steps to the target at each network's own best
rate, by more than one evaluation interval).
"""

from __future__ import annotations

import math

import numpy as np

from bncourse.experiments.common import harder_digits, mlp, tune_lr
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import Better, MustLearn
from bncourse.runtime import pick

TARGET = 0.75  # test accuracy on the harder digits (a good MLP ends near 85%)
LRS_FULL = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
LRS_FAST = (0.01, 0.1, 0.3, 1.0, 3.0)


def rates() -> tuple[float, ...]:
    """The learning-rate grid of this run (five rates in fast mode, seven in the full run)."""
    return pick(fast=LRS_FAST, full=LRS_FULL)


def _sizes() -> dict:
    return dict(steps=pick(fast=200, full=1000, grading=100, cpu=400, what="steps per run (learning-rate experiment)"),
                eval_every=pick(fast=20, full=25, grading=10),
                depth=pick(fast=6, full=8), hidden=pick(fast=64, full=128))


def lr_trial(config: dict, seed: int) -> dict:
    """One arm (``config["norm"]``: None or "batch") over the whole learning-rate grid, one seed."""
    s = _sizes()
    task = harder_digits(seed)
    build = lambda: mlp(task.num_features, task.num_classes, s["hidden"], s["depth"], "relu",  # noqa: E731
                        norm=config["norm"], init="he")
    tuning = tune_lr(build, task, rates(), seed, select="steps_to_target", steps=s["steps"], momentum=0.0,
                     eval_every=s["eval_every"], target=TARGET, batch_size=64, extend=1)
    best, fits = tuning
    stable = [f.lr for f in fits if not f.diverged and f.val_acc >= 0.5]
    penalty = s["steps"] + s["eval_every"]
    return {
        "log10_largest_stable_lr": math.log10(max(stable)) if stable else math.log10(rates()[0]) - 0.5,
        "steps_to_target": best.steps_to_target if not math.isnan(best.steps_to_target) else penalty,
        "best_lr": best.lr,
        "best_test_acc": best.test_acc,
        "curves": {f.lr: f.curve for f in fits},
        "final_test_acc": {f.lr: f.test_acc for f in fits},
        "diverged_at": {f.lr: f.diverged for f in fits},
        "censored": tuning.censored,
    }


def learning_rates(seeds=None, progress: bool = True) -> ExperimentResult:
    """Largest stable learning rate and steps to ``TARGET`` at each network's own best rate."""
    s = _sizes()
    rules = [
        Better("log10_largest_stable_lr", "batch norm", "no norm", floor=0.25),
        Better("steps_to_target", "batch norm", "no norm", higher_is_better=False, floor=s["eval_every"]),
    ]
    return run_experiment(
        "learning-rates", lr_trial, {"no norm": {"norm": None}, "batch norm": {"norm": "batch"}}, rules,
        seeds=seeds, progress=progress, must_learn=MustLearn("best_test_acc", chance=0.1, margin=0.1),
        claim=(f"batch norm allows larger learning rates and reaches {TARGET:.0%} test accuracy in fewer steps "
               f"(deep ReLU MLP, depth {s['depth']}, He init, plain SGD, rates {rates()[0]}..{rates()[-1]}, "
               f"{s['steps']} steps, harder digits)"))


def accuracy_table(result: ExperimentResult) -> dict[str, np.ndarray]:
    """arm -> (seeds, learning rates) array of final test accuracies, for a plot over ``rates()``."""
    return {a: np.array([[art["final_test_acc"][lr] for lr in rates()]
                         for art in result.artifacts[a]])
            for a in result.arms}

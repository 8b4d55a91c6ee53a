"""Sensitivity: to the initialization scale, and to hyperparameters in general.

``init_sensitivity()``: the paper's sigmoid MLP (3 x 100, ``models.BNPaperMLP``) on the harder
digits, initial weights N(0, s^2) for several s, with and without batch norm; at each scale each
network gets its own best learning rate (validation data), so what is measured is how much the
*reachable* accuracy depends on the initialization. Metric: the range (max - min) of the test
accuracy over the scales, and the worst accuracy. Claim ``init-insensitive``: the range is smaller
with batch norm, by more than 2 points.

``hyperparameter_robustness()``: the same random hyperparameter configurations (learning rate
log-uniform in [0.001, 3], momentum 0 or 0.9, batch 16 or 128, weight decay 0 or 1e-3) for a ReLU
MLP with and without batch norm: the share of configurations whose validation accuracy is within
5 points of the best of that arm. Claim ``hyperparameter-robust``: a larger share with batch norm,
by more than 0.1.
"""

from __future__ import annotations

import numpy as np
import torch

from bncourse.experiments.common import fit, harder_digits, mlp, tune_lr
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import Better, MustLearn
from bncourse.runtime import pick


def init_scales() -> list[float]:
    return pick(fast=[0.01, 0.1, 1.0, 3.0], full=[0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0],
                cpu=[0.01, 0.1, 0.3, 1.0, 3.0, 10.0], what="initialization scales (init-sensitivity)")


def init_trial(config: dict, seed: int) -> dict:
    from bncourse.models import BNPaperMLP

    task = harder_digits(seed)
    lrs = pick(fast=(0.3, 2.0), full=(0.03, 0.1, 0.3, 1.0, 3.0), cpu=(0.1, 0.3, 1.0, 3.0),
               what="learning rates tried (init-sensitivity)")
    steps = pick(fast=150, full=1000, cpu=500, what="steps per run (init-sensitivity)")
    accs, censored = {}, []
    for s in init_scales():
        build = lambda s=s: BNPaperMLP(task.num_features, task.num_classes, batch_norm=config["bn"], init_std=s)  # noqa: E731
        tuning = tune_lr(build, task, lrs, seed, steps=steps, batch_size=60, momentum=0.0, extend=1)
        accs[s] = tuning.best.test_acc
        if tuning.censored:
            censored.append(f"init {s:g}: {tuning.censored}")
    out = {f"test_acc_init_{s:g}": a for s, a in accs.items()}
    out.update(acc_range_over_inits=max(accs.values()) - min(accs.values()), worst_acc=min(accs.values()),
               best_acc=max(accs.values()), accuracy_by_init=accs, censored="; ".join(censored))
    return out


def init_sensitivity(seeds=None, progress: bool = True) -> ExperimentResult:
    """Range of test accuracy over initialization scales, with and without batch norm."""
    rules = [Better("acc_range_over_inits", "batch norm", "no norm", higher_is_better=False, floor=0.02)]
    return run_experiment(
        "init-sensitivity", init_trial, {"no norm": {"bn": False}, "batch norm": {"bn": True}}, rules,
        seeds=seeds, progress=progress, must_learn=MustLearn("best_acc", chance=0.1, margin=0.1),
        claim=(f"batch norm makes training less sensitive to the initialization: over init scales {init_scales()} "
               f"(the paper's sigmoid MLP, each scale at its own best rate, plain SGD, batch 60, harder digits) the "
               f"test accuracy varies less with batch norm"))


def _configs(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng([seed, 4242])
    return [dict(lr=float(10 ** rng.uniform(-3, np.log10(3))), momentum=float(rng.choice([0.0, 0.9])),
                 batch_size=int(rng.choice([16, 128])), weight_decay=float(rng.choice([0.0, 1e-3])))
            for _ in range(n)]


def hyper_trial(config: dict, seed: int) -> dict:
    task = harder_digits(seed)
    steps = pick(fast=150, full=800, cpu=400, what="steps per run (hyperparameter-robustness)")
    accs = []
    for c in _configs(pick(fast=6, full=20, cpu=10, what="random configurations (hyperparameter-robustness)"), seed):
        torch.manual_seed(seed)
        model = mlp(task.num_features, task.num_classes, 64, 4, "relu", norm=config["norm"])
        accs.append(fit(model, task, steps, seed=seed, **c).val_acc)
    accs = np.asarray(accs)
    return {"share_near_best": float(np.mean(accs >= accs.max() - 0.05)), "median_val_acc": float(np.median(accs)),
            "best_val_acc": float(accs.max())}


def hyperparameter_robustness(seeds=None, progress: bool = True) -> ExperimentResult:
    """Share of random hyperparameter configurations within 5 points of the best, with and without BN."""
    rules = [Better("share_near_best", "batch norm", "no norm", floor=0.1)]
    return run_experiment(
        "hyperparameter-robustness", hyper_trial, {"no norm": {"norm": None}, "batch norm": {"norm": "batch"}},
        rules, seeds=seeds, progress=progress, must_learn=MustLearn("best_val_acc", chance=0.1, margin=0.1),
        claim=("hyperparameter tuning is less sensitive with batch norm: of the same random configurations (lr, "
               "momentum, batch size, weight decay) a larger share comes within 5 points of the best (ReLU MLP 4x64, "
               "harder digits)"))

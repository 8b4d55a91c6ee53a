"""Claim ``ics-is-why``, decided where batch norm clearly helps: each arm at its own tuned rate, MNIST-1D.

Santurkar et al. (2018) asked whether a steadier layer-input distribution is *why* batch norm helps:
batch norm followed by a random per-unit scale and shift, drawn anew at every step ("noisy batch
norm"), makes each layer's input move at every step, more than without batch norm. If the steadier
distribution were the reason, the noise should take batch norm's benefit away.

The question needs a benefit to explain. On the 8x8 digits (``optimization.noisy_batchnorm``, notebook
7's same-learning-rate illustration) a deep MLP learns them nearly as well without batch norm, and the
small benefit there vanishes at another learning rate. Here:

- data: MNIST-1D (Greydanus & Kobak 2024; ``mnist1d_task``), where an MLP stays far from saturation;
- network: the optimization experiments' deep ReLU MLP (``deep_mlp.DeepMLP``: 6 hidden layers of 100,
  He init), plain, with batch norm before each ReLU, or with noisy batch norm (scale ~ U(0.5, 1.5),
  shift ~ U(-0.5, 0.5) per unit and step: on unit-variance activations each unit's input mean moves by
  up to half a standard deviation and its scale by up to a factor 3 from step to step, by construction;
  no noise in eval mode);
- each arm at its own learning rate, chosen on the validation split (``common.tune_lr``, the grid
  extended at its edge, censored if it stays there); SGD with momentum 0.9, batch 64;
- metric: test accuracy (eval mode) at the chosen rate.

Rule (fixed here, before the run): ``NoiseKeepsBenefit(metric="test_acc", drift=None, floor=0.02)``:
the precondition is that batch norm beats plain by more than 2 points and twice the seed-to-seed
spread of the paired difference; then the per-seed fraction of that benefit noisy batch norm keeps,
``(noisy - plain) / (batch norm - plain)``: below 0.25 by more than two spreads, the claim holds (the
noise took the benefit away); above 0.75, contradicted (Santurkar et al.'s finding); otherwise, or
when the precondition fails, inconclusive.
"""

from __future__ import annotations

import torch
from torch import nn

from bncourse.experiments.common import tune_lr
from bncourse.experiments.deep_mlp import DeepMLP, Setup
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.mnist1d_task import mnist1d
from bncourse.experiments.optimization import NoiseKeepsBenefit, Requires
from bncourse.experiments.rules import MustLearn
from bncourse.runtime import pick

ARMS = {"plain": {"norm": "none"}, "batch norm": {"norm": "batch"}, "noisy batch norm": {"norm": "noisy"}}


class _ResampledEachStep(nn.Module):
    """A ``DeepMLP`` whose noisy batch norms draw new noise at every training-mode forward (one per SGD
    step in ``common.fit``); eval mode has no noise. Shape: (N, 40) -> (N, 10)."""

    def __init__(self, model: nn.Module, seed: int):
        super().__init__()
        self.model = model
        self.generator = torch.Generator().manual_seed(20_000 + seed)

    def forward(self, x):
        if self.training:
            self.model.resample_noise(self.generator)
        return self.model(x)


def sizes() -> dict:
    """Steps per run and the learning rates tried first (fast, full, full on a CPU)."""
    return dict(steps=pick(fast=150, full=1500, cpu=800, what="steps per run (ics-is-why)"),
                lrs=pick(fast=(0.03, 0.1), full=(0.01, 0.03, 0.1, 0.3), cpu=(0.03, 0.1, 0.3),
                         what="learning rates tried (ics-is-why)"))


def tuned_trial(config: dict, seed: int) -> dict:
    """One arm at its own validation-chosen rate: test accuracy, the rate, and whether it is censored."""
    task = mnist1d(seed)
    s = sizes()
    build = lambda: _ResampledEachStep(  # noqa: E731
        DeepMLP(task.num_features, task.num_classes, Setup(norm=config["norm"], depth=6, width=100)), seed)
    tuning = tune_lr(build, task, s["lrs"], seed, steps=s["steps"], batch_size=64, momentum=0.9, extend=1)
    best = tuning.best
    return {"test_acc": best.test_acc, "val_acc": best.val_acc, "train_acc": best.train_acc, "best_lr": best.lr,
            "diverged": best.diverged, "censored": tuning.censored}


def noisy_batchnorm_tuned(seeds=None, progress: bool = True) -> ExperimentResult:
    """Claim ``ics-is-why`` on MNIST-1D, every arm at its own rate (see the module docstring)."""
    main = NoiseKeepsBenefit(metric="test_acc", drift=None, floor=0.02)
    rules = [Requires(r) for r in main.preconditions()] + [main]
    return run_experiment(
        "ics-is-why", tuned_trial, ARMS, rules, seeds=seeds, progress=progress,
        must_learn=MustLearn("test_acc", chance=0.1, margin=0.1),
        claim=("a steadier layer-input distribution is why batch norm helps: noise that makes every layer's "
               "input move at every step should take batch norm's benefit away (deep ReLU MLP 6x100 on "
               "MNIST-1D, each arm at its own learning rate chosen on validation data)"))

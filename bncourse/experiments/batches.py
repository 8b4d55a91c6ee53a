"""Small batches: does batch norm suffer from them more than a network without it?

With B examples per batch, batch norm's mean and variance are estimates from B values, noisier the
smaller B is, and training-mode outputs move with the batch-mates (``generalization.batch_noise``).
``small_batches()`` trains the same ReLU MLP with and without batch norm at batch sizes 4 and 64 for
the same number of steps, each (arm, batch size) at its own best learning rate (validation data),
on the harder digits, and measures the accuracy lost from batch 64 to batch 4 (eval mode, test set)
and how jumpy the training loss is at batch 4 (std of the step-to-step change over the last half).

Claim ``small-batches-unstable``: batch norm loses more accuracy from batch 64 to batch 4 than the
network without normalization, by more than 2 points.
"""

from __future__ import annotations

import numpy as np

from bncourse.experiments.common import harder_digits, mlp, tune_lr
from bncourse.experiments.harness import Better, ExperimentResult, run_experiment
from bncourse.runtime import pick

SMALL, LARGE = 4, 64


def small_batch_trial(config: dict, seed: int) -> dict:
    task = harder_digits(seed)
    steps, lrs = pick(fast=200, full=1500), pick(fast=(0.01, 0.03, 0.1), full=(0.003, 0.01, 0.03, 0.1, 0.3))
    build = lambda: mlp(task.num_features, task.num_classes, 64, 3, "relu", norm=config["norm"])  # noqa: E731
    out = {}
    for b in (SMALL, LARGE):
        best, _ = tune_lr(build, task, lrs, seed, steps=steps, batch_size=b, momentum=0.9, record_loss=True)
        out[f"test_acc_batch_{b}"] = best.test_acc
        if b == SMALL:
            tail = np.asarray(best.losses[len(best.losses) // 2:])
            out["loss_jumpiness_batch_4"] = float(np.std(np.diff(tail))) if len(tail) > 2 else 10.0
    out["drop_batch_64_to_4"] = out[f"test_acc_batch_{LARGE}"] - out[f"test_acc_batch_{SMALL}"]
    return out


def small_batches(seeds=None, progress: bool = True) -> ExperimentResult:
    """Accuracy lost from batch 64 to batch 4, with and without batch norm (same steps, own best rates)."""
    rules = [Better("drop_batch_64_to_4", "batch norm", "no norm", floor=0.02)]
    return run_experiment(
        "small-batches", small_batch_trial, {"no norm": {"norm": None}, "batch norm": {"norm": "batch"}}, rules,
        seeds=seeds, progress=progress,
        claim=("small batches give poor batch statistics and unstable training: from batch 64 to batch 4 (same "
               "number of steps, each at its own best learning rate) batch norm loses more test accuracy than the "
               "same network without normalization"))

"""Where batch norm goes: before or after the activation, and in CNNs per channel.

``before_after_activation()``: the same ReLU MLP with batch norm before each ReLU (the paper's
placement: Linear -> BN -> ReLU) and after it (Linear -> ReLU -> BN), and without batch norm for
scale, each at its own best learning rate (validation data), on the harder digits. Claim
``before-after-activation`` ("it is placed before the activation, some place it after, and this
matters"): held if the two placements' test accuracies differ by more than 1 point beyond the
noise; contradicted if they agree within 1 point, noise included.

``cnn_per_channel()``: two parts. (1) ``nn.BatchNorm2d`` normalizes each channel over the batch and
the H x W positions: its training-mode output against that formula written out (max difference).
(2) "especially effective in CNNs": the test-accuracy gain from batch norm in a small CNN against
the gain in an MLP, on the same harder digits with random shifts of up to one pixel (where
convolutions help), each network with and without batch norm at its own best learning rate.
Claim ``cnn-per-channel``: the formula matches (1e-5) and the gain is larger in the CNN by more
than 1 point.
"""

from __future__ import annotations

import torch
from torch import nn

from bncourse.experiments.common import harder_digits, mlp, tune_lr
from bncourse.experiments.harness import AtMost, Better, Differs, ExperimentResult, run_experiment
from bncourse.runtime import pick


def placement_trial(config: dict, seed: int) -> dict:
    task = harder_digits(seed)
    lrs, steps = pick(fast=(0.03, 0.1, 0.3), full=(0.01, 0.03, 0.1, 0.3, 1.0)), pick(fast=200, full=1200)
    build = lambda: mlp(task.num_features, task.num_classes, 64, 4, "relu", norm=config["norm"],  # noqa: E731
                        position=config.get("position", "before"))
    best, _ = tune_lr(build, task, lrs, seed, steps=steps, batch_size=64, momentum=0.9)
    return {"test_acc": best.test_acc, "best_lr": best.lr}


def before_after_activation(seeds=None, progress: bool = True) -> ExperimentResult:
    """Test accuracy with batch norm before against after the ReLU (own best rates)."""
    arms = {"no norm": {"norm": None}, "BN before ReLU": {"norm": "batch", "position": "before"},
            "BN after ReLU": {"norm": "batch", "position": "after"}}
    rules = [Differs("test_acc", "BN before ReLU", "BN after ReLU", margin=0.01)]
    return run_experiment(
        "before-after-activation", placement_trial, arms, rules, seeds=seeds, progress=progress,
        claim=("whether batch norm goes before or after the activation matters: the two placements' test "
               "accuracies differ by more than 1 point (ReLU MLP 4x64, each at its own best rate, harder digits)"))


def _per_channel_error(seed: int) -> float:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(16, 6, 5, 7, generator=g, dtype=torch.float64) * 3 + 1
    bn = nn.BatchNorm2d(6).double().train()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
        bn.bias.uniform_(-1, 1)
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        var = x.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        manual = (x - mean) / torch.sqrt(var + bn.eps) * bn.weight[None, :, None, None] + bn.bias[None, :, None, None]
        return (bn(x) - manual).abs().max().item()


def per_channel_trial(config: dict, seed: int) -> dict:
    from bncourse.models import SmallCNN

    task = harder_digits(seed, max_shift=1)
    lrs, steps = pick(fast=(0.05, 0.2), full=(0.01, 0.03, 0.1, 0.3)), pick(fast=200, full=800)
    if config["net"] == "cnn":
        task = task.images()
        builds = {n: (lambda n=n: SmallCNN(1, 10, widths=(8, 16, 32), norm=n)) for n in ("none", "batch")}
    else:
        builds = {n: (lambda n=n: mlp(task.num_features, task.num_classes, 96, 3, "relu",
                                      norm=None if n == "none" else "batch")) for n in ("none", "batch")}
    acc = {n: tune_lr(b, task, lrs, seed, steps=steps, batch_size=64, momentum=0.9)[0].test_acc
           for n, b in builds.items()}
    return {"test_acc_without_bn": acc["none"], "test_acc_with_bn": acc["batch"],
            "bn_gain": acc["batch"] - acc["none"], "formula_max_abs_diff": _per_channel_error(seed)}


def cnn_per_channel(seeds=None, progress: bool = True) -> ExperimentResult:
    """BatchNorm2d's per-channel statistics, and batch norm's gain in a CNN against an MLP."""
    arms = {"MLP": {"net": "mlp"}, "CNN": {"net": "cnn"}}
    rules = [AtMost("formula_max_abs_diff", "CNN", 1e-5), Better("bn_gain", "CNN", "MLP", floor=0.01)]
    return run_experiment(
        "cnn-per-channel", per_channel_trial, arms, rules, seeds=seeds, progress=progress,
        claim=("BatchNorm2d normalizes each channel over the batch and the H x W positions (checked against the "
               "formula), and batch norm helps a CNN more than an MLP (test-accuracy gain, each at its own best "
               "rate, harder digits with shifts)"))

"""Where batch norm goes: before or after the activation, and in CNNs per channel.

``before_after_activation()``: the same ReLU MLP with batch norm before each ReLU (the paper's
placement: Linear -> BN -> ReLU) and after it (Linear -> ReLU -> BN), and without batch norm for
scale, each at its own best learning rate (validation data), on the harder digits. Claim
``before-after-activation`` ("it is placed before the activation, some place it after, and this
matters"): held if the two placements' test accuracies differ by more than 1 point beyond the
noise; contradicted if they agree within 1 point, noise included.

``per_channel_formula()`` (a demonstration): ``nn.BatchNorm2d`` normalizes each channel over the
batch and the H x W positions: its training-mode output against that formula written out.
``cnn_per_channel()`` (an experiment): "especially effective in CNNs": the test-accuracy gain from
batch norm in a small 1D CNN against the gain in an MLP on MNIST-1D (``mnist1d_task``: made so that
CNNs and MLPs differ; on the 8x8 digits both saturate near each other), every network
He-initialized (at PyTorch's default init a deep CNN without normalization can stay at chance) and
each with and without batch norm at its own learning rate chosen on validation data. Claim ``cnn-per-channel``: the formula
matches, and the gain is larger in the CNN by more than 1 point; every arm must learn.
"""

from __future__ import annotations

import torch
from torch import nn

from bncourse.experiments.common import harder_digits, mlp, tune_lr
from bncourse.experiments.demonstration import Demonstration, demonstrate
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import Better, Differs, MustLearn
from bncourse.runtime import pick


def placement_trial(config: dict, seed: int) -> dict:
    task = harder_digits(seed)
    lrs = pick(fast=(0.03, 0.1, 0.3), full=(0.01, 0.03, 0.1, 0.3, 1.0), cpu=(0.03, 0.1, 0.3, 1.0),
               what="learning rates tried (before-after-activation)")
    steps = pick(fast=120, full=1200, cpu=600, what="steps per run (before-after-activation)")
    build = lambda: mlp(task.num_features, task.num_classes, 64, 4, "relu", norm=config["norm"],  # noqa: E731
                        position=config.get("position", "before"))
    tuning = tune_lr(build, task, lrs, seed, steps=steps, batch_size=64, momentum=0.9)
    return {"test_acc": tuning.best.test_acc, "best_lr": tuning.best.lr, "censored": tuning.censored,
            "diverged": tuning.best.diverged}


def before_after_activation(seeds=None, progress: bool = True) -> ExperimentResult:
    """Test accuracy with batch norm before against after the ReLU (own best rates)."""
    arms = {"no norm": {"norm": None}, "BN before ReLU": {"norm": "batch", "position": "before"},
            "BN after ReLU": {"norm": "batch", "position": "after"}}
    rules = [Differs("test_acc", "BN before ReLU", "BN after ReLU", margin=0.01)]
    return run_experiment(
        "before-after-activation", placement_trial, arms, rules, seeds=seeds, progress=progress,
        must_learn=MustLearn("test_acc", chance=0.1, margin=0.1),
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


def per_channel_formula(seeds=None, progress: bool = True) -> Demonstration:
    """A demonstration: ``nn.BatchNorm2d`` in training mode equals the per-channel formula written out.

    Statistics over (N, H, W) for each channel C, biased variance, then gamma * x_hat + beta; the
    largest absolute difference on a float64 batch (16, 6, 5, 7) with random gamma and beta.
    """
    return demonstrate(
        "per-channel-formula", claim="BatchNorm2d normalizes each channel over the batch and the H x W positions",
        compute=lambda: {"max |BatchNorm2d - per-channel formula| (float64)": _per_channel_error(0)},
        claim_holds=lambda f: next(iter(f.values())) <= 1e-10,
        expectation="BatchNorm2d's training-mode output equals the per-channel formula to 1e-10 (float64)")


def per_channel_trial(config: dict, seed: int) -> dict:
    from bncourse.experiments.mnist1d_task import cnn1d, mnist1d, signals

    task = mnist1d(seed)
    lrs = pick(fast=(0.03, 0.1), full=(0.003, 0.01, 0.03, 0.1, 0.3), cpu=(0.01, 0.03, 0.1),
               what="learning rates tried (cnn-per-channel)")
    steps = pick(fast=100, full=2000, cpu=500, what="steps per run (cnn-per-channel)")
    if config["net"] == "cnn":
        task = signals(task)
        builds = {n: (lambda n=n: cnn1d(n)) for n in ("none", "batch")}
    else:
        builds = {n: (lambda n=n: mlp(task.num_features, task.num_classes, 100, 2, "relu",
                                      norm=None if n == "none" else "batch")) for n in ("none", "batch")}
    tuned = {n: tune_lr(b, task, lrs, seed, steps=steps, batch_size=100, momentum=0.9, extend=pick(fast=1, full=2))
             for n, b in builds.items()}
    acc = {n: t.best.test_acc for n, t in tuned.items()}
    return {"test_acc_without_bn": acc["none"], "test_acc_with_bn": acc["batch"],
            "bn_gain": acc["batch"] - acc["none"], "lr_without_bn": tuned["none"].best.lr,
            "lr_with_bn": tuned["batch"].best.lr,
            "censored": "; ".join(f"{n}: {t.censored}" for n, t in tuned.items() if t.censored),
            "diverged": any(t.best.diverged for t in tuned.values())}


def cnn_per_channel(seeds=None, progress: bool = True) -> ExperimentResult:
    """Batch norm's gain in a CNN against its gain in an MLP (every network He-initialized, own tuned rate)."""
    arms = {"MLP": {"net": "mlp"}, "CNN": {"net": "cnn"}}
    rules = [Better("bn_gain", "CNN", "MLP", floor=0.01)]
    return run_experiment(
        "cnn-per-channel", per_channel_trial, arms, rules, seeds=seeds, progress=progress,
        must_learn=MustLearn(("test_acc_without_bn", "test_acc_with_bn"), chance=0.1, margin=0.1),
        claim=("batch norm is especially effective in CNNs: its test-accuracy gain is larger in a 1D CNN (3 conv "
               "layers, BatchNorm1d per channel over the batch and the positions) than in an MLP (2 x 100), every "
               "network with He initialization and each at its own learning rate chosen on validation data "
               "(MNIST-1D, where CNNs and MLPs differ)"))

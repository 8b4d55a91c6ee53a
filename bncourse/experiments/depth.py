"""Depth: does batch norm make deeper networks trainable, and does it keep gradients stable?

``depth()``: sigmoid MLPs (initialization N(0, 1/fan_in)) and ReLU MLPs (He initialization) of
several depths, with and without batch norm before each activation, on the harder digits; every
(network, depth) at its own best learning rate from a small grid (chosen on validation data), SGD
with momentum 0.9. Claim ``deeper-networks``: at the deepest depth, batch norm's test accuracy is
higher than the same network's without it, for sigmoid *and* for ReLU.

``gradient_stability()``: the deepest of those networks, trained for a few hundred steps at one
learning rate per arm (its best from ``depth()``'s grid is not needed: the measurement is about
the gradients): how unequal the gradients are across layers, |log10(||grad W_first|| /
||grad W_last||)| averaged over the steps (0 = every layer gets gradients of the same size;
2 = a factor of 100 between the first and the last layer: vanishing or exploding), and how much
the total gradient norm jumps from step to step (std of log10 of the norm). Claim
``stable-gradients``: both smaller with batch norm, for sigmoid and for ReLU.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bncourse.experiments.common import accuracy, harder_digits, mlp, tune_lr
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import Better, MustLearn
from bncourse.runtime import pick

ARMS = {
    "sigmoid": dict(act="sigmoid", norm=None),
    "sigmoid + BN": dict(act="sigmoid", norm="batch"),
    "ReLU": dict(act="relu", norm=None),
    "ReLU + BN": dict(act="relu", norm="batch"),
}


def depths() -> list[int]:
    """The depths (hidden layers) of this run."""
    return pick(fast=[3, 15], full=[3, 6, 9, 12, 15, 20], grading=[3, 10], cpu=[3, 20],
                what="depths (depth experiment)")


def _init(act: str) -> str:
    return "he" if act == "relu" else "xavier"


def depth_trial(config: dict, seed: int) -> dict:
    task = harder_digits(seed)
    steps = pick(fast=120, full=800, grading=80, cpu=400, what="steps per run (depth experiment)")
    lrs = pick(fast=(0.03, 0.3), full=(0.01, 0.03, 0.1, 0.3, 1.0), cpu=(0.03, 0.1, 0.3),
               what="learning rates tried (depth experiment)")
    out: dict = {}
    accs, censored = {}, []
    for d in depths():
        build = lambda: mlp(task.num_features, task.num_classes, 48, d, config["act"],  # noqa: E731
                            norm=config["norm"], init=_init(config["act"]))
        tuning = tune_lr(build, task, lrs, seed, steps=steps, batch_size=64, momentum=0.9, extend=2)
        accs[d] = tuning.best.test_acc
        out[f"test_acc_depth_{d}"] = tuning.best.test_acc
        if tuning.censored:
            censored.append(f"depth {d}: {tuning.censored}")
    out["censored"] = "; ".join(censored)
    deepest = max(accs)
    out["test_acc_shallowest"] = accs[min(accs)]
    out["test_acc_deepest"] = accs[deepest]
    out["drop_shallowest_to_deepest"] = accs[min(accs)] - accs[deepest]
    out["accuracy_by_depth"] = accs
    return out


def depth(seeds=None, progress: bool = True) -> ExperimentResult:
    """Test accuracy against depth, sigmoid and ReLU MLPs, with and without batch norm."""
    rules = [
        Better("test_acc_deepest", "sigmoid + BN", "sigmoid", floor=0.02),
        Better("test_acc_deepest", "ReLU + BN", "ReLU", floor=0.02),
    ]
    return run_experiment(
        "depth", depth_trial, ARMS, rules, seeds=seeds, progress=progress,
        # every arm must learn at the shallowest depth; at the deepest, failing to learn is what the claim predicts
        must_learn=MustLearn("test_acc_shallowest", chance=0.1, margin=0.1),
        claim=(f"batch norm makes deeper networks trainable: at depth {max(depths())} (hidden layers of 48) a "
               f"higher test accuracy with batch norm, for sigmoid and for ReLU MLPs (depths {depths()}, each at "
               f"its own best learning rate, harder digits)"))


# ---------------------------------------------------------------------------------------------
# Gradients
# ---------------------------------------------------------------------------------------------


def gradient_trial(config: dict, seed: int) -> dict:
    task = harder_digits(seed)
    d, steps = max(depths()), pick(fast=100, full=500)
    torch.manual_seed(seed)
    model = mlp(task.num_features, task.num_classes, 48, d, config["act"], norm=config["norm"],
                init=_init(config["act"]))
    linears = [m for m in model if isinstance(m, nn.Linear)]
    opt = torch.optim.SGD(model.parameters(), lr=config.get("lr", 0.1), momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    ratios, norms = [], []
    for _ in range(steps):
        idx = torch.randint(0, len(task.y_train), (64,), generator=g)
        loss = F.cross_entropy(model(task.X_train[idx]), task.y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        first, last = linears[0].weight.grad.norm().item(), linears[-2].weight.grad.norm().item()
        total = math.sqrt(sum(p.grad.pow(2).sum().item() for p in model.parameters() if p.grad is not None))
        if not (math.isfinite(total) and first > 0 and last > 0):
            ratios.append(10.0)  # a NaN/inf or dead gradient: counted as a factor of 10^10
            norms.append(10.0)
            break
        ratios.append(abs(math.log10(first / last)))
        norms.append(math.log10(total))
        opt.step()
    return {"log10_first_last_ratio": float(np.mean(ratios)), "log10_ratio_at_init": ratios[0],
            "test_acc": accuracy(model, task.X_test, task.y_test) if len(norms) == steps else 0.0,
            "grad_norm_jumpiness": float(np.std(np.diff(norms))) if len(norms) > 2 else 10.0}


def gradient_stability(seeds=None, progress: bool = True) -> ExperimentResult:
    """Gradient size across layers and over steps in the deepest MLPs, with and without batch norm."""
    rules = [
        Better("log10_first_last_ratio", "sigmoid + BN", "sigmoid", higher_is_better=False, floor=0.1),
        Better("log10_first_last_ratio", "ReLU + BN", "ReLU", higher_is_better=False, floor=0.1),
        Better("grad_norm_jumpiness", "sigmoid + BN", "sigmoid", higher_is_better=False, floor=0.01),
        Better("grad_norm_jumpiness", "ReLU + BN", "ReLU", higher_is_better=False, floor=0.01),
    ]
    return run_experiment(
        "stable-gradients", gradient_trial, ARMS, rules, seeds=seeds, progress=progress,
        # the batch-norm arms must learn; a plain deep network that does not is what the claim predicts
        must_learn=MustLearn("test_acc", chance=0.1, margin=0.1, arms=("sigmoid + BN", "ReLU + BN")),
        claim=(f"batch norm prevents vanishing and exploding gradients: in MLPs of depth {max(depths())}, the "
               f"gradients of the first and last hidden layers are closer in size, and the gradient norm jumps "
               f"less from step to step (SGD, lr 0.1, momentum 0.9)"))

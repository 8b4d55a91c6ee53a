"""What the batch-norm layer itself computes, measured on a trained network.

All four use a ReLU MLP with batch norm trained on the harder digits (``common.trained_mlp``),
except ``batch_of_one``, which also trains a small CNN.

- ``output_statistics()`` (``output-mean0-std1``): per unit, the mean and standard deviation over a
  batch of x_hat (training mode), of the layer's output gamma * x_hat + beta (training mode), and
  of the output in eval mode on the test set. The claim is about the layer's *output*.
- ``bounded_activations()`` (``bounded-activations``): the largest |normalized value| a unit takes.
  In training mode it cannot exceed sqrt(B - 1) (B examples in the batch); in eval mode, with the
  running statistics, nothing bounds it: measured on the test set and on noisier test inputs.
- ``inference_consistency()`` (``inference-consistent``): in eval mode an example's output does not
  depend on its batch-mates, and eval-mode accuracy against training-mode accuracy on batches of 64.
- ``batch_of_one()`` (``needs-batch-gt-1``): training mode with one example: ``BatchNorm1d`` raises;
  ``BatchNorm2d`` runs (it averages over H x W too) but normalizes each image by itself, so its
  accuracy in training mode with batches of one is compared with eval mode.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from bncourse.experiments.common import accuracy, fit, harder_digits, trained_mlp
from bncourse.experiments.generalization import output_movement
from bncourse.experiments.harness import AtLeast, AtMost, ExperimentResult, Similar, run_experiment
from bncourse.runtime import pick


def _bn_inputs(model: nn.Module, x: torch.Tensor, train: bool) -> list[tuple[nn.BatchNorm1d, torch.Tensor, torch.Tensor]]:
    """For each BatchNorm1d: (layer, its input (N, D), its output (N, D)) on batch ``x``; no state changes."""
    m = copy.deepcopy(model).train(train)
    seen = []
    hooks = [b.register_forward_hook(lambda mod, i, o: seen.append((mod, i[0].detach(), o.detach())))
             for b in m.modules() if isinstance(b, nn.BatchNorm1d)]
    with torch.no_grad():
        m(x)
    for h in hooks:
        h.remove()
    return seen


def _deviation(z: torch.Tensor) -> tuple[float, float]:
    """(mean over units of |mean over the batch|, mean over units of |std over the batch - 1|), z: (N, D)."""
    return z.mean(0).abs().mean().item(), (z.std(0, unbiased=False) - 1).abs().mean().item()


def statistics_trial(config: dict, seed: int) -> dict:
    model, task = trained_mlp(seed)
    what = config["what"]
    if what == "eval output":
        layers = _bn_inputs(model, task.X_test, train=False)
        z = torch.cat([o for _, _, o in layers], 1)
    else:
        idx = torch.randperm(len(task.y_train), generator=torch.Generator().manual_seed(seed))[:256]
        layers = _bn_inputs(model, task.X_train[idx], train=True)
        if what == "x_hat":
            z = torch.cat([(i - i.mean(0)) / torch.sqrt(i.var(0, unbiased=False) + b.eps) for b, i, _ in layers], 1)
        else:
            z = torch.cat([o for _, _, o in layers], 1)
    mean_dev, std_dev = _deviation(z)
    gammas = torch.cat([b.weight.detach() for b, _, _ in layers])
    return {"unit_mean_deviation": mean_dev, "unit_std_deviation": std_dev,
            "gamma_deviation_from_1": (gammas - 1).abs().mean().item()}


def output_statistics(seeds=None, progress: bool = True) -> ExperimentResult:
    """Per-unit mean and std of x_hat and of the layer's output, after training."""
    arms = {"x_hat, training mode": {"what": "x_hat"}, "output, training mode": {"what": "train output"},
            "output, eval mode (test set)": {"what": "eval output"}}
    rules = [AtMost("unit_mean_deviation", "output, training mode", 0.1),
             AtMost("unit_std_deviation", "output, training mode", 0.1)]
    return run_experiment(
        "output-statistics", statistics_trial, arms, rules, seeds=seeds, progress=progress,
        claim=("a batch-norm layer's outputs have mean 0 and standard deviation 1: per unit, |mean| and |std - 1| "
               "of gamma * x_hat + beta over a training batch of 256 within 0.1, after training (x_hat and the "
               "eval-mode output shown too)"))


# ---------------------------------------------------------------------------------------------
# Bounds
# ---------------------------------------------------------------------------------------------


BATCH = 64


def bounds_trial(config: dict, seed: int) -> dict:
    model, task = trained_mlp(seed)
    if config["mode"] == "train":
        idx = torch.randperm(len(task.y_train), generator=torch.Generator().manual_seed(seed))[:BATCH]
        layers = _bn_inputs(model, task.X_train[idx], train=True)
        z = torch.cat([(i - i.mean(0)) / torch.sqrt(i.var(0, unbiased=False) + b.eps) for b, i, _ in layers], 1)
    else:
        x = task.X_test
        if config["mode"] == "eval, noisier":
            g = torch.Generator().manual_seed(seed)
            x = x + 1.0 * torch.randn(x.shape, generator=g)  # more pixel noise than in training
        layers = _bn_inputs(model, x, train=False)
        z = torch.cat([(i - b.running_mean) / torch.sqrt(b.running_var + b.eps) for b, i, _ in layers], 1)
    return {"max_abs_normalized": z.abs().max().item(), "share_beyond_4": (z.abs() > 4).float().mean().item()}


def bounded_activations(seeds=None, progress: bool = True) -> ExperimentResult:
    """The largest |normalized value| in training mode (bounded by sqrt(B-1)) and in eval mode."""
    bound = math.sqrt(BATCH - 1)
    arms = {f"training mode, batch {BATCH}": {"mode": "train"}, "eval mode, test set": {"mode": "eval"},
            "eval mode, noisier test inputs": {"mode": "eval, noisier"}}
    rules = [AtMost("max_abs_normalized", f"training mode, batch {BATCH}", bound),
             AtMost("max_abs_normalized", "eval mode, test set", bound),
             AtMost("max_abs_normalized", "eval mode, noisier test inputs", bound)]
    return run_experiment(
        "bounded-activations", bounds_trial, arms, rules, seeds=seeds, progress=progress,
        claim=(f"no activation can be too high or too low after batch norm: every normalized value stays within "
               f"sqrt(B-1) = {bound:.2f} (the training-mode bound for B = {BATCH}) in training and in eval mode, "
               f"also on test inputs with more noise (std 1 added) than in training"))


# ---------------------------------------------------------------------------------------------
# Inference
# ---------------------------------------------------------------------------------------------


def inference_trial(config: dict, seed: int) -> dict:
    model, task = trained_mlp(seed)
    g = torch.Generator().manual_seed(seed)
    x = task.X_test[:pick(fast=100, full=300)]
    if config["mode"] == "eval":
        m = copy.deepcopy(model).eval()
        with torch.no_grad():
            p = torch.stack([m(torch.cat([x, task.X_train[torch.randint(0, len(task.y_train), (63,), generator=g)]]))[:len(x)]
                             .softmax(1) for _ in range(5)])
        return {"prob_std_over_batchmates": p.std(0).mean().item(), "test_acc": accuracy(model, task.X_test, task.y_test)}
    std, _ = output_movement(model, x, task.X_train, 64, 5, g)
    m = copy.deepcopy(model).train()
    order = torch.randperm(len(task.y_test), generator=g)
    hits = 0
    with torch.no_grad():
        for s in range(0, len(order), 64):
            idx = order[s:s + 64]
            hits += (m(task.X_test[idx]).argmax(1) == task.y_test[idx]).sum().item()
    return {"prob_std_over_batchmates": std, "test_acc": hits / len(order)}


def inference_consistency(seeds=None, progress: bool = True) -> ExperimentResult:
    """Eval mode: batch-mates do not matter, and accuracy matches training mode's on batches of 64."""
    arms = {"eval mode": {"mode": "eval"}, "training mode, batches of 64": {"mode": "train"}}
    rules = [AtMost("prob_std_over_batchmates", "eval mode", 1e-6),
             Similar("test_acc", "eval mode", "training mode, batches of 64", margin=0.02)]
    return run_experiment(
        "inference-consistency", inference_trial, arms, rules, seeds=seeds, progress=progress,
        claim=("with moving averages, inference is deterministic (an example's eval-mode output does not move with "
               "its batch-mates) and consistent with training (eval-mode test accuracy within 2 points of "
               "training-mode accuracy on batches of 64)"))


# ---------------------------------------------------------------------------------------------
# A batch of one
# ---------------------------------------------------------------------------------------------


def _raises_on_one(layer: nn.Module, shape: tuple[int, ...]) -> float:
    try:
        layer.train()(torch.randn(1, *shape))
    except ValueError:
        return 1.0
    return 0.0


def batch_of_one_trial(config: dict, seed: int) -> dict:
    n = pick(fast=150, full=500)
    if config["kind"] == "mlp":
        model, task = trained_mlp(seed)
        x, y = task.X_test[:n], task.y_test[:n]
        raises = _raises_on_one(nn.BatchNorm1d(8), (8,))
        eval_acc = accuracy(model, x, y)
        # training mode cannot run at all; counted as chance (10 classes) so the drop is defined
        return {"raises": raises, "eval_acc": eval_acc, "train_mode_acc_batch_of_one": math.nan,
                "acc_drop_batch_of_one": eval_acc - 0.1}
    from bncourse.models import SmallCNN

    task = harder_digits(seed).images()
    torch.manual_seed(seed)
    model = SmallCNN(1, 10, widths=(8, 16, 32), norm="batch")
    fit(model, task, pick(fast=150, full=600), lr=0.05, batch_size=64, seed=seed)
    x, y = task.X_test[:n], task.y_test[:n]
    eval_acc = accuracy(model, x, y)
    m = copy.deepcopy(model).train()
    with torch.no_grad():
        one = sum((m(x[i:i + 1]).argmax(1) == y[i:i + 1]).item() for i in range(n)) / n
    return {"raises": _raises_on_one(nn.BatchNorm2d(8), (8, 4, 4)), "eval_acc": eval_acc,
            "train_mode_acc_batch_of_one": one, "acc_drop_batch_of_one": eval_acc - one}


def batch_of_one(seeds=None, progress: bool = True) -> ExperimentResult:
    """Training mode with one example: BatchNorm1d raises; BatchNorm2d runs and loses accuracy."""
    arms = {"MLP, BatchNorm1d": {"kind": "mlp"}, "CNN, BatchNorm2d": {"kind": "cnn"}}
    rules = [AtLeast("raises", "MLP, BatchNorm1d", 0.5),
             AtLeast("acc_drop_batch_of_one", "CNN, BatchNorm2d", 0.05)]
    return run_experiment(
        "batch-of-one", batch_of_one_trial, arms, rules, seeds=seeds, progress=progress,
        claim=("training mode needs more than one example per batch: BatchNorm1d refuses a batch of one, and a "
               "BatchNorm2d CNN (which runs, averaging over H x W) loses more than 5 points of accuracy in "
               "training mode with batches of one against eval mode"))

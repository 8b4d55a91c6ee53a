"""What the batch-norm layer itself computes, measured on a trained network.

All four use a ReLU MLP with batch norm trained on the harder digits (``common.trained_mlp``),
except ``batch_of_one``, which also trains a small CNN.

- ``output_statistics()`` (``output-mean0-std1``): per unit, the mean and standard deviation over a
  batch of x_hat (training mode), of the layer's output gamma * x_hat + beta (training mode), and
  of the output in eval mode on the test set. The claim is about the layer's *output*.
- ``bounded_activations()`` (``bounded-activations``): the largest |normalized value| a unit takes.
  In training mode it cannot exceed sqrt(B - 1) (B examples in the batch: shown, true by
  construction); in eval mode, with the running statistics, nothing bounds it: measured on the
  test set and on shifted test inputs (Gaussian noise of std 2 added; inputs times 3), which is
  where "no activation can be too high" would matter.
- ``eval_determinism()`` (a demonstration, ``inference-consistent``): in eval mode an example's output
  does not depend on its batch-mates (the running averages replace the batch statistics: true by
  construction, so one computation, no spread).
- ``inference_consistency()`` (``inference-consistent``, an experiment): eval-mode test accuracy
  against training-mode accuracy on batches of 64 (this could come out either way).
- ``batch_of_one_api()`` (a demonstration): ``BatchNorm1d`` in training mode refuses a batch of one;
  ``BatchNorm2d`` runs (it averages over H x W too).
- ``batch_of_one()`` (``needs-batch-gt-1``, trained): a small CNN trained with batches of one, with
  and without batch norm, and with batch norm on batches of 32 (same steps), each at its own
  learning rate chosen on validation data; eval-mode test accuracy.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from bncourse.experiments.common import accuracy, harder_digits, he_init, trained_mlp, tune_lr
from bncourse.experiments.demonstration import Demonstration, demonstrate
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.generalization import output_movement
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import AtMost, Better, MustLearn, Similar
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
        "output-statistics", statistics_trial, arms, rules, seeds=seeds, progress=progress, trained=False,
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
            x = x + 2.0 * torch.randn(x.shape, generator=g)  # noise of std 2 (standardized units) added
        elif config["mode"] == "eval, scaled":
            x = 3.0 * x  # inputs three times larger than in training
        layers = _bn_inputs(model, x, train=False)
        z = torch.cat([(i - b.running_mean) / torch.sqrt(b.running_var + b.eps) for b, i, _ in layers], 1)
    return {"max_abs_normalized": z.abs().max().item(), "share_beyond_4": (z.abs() > 4).float().mean().item()}


def bounded_activations(seeds=None, progress: bool = True) -> ExperimentResult:
    """The largest |normalized value| in training mode (bounded by sqrt(B-1)) and in eval mode."""
    bound = math.sqrt(BATCH - 1)
    arms = {f"training mode, batch {BATCH}": {"mode": "train"}, "eval mode, test set": {"mode": "eval"},
            "eval mode, test inputs + noise std 2": {"mode": "eval, noisier"},
            "eval mode, test inputs x 3": {"mode": "eval, scaled"}}
    rules = [AtMost("max_abs_normalized", "eval mode, test inputs + noise std 2", bound),
             AtMost("max_abs_normalized", "eval mode, test inputs x 3", bound)]
    return run_experiment(
        "bounded-activations", bounds_trial, arms, rules, seeds=seeds, progress=progress, trained=False,
        claim=(f"no activation can be too high or too low after batch norm: in eval mode (how a trained network "
               f"is used) every normalized value stays within sqrt(B-1) = {bound:.2f} (the training-mode bound for "
               f"B = {BATCH}, shown in the first row, true by construction) also on shifted inputs (noise of std 2 "
               f"added; inputs times 3)"))


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


def eval_determinism(seeds=None, progress: bool = True) -> Demonstration:
    """A demonstration: a trained network's eval-mode outputs do not move with the batch-mates (seed 0).

    100 test examples, each time batched with 63 other random training examples, 5 times; the
    largest standard deviation of a class probability over the 5, in eval mode and in training mode.
    """
    def compute():
        model, task = trained_mlp(0)
        g = torch.Generator().manual_seed(0)
        x = task.X_test[:100]
        mates = [task.X_train[torch.randint(0, len(task.y_train), (63,), generator=g)] for _ in range(5)]
        out = {}
        for mode in ("eval", "training"):
            m = copy.deepcopy(model).train(mode == "training")
            with torch.no_grad():
                p = torch.stack([m(torch.cat([x, b]))[:len(x)].softmax(1) for b in mates])
            out[f"largest std of a class probability over 5 sets of batch-mates, {mode} mode"] = p.std(0).max().item()
        return out

    return demonstrate(
        "eval-determinism", claim="with moving averages, inference is deterministic",
        compute=compute,
        claim_holds=lambda f: f["largest std of a class probability over 5 sets of batch-mates, eval mode"] < 1e-6,
        expectation=("in eval mode an example's class probabilities do not move (std below 1e-6) when its 63 "
                     "batch-mates change; training mode is shown for contrast"))


def inference_consistency(seeds=None, progress: bool = True) -> ExperimentResult:
    """Eval-mode test accuracy against training mode's on batches of 64 (the trained part of the claim)."""
    arms = {"eval mode": {"mode": "eval"}, "training mode, batches of 64": {"mode": "train"}}
    rules = [Similar("test_acc", "eval mode", "training mode, batches of 64", margin=0.02)]
    return run_experiment(
        "inference-consistency", inference_trial, arms, rules, seeds=seeds, progress=progress,
        must_learn=MustLearn("test_acc", chance=0.1, margin=0.1),
        claim=("with moving averages, inference is consistent with training: eval-mode test accuracy within 2 "
               "points of training-mode accuracy on batches of 64, noise included (that it is deterministic is "
               "the demonstration eval_determinism)"))


# ---------------------------------------------------------------------------------------------
# A batch of one
# ---------------------------------------------------------------------------------------------


def _raises_on_one(layer: nn.Module, shape: tuple[int, ...]) -> bool:
    try:
        layer.train()(torch.randn(1, *shape))
    except ValueError:
        return True
    return False


def batch_of_one_api(seeds=None, progress: bool = True) -> Demonstration:
    """An API fact: BatchNorm1d in training mode refuses one example; BatchNorm2d accepts one image."""
    return demonstrate(
        "batch-of-one-api", claim="training mode needs more than one example per batch",
        compute=lambda: {"BatchNorm1d(8) refuses a (1, 8) batch": _raises_on_one(nn.BatchNorm1d(8), (8,)),
                         "BatchNorm2d(8) refuses a (1, 8, 4, 4) batch": _raises_on_one(nn.BatchNorm2d(8), (8, 4, 4))},
        claim_holds=lambda f: f["BatchNorm1d(8) refuses a (1, 8) batch"],
        expectation="PyTorch's BatchNorm1d raises in training mode on a batch of one example (BatchNorm2d, "
                    "which also averages over H x W, is shown for comparison)")


def batch_of_one_trial(config: dict, seed: int) -> dict:
    from bncourse.models import SmallCNN

    task = harder_digits(seed).images()
    steps = pick(fast=100, full=1500, grading=150, cpu=500, what="steps per run (batch-of-one)")
    lrs = config["lrs"]
    build = lambda: he_init(SmallCNN(1, 10, widths=(8, 16, 32), norm=config["norm"]))  # noqa: E731
    tuning = tune_lr(build, task, lrs, seed, steps=steps, batch_size=config["batch"], momentum=0.9, extend=1)
    return {"test_acc": tuning.best.test_acc, "best_lr": tuning.best.lr, "censored": tuning.censored}


def batch_of_one(seeds=None, progress: bool = True) -> ExperimentResult:
    """A CNN trained on batches of one, with and without batch norm (and with batch norm on batches of 32)."""
    lrs1, lrs32 = pick(fast=(0.001, 0.003), full=(0.0003, 0.001, 0.003, 0.01)), pick(
        fast=(0.03, 0.1), full=(0.01, 0.03, 0.1, 0.3))
    arms = {"no norm, batch 1": {"norm": "none", "batch": 1, "lrs": lrs1},
            "batch norm, batch 1": {"norm": "batch", "batch": 1, "lrs": lrs1},
            "batch norm, batch 32": {"norm": "batch", "batch": 32, "lrs": lrs32}}
    rules = [Better("test_acc", "no norm, batch 1", "batch norm, batch 1", floor=0.05),
             Better("test_acc", "batch norm, batch 32", "batch norm, batch 1", floor=0.05)]
    return run_experiment(
        "batch-of-one", batch_of_one_trial, arms, rules, seeds=seeds, progress=progress,
        # the batch-norm arm on batches of one is exempt: failing to learn is what the claim predicts
        must_learn=MustLearn("test_acc", chance=0.1, margin=0.1, arms=("no norm, batch 1", "batch norm, batch 32")),
        claim=("training mode needs more than one example per batch: a CNN (SmallCNN 8-16-32, BatchNorm2d, He init) "
               "trained on batches of one scores lower in eval mode, by more than 5 points, than the same CNN without "
               "normalization on batches of one and than with batch norm on batches of 32 (same steps, each at its "
               "own rate chosen on validation data)"))

"""What batch norm costs: parameters, training time, and nothing at inference once folded.

``overhead()``: a ReLU MLP 64-256-256-256-10 with and without batch norm (batch 128). Measured:

- ``extra_parameters``: trainable parameters with batch norm minus without (gamma and beta, 2 per
  unit; the running statistics are buffers, not counted);
- ``train_step_time_ratio``: CPU time of one training step (forward, backward, SGD) with batch
  norm over without, the two timed interleaved, median of many repeats (``time.process_time``,
  so the load of other processes on the machine matters less);
- ``folded_max_abs_diff``: the largest difference between the eval-mode network and the same
  network with every batch-norm layer folded into the Linear before it (W' = W * gamma / sigma,
  b' = (b - mean) * gamma / sigma + beta): at inference batch norm can disappear;
- ``folded_inference_time_ratio``: inference CPU time of the folded network over the plain one.

``resnet_trial`` (the second arm) times notebook 10's network the same way, so the table shows
both ratios from one run: in the MLP batch norm is a large share of each step's work, in the
convolutional network a small one.

Claim ``overhead``: held if training with batch norm is slower in *both* networks (ratio above 1
by more than twice its spread) and it has extra parameters, while the folded network computes the same outputs
(within 1e-4).
"""

from __future__ import annotations

import copy
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from bncourse.experiments.common import harder_digits, mlp
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import AtLeast, AtMost
from bncourse.runtime import pick


def fold_batchnorm(model: nn.Sequential) -> nn.Sequential:
    """A copy of ``model`` (eval mode) with each Linear -> BatchNorm1d pair replaced by one Linear."""
    layers = list(copy.deepcopy(model).eval())
    out: list[nn.Module] = []
    for layer in layers:
        if isinstance(layer, nn.BatchNorm1d) and out and isinstance(out[-1], nn.Linear):
            lin = out[-1]
            scale = layer.weight.detach() / torch.sqrt(layer.running_var + layer.eps)
            with torch.no_grad():
                lin.weight.mul_(scale[:, None])
                lin.bias.copy_((lin.bias - layer.running_mean) * scale + layer.bias.detach())
            continue
        out.append(layer)
    return nn.Sequential(*out).eval()


def _cpu_time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return times


RESNET_WIDTHS, RESNET_BATCH = (16, 32, 64, 128), 16  # notebook 10's fast-mode SmallResNet and batch


def resnet_trial(seed: int) -> dict:
    """Notebook 10's measurement: a training step of ``SmallResNet`` (widths 16-32-64-128, 3x32x32 inputs,
    batch 16, SGD with momentum) with batch norm over without, CPU time, interleaved; and the parameters
    batch norm adds."""
    from bncourse.models import SmallResNet

    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(RESNET_BATCH, 3, 32, 32, generator=g), torch.randint(0, 10, (RESNET_BATCH,), generator=g)
    torch.manual_seed(seed)
    nets = {"bn": SmallResNet(widths=RESNET_WIDTHS), "none": SmallResNet(widths=RESNET_WIDTHS, norm="none")}
    opts = {k: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9) for k, m in nets.items()}

    def step(k):
        def run():
            for _ in range(2):
                loss = F.cross_entropy(nets[k](x), y)
                opts[k].zero_grad(set_to_none=True)
                loss.backward()
                opts[k].step()
        return run

    step("bn")(), step("none")()  # warm-up
    times = {"bn": [], "none": []}
    for r in range(pick(fast=4, full=12)):
        for k in (("bn", "none") if r % 2 == 0 else ("none", "bn")):  # interleaved, alternating order
            times[k] += _cpu_time(step(k), 1)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"train_step_time_ratio": statistics.median(times["bn"]) / max(statistics.median(times["none"]), 1e-9),
            "extra_parameters": count(nets["bn"]) - count(nets["none"])}


def overhead_trial(config: dict, seed: int) -> dict:
    if config.get("net") == "resnet":
        return resnet_trial(seed)
    task = harder_digits(seed)
    torch.manual_seed(seed)
    plain = mlp(task.num_features, task.num_classes, 256, 3, "relu")
    torch.manual_seed(seed)
    bn = mlp(task.num_features, task.num_classes, 256, 3, "relu", norm="batch")
    x, y = task.X_train[:128], task.y_train[:128]
    opts = {id(m): torch.optim.SGD(m.parameters(), lr=0.01) for m in (plain, bn)}

    def step(m):
        def run():
            for _ in range(10):
                loss = F.cross_entropy(m(x), y)
                opts[id(m)].zero_grad()
                loss.backward()
                opts[id(m)].step()
        return run

    repeats = pick(fast=8, full=60)
    t_bn, t_plain = [], []
    for _ in range(repeats):  # interleaved, so slow spells of the machine hit both
        t_bn += _cpu_time(step(bn), 1)
        t_plain += _cpu_time(step(plain), 1)
    for _ in range(20):  # a few more steps so the running statistics are not the initial ones
        step(bn)()
    bn.eval()
    folded = fold_batchnorm(bn)
    with torch.no_grad():
        diff = (folded(task.X_test) - bn(task.X_test)).abs().max().item()
        infer = lambda m: (lambda: [m(task.X_test) for _ in range(5)])  # noqa: E731
        t_f, t_p = [], []
        for _ in range(repeats):
            t_f += _cpu_time(infer(folded), 1)
            t_p += _cpu_time(infer(plain.eval()), 1)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {"extra_parameters": count(bn) - count(plain),
            "train_step_time_ratio": statistics.median(t_bn) / max(statistics.median(t_plain), 1e-9),
            "folded_max_abs_diff": diff,
            "folded_inference_time_ratio": statistics.median(t_f) / max(statistics.median(t_p), 1e-9)}


def overhead(seeds=None, progress: bool = True) -> ExperimentResult:
    """Extra parameters and training time of batch norm; outputs of the folded inference network."""
    arm, resnet = "MLP 3x256, batch 128", "SmallResNet 16-128 (notebook 10), batch 16"
    rules = [AtLeast("train_step_time_ratio", arm, 1.0), AtLeast("train_step_time_ratio", resnet, 1.0),
             AtLeast("extra_parameters", arm, 1.0), AtMost("folded_max_abs_diff", arm, 1e-4)]
    return run_experiment(
        "overhead", overhead_trial, {arm: {"net": "mlp"}, resnet: {"net": "resnet"}}, rules, seeds=seeds,
        progress=progress, trained=False,
        claim=("batch norm costs computation and parameters in training (CPU time per step with/without above 1, "
               "in the MLP and in notebook 10's SmallResNet, measured in the same run), and at inference it can be "
               "folded into the layer before it (same outputs within 1e-4)"))

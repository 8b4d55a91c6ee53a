"""Batch norm folded away for inference: one Conv2d or Linear that computes conv/linear + BN (eval).

In eval mode a batch-norm layer is a fixed per-channel affine map,

    bn(z) = gamma * (z - running_mean) / sqrt(running_var + eps) + beta = scale * z + shift,
    scale = gamma / sqrt(running_var + eps)      (C_out,)
    shift = beta - scale * running_mean          (C_out,)

and the layer before it is linear, ``z = W * x + b``, so the pair is one layer with

    W' = scale[o] * W[o, ...]    (each *output* channel o: weight axis 0)
    b' = scale * (b - running_mean) + beta       (b = 0 when the layer has no bias)

``fold_batchnorm(layer, bn)`` builds that layer; ``fold_model(model)`` folds every
(Conv2d or Linear) -> BatchNorm pair that sits next to each other in an ``nn.Sequential`` of a
copy of the model (the course's ``SmallCNN`` and ``SmallResNet`` keep each pair in a
``ConvBlock``), replacing the batch norm by ``nn.Identity``. Only eval mode can be folded: in
training mode batch norm uses each batch's own statistics, which no fixed layer reproduces.
PyTorch has the same for one pair: ``torch.nn.utils.fusion.fuse_conv_bn_eval``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = ["fold_batchnorm", "fold_model", "count_batchnorms", "compare_inference_time"]


def _check_pair(layer: nn.Module, bn: nn.Module) -> None:
    if isinstance(layer, nn.Conv2d):
        if not isinstance(bn, nn.BatchNorm2d):
            raise ValueError(f"a Conv2d folds with a BatchNorm2d, got {type(bn).__name__}")
        n_out = layer.out_channels
    elif isinstance(layer, nn.Linear):
        if not isinstance(bn, nn.BatchNorm1d):
            raise ValueError(f"a Linear folds with a BatchNorm1d, got {type(bn).__name__}")
        n_out = layer.out_features
    else:
        raise ValueError(f"expected an nn.Conv2d or nn.Linear before the batch norm, got {type(layer).__name__}")
    if bn.num_features != n_out:
        raise ValueError(f"the batch norm has {bn.num_features} channels but the {type(layer).__name__} "
                         f"produces {n_out}")
    if bn.training:
        raise ValueError("the batch norm is in training mode (it would use each batch's statistics): "
                         "call model.eval() before folding")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("the batch norm keeps no running statistics (track_running_stats=False): nothing to fold")


def fold_batchnorm(layer: nn.Module, bn: nn.Module) -> nn.Module:
    """One layer equal to ``bn(layer(x))`` with ``bn`` in eval mode; neither argument is changed.

    Args:
        layer: ``nn.Conv2d`` (weight (C_out, C_in/groups, kh, kw)) or ``nn.Linear`` (weight (out, in)),
            with or without bias.
        bn: ``nn.BatchNorm2d`` after a Conv2d, ``nn.BatchNorm1d`` after a Linear, in eval mode,
            num_features = C_out.

    Returns:
        a new layer of ``layer``'s type and settings (stride, padding, groups, ...), always with
        a bias, in eval mode, on ``layer``'s device and dtype.
    """
    _check_pair(layer, bn)
    folded = copy.deepcopy(layer)
    with torch.no_grad():
        w = layer.weight
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps) if bn.affine else 1 / torch.sqrt(bn.running_var + bn.eps)
        shift_beta = bn.bias if bn.affine else torch.zeros_like(bn.running_mean)
        b = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        folded.weight = nn.Parameter((w * scale.reshape(-1, *([1] * (w.dim() - 1)))).to(w.dtype))
        folded.bias = nn.Parameter((scale * (b - bn.running_mean) + shift_beta).to(w.dtype))
    return folded.eval()


def fold_model(model: nn.Module) -> nn.Module:
    """A copy of ``model`` (put in eval mode) with every adjacent (Conv2d/Linear, BatchNorm) pair folded.

    Pairs are found inside ``nn.Sequential`` containers, where one module feeds the next; the
    batch norm is replaced by ``nn.Identity``. ``model`` itself is not changed.
    """
    folded = copy.deepcopy(model).eval()
    for module in folded.modules():
        if not isinstance(module, nn.Sequential):
            continue
        names = list(module._modules)
        for first, second in zip(names, names[1:]):
            layer, bn = module._modules[first], module._modules[second]
            if isinstance(layer, (nn.Conv2d, nn.Linear)) and isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm1d)):
                module._modules[first] = fold_batchnorm(layer, bn)
                module._modules[second] = nn.Identity()
    return folded


def count_batchnorms(model: nn.Module) -> int:
    """How many batch-norm layers (PyTorch's ``_BatchNorm`` subclasses) the model still holds."""
    return sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def compare_inference_time(model: nn.Module, folded: nn.Module, x: torch.Tensor, repeats: int = 20,
                           inner: int = 5) -> dict:
    """Time ``model(x)`` against ``folded(x)`` (eval mode, no grad), interleaved, on ``x``'s device.

    Each repeat times ``inner`` forward passes of one model, then of the other (the order alternates
    between repeats so drifting load hits both alike). The clock is ``bncourse.device.device_timer``:
    on a GPU (cuda or mps) it waits for the device before and after, so it measures the device's
    work rather than the time to queue it; on the CPU it is CPU time (``time.process_time``), which
    on a shared machine does not count the time other jobs held the core.

    Returns a dict: ``unfolded_ms`` and ``folded_ms`` (medians per forward pass), ``speedup``
    (median of the paired unfolded/folded ratios; > 1 means folding is faster), ``speedup_range``
    (the smallest and largest paired ratio: medians of times and of ratios can disagree when the
    load drifts, the range shows how far), ``max_abs_diff`` (largest output difference), ``repeats``,
    ``device`` and ``clock`` (what was measured).
    """
    import statistics

    from bncourse.device import device_timer

    model.eval(), folded.eval()
    times: dict[str, list[float]] = {"unfolded": [], "folded": []}
    clock = device_timer(x.device, cpu_clock="process").clock_name

    def run(name: str, m: nn.Module) -> None:
        with device_timer(x.device, cpu_clock="process") as timer:
            for _ in range(inner):
                m(x)
        times[name].append(timer.seconds / inner)

    with torch.no_grad():
        diff = (model(x) - folded(x)).abs().max().item()
        run("unfolded", model), run("folded", folded)  # warm-up
        times["unfolded"].clear(), times["folded"].clear()
        for r in range(repeats):
            pair = [("unfolded", model), ("folded", folded)]
            for name, m in (pair if r % 2 == 0 else pair[::-1]):
                run(name, m)
    ratios = [u / f for u, f in zip(times["unfolded"], times["folded"]) if f > 0]
    return {"unfolded_ms": 1e3 * statistics.median(times["unfolded"]),
            "folded_ms": 1e3 * statistics.median(times["folded"]),
            "speedup": statistics.median(ratios) if ratios else float("nan"),
            "speedup_range": (min(ratios), max(ratios)) if ratios else (float("nan"), float("nan")),
            "max_abs_diff": diff, "repeats": repeats, "device": str(x.device), "clock": clock}

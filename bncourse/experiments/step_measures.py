"""What one SGD step does to a network, measured: Santurkar et al.'s gradient change, input drift, smoothness.

Each function takes a model with ``linears`` and ``block_of`` (``bncourse.experiments.deep_mlp.DeepMLP``),
a batch ``x`` (N, D), ``y`` (N,) and the SGD step size, and leaves the model as it found it.
"""

from __future__ import annotations

import math

import numpy as np

from bncourse.reference.what_bn_does import gradient_change




def _loss_at(model, params: dict, buffers: dict, x, y):
    """The loss with ``params`` in place of the model's, running statistics left untouched."""
    import torch.nn.functional as F
    from torch.func import functional_call

    bufs = {k: v.clone() for k, v in buffers.items()}  # a training-mode forward updates running stats
    return F.cross_entropy(functional_call(model, {**params, **bufs}, (x,)), y)


def layer_gradient_change(model, x, y, lr: float, grads: dict | None = None) -> list[dict]:
    """Santurkar et al.'s internal covariate shift of every layer with layers below it, now.

    For Linear layer ``i`` (1 .. depth): ``g_before`` = d loss / d W_i on batch (x, y);
    ``g_after`` = the same after every parameter of blocks ``0 .. i-1`` took the SGD step
    ``p - lr * grad`` (layer i and above unchanged). Returns one dict per layer with the
    numpy gradients and ``gradient_change(g_before, g_after)``.
    """
    import torch

    params = {k: v.detach().requires_grad_(True) for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    if grads is None:
        loss = _loss_at(model, params, buffers, x, y)
        grads = dict(zip(params, torch.autograd.grad(loss, list(params.values()))))
    out = []
    for i in range(1, len(model.linears)):
        name = f"linears.{i}.weight"
        moved = {k: (p - lr * grads[k]).detach() if model.block_of[k] < i else p for k, p in params.items()}
        moved[name] = params[name]
        loss2 = _loss_at(model, moved, buffers, x, y)
        (g_after,) = torch.autograd.grad(loss2, [moved[name]])
        g_before = grads[name].detach().double().numpy()
        g_after = g_after.detach().double().numpy()
        rel, cos = gradient_change(g_before, g_after)
        out.append({"layer": i, "g_before": g_before, "g_after": g_after, "relative_change": rel, "cosine": cos})
    return out


def _input_stats(model, x_probe, eval_mode: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """Per-unit mean and std (ddof=0) of every hidden layer's output (the next layer's input).

    Training mode by default: with batch norm the probe batch then normalizes itself, so its mean
    and std per unit are beta and gamma by construction (through the ReLU). ``eval_mode=True``
    uses the running statistics instead: what a fixed set of inputs produces, which batch norm does
    not fix by construction. The model's mode is restored.
    """
    import torch
    from torch.func import functional_call

    params = dict(model.named_parameters())
    bufs = {k: v.clone() for k, v in model.named_buffers()}
    was = model.training
    model.train(not eval_mode)
    try:
        with torch.no_grad():
            _, inputs = functional_call(model, {**params, **bufs}, (x_probe,), {"collect": True})
    finally:
        model.train(was)
    return [(h.mean(0).double().numpy(), h.std(0, unbiased=False).double().numpy()) for h in inputs]


def input_drift(stats: list[list[tuple[np.ndarray, np.ndarray]]]) -> float:
    """How far each layer's input distribution moves between consecutive measurements.

    ``stats[t][l] = (mean, std)`` per unit of layer l's input at measurement t. For each pair
    (t-1, t) and layer: (mean |d mean| + mean |d std|) over units, divided by the mean std at
    t-1 (so it is relative to the input's own spread), which is
    ``bncourse.reference.what_bn_does.input_drift`` of the two activations; averaged over pairs
    and layers.
    """
    vals = []
    for prev, cur in zip(stats[:-1], stats[1:]):
        for (m0, s0), (m1, s1) in zip(prev, cur):
            scale = float(np.mean(s0))
            if scale > 0:
                vals.append((float(np.mean(np.abs(m1 - m0))) + float(np.mean(np.abs(s1 - s0)))) / scale)
    return float(np.mean(vals)) if vals else math.nan


def along_gradient(model, x, y, lr: float, multipliers=(0.5, 1.0, 2.0, 4.0)) -> dict:
    """The loss and the gradient at ``w - c * lr * g`` for each multiplier c (training mode, same batch).

    Returns ``losses`` (len(multipliers) + 1: c = 0 first), ``grad_change`` (||g(w') - g(w)||
    for each c) and ``beta`` (the largest ||g(w') - g(w)|| / ||w' - w||: Santurkar et al.'s
    "effective beta-smoothness").
    """
    import torch

    params = {k: v.detach().requires_grad_(True) for k, v in model.named_parameters()}
    buffers = dict(model.named_buffers())
    loss0 = _loss_at(model, params, buffers, x, y)
    g0 = torch.autograd.grad(loss0, list(params.values()))
    gnorm = float(torch.sqrt(sum((g.double() ** 2).sum() for g in g0)))
    losses, changes, betas = [float(loss0.detach())], [], []
    for c in multipliers:
        moved = {k: (p - c * lr * g).detach().requires_grad_(True) for (k, p), g in zip(params.items(), g0)}
        loss = _loss_at(model, moved, buffers, x, y)
        g1 = torch.autograd.grad(loss, list(moved.values()))
        diff = float(torch.sqrt(sum(((a.double() - b.double()) ** 2).sum() for a, b in zip(g1, g0))))
        losses.append(float(loss.detach()))
        changes.append(diff)
        betas.append(diff / (c * lr * gnorm) if gnorm > 0 else math.nan)
    return {"losses": np.array(losses), "grad_change": np.array(changes), "beta": float(np.nanmax(betas))}

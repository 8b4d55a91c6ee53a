"""Scale invariance (Ioffe & Szegedy, section 3.3): multiply a layer's weights by 10.

With batch norm after a linear layer, BN((a W) u) = BN(W u) for any a > 0 (up to eps), so the
network's outputs, the gradient reaching the layer's input and every *other* layer's gradients do
not change; the scaled layer's own weight gradient shrinks by 1/a (the paper's
d BN((aW)u) / d(aW) = (1/a) d BN(Wu) / dW). Without batch norm the outputs change.

``scale_invariance()`` is a *demonstration* (algebra checked once in float64, shown without a spread:
it cannot come out otherwise, so sampling it over seeds would dress a construction up as an
experiment): an MLP (a random batch of harder digits), the first layer's weight and bias
multiplied by 10; with and without batch norm:

- ``output_rel_change``: ||y' - y|| / ||y|| of the logits (training mode, batch statistics);
- ``other_grads_rel_change``: the same for the gradients of every parameter after the scaled layer;
- ``own_grad_ratio_error``: | ||grad W'|| / ||grad W|| - 1/10 |, how far the scaled layer's weight
  gradient is from the predicted factor 1/10.

Claim ``scale-invariance`` as the explainer states it ("output and gradients do not depend on the
scale of the weights"): held if, with batch norm, outputs and the other layers' gradients change by
less than 1e-4 (relative) and the scaled layer's gradient is 1/10 within 1e-4, while without batch
norm the outputs change by more than 1e-3. ``invariance_trial(config, seed)`` is the computation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bncourse.experiments.common import harder_digits, mlp
from bncourse.experiments.demonstration import Demonstration, demonstrate

SCALE = 10.0


def _forward_backward(model, x, y):
    model.zero_grad(set_to_none=True)
    out = model(x)
    F.cross_entropy(out, y).backward()
    return out.detach().clone(), [p.grad.detach().clone() for p in model.parameters()]


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def invariance_trial(config: dict, seed: int) -> dict:
    task = harder_digits(seed)
    torch.manual_seed(seed)
    model = mlp(task.num_features, task.num_classes, 64, 3, "relu", norm=config["norm"]).double().train()
    idx = torch.randperm(len(task.y_train), generator=torch.Generator().manual_seed(seed))[:128]
    x, y = task.X_train[idx].double(), task.y_train[idx]
    out, grads = _forward_backward(model, x, y)
    first = next(m for m in model if isinstance(m, nn.Linear))
    with torch.no_grad():
        first.weight.mul_(SCALE)
        first.bias.mul_(SCALE)
    out2, grads2 = _forward_backward(model, x, y)
    n_first = 2  # weight and bias of the scaled layer come first in parameters()
    others = torch.cat([g.flatten() for g in grads[n_first:]])
    others2 = torch.cat([g.flatten() for g in grads2[n_first:]])
    ratio = (grads2[0].norm() / grads[0].norm()).item()
    return {"output_rel_change": _rel(out2, out), "other_grads_rel_change": _rel(others2, others),
            "own_grad_ratio": ratio, "own_grad_ratio_error": abs(ratio - 1 / SCALE)}


def scale_invariance(seeds=None, progress: bool = True) -> Demonstration:
    """A demonstration: outputs and gradients after multiplying the first layer's weights by 10, with and without BN.

    One float64 computation (seed 0); ``seeds`` and ``progress`` are accepted for the claims runner and unused.
    """
    def compute():
        bn, plain = invariance_trial({"norm": "batch"}, 0), invariance_trial({"norm": None}, 0)
        return {"output relative change, batch norm": bn["output_rel_change"],
                "other layers' gradients relative change, batch norm": bn["other_grads_rel_change"],
                "scaled layer's gradient ratio (algebra: 1/10), batch norm": bn["own_grad_ratio"],
                "output relative change, no norm": plain["output_rel_change"]}

    def holds(f):
        return (f["output relative change, batch norm"] < 1e-4
                and f["other layers' gradients relative change, batch norm"] < 1e-4
                and abs(f["scaled layer's gradient ratio (algebra: 1/10), batch norm"] - 1 / SCALE) < 1e-4
                and f["output relative change, no norm"] > 1e-3)

    return demonstrate(
        "scale-invariance",
        claim=("with batch norm after it, a layer's weights times 10 leave the outputs and the other layers' "
               "gradients unchanged and shrink its own weight gradient by 1/10 (float64, training mode)"),
        compute=compute, claim_holds=holds,
        expectation=("with batch norm, outputs and the other layers' gradients change by less than 1e-4 (relative) "
                     "and the scaled layer's weight gradient is 1/10 of before within 1e-4; without batch norm the "
                     "outputs change by more than 1e-3"))

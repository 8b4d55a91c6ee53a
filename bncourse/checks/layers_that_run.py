"""What a model's forward runs: the Conv2d/Linear layers it reaches and the batch norms that still run.

The fold_model check (``bncourse.checks.folding``) judges a folded model by what runs when it is
called, not by what it holds (an FX ``GraphModule`` keeps its unused modules registered; a wrapper
can keep a batch norm out of the module tree):

* ``folded_layers(model, x)``: the weights and biases of the Conv2d/Linear layers that run, as one
  array in an order of their own (a multiset; the check's reference folds the model's pairs by hand
  and fingerprints them the same way);
* ``run_counting(model, x, kept)``: the model's output and how many batch norms ran beyond the
  ``kept`` that stay, counted by hooks and by the aten ops dispatched;
* ``layers_in_training(model)``: how many layers with parameters are in training mode.

    ran, paired = layers_that_run(model, x, pairs=True)   # [Conv2d, ...], {conv: the batch norm after it}
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["BatchNormOps", "fingerprint", "folded_layers", "is_batchnorm", "layers_in_training",
           "layers_that_run", "run_counting", "to_array", "weight_and_bias"]

def is_batchnorm(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.batchnorm._BatchNorm)


def to_array(t: torch.Tensor) -> np.ndarray:
    """A detached CPU copy of ``t`` as a numpy array."""
    return t.detach().cpu().numpy().copy()


def layers_that_run(model: nn.Module, x: np.ndarray, pairs: bool = False):
    """The Conv/Linear modules that run in ``model``'s forward on x, in order (each once), and, with
    ``pairs``, ``{conv: batch norm}`` for each batch norm whose input is that conv's output."""
    if isinstance(model, torch.jit.ScriptModule):  # no hooks in TorchScript: its Conv2d/Linear submodules, by name
        return [m for m in model.modules() if getattr(m, "original_name", "") in ("Conv2d", "Linear")], {}
    ran, outputs, paired = [], [], {}

    def layer_hook(m, i, o):
        if all(m is not r for r in ran):
            ran.append(m)
        outputs.append((o, m))

    def bn_hook(m, i, o):
        conv = next((c for t, c in outputs if i and i[0] is t and isinstance(c, nn.Conv2d)), None)
        if conv is not None:
            paired[conv] = m

    hooks = [m.register_forward_hook(layer_hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    hooks += [m.register_forward_hook(bn_hook) for m in model.modules() if pairs and is_batchnorm(m)]
    try:
        with torch.no_grad():
            model(torch.tensor(x))
    finally:
        for h in hooks:
            h.remove()
    return ran, paired


def fingerprint(layers) -> np.ndarray:
    """(weight, bias) pairs as one array: per layer its size, then weight and bias, layers sorted by
    (size, sum): equal arrays mean equal multisets of layers."""
    rows = [np.concatenate([to_array(w).ravel(), to_array(b).ravel()]).astype(np.float64) for w, b in layers]
    rows.sort(key=lambda r: (r.size, float(r.sum())))
    return np.concatenate([np.concatenate([[float(r.size)], r]) for r in rows]) if rows else np.zeros(0)


def folded_layers(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The weights and biases of the Conv2d/Linear layers that run in ``model``'s forward (a bias of None as
    zeros), as one array in an order of their own (``fingerprint``): what a fold must have changed."""
    ran, _ = layers_that_run(model, x)
    return fingerprint([weight_and_bias(m) for m in ran])


def weight_and_bias(layer: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A Conv2d's or Linear's weight and bias, detached (a bias of None as zeros)."""
    w = layer.weight.detach()
    return w, layer.bias.detach() if layer.bias is not None else torch.zeros(w.shape[0], dtype=w.dtype)


def layers_in_training(model: nn.Module) -> np.ndarray:
    """How many of ``model``'s layers with parameters of their own are in training mode, as a (1,) array.

    A folded model is for inference: its layers are in eval mode. Only layers holding parameters
    count (an ``nn.Identity()`` put in after ``.eval()``, or an FX ``GraphModule``'s own flag, is harmless)."""
    return np.array([float(sum(m.training for m in model.modules()
                               if next(m.parameters(recurse=False), None) is not None))])


_BN_OP_NAMES = ("batch_norm",)  # native_batch_norm, _native_batch_norm_legit*, _batch_norm_with_update, cudnn_/miopen_...


class BatchNormOps(TorchDispatchMode):
    """Counts the batch-norm aten ops that run, whatever module (or none) calls them."""

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if any(n in func.name() for n in _BN_OP_NAMES):
            self.count += 1
        return func(*args, **(kwargs or {}))


def run_counting(model: nn.Module, x: np.ndarray, kept: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(model's output on x, how many batch norms ran beyond the ``kept`` that stay, as a (1,) array).

    Counted twice, the larger count kept: forward hooks on the ``_BatchNorm`` modules of
    ``model.modules()`` and the batch-norm aten ops dispatched during the forward (red team 2's
    N4: a wrapper that keeps a batch norm out of the module tree runs it with no hook firing)."""
    ran: set = set()
    hooks = [m.register_forward_hook(lambda m, i, o: ran.add(id(m))) for m in model.modules() if is_batchnorm(m)]
    try:
        with torch.no_grad(), BatchNormOps() as ops:
            out = to_array(model(torch.tensor(x)))
    finally:
        for h in hooks:
            h.remove()
    return out, np.array([float(max(len(ran), ops.count)) - kept])

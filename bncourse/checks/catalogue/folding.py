"""The catalogue's entries for notebook 10: fold_batchnorm and fold_model.

Each entry is a fold written out by hand with one slip, as a learner would write it.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from bncourse.checks.core import Mistake
from bncourse.checks.folding import _count, _model_reference, _np, _pair_runner, _seeded_model

def _manual_fold(how: str):
    """A fold with one slip, written out by hand as a learner would."""
    def fold(layer, bn):
        w = layer.weight.detach()
        b = layer.bias.detach() if layer.bias is not None else torch.zeros_like(bn.running_mean)
        var = bn.running_var if how == "no_eps" else bn.running_var + bn.eps
        scale = bn.weight.detach() / torch.sqrt(var)
        if how == "no_sqrt":
            scale = bn.weight.detach() / (bn.running_var + bn.eps)
        shape = (-1,) + (1,) * (w.dim() - 1)
        if how == "wrong_axis":
            shape = (1, -1) + (1,) * (w.dim() - 2)
        new_w = w * scale.reshape(shape)
        if how == "gamma_twice":
            new_b = bn.weight.detach() * scale * (b - bn.running_mean) + bn.bias.detach()
        elif how == "own_bias_ignored":
            new_b = bn.bias.detach() - scale * bn.running_mean
        elif how == "mean_ignored":
            new_b = scale * b + bn.bias.detach()
        else:
            new_b = scale * (b - bn.running_mean) + bn.bias.detach()
        new = copy.deepcopy(layer)
        new.weight = nn.Parameter(new_w.clone())
        if how == "bias_dropped":
            new.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        else:
            new.bias = nn.Parameter(new_b.clone())
        if how == "in_place":
            with torch.no_grad():
                layer.weight.copy_(new_w)
        return new
    return fold


def _fold_mistakes() -> list[Mistake]:
    return [
        Mistake("running variance without eps",
                "batch norm divides by sqrt(running_var + eps): scale = gamma / torch.sqrt(bn.running_var + bn.eps)",
                _pair_runner(_manual_fold("no_eps"))),
        Mistake("divided by the variance instead of the standard deviation",
                "scale = gamma / torch.sqrt(running_var + eps)", _pair_runner(_manual_fold("no_sqrt"))),
        Mistake("the bias of a bias-free conv forgotten",
                "a layer without bias still needs one after folding: the batch norm's shift "
                "beta - scale * running_mean has to live somewhere (create the folded layer with bias=True)",
                _pair_runner(_manual_fold("bias_dropped"))),
        Mistake("gamma applied to the bias twice",
                "scale already contains gamma: bias = scale * (b - running_mean) + beta",
                _pair_runner(_manual_fold("gamma_twice"))),
        Mistake("per-output-channel scale broadcast along the wrong weight axis",
                "the scale belongs to output channel o, weight axis 0: multiply by scale.reshape(-1, 1, 1, 1) "
                "(Conv2d) or scale.reshape(-1, 1) (Linear); reshape(1, -1, ...) scales the input channels",
                _pair_runner(_manual_fold("wrong_axis"))),
        Mistake("the layer's own bias left out",
                "the layer's bias b passes through batch norm too: bias = scale * (b - running_mean) + beta",
                _pair_runner(_manual_fold("own_bias_ignored"))),
        Mistake("running mean not subtracted", "bias = scale * (b - running_mean) + beta",
                _pair_runner(_manual_fold("mean_ignored"))),
        Mistake("the original layer changed in place",
                "build a new layer (copy.deepcopy(layer), then assign new parameters); the caller's layer must "
                "keep its weights", _pair_runner(_manual_fold("in_place"))),
    ]


def _model_train_mode(x, seed):
    model = _seeded_model(seed)
    with torch.no_grad():
        out = _np(copy.deepcopy(model)(torch.tensor(x)))
    return out, _count(model), _count(model)


def _model_bn_kept(x, seed):
    from bncourse.folding import fold_batchnorm

    model = _seeded_model(seed)
    folded = copy.deepcopy(model).eval()
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            if isinstance(seq._modules[a], nn.Conv2d) and isinstance(seq._modules[b], nn.BatchNorm2d):
                seq._modules[a] = fold_batchnorm(seq._modules[a], seq._modules[b])
    with torch.no_grad():
        out = _np(folded(torch.tensor(x)))
    return out, _count(folded), _count(model)


def _model_in_place(x, seed):
    out = _model_reference(x, seed)[0]
    return out, np.array([0]), np.array([0])


def _model_mistakes() -> list[Mistake]:
    return [
        Mistake("a model folded in training mode",
                "its batch norms still normalize each batch with the batch's own statistics: call .eval() on "
                "the copy before folding (folding bakes in the running statistics, which only eval mode uses), "
                "and fold every Conv2d -> BatchNorm2d pair", _model_train_mode),
        Mistake("batch norm kept after folding (applied twice)",
                "replace each folded batch norm by nn.Identity(): its work is already inside the conv",
                _model_bn_kept),
        Mistake("the original model changed in place",
                "fold a copy (copy.deepcopy(model)) and return it; the caller's model must keep its batch norms",
                _model_in_place),
    ]


MISTAKE_NAMES = {
    "fold_batchnorm": [m.name for m in _fold_mistakes()],
    "fold_model": [m.name for m in _model_mistakes()],
}


ENTRIES = {"fold_batchnorm": _fold_mistakes, "fold_model": _model_mistakes}

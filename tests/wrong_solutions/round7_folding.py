"""Notebook 10's wrong solutions a seventh held-out round found unnamed (and their neighbours), as learners write
them: the bias without the scale, gamma applied twice, the conv's own bias dropped; in fold_batchnorm and fold_model."""

import copy

import torch
from torch import nn


def _fold(weight_of, bias_of, keep_bias=True):
    def fold(conv, bn):
        std = torch.sqrt(bn.running_var + bn.eps)
        scale = bn.weight / std
        b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        fused = copy.deepcopy(conv)
        shape = (-1,) + (1,) * (conv.weight.dim() - 1)
        fused.weight = nn.Parameter(weight_of(conv.weight, scale, bn).reshape(conv.weight.shape).detach().clone())
        if keep_bias:
            fused.bias = nn.Parameter(bias_of(b, scale, bn).detach().clone())
        else:
            fused.bias = None
        del shape
        return fused
    return fold


def _scaled(w, scale, bn):
    return w * scale.reshape((-1,) + (1,) * (w.dim() - 1))


def _right_bias(b, scale, bn):
    return (b - bn.running_mean) * scale + bn.bias


fold_bias_without_scale = _fold(_scaled, lambda b, scale, bn: b - bn.running_mean + bn.bias)
fold_weight_gamma_twice = _fold(lambda w, scale, bn: _scaled(w, scale * bn.weight, bn), _right_bias)
fold_gamma_twice_everywhere = _fold(lambda w, scale, bn: _scaled(w, scale * bn.weight, bn),
                                    lambda b, scale, bn: (b - bn.running_mean) * scale * bn.weight + bn.bias)
fold_own_bias_dropped = _fold(_scaled, lambda b, scale, bn: bn.bias - bn.running_mean * scale)
fold_bias_set_to_none = _fold(_scaled, _right_bias, keep_bias=False)


def _model_with(fold):
    def fold_model(model):
        model = copy.deepcopy(model).eval()
        for seq in [m for m in model.modules() if isinstance(m, nn.Sequential)]:
            for i in range(len(seq) - 1):
                if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                    seq[i] = fold(seq[i], seq[i + 1])
                    seq[i + 1] = nn.Identity()
        return model
    fold_model.__name__ = f"model_{fold.__name__}"
    return fold_model


for _name in ("fold_bias_without_scale", "fold_weight_gamma_twice", "fold_gamma_twice_everywhere",
              "fold_own_bias_dropped", "fold_bias_set_to_none"):
    globals()[_name].__name__ = _name

WRONG = [
    ("fold_batchnorm", ["bias without the scale", "not scaled"], fold_bias_without_scale),
    ("fold_batchnorm", ["gamma applied twice"], fold_weight_gamma_twice),
    ("fold_batchnorm", ["gamma applied twice"], fold_gamma_twice_everywhere),
    ("fold_batchnorm", ["own bias"], fold_own_bias_dropped),
    ("fold_batchnorm", ["bias"], fold_bias_set_to_none),
    ("fold_model", ["bias without the scale", "not scaled"], _model_with(fold_bias_without_scale)),
    ("fold_model", ["gamma applied twice"], _model_with(fold_weight_gamma_twice)),
    ("fold_model", ["own bias"], _model_with(fold_own_bias_dropped)),
    ("fold_model", ["bias"], _model_with(fold_bias_set_to_none)),
]


def fold_bias_without_gamma(conv, bn):
    std = (bn.running_var + bn.eps).sqrt()
    fused = copy.deepcopy(conv)
    b = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused.weight = nn.Parameter((conv.weight * (bn.weight / std).view(-1, *[1] * (conv.weight.dim() - 1))).detach())
    fused.bias = nn.Parameter(((b - bn.running_mean) / std + bn.bias).detach())
    return fused


WRONG += [("fold_batchnorm", ["gamma left out of the bias"], fold_bias_without_gamma)]

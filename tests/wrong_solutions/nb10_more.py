"""More wrong solutions of notebook 10, written as learners write them: the scale multiplied by the standard
deviation, a new layer built without the layer's stride and padding or in float32, and fold_models that
hard-code eps or fold a batch norm through the activation before it.

``nb10`` adds these to its ``WRONG`` and ``RIGHT``.
"""

import copy

import torch
from torch import nn


def _right_fold(layer, bn):
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        b = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        shape = [-1] + [1] * (layer.weight.dim() - 1)
        return layer.weight * scale.reshape(shape), (b - bn.running_mean) * scale + bn.bias


def fold_times_std(layer, bn):
    with torch.no_grad():
        scale = bn.weight * torch.sqrt(bn.running_var + bn.eps)
        b = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        new = copy.deepcopy(layer)
        new.weight = nn.Parameter(layer.weight * scale.view(-1, *[1] * (layer.weight.dim() - 1)))
        new.bias = nn.Parameter((b - bn.running_mean) * scale + bn.bias)
    return new


def fold_std_times_gamma_mul(layer, bn):
    with torch.no_grad():
        std = (bn.running_var + bn.eps).sqrt()
        new = copy.deepcopy(layer)
        w = layer.weight * (bn.weight * std).reshape(-1, *[1] * (layer.weight.dim() - 1))
        b = layer.bias if layer.bias is not None else 0
        new.weight = nn.Parameter(w)
        new.bias = nn.Parameter(bn.weight * std * (b - bn.running_mean) + bn.bias)
    return new


def fold_fresh_conv_default_settings(layer, bn):
    w, b = _right_fold(layer, bn)
    if isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, dtype=layer.weight.dtype)
    else:
        new = nn.Linear(layer.in_features, layer.out_features, dtype=layer.weight.dtype)
    new.weight, new.bias = nn.Parameter(w), nn.Parameter(b)
    return new


def fold_fresh_conv_padding_only(layer, bn):
    w, b = _right_fold(layer, bn)
    if isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, padding=layer.padding,
                        dtype=torch.float64)
    else:
        new = nn.Linear(layer.in_features, layer.out_features, dtype=torch.float64)
    new.weight, new.bias = nn.Parameter(w), nn.Parameter(b)
    return new


def fold_fresh_float32_copy(layer, bn):
    w, b = _right_fold(layer, bn)
    if isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                        padding=layer.padding)
    else:
        new = nn.Linear(layer.in_features, layer.out_features)
    with torch.no_grad():
        new.weight.copy_(w)
        new.bias.copy_(b)
    return new


def fold_fresh_float32_weight_param(layer, bn):
    w, b = _right_fold(layer, bn)
    if isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                        padding=layer.padding)
    else:
        new = nn.Linear(layer.in_features, layer.out_features)
    new.weight = nn.Parameter(w)  # float64; the bias stays the fresh float32 one, overwritten in place
    with torch.no_grad():
        new.bias.copy_(b)
    return new


def fold_fresh_conv_all_settings(layer, bn):
    """Right: a new layer built with every setting and the layer's dtype."""
    w, b = _right_fold(layer, bn)
    if isinstance(layer, nn.Conv2d):
        new = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, stride=layer.stride,
                        padding=layer.padding, dilation=layer.dilation, groups=layer.groups,
                        dtype=layer.weight.dtype)
    else:
        new = nn.Linear(layer.in_features, layer.out_features, dtype=layer.weight.dtype)
    new.weight, new.bias = nn.Parameter(w), nn.Parameter(b)
    return new


def _fold_eps_fixed(layer, bn):
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + 1e-5)
        new = copy.deepcopy(layer)
        b = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        new.weight = nn.Parameter(layer.weight * scale.reshape(-1, 1, 1, 1))
        new.bias = nn.Parameter((b - bn.running_mean) * scale + bn.bias)
    return new


def _walk(model, fold):
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = fold(block[i], block[i + 1])
                    block[i + 1] = nn.Identity()
    return folded


def model_eps_hard_coded(model):
    return _walk(model, _fold_eps_fixed)


def model_through_relu(model):
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if isinstance(block, nn.Sequential):
            conv = None
            for i, m in enumerate(block):
                if isinstance(m, nn.Conv2d):
                    conv = i
                elif isinstance(m, nn.BatchNorm2d) and conv is not None:
                    block[conv] = _fold_right(block[conv], m)
                    block[i] = nn.Identity()
    return folded


def model_through_relu_named(model):
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if not isinstance(block, nn.Sequential):
            continue
        last = None
        for name, m in list(block.named_children()):
            if isinstance(m, nn.Conv2d):
                last = name
            if isinstance(m, nn.BatchNorm2d) and last is not None:
                setattr(block, last, _fold_right(getattr(block, last), m))
                setattr(block, name, nn.Identity())
                last = None
    return folded


def _fold_right(layer, bn):
    w, b = _right_fold(layer, bn)
    new = copy.deepcopy(layer)
    new.weight, new.bias = nn.Parameter(w), nn.Parameter(b)
    return new


WRONG = [
    ("fold_batchnorm", ["multiplied by sqrt(var + eps)"], fold_times_std),
    ("fold_batchnorm", ["multiplied by sqrt(var + eps)"], fold_std_times_gamma_mul),
    ("fold_batchnorm", ["without the layer's stride and padding"], fold_fresh_conv_default_settings),
    ("fold_batchnorm", ["without the layer's stride and padding"], fold_fresh_conv_padding_only),
    ("fold_batchnorm", ["default float32"], fold_fresh_float32_copy),
    ("fold_batchnorm", ["default float32"], fold_fresh_float32_weight_param),
    ("fold_model", ["eps hard-coded"], model_eps_hard_coded),
    ("fold_model", ["after an activation"], model_through_relu),
    ("fold_model", ["after an activation"], model_through_relu_named),
]
RIGHT = [("fold_batchnorm", fold_fresh_conv_all_settings)]

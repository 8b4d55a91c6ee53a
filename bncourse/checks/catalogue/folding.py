"""The catalogue's entries for notebook 10: fold_batchnorm and fold_model.

Each entry is a fold written out by hand with one slip, as a learner would write it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bncourse.checks.core import Mistake
from bncourse.checks.folding import NO_CHANGE, _np, _pair_runner, _seeded_model, run_counting


def _manual_fold(how: str):
    """A fold with one slip, written out by hand as a learner would ("" : no slip)."""
    def fold(layer, bn):
        w = layer.weight.detach()
        b = layer.bias.detach() if layer.bias is not None else torch.zeros_like(bn.running_mean)
        mean, var = bn.running_mean, bn.running_var
        if how == "stats_ignored":  # as if the running statistics were 0 and 1
            mean, var = torch.zeros_like(mean), torch.ones_like(var)
        eps = 1e-5 if how == "fixed_eps" else bn.eps
        scale = bn.weight.detach() / torch.sqrt(var if how == "no_eps" else var + eps)
        if how == "no_sqrt":
            scale = bn.weight.detach() / (var + eps)
        elif how == "eps_outside":
            scale = bn.weight.detach() / (torch.sqrt(var) + eps)
        shape = (-1,) + (1,) * (w.dim() - 1)
        if how == "wrong_axis":
            shape = (1, -1) + (1,) * (w.dim() - 2)
        new_w = w * scale.reshape(shape)
        if how == "gamma_twice":
            new_b = bn.weight.detach() * scale * (b - mean) + bn.bias.detach()
        elif how == "own_bias_ignored":
            new_b = bn.bias.detach() - scale * mean
        elif how == "mean_ignored":
            new_b = scale * b + bn.bias.detach()
        elif how == "scale_twice":
            new_b = scale * scale * (b - mean) + bn.bias.detach()
        elif how == "bias_unscaled":
            new_b = b - scale * mean + bn.bias.detach()
        else:
            new_b = scale * (b - mean) + bn.bias.detach()
        new = copy.deepcopy(layer)
        new.weight = nn.Parameter(new_w.clone())
        if how == "bias_dropped":
            new.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        else:
            new.bias = nn.Parameter(new_b.clone())
        return new
    return fold


_EPS = "batch norm divides by sqrt(running_var + eps): scale = gamma / torch.sqrt(bn.running_var + bn.eps)"


def _fold_mistakes() -> list[Mistake]:
    return [
        Mistake("running variance without eps", _EPS, _pair_runner(_manual_fold("no_eps")), id="eps-missing"),
        Mistake("eps outside the square root", _EPS, _pair_runner(_manual_fold("eps_outside")), id="eps-outside-sqrt"),
        Mistake("eps hard-coded to 1e-5", "use the layer's own bn.eps: a BatchNorm may be built with another eps",
                _pair_runner(_manual_fold("fixed_eps")), id="eps-hard-coded"),
        Mistake("divided by the variance instead of the standard deviation",
                "scale = gamma / torch.sqrt(running_var + eps)", _pair_runner(_manual_fold("no_sqrt")),
                id="divided-by-variance"),
        Mistake("running statistics ignored",
                "in eval mode batch norm uses running_mean and running_var: scale = gamma / sqrt(running_var + eps), "
                "bias = scale * (b - running_mean) + beta", _pair_runner(_manual_fold("stats_ignored")),
                id="running-stats-ignored"),
        Mistake("the bias of a bias-free conv forgotten",
                "a layer without bias still needs one after folding: the batch norm's shift "
                "beta - scale * running_mean has to live somewhere (create the folded layer with bias=True)",
                _pair_runner(_manual_fold("bias_dropped")), id="bias-dropped"),
        Mistake("gamma applied to the bias twice",
                "scale already contains gamma: bias = scale * (b - running_mean) + beta",
                _pair_runner(_manual_fold("gamma_twice")), id="gamma-applied-twice"),
        Mistake("the scale applied to the bias twice",
                "bias = scale * (b - running_mean) + beta: multiply by scale once",
                _pair_runner(_manual_fold("scale_twice")), id="scale-applied-twice"),
        Mistake("per-output-channel scale broadcast along the wrong weight axis",
                "the scale belongs to output channel o, weight axis 0: multiply by scale.reshape(-1, 1, 1, 1) "
                "(Conv2d) or scale.reshape(-1, 1) (Linear); reshape(1, -1, ...) scales the input channels",
                _pair_runner(_manual_fold("wrong_axis")), id="wrong-axis"),
        Mistake("the layer's own bias left out",
                "the layer's bias b passes through batch norm too: bias = scale * (b - running_mean) + beta",
                _pair_runner(_manual_fold("own_bias_ignored")), id="own-bias-ignored"),
        Mistake("the layer's own bias not scaled",
                "b passes through batch norm, so it is scaled too: bias = scale * (b - running_mean) + beta",
                _pair_runner(_manual_fold("bias_unscaled")), id="own-bias-unscaled"),
        Mistake("running mean not subtracted", "bias = scale * (b - running_mean) + beta",
                _pair_runner(_manual_fold("mean_ignored")), id="running-mean-ignored"),
    ]


def _folded_copy(model: nn.Module, blocks) -> nn.Module:
    """An eval-mode copy with Conv2d -> BatchNorm2d folded inside the blocks ``blocks(model)`` picks."""
    folded = copy.deepcopy(model).eval()
    fold = _manual_fold("")
    for seq in blocks(folded):
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i], seq[i + 1] = fold(seq[i], seq[i + 1]), nn.Identity()
    return folded


def _model_train_mode(x, seed):
    out, ran = run_counting(copy.deepcopy(_seeded_model(seed)), x)
    return out, ran, NO_CHANGE.copy()


def _model_bn_kept(x, seed):
    folded = copy.deepcopy(_seeded_model(seed)).eval()
    fold = _manual_fold("")
    for seq in [m for m in folded.modules() if isinstance(m, nn.Sequential)]:
        for i in range(len(seq) - 1):
            if isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                seq[i] = fold(seq[i], seq[i + 1])
    out, ran = run_counting(folded, x)
    return out, ran, NO_CHANGE.copy()


def _model_plain_sequential_only(x, seed):
    folded = _folded_copy(_seeded_model(seed), lambda m: [s for s in m.modules() if type(s) is nn.Sequential])
    out, ran = run_counting(folded, x)
    return out, ran, NO_CHANGE.copy()


def _model_top_level_only(x, seed):
    folded = _folded_copy(_seeded_model(seed), lambda m: [s for s in m.children() if isinstance(s, nn.Sequential)])
    out, ran = run_counting(folded, x)
    return out, ran, NO_CHANGE.copy()


def _model_mistakes() -> list[Mistake]:
    nested = ("some Conv2d -> BatchNorm2d pairs left unfolded",
              "walk every module (model.modules()), including blocks that subclass nn.Sequential or sit inside "
              "other modules (a residual block), and fold every Conv2d followed by a BatchNorm2d")
    return [
        Mistake(*nested, _model_plain_sequential_only, id="pairs-left-unfolded"),
        Mistake(*nested, _model_top_level_only, id="pairs-left-unfolded"),
        Mistake("a model folded in training mode",
                "its batch norms still normalize each batch with the batch's own statistics: call .eval() on "
                "the copy before folding (folding bakes in the running statistics, which only eval mode uses), "
                "and fold every Conv2d -> BatchNorm2d pair", _model_train_mode, id="folded-in-training-mode"),
        Mistake("batch norm kept after folding (applied twice)",
                "replace each folded batch norm by nn.Identity(): its work is already inside the conv",
                _model_bn_kept, id="batchnorm-kept"),
    ]


ENTRIES = {"fold_batchnorm": _fold_mistakes, "fold_model": _model_mistakes}

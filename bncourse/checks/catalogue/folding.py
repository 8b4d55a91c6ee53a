"""The catalogue's entries for notebook 10: fold_batchnorm and fold_model.

Each entry is a fold written out by hand with one slip, as a learner would write it.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from bncourse.checks.catalogue.shared import inv_std, mistake
import numpy as np

from bncourse.checks.core import Mistake, Symptom
from bncourse.checks.folding import BATCHNORMS_KEPT, NO_CHANGE, _eval_out, _pair_runner, _seeded_model
from bncourse.checks.layers_that_run import folded_layers, layers_in_training, run_counting


def _manual_fold(how: str = ""):
    """A fold written out by hand as a learner would, with one slip ("": none): a shared one on the scale
    (``catalogue.shared.inv_std``'s) or one of folding's own (running statistics ignored, the bias)."""
    def fold(layer, bn):
        w = layer.weight.detach()
        b = layer.bias.detach() if layer.bias is not None else torch.zeros_like(bn.running_mean)
        gamma, beta, mean, var = bn.weight.detach(), bn.bias.detach(), bn.running_mean, bn.running_var
        if how == "gamma-beta-swapped":
            gamma, beta = beta, gamma
        if how in ("stats_ignored", "stats_ignored_plain"):  # as if the running statistics were 0 and 1
            mean, var = torch.zeros_like(mean), torch.ones_like(var)
        if how == "gamma_left_out":
            gamma = torch.ones_like(gamma)
        scale = gamma if how == "stats_ignored_plain" else gamma * inv_std(var, bn.eps, how)
        if how == "scale_inverted":  # std / gamma
            scale = 1 / scale
        shape = (1, -1) if how == "wrong-axis" else (-1, 1)
        new_w = w * scale.reshape(shape + (1,) * (w.dim() - 2) if how != "conv-shape" else (-1, 1, 1, 1))
        if how == "weight_without_gamma":
            new_w = w * (scale / gamma).reshape((-1,) + (1,) * (w.dim() - 1))
        if how in ("weight_gamma_twice", "gamma_twice_both"):
            new_w = w * (scale * gamma).reshape((-1,) + (1,) * (w.dim() - 1))
        if how == "weight_unscaled":
            new_w = w
        bias_terms = {  # bias = scale * (b - mean) + beta, or a slip
            "gamma_twice": lambda: gamma * scale * (b - mean) + beta, "own_bias_ignored": lambda: beta - scale * mean,
            "mean_ignored": lambda: scale * b + beta, "scale_twice": lambda: scale * scale * (b - mean) + beta,
            "bias_unscaled": lambda: b - scale * mean + beta, "beta_scaled": lambda: scale * (b - mean + beta),
            "mean_unscaled": lambda: scale * b - mean + beta, "beta_left_out": lambda: scale * (b - mean),
            "mean_added": lambda: scale * (b + mean) + beta, "mean_times_gamma": lambda: beta - gamma * mean + scale * b,
            "bias_gamma_for_scale": lambda: gamma * (b - mean) + beta,
            "gamma_twice_both": lambda: gamma * scale * (b - mean) + beta, "bias_no_scale": lambda: b - mean + beta,
            "beta_minus_mean": lambda: beta - mean, "bias_without_gamma": lambda: scale / gamma * (b - mean) + beta}
        new_b = bias_terms.get(how, lambda: scale * (b - mean) + beta)()
        new = _fresh_layer(layer, how) if how.startswith("fresh_") else copy.deepcopy(layer)
        new.weight = nn.Parameter(new_w.clone())
        if how == "bias_dropped":
            new.bias = None if layer.bias is None else nn.Parameter(layer.bias.detach().clone())
        elif how == "bias_none":
            new.bias = None
        else:
            new.bias = nn.Parameter(new_b.clone())
        return new
    return fold


def _fresh_layer(layer, how: str):
    """A new layer of ``layer``'s kind built from its sizes only: stride, padding, ... left at their defaults
    ("fresh_default_settings"; "fresh_padding_only", "fresh_stride_only": that one setting kept), or everything
    kept but built in the default float32 ("fresh_float32")."""
    dtype = torch.float32 if how == "fresh_float32" else layer.weight.dtype
    if isinstance(layer, nn.Conv2d):
        settings = {"stride": layer.stride, "padding": layer.padding, "dilation": layer.dilation, "groups": layer.groups}
        kept = {"fresh_default_settings": (), "fresh_padding_only": ("padding",), "fresh_stride_only": ("stride",)}
        if how in kept:
            settings = {k: v for k, v in settings.items() if k in kept[how]}
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, **settings, dtype=dtype)
    return nn.Linear(layer.in_features, layer.out_features, dtype=dtype)


def _fresh_float32_fold(layer, bn):
    """A fold whose new layer is built in float32 and whose parameters are copied into it (cast to float32)."""
    right = _manual_fold()(layer, bn)
    new = _fresh_layer(layer, "fresh_float32")
    with torch.no_grad():
        new.weight.copy_(right.weight)
        new.bias.copy_(right.bias)
    return new


_EPS = "batch norm divides by sqrt(running_var + eps): scale = gamma / torch.sqrt(bn.running_var + bn.eps)"


def _fold(slip: str) -> object:
    return _pair_runner(_manual_fold(slip))


def _fold_mistakes() -> list[Mistake]:
    return [
        mistake("eps-missing", _fold("eps-missing"), name="running variance without eps", hint=_EPS),
        mistake("eps-outside-sqrt", _fold("eps-outside-sqrt"), hint=_EPS),
        mistake("eps-hard-coded", _fold("eps-hard-coded"), name="eps hard-coded to 1e-5",
                hint="use the layer's own bn.eps: a BatchNorm may be built with another eps"),
        mistake("divided-by-variance", _fold("divided-by-variance"), hint="scale = gamma / torch.sqrt(running_var + eps)"),
        mistake("multiplied-by-std", _fold("multiplied-by-std"), hint=_EPS),
        *(Mistake("a new layer built without the layer's stride and padding",
                  "the folded layer computes the same convolution as the old one: keep its stride, padding, dilation "
                  "and groups (copy.deepcopy(layer), or nn.Conv2d(..., stride=layer.stride, padding=layer.padding, "
                  "dilation=layer.dilation, groups=layer.groups)) and set its weight and bias",
                  _fold(how), id="fresh-layer-settings-lost")
          for how in ("fresh_default_settings", "fresh_padding_only", "fresh_stride_only")),
        Mistake("a new layer built in the default float32 for a float64 layer",
                "build the folded layer in the layer's dtype and device (copy.deepcopy(layer), or pass "
                "dtype=layer.weight.dtype, device=layer.weight.device): a float32 layer cannot take the float64 "
                "input the old one takes", _pair_runner(_fresh_float32_fold), id="fresh-layer-float32"),
        mistake("gamma-beta-swapped", _fold("gamma-beta-swapped"),
                hint="bn.weight is gamma (the scale), bn.bias is beta (the shift): "
                     "scale = bn.weight / sqrt(running_var + eps)"),
        *(Mistake(name, hint, _fold(slip), id=id_) for id_, name, slip, hint in _FOLDING_OWN),
    ]


_BIAS = "bias = scale * (b - running_mean) + beta"
# folding's own slips (id, name, _manual_fold's slip, hint), after the shared ones on the scale
_FOLDING_OWN = (
    ("running-stats-ignored", "running statistics ignored", "stats_ignored", "in eval mode batch norm uses "
     "running_mean and running_var: scale = gamma / sqrt(running_var + eps), " + _BIAS),
    ("bias-dropped", "the bias of a bias-free conv forgotten", "bias_dropped", "a layer without bias still needs one "
     "after folding: the batch norm's shift beta - scale * running_mean has to live somewhere (create the folded "
     "layer with bias=True)"),
    ("gamma-applied-twice", "gamma applied to the bias twice", "gamma_twice", "scale already contains gamma: " + _BIAS),
    ("scale-applied-twice", "the scale applied to the bias twice", "scale_twice", _BIAS + ": multiply by scale once"),
    ("wrong-axis", "per-output-channel scale broadcast along the wrong weight axis", "wrong-axis",
     "the scale belongs to output channel o, weight axis 0: multiply by scale.reshape(-1, 1, 1, 1) (Conv2d) or "
     "scale.reshape(-1, 1) (Linear); reshape(1, -1, ...) scales the input channels"),
    ("scale-shaped-for-conv", "the scale reshaped to (-1, 1, 1, 1) for a Linear layer (its weight came back 4-d)",
     "conv-shape", "a Linear's weight is (out, in), a Conv2d's (out, in, kH, kW): reshape the scale to one value per "
     "output channel with as many trailing 1s as the weight has axes, scale.reshape(-1, *[1] * (w.dim() - 1))"),
    ("own-bias-ignored", "the layer's own bias left out", "own_bias_ignored",
     "the layer's bias b passes through batch norm too: " + _BIAS),
    ("own-bias-unscaled", "the layer's own bias not scaled", "bias_unscaled",
     "b passes through batch norm, so it is scaled too: " + _BIAS),
    ("running-mean-ignored", "running mean not subtracted", "mean_ignored", _BIAS),
    ("running-mean-added", "running mean added instead of subtracted", "mean_added", _BIAS),
    ("weight-unscaled", "the weight not scaled (only the bias folded)", "weight_unscaled",
     "batch norm scales every output channel by scale = gamma / sqrt(running_var + eps): multiply the weight's "
     "output channel o by scale[o] too"),
    ("gamma-left-out", "gamma left out of the scale", "gamma_left_out",
     "scale = bn.weight / sqrt(running_var + eps): bn.weight is gamma"),
    ("beta-left-out", "beta left out of the bias", "beta_left_out", "the shift beta = bn.bias stays: " + _BIAS),
    ("running-stats-ignored", "running statistics ignored", "stats_ignored_plain", "in eval mode batch norm uses "
     "running_mean and running_var: scale = gamma / sqrt(running_var + eps), " + _BIAS),
    ("scale-inverted", "the scale inverted (std / gamma instead of gamma / std)", "scale_inverted",
     "batch norm multiplies by gamma and divides by the std: scale = gamma / sqrt(running_var + eps)"),
    ("bias-mean-times-gamma", "the running mean multiplied by gamma, not by the scale, in the bias",
     "mean_times_gamma", "the mean is divided by the std along with everything else: " + _BIAS),
    ("bias-gamma-for-scale", "gamma in place of the scale in the bias (the std left out of the bias)",
     "bias_gamma_for_scale", "the bias passes through the division by the std too: " + _BIAS),
    ("beta-scaled", "beta scaled along with the bias", "beta_scaled",
     "beta is added after batch norm's scaling, so it is not scaled: " + _BIAS),
    ("running-mean-unscaled", "the running mean subtracted after scaling (not scaled)", "mean_unscaled",
     "the mean is subtracted before batch norm scales: " + _BIAS),
    ("bias-without-scale", "the bias without the scale (b - running_mean + beta: neither b nor the mean scaled)",
     "bias_no_scale", "batch norm divides (b - running_mean) by the std and multiplies by gamma before adding beta: "
     + _BIAS),
    ("bias-without-scale", "the bias without the scale and the layer's own bias left out (beta - running_mean)",
     "beta_minus_mean", "the layer's bias b and the mean both pass through batch norm's scaling: " + _BIAS),
    ("gamma-applied-twice", "gamma applied twice: to the weight (scale already holds gamma)", "weight_gamma_twice",
     "scale = gamma / sqrt(running_var + eps) already contains gamma: weight * scale, not weight * scale * gamma"),
    ("gamma-applied-twice", "gamma applied twice: to the weight and the bias (scale already holds gamma)",
     "gamma_twice_both", "scale = gamma / sqrt(running_var + eps) already contains gamma: weight * scale and " + _BIAS),
    ("gamma-left-out", "gamma left out of the bias ((b - running_mean) / std + beta)", "bias_without_gamma",
     "the bias passes through batch norm's scale, gamma included: " + _BIAS),
    ("gamma-left-out", "gamma left out of the weight (weight / std only)", "weight_without_gamma",
     "the weight is scaled by scale = gamma / sqrt(running_var + eps), gamma included"),
    ("bias-set-to-none", "the folded layer's bias dropped (bias None)", "bias_none",
     "the folded layer needs a bias even when the old one had none: batch norm's shift lives there, " + _BIAS),
)


def _folded_copy(model: nn.Module, blocks, keep_bn: bool = False, slip: str = "", pairs: int = 10 ** 9,
                 also: str = "", per_block: int = 10 ** 9) -> nn.Module:
    """An eval-mode copy with Conv2d -> BatchNorm2d folded inside the blocks ``blocks(model)`` picks
    (``keep_bn``: the batch norm left in place after its conv, so it runs twice; ``slip``: each pair folded
    by a fold with that slip, "unfolded": the batch norm dropped and the conv kept as it was; ``pairs``: how
    many pairs are folded before stopping, ``per_block`` how many in each block; ``also="next"``: the module
    after the pair replaced too, by nn.Identity)."""
    folded = copy.deepcopy(model).eval()
    fold = _manual_fold("" if slip == "unfolded" else slip)
    if also == "through-activation":
        return _folded_through_activations(folded, fold)
    for seq in blocks(folded):
        in_block = per_block
        for i in range(len(seq) - 1):
            if pairs and in_block and isinstance(seq[i], nn.Conv2d) and isinstance(seq[i + 1], nn.BatchNorm2d):
                pairs, in_block = pairs - 1, in_block - 1
                if slip != "unfolded":
                    seq[i] = fold(seq[i], seq[i + 1])
                if not keep_bn:
                    seq[i + 1] = nn.Identity()
                if also == "next" and i + 2 < len(seq):
                    seq[i + 2] = nn.Identity()
    return folded


def _folded_through_activations(folded: nn.Module, fold) -> nn.Module:
    """Every BatchNorm2d folded into the last Conv2d before it in its Sequential, whatever lies between
    (Conv2d -> ReLU -> BatchNorm2d folded too)."""
    for seq in [s for s in folded.modules() if isinstance(s, nn.Sequential)]:
        last_conv = None
        for i in range(len(seq)):
            if isinstance(seq[i], nn.Conv2d):
                last_conv = i
            elif isinstance(seq[i], nn.BatchNorm2d) and last_conv is not None:
                seq[last_conv] = fold(seq[last_conv], seq[i])
                seq[i] = nn.Identity()
                last_conv = None
    return folded


def _model_variant(make):
    """A wrong ``fold_model``'s outputs: ``make(model)`` -> the folded model it returns (the caller's untouched)."""
    def run(x, seed, kind=0):
        folded = make(_seeded_model(seed, kind))
        out, ran = run_counting(folded, x, BATCHNORMS_KEPT.get(int(kind), 0))
        return out, ran, NO_CHANGE.copy(), layers_in_training(folded), folded_layers(folded, x)
    return run


_SEQUENTIALS = {"all": lambda m: [s for s in m.modules() if isinstance(s, nn.Sequential)],
                "plain": lambda m: [s for s in m.modules() if type(s) is nn.Sequential],
                "top": lambda m: [s for s in m.children() if isinstance(s, nn.Sequential)],
                "self-and-top": lambda m: [m] * isinstance(m, nn.Sequential) + [s for s in m.children()
                                                                               if isinstance(s, nn.Sequential)],
                "convblock": lambda m: [s for s in m.modules() if type(s).__name__ == "ConvBlock"]}
_model_train_mode = _model_variant(copy.deepcopy)
_model_bn_kept = _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["all"], keep_bn=True))
_model_plain_sequential_only = _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["plain"]))
_model_top_level_only = _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["top"]))
_model_left_training = _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["all"]).train())


def _dotted_setattr(model: nn.Module) -> nn.Module:
    """An eval-mode copy folded by ``setattr(copy, "a.b", ...)`` with the dotted names of named_modules():
    a new module called "a.b" is added (at the end of a Sequential), the nested pair stays as it was."""
    folded = copy.deepcopy(model).eval()
    mods = list(folded.named_modules())
    fold = _manual_fold()
    for (n1, a), (n2, b) in zip(mods, mods[1:]):
        if isinstance(a, nn.Conv2d) and isinstance(b, nn.BatchNorm2d):
            setattr(folded, n1, fold(a, b))
            setattr(folded, n2, nn.Identity())
    return folded


def _model_unfolded(x, seed, kind=0):
    """A ``fold_model`` whose convs keep their weights (each batch norm replaced by its affine map, or kept)."""
    model = _seeded_model(seed, kind).eval()
    return (_eval_out(model, x), np.array([0.0]), NO_CHANGE.copy(), np.array([0.0]), folded_layers(model, x))


def _model_mistakes() -> list[Mistake]:
    nested = ("some Conv2d -> BatchNorm2d pairs left unfolded",
              "walk every module (model.modules()), including blocks that subclass nn.Sequential or sit inside "
              "other modules (a residual block), and fold every Conv2d followed by a BatchNorm2d")
    return [
        Mistake("the folded model returned in training mode",
                "the folded copy is for inference: call .eval() on it (copy.deepcopy(model).eval()) so that every "
                "layer, dropout included, runs in eval mode", _model_left_training, id="returned-in-training-mode"),
        Mistake(*nested, _model_plain_sequential_only, id="pairs-left-unfolded"),
        Mistake(*nested, _model_top_level_only, id="pairs-left-unfolded"),
        Mistake(*nested, _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["self-and-top"])), id="pairs-left-unfolded"),
        Mistake("only the course's ConvBlock folded (other Sequentials left unfolded)",
                "fold in every nn.Sequential (isinstance(block, nn.Sequential)), not only the course's ConvBlock "
                "class: a model built from plain nn.Sequential layers has pairs too",
                _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["convblock"])), id="pairs-left-unfolded"),
        Mistake("the layout of SmallResNet assumed (model.features read)",
                "fold_model receives any model: walk model.modules() and fold in every nn.Sequential, without "
                "reading attributes only the course's SmallResNet has (a plain nn.Sequential has no .features); "
                "otherwise pairs elsewhere are left unfolded",
                _model_variant(lambda m: _folded_copy(m, lambda f: [s for s in f.features.modules()
                                                                    if isinstance(s, nn.Sequential)])),
                id="model-layout-assumed"),
        Mistake("setattr with a dotted name (setattr(model, 'a.b', ...) adds a module, it does not replace the nested one)",
                "replace a nested module through its parent: parent = model.get_submodule('a'); setattr(parent, 'b', "
                "new), or block[i] = new while walking each nn.Sequential; a module added to a Sequential runs after "
                "its other layers", _model_variant(_dotted_setattr), id="dotted-setattr"),
        Mistake("only the first pair of each Sequential folded",
                "keep walking the whole Sequential after folding a pair (no break/return inside the loop): a block "
                "may hold several Conv2d -> BatchNorm2d pairs",
                _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["all"], per_block=1)), id="pairs-left-unfolded"),
        Mistake("the module after the batch norm replaced by nn.Identity instead of the batch norm",
                "replace the batch norm itself, seq[i + 1], by nn.Identity(): it is folded into the conv; the module "
                "after it (the ReLU) stays, and the batch norm left in place normalizes a second time",
                _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["all"], keep_bn=True, also="next")),
                id="wrong-module-replaced"),
        Mistake("a model folded in training mode",
                "its batch norms still normalize each batch with the batch's own statistics: call .eval() on "
                "the copy before folding (folding bakes in the running statistics, which only eval mode uses), "
                "and fold every Conv2d -> BatchNorm2d pair", _model_train_mode, id="folded-in-training-mode"),
        Mistake("batch norm kept after folding (applied twice)",
                "replace each folded batch norm by nn.Identity(): its work is already inside the conv",
                _model_bn_kept, id="batchnorm-kept"),
        Mistake("batch norm removed without folding it into the conv",
                "fold first: replace the conv by fold_batchnorm(conv, bn), then the batch norm by nn.Identity()",
                _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["all"], slip="unfolded")), id="removed-not-folded"),
        Mistake(*nested, _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["all"], pairs=1)),
                id="pairs-left-unfolded"),
        Mistake("a batch norm after an activation folded into the conv before it (Conv2d -> ReLU -> BatchNorm2d)",
                "only a batch norm DIRECTLY after a conv is folded: the ReLU between them is not linear, so "
                "bn(relu(conv(x))) is not a conv; check that item i + 1 is the BatchNorm2d and leave the others as they are",
                _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["all"], also="through-activation")),
                id="folded-through-activation"),
        Mistake("the module after each pair replaced too (its activation removed)",
                "replace only the batch norm (seq[i + 1]) by nn.Identity(); the ReLU after it stays",
                _model_variant(lambda m: _folded_copy(m, _SEQUENTIALS["all"], also="next")), id="activation-removed"),
        *(Mistake(f"the pairs folded with a fold that makes a mistake: {m_name}", f"fix fold_batchnorm first: {hint}",
                  _model_variant(lambda m, slip=slip: _folded_copy(m, _SEQUENTIALS["all"], slip=slip)),
                  id=f"fold-{id_}") for id_, m_name, slip, hint in _PAIR_SLIPS),
        Symptom(nested[0], "", lambda got: float(np.asarray(got["batchnorms_run"]).ravel()[0]) > 0,
                describe=lambda got: f"{nested[0]}: {int(np.asarray(got['batchnorms_run']).ravel()[0])} batch norms "
                                     f"still run in the folded model's forward. {nested[1]}", id="pairs-left-unfolded"),
        Symptom("no Conv2d or Linear layer could be read in the returned model",
                "a frozen TorchScript module (torch.jit.freeze) keeps its weights as constants, so nobody can "
                "see what was folded: return the folded nn.Module itself (script or freeze it afterwards, "
                "for deployment)", lambda got: np.asarray(got["folded_layers"]).size == 0, id="layers-unreadable"),
        Mistake("the batch norm was not folded into the convolution: its weights are unchanged",
                "the model's output is right, but each Conv2d before a batch norm holds the weights it had: a "
                "batch norm replaced by another layer (its affine map x * scale + shift) is not folded. Fold "
                "it into the conv's weight and bias (fold_batchnorm) and replace the batch norm by "
                "nn.Identity(): the folded model runs one layer less per pair",
                _model_unfolded, only=("folded_layers",), id="batchnorm-not-folded"),
    ]


# the fold_batchnorm slips a fold_model inherits when it folds each pair with a wrong fold
_PAIR_SLIPS = (("eps-missing", "running variance without eps", "eps-missing", _EPS),
               ("eps-hard-coded", "eps hard-coded to 1e-5", "eps-hard-coded",
                "use the layer's own bn.eps: a BatchNorm may be built with another eps"),
               ("multiplied-by-std", "multiplied by sqrt(var + eps) instead of divided by it", "multiplied-by-std", _EPS),
               ("eps-outside-sqrt", "eps outside the square root", "eps-outside-sqrt", _EPS),
               ("divided-by-variance", "divided by the variance instead of the standard deviation", "divided-by-variance",
                "scale = gamma / torch.sqrt(running_var + eps)"),
               ("gamma-beta-swapped", "gamma and beta swapped", "gamma-beta-swapped", _EPS),
               *((id_, name, slip, hint) for id_, name, slip, hint in _FOLDING_OWN
                 if slip not in ("bias_dropped", "wrong-axis", "conv-shape")))
# (a wrong-axis fold raises: explain_fold_error names it; some models' convs have a bias of their own)


ENTRIES = {"fold_batchnorm": _fold_mistakes, "fold_model": _model_mistakes}

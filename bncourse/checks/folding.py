"""Checks for the folding notebook: ``fold_batchnorm(layer, bn)`` and ``fold_model(model)``.

The learner's functions take and return torch modules; the checks call them through wrappers
that take and return numpy arrays only, so the grader can re-judge a test cell from receipts:

* ``fold_batchnorm``: from seeded arrays (the layer's weight and bias, the batch norm's gamma,
  beta, running statistics and eps, an input x) the wrapper builds a float64 ``Conv2d``
  (padding 1, stride 1 or 2) or ``Linear`` and a ``BatchNorm2d``/``1d`` in eval mode, calls the learner's
  function, and returns the folded weight, the folded bias (zeros when the folded layer has
  none), the folded layer's output on x, and what changed in the caller's layer and batch norm
  (``caller_changes``, below: nothing may). The reference is ``torch.nn.utils.fusion``'s
  ``fuse_conv_bn_eval`` / ``fuse_linear_bn_eval``.
* ``fold_model``: the wrapper builds a small seeded model (float64) with random running statistics
  (a ``SmallResNet``, a plain ``nn.Sequential`` with two pairs, nested ``Sequential``s: ``MODEL_KINDS``), hands it over in *training* mode (as a model is right after training), and returns
  the folded model's output on x, how many batch-norm layers still *run* in its forward beyond
  those that stay (``BATCHNORMS_KEPT``: a batch norm after an activation is not folded; a batch
  norm left registered but never called, as in an FX-based fold, is allowed), what
  changed in the caller's model, and the weights and biases of the Conv2d/Linear layers that run
  (``folded_layers``: a multiset, so an FX ``GraphModule`` holding the folded convs passes; a batch
  norm replaced by its affine map, convs untouched, does not: red team 5's F4). The reference is the
  original model's output in eval mode and its pairs folded by hand (``_reference_folded_layers``).

``caller_changes`` is (parameters and buffers changed, modules whose training mode changed,
batch-norm layers removed) over every module the function received: an in-place change, one
through an alias (``var = bn.running_var; var += eps``) and ``model.eval()`` on the caller's
model all count.
"""

from __future__ import annotations


import numpy as np
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from bncourse.checks import catalogue
from bncourse.checks.core import Case, CheckResult, Symptom, check_function
from bncourse.checks.inputs import case_seed
from bncourse.checks.layers_that_run import (fingerprint, folded_layers, is_batchnorm, layers_in_training,
                                             layers_that_run, run_counting, to_array, weight_and_bias)

__all__ = ["check_fold_batchnorm", "check_fold_model"]

FOLD_OUTPUTS = ("weight", "bias", "out", "caller_changes", "parameters")
MODEL_OUTPUTS = ("out", "batchnorms_run", "caller_changes", "training_layers", "folded_layers")
NO_CHANGE = np.zeros(3)


def _snapshot(*modules: nn.Module) -> dict:
    """Every parameter and buffer (cloned), every module's training flag, the number of batch norms."""
    tensors, modes = {}, {}
    for i, module in enumerate(modules):
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            tensors[f"{i}.{name}"] = t.detach().clone()
        for name, m in module.named_modules():
            modes[f"{i}.{name}"] = m.training
    return {"tensors": tensors, "modes": modes, "bns": sum(is_batchnorm(m) for mod in modules for m in mod.modules())}


def caller_changes(before: dict, *modules: nn.Module) -> np.ndarray:
    """(tensors changed or gone, modes changed, batch norms removed) since ``before``, as floats."""
    after = _snapshot(*modules)
    changed = sum(k not in after["tensors"] or after["tensors"][k].shape != t.shape
                  or not torch.equal(after["tensors"][k], t) for k, t in before["tensors"].items())
    modes = sum(k in after["modes"] and after["modes"][k] != v for k, v in before["modes"].items())
    return np.array([changed, modes, before["bns"] - after["bns"]], dtype=np.float64)


def _describe_changes(got) -> str:
    tensors, modes, bns = (int(v) for v in np.asarray(got["caller_changes"]).ravel()[:3])
    what = ([f"{tensors} of its parameters or buffers changed"] if tensors else []) + (
        [f"{modes} of its modules switched mode (.eval() or .train() on the caller's object)"] if modes else []) + (
        [f"{bns} batch-norm layers removed from it"] if bns else [])
    return ("the caller's module changed: " + ", ".join(what) + ". Work on a copy (copy.deepcopy) and build new "
            "parameters: an in-place operation on a tensor you read from the caller (w = layer.weight; w *= scale, "
            "var = bn.running_var; var += eps) changes the caller's tensor too")


CALLER_CHANGED = Symptom("the caller's module changed (in place or through an alias)", "",
                         lambda got: bool(np.any(np.asarray(got["caller_changes"]) != 0)), describe=_describe_changes,
                         id="caller-module-changed")

NOT_PARAMETERS = Symptom("the folded weight or bias stored as a plain tensor, not an nn.Parameter",
                         "the folded layer is a layer like any other (in parameters() and state_dict(), ready to "
                         "fine-tune): new.weight = nn.Parameter(w_folded), new.bias = nn.Parameter(b_folded)",
                         lambda got: bool(np.any(np.asarray(got["parameters"]) == 0)), id="fold-not-parameters")


# ---------------------------------------------------------------------------------------------
# One pair
# ---------------------------------------------------------------------------------------------


def _pair_case(seed: int, kind: str, c_in: int, c_out: int, bias: bool, eps: float = 1e-5, stride: int = 1):
    def make():
        rng = np.random.default_rng(seed)
        shape = (c_out, c_in, 3, 3) if kind == "conv" else (c_out, c_in)
        weight = rng.normal(size=shape) / np.sqrt(np.prod(shape[1:]))
        b = rng.normal(size=c_out) if bias else None
        gamma = rng.uniform(0.5, 2.0, size=c_out) * rng.choice([-1.0, 1.0], size=c_out)
        beta = rng.normal(size=c_out)
        mean = rng.normal(size=c_out) * 2
        var = rng.uniform(0.05, 3.0, size=c_out)
        var[0] = 1e-4  # a channel whose running variance is comparable to eps
        x = rng.normal(size=(4, c_in, 5, 5) if kind == "conv" else (6, c_in))
        return (weight, b, gamma, beta, mean, var, eps, x) + ((stride,) if stride != 1 else ())
    return make


_PAIR_VISIBLE = [
    ("Conv2d 3->4 with bias", 0, "conv", 3, 4, True),
    ("Conv2d 4->4 without bias (as before every BN in SmallResNet)", 1, "conv", 4, 4, False),
    ("Linear 5->5 with bias", 2, "linear", 5, 5, True),
    ("Linear 6->3 without bias", 3, "linear", 6, 3, False),
    ("Conv2d 3->3 with bias, eps=1e-3", 4, "conv", 3, 3, True),
    ("Conv2d 2->3 without bias, stride 2", 5, "conv", 2, 3, False),
]
_PAIR_HIDDEN = [
    ("Conv2d 2->6 without bias", 100, "conv", 2, 6, False),
    ("Conv2d 5->5 with bias", 101, "conv", 5, 5, True),
    ("Linear 4->4 without bias, eps=1e-3", 102, "linear", 4, 4, False),
    ("Conv2d 3->2 with bias, stride 2, eps=1e-2", 103, "conv", 3, 2, True),
]


def _pair_cases(hidden: bool) -> list[Case]:
    cases = []
    for name, seed, kind, c_in, c_out, bias in _PAIR_HIDDEN if hidden else _PAIR_VISIBLE:
        eps = 1e-3 if "eps=1e-3" in name else 1e-2 if "eps=1e-2" in name else 1e-5
        stride = 2 if "stride 2" in name else 1
        cases.append(Case(name, _pair_case(case_seed("fold_batchnorm", name, seed, hidden), kind, c_in, c_out, bias, eps,
                                           stride)))
    return cases


def _build_pair(weight, bias, gamma, beta, mean, var, eps, stride=1):
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    c_out = weight.shape[0]
    if weight.ndim == 4:
        layer = nn.Conv2d(weight.shape[1], c_out, weight.shape[2], stride=stride, padding=1, bias=bias is not None,
                          dtype=torch.float64)
        bn = nn.BatchNorm2d(c_out, eps=eps, dtype=torch.float64)
    else:
        layer = nn.Linear(weight.shape[1], c_out, bias=bias is not None, dtype=torch.float64)
        bn = nn.BatchNorm1d(c_out, eps=eps, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(t(weight))
        if bias is not None:
            layer.bias.copy_(t(bias))
        bn.weight.copy_(t(gamma))
        bn.bias.copy_(t(beta))
        bn.running_mean.copy_(t(mean))
        bn.running_var.copy_(t(var))
    return layer.eval(), bn.eval()


def _pair_runner(fold):
    """Arrays in, arrays out: the learner's ``fold(layer, bn)`` on a freshly built eval-mode pair."""
    def run(weight, bias, gamma, beta, mean, var, eps, x, stride=1):
        layer, bn = _build_pair(weight, bias, gamma, beta, mean, var, eps, stride)
        before = _snapshot(layer, bn)
        folded = fold(layer, bn)
        if not isinstance(folded, (nn.Conv2d, nn.Linear)):
            raise TypeError(f"fold_batchnorm should return an nn.Conv2d or nn.Linear, got {type(folded).__name__}")
        with torch.no_grad():
            out = folded(torch.tensor(x, dtype=torch.float64))
        b = folded.bias if folded.bias is not None else torch.zeros(folded.weight.shape[0], dtype=torch.float64)
        parameters = np.array([isinstance(folded.weight, nn.Parameter),
                               folded.bias is None or isinstance(folded.bias, nn.Parameter)], dtype=np.float64)
        return to_array(folded.weight), to_array(b), to_array(out), caller_changes(before, layer, bn), parameters
    return run


def _torch_fuse(layer, bn):
    return (fuse_conv_bn_eval if isinstance(layer, nn.Conv2d) else fuse_linear_bn_eval)(layer, bn)


# (error type, what torch or Python says, the catalogue entry whose mistake raises it: exercise, id)
_ERRORS_NAMED = (("RuntimeError", "must have the same dtype", "fold_batchnorm", "fresh-layer-float32"),
                 ("RuntimeError", "Input type (double) and", "fold_batchnorm", "fresh-layer-float32"),
                 ("RuntimeError", "should be the same", "fold_batchnorm", "fresh-layer-float32"),
                 ("RuntimeError", "must match the size of tensor", "fold_batchnorm", "wrong-axis"),
                 ("RuntimeError", "expects a tensor with <= 2 dimensions", "fold_batchnorm", "scale-shaped-for-conv"),
                 ("RuntimeError", "mat1 and mat2", "fold_batchnorm", "scale-shaped-for-conv"),
                 ("AttributeError", "has no attribute 'features'", "fold_model", "model-layout-assumed"),
                 ("RuntimeError", "input to conv2d, but got input of size", "fold_model", "dotted-setattr"))


def explain_fold_error(error_type: str, text: str) -> str:
    """An error raised inside a fold, named by the catalogue entry whose mistake raises it (the scale
    along the wrong weight axis, shaped for a Conv2d on a Linear, the course model's layout assumed)."""
    for kind, says, exercise, id_ in _ERRORS_NAMED:
        if error_type == kind and says in text:
            entry = next((m for m in catalogue.mistakes(exercise) if m.id == id_), None)
            if entry is not None:
                return f"{entry.name}: {entry.hint} (the error: {text.split(' (at')[0]})"
    return ""


def check_fold_batchnorm(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(layer, bn)`` return one Conv2d/Linear equal to ``bn(layer(x))`` (bn in eval mode)?"""
    if not callable(fn):
        return check_function("fold_batchnorm", fn, None, [])
    return check_function("fold_batchnorm", _pair_runner(fn), _pair_runner(_torch_fuse), _pair_cases(hidden),
                          lambda: [CALLER_CHANGED, NOT_PARAMETERS, *catalogue.mistakes("fold_batchnorm")],
                          outputs=FOLD_OUTPUTS,
                          rtol=1e-9, atol=1e-10, forbid_torch="folding", explain_error=explain_fold_error)


# ---------------------------------------------------------------------------------------------
# A whole model
# ---------------------------------------------------------------------------------------------


MODEL_KINDS = ("SmallResNet", "a plain nn.Sequential with two Conv2d -> BatchNorm2d pairs",
               "nested nn.Sequentials, pairs at two depths",
               "batch norms built with eps=1e-3 and eps=1e-2",
               "a Conv2d -> ReLU -> BatchNorm2d block (that batch norm stays) before a pair")
# how many batch norms of each kind are not directly after a conv: they stay in the folded model, and run
BATCHNORMS_KEPT = {4: 1}


def _pair(c_in: int, c_out: int, bias: bool = False, eps: float = 1e-5) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=bias), nn.BatchNorm2d(c_out, eps=eps)]


def _build_model(kind: int) -> nn.Module:
    """``MODEL_KINDS[kind]``: the course's SmallResNet (one pair per ConvBlock), or plain Sequentials
    holding several pairs each (a fold that stops after a block's first pair, or folds only ConvBlocks,
    shows there)."""
    from bncourse.models import SmallResNet

    head = [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)]
    if kind == 1:
        return nn.Sequential(*_pair(1, 4), nn.ReLU(), *_pair(4, 4, bias=True), nn.ReLU(), *head)
    if kind == 3:
        return nn.Sequential(*_pair(1, 4, eps=1e-3), nn.ReLU(), *_pair(4, 4, bias=True, eps=1e-2), nn.ReLU(), *head)
    if kind == 4:
        return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(4), *_pair(4, 4), nn.ReLU(),
                             *head)
    if kind == 2:
        return nn.Sequential(nn.Sequential(*_pair(1, 4), nn.ReLU(), *_pair(4, 4)), nn.ReLU(),
                             nn.Sequential(nn.Sequential(*_pair(4, 4, bias=True)), nn.ReLU()), *head)
    return SmallResNet(in_channels=1, num_classes=3, widths=(4, 6, 6, 8))


def _seeded_model(seed: int, kind: int = 0) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = _build_model(int(kind)).double()
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=torch.float64))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=torch.float64) * 2 + 0.1)
                m.weight.copy_(torch.rand(m.num_features, generator=gen, dtype=torch.float64) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen, dtype=torch.float64) * 0.5)
    return model.train()  # as a model is right after training


def _model_case(seed: int, n: int, size: int, kind: int = 0):
    def make():
        rng = np.random.default_rng(seed)
        return rng.normal(size=(n, 1, size, size)), seed, kind
    return make


_MODEL_VISIBLE = [("SmallResNet, 4 images 8x8", 20, 4, 8, 0), ("SmallResNet, 2 images 12x12", 21, 2, 12, 0),
                  (f"{MODEL_KINDS[1]}, 2 images 6x6", 22, 2, 6, 1), (f"{MODEL_KINDS[2]}, 3 images 6x6", 23, 3, 6, 2),
                  (f"{MODEL_KINDS[3]}, 2 images 6x6", 24, 2, 6, 3), (f"{MODEL_KINDS[4]}, 2 images 6x6", 25, 2, 6, 4)]
_MODEL_HIDDEN = [("SmallResNet, 3 images 10x10", 0, 3, 10, 0), ("SmallResNet, 1 image 8x8", 0, 1, 8, 0),
                 (f"{MODEL_KINDS[1]}, 1 image 5x5", 0, 1, 5, 1), (f"{MODEL_KINDS[2]}, 2 images 7x7", 0, 2, 7, 2),
                 (f"{MODEL_KINDS[3]}, 1 image 7x7", 0, 1, 7, 3), (f"{MODEL_KINDS[4]}, 3 images 5x5", 0, 3, 5, 4)]


def _model_cases(hidden: bool) -> list[Case]:
    if hidden:
        return [Case(name, _model_case(case_seed("fold_model", name, seed, True), n, size, kind))
                for name, seed, n, size, kind in _MODEL_HIDDEN]
    return [Case(name, _model_case(seed, n, size, kind)) for name, seed, n, size, kind in _MODEL_VISIBLE]


def _eval_out(model: nn.Module, x: np.ndarray) -> np.ndarray:
    was = model.training
    model.eval()
    with torch.no_grad():
        out = to_array(model(torch.tensor(x)))
    model.train(was)
    return out


def _model_runner(fold_model):
    def run(x, seed, kind=0):
        model = _seeded_model(seed, kind)
        before = _snapshot(model)
        folded = fold_model(model)
        if not isinstance(folded, nn.Module):
            raise TypeError(f"fold_model should return an nn.Module, got {type(folded).__name__}")
        out, ran = run_counting(folded, x, BATCHNORMS_KEPT.get(int(kind), 0))  # in whatever mode fold_model left it
        return out, ran, caller_changes(before, model), layers_in_training(folded), folded_layers(folded, x)
    return run


def _reference_folded_layers(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """``folded_layers`` of ``model`` folded by hand (eval mode, each batch norm that takes a conv's
    output folded into that conv; torch's fusion is not needed, so this runs in a grading kernel too)."""
    model = model.eval()
    ran, paired = layers_that_run(model, x, pairs=True)
    layers = []
    for m in ran:
        w, b = weight_and_bias(m)
        bn = paired.get(m)
        if bn is not None:
            scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
            w, b = w * scale.reshape(-1, *[1] * (w.dim() - 1)), (b - bn.running_mean) * scale + bn.bias.detach()
        layers.append((w, b))
    return fingerprint(layers)


def _model_reference(x, seed, kind=0):
    model = _seeded_model(seed, kind)
    return _eval_out(model, x), np.array([0.0]), NO_CHANGE.copy(), np.array([0.0]), _reference_folded_layers(model, x)


def check_fold_model(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(model)`` return a copy of the model, batch norm folded away, with the eval-mode outputs?"""
    if not callable(fn):
        return check_function("fold_model", fn, None, [])
    return check_function("fold_model", _model_runner(fn), _model_reference, _model_cases(hidden),
                          lambda: [CALLER_CHANGED, *catalogue.mistakes("fold_model")], outputs=MODEL_OUTPUTS, rtol=1e-8, atol=1e-10,
                          check_dtype=False,
                          forbidden=("fold_batchnorm",), forbid_torch="folding", explain_error=explain_fold_error)

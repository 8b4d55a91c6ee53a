"""Do the folding checks pass a right fold and name each learner's mistake?

The wrong solutions are written the way a learner would write them, not with the check's helpers.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bncourse.checks import catalogue
from bncourse.checks import folding as cf
from bncourse.grading import pipeline as grading


def fold_batchnorm(layer, bn):
    std = torch.sqrt(bn.running_var + bn.eps)
    scale = bn.weight / std
    new = copy.deepcopy(layer)
    view = [-1] + [1] * (layer.weight.dim() - 1)
    bias = layer.bias if layer.bias is not None else torch.zeros(layer.weight.shape[0], dtype=layer.weight.dtype)
    with torch.no_grad():
        new.weight = nn.Parameter(layer.weight * scale.view(view))
        new.bias = nn.Parameter((bias - bn.running_mean) * scale + bn.bias)
    return new


def fold_model(model):
    model = copy.deepcopy(model).eval()
    for block in model.modules():
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = fold_batchnorm(block[i], block[i + 1])
                    block[i + 1] = nn.Identity()
    return model


def fold_no_eps(layer, bn):
    scale = bn.weight / bn.running_var.sqrt()
    new = copy.deepcopy(layer)
    b = layer.bias if layer.bias is not None else 0
    new.weight = nn.Parameter((layer.weight * scale.view(-1, *[1] * (layer.weight.dim() - 1))).detach())
    new.bias = nn.Parameter((bn.bias + (b - bn.running_mean) * scale).detach())
    return new


def fold_forgets_bias(layer, bn):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    new = copy.deepcopy(layer)
    new.weight = nn.Parameter((layer.weight * scale.view(-1, *[1] * (layer.weight.dim() - 1))).detach())
    if layer.bias is not None:
        new.bias = nn.Parameter(((layer.bias - bn.running_mean) * scale + bn.bias).detach())
    return new


def fold_gamma_twice(layer, bn):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    new = copy.deepcopy(layer)
    b = layer.bias if layer.bias is not None else torch.zeros_like(bn.bias)
    new.weight = nn.Parameter((layer.weight * scale.view(-1, *[1] * (layer.weight.dim() - 1))).detach())
    new.bias = nn.Parameter((bn.weight * (b - bn.running_mean) * scale + bn.bias).detach())
    return new


def fold_wrong_axis(layer, bn):
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    new = copy.deepcopy(layer)
    b = layer.bias if layer.bias is not None else torch.zeros_like(bn.bias)
    w = layer.weight * (scale[None, :, None, None] if layer.weight.dim() == 4 else scale[None, :])
    new.weight = nn.Parameter(w.detach())
    new.bias = nn.Parameter(((b - bn.running_mean) * scale + bn.bias).detach())
    return new


def fold_model_in_train_mode(model):
    return copy.deepcopy(model)  # "folded": nothing replaced, still in training mode


def fold_model_keeps_bn(model):
    model = copy.deepcopy(model).eval()
    for block in model.modules():
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = fold_batchnorm(block[i], block[i + 1])
    return model


def fold_model_in_place(model):
    model.eval()
    for block in model.modules():
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i] = fold_batchnorm(block[i], block[i + 1])
                    block[i + 1] = nn.Identity()
    return model


class _KeptOutOfTheTree(nn.Module):
    """Red team 2's N4: runs a batch norm that is no longer a submodule (no module hook sees it)."""

    def __init__(self, bn, as_function=False):
        super().__init__()
        self.__dict__["_bn"] = [bn.eval()]
        self.__dict__["_as_function"] = as_function

    def forward(self, x):
        bn = self._bn[0]
        if self._as_function:  # no module at all: the functional batch norm on the kept statistics
            return torch.nn.functional.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False,
                                                  0.0, bn.eps)
        return type(bn).forward(bn, x)


def _fold_model_hiding_bn(as_function):
    def fold_model(model):
        model = copy.deepcopy(model).eval()
        for module in list(model.modules()):
            for name, child in list(module.named_children()):
                if isinstance(child, nn.modules.batchnorm._BatchNorm):
                    setattr(module, name, _KeptOutOfTheTree(child, as_function))
        return model
    return fold_model


@pytest.mark.parametrize("hidden", [False, True])
def test_do_right_folds_pass(hidden):
    assert cf.check_fold_batchnorm(fold_batchnorm, hidden).passed
    assert cf.check_fold_model(fold_model, hidden).passed


def test_is_handing_the_fold_to_the_course_or_to_torch_refused():
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    from bncourse.folding import fold_batchnorm as ref_fold, fold_model as ref_model

    def torch_fold(layer, bn):
        return (fuse_conv_bn_eval if isinstance(layer, nn.Conv2d) else fuse_linear_bn_eval)(layer, bn)

    for result in (cf.check_fold_batchnorm(ref_fold), cf.check_fold_model(ref_model),
                   cf.check_fold_batchnorm(torch_fold)):
        assert not result.passed and "handed the work to" in str(result), str(result)


@pytest.mark.parametrize("wrong, name", [
    (fold_no_eps, "running variance without eps"),
    (fold_forgets_bias, "the bias of a bias-free conv forgotten"),
    (fold_gamma_twice, "gamma applied to the bias twice"),
    (fold_wrong_axis, "per-output-channel scale broadcast along the wrong weight axis"),
])
def test_is_a_wrong_fold_named(wrong, name):
    result = cf.check_fold_batchnorm(wrong)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


@pytest.mark.parametrize("wrong, name", [
    (fold_model_in_train_mode, "a model folded in training mode"),
    (fold_model_keeps_bn, "batch norm kept after folding"),
    (fold_model_in_place, "the caller's module changed"),
    (_fold_model_hiding_bn(False), "some Conv2d -> BatchNorm2d pairs left unfolded"),  # counted by the ops that run
    (_fold_model_hiding_bn(True), "some Conv2d -> BatchNorm2d pairs left unfolded"),
])
def test_is_a_wrong_model_fold_named(wrong, name):
    result = cf.check_fold_model(wrong)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


def test_is_every_fold_mistake_recognized_as_itself():
    for mistake in catalogue.mistakes("fold_batchnorm"):
        result = cf.check_function("fold", mistake.fn, cf._pair_runner(cf._torch_fuse), cf._pair_cases(False),
                                   catalogue.mistakes("fold_batchnorm"), outputs=cf.FOLD_OUTPUTS, rtol=1e-9, atol=1e-10,
                                   forbid_torch="folding", explain_error=cf.explain_fold_error)
        assert result.diagnosis.startswith(mistake.name), (mistake.name, result.diagnosis)


def test_is_every_model_fold_mistake_recognized_as_itself():
    entries = catalogue.mistakes("fold_model")
    for mistake in [e for e in entries if hasattr(e, "fn")]:  # a Symptom reads outputs; no function to run
        result = cf.check_function("fold_model", mistake.fn, cf._model_reference, cf._model_cases(False), entries,
                                   outputs=cf.MODEL_OUTPUTS, rtol=1e-8, atol=1e-10, check_dtype=False, forbid_torch="",
                                   explain_error=cf.explain_fold_error)
        assert not result.passed and result.diagnosis.startswith(mistake.name), (mistake.name, result.diagnosis)


def test_is_a_function_returning_the_wrong_type_told_so():
    result = cf.check_fold_batchnorm(lambda layer, bn: nn.Sequential(layer, bn))
    assert not result.passed and "should return an nn.Conv2d or nn.Linear" in result.diagnosis


CELL = """from bncourse.checks.folding import check_fold_batchnorm
check_fold_batchnorm(fold_batchnorm).assert_passed()
check_fold_batchnorm(fold_batchnorm, hidden=True).assert_passed()"""


def _receipts(fn, monkeypatch) -> list:
    from bncourse.checks import replay

    published = []
    monkeypatch.setenv(replay.ENV_FORCE, "1")
    monkeypatch.setattr(replay, "publish", lambda entry: published.append(replay.pack(entry)))
    cf.check_fold_batchnorm(fn)
    cf.check_fold_batchnorm(fn, hidden=True)
    return published


def test_can_the_grader_rejudge_a_fold_cell_outside_the_kernel(monkeypatch):
    verdicts = grading.replay_cells([
        {"id": "right", "source": CELL, "receipts": _receipts(fold_batchnorm, monkeypatch)},
        {"id": "wrong", "source": CELL, "receipts": _receipts(fold_gamma_twice, monkeypatch)},
    ])
    assert verdicts["right"] == ["pass", ""]
    assert verdicts["wrong"][0] == "fail"

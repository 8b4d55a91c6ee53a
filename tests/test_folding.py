"""Does folding batch norm into the layer before it keep the outputs, and refuse what cannot be folded?"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

from bncourse.folding import count_batchnorms, fold_batchnorm, fold_model
from bncourse.models import SmallCNN, SmallResNet


def _random_stats(model: nn.Module, gen: torch.Generator) -> None:
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=m.running_mean.dtype))
                m.running_var.copy_(torch.rand(m.num_features, generator=gen, dtype=m.running_var.dtype) * 3 + 0.05)
                m.weight.copy_(torch.randn(m.num_features, generator=gen, dtype=m.weight.dtype))
                m.bias.copy_(torch.randn(m.num_features, generator=gen, dtype=m.bias.dtype))


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("kind", ["conv", "linear"])
def test_does_fold_batchnorm_match_torch_fusion_and_the_pair_in_float64(kind, bias):
    gen = torch.Generator().manual_seed(0)
    if kind == "conv":
        layer = nn.Conv2d(3, 5, 3, stride=2, padding=1, bias=bias, dtype=torch.float64)
        bn = nn.BatchNorm2d(5, dtype=torch.float64)
        x = torch.randn(4, 3, 7, 7, generator=gen, dtype=torch.float64)
        fuse = fuse_conv_bn_eval
    else:
        layer, bn = nn.Linear(6, 4, bias=bias, dtype=torch.float64), nn.BatchNorm1d(4, dtype=torch.float64)
        x = torch.randn(5, 6, generator=gen, dtype=torch.float64)
        fuse = fuse_linear_bn_eval
    _random_stats(bn, gen)
    layer.eval(), bn.eval()
    folded = fold_batchnorm(layer, bn)
    theirs = fuse(layer, bn)
    with torch.no_grad():
        assert (folded(x) - bn(layer(x))).abs().max() < 1e-12
        assert (folded.weight - theirs.weight).abs().max() < 1e-12
        assert (folded.bias - theirs.bias).abs().max() < 1e-12
    assert type(folded) is type(layer) and (layer.bias is None) == (not bias)  # the original is unchanged


def test_does_fold_model_keep_smallresnet_outputs_and_remove_every_batchnorm():
    torch.manual_seed(0)
    model = SmallResNet(in_channels=1, num_classes=10, widths=(8, 16, 16, 16)).double()
    _random_stats(model, torch.Generator().manual_seed(1))
    model.train()
    folded = fold_model(model)
    x = torch.randn(3, 1, 16, 16, dtype=torch.float64)
    assert model.training, "fold_model must not change the model it was given"
    with torch.no_grad():
        diff = (folded(x) - model.eval()(x)).abs().max().item()
    assert diff < 1e-12
    assert count_batchnorms(folded) == 0 and count_batchnorms(model) == len(
        [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]) > 0


def test_does_a_float32_fold_stay_within_float32_rounding():
    torch.manual_seed(2)
    model = SmallCNN(in_channels=1, widths=(8, 16)).eval()
    _random_stats(model, torch.Generator().manual_seed(3))
    x = torch.randn(8, 1, 8, 8)
    with torch.no_grad():
        diff = (fold_model(model)(x) - model(x)).abs().max().item()
    assert diff < 1e-4


@pytest.mark.parametrize("make, words", [
    (lambda: (nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3)), "training mode"),
    (lambda: (nn.Conv2d(2, 3, 1), nn.BatchNorm2d(4).eval()), "has 4 channels"),
    (lambda: (nn.Linear(2, 3), nn.BatchNorm2d(3).eval()), "a Linear folds with a BatchNorm1d"),
    (lambda: (nn.ReLU(), nn.BatchNorm2d(3).eval()), "got ReLU"),
    (lambda: (nn.Conv2d(2, 3, 1), nn.BatchNorm2d(3, track_running_stats=False).eval()), "no running statistics"),
])
def test_does_fold_batchnorm_refuse_what_cannot_be_folded(make, words):
    with pytest.raises(ValueError) as err:
        fold_batchnorm(*make())
    assert words in str(err.value)


def test_does_the_inference_timer_report_both_models_and_their_difference(monkeypatch):
    from bncourse import device as dev
    from bncourse.folding import compare_inference_time

    waited = []
    monkeypatch.setattr(dev, "synchronize", lambda d=None: waited.append(torch.device(d).type))
    torch.manual_seed(4)
    model = SmallCNN(in_channels=1, widths=(4, 8)).eval()
    r = compare_inference_time(model, fold_model(model), torch.randn(2, 1, 8, 8), repeats=2, inner=1)
    assert set(r) == {"unfolded_ms", "folded_ms", "speedup", "speedup_range", "max_abs_diff", "repeats",
                      "device", "clock"}
    # every timed block waits for x's device at both ends (a no-op here; cuda or mps on a GPU)
    assert waited == ["cpu"] * 2 * (2 + 2 * 2) and r["clock"] == "CPU time of this process"
    assert r["unfolded_ms"] > 0 and r["folded_ms"] > 0 and r["max_abs_diff"] < 1e-4
    lo, hi = r["speedup_range"]
    assert lo <= r["speedup"] <= hi  # the median paired ratio lies within the pairs' range

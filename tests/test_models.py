"""The course's networks: shapes, the normalization option, BN before/after the activation."""

import pytest
import torch
from torch import nn

from bncourse.models import BNPaperMLP, SmallCNN, SmallResNet, make_norm, norm_layers


def test_does_the_bn_paper_mlp_have_three_hidden_layers_of_100_sigmoids():
    m = BNPaperMLP(64, 10, batch_norm=True)
    assert [l.out_features for l in m.linears] == [100, 100, 100]
    assert len(norm_layers(m)) == 3
    assert len(norm_layers(BNPaperMLP(64, 10, batch_norm=False))) == 0


def test_does_forward_with_preact_return_the_last_sigmoid_input():
    torch.manual_seed(0)
    m = BNPaperMLP(64, 10, batch_norm=False).eval()
    x = torch.randn(7, 1, 8, 8)
    logits, preact = m.forward_with_preact(x)
    assert logits.shape == (7, 10) and preact.shape == (7, 100)
    assert torch.allclose(m.head(torch.sigmoid(preact)), logits)
    assert torch.equal(m(x), logits)


def test_is_the_mlp_initialized_with_the_asked_gaussian_scale():
    torch.manual_seed(0)
    m = BNPaperMLP(784, 10, init_std=0.1)
    assert abs(m.linears[0].weight.std().item() - 0.1) < 0.005
    assert m.linears[0].bias.abs().max() == 0


def test_does_the_mlp_say_what_input_size_it_got():
    with pytest.raises(ValueError, match="64 features"):
        BNPaperMLP(64, 10)(torch.randn(2, 784))


@pytest.mark.parametrize("model_cls", [SmallCNN, SmallResNet])
@pytest.mark.parametrize("size", [8, 32])
def test_do_the_cnns_take_digits_and_cifar_sized_images(model_cls, size):
    kw = {"widths": (8, 8, 16, 16)} if model_cls is SmallResNet else {"widths": (8, 16, 16)}
    m = model_cls(3, 10, **kw)
    assert m(torch.randn(2, 3, size, size)).shape == (2, 10)


@pytest.mark.parametrize("norm, kind", [("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm), ("group", nn.GroupNorm)])
def test_does_norm_pick_the_layer(norm, kind):
    m = SmallCNN(1, 10, widths=(8, 16), norm=norm)
    assert any(isinstance(mod, kind) for mod in m.modules())


def test_does_norm_none_remove_every_normalization_and_keep_conv_biases():
    m = SmallCNN(1, 10, widths=(8, 16), norm="none")
    assert not any(isinstance(mod, (nn.BatchNorm2d, nn.GroupNorm)) for mod in m.modules())
    assert all(c.bias is not None for c in m.modules() if isinstance(c, nn.Conv2d))


def test_can_a_learners_own_norm_factory_be_swapped_in():
    made = []

    class MyNorm(nn.Module):
        def __init__(self, c):
            super().__init__()
            made.append(c)
            self.register_buffer("running_mean", torch.zeros(c))
            self.register_buffer("running_var", torch.ones(c))

        def forward(self, x):
            return x

    m = SmallResNet(1, 10, widths=(8, 8, 16, 16), norm=MyNorm)
    assert made and len(norm_layers(m)) == len(made)
    assert m(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_does_bn_position_put_the_norm_before_or_after_the_relu():
    before = SmallCNN(1, 10, widths=(8,), bn_position="before").features[0]
    after = SmallCNN(1, 10, widths=(8,), bn_position="after").features[0]
    assert [type(l) for l in before] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(l) for l in after] == [nn.Conv2d, nn.ReLU, nn.BatchNorm2d]
    assert before[0].bias is None and after[0].bias is not None  # BN's beta replaces the bias only before


def test_are_bad_options_named_in_the_error():
    with pytest.raises(ValueError, match="bn_position"):
        SmallCNN(bn_position="middle")
    with pytest.raises(ValueError, match="norm must be one of"):
        make_norm("instance?", 4)

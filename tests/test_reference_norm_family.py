"""Do the numpy layer, group and instance norms match PyTorch (float64, 1e-10) and numerical gradients?"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bncourse.gradcheck import numerical_gradient, rel_error
from bncourse.reference.groupnorm import (
    groupnorm_backward, groupnorm_forward, instancenorm_backward, instancenorm_forward,
    layernorm_images_backward, layernorm_images_forward,
)
from bncourse.reference.layernorm import LayerNormCache, layernorm_backward, layernorm_forward

TOL = 1e-10


def _max_diff(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a) - np.asarray(b))))


def _torch_grads(fn, x, gamma, beta, dout):
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    out = fn(xt, gt, bt)
    out.backward(torch.tensor(dout))
    return out.detach().numpy(), xt.grad.numpy(), gt.grad.numpy(), bt.grad.numpy()


@pytest.mark.parametrize("n, d, seed", [(4, 7, 0), (1, 5, 1), (16, 3, 2), (3, 64, 3)])
def test_does_layernorm_match_torch_forward_and_backward(n, d, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(3.0, 2.0, size=(n, d)) * rng.uniform(0.1, 5, size=(n, 1))
    gamma, beta, dout = rng.normal(size=d), rng.normal(size=d), rng.normal(size=(n, d))
    out, cache = layernorm_forward(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = layernorm_backward(dout, cache)
    ref = _torch_grads(lambda a, g, b: F.layer_norm(a, (d,), g, b, 1e-5), x, gamma, beta, dout)
    for mine, theirs in zip((out, dx, dgamma, dbeta), ref):
        assert _max_diff(mine, theirs) < TOL
    assert isinstance(cache, LayerNormCache) and cache.mu.shape == (n, 1)


@pytest.mark.parametrize("shape, G, seed", [((2, 6, 3, 4), 3, 0), ((1, 4, 2, 2), 2, 1), ((3, 8, 1, 5), 8, 2),
                                            ((2, 6, 4, 4), 1, 3), ((4, 12, 2, 3), 4, 4)])
def test_does_groupnorm_match_torch_forward_and_backward(shape, G, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(2.0, 3.0, size=shape)
    c = shape[1]
    gamma, beta, dout = rng.normal(size=c), rng.normal(size=c), rng.normal(size=shape)
    out, cache = groupnorm_forward(x, gamma, beta, G, 1e-5)
    dx, dgamma, dbeta = groupnorm_backward(dout, cache)
    ref = _torch_grads(lambda a, g, b: F.group_norm(a, G, g, b, 1e-5), x, gamma, beta, dout)
    for mine, theirs in zip((out, dx, dgamma, dbeta), ref):
        assert _max_diff(mine, theirs) < TOL


def test_is_instance_norm_group_norm_with_one_channel_per_group():
    rng = np.random.default_rng(5)
    x, dout = rng.normal(size=(3, 4, 5, 2)), rng.normal(size=(3, 4, 5, 2))
    gamma, beta = rng.normal(size=4), rng.normal(size=4)
    out, cache = instancenorm_forward(x, gamma, beta)
    grads = instancenorm_backward(dout, cache)
    ref = _torch_grads(lambda a, g, b: F.instance_norm(a, weight=g, bias=b, eps=1e-5), x, gamma, beta, dout)
    for mine, theirs in zip((out, *grads), ref):
        assert _max_diff(mine, theirs) < TOL


def test_is_layer_norm_of_images_group_norm_with_one_group():
    rng = np.random.default_rng(6)
    x, dout = rng.normal(size=(2, 3, 4, 4)), rng.normal(size=(2, 3, 4, 4))
    gamma, beta = np.ones(3), np.zeros(3)
    out, cache = layernorm_images_forward(x, gamma, beta)
    dx = layernorm_images_backward(dout, cache)[0]
    ref = _torch_grads(lambda a, g, b: F.layer_norm(a, (3, 4, 4), None, None, 1e-5) * g.view(1, 3, 1, 1)
                       + b.view(1, 3, 1, 1), x, gamma, beta, dout)
    assert _max_diff(out, ref[0]) < TOL and _max_diff(dx, ref[1]) < TOL


def test_do_the_backwards_agree_with_numerical_gradients():
    rng = np.random.default_rng(7)
    x, gamma, beta = rng.normal(size=(3, 5)), rng.normal(size=5), rng.normal(size=5)
    dout = rng.normal(size=(3, 5))
    _, cache = layernorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = layernorm_backward(dout, cache)
    assert rel_error(dx, numerical_gradient(lambda z: layernorm_forward(z, gamma, beta)[0], x, dout)) < 1e-7
    assert rel_error(dgamma, numerical_gradient(lambda z: layernorm_forward(x, z, beta)[0], gamma, dout)) < 1e-7
    assert rel_error(dbeta, numerical_gradient(lambda z: layernorm_forward(x, gamma, z)[0], beta, dout)) < 1e-7

    xi, douti = rng.normal(size=(2, 4, 3, 2)), rng.normal(size=(2, 4, 3, 2))
    gi, bi = rng.normal(size=4), rng.normal(size=4)
    _, gcache = groupnorm_forward(xi, gi, bi, 2)
    gdx, gdgamma, gdbeta = groupnorm_backward(douti, gcache)
    assert rel_error(gdx, numerical_gradient(lambda z: groupnorm_forward(z, gi, bi, 2)[0], xi, douti)) < 1e-7
    assert rel_error(gdgamma, numerical_gradient(lambda z: groupnorm_forward(xi, z, bi, 2)[0], gi, douti)) < 1e-7
    assert rel_error(gdbeta, numerical_gradient(lambda z: groupnorm_forward(xi, gi, z, 2)[0], bi, douti)) < 1e-7


def test_does_float32_stay_float32():
    x = np.random.default_rng(8).normal(size=(2, 4, 3, 3)).astype(np.float32)
    out, cache = groupnorm_forward(x, np.ones(4, np.float32), np.zeros(4, np.float32), 2)
    dx, _, _ = groupnorm_backward(np.ones_like(x), cache)
    assert out.dtype == np.float32 and dx.dtype == np.float32
    out2, _ = layernorm_forward(x[:, :, 0, 0], np.ones(4), np.zeros(4))
    assert out2.dtype == np.float32


@pytest.mark.parametrize("call, words", [
    (lambda: groupnorm_forward(np.zeros((2, 6, 2, 2)), np.ones(6), np.zeros(6), 4), "C=6 is not divisible by"),
    (lambda: groupnorm_forward(np.zeros((2, 6, 2)), np.ones(6), np.zeros(6), 2), "got 3D input"),
    (lambda: groupnorm_forward(np.zeros((2, 6, 2, 2)), np.ones(6), np.zeros(6), 2, eps=0), "eps > 0"),
    (lambda: groupnorm_forward(np.zeros((2, 6, 2, 2)), np.ones(3), np.zeros(6), 3), "gamma of shape (6,)"),
    (lambda: groupnorm_forward(np.zeros((2, 6, 2, 2)), np.ones(6), np.zeros(6), 0), "groups G >= 1"),
    (lambda: layernorm_forward(np.zeros((2, 3, 4)), np.ones(3), np.zeros(3)), "got 3D input"),
    (lambda: layernorm_forward(np.zeros((2, 3)), np.ones(3), np.zeros(3), eps=-1e-5), "eps > 0"),
    (lambda: layernorm_backward(np.zeros((3, 3)), layernorm_forward(np.zeros((2, 3)), np.ones(3), np.zeros(3))[1]),
     "dout of shape (2, 3)"),
])
def test_does_bad_input_raise_a_value_error_naming_what_arrived(call, words):
    with pytest.raises(ValueError, match=None) as err:
        call()
    assert words in str(err.value)


def test_does_layernorm_leave_its_inputs_untouched():
    x = np.random.default_rng(9).normal(size=(4, 6))
    x0 = x.copy()
    out, cache = layernorm_forward(x, np.ones(6), np.zeros(6))
    layernorm_backward(np.ones_like(x), cache)
    assert np.array_equal(x, x0)

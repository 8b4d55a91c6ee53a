"""Does the numpy batch-norm reference agree with PyTorch (float64, CPU) and refuse bad input by name?"""

from __future__ import annotations

import numpy as np
import pytest

from bncourse.reference import batchnorm as bn

torch = pytest.importorskip("torch")
F = torch.nn.functional

SHAPES_2D = [(2, 1), (5, 3), (64, 17), (7, 128)]
SHAPES_4D = [(2, 3, 4, 5), (1, 2, 3, 3), (8, 4, 1, 2)]


def _data(seed, shape, loc=2.0):
    rng = np.random.default_rng(seed)
    d = shape[1]
    x = rng.normal(size=shape) * rng.uniform(0.5, 3.0, size=d).reshape((1, d) + (1,) * (len(shape) - 2)) + loc
    gamma, beta = rng.normal(size=d), rng.normal(size=d)
    dout = rng.normal(size=shape)
    return x, gamma, beta, dout


def _t(a, grad=False):
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


@pytest.mark.parametrize("seed,shape", list(enumerate(SHAPES_2D)))
def test_does_the_training_forward_match_f_batch_norm(seed, shape):
    x, gamma, beta, _ = _data(seed, shape)
    out, cache = bn.batchnorm_forward(x, gamma, beta, eps=1e-5)
    expected = F.batch_norm(_t(x), None, None, _t(gamma), _t(beta), training=True, eps=1e-5)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-10, atol=1e-12)
    assert cache.x_hat.shape == shape and cache.mu.shape == (shape[1],)


@pytest.mark.parametrize("seed,shape", list(enumerate(SHAPES_2D)))
def test_do_running_stats_match_batchnorm1d_after_several_steps(seed, shape):
    n, d = shape
    layer = torch.nn.BatchNorm1d(d, momentum=0.3, dtype=torch.float64)
    rm, rv = np.zeros(d), np.ones(d)
    rng = np.random.default_rng(100 + seed)
    for step in range(5):
        x = rng.normal(size=shape) * 2 + step
        layer(_t(x))
        rm, rv = bn.update_running_stats(x, rm, rv, momentum=0.3)
    np.testing.assert_allclose(rm, layer.running_mean.numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(rv, layer.running_var.numpy(), rtol=1e-12, atol=1e-12)


def test_does_the_default_momentum_match_pytorchs_0_1():
    x = np.random.default_rng(0).normal(size=(6, 2))
    layer = torch.nn.BatchNorm1d(2, dtype=torch.float64)
    layer(_t(x))
    rm, rv = bn.update_running_stats(x, np.zeros(2), np.ones(2))
    np.testing.assert_allclose(rm, layer.running_mean.numpy(), rtol=1e-12)
    np.testing.assert_allclose(rv, layer.running_var.numpy(), rtol=1e-12)


@pytest.mark.parametrize("seed,shape", list(enumerate(SHAPES_2D)))
def test_does_eval_mode_match_batchnorm1d_with_trained_running_stats(seed, shape):
    n, d = shape
    x, gamma, beta, _ = _data(seed, shape)
    layer = torch.nn.BatchNorm1d(d, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(_t(gamma))
        layer.bias.copy_(_t(beta))
    ours = bn.BatchNorm(d)
    ours.gamma, ours.beta = gamma.copy(), beta.copy()
    rng = np.random.default_rng(seed)
    for _ in range(3):
        batch = rng.normal(size=shape) + 1.0
        layer(_t(batch))
        ours(batch)
    layer.eval()
    ours.eval()
    with torch.no_grad():
        expected = layer(_t(x)).numpy()
    np.testing.assert_allclose(ours(x), expected, rtol=1e-10, atol=1e-12)
    direct = bn.batchnorm_inference(x, gamma, beta, ours.running_mean, ours.running_var)
    np.testing.assert_allclose(direct, expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("backward", [bn.batchnorm_backward, bn.batchnorm_backward_staged], ids=["closed", "staged"])
@pytest.mark.parametrize("seed,shape", list(enumerate(SHAPES_2D)))
def test_do_both_backwards_match_autograd(seed, shape, backward):
    x, gamma, beta, dout = _data(seed, shape)
    xt, gt, bt = _t(x, True), _t(gamma, True), _t(beta, True)
    F.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-5).backward(_t(dout))
    _, cache = bn.batchnorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = backward(dout, cache)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(dgamma, gt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dbeta, bt.grad.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("seed,shape", list(enumerate(SHAPES_4D)))
def test_does_spatial_batch_norm_match_batchnorm2d_forward_and_backward(seed, shape):
    x, gamma, beta, dout = _data(seed, shape)
    c = shape[1]
    layer = torch.nn.BatchNorm2d(c, dtype=torch.float64)
    with torch.no_grad():
        layer.weight.copy_(_t(gamma))
        layer.bias.copy_(_t(beta))
    xt = _t(x, True)
    y = layer(xt)
    y.backward(_t(dout))
    out, cache = bn.spatial_batchnorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = bn.spatial_batchnorm_backward(dout, cache)
    np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(dgamma, layer.weight.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dbeta, layer.bias.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_is_float32_in_float32_out_and_close_to_float64():
    x, gamma, beta, dout = _data(0, (32, 6))
    out64, c64 = bn.batchnorm_forward(x, gamma, beta)
    out32, c32 = bn.batchnorm_forward(x.astype(np.float32), gamma.astype(np.float32), beta.astype(np.float32))
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, out64, rtol=1e-4, atol=1e-5)
    dx32 = bn.batchnorm_backward(dout.astype(np.float32), c32)[0]
    assert dx32.dtype == np.float32
    np.testing.assert_allclose(dx32, bn.batchnorm_backward(dout, c64)[0], rtol=1e-3, atol=1e-4)


def test_does_a_large_mean_leave_the_output_accurate():
    x, gamma, beta, _ = _data(1, (16, 4), loc=1e8)
    out, _ = bn.batchnorm_forward(x, gamma, beta)
    expected = F.batch_norm(_t(x), None, None, _t(gamma), _t(beta), training=True)
    np.testing.assert_allclose(out, expected.numpy(), rtol=1e-6, atol=1e-6)


def test_are_the_arguments_left_unchanged():
    x, gamma, beta, dout = _data(2, (8, 3))
    rm, rv = np.full(3, 0.5), np.full(3, 2.0)
    before = [a.copy() for a in (x, gamma, beta, dout, rm, rv)]
    _, cache = bn.batchnorm_forward(x, gamma, beta)
    bn.batchnorm_backward(dout, cache)
    bn.batchnorm_backward_staged(dout, cache)
    bn.update_running_stats(x, rm, rv)
    bn.batchnorm_inference(x, gamma, beta, rm, rv)
    for b, a in zip(before, (x, gamma, beta, dout, rm, rv)):
        np.testing.assert_array_equal(a, b)


def test_does_a_non_contiguous_input_give_the_same_answer():
    x, gamma, beta, _ = _data(3, (10, 8))
    view = np.asfortranarray(x)[:, ::2]
    np.testing.assert_allclose(bn.batchnorm_forward(view, gamma[::2], beta[::2])[0],
                               bn.batchnorm_forward(np.ascontiguousarray(view), gamma[::2], beta[::2])[0])


# ---------------------------------------------------------------------------------------------
# Bad input: ValueError naming what arrived
# ---------------------------------------------------------------------------------------------

X = np.ones((4, 3)) * np.arange(4)[:, None]
G, B = np.ones(3), np.zeros(3)


@pytest.mark.parametrize("call,match", [
    (lambda: bn.batchnorm_forward(np.ones((4, 3, 2)), G, B), r"\(N, D\).*got 3D input of shape \(4, 3, 2\)"),
    (lambda: bn.batchnorm_forward(np.ones(3), G, B), r"got 1D input of shape \(3,\)"),
    (lambda: bn.batchnorm_forward(X, np.ones(4), B), r"gamma of shape \(3,\).*got shape \(4,\)"),
    (lambda: bn.batchnorm_forward(X, G, np.zeros((1, 3))), r"beta of shape \(3,\).*got shape \(1, 3\)"),
    (lambda: bn.batchnorm_forward(X, G, B, eps=0), r"eps > 0, got 0"),
    (lambda: bn.batchnorm_forward(X, G, B, eps=-1e-5), r"eps > 0, got -1e-05"),
    (lambda: bn.batchnorm_forward(np.ones((1, 3)), G, B), r"Expected more than 1 value per channel when training.*\(1, 3\)"),
    (lambda: bn.batchnorm_forward(np.ones((4, 3), dtype=np.int64), G, B), r"floating-point x.*got dtype int64"),
    (lambda: bn.update_running_stats(np.ones((1, 3)), B, G), r"Expected more than 1 value per channel"),
    (lambda: bn.update_running_stats(X, np.zeros(2), G), r"running_mean of shape \(3,\).*got shape \(2,\)"),
    (lambda: bn.update_running_stats(X, B, G, momentum=1.5), r"momentum in \[0, 1\], got 1.5"),
    (lambda: bn.batchnorm_inference(X, G, B, B, np.ones(5)), r"running_var of shape \(3,\).*got shape \(5,\)"),
    (lambda: bn.batchnorm_inference(X.astype(np.int32), G, B, B, G), r"got dtype int32"),
    (lambda: bn.batchnorm_inference(X, G, B, B, G, eps=0.0), r"eps > 0"),
    (lambda: bn.spatial_batchnorm_forward(X, G, B), r"\(N, C, H, W\).*got 2D input"),
    (lambda: bn.spatial_batchnorm_forward(np.ones((1, 3, 1, 1)), G, B), r"more than 1 value per channel.*\(1, 3, 1, 1\)"),
    (lambda: bn.spatial_batchnorm_forward(np.ones((2, 3, 2, 2)), np.ones(2), B), r"gamma of shape \(3,\)"),
    (lambda: bn.batchnorm_backward(np.ones((4, 2)), bn.batchnorm_forward(X, G, B)[1]), r"dout of shape \(4, 3\).*got \(4, 2\)"),
])
def test_does_bad_input_raise_a_valueerror_naming_what_arrived(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_does_inference_accept_a_batch_of_one():
    out = bn.batchnorm_inference(np.ones((1, 3)), G, B, B, G)
    assert out.shape == (1, 3)


def test_does_pytorch_refuse_a_batch_of_one_in_training_too():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        torch.nn.BatchNorm1d(3)(torch.ones(1, 3))


def test_does_the_keras_update_weigh_the_old_value_and_use_the_biased_variance():
    x = np.array([[0.0], [2.0], [4.0], [6.0]])  # mean 3, biased var 5, unbiased var 20/3
    mean, var = bn.update_running_stats_keras(x, np.zeros(1), np.ones(1), momentum=0.99)
    np.testing.assert_allclose(mean, [0.01 * 3])
    np.testing.assert_allclose(var, [0.99 + 0.01 * 5])
    # Keras momentum m with the biased variance is PyTorch momentum 1 - m up to the N / (N - 1) factor
    t_mean, t_var = bn.update_running_stats(x, np.zeros(1), np.ones(1), momentum=0.01)
    np.testing.assert_allclose(t_mean, mean)
    np.testing.assert_allclose(t_var, [0.99 + 0.01 * 20 / 3])

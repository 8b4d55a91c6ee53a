"""Does the numerical gradient estimate gradients accurately, and does rel_error say how far apart two arrays are?"""

from __future__ import annotations

import numpy as np
import pytest

from bncourse.gradcheck import GRADCHECK_TOLERANCE, numerical_gradient, rel_error


def test_does_the_numerical_gradient_of_a_scalar_function_match_the_analytic_one():
    x = np.random.default_rng(0).normal(size=(3, 4))
    grad = numerical_gradient(lambda z: np.sum(np.sin(z) * z), x)
    assert rel_error(grad, np.cos(x) * x + np.sin(x)) < 1e-8


def test_does_dout_give_the_vector_jacobian_product():
    rng = np.random.default_rng(1)
    W, x, dout = rng.normal(size=(5, 3)), rng.normal(size=(4, 5)), rng.normal(size=(4, 3))
    grad = numerical_gradient(lambda z: z @ W, x, dout)
    assert rel_error(grad, dout @ W.T) < 1e-9


def test_is_the_work_done_in_float64_even_for_float32_input():
    x = np.random.default_rng(2).normal(size=5).astype(np.float32)
    seen = []
    grad = numerical_gradient(lambda z: seen.append(z.dtype) or np.sum(z**3), x)
    assert set(seen) == {np.dtype(np.float64)} and grad.dtype == np.float64
    assert rel_error(grad, 3 * x.astype(np.float64) ** 2) < 1e-7


def test_is_the_input_left_unchanged():
    x = np.arange(6.0).reshape(2, 3)
    before = x.copy()
    numerical_gradient(lambda z: np.sum(z**2), x)
    np.testing.assert_array_equal(x, before)


def test_does_a_wrong_gradient_fail_the_tolerance():
    x = np.random.default_rng(3).normal(size=(4,))
    grad = numerical_gradient(lambda z: np.sum(z**2), x)
    assert rel_error(grad, 2 * x) < GRADCHECK_TOLERANCE
    assert rel_error(grad, 2.001 * x) > GRADCHECK_TOLERANCE


def test_is_rel_error_zero_for_equal_arrays_and_symmetric():
    a, b = np.array([1.0, -2.0, 3.0]), np.array([1.0, -2.0, 3.3])
    assert rel_error(a, a) == 0.0
    assert rel_error(a, b) == rel_error(b, a) == pytest.approx(0.3 / 6.3)


def test_does_rel_error_refuse_to_broadcast_shapes():
    with pytest.raises(ValueError, match=r"shapes \(3,\) and \(1, 3\)"):
        rel_error(np.ones(3), np.ones((1, 3)))


def test_does_a_shape_mismatch_between_f_and_dout_raise():
    with pytest.raises(ValueError, match="dout has shape"):
        numerical_gradient(lambda z: z, np.ones(3), np.ones(4))
    with pytest.raises(ValueError, match="pass dout"):
        numerical_gradient(lambda z: z, np.ones(3))

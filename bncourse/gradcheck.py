"""Numerical gradients by central differences, in float64, and the relative error between gradients.

The one home of gradient checking in the course; notebooks import it and never redefine it.

    dx_num = numerical_gradient(lambda x: forward(x, gamma, beta)[0], x, dout)
    rel_error(dx, dx_num)   # float64 and a correct backward: about 1e-8 or smaller

``numerical_gradient(f, x, dout)`` estimates the gradient of ``sum(f(x) * dout)`` with respect
to ``x`` (the vector-Jacobian product a backward pass computes); with ``dout=None`` ``f`` must
return a scalar. Every element of ``x`` is nudged by ``+h`` and ``-h``:
``(L(x + h e_i) - L(x - h e_i)) / (2h)``, whose error shrinks like ``h**2``. The work is done in
float64: in float32 the rounding of ``f`` (about 1e-7 relative) divided by ``2h`` swamps it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

__all__ = ["numerical_gradient", "rel_error", "GRADCHECK_TOLERANCE"]

# A correct float64 backward agrees with the central-difference estimate to well below this.
GRADCHECK_TOLERANCE = 1e-6


def numerical_gradient(f: Callable[[np.ndarray], object], x, dout=None, h: float = 1e-5) -> np.ndarray:
    """Central-difference estimate of d sum(f(x) * dout) / dx, computed in float64.

    Args:
        f: function of one array; it receives a float64 array of ``x``'s shape.
        x: array (any shape); not modified (a float64 copy is nudged).
        dout: array of f(x)'s shape (the upstream gradient), or None when f returns a scalar.
        h: step, > 0.

    Returns:
        float64 array of x's shape.
    """
    if not h > 0:
        raise ValueError(f"expected a step h > 0, got {h!r}")
    x = np.array(x, dtype=np.float64, copy=True)
    if dout is not None:
        dout = np.asarray(dout, dtype=np.float64)

    def loss(z: np.ndarray) -> float:
        y = np.asarray(f(z), dtype=np.float64)
        if dout is None:
            if y.size != 1:
                raise ValueError(f"f returned shape {y.shape}; pass dout, or make f return a scalar")
            return float(y.reshape(()))
        if y.shape != dout.shape:
            raise ValueError(f"f returned shape {y.shape} but dout has shape {dout.shape}")
        return float(np.sum(y * dout))

    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + h
        plus = loss(x)
        flat[i] = old - h
        minus = loss(x)
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * h)
    return grad


def rel_error(a, b) -> float:
    """Largest elementwise relative error ``|a - b| / max(|a| + |b|, 1e-8)``, as a float.

    Shapes must match (no broadcasting: a shape mistake must not hide behind it).
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare arrays of shapes {a.shape} and {b.shape}")
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(1e-8, np.abs(a) + np.abs(b))))

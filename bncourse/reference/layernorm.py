"""Layer normalization in numpy: forward and backward for x of shape (N, D).

Layer norm (Ba, Kiros & Hinton 2016) normalizes each *example* (row) over its D features, where
batch norm normalizes each *feature* (column) over the N examples of the batch:

    out[n] = gamma * (x[n] - mean(x[n])) / sqrt(var(x[n]) + eps) + beta

with the row's mean and *biased* variance (divide by D) and ``eps`` inside the square root, as in
``torch.nn.functional.layer_norm(x, (D,), gamma, beta, eps)``. No statistic involves another
example, so training and inference compute the same thing and there are no running statistics;
a batch of one works.

Shapes: x (N, D); gamma, beta (D,) (one scale and shift per feature, as in batch norm);
the statistics are (N, 1). Outputs keep x's floating dtype. Bad input raises ``ValueError``
naming what arrived. Nothing here modifies its arguments in place.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bncourse.reference.batchnorm import _check_eps, _float_array, _per_feature

__all__ = ["LayerNormCache", "layernorm_forward", "layernorm_backward"]


class LayerNormCache(NamedTuple):
    """What ``layernorm_forward`` keeps for the backward pass (the per-example statistics are (N, 1))."""

    x: np.ndarray  # (N, D) the input
    mu: np.ndarray  # (N, 1) mean of each row
    xmu: np.ndarray  # (N, D) x - mu
    var: np.ndarray  # (N, 1) biased variance of each row, mean(xmu ** 2, axis=1)
    inv_std: np.ndarray  # (N, 1) 1 / sqrt(var + eps)
    x_hat: np.ndarray  # (N, D) xmu * inv_std
    gamma: np.ndarray  # (D,) scale
    beta: np.ndarray  # (D,) shift
    eps: float


def layernorm_forward(x, gamma, beta, eps: float = 1e-5) -> tuple[np.ndarray, LayerNormCache]:
    """Layer norm: each row of x normalized over its D features, then scaled and shifted per feature.

    Args:
        x: (N, D) float32 or float64 (N = 1 is fine: nothing is computed over the batch).
        gamma, beta: (D,) scale and shift.
        eps: > 0, added to the variance inside the square root.

    Returns:
        out: (N, D) in x's dtype, and a ``LayerNormCache`` for ``layernorm_backward``.
    """
    x = _float_array("x", x, 2, "(N, D)")
    n, d = x.shape
    gamma = _per_feature("gamma", gamma, d, x.shape, x.dtype)
    beta = _per_feature("beta", beta, d, x.shape, x.dtype)
    eps = _check_eps(eps)
    mu = x.mean(axis=1, keepdims=True)
    xmu = x - mu
    var = (xmu * xmu).mean(axis=1, keepdims=True)
    inv_std = (1 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype, copy=False)
    x_hat = xmu * inv_std
    out = x_hat * gamma + beta
    return out, LayerNormCache(x, mu, xmu, var, inv_std, x_hat, gamma, beta, eps)


def layernorm_backward(dout, cache: LayerNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of ``layernorm_forward``.

    The closed form of batch norm's backward with the roles of the axes swapped: for each row,
    with ``g = gamma * dout`` (N, D) and ``s = inv_std`` (N, 1),

        dx = s / D * (D * g - sum_d g - x_hat * sum_d (g * x_hat))

    (the three terms: direct, through the row mean, through the row variance), while
    ``dgamma = sum_n dout * x_hat`` and ``dbeta = sum_n dout`` still sum over the batch.

    Args:
        dout: (N, D) upstream gradient.
        cache: the ``LayerNormCache`` of the forward.

    Returns:
        dx (N, D), dgamma (D,), dbeta (D,).
    """
    dout = np.asarray(dout)
    if dout.shape != cache.x.shape:
        raise ValueError(f"expected dout of shape {cache.x.shape} (the forward's x), got {dout.shape}")
    d = dout.shape[1]
    dbeta = dout.sum(axis=0)
    dgamma = (dout * cache.x_hat).sum(axis=0)
    g = dout * cache.gamma
    dx = cache.inv_std / d * (d * g - g.sum(axis=1, keepdims=True)
                              - cache.x_hat * (g * cache.x_hat).sum(axis=1, keepdims=True))
    return dx.astype(cache.x.dtype, copy=False), dgamma, dbeta

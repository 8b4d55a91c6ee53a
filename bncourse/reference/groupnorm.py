"""Group normalization in numpy, and its two ends: instance norm and layer norm of images.

Group norm (Wu & He 2018) splits the C channels of each image into G groups of C/G *adjacent*
channels (channel c is in group c // (C/G), as in ``torch.nn.functional.group_norm``) and
normalizes each group of each image over its (C/G) * H * W values:

    x (N, C, H, W) -> (N, G, C/G * H * W) -> normalize each row -> back to (N, C, H, W)
    out = gamma[c] * x_hat + beta[c]     (one scale and shift per *channel*, not per group)

with the group's mean and biased variance and ``eps`` inside the square root. Nothing is
computed over the batch axis N, so a batch of one works and there are no running statistics.

The two ends of the dial:

* ``G = C``: every channel is its own group: **instance norm** (Ulyanov et al. 2016),
  ``torch.nn.functional.instance_norm`` (with affine gamma, beta);
* ``G = 1``: one group holds the whole image: **layer norm of images**, normalizing over
  (C, H, W) like ``torch.nn.functional.layer_norm(x, (C, H, W))`` but with per-channel
  gamma and beta (PyTorch's ``nn.GroupNorm(1, C)``).

Shapes: x (N, C, H, W); gamma, beta (C,); G divides C. Outputs keep x's floating dtype. Bad
input raises ``ValueError`` naming what arrived. Nothing here modifies its arguments in place.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from bncourse.reference.batchnorm import _check_eps, _float_array, _per_feature

__all__ = [
    "GroupNormCache",
    "groupnorm_forward",
    "groupnorm_backward",
    "instancenorm_forward",
    "instancenorm_backward",
    "layernorm_images_forward",
    "layernorm_images_backward",
]


class GroupNormCache(NamedTuple):
    """What ``groupnorm_forward`` keeps; M = (C/G) * H * W values per group."""

    shape: tuple  # (N, C, H, W) of the input
    G: int  # number of groups
    x_hat: np.ndarray  # (N, G, M) the normalized values, grouped
    inv_std: np.ndarray  # (N, G, 1) 1 / sqrt(var + eps) of each group of each image
    gamma: np.ndarray  # (C,) scale, one per channel
    beta: np.ndarray  # (C,) shift, one per channel
    eps: float


def _check_groups(G, c: int) -> int:
    if isinstance(G, bool) or not isinstance(G, (int, np.integer)) or G < 1:
        raise ValueError(f"expected a whole number of groups G >= 1, got {G!r}")
    if c % G != 0:
        raise ValueError(f"the number of channels C={c} is not divisible by the number of groups G={G}")
    return int(G)


def groupnorm_forward(x, gamma, beta, G: int, eps: float = 1e-5) -> tuple[np.ndarray, GroupNormCache]:
    """Group norm of images: each group of C/G adjacent channels of each image normalized on its own.

    Args:
        x: (N, C, H, W) float32 or float64.
        gamma, beta: (C,) per-channel scale and shift.
        G: number of groups, dividing C (G = C: instance norm; G = 1: layer norm of images).
        eps: > 0, inside the square root.

    Returns:
        out: (N, C, H, W) in x's dtype, and a ``GroupNormCache`` for ``groupnorm_backward``.
    """
    x = _float_array("x", x, 4, "(N, C, H, W)")
    n, c, h, w = x.shape
    G = _check_groups(G, c)
    gamma = _per_feature("gamma", gamma, c, x.shape, x.dtype)
    beta = _per_feature("beta", beta, c, x.shape, x.dtype)
    eps = _check_eps(eps)
    xg = x.reshape(n, G, -1)  # adjacent channels: channel c -> group c // (C // G)
    mu = xg.mean(axis=2, keepdims=True)
    xmu = xg - mu
    var = (xmu * xmu).mean(axis=2, keepdims=True)
    inv_std = (1 / np.sqrt(var + x.dtype.type(eps))).astype(x.dtype, copy=False)
    x_hat = xmu * inv_std
    out = x_hat.reshape(n, c, h, w) * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)
    return out, GroupNormCache(x.shape, G, x_hat, inv_std, gamma, beta, eps)


def groupnorm_backward(dout, cache: GroupNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward pass of ``groupnorm_forward``.

    gamma and beta are per channel, so their gradients sum over N, H and W; the normalization is
    per group, so ``dx`` is layer norm's closed form applied to each group's M values:
    with ``g = gamma[c] * dout`` grouped to (N, G, M),
    ``dx = inv_std / M * (M * g - sum_M g - x_hat * sum_M (g * x_hat))``.

    Args:
        dout: (N, C, H, W) upstream gradient.
        cache: the ``GroupNormCache`` of the forward.

    Returns:
        dx (N, C, H, W), dgamma (C,), dbeta (C,).
    """
    dout = np.asarray(dout)
    if dout.shape != tuple(cache.shape):
        raise ValueError(f"expected dout of shape {tuple(cache.shape)} (the forward's x), got {dout.shape}")
    n, c, h, w = dout.shape
    x_hat = cache.x_hat.reshape(n, c, h, w)
    dbeta = dout.sum(axis=(0, 2, 3))
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3))
    g = (dout * cache.gamma.reshape(1, c, 1, 1)).reshape(n, cache.G, -1)
    m = g.shape[2]
    xh = cache.x_hat
    dx = cache.inv_std / m * (m * g - g.sum(axis=2, keepdims=True) - xh * (g * xh).sum(axis=2, keepdims=True))
    return dx.reshape(n, c, h, w).astype(x_hat.dtype, copy=False), dgamma, dbeta


def instancenorm_forward(x, gamma, beta, eps: float = 1e-5) -> tuple[np.ndarray, GroupNormCache]:
    """Instance norm: group norm with G = C (each channel of each image normalized over H, W).

    x (N, C, H, W); gamma, beta (C,). Same as ``torch.nn.functional.instance_norm`` with weight and bias.
    """
    x = _float_array("x", x, 4, "(N, C, H, W)")
    return groupnorm_forward(x, gamma, beta, G=x.shape[1], eps=eps)


def instancenorm_backward(dout, cache: GroupNormCache):
    """Backward of ``instancenorm_forward``: dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    return groupnorm_backward(dout, cache)


def layernorm_images_forward(x, gamma, beta, eps: float = 1e-5) -> tuple[np.ndarray, GroupNormCache]:
    """Layer norm of images: group norm with G = 1 (each image normalized over C, H and W).

    x (N, C, H, W); gamma, beta (C,) per channel (PyTorch's ``nn.GroupNorm(1, C)``; its
    ``nn.LayerNorm((C, H, W))`` would have a gamma per value instead).
    """
    return groupnorm_forward(x, gamma, beta, G=1, eps=eps)


def layernorm_images_backward(dout, cache: GroupNormCache):
    """Backward of ``layernorm_images_forward``: dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    return groupnorm_backward(dout, cache)

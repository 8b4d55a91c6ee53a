"""Batch normalization in numpy: training forward, running statistics, inference, two backwards.

The conventions are PyTorch's (``torch.nn.functional.batch_norm``, ``nn.BatchNorm1d/2d``) and are
written down here once:

* training mode normalizes with the batch mean and the *biased* batch variance (divide by N);
* ``eps`` (default 1e-5) goes inside the square root: ``x_hat = (x - mean) / sqrt(var + eps)``;
* ``momentum`` (default 0.1) weighs the *new* batch:
  ``running = (1 - momentum) * running + momentum * batch_stat``;
* ``running_var`` is updated with the *unbiased* batch variance (divide by N - 1);
* ``running_mean`` starts at zeros and ``running_var`` at ones;
* inference mode is the fixed affine map ``gamma * (x - running_mean) / sqrt(running_var + eps) + beta``.

Keras differs: its ``momentum`` (default 0.99) weighs the *old* running value and its ``epsilon``
defaults to 1e-3.

Shapes: x (N, D), gamma / beta / statistics (D,). Spatial batch norm takes x (N, C, H, W) with
gamma, beta (C,) and normalizes each channel over N, H and W; it is built on the (N, D) functions.
Outputs keep x's floating dtype (float32 or float64). Bad input raises ``ValueError`` naming what
arrived. Nothing here modifies its arguments in place.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "BatchNormCache",
    "SpatialBatchNormCache",
    "BatchNorm",
    "batchnorm_forward",
    "update_running_stats",
    "update_running_stats_keras",
    "batchnorm_inference",
    "batchnorm_backward_staged",
    "batchnorm_backward",
    "spatial_batchnorm_forward",
    "spatial_batchnorm_backward",
]


class BatchNormCache(NamedTuple):
    """What ``batchnorm_forward`` keeps for the backward pass; every array is (N, D) or (D,).

    The fields are the nodes of the computation graph, in the order the forward computes them.
    """

    x: np.ndarray  # (N, D) the input
    mu: np.ndarray  # (D,) batch mean
    xmu: np.ndarray  # (N, D) x - mu
    var: np.ndarray  # (D,) biased batch variance, mean(xmu ** 2)
    std: np.ndarray  # (D,) sqrt(var + eps)
    inv_std: np.ndarray  # (D,) 1 / std
    x_hat: np.ndarray  # (N, D) xmu * inv_std
    gamma: np.ndarray  # (D,) scale
    beta: np.ndarray  # (D,) shift
    eps: float


class SpatialBatchNormCache(NamedTuple):
    """What ``spatial_batchnorm_forward`` keeps: the (N*H*W, C) cache and the original shape."""

    cache: BatchNormCache
    shape: tuple  # (N, C, H, W)


# ---------------------------------------------------------------------------------------------
# Input validation: fail early and say what arrived
# ---------------------------------------------------------------------------------------------


def _float_array(name: str, a, ndim: int, layout: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != ndim:
        raise ValueError(f"expected {name} of shape {layout} ({ndim}D input), got {a.ndim}D input of shape {a.shape}")
    if a.dtype.kind != "f":
        raise ValueError(f"expected a floating-point {name} (float32 or float64), got dtype {a.dtype}")
    return a


def _per_feature(name: str, a, d: int, x_shape: tuple, dtype) -> np.ndarray:
    a = np.asarray(a)
    if a.shape != (d,):
        raise ValueError(f"expected {name} of shape ({d},) to match x of shape {x_shape}, got shape {a.shape}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"expected a numeric {name}, got dtype {a.dtype}")
    return a.astype(dtype, copy=False)


def _check_eps(eps) -> float:
    if not np.isscalar(eps) or not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"expected eps > 0, got {eps!r}")
    return float(eps)


def _check_training_batch(x: np.ndarray, shape=None) -> None:
    if x.shape[0] < 2:
        raise ValueError(
            "Expected more than 1 value per channel when training, "
            f"got input of shape {shape if shape is not None else x.shape}"
        )


# ---------------------------------------------------------------------------------------------
# (N, D): forward, running statistics, inference
# ---------------------------------------------------------------------------------------------


def batchnorm_forward(x, gamma, beta, eps: float = 1e-5) -> tuple[np.ndarray, BatchNormCache]:
    """Training-mode batch norm (Ioffe & Szegedy 2015, Algorithm 1).

    ``out = gamma * (x - mean) / sqrt(var + eps) + beta`` with the batch mean and biased
    batch variance of each feature (column).

    Args:
        x: (N, D) float32 or float64, N >= 2.
        gamma, beta: (D,) scale and shift.
        eps: > 0, added to the variance inside the square root.

    Returns:
        out: (N, D) in x's dtype, and a ``BatchNormCache`` for the backward pass.
    """
    x = _float_array("x", x, 2, "(N, D)")
    n, d = x.shape
    gamma = _per_feature("gamma", gamma, d, x.shape, x.dtype)
    beta = _per_feature("beta", beta, d, x.shape, x.dtype)
    eps = _check_eps(eps)
    _check_training_batch(x)

    mu = x.mean(axis=0)
    xmu = x - mu
    var = np.einsum("nd,nd->d", xmu, xmu) / x.dtype.type(n)  # two-pass: stable for a large mean
    std = np.sqrt(var + x.dtype.type(eps))
    inv_std = (1 / std).astype(x.dtype, copy=False)
    x_hat = xmu * inv_std
    out = x_hat * gamma
    out += beta
    return out, BatchNormCache(x, mu, xmu, var, std, inv_std, x_hat, gamma, beta, eps)


def update_running_stats(x, running_mean, running_var, momentum: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """New running statistics after one training batch; the arguments are left unchanged.

    ``new_mean = (1 - momentum) * running_mean + momentum * mean(x)`` and
    ``new_var = (1 - momentum) * running_var + momentum * var_unbiased(x)`` (divide by N - 1),
    as ``nn.BatchNorm1d`` does in training mode.

    Args:
        x: (N, D) the batch, N >= 2.
        running_mean, running_var: (D,) (start at zeros and ones).
        momentum: in [0, 1], the weight of the new batch.

    Returns:
        new_running_mean, new_running_var: (D,) in running_mean's floating dtype.
    """
    x = _float_array("x", x, 2, "(N, D)")
    n, d = x.shape
    _check_training_batch(x)
    rm, rv = np.asarray(running_mean), np.asarray(running_var)
    dtype = rm.dtype if rm.dtype.kind == "f" else np.float64
    rm = _per_feature("running_mean", rm, d, x.shape, dtype)
    rv = _per_feature("running_var", rv, d, x.shape, dtype)
    if not np.isscalar(momentum) or not 0 <= momentum <= 1:
        raise ValueError(f"expected momentum in [0, 1], got {momentum!r}")
    mu = x.mean(axis=0)
    var_unbiased = x.var(axis=0, ddof=1)
    new_mean = ((1 - momentum) * rm + momentum * mu).astype(dtype, copy=False)
    new_var = ((1 - momentum) * rv + momentum * var_unbiased).astype(dtype, copy=False)
    return new_mean, new_var


def update_running_stats_keras(x, moving_mean, moving_variance, momentum: float = 0.99) -> tuple[np.ndarray, np.ndarray]:
    """The same update under Keras' conventions, for comparison (Keras 3 ``BatchNormalization``).

    ``new = momentum * moving + (1 - momentum) * batch_stat``: Keras' momentum (default 0.99)
    weighs the *old* value, and the variance blended in is the *biased* batch variance
    (``ops.moments``). Keras' momentum m is PyTorch's momentum 1 - m. Shapes as in
    ``update_running_stats``.
    """
    x = _float_array("x", x, 2, "(N, D)")
    d = x.shape[1]
    _check_training_batch(x)
    rm = _per_feature("moving_mean", moving_mean, d, x.shape, np.float64)
    rv = _per_feature("moving_variance", moving_variance, d, x.shape, np.float64)
    if not np.isscalar(momentum) or not 0 <= momentum <= 1:
        raise ValueError(f"expected momentum in [0, 1], got {momentum!r}")
    return momentum * rm + (1 - momentum) * x.mean(axis=0), momentum * rv + (1 - momentum) * x.var(axis=0)


def batchnorm_inference(x, gamma, beta, running_mean, running_var, eps: float = 1e-5) -> np.ndarray:
    """Inference-mode batch norm (Algorithm 2): a fixed affine map from the running statistics.

    ``out = gamma * (x - running_mean) / sqrt(running_var + eps) + beta``; each row is
    transformed on its own, so any N >= 1 works and the batch does not matter.

    Args:
        x: (N, D); gamma, beta, running_mean, running_var: (D,); eps > 0.

    Returns:
        out: (N, D) in x's dtype.
    """
    x = _float_array("x", x, 2, "(N, D)")
    d = x.shape[1]
    gamma = _per_feature("gamma", gamma, d, x.shape, x.dtype)
    beta = _per_feature("beta", beta, d, x.shape, x.dtype)
    rm = _per_feature("running_mean", running_mean, d, x.shape, x.dtype)
    rv = _per_feature("running_var", running_var, d, x.shape, x.dtype)
    eps = _check_eps(eps)
    scale = gamma / np.sqrt(rv + x.dtype.type(eps))
    shift = beta - rm * scale
    return x * scale + shift


class BatchNorm:
    """A small stateful layer over the functions above, with PyTorch's ``training`` flag.

    ``layer = BatchNorm(D)``; ``layer(x)`` normalizes with batch statistics and updates the
    running ones while ``layer.training`` is True (the default), and uses the running ones after
    ``layer.eval()``. gamma starts at ones, beta at zeros, running_mean at zeros, running_var at ones.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, dtype=np.float64):
        self.eps = _check_eps(eps)
        self.momentum = momentum  # weight of the new batch (PyTorch); Keras' 0.99 would be 0.01 here
        self.gamma = np.ones(num_features, dtype=dtype)
        self.beta = np.zeros(num_features, dtype=dtype)
        self.running_mean = np.zeros(num_features, dtype=dtype)
        self.running_var = np.ones(num_features, dtype=dtype)
        self.training = True

    def train(self, mode: bool = True) -> "BatchNorm":
        self.training = bool(mode)
        return self

    def eval(self) -> "BatchNorm":
        return self.train(False)

    def __call__(self, x) -> np.ndarray:
        """(N, D) -> (N, D)."""
        if not self.training:
            return batchnorm_inference(x, self.gamma, self.beta, self.running_mean, self.running_var, self.eps)
        out, _ = batchnorm_forward(x, self.gamma, self.beta, self.eps)
        self.running_mean, self.running_var = update_running_stats(
            x, self.running_mean, self.running_var, self.momentum
        )
        return out


# ---------------------------------------------------------------------------------------------
# (N, D): backward
# ---------------------------------------------------------------------------------------------


def _check_dout(dout, cache: BatchNormCache) -> np.ndarray:
    dout = np.asarray(dout)
    if dout.shape != cache.x.shape:
        raise ValueError(f"expected dout of shape {cache.x.shape} (the forward's output), got {dout.shape}")
    if dout.dtype.kind != "f":
        raise ValueError(f"expected a floating-point dout, got dtype {dout.dtype}")
    return dout


def batchnorm_backward_staged(dout, cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward through the computation graph, one node at a time, in reverse order.

    Graph (forward): mu = mean(x); xmu = x - mu; sq = xmu**2; var = mean(sq);
    std = sqrt(var + eps); inv_std = 1 / std; x_hat = xmu * inv_std; out = gamma * x_hat + beta.

    Args:
        dout: (N, D) upstream gradient; cache: from ``batchnorm_forward``.

    Returns:
        dx (N, D), dgamma (D,), dbeta (D,).
    """
    dout = _check_dout(dout, cache)
    n = cache.x.shape[0]
    # out = gamma * x_hat + beta
    dbeta = dout.sum(axis=0)
    dgamma = (dout * cache.x_hat).sum(axis=0)
    dx_hat = dout * cache.gamma
    # x_hat = xmu * inv_std  (xmu reaches x_hat directly and through inv_std)
    dinv_std = (dx_hat * cache.xmu).sum(axis=0)
    dxmu = dx_hat * cache.inv_std
    # inv_std = 1 / std
    dstd = -dinv_std / cache.std**2
    # std = sqrt(var + eps)
    dvar = dstd / (2 * cache.std)
    # var = mean(sq)
    dsq = np.broadcast_to(dvar / n, dout.shape)
    # sq = xmu ** 2
    dxmu = dxmu + 2 * cache.xmu * dsq
    # xmu = x - mu  (x reaches xmu directly and through mu)
    dmu = -dxmu.sum(axis=0)
    dx = dxmu.copy()
    # mu = mean(x)
    dx += dmu / n
    return dx, dgamma, dbeta


def batchnorm_backward(dout, cache: BatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward in closed form: ``dx = gamma / (N * std) * (N * dout - sum(dout) - x_hat * sum(dout * x_hat))``.

    Args:
        dout: (N, D) upstream gradient; cache: from ``batchnorm_forward``.

    Returns:
        dx (N, D), dgamma (D,), dbeta (D,).
    """
    dout = _check_dout(dout, cache)
    n = cache.x.shape[0]
    dbeta = dout.sum(axis=0)
    dgamma = np.einsum("nd,nd->d", dout, cache.x_hat)
    # One new (N, D) array and three in-place passes: fresh arrays cost more than arithmetic here.
    dx = cache.x_hat * (-dgamma / n)
    dx += dout
    dx -= dbeta / n
    dx *= cache.gamma * cache.inv_std
    return dx, dgamma, dbeta


# ---------------------------------------------------------------------------------------------
# Spatial (N, C, H, W), built on the (N, D) functions
# ---------------------------------------------------------------------------------------------


def _to_rows(x: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N*H*W, C): one row per pixel, one column per channel."""
    n, c, h, w = x.shape
    return x.transpose(0, 2, 3, 1).reshape(n * h * w, c)


def _from_rows(rows: np.ndarray, shape: tuple) -> np.ndarray:
    """(N*H*W, C) -> (N, C, H, W), the inverse of ``_to_rows``."""
    n, c, h, w = shape
    return np.ascontiguousarray(rows.reshape(n, h, w, c).transpose(0, 3, 1, 2))


def spatial_batchnorm_forward(x, gamma, beta, eps: float = 1e-5) -> tuple[np.ndarray, SpatialBatchNormCache]:
    """Training-mode batch norm of images: each channel normalized over N, H and W (``nn.BatchNorm2d``).

    Args:
        x: (N, C, H, W) float32 or float64 with N*H*W >= 2; gamma, beta: (C,); eps > 0.

    Returns:
        out: (N, C, H, W), and a ``SpatialBatchNormCache``.
    """
    x = _float_array("x", x, 4, "(N, C, H, W)")
    n, c, h, w = x.shape
    for name, a in (("gamma", gamma), ("beta", beta)):
        if np.shape(a) != (c,):
            raise ValueError(f"expected {name} of shape ({c},) to match x of shape {x.shape}, got shape {np.shape(a)}")
    rows = _to_rows(x)
    if rows.shape[0] < 2:
        _check_training_batch(rows, x.shape)
    out, cache = batchnorm_forward(rows, gamma, beta, eps)
    return _from_rows(out, x.shape), SpatialBatchNormCache(cache, x.shape)


def spatial_batchnorm_backward(dout, cache: SpatialBatchNormCache) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Backward of ``spatial_batchnorm_forward``: dout (N, C, H, W) -> dx (N, C, H, W), dgamma (C,), dbeta (C,)."""
    dout = np.asarray(dout)
    if dout.shape != tuple(cache.shape):
        raise ValueError(f"expected dout of shape {tuple(cache.shape)} (the forward's output), got {dout.shape}")
    dx, dgamma, dbeta = batchnorm_backward(_to_rows(dout), cache.cache)
    return _from_rows(dx, cache.shape), dgamma, dbeta

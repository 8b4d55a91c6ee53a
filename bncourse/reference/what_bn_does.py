"""The measurements of notebook 7 ("What batch norm really does"), in numpy.

* ``input_drift(h_before, h_after)``: internal covariate shift as the explainers word it, how far
  a layer's input *distribution* moved: the change of each unit's mean and standard deviation
  over the same probe batch, before and after some training, relative to the input's spread.

The other two come from Santurkar, Tsipras, Ilyas and Madry (2018), "How does batch normalization
help optimization?":

* ``gradient_change(g_before, g_after)``: their measure of internal covariate shift for one
  layer. ``g_before`` is the gradient of the loss with respect to the layer's weights; ``g_after``
  is the same gradient, on the same batch, after every layer *below* it took its update (the
  layer itself and the layers above unchanged). If the layers below shift the layer's input, its
  gradient changes: the relative change ``||g_after - g_before|| / ||g_before||`` and the cosine
  between the two, both over the *flattened* gradient (every weight of the layer, one vector).
* ``noisy_batchnorm_forward(x, gamma, beta, scale, shift)``: batch norm in training mode
  followed by a per-channel random scale and shift (drawn anew at each training step), so that
  the next layer's input distribution moves at every step: "noisy batch norm".

Shapes: activations h (N, D): N probe examples, D units; gradients any shape, e.g. (D_out, D_in)
for a Linear layer's weight; x (N, D) and
gamma, beta, scale, shift (D,). PyTorch's conventions: biased batch variance, eps inside the
square root. Nothing here changes its arguments in place.
"""

from __future__ import annotations

import numpy as np

from bncourse.reference.batchnorm import batchnorm_forward

__all__ = ["input_drift", "gradient_change", "noisy_batchnorm_forward"]


def input_drift(h_before, h_after) -> float:
    """How far a layer's input distribution moved, relative to its spread: one float.

    With ``mean`` and ``std`` per unit (column) over the batch (population std, ddof=0)::

        drift = (mean_d |mean_after - mean_before| + mean_d |std_after - std_before|) / mean_d std_before

    It compares *distributions* (each unit's mean and spread over the batch), not individual
    activations: shuffling the rows of ``h_after`` does not change it.

    Args:
        h_before, h_after: (N, D) the layer's input on the same N probe examples, at two times.
    """
    a = np.asarray(h_before, dtype=np.float64)
    b = np.asarray(h_after, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"expected h_before and h_after of the same shape (N, D), got {a.shape} and {b.shape}")
    spread = a.std(axis=0).mean()
    if spread == 0:
        raise ValueError("h_before has no spread (every unit constant): the drift relative to it is undefined")
    moved = np.abs(b.mean(axis=0) - a.mean(axis=0)).mean() + np.abs(b.std(axis=0) - a.std(axis=0)).mean()
    return float(moved / spread)


def gradient_change(g_before, g_after) -> tuple[float, float]:
    """How much a layer's gradient changed: ``(relative_change, cosine)``, both floats.

    ``relative_change = ||g_after - g_before|| / ||g_before||`` and
    ``cosine = <g_before, g_after> / (||g_before|| * ||g_after||)``, with ``||.||`` the l2 norm of
    the flattened array (for a matrix: the Frobenius norm, not the spectral norm).

    Args:
        g_before, g_after: arrays of the same shape (e.g. (D_out, D_in)), not all zero.
    """
    a = np.asarray(g_before, dtype=np.float64)
    b = np.asarray(g_after, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"expected g_before and g_after of the same shape, got {a.shape} and {b.shape}")
    a, b = a.ravel(), b.ravel()
    na, nb = np.sqrt(a @ a), np.sqrt(b @ b)
    if na == 0 or nb == 0:
        raise ValueError("a gradient that is all zeros has no direction: relative change and cosine are undefined")
    return float(np.sqrt((b - a) @ (b - a)) / na), float((a @ b) / (na * nb))


def noisy_batchnorm_forward(x, gamma, beta, scale, shift, eps: float = 1e-5) -> np.ndarray:
    """Batch norm (training mode), then a per-channel scale and shift: ``scale * bn(x) + shift``.

    ``bn(x) = gamma * (x - mean) / sqrt(var + eps) + beta`` with the batch mean and biased batch
    variance of each feature (column). The noise comes *after* the normalization (before it, the
    normalization would remove it) and multiplies (``scale``) and adds (``shift``) per feature.

    Args:
        x: (N, D) float32 or float64, N >= 2.
        gamma, beta: (D,) batch norm's learned scale and shift.
        scale, shift: (D,) this step's random noise, one value per feature.
        eps: > 0, added to the variance inside the square root.

    Returns:
        out: (N, D) in x's dtype.
    """
    out, _ = batchnorm_forward(x, gamma, beta, eps)
    d = out.shape[1]
    scale, shift = np.asarray(scale), np.asarray(shift)
    for name, a in (("scale", scale), ("shift", shift)):
        if a.shape != (d,):
            raise ValueError(f"expected {name} of shape ({d},) to match x of shape {out.shape}, got shape {a.shape}")
    return (scale.astype(out.dtype, copy=False) * out + shift.astype(out.dtype, copy=False)).astype(out.dtype, copy=False)

"""The catalogue's entries for notebook 3's spatial batch norm, forward and backward, over (N, C, H, W).

The spatial backward's entries include every (N, D) backward entry applied through the
(N, C, H, W) -> (N*H*W, C) reshape (``batchnorm_backward``'s list, declared once there).
"""

from __future__ import annotations

import itertools

import numpy as np

from bncourse.checks.backward import _reference_then
from bncourse.checks.catalogue.batchnorm_backward import _BACKWARD_MISTAKES
from bncourse.checks.catalogue.shared import affine, dx_from, mistake, standardize
from bncourse.checks.core import Mistake
from bncourse.checks.inputs import as_dtype_of
from bncourse.reference import batchnorm as ref


def _per_channel(a):
    return np.reshape(a, (1, -1, 1, 1))


def _normalized_over(axes, slip=""):
    """Spatial batch norm with statistics over ``axes`` (the reference: (0, 2, 3)) and one shared slip."""
    def forward(x, gamma, beta, eps=1e-5):
        y = affine(standardize(x, axes, eps, slip), _per_channel(gamma), _per_channel(beta), slip)
        return as_dtype_of(x, y), None
    return forward


def _spatial_no_transpose(x, gamma, beta, eps=1e-5):
    out, _ = ref.batchnorm_forward(x.reshape(-1, x.shape[1]), gamma, beta, eps)
    return out.reshape(x.shape), None


def _spatial_no_transpose_back(x, gamma, beta, eps=1e-5):
    out, _ = ref.batchnorm_forward(np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]), gamma, beta, eps)
    return out.reshape(x.shape), None


def _spatial_transposed_back_with(perm):
    """Spatial forward through (N*H*W, C) rows whose (N, H, W, C) result is transposed with ``perm``
    instead of the inverse (0, 3, 1, 2)."""
    def forward(x, gamma, beta, eps=1e-5):
        n, c, h, w = x.shape
        out, _ = ref.batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, c), gamma, beta, eps)
        return out.reshape(n, h, w, c).transpose(perm), None
    return forward


def _spatial_rows_built_with(built, back):
    """Spatial forward whose rows come from ``x.transpose(built)`` and are reshaped back as if they had been built
    with ``back`` (the right pair is (0, 2, 3, 1) twice), then transposed to (N, C, H, W)."""
    def forward(x, gamma, beta, eps=1e-5):
        out, _ = ref.batchnorm_forward(x.transpose(built).reshape(-1, x.shape[1]), gamma, beta, eps)
        return out.reshape([x.shape[a] for a in back]).transpose(np.argsort(back)), None
    return forward


# the orders of N, H and W before C: the rows are built in one and read back in another
_ROW_ORDERS = tuple(p + (1,) for p in itertools.permutations((0, 2, 3)))
_ROW_ORDER_PAIRS = tuple((built, back) for built in _ROW_ORDERS for back in _ROW_ORDERS if built != back)

# permutations that put another axis than C last (the identity is "without moving C last", named apart)
_NOT_CHANNELS_LAST = tuple(p for p in itertools.permutations(range(4)) if p[-1] != 1 and p != (0, 1, 2, 3))
_NOT_CHANNELS_LAST_NAME = ("rows built with another axis than C last",
                           "the (N*H*W, C) rows need the channels as columns: x.transpose(0, 2, 3, 1).reshape(-1, C). "
                           "(0, 3, 1, 2) is the inverse permutation, for the way back: it moves W last, so each column "
                           "mixes channels and pixels")

_ROWS_ORDER = ("output reshaped back in another order than the rows were built in",
               "the statistics are right, but the pixels come back in the wrong places: the reshape back must undo "
               "the transpose that built the rows. Build them as x.transpose(0, 2, 3, 1).reshape(-1, C), i.e. in "
               "(N, H, W, C) order, and undo that with out.reshape(N, H, W, C).transpose(0, 3, 1, 2) (its inverse)")

# every order of the four axes but the inverse (0, 3, 1, 2): the first four are the common ones
_WRONG_PERMUTATIONS = ((0, 2, 3, 1), (0, 3, 2, 1), (0, 2, 1, 3), (0, 1, 3, 2),
                       *(p for p in itertools.permutations(range(4))
                         if p not in ((0, 3, 1, 2), (0, 2, 3, 1), (0, 3, 2, 1), (0, 2, 1, 3), (0, 1, 3, 2))))

_UNDO_TRANSPOSE = ("output transposed back with the wrong permutation",
                   "the rows are in (N, H, W, C) order: reshape to (N, H, W, C), then undo (0, 2, 3, 1) with its "
                   "INVERSE, .transpose(0, 3, 1, 2) (or np.moveaxis(out, -1, 1)); applying (0, 2, 3, 1) again "
                   "gives (N, W, C, H)")

_SPATIAL_FORWARD_MISTAKES = [
    Mistake("statistics per pixel position instead of per channel",
            "each channel has ONE mean and variance over N, H and W; move C last and reshape to "
            "(N*H*W, C) before calling the (N, D) forward", _normalized_over((0,))),
    Mistake("statistics per image (over H and W only)",
            "batch norm pools over the batch too: each channel's statistics are over N, H and W",
            _normalized_over((2, 3))),
    Mistake("statistics over the wrong axes", "each channel's statistics are over N, H and W, axes (0, 2, 3)",
            _normalized_over((0, 1))),
    Mistake("statistics per image over (C, H, W) instead of per channel over (N, H, W)",
            "that is layer norm: batch norm gives each CHANNEL one mean and variance, over the batch and every pixel, "
            "axes (0, 2, 3)", _normalized_over((1, 2, 3)), id="statistics-per-image"),
    Mistake("reshaped to (N*H*W, C) without moving C last",
            "x.reshape(-1, C) mixes channels; transpose to (N, H, W, C) first, and back afterwards",
            _spatial_no_transpose),
    Mistake("output reshaped back without the inverse transpose",
            "the rows are in (N, H, W, C) order: reshape them to (N, H, W, C), then transpose to "
            "(N, C, H, W); out.reshape(N, C, H, W) alone scrambles pixels and channels", _spatial_no_transpose_back),
    *(Mistake(*_UNDO_TRANSPOSE, _spatial_transposed_back_with(perm), id="spatial-wrong-inverse-transpose")
      for perm in _WRONG_PERMUTATIONS),
    *(Mistake(*_ROWS_ORDER, _spatial_rows_built_with(built, back), id="spatial-rows-order-not-undone")
      for built, back in _ROW_ORDER_PAIRS),
    *(Mistake(*_NOT_CHANNELS_LAST_NAME, _spatial_rows_built_with(perm, perm), id="spatial-rows-not-channels-last")
      for perm in _NOT_CHANNELS_LAST),
    Mistake("unbiased variance used to normalize", "normalize with the biased variance (divide by N*H*W)",
            _normalized_over((0, 2, 3), "unbiased-variance")),
    Mistake("gamma and beta swapped", "gamma scales and beta shifts",
            _normalized_over((0, 2, 3), "gamma-beta-swapped")),
    *(mistake(slip, _normalized_over((0, 2, 3), slip))
      for slip in ("eps-outside-sqrt", "eps-hard-coded", "eps-missing", "divided-by-variance")),
]


def _x_hat_images(cache):
    return ref._from_rows(cache.cache.x_hat, cache.shape)


def _spatial_bwd_no_transpose(x, gamma, beta, eps, dout):
    _, cache = ref.spatial_batchnorm_forward(x, gamma, beta, eps)
    dx_rows, dgamma, dbeta = ref.batchnorm_backward(ref._to_rows(np.asarray(dout)), cache.cache)
    return dx_rows.reshape(cache.shape), dgamma, dbeta


def _spatial_bwd_dout_unmoved(x, gamma, beta, eps, dout):
    """dout reshaped to (-1, C) without moving C last first (dx moved back correctly)."""
    _, cache = ref.spatial_batchnorm_forward(x, gamma, beta, eps)
    n, c, h, w = x.shape
    dx_rows, dgamma, dbeta = ref.batchnorm_backward(np.asarray(dout).reshape(-1, c), cache.cache)
    return dx_rows.reshape(n, h, w, c).transpose(0, 3, 1, 2), dgamma, dbeta


def _spatial_bwd_dout_unmoved_dx_too(x, gamma, beta, eps, dout):
    """dout reshaped to (-1, C) without moving C last, and dx reshaped back the same way."""
    _, cache = ref.spatial_batchnorm_forward(x, gamma, beta, eps)
    dx_rows, dgamma, dbeta = ref.batchnorm_backward(np.asarray(dout).reshape(-1, x.shape[1]), cache.cache)
    return dx_rows.reshape(x.shape), dgamma, dbeta


def _sums_over(axes, whole_count):
    """The closed-form dx with its sums over ``axes`` instead of (N, H, W), and its M over ``whole_count``'s axes
    (True: N, H and W; False: ``axes``; a tuple: those)."""
    def run(x, gamma, beta, eps, dout):
        _, cache = ref.spatial_batchnorm_forward(x, gamma, beta, eps)
        _, dg, db = ref.spatial_batchnorm_backward(dout, cache)
        g = np.asarray(dout, np.float64) * _per_channel(cache.cache.gamma)
        over = (0, 2, 3) if whole_count is True else whole_count or None
        count = int(np.prod([x.shape[a] for a in over])) if over else None
        return dx_from(g, _x_hat_images(cache), _per_channel(cache.cache.inv_std), axes, count=count), dg, db
    return run


def _through_rows(backward):
    """An (N, D) backward ``backward(dout_rows, cache)`` applied through the (N, C, H, W) -> (N*H*W, C) reshape."""
    def run(x, gamma, beta, eps, dout):
        _, cache = ref.spatial_batchnorm_forward(x, gamma, beta, eps)
        dx_rows, dg, db = backward(ref._to_rows(np.asarray(dout)), cache.cache)
        return ref._from_rows(np.asarray(dx_rows), cache.shape), dg, db
    return run


_SUMS_OVER = {(2, 3): "per image (over H and W)", (1, 2, 3): "per image (over C, H and W)", (0,): "over N only"}

_DOUT_UNMOVED = ("dout reshaped to (N*H*W, C) without moving C last",
                 "dout must be laid out like the forward's rows: dout.transpose(0, 2, 3, 1).reshape(-1, C); "
                 "dout.reshape(-1, C) pairs each gradient with the wrong pixel and channel")

_SPATIAL_BACKWARD_MISTAKES = [
    Mistake("dgamma and dbeta summed over N only (not H and W)",
            "gamma and beta are shared by every pixel of a channel: sum over axes (0, 2, 3), shape (C,)",
            _reference_then(lambda dx, dg, db, dout, c: (dx, (dout * _x_hat_images(c)).sum(0), dout.sum(0)))),
    Mistake("dgamma and dbeta not summed over N",
            "gamma and beta are shared by every image and pixel of a channel: sum over axes (0, 2, 3), shape (C,)",
            _reference_then(lambda dx, dg, db, dout, c: (dx, (dout * _x_hat_images(c)).sum((2, 3)),
                                                         dout.sum((2, 3))))),
    Mistake("dx reshaped back without the inverse transpose",
            "undo the forward's reshape exactly: (N*H*W, C) -> (N, H, W, C) -> transpose to (N, C, H, W)",
            _spatial_bwd_no_transpose),
    Mistake(*_DOUT_UNMOVED, _spatial_bwd_dout_unmoved, id="spatial-dout-not-transposed"),
    Mistake(*_DOUT_UNMOVED, _spatial_bwd_dout_unmoved_dx_too, id="spatial-dout-not-transposed"),
    Mistake("dgamma and dbeta averaged over the pixels (divided by H*W)",
            "gamma and beta are shared by every image and pixel of a channel: their gradients are the SUMS over "
            "axes (0, 2, 3), with no division by H*W",
            _reference_then(lambda dx, dg, db, dout, c: (dx, dg / (dout.shape[2] * dout.shape[3]),
                                                         db / (dout.shape[2] * dout.shape[3]))),
            id="dparams-averaged"),
    Mistake("dgamma and dbeta averaged (divided by N*H*W)",
            "gamma and beta are shared by every image and pixel of a channel: their gradients are the SUMS over "
            "axes (0, 2, 3), not the means",
            _reference_then(lambda dx, dg, db, dout, c: (dx, dg / (dout.size / dout.shape[1]),
                                                         db / (dout.size / dout.shape[1]))),
            id="dparams-averaged"),
    Mistake("dx's count taken as the batch size N instead of N*H*W",
            "each channel's statistics average N*H*W values (one per row of the (N*H*W, C) view): "
            "dx = gamma * inv_std / M * (M * dout - dbeta - x_hat * dgamma) with M = N*H*W",
            _reference_then(lambda dx, dg, db, dout, c: (ref._from_rows(dx_from(
                ref._to_rows(np.asarray(dout, np.float64)) * c.cache.gamma, c.cache.x_hat, c.cache.inv_std, 0,
                count=c.shape[0]), c.shape), dg, db)), id="wrong-divisor"),
    Mistake("dx missing the terms that flow through the mean and the variance",
            "call the full (N, D) backward on the (N*H*W, C) rows",
            _reference_then(lambda dx, dg, db, dout, c: (dout * _per_channel(c.cache.gamma * c.cache.inv_std), dg, db))),
    *(Mistake(f"dx's sums taken {where} instead of over N, H and W",
              "each channel's mean and variance average all N*H*W values of the channel, so dx's sums "
              "sum(g) and sum(g * x_hat) run over axes (0, 2, 3) (axis 0 of the (N*H*W, C) rows), with M = N*H*W",
              _sums_over(axes, whole), id="spatial-sums-wrong-axes")
      for axes, where in _SUMS_OVER.items() for whole in (False, True)),
    Mistake("dx's count taken as H*W instead of N*H*W",
            "each channel's statistics average N*H*W values (one per row of the (N*H*W, C) view): "
            "dx = gamma * inv_std / M * (M * dout - dbeta - x_hat * dgamma) with M = N*H*W",
            _sums_over((0, 2, 3), (2, 3)), id="wrong-divisor"),
    # every (N, D) backward mistake, made on the (N*H*W, C) rows
    *(Mistake(m.name, m.hint, _through_rows(m.fn), only=m.only, id=m.id) for m in _BACKWARD_MISTAKES),
]


ENTRIES = {"spatial_batchnorm_forward": _SPATIAL_FORWARD_MISTAKES,
           "spatial_batchnorm_backward": _SPATIAL_BACKWARD_MISTAKES}

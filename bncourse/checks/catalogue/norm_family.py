"""The catalogue's entries for notebook 9: layer norm and group norm, forward and backward.

Each entry is a small wrong implementation that reproduces one mistake as a learner makes it.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Mistake
from bncourse.reference import groupnorm as gref
from bncourse.reference import layernorm as lref


def _ln_wrong(axis=1, how="inside", ddof=0, affine="ok", fixed_eps=None):
    def forward(x, gamma, beta, eps):
        x = np.asarray(x)
        eps = eps if fixed_eps is None else fixed_eps
        mu = x.mean(axis=axis, keepdims=True)
        var = x.var(axis=axis, ddof=ddof, keepdims=True)
        if how == "inside":
            x_hat = (x - mu) / np.sqrt(var + eps)
        elif how == "outside":
            x_hat = (x - mu) / (np.sqrt(var) + eps)
        elif how == "none":
            x_hat = (x - mu) / np.sqrt(var)
        else:  # "var": divided by the variance
            x_hat = (x - mu) / (var + eps)
        g, b = {"ok": (gamma, beta), "swap": (beta, gamma), "none": (1.0, 0.0)}[affine]
        return (x_hat * g + b).astype(x.dtype, copy=False), None
    return forward


def _ln_forward_mistakes() -> list[Mistake]:
    return [
        Mistake("statistics over the batch axis (batch norm by accident)",
                "layer norm normalizes each example (row) over its D features: mean and var over axis=1 "
                "(keepdims=True), not over the batch (axis=0)", _ln_wrong(axis=0)),
        Mistake("one mean and variance for the whole batch",
                "each row gets its own statistics: reduce over axis=1 with keepdims=True", _ln_wrong(axis=None)),
        Mistake("eps outside the square root", "divide by np.sqrt(var + eps), not np.sqrt(var) + eps",
                _ln_wrong(how="outside")),
        Mistake("eps missing", "add eps to the variance before the square root: np.sqrt(var + eps)",
                _ln_wrong(how="none"), id="eps-missing"),
        Mistake("eps argument ignored (hard-coded 1e-5)", "use the eps passed to the function",
                _ln_wrong(fixed_eps=1e-5), id="eps-hard-coded"),
        Mistake("unbiased variance used to normalize", "use the biased variance (ddof=0), as layer norm does",
                _ln_wrong(ddof=1)),
        Mistake("divided by the variance instead of the standard deviation",
                "divide by np.sqrt(var + eps)", _ln_wrong(how="var")),
        Mistake("gamma and beta swapped", "out = gamma * x_hat + beta", _ln_wrong(affine="swap")),
        Mistake("gamma and beta not applied", "finish with out = gamma * x_hat + beta", _ln_wrong(affine="none")),
    ]


def _ln_bwd(mean_path=True, var_path=True, axis=1, use_gamma=True):
    def backward(x, gamma, beta, eps, dout):
        c = lref.layernorm_forward(x, gamma, beta, eps)[1]
        g = dout * c.gamma if use_gamma else dout
        if axis == 1:
            m, s, xh = x.shape[1], c.inv_std, c.x_hat
        else:  # batch norm's backward: sums over the batch, with batch statistics
            m = x.shape[0]
            mu, var = x.mean(0), x.var(0)
            s = 1 / np.sqrt(var + eps)
            xh = (x - mu) * s
        dx = m * g
        if mean_path:
            dx = dx - g.sum(axis=axis, keepdims=True)
        if var_path:
            dx = dx - xh * (g * xh).sum(axis=axis, keepdims=True)
        return (s / m * dx).astype(x.dtype, copy=False), (dout * c.x_hat).sum(0), dout.sum(0)
    return backward


def _ln_backward_mistakes() -> list[Mistake]:
    return [
        Mistake("dx missing the path through the mean",
                "the row mean depends on every x in the row: subtract the row sum of gamma * dout "
                "(dx = inv_std / D * (D * g - g.sum(1) - x_hat * (g * x_hat).sum(1)), g = gamma * dout)",
                _ln_bwd(mean_path=False)),
        Mistake("dx missing the path through the variance",
                "the row variance depends on every x in the row: subtract x_hat * (g * x_hat).sum(axis=1, keepdims=True)",
                _ln_bwd(var_path=False)),
        Mistake("dx missing the paths through the mean and the variance",
                "the row's statistics are functions of x too: dx = inv_std / D * (D * g - g.sum(1) - x_hat * (g * x_hat).sum(1))",
                _ln_bwd(mean_path=False, var_path=False)),
        Mistake("batch norm's backward: sums over the batch axis",
                "layer norm's statistics are per row, so dx's sums run over axis=1 (the D features); "
                "only dgamma and dbeta sum over the batch (axis=0)", _ln_bwd(axis=0)),
        Mistake("dx not multiplied by gamma", "the gradient reaching x_hat is gamma * dout", _ln_bwd(use_gamma=False)),
        Mistake("dgamma computed from x instead of x_hat",
                "out = gamma * x_hat + beta, so dgamma = (dout * x_hat).sum(axis=0)", _ln_rows(dgamma_from_x=True),
                id="dgamma-from-x"),
        Mistake("dx missing the 1/D", "the row's mean and variance average over its D features: "
                "dx = inv_std / D * (D * g - g.sum(1) - x_hat * (g * x_hat).sum(1))", _ln_rows(divisor="1"),
                id="missing-divisor"),
        Mistake("dx divided by N (the batch size) instead of D",
                "layer norm's statistics average over the D features of a row: divide by D = x.shape[1]",
                _ln_rows(divisor="N"), id="wrong-divisor"),
        Mistake("sign error on the path through the variance",
                "dx = inv_std / D * (D * g - g.sum(1) - x_hat * (g * x_hat).sum(1)): the variance term is subtracted",
                _ln_rows(var_sign=1.0), id="sign-error-variance-path"),
        Mistake("backward recomputed with eps=1e-5 instead of the forward's eps",
                "keep the eps the forward used (put it, or inv_std itself, in the cache)", _ln_rows(eps=1e-5),
                id="eps-hard-coded"),
    ]


def _ln_rows(dgamma_from_x=False, divisor="D", var_sign=-1.0, eps=None):
    """Layer norm's backward written from x, with one slip."""
    def backward(x, gamma, beta, eps_in, dout):
        e = eps_in if eps is None else eps
        x64, d64 = np.asarray(x, np.float64), np.asarray(dout, np.float64)
        mu, var = x64.mean(1, keepdims=True), x64.var(1, keepdims=True)
        inv = 1 / np.sqrt(var + e)
        xh = (x64 - mu) / np.sqrt(var + eps_in)
        g = d64 * gamma
        n, d = x64.shape
        m, div = {"D": (d, d), "N": (n, n), "1": (d, 1)}[divisor]
        dx = inv / div * (m * g - g.sum(1, keepdims=True) + var_sign * xh * (g * xh).sum(1, keepdims=True))
        dgamma = (d64 * (x64 if dgamma_from_x else xh)).sum(0)
        return dx.astype(x.dtype), dgamma.astype(x.dtype), d64.sum(0).astype(x.dtype)
    return backward


def _finish(x, x_hat, gamma, beta):
    c = x.shape[1]
    return (x_hat * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)).astype(x.dtype, copy=False), None


def _norm(v, axes, eps, how="inside", ddof=0):
    mu = v.mean(axis=axes, keepdims=True)
    var = v.var(axis=axes, keepdims=True, ddof=ddof)
    if how == "none":
        return (v - mu) / np.sqrt(var)
    return (v - mu) / (np.sqrt(var + eps) if how == "inside" else np.sqrt(var) + eps)


def _gn_stats(kind: str, how="inside", ddof=0):
    """Group-norm forwards with one slip each; ``kind`` says which values share statistics."""
    def forward(x, gamma, beta, G, eps):
        x = np.asarray(x)
        n, c, h, w = x.shape
        if kind == "groups":
            x_hat = _norm(x.reshape(n, G, -1), 2, eps, how, ddof).reshape(x.shape)
        elif kind == "batch":  # per channel over (N, H, W): spatial batch norm
            x_hat = _norm(x, (0, 2, 3), eps)
        elif kind == "group_over_batch":  # each group over the batch too
            x_hat = _norm(x.reshape(n, G, -1), (0, 2), eps).reshape(x.shape)
        elif kind == "strided":  # channel c in group c % G
            x_hat = _norm(x.reshape(n, c // G, G, h, w), (1, 3, 4), eps).reshape(x.shape)
        elif kind == "group_size":  # G read as the number of channels per group
            x_hat = _norm(x.reshape(n, c // G, -1), 2, eps).reshape(x.shape)
        elif kind == "mean_channel_vars":  # the group's variance as the mean of its channels' variances
            xg = x.reshape(n, G, c // G, h * w)
            var = xg.var(3, keepdims=True).mean(2, keepdims=True)
            x_hat = ((xg - xg.mean((2, 3), keepdims=True)) / np.sqrt(var + eps)).reshape(x.shape)
        elif kind == "instance":
            x_hat = _norm(x, (2, 3), eps)
        elif kind == "layer":
            x_hat = _norm(x, (1, 2, 3), eps)
        elif kind == "no_transpose_back":  # grouped channel-last, reshaped back without transposing
            nhwc = x.transpose(0, 2, 3, 1).reshape(n, h * w, G, c // G)
            x_hat = _norm(nhwc, (1, 3), eps).reshape(n, c, h, w)
        return _finish(x, x_hat, gamma, beta)
    return forward


def _gn_per_group_affine(which: str):
    def forward(x, gamma, beta, G, eps):
        x = np.asarray(x)
        n, c, h, w = x.shape
        x_hat = _norm(x.reshape(n, G, -1), 2, eps)
        if which == "first_G":  # gamma[:G], beta[:G] as if they had one entry per group
            g, b = gamma[:G].reshape(1, G, 1), beta[:G].reshape(1, G, 1)
        else:  # each group takes its first channel's gamma and beta
            g, b = gamma[:: c // G].reshape(1, G, 1), beta[:: c // G].reshape(1, G, 1)
        return (x_hat * g + b).reshape(x.shape).astype(x.dtype, copy=False), None
    return forward


_PER_GROUP_AFFINE = ("gamma and beta per group instead of per channel",
                     "gamma and beta have one entry per channel (C,): reshape x_hat back to (N, C, H, W) first, "
                     "then out = x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1)")


def _gn_forward_mistakes() -> list[Mistake]:
    return [
        Mistake("statistics over the batch axis (batch norm by accident)",
                "group norm uses no other image: each group of each image gets its own mean and var, "
                "x.reshape(N, G, -1) reduced over axis=2", _gn_stats("batch")),
        Mistake("each group's statistics taken over the whole batch",
                "reduce over axis=2 of x.reshape(N, G, -1) only, not over the batch axis 0 as well",
                _gn_stats("group_over_batch")),
        Mistake("groups formed from non-adjacent channels",
                "a group is C/G *adjacent* channels (channel c in group c // (C/G)): x.reshape(N, G, C // G, H, W), "
                "not x.reshape(N, C // G, G, H, W)", _gn_stats("strided")),
        Mistake(*_PER_GROUP_AFFINE, _gn_per_group_affine("first_G")),
        Mistake(*_PER_GROUP_AFFINE, _gn_per_group_affine("first_of_group")),
        Mistake("the reshape back done without undoing the grouping",
                "you grouped a transposed (channel-last) array: transpose back to (N, C, H, W) before the "
                "reshape, or group with x.reshape(N, G, -1) directly", _gn_stats("no_transpose_back")),
        Mistake("eps outside the square root", "divide by np.sqrt(var + eps), not np.sqrt(var) + eps",
                _gn_stats("groups", how="outside")),
        Mistake("eps missing", "add eps to the group variance before the square root: np.sqrt(var + eps)",
                _gn_stats("groups", how="none"), id="eps-missing"),
        Mistake("G read as the number of channels per group",
                "G is the number of groups; each holds C // G channels: x.reshape(N, G, -1), not x.reshape(N, C // G, -1)",
                _gn_stats("group_size"), id="group-layout-g-as-size"),
        Mistake("the group variance taken as the mean of its channels' variances",
                "take one variance over all C/G*H*W values of the group: it also counts how far the channels' means "
                "lie apart; x.reshape(N, G, -1).var(axis=2)", _gn_stats("mean_channel_vars"), id="group-variance-per-channel"),
        Mistake("gamma and beta swapped", "out = x_hat * gamma + beta, per channel",
                lambda x, gamma, beta, G, eps: _gn_stats("groups")(x, beta, gamma, G, eps), id="gamma-beta-swapped"),
        Mistake("unbiased variance used to normalize", "use the biased variance (ddof=0)",
                _gn_stats("groups", ddof=1)),
        Mistake("G ignored: one group per channel (instance norm)",
                "use the G passed in: x.reshape(N, G, -1)", _gn_stats("instance")),
        Mistake("G ignored: one group per image (layer norm)",
                "use the G passed in: x.reshape(N, G, -1)", _gn_stats("layer")),
    ]


def _gn_bwd(mean_path=True, var_path=True, per_channel=False, use_gamma=True, dgamma_per_group=False,
            dgamma_from_x=False, divide=True):
    def backward(x, gamma, beta, G, eps, dout):
        c = gref.groupnorm_forward(x, gamma, beta, G, eps)[1]
        n, ch, h, w = x.shape
        xh4 = c.x_hat.reshape(x.shape)
        g4 = dout * gamma.reshape(1, ch, 1, 1) if use_gamma else dout
        k = ch if per_channel else G
        g, xh = g4.reshape(n, k, -1), xh4.reshape(n, k, -1)
        s = np.repeat(c.inv_std, ch // G, axis=1) if per_channel else c.inv_std
        m = g.shape[2]
        dx = m * g
        if mean_path:
            dx = dx - g.sum(axis=2, keepdims=True)
        if var_path:
            dx = dx - xh * (g * xh).sum(axis=2, keepdims=True)
        dgamma = (dout * (x if dgamma_from_x else xh4)).sum(axis=(0, 2, 3))
        dbeta = dout.sum(axis=(0, 2, 3))
        if dgamma_per_group:  # summed within each group as well, then spread over the group's channels
            dgamma = np.repeat(dgamma.reshape(G, -1).sum(1), ch // G)
            dbeta = np.repeat(dbeta.reshape(G, -1).sum(1), ch // G)
        return ((s / m if divide else s) * dx).reshape(x.shape).astype(x.dtype, copy=False), dgamma, dbeta
    return backward


def _gn_backward_mistakes() -> list[Mistake]:
    return [
        Mistake("dx missing the path through the group mean",
                "each group's mean depends on all M = C/G*H*W values of the group: with g = gamma * dout grouped "
                "to (N, G, M), dx = inv_std / M * (M * g - g.sum(2) - x_hat * (g * x_hat).sum(2))",
                _gn_bwd(mean_path=False)),
        Mistake("dx missing the path through the group variance",
                "subtract x_hat * (g * x_hat).sum(axis=2, keepdims=True) within each group",
                _gn_bwd(var_path=False)),
        Mistake("dx missing the paths through the group mean and variance",
                "the group statistics are functions of x: dx = inv_std / M * (M * g - g.sum(2) - x_hat * (g * x_hat).sum(2))",
                _gn_bwd(mean_path=False, var_path=False)),
        Mistake("dx summed per channel instead of per group (instance norm's backward)",
                "the sums in dx run over each group's M = C/G*H*W values, the same groups as the forward",
                _gn_bwd(per_channel=True)),
        Mistake("dx not multiplied by gamma",
                "the gradient reaching x_hat is gamma[c] * dout (gamma reshaped to (1, C, 1, 1))",
                _gn_bwd(use_gamma=False)),
        Mistake("dgamma computed from x instead of x_hat",
                "out = x_hat * gamma + beta, so dgamma = (dout * x_hat).sum(axis=(0, 2, 3))", _gn_bwd(dgamma_from_x=True),
                id="dgamma-from-x"),
        Mistake("dx missing the 1/M", "the group statistics average over its M = C/G*H*W values: "
                "dx = inv_std / M * (M * g - g.sum(2) - x_hat * (g * x_hat).sum(2))", _gn_bwd(divide=False),
                id="missing-divisor"),
        Mistake("dgamma and dbeta summed per group",
                "gamma and beta are per channel: dgamma = (dout * x_hat).sum(axis=(0, 2, 3)), dbeta = dout.sum(axis=(0, 2, 3))",
                _gn_bwd(dgamma_per_group=True)),
    ]


MISTAKE_NAMES = {
    "layernorm_forward": [m.name for m in _ln_forward_mistakes()],
    "layernorm_backward": [m.name for m in _ln_backward_mistakes()],
    "groupnorm_forward": sorted({m.name for m in _gn_forward_mistakes()}),
    "groupnorm_backward": [m.name for m in _gn_backward_mistakes()],
}


ENTRIES = {"layernorm_forward": _ln_forward_mistakes, "layernorm_backward": _ln_backward_mistakes,
           "groupnorm_forward": _gn_forward_mistakes, "groupnorm_backward": _gn_backward_mistakes}

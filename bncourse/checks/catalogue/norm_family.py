"""The catalogue's entries for notebook 9: layer norm and group norm, forward and backward.

Each entry is a small wrong implementation that reproduces one mistake as a learner makes it.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.catalogue.shared import affine, dx_from, inv_std, mistake, standardize, statistics
from bncourse.checks.core import Mistake
from bncourse.reference import groupnorm as gref


def _ln(slip: str = "", axes=1):
    """Layer norm's forward over ``axes`` (the reference: 1, each row) with one shared slip."""
    def forward(x, gamma, beta, eps):
        x = np.asarray(x)
        return affine(standardize(x, axes, eps, slip), gamma, beta, slip).astype(x.dtype, copy=False), None
    return forward


def _ln_forward_mistakes() -> list[Mistake]:
    return [
        Mistake("statistics over the batch axis (batch norm by accident)",
                "layer norm normalizes each example (row) over its D features: mean and var over axis=1 "
                "(keepdims=True), not over the batch (axis=0)", _ln(axes=0)),
        Mistake("one mean and variance for the whole batch",
                "each row gets its own statistics: reduce over axis=1 with keepdims=True", _ln(axes=None)),
        mistake("eps-outside-sqrt", _ln("eps-outside-sqrt"),
                hint="divide by np.sqrt(var + eps), not np.sqrt(var) + eps"),
        mistake("eps-missing", _ln("eps-missing"),
                hint="add eps to the variance before the square root: np.sqrt(var + eps)"),
        mistake("eps-hard-coded", _ln("eps-hard-coded"), name="eps argument ignored (hard-coded 1e-5)"),
        mistake("unbiased-variance", _ln("unbiased-variance"), hint="use the biased variance (ddof=0), as layer norm does"),
        mistake("divided-by-variance", _ln("divided-by-variance"), hint="divide by np.sqrt(var + eps)"),
        mistake("gamma-beta-swapped", _ln("gamma-beta-swapped"), hint="out = gamma * x_hat + beta"),
        mistake("gamma-and-beta-not-applied", _ln("gamma-and-beta-not-applied"),
                hint="finish with out = gamma * x_hat + beta"),
        mistake("sqrt-of-std", _ln("sqrt-of-std"), hint="divide by np.sqrt(x.var(axis=1, keepdims=True) + eps)"),
        *(mistake(slip, _ln(slip)) for slip in ("gamma-not-applied-only-beta-added", "beta-not-added-only-gamma-applied",
                                                "mean-not-subtracted")),
        mistake("affine-before-normalizing", _ln_affine_first),
    ]


def _ln_affine_first(x, gamma, beta, eps):
    """gamma * x + beta normalized per row (the affine step moved before the normalization)."""
    x = np.asarray(x)
    return standardize(np.asarray(x * gamma + beta, np.float64), 1, eps).astype(x.dtype, copy=False), None


_LN_DX = "dx = inv_std / D * (D * g - g.sum(1) - x_hat * (g * x_hat).sum(1)), g = gamma * dout"


def _ln_backward(slip: str = "", axes=1, divisor: str = "D"):
    """Layer norm's backward written from x (float64 inside), with one slip.

    ``axes=0``: batch norm's backward (sums over the batch, batch statistics); ``divisor="N"``: the
    1/D of the formula taken as 1/N.
    """
    def backward(x, gamma, beta, eps, dout):
        x64, d64 = np.asarray(x, np.float64), np.asarray(dout, np.float64)
        mean, var = statistics(x64, 1)
        x_hat = (x64 - mean) * inv_std(var, eps)
        m_stat, v_stat = statistics(x64, axes)
        inv = inv_std(v_stat, eps, slip)  # "eps-hard-coded": recomputed with 1e-5, not the cache's eps
        g = d64 if slip == "dx-without-gamma" else d64 * gamma
        dx = dx_from(g, (x64 - m_stat) * inv_std(v_stat, eps), inv, axes, slip,
                     count=x64.shape[0] if divisor == "N" else None)
        dgamma = (d64 * (x64 if slip == "dgamma-from-x" else x_hat)).sum(0)
        return dx.astype(x.dtype), dgamma.astype(x.dtype), d64.sum(0).astype(x.dtype)
    return backward


def _ln_backward_mistakes() -> list[Mistake]:
    return [
        mistake("mean-path-missing", _ln_backward("mean-path-missing"),
                hint="the row mean depends on every x in the row: subtract the row sum of gamma * dout (" + _LN_DX + ")"),
        mistake("variance-path-missing", _ln_backward("variance-path-missing"),
                hint="the row variance depends on every x in the row: subtract "
                     "x_hat * (g * x_hat).sum(axis=1, keepdims=True)"),
        mistake("mean-and-variance-paths-missing", _ln_backward("mean-and-variance-paths-missing"),
                hint="the row's statistics are functions of x too: " + _LN_DX),
        Mistake("batch norm's backward: sums over the batch axis",
                "layer norm's statistics are per row, so dx's sums run over axis=1 (the D features); "
                "only dgamma and dbeta sum over the batch (axis=0)", _ln_backward(axes=0)),
        mistake("dx-without-gamma", _ln_backward("dx-without-gamma")),
        mistake("dgamma-from-x", _ln_backward("dgamma-from-x"),
                hint="out = gamma * x_hat + beta, so dgamma = (dout * x_hat).sum(axis=0)"),
        mistake("missing-divisor", _ln_backward("missing-divisor"), name="dx missing the 1/D",
                hint="the row's mean and variance average over its D features: " + _LN_DX),
        Mistake("dx divided by N (the batch size) instead of D",
                "layer norm's statistics average over the D features of a row: divide by D = x.shape[1]",
                _ln_backward(divisor="N"), id="wrong-divisor"),
        *_sign_and_recomputed_eps(_ln_backward, _LN_DX),
        mistake("eps-hard-coded", _ln_recomputed(), name="backward recomputed with eps=1e-5 instead of the forward's eps",
                hint="keep the eps the forward used (put it, or inv_std itself, in the cache)"),
        Mistake("batch norm's backward: sums over the batch axis",
                "layer norm's statistics are per row, so dx's sums run over axis=1 (the D features); "
                "only dgamma and dbeta sum over the batch (axis=0)", _ln_recomputed(None, axes=0, count="D"),
                id="wrong-axis"),
        Mistake("batch norm's backward: sums over the batch axis",
                "layer norm's statistics are per row, so dx's sums run over axis=1 (the D features); "
                "only dgamma and dbeta sum over the batch (axis=0)", _ln_recomputed(None, axes=0, count="N"),
                id="wrong-axis"),
        mistake("inv-std-squared", _ln_recomputed(None, slip="inv-std-squared")),
        *dparam_mistakes(_ln_recomputed(None), (0,), "feature"),
    ]


def _ln_recomputed(eps_used=1e-5, axes=1, count=None, slip=""):
    """Layer norm's backward whose x_hat and inv_std are recomputed (eps ``eps_used``) and whose dx sums run over ``axes``."""
    def backward(x, gamma, beta, eps, dout):
        x64, d64 = np.asarray(x, np.float64), np.asarray(dout, np.float64)
        mean, var = statistics(x64, 1)
        inv = inv_std(var, eps if eps_used is None else eps_used)
        x_hat = (x64 - mean) * inv
        n_count = {"D": x64.shape[1], "N": x64.shape[0]}.get(count)
        dx = dx_from(d64 * gamma, x_hat, inv, axes, slip, count=n_count)
        return dx.astype(x.dtype), (d64 * x_hat).sum(0).astype(x.dtype), d64.sum(0).astype(x.dtype)
    return backward


def dparam_mistakes(backward, sum_axes: tuple, per: str = "feature") -> list[Mistake]:
    """The slips of dgamma and dbeta (any normalization's backward): swapped, averaged, summed over the wrong axes.

    ``backward(*args) -> (dx, dgamma, dbeta)`` is the exercise's right backward; ``sum_axes`` the axes
    dgamma and dbeta sum over; ``per`` what one gamma belongs to (a feature, a channel)."""
    def transformed(how):
        def fn(*args):
            dx, dg, db = backward(*args)
            dout = np.asarray(args[-1], np.float64)
            if how == "swapped":
                return dx, db, dg
            n = dout.shape[0]
            if how == "mean":
                return dx, dg / n, db / n
            if how == "dbeta-mean":
                return dx, dg, db / n
            # summed over other axes: recomputed from dout and x_hat, reducing every axis but the per-one's
            x_hat_dg = _x_hat_of(args, dout.shape)
            keep = {"over-batch-only": (0,), "per-example": tuple(a for a in range(1, dout.ndim))}[how]
            dtype = np.asarray(dg).dtype
            return dx, (dout * x_hat_dg).sum(axis=keep).astype(dtype), dout.sum(axis=keep).astype(dtype)
        return fn

    over_batch_only = sum_axes != (0,)  # summed over axis 0 alone is layer norm's right answer
    return [m for m in [
        Mistake("dgamma and dbeta swapped", "return (dx, dgamma, dbeta): dgamma = sum(dout * x_hat), dbeta = sum(dout)",
                transformed("swapped"), id="dgamma-dbeta-swapped"),
        Mistake("dgamma and dbeta averaged over the batch instead of summed",
                f"each {per}'s gamma is used by every example: its gradient is the SUM over them, not the mean",
                transformed("mean"), id="dparams-averaged"),
        Mistake("dbeta averaged over the batch instead of summed",
                f"each {per}'s beta is used by every example: dbeta = dout.sum(axis={sum_axes}), not a mean",
                transformed("dbeta-mean"), id="dparams-averaged"),
        Mistake("dgamma and dbeta summed over the batch only",
                f"gamma has one entry per {per}: sum dout * x_hat and dout over every other axis, axis={sum_axes}",
                transformed("over-batch-only"), id="dparams-wrong-axes"),
        Mistake("dgamma and dbeta summed per example (over the wrong axis)",
                f"gamma has one entry per {per}, shared by every example: sum over axis={sum_axes}, including the "
                "batch axis 0", transformed("per-example"), id="dparams-wrong-axes"),
    ] if over_batch_only or m.name != "dgamma and dbeta summed over the batch only"]


def _x_hat_of(args, shape):
    """The right x_hat of a layer or group norm case (args: x, gamma, beta, [G,] eps, dout)."""
    if len(shape) == 2:
        x, _, _, eps, _ = args
        return standardize(np.asarray(x, np.float64), 1, eps)
    x, _, _, G, eps, _ = args
    return standardize(np.asarray(x, np.float64).reshape(shape[0], G, -1), 2, eps).reshape(shape)


def _sign_and_recomputed_eps(backward, dx_formula: str) -> list[Mistake]:
    """Two backward slips layer and group norm say alike: the variance term's sign, eps recomputed as 1e-5."""
    return [mistake("sign-error-variance-path", backward("sign-error-variance-path"),
                    hint=dx_formula + ": the variance term is subtracted"),
            mistake("eps-hard-coded", backward("eps-hard-coded"),
                    name="backward recomputed with eps=1e-5 instead of the forward's eps",
                    hint="keep the eps the forward used (put it, or inv_std itself, in the cache)")]


def _finish(x, x_hat, gamma, beta, slip=""):
    c = x.shape[1]
    return affine(x_hat, gamma.reshape(1, c, 1, 1), beta.reshape(1, c, 1, 1), slip).astype(x.dtype, copy=False), None


def _gn(kind: str = "groups", slip: str = ""):
    """Group-norm forwards with one slip each: ``kind`` says which values share statistics, ``slip`` a shared one."""
    def forward(x, gamma, beta, G, eps):
        x = np.asarray(x)
        n, c, h, w = x.shape
        if kind == "groups":
            x_hat = standardize(x.reshape(n, G, -1), 2, eps, slip).reshape(x.shape)
        elif kind == "batch":  # per channel over (N, H, W): spatial batch norm
            x_hat = standardize(x, (0, 2, 3), eps)
        elif kind == "group_over_batch":  # each group over the batch too
            x_hat = standardize(x.reshape(n, G, -1), (0, 2), eps).reshape(x.shape)
        elif kind == "strided":  # channel c in group c % G
            x_hat = standardize(x.reshape(n, c // G, G, h, w), (1, 3, 4), eps).reshape(x.shape)
        elif kind == "group_size":  # G read as the number of channels per group
            x_hat = standardize(x.reshape(n, c // G, -1), 2, eps).reshape(x.shape)
        elif kind == "mean_channel_vars":  # the group's variance as the mean of its channels' variances
            xg = x.reshape(n, G, c // G, h * w)
            var = xg.var(3, keepdims=True).mean(2, keepdims=True)
            x_hat = ((xg - xg.mean((2, 3), keepdims=True)) * inv_std(var, eps)).reshape(x.shape)
        elif kind == "channels_last":  # grouped after x.transpose(0, 2, 3, 1), transposed back
            nhwc = x.transpose(0, 2, 3, 1)
            x_hat = standardize(nhwc.reshape(n, G, -1), 2, eps).reshape(n, h, w, c).transpose(0, 3, 1, 2)
        elif kind == "instance":
            x_hat = standardize(x, (2, 3), eps)
        elif kind == "layer":
            x_hat = standardize(x, (1, 2, 3), eps)
        elif kind == "no_transpose_back":  # grouped channel-last, reshaped back without transposing
            nhwc = x.transpose(0, 2, 3, 1).reshape(n, h * w, G, c // G)
            x_hat = standardize(nhwc, (1, 3), eps).reshape(n, c, h, w)
        return _finish(x, x_hat, gamma, beta, slip)
    return forward


def _gn_per_group_affine(which: str):
    def forward(x, gamma, beta, G, eps):
        x = np.asarray(x)
        n, c, h, w = x.shape
        x_hat = standardize(x.reshape(n, G, -1), 2, eps)
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
                "x.reshape(N, G, -1) reduced over axis=2", _gn("batch")),
        Mistake("each group's statistics taken over the whole batch",
                "reduce over axis=2 of x.reshape(N, G, -1) only, not over the batch axis 0 as well",
                _gn("group_over_batch")),
        Mistake("groups formed from non-adjacent channels",
                "a group is C/G *adjacent* channels (channel c in group c // (C/G)): x.reshape(N, G, C // G, H, W), "
                "not x.reshape(N, C // G, G, H, W)", _gn("strided")),
        Mistake(*_PER_GROUP_AFFINE, _gn_per_group_affine("first_G")),
        Mistake(*_PER_GROUP_AFFINE, _gn_per_group_affine("first_of_group")),
        Mistake("the reshape back done without undoing the grouping",
                "you grouped a transposed (channel-last) array: transpose back to (N, C, H, W) before the "
                "reshape, or group with x.reshape(N, G, -1) directly", _gn("no_transpose_back")),
        mistake("eps-outside-sqrt", _gn(slip="eps-outside-sqrt"), hint="divide by np.sqrt(var + eps), not np.sqrt(var) + eps"),
        mistake("eps-missing", _gn(slip="eps-missing"),
                hint="add eps to the group variance before the square root: np.sqrt(var + eps)"),
        Mistake("G read as the number of channels per group",
                "G is the number of groups; each holds C // G channels: x.reshape(N, G, -1), not x.reshape(N, C // G, -1)",
                _gn("group_size"), id="group-layout-g-as-size"),
        Mistake("the group variance taken as the mean of its channels' variances",
                "take one variance over all C/G*H*W values of the group: it also counts how far the channels' means "
                "lie apart; x.reshape(N, G, -1).var(axis=2)", _gn("mean_channel_vars"), id="group-variance-per-channel"),
        mistake("gamma-beta-swapped", _gn(slip="gamma-beta-swapped"), hint="out = x_hat * gamma + beta, per channel"),
        mistake("unbiased-variance", _gn(slip="unbiased-variance")),
        mistake("eps-hard-coded", _gn(slip="eps-hard-coded"), name="eps argument ignored (hard-coded 1e-5)"),
        mistake("divided-by-variance", _gn(slip="divided-by-variance"), hint="divide by np.sqrt(var + eps)"),
        Mistake("G ignored: one group per channel (instance norm)",
                "use the G passed in: x.reshape(N, G, -1)", _gn("instance")),
        Mistake("G ignored: one group per image (layer norm)",
                "use the G passed in: x.reshape(N, G, -1)", _gn("layer")),
        Mistake("groups formed after moving channels last (x.transpose(0, 2, 3, 1).reshape(N, G, -1))",
                "a group is C/G adjacent channels with all their pixels: reshape the (N, C, H, W) array itself, "
                "x.reshape(N, G, -1); after a transpose to channels-last the reshape mixes pixels of every channel",
                _gn("channels_last"), id="group-layout-channels-last"),
        mistake("sqrt-of-std", _gn(slip="sqrt-of-std"), hint="divide by np.sqrt(var + eps), var over each group"),
        *(mistake(slip, _gn(slip=slip)) for slip in ("gamma-and-beta-not-applied", "gamma-not-applied-only-beta-added",
                                                     "beta-not-added-only-gamma-applied", "mean-not-subtracted")),
        mistake("affine-before-normalizing", _gn_affine_first),
    ]


def _gn_affine_first(x, gamma, beta, G, eps):
    x = np.asarray(x)
    n, c, h, w = x.shape
    z = np.asarray(x, np.float64) * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)
    return standardize(z.reshape(n, G, -1), 2, eps).reshape(x.shape).astype(x.dtype, copy=False), None


def _gn_backward(slip: str = "", per_channel: bool = False, dgamma_per_group: bool = False, divisor: str = "M"):
    """Group norm's backward from the reference forward's cache, with one slip.

    ``per_channel``: dx's sums per channel (instance norm's backward); ``dgamma_per_group``: dgamma
    and dbeta summed within each group as well, then spread over the group's channels;
    ``divisor="HW"``: the 1/M of the formula taken as 1/(H*W), one channel's values.
    """
    def backward(x, gamma, beta, G, eps, dout):
        c = gref.groupnorm_forward(x, gamma, beta, G, eps)[1]
        n, ch, h, w = x.shape
        xh4 = c.x_hat.reshape(x.shape)
        g4 = dout if slip == "dx-without-gamma" else dout * gamma.reshape(1, ch, 1, 1)
        k = ch if per_channel else G
        inv = np.repeat(c.inv_std, ch // G, axis=1) if per_channel else c.inv_std
        if slip in ("eps-hard-coded", "eps-recomputed"):  # recomputed with 1e-5, not the cache's eps
            inv = inv_std(1 / c.inv_std ** 2 - eps, 1e-5)
        if slip == "eps-recomputed":  # x_hat recomputed with it too
            xh4 = (xh4.reshape(n, G, -1) / c.inv_std * inv).reshape(x.shape)
        dx = dx_from(g4.reshape(n, k, -1), xh4.reshape(n, k, -1), inv, 2, "" if slip == "eps-recomputed" else slip,
                     count={"HW": h * w, "CG": ch // G}.get(divisor))
        dgamma = (dout * (x if slip == "dgamma-from-x" else xh4)).sum(axis=(0, 2, 3))
        dbeta = dout.sum(axis=(0, 2, 3))
        if dgamma_per_group:
            dgamma = np.repeat(dgamma.reshape(G, -1).sum(1), ch // G)
            dbeta = np.repeat(dbeta.reshape(G, -1).sum(1), ch // G)
        return dx.reshape(x.shape).astype(x.dtype, copy=False), dgamma, dbeta
    return backward


_GN_DX = "with g = gamma * dout grouped to (N, G, M), dx = inv_std / M * (M * g - g.sum(2) - x_hat * (g * x_hat).sum(2))"


def _gn_backward_mistakes() -> list[Mistake]:
    return [
        mistake("mean-path-missing", _gn_backward("mean-path-missing"),
                name="dx missing the path through the group mean",
                hint="each group's mean depends on all M = C/G*H*W values of the group: " + _GN_DX),
        mistake("variance-path-missing", _gn_backward("variance-path-missing"),
                name="dx missing the path through the group variance",
                hint="subtract x_hat * (g * x_hat).sum(axis=2, keepdims=True) within each group"),
        mistake("mean-and-variance-paths-missing", _gn_backward("mean-and-variance-paths-missing"),
                name="dx missing the paths through the group mean and variance",
                hint="the group statistics are functions of x: " + _GN_DX),
        Mistake("dx summed per channel instead of per group (instance norm's backward)",
                "the sums in dx run over each group's M = C/G*H*W values, the same groups as the forward",
                _gn_backward(per_channel=True)),
        mistake("dx-without-gamma", _gn_backward("dx-without-gamma"),
                hint="the gradient reaching x_hat is gamma[c] * dout (gamma reshaped to (1, C, 1, 1))"),
        mistake("dgamma-from-x", _gn_backward("dgamma-from-x"),
                hint="out = x_hat * gamma + beta, so dgamma = (dout * x_hat).sum(axis=(0, 2, 3))"),
        mistake("missing-divisor", _gn_backward("missing-divisor"), name="dx missing the 1/M",
                hint="the group statistics average over its M = C/G*H*W values: " + _GN_DX),
        Mistake("dx divided by H*W (one channel's values) instead of M = C/G*H*W",
                "each group's statistics average over all M = C/G*H*W values of the group: " + _GN_DX,
                _gn_backward(divisor="HW"), id="wrong-divisor"),
        *_sign_and_recomputed_eps(_gn_backward, _GN_DX),
        Mistake("dgamma and dbeta summed per group",
                "gamma and beta are per channel: dgamma = (dout * x_hat).sum(axis=(0, 2, 3)), "
                "dbeta = dout.sum(axis=(0, 2, 3))", _gn_backward(dgamma_per_group=True)),
        Mistake("dx's M taken as C/G, forgetting H * W",
                "each group holds M = C/G * H * W values (x.reshape(N, G, -1).shape[2]): " + _GN_DX,
                _gn_backward(divisor="CG"), id="wrong-divisor"),
        mistake("eps-hard-coded", _gn_backward("eps-recomputed"),
                name="backward recomputed with eps=1e-5 instead of the forward's eps",
                hint="keep the eps the forward used (put it, or inv_std itself, in the cache)"),
        mistake("inv-std-squared", _gn_backward("inv-std-squared")),
        *dparam_mistakes(_gn_backward(), (0, 2, 3), "channel"),
    ]


MISTAKE_NAMES = {
    "layernorm_forward": [m.name for m in _ln_forward_mistakes()],
    "layernorm_backward": [m.name for m in _ln_backward_mistakes()],
    "groupnorm_forward": sorted({m.name for m in _gn_forward_mistakes()}),
    "groupnorm_backward": [m.name for m in _gn_backward_mistakes()],
}


ENTRIES = {"layernorm_forward": _ln_forward_mistakes, "layernorm_backward": _ln_backward_mistakes,
           "groupnorm_forward": _gn_forward_mistakes, "groupnorm_backward": _gn_backward_mistakes}

"""The catalogue's entries for notebook 9's group norm, forward and backward.

Each entry is a small wrong implementation that reproduces one mistake as a learner makes it: the
group layout (G read as a size, strided or channel-last groups), the statistics, the affine step,
and the backward's sums and divisor.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.catalogue.norm_family import _sign_and_recomputed_eps, dparam_mistakes
from bncourse.checks.catalogue.shared import affine, dx_from, inv_std, mistake, standardize
from bncourse.checks.core import Mistake
from bncourse.reference import groupnorm as gref


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
        elif kind == "per_pixel":  # each group's channels at one pixel
            x_hat = standardize(x.reshape(n, G, c // G, h, w), 2, eps).reshape(x.shape)
        elif kind == "flat_strided":  # x.reshape(N, -1, G) reduced over axis 1
            x_hat = standardize(x.reshape(n, -1, G), 1, eps).reshape(x.shape)
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
        elif which == "group_mean":  # each group takes the mean of its channels' gamma and beta
            g, b = gamma.reshape(G, -1).mean(1).reshape(1, G, 1), beta.reshape(G, -1).mean(1).reshape(1, G, 1)
        elif which == "tiled":  # np.tile(gamma, H * W).reshape(1, G, -1): channel c at every C-th position
            g, b = np.tile(gamma, h * w).reshape(1, G, -1), np.tile(beta, h * w).reshape(1, G, -1)
        elif which == "tiled_in_group":  # each group's C/G entries tiled over its M values
            g, b = (np.tile(p.reshape(G, -1), (1, h * w))[None] for p in (gamma, beta))
        else:  # each group takes its first channel's gamma and beta
            g, b = gamma[:: c // G].reshape(1, G, 1), beta[:: c // G].reshape(1, G, 1)
        return (x_hat * g + b).reshape(x.shape).astype(x.dtype, copy=False), None
    return forward


_PER_GROUP_AFFINE = ("gamma and beta per group instead of per channel",
                     "gamma and beta have one entry per channel (C,): reshape x_hat back to (N, C, H, W) first, "
                     "then out = x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1)")


_TILED_AFFINE = ("gamma and beta applied in the grouped (N, G, M) layout, tiled onto the wrong channels",
                 "in the (N, G, M) layout a group's M values run channel by channel, H*W values each, so a tiled "
                 "gamma (np.tile) lands on the wrong channels: reshape x_hat back to (N, C, H, W) first, then "
                 "out = x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1)")


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
        Mistake(*_PER_GROUP_AFFINE, _gn_per_group_affine("group_mean")),
        *(Mistake(*_TILED_AFFINE, _gn_per_group_affine(which), id="affine-in-grouped-layout")
          for which in ("tiled", "tiled_in_group")),
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
        Mistake("statistics over the group's channels at each pixel (H and W left out)",
                "each group's statistics are over all C/G*H*W values of the group: x.reshape(N, G, -1), reduced over "
                "axis 2 (or over axes (2, 3, 4) of x.reshape(N, G, C // G, H, W))", _gn("per_pixel"),
                id="group-layout-per-pixel"),
        Mistake("groups taken as every G-th value (x.reshape(N, -1, G))",
                "a group is C/G adjacent channels with all their pixels: x.reshape(N, G, -1), reduced over axis 2",
                _gn("flat_strided"), id="group-layout-strided"),
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
                                                     "beta-not-added-only-gamma-applied", "mean-not-subtracted", "rms-norm", "rms-norm-eps-missing", "multiplied-by-std",
                                                     "variance-uncentred", "not-divided-by-std", "eps-added-to-x-hat",
                                                     "beta-scaled-by-gamma", "beta-subtracted", "divided-by-gamma")),
        mistake("affine-before-normalizing", _gn_affine_first),
    ]


def _gn_affine_first(x, gamma, beta, G, eps):
    x = np.asarray(x)
    n, c, h, w = x.shape
    z = np.asarray(x, np.float64) * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)
    return standardize(z.reshape(n, G, -1), 2, eps).reshape(x.shape).astype(x.dtype, copy=False), None


def _gn_backward(slip: str = "", per_channel: bool = False, dgamma_per_group: bool | str = False, divisor: str = "M"):
    """Group norm's backward from the reference forward's cache, with one slip.

    ``per_channel``: dx's sums per channel (instance norm's backward); ``dgamma_per_group``: dgamma
    and dbeta summed within each group as well, then spread over the group's channels;
    ``divisor="HW"``: the 1/M of the formula taken as 1/(H*W), one channel's values.
    """
    def backward(x, gamma, beta, G, eps, dout):
        c = gref.groupnorm_forward(x, gamma, beta, G, eps)[1]
        n, ch, h, w = x.shape
        xh4 = c.x_hat.reshape(x.shape)
        after = slip == "gamma-after-sums"  # g = dout in the sums, gamma multiplied on at the end
        g4 = dout if slip == "dx-without-gamma" or after else dout * gamma.reshape(1, ch, 1, 1)
        k = ch if per_channel else G
        inv = np.repeat(c.inv_std, ch // G, axis=1) if per_channel else c.inv_std
        if slip in ("eps-hard-coded", "eps-recomputed"):  # recomputed with 1e-5, not the cache's eps
            inv = inv_std(1 / c.inv_std ** 2 - eps, 1e-5)
        if slip == "eps-missing":  # recomputed without eps, x_hat from the cache
            with np.errstate(all="ignore"):
                inv = inv_std(1 / c.inv_std ** 2 - eps, 0.0)
        if slip == "eps-recomputed":  # x_hat recomputed with it too
            xh4 = (xh4.reshape(n, G, -1) / c.inv_std * inv).reshape(x.shape)
        dx = dx_from(g4.reshape(n, k, -1), xh4.reshape(n, k, -1), inv, 2, "" if slip == "eps-recomputed" else slip,
                     count={"HW": h * w, "CG": ch // G, "CHW": ch * h * w, "NM": n * ch // G * h * w}.get(divisor),
                     dout=dout.reshape(n, k, -1), x=np.asarray(x, np.float64).reshape(n, k, -1))
        dx = dx.reshape(x.shape) * (gamma.reshape(1, ch, 1, 1) if after else 1.0)
        dgamma = (dout * (x if slip == "dgamma-from-x" else xh4)).sum(axis=(0, 2, 3))
        dbeta = dout.sum(axis=(0, 2, 3))
        if dgamma_per_group == "G":  # one value per group, shape (G,)
            return (dx.reshape(x.shape).astype(x.dtype, copy=False), dgamma.reshape(G, -1).sum(1),
                    dbeta.reshape(G, -1).sum(1))
        if dgamma_per_group:
            dgamma = np.repeat(dgamma.reshape(G, -1).sum(1), ch // G)
            dbeta = np.repeat(dbeta.reshape(G, -1).sum(1), ch // G)
        return dx.reshape(x.shape).astype(x.dtype, copy=False), dgamma, dbeta
    return backward


def _gn_backward_over_batch(count: str = "M"):
    """dx's sums over the batch as well: the grouped view (N, G, C/G, H, W) summed over (0, 2, 3, 4)
    (``count="NM"``: divided by N*M to match)."""
    def backward(x, gamma, beta, G, eps, dout):
        c = gref.groupnorm_forward(x, gamma, beta, G, eps)[1]
        n, ch, h, w = x.shape
        g = (np.asarray(dout, np.float64) * gamma.reshape(1, ch, 1, 1)).reshape(n, G, -1)
        m = g.shape[2] * (n if count == "NM" else 1)
        dx = dx_from(g, c.x_hat.astype(np.float64), c.inv_std, (0, 2), count=m)
        xh4 = c.x_hat.reshape(x.shape)
        return dx.reshape(x.shape).astype(x.dtype, copy=False), (dout * xh4).sum((0, 2, 3)), dout.sum((0, 2, 3))
    return backward


def _gn_backward_strided(x, gamma, beta, G, eps, dout):
    """Forward and backward with channel c in group c % G: the right pair run on the channels reordered."""
    ch = x.shape[1]
    order = np.argsort(np.arange(ch) % G, kind="stable")
    back = np.argsort(order)
    out, cache = gref.groupnorm_forward(x[:, order], gamma[order], beta[order], G, eps)
    dx, dgamma, dbeta = gref.groupnorm_backward(np.asarray(dout)[:, order], cache)
    return dx[:, back], dgamma[back], dbeta[back]


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
        *(Mistake("dx's sums taken over the batch as well (the grouped view summed over (0, 2, 3, 4))",
                  "each image has its own group statistics: dx's sums run over each group's C/G*H*W values of ONE "
                  "image, axes (2, 3, 4) of the (N, G, C/G, H, W) view, never over N; " + _GN_DX,
                  _gn_backward_over_batch(count), id="dx-sums-over-batch") for count in ("M", "NM")),
        Mistake("groups formed from non-adjacent channels (channel c in group c % G)",
                "group g is the C/G ADJACENT channels g*C/G ... (g+1)*C/G - 1: x.reshape(N, G, C // G, H, W), "
                "not x.reshape(N, C // G, G, H, W)", _gn_backward_strided, id="group-layout-strided"),
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
        Mistake("dgamma and dbeta per group (shape (G,)) instead of per channel (shape (C,))",
                "gamma and beta have one entry per CHANNEL, like the forward's gamma: dgamma = "
                "(dout * x_hat).sum(axis=(0, 2, 3)), dbeta = dout.sum(axis=(0, 2, 3)), both shape (C,)",
                _gn_backward(dgamma_per_group="G"), id="dparams-per-group"),
        Mistake("dx's M taken as C/G, forgetting H * W",
                "each group holds M = C/G * H * W values (x.reshape(N, G, -1).shape[2]): " + _GN_DX,
                _gn_backward(divisor="CG"), id="wrong-divisor"),
        mistake("eps-hard-coded", _gn_backward("eps-recomputed"),
                name="backward recomputed with eps=1e-5 instead of the forward's eps",
                hint="keep the eps the forward used (put it, or inv_std itself, in the cache)"),
        Mistake("dx's M taken as C*H*W (all channels) instead of C/G*H*W",
                "each group holds M = C/G * H * W values (x.reshape(N, G, -1).shape[2]), not all C channels: " + _GN_DX,
                _gn_backward(divisor="CHW"), id="wrong-divisor"),
        Mistake("dx's M taken as N*C/G*H*W (the batch counted in)",
                "each group's statistics are per image: M = C/G * H * W values (x.reshape(N, G, -1).shape[2]): "
                + _GN_DX, _gn_backward(divisor="NM"), id="wrong-divisor"),
        *(mistake(slip, _gn_backward(slip))
          for slip in ("inv-std-squared", "inv-std-missing", "std-instead-of-inv-std", "divisor-minus-one",
                       "divisor-minus-one-outside", "gamma-after-sums", "sums-without-gamma", "x-for-x-hat",
                       "divisor-twice", "sums-divided-twice", "xmu-for-x-hat", "direct-term-without-m")),
        mistake("eps-missing", _gn_backward("eps-missing"), name="backward recomputed 1 / std without eps",
                hint="use the eps the forward used (keep it, or inv_std itself, in the cache): np.sqrt(var) leaves it out"),
        *dparam_mistakes(_gn_backward(), (0, 2, 3), "channel"),
    ]


ENTRIES = {"groupnorm_forward": _gn_forward_mistakes, "groupnorm_backward": _gn_backward_mistakes}

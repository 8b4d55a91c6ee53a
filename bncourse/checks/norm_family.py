"""Checks for the "Beyond batch norm" notebook: layer norm and group norm, forward and backward.

The learner's functions take and return numpy arrays:

* ``layernorm_forward(x, gamma, beta, eps) -> (out, cache)``, x (N, D), gamma/beta (D,);
* ``layernorm_backward(dout, cache) -> (dx, dgamma, dbeta)``;
* ``groupnorm_forward(x, gamma, beta, G, eps) -> (out, cache)``, x (N, C, H, W), gamma/beta (C,);
* ``groupnorm_backward(dout, cache) -> (dx, dgamma, dbeta)``.

A backward is checked through the learner's own forward (its cache is the learner's design):
the check calls ``backward(dout, forward(x, gamma, beta, ...)[1])``, arrays in, arrays out, so the
grader can re-judge it from receipts. Each check names the known mistakes it recognizes
(``MISTAKE_NAMES``); ``hidden=True`` runs other seeds and shapes for nbgrader's hidden tests.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from bncourse.checks.core import Case, CheckResult, Mistake, check_function
from bncourse.checks.inputs import case_seed
from bncourse.reference import groupnorm as gref
from bncourse.reference import layernorm as lref

__all__ = [
    "check_layernorm_forward", "check_layernorm_backward",
    "check_groupnorm_forward", "check_groupnorm_backward", "MISTAKE_NAMES",
]

_RTOL, _ATOL = 1e-4, 1e-5  # float32 cases are computed in float32


# ---------------------------------------------------------------------------------------------
# Seeded inputs
# ---------------------------------------------------------------------------------------------


def _rows(rng, n, d, dtype, loc=3.0, tiny=False):
    """(N, D): each row on its own scale and offset; ``tiny`` gives row 0 a std of 1e-3 (eps matters)."""
    scale = rng.uniform(0.3, 3.0, size=(n, 1))
    if tiny:
        scale[0] = 1e-3
    return (rng.normal(size=(n, d)) * scale + loc + rng.normal(size=(n, 1))).astype(dtype)


def _affine(rng, c, dtype):
    gamma = rng.uniform(0.5, 2.0, size=c) * rng.choice([-1.0, 1.0], size=c)
    return gamma.astype(dtype), (rng.normal(size=c) + 0.5).astype(dtype)


_LN_VISIBLE = [("N=4, D=5", 0, 4, 5, {}), ("N=1, D=6: a batch of one", 1, 1, 6, {}),
               ("N=8, D=16, float32", 2, 8, 16, {"dtype": np.float32}),
               ("N=6, D=4, a row with std 1e-3 (eps matters)", 3, 6, 4, {"tiny": True}),
               ("N=5, D=3, eps=1e-2 passed in", 4, 5, 3, {"tiny": True, "eps": 1e-2})]
_LN_HIDDEN = [("N=3, D=9", 100, 3, 9, {}), ("N=10, D=2, float32", 101, 10, 2, {"dtype": np.float32}),
              ("N=7, D=5, large mean (1e4), eps=1e-3", 102, 7, 5, {"loc": 1e4, "tiny": True, "eps": 1e-3})]


def _ln_cases(hidden: bool, with_dout: bool = False) -> list[Case]:
    cases = []
    for name, seed, n, d, opt in _LN_HIDDEN if hidden else _LN_VISIBLE:
        def make(seed=case_seed("layernorm", name, seed, hidden), n=n, d=d, opt=opt):
            rng = np.random.default_rng(seed)
            dtype = opt.get("dtype", np.float64)
            x = _rows(rng, n, d, dtype, opt.get("loc", 3.0), opt.get("tiny", False))
            gamma, beta = _affine(rng, d, dtype)
            eps = opt.get("eps", 1e-5)
            if with_dout:
                return x, gamma, beta, eps, rng.normal(size=(n, d)).astype(dtype)
            return x, gamma, beta, eps
        cases.append(Case(name, make))
    return cases


_GN_VISIBLE = [("N=2, C=6, H=3, W=4, G=3", 10, (2, 6, 3, 4), 3, {}),
               ("N=1, C=4, H=2, W=2, G=2: a batch of one", 11, (1, 4, 2, 2), 2, {}),
               ("N=3, C=8, H=2, W=3, G=4, float32", 12, (3, 8, 2, 3), 4, {"dtype": np.float32}),
               ("N=2, C=6, H=2, W=2, G=2, a channel with std 1e-3", 13, (2, 6, 2, 2), 2, {"tiny": True}),
               ("N=2, C=4, H=3, W=1, G=2, eps=1e-2 passed in", 14, (2, 4, 3, 1), 2, {"tiny": True, "eps": 1e-2})]
_GN_HIDDEN = [("N=3, C=12, H=2, W=2, G=3", 110, (3, 12, 2, 2), 3, {}),
              ("N=2, C=8, H=1, W=4, G=2, float32", 111, (2, 8, 1, 4), 2, {"dtype": np.float32}),
              ("N=4, C=6, H=2, W=3, G=3, eps=1e-3", 112, (4, 6, 2, 3), 3, {"tiny": True, "eps": 1e-3})]


def _images(rng, shape, dtype, tiny=False):
    """(N, C, H, W): each channel of each image on its own scale and offset."""
    n, c = shape[:2]
    scale = rng.uniform(0.3, 3.0, size=(n, c, 1, 1))
    offset = 2.0 + rng.normal(size=(n, c, 1, 1)) * 2
    if tiny:
        scale[:, :2] = 1e-3  # the first group: its variance is comparable to eps
        offset[:, :2] = 1.0
    return (rng.normal(size=shape) * scale + offset).astype(dtype)


def _gn_cases(hidden: bool, with_dout: bool = False) -> list[Case]:
    cases = []
    for name, seed, shape, G, opt in _GN_HIDDEN if hidden else _GN_VISIBLE:
        def make(seed=case_seed("groupnorm", name, seed, hidden), shape=shape, G=G, opt=opt):
            rng = np.random.default_rng(seed)
            dtype = opt.get("dtype", np.float64)
            x = _images(rng, shape, dtype, opt.get("tiny", False))
            gamma, beta = _affine(rng, shape[1], dtype)
            eps = opt.get("eps", 1e-5)
            if with_dout:
                return x, gamma, beta, G, eps, rng.normal(size=shape).astype(dtype)
            return x, gamma, beta, G, eps
        cases.append(Case(name, make))
    return cases


# ---------------------------------------------------------------------------------------------
# Layer norm
# ---------------------------------------------------------------------------------------------


def _ln_ref(x, gamma, beta, eps):
    return lref.layernorm_forward(x, gamma, beta, eps)[0], None


def _ln_wrong(axis=1, how="inside", ddof=0, affine="ok"):
    def forward(x, gamma, beta, eps):
        x = np.asarray(x)
        mu = x.mean(axis=axis, keepdims=True)
        var = x.var(axis=axis, ddof=ddof, keepdims=True)
        if how == "inside":
            x_hat = (x - mu) / np.sqrt(var + eps)
        elif how == "outside":
            x_hat = (x - mu) / (np.sqrt(var) + eps)
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
        Mistake("unbiased variance used to normalize", "use the biased variance (ddof=0), as layer norm does",
                _ln_wrong(ddof=1)),
        Mistake("divided by the variance instead of the standard deviation",
                "divide by np.sqrt(var + eps)", _ln_wrong(how="var")),
        Mistake("gamma and beta swapped", "out = gamma * x_hat + beta", _ln_wrong(affine="swap")),
        Mistake("gamma and beta not applied", "finish with out = gamma * x_hat + beta", _ln_wrong(affine="none")),
    ]


def check_layernorm_forward(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, eps)[0]`` equal layer norm (F.layer_norm over the last axis)?"""
    return check_function("layernorm_forward", fn, _ln_ref, _ln_cases(hidden), _ln_forward_mistakes(),
                          outputs=("out", "cache"), compare=["out"], rtol=_RTOL, atol=_ATOL)


def _pair(forward_fn, backward_fn, grouped: bool):
    """Arrays in, arrays out: the learner's backward on the learner's own forward cache."""
    if grouped:
        def run(x, gamma, beta, G, eps, dout):
            return backward_fn(dout, forward_fn(x, gamma, beta, G, eps)[1])
    else:
        def run(x, gamma, beta, eps, dout):
            return backward_fn(dout, forward_fn(x, gamma, beta, eps)[1])
    return run


def _ln_ref_backward(x, gamma, beta, eps, dout):
    return lref.layernorm_backward(dout, lref.layernorm_forward(x, gamma, beta, eps)[1])


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
    ]


def check_layernorm_backward(forward_fn, backward_fn, hidden: bool = False) -> CheckResult:
    """Does ``backward_fn(dout, forward_fn(x, gamma, beta, eps)[1])`` give layer norm's dx, dgamma, dbeta?"""
    if not callable(forward_fn) or not callable(backward_fn):
        not_fn = forward_fn if not callable(forward_fn) else backward_fn
        return check_function("layernorm_backward", not_fn, None, [])
    return check_function("layernorm_backward", _pair(forward_fn, backward_fn, False), _ln_ref_backward,
                          _ln_cases(hidden, with_dout=True), _ln_backward_mistakes(),
                          outputs=("dx", "dgamma", "dbeta"), rtol=_RTOL, atol=_ATOL)


# ---------------------------------------------------------------------------------------------
# Group norm
# ---------------------------------------------------------------------------------------------


def _gn_ref(x, gamma, beta, G, eps):
    return gref.groupnorm_forward(x, gamma, beta, G, eps)[0], None


def _finish(x, x_hat, gamma, beta):
    c = x.shape[1]
    return (x_hat * gamma.reshape(1, c, 1, 1) + beta.reshape(1, c, 1, 1)).astype(x.dtype, copy=False), None


def _norm(v, axes, eps, how="inside", ddof=0):
    mu = v.mean(axis=axes, keepdims=True)
    var = v.var(axis=axes, keepdims=True, ddof=ddof)
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
        Mistake("unbiased variance used to normalize", "use the biased variance (ddof=0)",
                _gn_stats("groups", ddof=1)),
        Mistake("G ignored: one group per channel (instance norm)",
                "use the G passed in: x.reshape(N, G, -1)", _gn_stats("instance")),
        Mistake("G ignored: one group per image (layer norm)",
                "use the G passed in: x.reshape(N, G, -1)", _gn_stats("layer")),
    ]


def check_groupnorm_forward(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, G, eps)[0]`` equal ``F.group_norm(x, G, gamma, beta, eps)``?"""
    return check_function("groupnorm_forward", fn, _gn_ref, _gn_cases(hidden), _gn_forward_mistakes(),
                          outputs=("out", "cache"), compare=["out"], rtol=_RTOL, atol=_ATOL)


def _gn_ref_backward(x, gamma, beta, G, eps, dout):
    return gref.groupnorm_backward(dout, gref.groupnorm_forward(x, gamma, beta, G, eps)[1])


def _gn_bwd(mean_path=True, var_path=True, per_channel=False, use_gamma=True, dgamma_per_group=False):
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
        dgamma = (dout * xh4).sum(axis=(0, 2, 3))
        dbeta = dout.sum(axis=(0, 2, 3))
        if dgamma_per_group:  # summed within each group as well, then spread over the group's channels
            dgamma = np.repeat(dgamma.reshape(G, -1).sum(1), ch // G)
            dbeta = np.repeat(dbeta.reshape(G, -1).sum(1), ch // G)
        return (s / m * dx).reshape(x.shape).astype(x.dtype, copy=False), dgamma, dbeta
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
        Mistake("dgamma and dbeta summed per group",
                "gamma and beta are per channel: dgamma = (dout * x_hat).sum(axis=(0, 2, 3)), dbeta = dout.sum(axis=(0, 2, 3))",
                _gn_bwd(dgamma_per_group=True)),
    ]


def check_groupnorm_backward(forward_fn, backward_fn, hidden: bool = False) -> CheckResult:
    """Does ``backward_fn(dout, forward_fn(x, gamma, beta, G, eps)[1])`` give group norm's gradients?"""
    if not callable(forward_fn) or not callable(backward_fn):
        not_fn = forward_fn if not callable(forward_fn) else backward_fn
        return check_function("groupnorm_backward", not_fn, None, [])
    result = check_function("groupnorm_backward", _pair(forward_fn, backward_fn, True), _gn_ref_backward,
                            _gn_cases(hidden, with_dout=True), _gn_backward_mistakes(),
                            outputs=("dx", "dgamma", "dbeta"), rtol=_RTOL, atol=_ATOL)
    return result


MISTAKE_NAMES = {
    "layernorm_forward": [m.name for m in _ln_forward_mistakes()],
    "layernorm_backward": [m.name for m in _ln_backward_mistakes()],
    "groupnorm_forward": sorted({m.name for m in _gn_forward_mistakes()}),
    "groupnorm_backward": [m.name for m in _gn_backward_mistakes()],
}

"""Checks for notebook 3, "Batch norm backward", naming the learner's likely mistake.

    check_batchnorm_backward_staged(fn) / check_batchnorm_backward(fn)
                                       fn(dout, cache) -> (dx, dgamma, dbeta); dout, dx (N, D), dgamma, dbeta (D,)
    check_gradients_numerically(fn)    the same fn against central differences (float64), judged by the
                                       norm-wise relative error, as torch.autograd.gradcheck allows
    check_spatial_batchnorm_forward(fn)            fn(x, gamma, beta, eps=1e-5) -> (out, cache), x (N, C, H, W)
    check_spatial_batchnorm_backward(fwd, bwd)     bwd(dout, fwd(x, gamma, beta, eps)[1]) -> (dx, dgamma, dbeta)

Where the caches come from (a decision, written down here once): the (N, D) backward checks feed
the learner's backward a cache made by the *reference* ``batchnorm_forward`` (a ``BatchNormCache``
with named fields), so the backward is graded on its own. The spatial backward check feeds the
learner's backward the cache of the learner's *own* spatial forward, because the learner designs
that cache: the two learner functions run chained in one call, recorded as one (so the grader can
re-judge the pair from what it returned).
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Case, CaseResult, CheckResult, Mistake, check_function, safe_call
from bncourse.checks.forward import X_IN_PLACE
from bncourse.checks.inputs import affine, as_dtype_of, case_seed, features, images
from bncourse.gradcheck import numerical_gradient
from bncourse.reference import batchnorm as ref

__all__ = ["check_batchnorm_backward_staged", "check_batchnorm_backward", "check_gradients_numerically",
           "check_spatial_batchnorm_forward", "check_spatial_batchnorm_backward", "norm_relative_error",
           "MISTAKES", "GRADIENT_TOLERANCE"]

_DOUT_IN_PLACE = ("the upstream gradient dout modified in place", "dout belongs to the caller: compute into new arrays")

# ---------------------------------------------------------------------------------------------
# (N, D) backward: the cache comes from the reference forward
# ---------------------------------------------------------------------------------------------

_BACKWARD_VISIBLE = [
    ("N=4, D=3", 30, 4, 3, {}),
    ("N=2, D=1", 31, 2, 1, {}),
    ("N=50, D=8, float32", 32, 50, 8, {"dtype": np.float32}),
    ("N=10, D=4, large mean (1e7)", 33, 10, 4, {"loc": 1e7}),
    ("N=6, D=5, non-contiguous x and dout", 34, 6, 5, {"noncontig": True}),
]
_BACKWARD_HIDDEN = [
    ("N=3, D=6", 130, 3, 6, {}),
    ("N=3, D=2, float32", 131, 3, 2, {"dtype": np.float32}),
    ("N=64, D=3, non-contiguous", 132, 64, 3, {"noncontig": True, "eps": 1e-3}),
]


def _backward_cases(hidden: bool) -> list[Case]:
    def make(seed, n, d, opt):
        rng = np.random.default_rng(seed)
        dtype, nc = opt.get("dtype", np.float64), opt.get("noncontig", False)
        x = features(rng, n, d, loc=opt.get("loc", 3.0), dtype=dtype, noncontig=nc)
        gamma, beta = affine(rng, d, dtype)
        dout = rng.normal(size=(n, 2 * d if nc else d)).astype(dtype)
        _, cache = ref.batchnorm_forward(x, gamma, beta, opt.get("eps", 1e-5))
        return (dout[:, ::2] if nc else dout), cache

    return [Case(name, lambda s=case_seed("batchnorm_backward", name, seed, hidden), n=n, d=d, o=opt: make(s, n, d, o))
            for name, seed, n, d, opt in (_BACKWARD_HIDDEN if hidden else _BACKWARD_VISIBLE)]


def _dx(dout, c):
    n = dout.shape[0]
    return c.gamma * c.inv_std / n * (n * dout - dout.sum(0) - c.x_hat * (dout * c.x_hat).sum(0))


def _dgamma(dout, c):
    return (dout * c.x_hat).sum(0)


def _with(dx=_dx, dgamma=_dgamma, dbeta=lambda g, c: g.sum(0)):
    """A backward from three small rules ``rule(dout, cache)``; each mistake replaces one or two."""
    def backward(dout, cache):
        dout = np.asarray(dout)
        return dx(dout, cache), dgamma(dout, cache), dbeta(dout, cache)
    return backward


def _staged(dout, c, *, two=2.0, sign=-1.0, var_share=True, mean_share=True):
    """The notebook's staged backward, with one step's factor possibly gotten wrong."""
    n = dout.shape[0]
    dx_hat = dout * c.gamma
    dstd = sign * (dx_hat * c.xmu).sum(0) / c.std ** 2
    dsq = dstd / (2 * c.std) / (n if var_share else 1)
    dxmu = dx_hat * c.inv_std + two * c.xmu * dsq
    return dxmu - dxmu.sum(0) / (n if mean_share else 1)


def _closed_form_swapped(g, c):
    n = g.shape[0]
    return c.gamma * c.inv_std / n * (n * g - (g * c.x_hat).sum(0) - c.x_hat * g.sum(0))


_BACKWARD_MISTAKES = [
    Mistake("dx missing the terms that flow through the mean and the variance",
            "x reaches the output directly AND through the batch mean and variance; "
            "dx = gamma / std * (dout - mean(dout) - x_hat * mean(dout * x_hat))",
            _with(dx=lambda g, c: g * c.gamma * c.inv_std)),
    Mistake("dx missing the term that flows through the variance",
            "the variance depends on x too: add the path through var (the -x_hat * mean(dout * x_hat) term)",
            _with(dx=lambda g, c: c.gamma * c.inv_std * (g - g.mean(0)))),
    Mistake("dx missing the term that flows through the mean",
            "the mean depends on x too: add the path through mu (the -mean(dout) term)",
            _with(dx=lambda g, c: c.gamma * c.inv_std * (g - c.x_hat * (g * c.x_hat).mean(0)))),
    Mistake("dx missing the factor gamma", "out = gamma * x_hat + beta, so dx_hat = dout * gamma",
            _with(dx=lambda g, c: _dx(g, c) / c.gamma)),
    Mistake("dgamma not summed over the batch",
            "gamma is shared by all N rows: dgamma = sum over axis 0 of dout * x_hat, shape (D,)",
            _with(dgamma=lambda g, c: g * c.x_hat)),
    Mistake("dbeta not summed over the batch", "beta is shared by all N rows: dbeta = dout.sum(axis=0), shape (D,)",
            _with(dbeta=lambda g, c: g)),
    Mistake("dgamma and dbeta not summed over the batch",
            "gamma and beta are shared by all N rows: sum their gradients over axis 0, shape (D,)",
            _with(dgamma=lambda g, c: g * c.x_hat, dbeta=lambda g, c: g)),
    Mistake("dgamma and dbeta averaged over the batch (divided by N)",
            "the loss sums over the N rows, so the gradients of the shared gamma and beta are sums, not means: "
            "dgamma = (dout * x_hat).sum(axis=0), dbeta = dout.sum(axis=0)",
            _with(dgamma=lambda g, c: (g * c.x_hat).mean(0), dbeta=lambda g, c: g.mean(0)), only=("dgamma", "dbeta")),
    Mistake("dgamma averaged over the batch (divided by N)",
            "gamma's gradient is a sum over the N rows, not a mean: dgamma = (dout * x_hat).sum(axis=0)",
            _with(dgamma=lambda g, c: (g * c.x_hat).mean(0)), only=("dgamma",)),
    Mistake("dbeta averaged over the batch (divided by N)",
            "beta's gradient is a sum over the N rows, not a mean: dbeta = dout.sum(axis=0)",
            _with(dbeta=lambda g, c: g.mean(0)), only=("dbeta",)),
    Mistake("dgamma and dbeta summed over the wrong axis",
            "sum over the batch, axis 0, so they have shape (D,) like gamma and beta",
            _with(dgamma=lambda g, c: (g * c.x_hat).sum(1), dbeta=lambda g, c: g.sum(1))),
    Mistake("dgamma and dbeta swapped",
            "return (dx, dgamma, dbeta) in that order; dgamma = sum(dout * x_hat), dbeta = sum(dout)",
            _with(dgamma=lambda g, c: g.sum(0), dbeta=_dgamma)),
    Mistake("dgamma computed from x instead of x_hat", "out = gamma * x_hat + beta, so dgamma = sum(dout * x_hat, axis=0)",
            _with(dgamma=lambda g, c: (g * c.x).sum(0))),
    Mistake("factor 2 missing in the path through the square (step 6)",
            "sq = xmu**2, so its local derivative is 2 * xmu: dxmu += 2 * xmu * dsq",
            _with(dx=lambda g, c: _staged(g, c, two=1.0))),
    Mistake("sign of the path through 1/std flipped (step 3)",
            "the derivative of 1/std is -1/std**2: dstd = -dinv_std / std**2",
            _with(dx=lambda g, c: _staged(g, c, sign=1.0))),
    Mistake("the variance's gradient not shared out over the N rows (step 5)",
            "var = mean(sq) averages N rows, so each row gets 1/N of it: dsq = dvar / N",
            _with(dx=lambda g, c: _staged(g, c, var_share=False))),
    Mistake("the mean's gradient not shared out over the N rows (step 8)",
            "mu = mean(x) averages N rows, so each row gets 1/N of it: dx += dmu / N",
            _with(dx=lambda g, c: _staged(g, c, mean_share=False))),
    Mistake("closed form without the 1/N",
            "the mean and the variance average over N rows: "
            "dx = gamma * inv_std / N * (N * dout - dbeta - x_hat * dgamma)",
            _with(dx=lambda g, c: _dx(g, c) * g.shape[0])),
    Mistake("dbeta and dgamma swapped inside the closed form",
            "the mean path subtracts dbeta = sum(dout), the variance path subtracts x_hat * dgamma: "
            "dx = gamma * inv_std / N * (N * dout - dbeta - x_hat * dgamma)", _with(dx=_closed_form_swapped)),
]


def _check_backward(exercise: str, fn, hidden: bool) -> CheckResult:
    return check_function(
        exercise, fn, ref.batchnorm_backward, _backward_cases(hidden), _BACKWARD_MISTAKES,
        arg_names=("dout",), in_place={"dout": _DOUT_IN_PLACE},
        outputs=("dx", "dgamma", "dbeta"), rtol=1e-4, atol=1e-4,
    )


def check_batchnorm_backward_staged(fn, hidden: bool = False) -> CheckResult:
    """Does the staged ``fn(dout, cache)`` return dx, dgamma, dbeta of training-mode batch norm?"""
    return _check_backward("batchnorm_backward_staged", fn, hidden)


def check_batchnorm_backward(fn, hidden: bool = False) -> CheckResult:
    """Does the closed-form ``fn(dout, cache)`` return dx, dgamma, dbeta of training-mode batch norm?"""
    return _check_backward("batchnorm_backward (closed form)", fn, hidden)


# ---------------------------------------------------------------------------------------------
# The numerical gradient check (a tool of the notebook, not a graded cell)
# ---------------------------------------------------------------------------------------------

# A correct float64 backward agrees with central differences (h=1e-5) to about 1e-9 norm-wise, on
# any reasonable input (CS231n's x = 4 * randn + 10 included); a wrong one misses by 1e-2 or more.
GRADIENT_TOLERANCE = 1e-6


def norm_relative_error(analytic, numeric) -> float:
    """``||a - n|| / max(||a||, ||n||, 1e-12)``: one number per gradient, not fooled by tiny entries."""
    a, n = np.asarray(analytic, dtype=np.float64), np.asarray(numeric, dtype=np.float64)
    return float(np.linalg.norm(a - n) / max(np.linalg.norm(a), np.linalg.norm(n), 1e-12))


def check_gradients_numerically(fn, seed: int = 0, n: int = 5, d: int = 4, tolerance: float = GRADIENT_TOLERANCE,
                                x=None) -> CheckResult:
    """Compare ``fn(dout, cache)`` with central differences of the reference forward, in float64.

    Each of dx, dgamma, dbeta is one case; its name carries the norm-wise relative error, and it
    passes when that error is below ``tolerance``. ``x`` (N, D) replaces the seeded input.
    """
    rng = np.random.default_rng(seed)
    x = features(rng, n, d) if x is None else np.asarray(x, dtype=np.float64)
    n, d = x.shape
    gamma, beta = affine(rng, d)
    dout = rng.normal(size=(n, d))
    _, cache = ref.batchnorm_forward(x, gamma, beta)
    call = safe_call(fn, (dout, cache))
    exercise = f"numerical gradient check (float64, N={n}, D={d}, central differences)"
    if call.error:
        diag = ("not attempted yet: the function still raises NotImplementedError"
                if call.error_type == "NotImplementedError" else f"the function raised {call.error}")
        return CheckResult(exercise, [CaseResult("backward", False, call.error, kind="raised")], diagnosis=diag)
    if type(call.value) not in (tuple, list) or len(call.value) != 3:
        return CheckResult(exercise, [CaseResult("backward", False, "expected a tuple (dx, dgamma, dbeta)",
                                                 kind="returned")], diagnosis="return a tuple (dx, dgamma, dbeta)")
    numeric = {
        "dx": numerical_gradient(lambda z: ref.batchnorm_forward(z, gamma, beta)[0], x, dout),
        "dgamma": numerical_gradient(lambda z: ref.batchnorm_forward(x, z, beta)[0], gamma, dout),
        "dbeta": numerical_gradient(lambda z: ref.batchnorm_forward(x, gamma, z)[0], beta, dout),
    }
    cases = []
    for (key, num), got in zip(numeric.items(), call.value):
        got = None if got is None else np.asarray(got, dtype=np.float64)
        if got is None or got.shape != num.shape:
            cases.append(CaseResult(f"{key}: shape {None if got is None else got.shape}", False,
                                    f"{key} should have shape {num.shape}", kind="shape", wrong=(key,)))
            continue
        err = norm_relative_error(got, num)
        ok = err < tolerance
        cases.append(CaseResult(f"{key}: relative error {err:.2e} ({'<' if ok else '>='} {tolerance:g})", ok,
                                "" if ok else f"the analytic {key} disagrees with the numerical gradient",
                                wrong=() if ok else (key,)))
    bad = [k for c in cases for k in c.wrong]
    diagnosis, explained, ids = "", (), ()
    if bad:
        diagnosis = f"{', '.join(bad)} disagree(s) with the numerical gradient"
        named = _check_backward("backward", fn, False)
        if named.explained:
            diagnosis += f"; likely mistake: {named.diagnosis}"
            explained, ids = named.explained, named.explained_ids
    return CheckResult(exercise, cases, diagnosis=diagnosis, explained=explained, explained_ids=ids,
                       tolerance=f"norm-wise relative error ||a - n|| / max(||a||, ||n||) < {tolerance:g}")


# ---------------------------------------------------------------------------------------------
# Spatial (N, C, H, W)
# ---------------------------------------------------------------------------------------------

_SPATIAL_VISIBLE = [
    ("N=2, C=3, H=4, W=5", 40, (2, 3, 4, 5), {}),
    ("N=2, C=1, H=1, W=1", 41, (2, 1, 1, 1), {}),
    ("N=4, C=6, H=3, W=3, float32", 42, (4, 6, 3, 3), {"dtype": np.float32}),
    ("N=3, C=2, H=2, W=4, large mean (1e7)", 43, (3, 2, 2, 4), {"loc": 1e7}),
    ("N=5, C=4, H=3, W=2, non-contiguous x", 44, (5, 4, 3, 2), {"noncontig": True}),
    ("N=1, C=3, H=4, W=4: one image, many pixels", 45, (1, 3, 4, 4), {"eps": 1e-3}),
]
_SPATIAL_HIDDEN = [
    ("N=3, C=5, H=2, W=3", 140, (3, 5, 2, 3), {}),
    ("N=2, C=2, H=5, W=1, float32", 141, (2, 2, 5, 1), {"dtype": np.float32}),
    ("N=6, C=3, H=2, W=2, non-contiguous x", 142, (6, 3, 2, 2), {"noncontig": True, "eps": 1e-2}),
]


def _spatial_cases(hidden: bool, with_dout: bool = False) -> list[Case]:
    def make(seed, shape, opt):
        rng = np.random.default_rng(seed)
        dtype = opt.get("dtype", np.float64)
        x = images(rng, shape, dtype, opt.get("loc", 3.0), opt.get("noncontig", False))
        gamma, beta = affine(rng, shape[1], dtype)
        args = (x, gamma, beta, opt.get("eps", 1e-5))
        return args + (rng.normal(size=shape).astype(dtype),) if with_dout else args

    return [Case(name, lambda s=case_seed("spatial_batchnorm", name, seed, hidden), sh=shape, o=opt: make(s, sh, o))
            for name, seed, shape, opt in (_SPATIAL_HIDDEN if hidden else _SPATIAL_VISIBLE)]


def _per_channel(a):
    return np.reshape(a, (1, -1, 1, 1))


def _normalized_over(axes, ddof=0):
    def forward(x, gamma, beta, eps=1e-5):
        y = (x - x.mean(axes, keepdims=True)) / np.sqrt(x.var(axes, ddof=ddof, keepdims=True) + eps)
        return as_dtype_of(x, y * _per_channel(gamma) + _per_channel(beta)), None
    return forward


def _spatial_no_transpose(x, gamma, beta, eps=1e-5):
    out, _ = ref.batchnorm_forward(x.reshape(-1, x.shape[1]), gamma, beta, eps)
    return out.reshape(x.shape), None


def _spatial_no_transpose_back(x, gamma, beta, eps=1e-5):
    out, _ = ref.batchnorm_forward(np.moveaxis(x, 1, -1).reshape(-1, x.shape[1]), gamma, beta, eps)
    return out.reshape(x.shape), None


_SPATIAL_FORWARD_MISTAKES = [
    Mistake("statistics per pixel position instead of per channel",
            "each channel has ONE mean and variance over N, H and W; move C last and reshape to "
            "(N*H*W, C) before calling the (N, D) forward", _normalized_over((0,))),
    Mistake("statistics per image (over H and W only)",
            "batch norm pools over the batch too: each channel's statistics are over N, H and W",
            _normalized_over((2, 3))),
    Mistake("statistics over the wrong axes", "each channel's statistics are over N, H and W, axes (0, 2, 3)",
            _normalized_over((0, 1))),
    Mistake("reshaped to (N*H*W, C) without moving C last",
            "x.reshape(-1, C) mixes channels; transpose to (N, H, W, C) first, and back afterwards",
            _spatial_no_transpose),
    Mistake("output reshaped back without the inverse transpose",
            "the rows are in (N, H, W, C) order: reshape them to (N, H, W, C), then transpose to "
            "(N, C, H, W); out.reshape(N, C, H, W) alone scrambles pixels and channels", _spatial_no_transpose_back),
    Mistake("unbiased variance used to normalize", "normalize with the biased variance (divide by N*H*W)",
            _normalized_over((0, 2, 3), ddof=1)),
    Mistake("gamma and beta swapped", "gamma scales and beta shifts",
            lambda x, g, b, eps=1e-5: _normalized_over((0, 2, 3))(x, b, g, eps)),
]


def check_spatial_batchnorm_forward(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, eps)`` normalize each channel of (N, C, H, W) over N, H and W?"""
    return check_function(
        "spatial_batchnorm_forward", fn, ref.spatial_batchnorm_forward, _spatial_cases(hidden),
        _SPATIAL_FORWARD_MISTAKES, arg_names=("x", "gamma", "beta"), in_place={"x": X_IN_PLACE},
        outputs=("out", "cache"), compare=("out",), rtol=1e-4, atol=1e-5,
    )


def _chained(forward_fn, backward_fn):
    """(x, gamma, beta, eps, dout) -> backward_fn(dout, forward_fn(x, gamma, beta, eps)[1])."""
    def run(x, gamma, beta, eps, dout):
        _, cache = forward_fn(x, gamma, beta, eps)
        return backward_fn(dout, cache)
    return run


def _reference_then(transform):
    """The reference gradients, then ``transform(dx, dgamma, dbeta, dout, cache)``."""
    def run(x, gamma, beta, eps, dout):
        _, cache = ref.spatial_batchnorm_forward(x, gamma, beta, eps)
        return transform(*ref.spatial_batchnorm_backward(dout, cache), dout, cache)
    return run


def _x_hat_images(cache):
    return ref._from_rows(cache.cache.x_hat, cache.shape)


def _spatial_bwd_no_transpose(x, gamma, beta, eps, dout):
    _, cache = ref.spatial_batchnorm_forward(x, gamma, beta, eps)
    dx_rows, dgamma, dbeta = ref.batchnorm_backward(ref._to_rows(np.asarray(dout)), cache.cache)
    return dx_rows.reshape(cache.shape), dgamma, dbeta


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
    Mistake("dx missing the terms that flow through the mean and the variance",
            "call the full (N, D) backward on the (N*H*W, C) rows",
            _reference_then(lambda dx, dg, db, dout, c: (dout * _per_channel(c.cache.gamma * c.cache.inv_std), dg, db))),
]


def check_spatial_batchnorm_backward(forward_fn, backward_fn, hidden: bool = False) -> CheckResult:
    """Does ``backward_fn(dout, forward_fn(x, gamma, beta, eps)[1])`` return dx, dgamma, dbeta of BatchNorm2d?

    The cache is the one the learner's own spatial forward returns.
    """
    for fn in (forward_fn, backward_fn):
        if not callable(fn):
            return check_function("spatial_batchnorm_backward", fn, None, [])  # "expected a function, got ..."
    result = check_function(
        "spatial_batchnorm_backward", _chained(forward_fn, backward_fn),
        _reference_then(lambda dx, dg, db, dout, c: (dx, dg, db)),
        _spatial_cases(hidden, with_dout=True), _SPATIAL_BACKWARD_MISTAKES,
        arg_names=("x", "gamma", "beta", "eps", "dout"), in_place={"x": X_IN_PLACE, "dout": _DOUT_IN_PLACE},
        outputs=("dx", "dgamma", "dbeta"), rtol=1e-4, atol=1e-5,
        forbidden=("spatial_batchnorm_forward", "spatial_batchnorm_backward"),
    )
    if not result.passed and not check_spatial_batchnorm_forward(forward_fn, hidden).passed:
        result.notes.append("your spatial forward does not pass its check yet; the backward uses its cache, "
                            "so fix the forward first")
    return result


# Every mistake each check can name (tests write each one the way a learner would and expect its name).
MISTAKES = {"backward": _BACKWARD_MISTAKES, "spatial_forward": _SPATIAL_FORWARD_MISTAKES,
            "spatial_backward": _SPATIAL_BACKWARD_MISTAKES}

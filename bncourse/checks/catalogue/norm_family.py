"""The catalogue's entries for notebook 9's layer norm, forward and backward, and the dgamma/dbeta slips
every normalization's backward shares (group norm's entries, in ``groupnorm``, use them too).

Each entry is a small wrong implementation that reproduces one mistake as a learner makes it.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.catalogue.shared import affine, dx_from, inv_std, mistake, standardize, statistics
from bncourse.checks.core import Mistake


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
                                                "mean-not-subtracted", "variance-uncentred", "rms-norm", "rms-norm-eps-missing", "multiplied-by-std", "not-divided-by-std",
                                                "eps-added-to-x-hat",
                                                "beta-scaled-by-gamma", "beta-subtracted", "divided-by-gamma")),
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
        *(mistake(slip, _ln_recomputed(None, slip=slip))
          for slip in ("inv-std-squared", "inv-std-missing", "std-instead-of-inv-std", "divisor-minus-one",
                       "divisor-minus-one-outside", "gamma-after-sums", "sums-without-gamma", "x-for-x-hat",
                       "divisor-twice", "sums-divided-twice", "xmu-for-x-hat", "direct-term-without-m")),
        mistake("eps-missing", _ln_recomputed(None, inv_eps=0.0), name="backward recomputed 1 / std without eps",
                hint="use the eps the forward used (keep it, or inv_std itself, in the cache): np.sqrt(var) leaves it out"),
        *dparam_mistakes(_ln_recomputed(None), (0,), "feature"),
    ]


def _ln_recomputed(eps_used=1e-5, axes=1, count=None, slip="", inv_eps=None):
    """Layer norm's backward whose x_hat and inv_std are recomputed (eps ``eps_used``) and whose dx sums run over
    ``axes``; ``inv_eps``: the factor inv_std alone recomputed with that eps (x_hat the right one)."""
    def backward(x, gamma, beta, eps, dout):
        x64, d64 = np.asarray(x, np.float64), np.asarray(dout, np.float64)
        mean, var = statistics(x64, 1)
        inv = inv_std(var, eps if eps_used is None else eps_used)
        x_hat = (x64 - mean) * inv
        if inv_eps is not None:
            with np.errstate(all="ignore"):
                inv = inv_std(var, inv_eps)
        n_count = {"D": x64.shape[1], "N": x64.shape[0]}.get(count)
        after = slip == "gamma-after-sums"  # g = dout in the sums, gamma multiplied on at the end
        dx = dx_from(d64 if after else d64 * gamma, x_hat, inv, axes, slip, count=n_count, dout=d64,
                     x=x64) * (gamma if after else 1.0)
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
            if how == "mean-over-sum-axes":  # np.mean over every axis dgamma sums over
                k = int(np.prod([dout.shape[a] for a in sum_axes]))
                return dx, dg / k, db / k
            if how == "dbeta-mean":
                return dx, dg, db / n
            if how == "dgamma-times-gamma":
                return dx, dg * np.asarray(args[1], np.float64), db
            # summed over other axes: recomputed from dout and x_hat, reducing every axis but the per-one's
            x_hat_dg = _x_hat_of(args, dout.shape)
            if how == "not-summed":
                return dx, dout * x_hat_dg, dout
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
        Mistake(f"dgamma and dbeta averaged over axis={sum_axes} instead of summed",
                f"each {per}'s gamma is used by every value along axis={sum_axes}: its gradient is the SUM "
                f"over them (dout.sum(axis={sum_axes})), not the mean", transformed("mean-over-sum-axes"),
                id="dparams-averaged"),
        Mistake("dbeta averaged over the batch instead of summed",
                f"each {per}'s beta is used by every example: dbeta = dout.sum(axis={sum_axes}), not a mean",
                transformed("dbeta-mean"), id="dparams-averaged"),
        Mistake("dgamma and dbeta not summed (one value per element returned)",
                f"gamma has one entry per {per}, shared by every example: dgamma = (dout * x_hat).sum(axis={sum_axes}), "
                f"dbeta = dout.sum(axis={sum_axes})", transformed("not-summed"), id="dparams-not-summed"),
        Mistake("dgamma multiplied by gamma",
                "out = x_hat * gamma + beta, so d out / d gamma = x_hat: dgamma = sum(dout * x_hat), no gamma",
                transformed("dgamma-times-gamma"), id="dgamma-times-gamma"),
        Mistake("dgamma and dbeta summed over the batch only",
                f"gamma has one entry per {per}: sum dout * x_hat and dout over every other axis, axis={sum_axes}",
                transformed("over-batch-only"), id="dparams-wrong-axes"),
        Mistake("dgamma and dbeta summed per example (over the wrong axis)",
                f"gamma has one entry per {per}, shared by every example: sum over axis={sum_axes}, including the "
                "batch axis 0", transformed("per-example"), id="dparams-wrong-axes"),
    ] if over_batch_only or m.name not in ("dgamma and dbeta summed over the batch only",
                                           f"dgamma and dbeta averaged over axis={sum_axes} instead of summed")]


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


ENTRIES = {"layernorm_forward": _ln_forward_mistakes, "layernorm_backward": _ln_backward_mistakes}

"""The catalogue's entries for notebook 3's (N, D) backward (the spatial forward and backward: ``spatial_batchnorm``).

Each entry is a small wrong implementation that reproduces one mistake as a learner makes it.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.catalogue.shared import dx_from, inv_std, mistake
from bncourse.checks.core import Mistake

def _dx(dout, c, slip=""):
    """dx from the cache: the shared backward core over the batch axis, with one slip."""
    g = dout if slip == "dx-without-gamma" else dout * c.gamma * (c.gamma if slip == "gamma-twice" else 1)
    return dx_from(g, c.x_hat, c.inv_std, 0, slip).reshape(dout.shape)


def _with_unbiased_var(c, which="all"):
    """The cache as a backward sees it that recomputes the variance unbiased (divided by N - 1, torch's x.var
    default) and the standard deviation from it (``which="inv_std"``: x_hat still taken from the cache)."""
    n = c.x.shape[0]
    var = c.var * n / max(n - 1, 1)
    return _with_eps(c._replace(var=var), c.eps, which)


def _with_slip(c, slip, which="all"):
    """The cache as a backward sees it that recomputes 1 / std from var with a shared slip of the square root."""
    with np.errstate(all="ignore"):
        inv = inv_std(c.var, c.eps, slip)
    if which == "inv_std":
        return c._replace(inv_std=inv)
    return c._replace(std=1 / inv, inv_std=inv, x_hat=c.xmu * inv)


def _with_eps(c, eps, which="all"):
    """The cache as a backward sees it that recomputes the standard deviation from var with ``eps``
    (``which="inv_std"``: only the factor 1/std, x_hat still taken from the cache)."""
    with np.errstate(all="ignore"):
        std = np.sqrt(c.var + eps)
    if which == "inv_std":
        return c._replace(inv_std=1 / std)
    return c._replace(std=std, inv_std=1 / std, x_hat=c.xmu / std)


def _dx_slip(slip):
    return lambda g, c: _dx(g, c, slip)


def _dgamma(dout, c):
    return (dout * c.x_hat).sum(0)


def _with(dx=_dx, dgamma=_dgamma, dbeta=lambda g, c: g.sum(0)):
    """A backward from three small rules ``rule(dout, cache)``; each mistake replaces one or two."""
    def backward(dout, cache):
        dout = np.asarray(dout)
        return dx(dout, cache), dgamma(dout, cache), dbeta(dout, cache)
    return backward


def _staged(dout, c, *, two=2.0, sign=-1.0, var_share=True, mean_share=True, slip="", count_less=0):
    """The notebook's staged backward, with one step's factor possibly gotten wrong (``slip``: a step's
    own slip, "dinv-not-summed", "dinv-from-x-hat", "dstd-over-std", "half-missing", "dxmu-overwritten",
    "dmu-sign", "dx-overwritten")."""
    n = dout.shape[0]
    dx_hat = dout * c.gamma
    dinv = dx_hat * (c.x_hat if slip == "dinv-from-x-hat" else c.xmu)
    dinv = dinv if slip == "dinv-not-summed" else dinv.sum(0)
    dstd = sign * dinv / (c.std if slip == "dstd-over-std" else c.std ** 2)
    dvar = dstd / (1 if slip == "half-missing" else 2) / c.std
    dsq = dvar / ((n - count_less if slip != "mean-node-unbiased" else n) if var_share else 1)
    var_path = two * c.xmu * dsq
    dxmu = var_path if slip == "dxmu-overwritten" else dx_hat * c.inv_std + var_path
    dmu = (1 if slip == "dmu-sign" else -1) * dxmu.sum(0)
    share = dmu / ((n - count_less if slip != "var-node-unbiased" else n) if mean_share else 1)
    return share if slip == "dx-overwritten" else dxmu + share


_STAGED_SLIPS = (  # (slip, name, hint): one step of the staged backward turned the way a learner turns it
    ("dinv-not-summed", "dinv_std not summed over the batch (step 2)",
     "inv_std is one number per feature, used by every row: dinv_std = (dx_hat * xmu).sum(axis=0)"),
    ("dinv-from-x-hat", "dinv_std computed from x_hat instead of xmu (step 2)",
     "x_hat = xmu * inv_std, so d x_hat / d inv_std = xmu: dinv_std = (dx_hat * xmu).sum(axis=0)"),
    ("dstd-over-std", "the variance term scaled by std once too often (closed form: xmu in place of x_hat; staged "
     "step 3: the square missing)", "closed form: dx = gamma * inv_std / N * (N * dout - dbeta - x_hat * dgamma), with "
     "x_hat = xmu * inv_std; staged: d(1/std)/d std = -1/std**2, dstd = -dinv_std / std**2"),
    ("half-missing", "factor 1/2 of the square root's derivative missing (step 4)",
     "std = sqrt(var + eps), so d std / d var = 1 / (2 * std): dvar = dstd / (2 * std)"),
    ("dxmu-overwritten", "the direct path into xmu overwritten (step 6: = instead of +=)",
     "xmu reaches the output twice, directly and through sq: dxmu = dx_hat * inv_std + 2 * xmu * dsq"),
    ("dmu-sign", "sign of dmu flipped (step 7; in the closed form + sum(g) where - sum(g) belongs: a sign error on "
     "the path through the mean)", "xmu = x - mu, so dmu = -dxmu.sum(axis=0); in the closed form the mean's term is "
     "subtracted: dx = inv_std / N * (N * g - sum(g) - x_hat * sum(g * x_hat)), g = gamma * dout"),
    ("dx-overwritten", "the direct path into x overwritten (step 8: dx = dmu / N instead of dx += dmu / N)",
     "x reaches xmu directly and through mu: dx = dxmu + dmu / N"),
)


_STAGED_UNBIASED = (  # a node's gradient shared out over N - 1 rows: the unbiased count where the forward divides by N
    ("var-node-unbiased", "the variance node's gradient shared over N - 1 rows (step 5: dsq = dvar / (N - 1))",
     "the forward's variance is the BIASED mean of sq over N rows, so each row gets 1/N of its gradient: dsq = dvar / N"),
    ("mean-node-unbiased", "the mean node's gradient shared over N - 1 rows (step 8: dmu / (N - 1))",
     "mu = mean(x) averages N rows, so each row gets 1/N of its gradient: dx += dmu / N"),
    # both nodes over N - 1 is the closed form's "M - 1 used instead of M" (divisor-minus-one)
)


def _x_for_x_hat(dout, c):
    """The closed form with x where x_hat multiplies the variance term (dgamma itself still from x_hat)."""
    n = dout.shape[0]
    return c.gamma * c.inv_std / n * (n * dout - dout.sum(0) - c.x * (dout * c.x_hat).sum(0))


def _dx_count_from_axis_1(dout, c):
    """The closed form (or the staged one: the same dx) with N read from dout.shape[1], the number of features."""
    return dx_from(dout * c.gamma, c.x_hat, c.inv_std, 0, count=dout.shape[1])


def _closed_form_swapped(g, c):
    n = g.shape[0]
    return c.gamma * c.inv_std / n * (n * g - (g * c.x_hat).sum(0) - c.x_hat * g.sum(0))


_BACKWARD_MISTAKES = [
    mistake("mean-and-variance-paths-missing", _with(dx=_dx_slip("mean-and-variance-paths-missing")),
            name="dx missing the terms that flow through the mean and the variance",
            hint="x reaches the output directly AND through the batch mean and variance; "
                 "dx = gamma / std * (dout - mean(dout) - x_hat * mean(dout * x_hat))"),
    mistake("variance-path-missing", _with(dx=_dx_slip("variance-path-missing")),
            name="dx missing the term that flows through the variance",
            hint="the variance depends on x too: add the path through var (the -x_hat * mean(dout * x_hat) term)"),
    mistake("mean-path-missing", _with(dx=_dx_slip("mean-path-missing")),
            name="dx missing the term that flows through the mean",
            hint="the mean depends on x too: add the path through mu (the -mean(dout) term)"),
    mistake("dx-without-gamma", _with(dx=_dx_slip("dx-without-gamma")), name="dx missing the factor gamma",
            hint="out = gamma * x_hat + beta, so dx_hat = dout * gamma"),
    # the sign errors on the mean's and the variance's paths: the staged entries below (step 7, step 3), named
    # in the closed form's words too
    *(mistake(slip, _with(dx=_dx_slip(slip))) for slip in ("dx-negated", "gamma-twice")),
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
    mistake("dgamma-from-x", _with(dgamma=lambda g, c: (g * c.x).sum(0)),
            hint="out = gamma * x_hat + beta, so dgamma = sum(dout * x_hat, axis=0)"),
    Mistake("dgamma computed from x - mu instead of x_hat",
            "gamma multiplies the NORMALIZED x_hat = (x - mu) / std: dgamma = sum(dout * x_hat, axis=0)",
            _with(dgamma=lambda g, c: (g * c.xmu).sum(0)), only=("dgamma",)),
    Mistake("dgamma multiplied by gamma",
            "out = gamma * x_hat + beta, so d out / d gamma = x_hat: dgamma = sum(dout * x_hat, axis=0), no gamma",
            _with(dgamma=lambda g, c: (g * c.x_hat).sum(0) * c.gamma), only=("dgamma",)),
    Mistake("dbeta multiplied by gamma", "d out / d beta = 1: dbeta = dout.sum(axis=0), no gamma",
            _with(dbeta=lambda g, c: g.sum(0) * c.gamma), only=("dbeta",)),
    *(mistake(slip, _with(dx=_dx_slip(slip)))
      for slip in ("std-instead-of-inv-std", "inv-std-squared", "inv-std-missing")),
    mistake("eps-hard-coded", _with(dx=lambda g, c: _dx(g, _with_eps(c, 1e-5, "inv_std"))),
            name="backward recomputed with eps=1e-5 instead of the forward's eps",
            hint="use the cache's inv_std (or std), which the forward computed with the eps it was given; "
                 "np.sqrt(cache.var + 1e-5) assumes the default eps"),
    Mistake("factor 2 missing in the path through the square (step 6)",
            "sq = xmu**2, so its local derivative is 2 * xmu: dxmu += 2 * xmu * dsq",
            _with(dx=lambda g, c: _staged(g, c, two=1.0))),
    Mistake("sign of the path through 1/std flipped (step 3; in the closed form + x_hat * sum(g * x_hat): a sign "
            "error on the path through the variance)",
            "the derivative of 1/std is -1/std**2: dstd = -dinv_std / std**2; in the closed form the variance's term "
            "is subtracted: dx = inv_std / N * (N * g - sum(g) - x_hat * sum(g * x_hat))",
            _with(dx=lambda g, c: _staged(g, c, sign=1.0))),
    Mistake("the variance's gradient not shared out over the N rows (step 5)",
            "var = mean(sq) averages N rows, so each row gets 1/N of it: dsq = dvar / N",
            _with(dx=lambda g, c: _staged(g, c, var_share=False))),
    Mistake("the mean's gradient not shared out over the N rows (step 8)",
            "mu = mean(x) averages N rows, so each row gets 1/N of it: dx += dmu / N",
            _with(dx=lambda g, c: _staged(g, c, mean_share=False))),
    *(Mistake(name, hint, _with(dx=lambda g, c, s=slip: _staged(g, c, slip=s)), id=f"staged-{slip}")
      for slip, name, hint in _STAGED_SLIPS),
    *(Mistake(name, hint, _with(dx=lambda g, c, s=slip: _staged(g, c, slip=s, count_less=1)), id="staged-node-unbiased")
      for slip, name, hint in _STAGED_UNBIASED),
    mistake("eps-hard-coded", _with(dx=lambda g, c: _dx(g, _with_eps(c, 1e-5))),
            name="backward recomputed with eps=1e-5 instead of the forward's eps",
            hint="use the cache's inv_std (or std), which the forward computed with the eps it was given; "
                 "np.sqrt(cache.var + 1e-5) assumes the default eps"),
    Mistake("x in place of x_hat in the variance term",
            "the variance path multiplies by the NORMALIZED x_hat: dx = gamma * inv_std / N * (N * dout - dbeta - x_hat * dgamma)",
            _with(dx=_x_for_x_hat), id="x-for-x-hat"),
    *(mistake(slip, _with(dx=_dx_slip(slip))) for slip in ("divisor-minus-one", "divisor-minus-one-outside")),
    Mistake("N taken from dout.shape[1] (the number of features D) instead of dout.shape[0] (the rows)",
            "dout is (N, D): the batch size is N = dout.shape[0]; the mean and variance average the N rows, so "
            "dx = gamma * inv_std / N * (N * dout - dbeta - x_hat * dgamma) (staged: dsq = dvar / N, dx += dmu / N)",
            _with(dx=_dx_count_from_axis_1), id="n-from-the-feature-axis"),
    mistake("direct-term-without-m", _with(dx=_dx_slip("direct-term-without-m")),
            name="the factor N missing on dout in the closed form (dout where N * dout belongs)",
            hint="dx = gamma * inv_std / N * (N * dout - dbeta - x_hat * dgamma): the direct term is N * dout"),
    mistake("missing-divisor", _with(dx=_dx_slip("missing-divisor")), name="closed form without the 1/N",
            hint="the mean and the variance average over N rows: "
                 "dx = gamma * inv_std / N * (N * dout - dbeta - x_hat * dgamma)"),
    Mistake("dbeta and dgamma swapped inside the closed form",
            "the mean path subtracts dbeta = sum(dout), the variance path subtracts x_hat * dgamma: "
            "dx = gamma * inv_std / N * (N * dout - dbeta - x_hat * dgamma)", _with(dx=_closed_form_swapped)),
    *(Mistake(f"backward recomputed {what} from the unbiased variance (N - 1)",
              "the forward normalized with the biased variance (divide by N): use the cache's inv_std and x_hat; "
              "torch's x.var(dim) and np.var(ddof=1) divide by N - 1", _with(dx=lambda g, c, w=which: _dx(
                  g, _with_unbiased_var(c, w))), id="unbiased-variance")
      for which, what in (("inv_std", "1 / std"), ("all", "the standard deviation and x_hat"))),
    *(mistake("eps-outside-sqrt", _with(dx=lambda g, c, w=which: _dx(g, _with_slip(c, "eps-outside-sqrt", w))),
              name=f"backward recomputed {what} with eps outside the square root",
              hint="use the cache's inv_std (or std = sqrt(var + eps)): eps belongs inside the root")
      for which, what in (("inv_std", "1 / std"), ("all", "the standard deviation and x_hat"))),
    *(mistake("eps-missing", _with(dx=lambda g, c, w=which: _dx(g, _with_eps(c, 0.0, w))),
              name=f"backward recomputed {what} without eps",
              hint="use the cache's inv_std (or std = sqrt(var + eps)): np.sqrt(cache.var) leaves eps out")
      for which, what in (("inv_std", "1 / std"), ("all", "the standard deviation and x_hat"))),
]


ENTRIES = {"batchnorm_backward": _BACKWARD_MISTAKES}

"""The mistakes several exercises share, each written once as a slip of the reference computation.

Every normalization in the course (batch norm in numpy and torch, its spatial, synchronized and
noisy forms, layer norm, group norm, eval-mode folding) is the same computation over other axes:

    mean, var = statistics(v, axes)               mean and biased variance over the exercise's axes
    x_hat     = (v - mean) * inv_std(var, eps)    inv_std = 1 / sqrt(var + eps)
    out       = affine(x_hat, gamma, beta)        gamma * x_hat + beta
    dx        = dx_from(g, x_hat, inv_std, axes)  inv_std / M * (M g - sum g - x_hat * sum(g x_hat)), g = gamma * dout

A *slip* is one step of it turned the way a learner turns it ("eps-outside-sqrt": 1 / (sqrt(var) + eps)).
Each step takes the slip id and applies it if it is one of its own, so an exercise's wrong
implementation is its reference computation with ``slip=...`` passed through, and its entry is

    mistake("eps-outside-sqrt", fn)              name, hint and id shared by every exercise
    mistake("wrong-axis", fn, hint="...")        the exercise's own words where its axes differ

``SLIPS`` holds each slip's id, name and default hint: ids key the learner's hints, names are what
the diagnosis says. Works on numpy arrays and torch tensors alike (the folding notebook's fold).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bncourse.checks.results import Mistake

__all__ = ["SLIPS", "Slip", "mistake", "statistics", "variance", "inv_std", "standardize", "affine", "dx_from",
           "blend"]


@dataclass(frozen=True)
class Slip:
    """One shared mistake: a stable ``id`` (keys hints), the ``name`` the diagnosis says, a default ``hint``."""

    id: str
    name: str
    hint: str


_EPS_HINT = "add eps to the variance before the square root: (x - mean) / sqrt(var + eps)"
SLIPS = {s.id: s for s in (
    # the statistics
    Slip("wrong-axis", "statistics over the wrong axis",
         "reduce over the axes the exercise's statistics average: check which axis each mean and variance runs over"),
    Slip("unbiased-variance", "unbiased variance used to normalize", "normalize with the biased variance (ddof=0)"),
    Slip("variance-computed-as-e-x-2", "variance computed as E[x^2] - E[x]^2",
         "that formula cancels catastrophically when the mean is large; subtract the mean first: "
         "var = mean((x - mean)**2), or np.var"),
    Slip("mean-not-subtracted", "mean not subtracted", "centre first: x_hat = (x - mean) / sqrt(var + eps)"),
    Slip("multiplied-by-std", "multiplied by sqrt(var + eps) instead of divided by it",
         "normalizing DIVIDES by the standard deviation: scale = gamma / sqrt(var + eps)"),
    Slip("rms-norm", "RMS norm: divided by the root mean square without subtracting the mean",
         "normalize means centre AND scale: x_hat = (x - mean) / sqrt(var + eps), var = mean((x - mean)**2); "
         "x / sqrt(mean(x**2) + eps) is RMSNorm"),
    Slip("rms-norm-eps-missing", "RMS norm without eps: divided by the root mean square, mean not subtracted",
         "normalize means centre AND scale: x_hat = (x - mean) / sqrt(var + eps), var = mean((x - mean)**2), "
         "eps inside the root"),
    Slip("variance-uncentred", "variance taken without subtracting the mean (mean of x**2)",
         "the variance is the mean of the SQUARED DEVIATIONS: var = mean((x - mean)**2), not mean(x**2)"),
    # eps and the square root
    Slip("eps-outside-sqrt", "eps outside the square root", _EPS_HINT),
    Slip("eps-missing", "eps missing", _EPS_HINT),
    Slip("eps-hard-coded", "eps argument ignored", "use the eps passed to the function, not a fixed 1e-5"),
    Slip("divided-by-variance", "divided by the variance instead of the standard deviation", "divide by sqrt(var + eps)"),
    Slip("not-divided-by-std", "not divided by the standard deviation (only centred)",
         "normalize: divide the centred values by sqrt(var + eps), x_hat = (x - mean) / sqrt(var + eps)"),
    Slip("eps-added-to-x-hat", "eps added to x_hat instead of to the variance",
         "eps belongs inside the square root, added to the variance: (x - mean) / sqrt(var + eps)"),
    Slip("sqrt-of-std", "square root taken of the standard deviation (sqrt(std + eps))",
         "the standard deviation is already a square root: divide by sqrt(var + eps), not sqrt(std + eps)"),
    Slip("inv-std-squared", "dx multiplied by inv_std twice (1 / (var + eps) instead of 1 / sqrt(var + eps))",
         "dx carries one factor inv_std = 1 / sqrt(var + eps): dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat))"),
    # gamma and beta
    Slip("gamma-beta-swapped", "gamma and beta swapped", "gamma scales and beta shifts: out = gamma * x_hat + beta"),
    Slip("gamma-and-beta-not-applied", "gamma and beta not applied",
         "after normalizing, scale by gamma and shift by beta: out = gamma * x_hat + beta"),
    Slip("affine-before-normalizing", "gamma and beta applied before normalizing",
         "normalize first, then scale and shift: out = gamma * x_hat + beta (a scale and shift applied before "
         "normalizing are taken out again by the normalization)"),
    Slip("gamma-not-applied-only-beta-added", "gamma not applied (only beta added)",
         "scale by gamma too: out = gamma * x_hat + beta"),
    Slip("beta-not-added-only-gamma-applied", "beta not added (only gamma applied)",
         "shift by beta too: out = gamma * x_hat + beta"),
    Slip("beta-scaled-by-gamma", "beta scaled by gamma (gamma * (x_hat + beta))",
         "beta is added after the scaling, not inside the bracket: out = gamma * x_hat + beta"),
    Slip("beta-subtracted", "beta subtracted instead of added", "shift by beta: out = gamma * x_hat + beta"),
    Slip("divided-by-gamma", "divided by gamma instead of multiplied", "gamma scales: out = gamma * x_hat + beta"),
    # the backward's dx
    Slip("mean-path-missing", "dx missing the path through the mean",
         "the mean depends on every x it averages: subtract the sum of g = gamma * dout over those values"),
    Slip("variance-path-missing", "dx missing the path through the variance",
         "the variance depends on every x it averages: subtract x_hat * sum(g * x_hat) over those values"),
    Slip("mean-and-variance-paths-missing", "dx missing the paths through the mean and the variance",
         "the statistics are functions of x too: dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat))"),
    Slip("missing-divisor", "dx missing the 1/M",
         "the mean and variance average over M values: dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat))"),
    Slip("direct-term-without-m", "the factor M missing on the direct term (g where M * g belongs)",
         "inside the bracket the direct term is M * g, the sums are not divided: "
         "dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat)), or inv_std * (g - mean(g) - x_hat * mean(g * x_hat))"),
    Slip("sign-error-variance-path", "sign error on the path through the variance",
         "dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat)): the variance term is subtracted"),
    Slip("sign-error-mean-path", "sign error on the path through the mean (+ sum(g) where - sum(g) belongs)",
         "dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat)): the mean term is subtracted"),
    Slip("dx-negated", "dx has the wrong sign (the whole gradient negated)",
         "dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat)), with g = gamma * dout: the direct term "
         "M * g enters with a plus sign"),
    Slip("gamma-twice", "gamma applied twice in dx (gamma**2 * dout where gamma * dout belongs)",
         "the gradient reaching x_hat is g = gamma * dout, multiplied by gamma once: if g already holds gamma, "
         "do not multiply dx by gamma again"),
    Slip("dx-without-gamma", "dx not multiplied by gamma", "the gradient reaching x_hat is gamma * dout"),
    Slip("gamma-after-sums", "gamma multiplied onto dx at the end instead of into g before the sums",
         "the gradient reaching x_hat is g = gamma * dout: form g first and take sum(g) and sum(g * x_hat) of it; "
         "gamma varies along the summed axis, so it cannot be pulled out of the sums"),
    Slip("sums-without-gamma", "gamma only on the direct term (the sums taken of dout, not of g = gamma * dout)",
         "every term of dx uses g = gamma * dout: dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat))"),
    Slip("x-for-x-hat", "x in place of x_hat in the variance term",
         "the variance path multiplies by the NORMALIZED input: dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat))"),
    Slip("xmu-for-x-hat", "x - mu in place of x_hat in the variance term",
         "the variance path multiplies by the NORMALIZED input x_hat = (x - mu) * inv_std, not x - mu: "
         "dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat))"),
    Slip("inv-std-missing", "dx missing the factor inv_std = 1 / sqrt(var + eps)",
         "every path from x to the output passes the division by the standard deviation: "
         "dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat))"),
    Slip("std-instead-of-inv-std", "dx multiplied by the standard deviation instead of divided by it",
         "x_hat = (x - mean) / std, so dx carries 1 / std: dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat))"),
    Slip("divisor-minus-one-outside", "1/(M - 1) in front of dx instead of 1/M",
         "the forward's mean and biased variance divide by M, so the backward does too: "
         "dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat))"),
    Slip("divisor-twice", "dx divided by M twice (1/M**2 in front)",
         "the 1/M appears once: dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat)); with means instead "
         "of sums it is dx = inv_std * (g - mean(g) - x_hat * mean(g * x_hat)), no further 1/M"),
    Slip("sums-divided-twice", "the sums in dx divided by M twice (sum / M**2)",
         "the 1/M appears once: dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat)), "
         "or inv_std * (g - mean(g) - x_hat * mean(g * x_hat))"),
    Slip("divisor-minus-one", "M - 1 used instead of M (the statistics average M values, biased)",
         "the forward's mean and biased variance divide by M, so the backward does too: "
         "dx = inv_std / M * (M * g - sum(g) - x_hat * sum(g * x_hat))"),
    # running statistics
    Slip("momentum-flipped", "momentum convention flipped",
         "in PyTorch momentum weighs the NEW batch: new = (1 - momentum) * old + momentum * batch "
         "(Keras' momentum weighs the old value instead)"),
    Slip("momentum-hard-coded", "momentum argument ignored", "use the momentum passed to the function (default 0.1)"),
    Slip("dgamma-from-x", "dgamma computed from x instead of x_hat",
         "out = gamma * x_hat + beta, so dgamma = sum(dout * x_hat) over everything gamma is shared by"),
)}


def mistake(slip: str, fn, *, hint: str | None = None, name: str | None = None, only: tuple = ()) -> Mistake:
    """The entry of one exercise for the shared ``slip``: ``fn`` is its reference computation with that slip."""
    s = SLIPS[slip]
    return Mistake(name or s.name, s.hint if hint is None else hint, fn, only=only, id=s.id)


def _sqrt(a):
    return a ** 0.5  # numpy arrays and torch tensors alike


def variance(v, axes, slip: str = "", mean=None):
    """The biased variance of ``v`` over ``axes`` (kept as size-1 axes); slips: unbiased, from moments."""
    mean = v.mean(axis=axes, keepdims=True) if mean is None else mean
    if slip == "variance-computed-as-e-x-2":
        return (v * v).mean(axis=axes, keepdims=True) - mean ** 2
    if slip in ("variance-uncentred", "rms-norm", "rms-norm-eps-missing"):
        return (v * v).mean(axis=axes, keepdims=True)
    if slip == "unbiased-variance":
        return v.var(axis=axes, ddof=1, keepdims=True)
    return ((v - mean) ** 2).mean(axis=axes, keepdims=True)


def statistics(v, axes, slip: str = ""):
    """(mean, var) of ``v`` over ``axes``, both with the reduced axes kept (size 1)."""
    mean = v.mean(axis=axes, keepdims=True)
    return mean, variance(v, axes, slip, mean)


def inv_std(var, eps, slip: str = ""):
    """1 / sqrt(var + eps), or its slip: eps outside the root, eps missing or hard-coded, no root."""
    if slip == "eps-outside-sqrt":
        return 1 / (_sqrt(var) + eps)
    if slip in ("eps-missing", "rms-norm-eps-missing"):
        return 1 / _sqrt(var)
    if slip == "eps-hard-coded":
        return 1 / _sqrt(var + 1e-5)
    if slip == "divided-by-variance":
        return 1 / (var + eps)
    if slip == "multiplied-by-std":
        return _sqrt(var + eps)
    if slip == "sqrt-of-std":
        return 1 / _sqrt(_sqrt(var) + eps)
    if slip == "not-divided-by-std":
        return 1.0 + 0 * var
    if slip == "eps-added-to-x-hat":
        return 1 / _sqrt(var)
    return 1 / _sqrt(var + eps)


def standardize(v, axes, eps, slip: str = ""):
    """x_hat: ``v`` normalized over ``axes`` with its own statistics (numpy), with one slip at most."""
    mean, var = statistics(v, axes, slip)
    centred = v if slip in ("mean-not-subtracted", "rms-norm", "rms-norm-eps-missing") else v - mean
    with np.errstate(all="ignore"):
        return centred * inv_std(var, eps, slip) + (eps if slip == "eps-added-to-x-hat" else 0.0)


def affine(x_hat, gamma, beta, slip: str = ""):
    """gamma * x_hat + beta (gamma, beta already shaped to broadcast), or its slip."""
    if slip == "gamma-beta-swapped":
        gamma, beta = beta, gamma
    if slip in ("gamma-and-beta-not-applied", "gamma-not-applied-only-beta-added"):
        gamma = 1.0
    if slip in ("gamma-and-beta-not-applied", "beta-not-added-only-gamma-applied"):
        beta = 0.0
    if slip == "beta-scaled-by-gamma":
        return (x_hat + beta) * gamma
    if slip == "beta-subtracted":
        return x_hat * gamma - beta
    if slip == "divided-by-gamma":
        return x_hat / gamma + beta
    return x_hat * gamma + beta


def dx_from(g, x_hat, inv, axes, slip: str = "", count=None, dout=None, x=None):
    """dx of a normalization over ``axes`` from g = gamma * dout (the gradient reaching x_hat).

    ``inv`` is 1 / sqrt(var + eps), broadcastable to g; ``count`` the M of the formula (default: the
    number of values each statistic averages). Slips: a path missing, the 1/M missing, the variance
    term's sign; with ``dout`` the sums taken of dout ("sums-without-gamma"), with ``x`` x multiplying
    the variance term ("x-for-x-hat").
    """
    m = int(np.prod([g.shape[a] for a in np.atleast_1d(axes)])) if count is None else count
    if slip == "divisor-minus-one":
        m = m - 1
    dx = g if slip == "direct-term-without-m" else m * g
    summed = dout if slip == "sums-without-gamma" and dout is not None else g
    if slip == "sums-divided-twice":
        summed = summed / m
    if slip not in ("mean-path-missing", "mean-and-variance-paths-missing"):
        dx = dx + (1.0 if slip == "sign-error-mean-path" else -1.0) * summed.sum(axis=axes, keepdims=True)
    if slip not in ("variance-path-missing", "mean-and-variance-paths-missing"):
        sign = 1.0 if slip == "sign-error-variance-path" else -1.0
        outer = x if slip == "x-for-x-hat" and x is not None else x_hat
        if slip == "xmu-for-x-hat":
            outer = x_hat / inv
        dx = dx + sign * outer * (summed * x_hat).sum(axis=axes, keepdims=True)
    if slip == "divisor-twice":
        inv = inv / m
    if slip == "inv-std-squared":
        inv = inv * inv
    elif slip == "inv-std-missing":
        inv = 1.0
    elif slip == "std-instead-of-inv-std":
        inv = 1 / inv
    if slip == "divisor-minus-one-outside":
        m = m - 1
    if slip == "dx-negated":
        dx = -dx
    return inv * dx if slip == "missing-divisor" else inv / m * dx


def blend(old, new, momentum, slip: str = ""):
    """PyTorch's running update (1 - momentum) * old + momentum * new, or its slip."""
    if slip == "momentum-flipped":
        momentum = 1 - momentum
    elif slip == "momentum-hard-coded":
        momentum = 0.1
    return (1 - momentum) * old + momentum * new


def _shapes_in(text: str) -> list[tuple[int, ...]]:
    """The array shapes numpy names in a broadcast error ("... with shapes (4,5) (4,)")."""
    import re

    found = []
    for inner in re.findall(r"\(([\d,\s]*)\)", text.split(" (at ")[0]):
        dims = tuple(int(d) for d in inner.replace(" ", "").split(",") if d)
        if dims:
            found.append(dims)
    return found


_PER_FEATURE = ("statistics (or sums) over the wrong axis: {what} has one value per row (reduced over axis 1, the features); "
                "this exercise's statistics are per feature, over the batch: x.mean(axis=0), shape (D,)")


def explain_broadcast(contract: str, per: str = "row"):
    """An ``explain_error`` for a broadcast error: which shapes met, the likely slip, and the contract's shapes.

    ``contract`` says the exercise's shapes ("x is (N, D); gamma and beta (D,); ..."); ``per`` what one
    statistic belongs to: "row" (layer and group norm: reduced over the trailing axes, kept with
    keepdims) or "feature" (batch norm: reduced over axis 0). The slip is read off the shapes alone: a
    length-N vector against an (N, D) array is a statistic over axis 1 (the wrong axis for batch norm,
    keepdims missing for layer norm); a column (D, 1) against (N, D) is a per-feature parameter reshaped
    to one per row; numpy's "shapes not aligned" is a matrix product (np.dot, @) of two arrays.
    """
    def explain(error_type: str, text: str) -> str:
        said = text.split(" (at ")[0]
        if error_type == "ValueError" and "not aligned" in text:
            return ("np.dot (or @) of two matrices is a matrix product, not a sum of products: flatten first, "
                    f"a.ravel() @ b.ravel(), or take (a * b).sum(). (numpy said: {said})")
        if error_type not in ("ValueError", "RuntimeError") or not (
                "broadcast" in text or "must match the size" in text):
            return ""
        shapes = _shapes_in(text)
        big = max(shapes, key=lambda s: (len(s), int(np.prod(s))), default=())
        what = ""
        for small in shapes:
            if len(small) == 1 and len(big) == 4 and small[0] == big[1] and small[0] != big[-1]:
                what = (f"a per-channel array of shape {small} (gamma, beta or a channel's statistic) met one of shape "
                        f"{big}: numpy lines up the LAST axes, so it was broadcast along the last axis (W), not the "
                        f"channel axis; reshape it to (1, C, 1, 1) = {(1, small[0], 1, 1)} to act on the channels")
                break
            if len(big) >= 2 and small != big and len(small) < len(big) and small[-1] != big[-1]:
                if small == big[:len(small)] and per == "feature" and len(big) == 2:
                    what = _PER_FEATURE.format(what=f"an array of shape {small} met one of shape {big}: it")
                elif small == big[:len(small)]:
                    what = (f"an array of shape {small} met one of shape {big}: numpy lines up the LAST axes, so a "
                            f"statistic reduced over the trailing axes needs keepdims=True (shape "
                            f"{small + (1,) * (len(big) - len(small))}) to broadcast back")
                else:
                    what = (f"an array of shape {small} met one of shape {big}: reduced over the wrong axis, or kept "
                            f"without keepdims=True")
            elif len(small) == len(big) and small != big and small[-1] == 1 and small[0] == big[-1]:
                what = (f"a column of shape {small} met an array of shape {big}: a per-feature parameter reshaped to "
                        f"one value per row (reshape(-1, 1)); it broadcasts along the last axis as it is")
        ones = [s for s in shapes if len(s) == 1]
        if not what and len(ones) == 2 and ones[0] != ones[1]:
            what = (f"a vector of length {ones[0][0]} met one of length {ones[1][0]}: a statistic taken over the "
                    f"wrong axis has the other axis' length")
        shown = " and ".join(str(s) for s in shapes) or "two shapes"
        return (f"shape mismatch: {what or f'arrays of shapes {shown} cannot be combined'}. {contract} "
                f"(numpy said: {said})")
    return explain

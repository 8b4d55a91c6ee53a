"""Checks for the "Beyond batch norm" notebook: layer norm and group norm, forward and backward.

The learner's functions take and return numpy arrays:

* ``layernorm_forward(x, gamma, beta, eps) -> (out, cache)``, x (N, D), gamma/beta (D,);
* ``layernorm_backward(dout, cache) -> (dx, dgamma, dbeta)``;
* ``groupnorm_forward(x, gamma, beta, G, eps) -> (out, cache)``, x (N, C, H, W), gamma/beta (C,);
* ``groupnorm_backward(dout, cache) -> (dx, dgamma, dbeta)``.

A backward is checked through the learner's own forward (its cache is the learner's design):
the check calls ``backward(dout, forward(x, gamma, beta, ...)[1])``, arrays in, arrays out, so the
grader can re-judge it from receipts. Each check names the known mistakes of the catalogue
(``bncourse.checks.catalogue``); ``hidden=True`` runs other seeds and shapes for nbgrader's hidden tests.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks import catalogue
from bncourse.checks.calls import kept
from bncourse.checks.compare import explain_shapes
from bncourse.checks.core import Case, CheckResult, check_function
from bncourse.checks.inputs import case_seed
from bncourse.reference import groupnorm as gref
from bncourse.reference import layernorm as lref

__all__ = [
    "check_layernorm_forward", "check_layernorm_backward",
    "check_groupnorm_forward", "check_groupnorm_backward",
]

_LN_SHAPES = explain_shapes("The contract: x is (N, D); each row's mean and variance are (N, 1) (keepdims=True); gamma, beta, "
                     "dgamma and dbeta are (D,); out and dx are (N, D)")
_GN_BROADCAST = explain_shapes("The contract: x is (N, C, H, W), grouped as x.reshape(N, G, -1) with statistics (N, G, 1); gamma, "
                     "beta, dgamma and dbeta are (C,), applied as gamma.reshape(1, C, 1, 1); out and dx are (N, C, H, W)")



def _GN_SHAPES(error_type: str, text: str) -> str:
    """Group norm's errors: gamma reshaped to one value per group (a reshape numpy refuses), gamma or beta applied in
    the grouped (N, G, M) layout (a broadcast numpy refuses: a (1, ., .) array against the grouped values), else a
    broadcast."""
    import re

    found = re.search(r"cannot reshape array of size (\d+) into shape \(([\d, ]+)\)", text)
    if error_type == "ValueError" and found:
        return (f"gamma or beta reshaped to {tuple(int(d) for d in found.group(2).split(','))}: they have one entry "
                f"per channel ({found.group(1)},), not per group; reshape x_hat back to (N, C, H, W) first, then "
                f"x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1) (numpy said: {text.split(' (at ')[0]})")
    said = text.split(" (at ")[0]
    grouped = [tuple(int(d) for d in inner.split(",") if d.strip())
               for inner in re.findall(r"\(([\d,\s]+)\)", said)] if "broadcast" in said else []
    grouped = [shape for shape in grouped if len(shape) == 3]
    values = max(grouped, key=lambda shape: shape[0] * shape[1] * shape[2], default=())
    per_channel = [shape for shape in grouped if shape[0] == 1 and shape != values]
    if error_type == "ValueError" and len(grouped) >= 2 and per_channel:
        return (f"gamma or beta applied in the grouped (N, G, M) layout: an array of shape {per_channel[0]} met the "
                f"grouped values {values}, and a per-channel array has no place in that layout (each group's M "
                f"values run channel by channel); reshape x_hat back to (N, C, H, W) first, then "
                f"x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1) (numpy said: {said})")
    return _GN_BROADCAST(error_type, text)


_RTOL, _ATOL = 1e-4, 1e-5  # float32 cases are computed in float32
_LN_ARGS = ("x", "gamma", "beta", "eps")  # the arguments a case passes (the runner's, for a backward)
_GN_ARGS = ("x", "gamma", "beta", "G", "eps")


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
# float32 rows of D=8, not 2: with D=2 the exact dx is inv_std / 2 * (g1 - g2) * eps / (var + eps), a
# cancellation float32 gets to a few digits only: a solution computed in float64 failed (red team 5's F3)
_LN_HIDDEN = [("N=3, D=9", 100, 3, 9, {}), ("N=10, D=8, float32", 101, 10, 8, {"dtype": np.float32}),
              ("N=7, D=5, large mean (1e4), eps=1e-3", 102, 7, 5, {"loc": 1e4, "tiny": True, "eps": 1e-3}),
              ("N=2, D=50000: long rows", 103, 2, 50_000, {"backward_only": True})]  # too large for entry-wise differences (N5)


def _cases(exercise: str, table, hidden: bool, with_dout: bool, inputs) -> list[Case]:
    """Seeded cases from ``table`` rows (name, seed, size, *more, options): ``inputs(rng, size, *more, dtype,
    options) -> (x, gamma, beta, *more)``, then eps (options' or 1e-5) and, ``with_dout``, an upstream gradient."""
    cases = []
    for name, seed, size, *more, opt in table:
        if opt.get("backward_only") and not with_dout:
            continue
        def make(seed=case_seed(exercise, name, seed, hidden), size=size, more=tuple(more), opt=opt):
            rng = np.random.default_rng(seed)
            dtype = opt.get("dtype", np.float64)
            args = inputs(rng, size, *more, dtype, opt) + (opt.get("eps", 1e-5),)
            x = args[0]
            return args + ((rng.normal(size=x.shape).astype(dtype),) if with_dout else ())
        cases.append(Case(name, make))
    return cases


def _ln_inputs(rng, n, d, dtype, opt):
    return (_rows(rng, n, d, dtype, opt.get("loc", 3.0), opt.get("tiny", False)), *_affine(rng, d, dtype))


def _ln_cases(hidden: bool, with_dout: bool = False) -> list[Case]:
    return _cases("layernorm", _LN_HIDDEN if hidden else _LN_VISIBLE, hidden, with_dout, _ln_inputs)


_GN_VISIBLE = [("N=2, C=6, H=3, W=4, G=3", 10, (2, 6, 3, 4), 3, {}),
               ("N=1, C=4, H=2, W=2, G=2: a batch of one", 11, (1, 4, 2, 2), 2, {}),
               ("N=3, C=8, H=2, W=3, G=4, float32", 12, (3, 8, 2, 3), 4, {"dtype": np.float32}),
               ("N=2, C=6, H=2, W=2, G=2, a channel with std 1e-3", 13, (2, 6, 2, 2), 2, {"tiny": True}),
               ("N=2, C=4, H=3, W=1, G=2, eps=1e-2 passed in", 14, (2, 4, 3, 1), 2, {"tiny": True, "eps": 1e-2})]
_GN_HIDDEN = [("N=3, C=12, H=2, W=2, G=3", 110, (3, 12, 2, 2), 3, {}),
              ("N=2, C=8, H=1, W=4, G=2, float32", 111, (2, 8, 1, 4), 2, {"dtype": np.float32}),
              ("N=4, C=6, H=2, W=3, G=3, eps=1e-3", 112, (4, 6, 2, 3), 3, {"tiny": True, "eps": 1e-3}),
              ("N=1, C=4, H=100, W=250, G=1: a large group", 113, (1, 4, 100, 250), 1, {"backward_only": True})]  # (N5; two-pass differences: the source report)


def _images(rng, shape, dtype, tiny=False):
    """(N, C, H, W): each channel of each image on its own scale and offset."""
    n, c = shape[:2]
    scale = rng.uniform(0.3, 3.0, size=(n, c, 1, 1))
    offset = 2.0 + rng.normal(size=(n, c, 1, 1)) * 2
    if tiny:
        scale[:, :2] = 1e-3  # the first group: its variance is comparable to eps
        offset[:, :2] = 1.0
    return (rng.normal(size=shape) * scale + offset).astype(dtype)


def _gn_inputs(rng, shape, G, dtype, opt):
    return (_images(rng, shape, dtype, opt.get("tiny", False)), *_affine(rng, shape[1], dtype), G)


def _gn_cases(hidden: bool, with_dout: bool = False) -> list[Case]:
    return _cases("groupnorm", _GN_HIDDEN if hidden else _GN_VISIBLE, hidden, with_dout, _gn_inputs)


# ---------------------------------------------------------------------------------------------
# Layer norm
# ---------------------------------------------------------------------------------------------


def _ln_ref(x, gamma, beta, eps):
    return lref.layernorm_forward(x, gamma, beta, eps)[0], None


def check_layernorm_forward(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, eps)[0]`` equal layer norm (F.layer_norm over the last axis)?"""
    return check_function("layernorm_forward", fn, _ln_ref, _ln_cases(hidden), catalogue.lazy("layernorm_forward"),
                          outputs=("out", "cache"), compare=["out"], rtol=_RTOL, atol=_ATOL, arg_names=_LN_ARGS,
                          explain_error=_LN_SHAPES)


_CACHE_CHANGED = {"cache": ("the backward changed the forward's cache", "an in-place operation on an array read "
                              "from the cache (x_hat *= ..., x_hat -= ...) changes the cache itself: compute into a "
                              "new array (g = dout * gamma, not dout *= gamma)")}


def _pair(forward_fn, backward_fn, grouped: bool):
    """Arrays in, arrays out: the learner's backward on the learner's own forward cache."""
    def backward(dout, cache):
        with kept(cache=cache):  # the backward reads the cache; changing it (x_hat *= ...) breaks a second call
            return backward_fn(dout, cache)

    if grouped:
        def run(x, gamma, beta, G, eps, dout):
            return backward(dout, forward_fn(x, gamma, beta, G, eps)[1])
    else:
        def run(x, gamma, beta, eps, dout):
            return backward(dout, forward_fn(x, gamma, beta, eps)[1])
    return run


def _ln_ref_backward(x, gamma, beta, eps, dout):
    return lref.layernorm_backward(dout, lref.layernorm_forward(x, gamma, beta, eps)[1])


def check_layernorm_backward(forward_fn, backward_fn, hidden: bool = False) -> CheckResult:
    """Does ``backward_fn(dout, forward_fn(x, gamma, beta, eps)[1])`` give layer norm's dx, dgamma, dbeta?"""
    if not callable(forward_fn) or not callable(backward_fn):
        not_fn = forward_fn if not callable(forward_fn) else backward_fn
        return check_function("layernorm_backward", not_fn, None, [])
    return check_function("layernorm_backward", _pair(forward_fn, backward_fn, False), _ln_ref_backward,
                          _ln_cases(hidden, with_dout=True), catalogue.lazy("layernorm_backward"),
                          outputs=("dx", "dgamma", "dbeta"), rtol=_RTOL, atol=_ATOL, arg_names=_LN_ARGS + ("dout",),
                          in_place=_CACHE_CHANGED, explain_error=_LN_SHAPES,
                          check_dtype=False)  # the gradients may be float64 (the contract fixes only the output)


# ---------------------------------------------------------------------------------------------
# Group norm
# ---------------------------------------------------------------------------------------------


def _gn_ref(x, gamma, beta, G, eps):
    return gref.groupnorm_forward(x, gamma, beta, G, eps)[0], None


def check_groupnorm_forward(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(x, gamma, beta, G, eps)[0]`` equal ``F.group_norm(x, G, gamma, beta, eps)``?"""
    return check_function("groupnorm_forward", fn, _gn_ref, _gn_cases(hidden), catalogue.lazy("groupnorm_forward"),
                          outputs=("out", "cache"), compare=["out"], rtol=_RTOL, atol=_ATOL, arg_names=_GN_ARGS,
                          explain_error=_GN_SHAPES)


def _gn_ref_backward(x, gamma, beta, G, eps, dout):
    return gref.groupnorm_backward(dout, gref.groupnorm_forward(x, gamma, beta, G, eps)[1])


def check_groupnorm_backward(forward_fn, backward_fn, hidden: bool = False) -> CheckResult:
    """Does ``backward_fn(dout, forward_fn(x, gamma, beta, G, eps)[1])`` give group norm's gradients?"""
    if not callable(forward_fn) or not callable(backward_fn):
        not_fn = forward_fn if not callable(forward_fn) else backward_fn
        return check_function("groupnorm_backward", not_fn, None, [])
    result = check_function("groupnorm_backward", _pair(forward_fn, backward_fn, True), _gn_ref_backward,
                            _gn_cases(hidden, with_dout=True), catalogue.lazy("groupnorm_backward"),
                            outputs=("dx", "dgamma", "dbeta"), rtol=_RTOL, atol=_ATOL, check_dtype=False,
                            arg_names=_GN_ARGS + ("dout",), in_place=_CACHE_CHANGED,
                            explain_error=_GN_SHAPES)
    return result

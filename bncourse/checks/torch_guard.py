"""The torch side of the checks: torch's own batch norm refused while the learner's code runs,
torch's and the learner's errors explained, warnings kept off stderr, tensors as numpy.

``no_builtin_batchnorm()``: inside it, ``F.batch_norm`` and ``torch.batch_norm`` raise
``UsedBuiltinBatchNorm`` (so ``nn.BatchNorm*`` does too); the checks need the real ones for their
references, so they are put back on exit. ``explain(error_type, text)`` turns a learner's error
into the likely mistake behind it (forgot ``ctx.cache``, numpy where a tensor is expected, ...).
"""

from __future__ import annotations

import contextlib
import re
import warnings

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["UsedBuiltinBatchNorm", "no_builtin_batchnorm", "quiet", "explain", "to_numpy", "BUILTIN_HINT"]

BUILTIN_HINT = ("used torch's own batch norm: this exercise asks for your own (the numpy functions, or torch "
                "operations such as mean, var, sqrt); nn.BatchNorm* and F.batch_norm are the reference it is "
                "checked against")

# Captured at import: the check itself needs the real ones for its references.
_REAL_BUILTINS = [(F, "batch_norm", F.batch_norm), (torch, "batch_norm", torch.batch_norm)]


class UsedBuiltinBatchNorm(RuntimeError):
    """Raised inside the learner's code when it reaches torch's own batch norm during a check."""


@contextlib.contextmanager
def no_builtin_batchnorm():
    """Make F.batch_norm and torch.batch_norm raise while the learner's code runs."""

    def refuse(*args, **kwargs):
        raise UsedBuiltinBatchNorm("called torch's own batch norm (F.batch_norm or nn.BatchNorm*) while being checked")

    for module, name, _ in _REAL_BUILTINS:
        setattr(module, name, refuse)
    try:
        yield
    finally:
        for module, name, real in _REAL_BUILTINS:
            setattr(module, name, real)


@contextlib.contextmanager
def quiet():
    """No warning from torch or the learner reaches stderr while a check runs."""
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        yield


def to_numpy(t) -> np.ndarray | None:
    """A tensor as a numpy array in its own dtype (None stays None)."""
    if t is None:
        return None
    return t.detach().cpu().numpy().copy()


# The learner's error (torch's or Python's wording, which we do not control) -> the likely mistake.
_ERRORS: list[tuple[str, str]] = [
    ("Backward' object has no attribute",
     "forgot to keep the cache for backward: in forward store it on ctx (ctx.cache = cache); "
     "ctx.save_for_backward only accepts tensors, and the numpy cache is not one"),
    ("save_for_backward can only save",
     "ctx.save_for_backward only accepts tensors: keep the numpy cache as an attribute instead, ctx.cache = cache"),
    ("returned an incorrect number of gradients",
     "wrong number of gradients from backward: return one per input of forward, (dx, dgamma, dbeta, None), "
     "with None for eps (a float has no gradient)"),
    ("returned a gradient different than None at position",
     "backward returns the gradients in the order of forward's inputs (x, gamma, beta, eps): "
     "(dx, dgamma, dbeta, None), the None for eps last"),
    ("expected Variable or None",
     "backward returned numpy arrays: convert each gradient back to a tensor with torch.from_numpy(...), "
     "in dout's dtype and on its device"),
    ("Can't call numpy() on Tensor that requires grad", "detach before converting to numpy: x.detach().cpu().numpy()"),
    ("can't convert (cuda|mps|xpu)", "tensors on a GPU must come to the CPU before numpy: x.detach().cpu().numpy()"),
    (r"forward\(\) takes|forward\(\) missing",
     "forward has the wrong signature: it should be forward(ctx, x, gamma, beta, eps), called as "
     "Fn.apply(x, gamma, beta, eps)"),
    (r"non-singleton dimension 3",
     "the (C,) statistics or parameters were broadcast against the last dimension (W) instead of the channels: "
     "reshape them to (1, C, 1, 1), e.g. mean[None, :, None, None] or mean.view(1, -1, 1, 1)"),
    (r"non-singleton dimension [0-2]|Mismatch in shape: grad_output|shape '\[1, -1(, 1)*\]' is invalid",
     "statistics over the wrong dimensions: a per-channel statistic (or parameter) has another shape than one value "
     "per channel where it meets x. Reduce over dims (0, 2, 3) for BatchNorm2d (dim 0 for (N, D)), one mean and "
     "variance per channel, and view them as (1, C, 1, 1) (or keep the dims with keepdim=True)"),
    (r"__init__\(\) got an unexpected keyword argument|__init__\(\) takes",
     "the constructor should be __init__(self, num_features, eps=1e-5, momentum=0.1), like nn.BatchNorm2d's"),
    ("has no attribute 'running_mean'|has no attribute 'running_var'",
     "name the running statistics running_mean and running_var (as nn.BatchNorm2d does) and register them as buffers"),
    ("has no attribute 'weight'|has no attribute 'bias'",
     "name gamma and beta weight and bias (as nn.BatchNorm2d does), as nn.Parameter"),
    ("Expected more than 1 value per channel", "a training batch needs more than one value per channel"),
]


def explain(error_type: str, text: str) -> str:
    """The likely mistake behind the learner's error ``error_type: text`` ('' when none is known)."""
    if error_type == "NotImplementedError":
        return "not attempted yet: the code still raises NotImplementedError"
    if error_type == UsedBuiltinBatchNorm.__name__:
        return BUILTIN_HINT
    for pattern, explanation in _ERRORS:
        if re.search(pattern, text):
            return explanation
    return ""

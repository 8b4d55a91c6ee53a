"""The catalogue's entries for notebook 2: batch norm forward, running statistics, inference.

Each entry is a small wrong implementation that reproduces one mistake as a learner makes it;
``bncourse.checks.catalogue.mistakes(exercise)`` hands them to the check, which names the first
one that reproduces the learner's outputs.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Mistake
from bncourse.checks.inputs import as_dtype_of

def _out(x, y):
    return as_dtype_of(x, y), None


def _x_hat(x, eps):
    return (x - x.mean(0)) / np.sqrt(x.var(0) + eps)


def _fwd_unbiased(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + eps) + b)


def _fwd_eps_outside(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(0)) / (x.std(0) + eps) + b)


def _fwd_no_eps(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(0)) / x.std(0) + b)


def _fwd_fixed_eps(x, g, b, eps=1e-5):
    return _out(x, g * _x_hat(x, 1e-5) + b)


def _fwd_rows(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps) + b)


def _fwd_one_stat(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean()) / np.sqrt(x.var() + eps) + b)


def _fwd_var_all(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(0)) / np.sqrt(x.var() + eps) + b)


def _fwd_swapped(x, g, b, eps=1e-5):
    return _out(x, b * _x_hat(x, eps) + g)


def _fwd_no_affine(x, g, b, eps=1e-5):
    return _out(x, _x_hat(x, eps))


def _fwd_no_gamma(x, g, b, eps=1e-5):
    return _out(x, _x_hat(x, eps) + b)


def _fwd_no_beta(x, g, b, eps=1e-5):
    return _out(x, g * _x_hat(x, eps))


def _fwd_over_var(x, g, b, eps=1e-5):
    return _out(x, g * (x - x.mean(0)) / (x.var(0) + eps) + b)


def _fwd_moments(x, g, b, eps=1e-5):
    var = (x * x).mean(0) - x.mean(0) ** 2
    return _out(x, g * (x - x.mean(0)) / np.sqrt(var + eps) + b)


def _fwd_not_centred(x, g, b, eps=1e-5):
    return _out(x, g * x / np.sqrt(x.var(0) + eps) + b)


_AFFINE_HINT = "after normalizing, scale by gamma and shift by beta: out = gamma * x_hat + beta"
_EPS_HINT = "add eps to the variance before the square root: (x - mean) / sqrt(var + eps)"
_FORWARD_MISTAKES = [
    Mistake("unbiased variance used to normalize",
            "normalize with the biased batch variance (divide by N, np.var's default ddof=0); the unbiased "
            "one (N - 1) is only for updating running_var", _fwd_unbiased),
    Mistake("eps outside the square root", _EPS_HINT, _fwd_eps_outside),
    Mistake("eps missing", _EPS_HINT, _fwd_no_eps),
    Mistake("eps argument ignored", "use the eps passed to the function, not a fixed 1e-5", _fwd_fixed_eps),
    Mistake("statistics over the wrong axis",
            "each feature (column) has its own mean and variance: reduce over axis=0, the batch", _fwd_rows),
    Mistake("one mean and variance for all features",
            "each feature (column) has its own mean and variance: pass axis=0", _fwd_one_stat),
    Mistake("variance over all features (axis missing in the variance)",
            "the mean is per feature, but the variance was taken over the whole array: pass axis=0 to the "
            "variance too", _fwd_var_all),
    Mistake("gamma and beta swapped", "gamma scales and beta shifts: out = gamma * x_hat + beta", _fwd_swapped),
    Mistake("gamma and beta not applied", _AFFINE_HINT, _fwd_no_affine),
    Mistake("gamma not applied (only beta added)", "scale by gamma too: out = gamma * x_hat + beta", _fwd_no_gamma),
    Mistake("beta not added (only gamma applied)", "shift by beta too: out = gamma * x_hat + beta", _fwd_no_beta),
    Mistake("divided by the variance instead of the standard deviation", "divide by sqrt(var + eps)",
            _fwd_over_var),
    Mistake("variance computed as E[x^2] - E[x]^2",
            "that formula cancels catastrophically when the mean is large; subtract the mean first: "
            "var = mean((x - mean)**2), or np.var", _fwd_moments),
    Mistake("mean not subtracted", "centre first: x_hat = (x - mean) / sqrt(var + eps)", _fwd_not_centred),
]


def _blend(old, new, momentum):
    return (1 - momentum) * np.asarray(old) + momentum * new


def _run_flipped(x, rm, rv, momentum=0.1):
    return _blend(rm, x.mean(0), 1 - momentum), _blend(rv, x.var(0, ddof=1), 1 - momentum)


def _run_biased(x, rm, rv, momentum=0.1):
    return _blend(rm, x.mean(0), momentum), _blend(rv, x.var(0), momentum)


def _run_std(x, rm, rv, momentum=0.1):
    return _blend(rm, x.mean(0), momentum), _blend(rv, x.std(0, ddof=1), momentum)


def _run_not_updated(x, rm, rv, momentum=0.1):
    return np.asarray(rm), np.asarray(rv)


def _run_replaced(x, rm, rv, momentum=0.1):
    return np.asarray(x).mean(0), np.asarray(x).var(0, ddof=1)


def _run_swapped(x, rm, rv, momentum=0.1):
    return _blend(rv, x.var(0, ddof=1), momentum), _blend(rm, x.mean(0), momentum)


def _run_fixed_momentum(x, rm, rv, momentum=0.1):
    return _blend(rm, x.mean(0), 0.1), _blend(rv, x.var(0, ddof=1), 0.1)


_RUNNING_MISTAKES = [
    Mistake("momentum convention flipped",
            "in PyTorch momentum weighs the NEW batch: new = (1 - momentum) * old + momentum * batch "
            "(Keras' momentum weighs the old value instead)", _run_flipped),
    Mistake("running_var updated with the biased variance",
            "running_var takes the unbiased batch variance (ddof=1, divide by N - 1), as PyTorch does; "
            "only the normalization uses the biased one", _run_biased),
    Mistake("running statistics not updated",
            "return the blended values new = (1 - momentum) * old + momentum * batch, not the old ones",
            _run_not_updated),
    Mistake("running statistics replaced by the batch statistics",
            "blend with the old values: new = (1 - momentum) * old + momentum * batch", _run_replaced),
    Mistake("running_var updated with the standard deviation",
            "blend in the unbiased batch variance, not its square root", _run_std),
    Mistake("running_mean and running_var swapped", "return (new_running_mean, new_running_var) in that order",
            _run_swapped),
    Mistake("momentum argument ignored", "use the momentum passed to the function (default 0.1)",
            _run_fixed_momentum),
]


def _inf_batch_stats(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * _x_hat(x, eps) + b)


def _inf_updated(x, g, b, rm, rv, eps=1e-5):
    with np.errstate(all="ignore"):  # N=1: the unbiased variance is nan, as in the learner's code
        m, v = _blend(rm, x.mean(0), 0.1), _blend(rv, x.var(0, ddof=1), 0.1)
        return as_dtype_of(x, g * (x - m) / np.sqrt(v + eps) + b)


def _inf_eps_outside(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * (x - rm) / (np.sqrt(rv) + eps) + b)


def _inf_no_eps(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * (x - rm) / np.sqrt(rv) + b)


def _inf_over_var(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * (x - rm) / (rv + eps) + b)


def _inf_swapped_affine(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, b * (x - rm) / np.sqrt(rv + eps) + g)


def _inf_swapped_stats(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * (x - rv) / np.sqrt(rm + eps) + b)


def _inf_no_gamma(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, (x - rm) / np.sqrt(rv + eps) + b)


def _inf_no_beta(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, g * (x - rm) / np.sqrt(rv + eps))


_INFERENCE_MISTAKES = [
    Mistake("batch statistics used in inference",
            "in inference normalize with running_mean and running_var, not with this batch's mean and "
            "variance (the output must not depend on the other rows of the batch)", _inf_batch_stats),
    Mistake("running statistics updated in inference",
            "inference only reads running_mean and running_var; updating them belongs to training", _inf_updated),
    Mistake("eps outside the square root", "add eps to running_var before the square root: sqrt(running_var + eps)",
            _inf_eps_outside),
    Mistake("eps missing", "add eps to running_var before the square root: sqrt(running_var + eps)", _inf_no_eps),
    Mistake("divided by the variance instead of the standard deviation", "divide by sqrt(running_var + eps)",
            _inf_over_var),
    Mistake("gamma and beta swapped", "gamma scales and beta shifts: out = gamma * x_hat + beta",
            _inf_swapped_affine),
    Mistake("running_mean and running_var swapped", "subtract running_mean and divide by sqrt(running_var + eps)",
            _inf_swapped_stats),
    Mistake("gamma not applied (only beta added)", "scale by gamma too: out = gamma * x_hat + beta", _inf_no_gamma),
    Mistake("beta not added (only gamma applied)", "shift by beta too: out = gamma * x_hat + beta", _inf_no_beta),
]


ENTRIES = {"batchnorm_forward": _FORWARD_MISTAKES, "update_running_stats": _RUNNING_MISTAKES,
           "batchnorm_inference": _INFERENCE_MISTAKES}

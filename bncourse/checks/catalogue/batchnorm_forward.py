"""The catalogue's entries for notebook 2: batch norm forward, running statistics, inference.

Each entry is a small wrong implementation that reproduces one mistake as a learner makes it;
``bncourse.checks.catalogue.mistakes(exercise)`` hands them to the check, which names the first
one that reproduces the learner's outputs.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.catalogue.shared import affine, blend, inv_std, mistake, standardize
from bncourse.checks.core import Mistake
from bncourse.checks.inputs import as_dtype_of

def _out(x, y):
    return as_dtype_of(x, y), None


def _forward(slip: str = "", axes=0):
    """Batch norm's training forward over ``axes`` (the reference: 0) with one shared slip."""
    def forward(x, g, b, eps=1e-5):
        return _out(x, affine(standardize(x, axes, eps, slip), g, b, slip))
    return forward


def _gamma_first(form: str):
    """gamma (and maybe beta) applied to x before normalizing; ``form`` says which statistics and where beta goes."""
    def forward(x, g, b, eps=1e-5):
        x64 = np.asarray(x, np.float64)
        mu, var = x64.mean(0), x64.var(0)
        with np.errstate(all="ignore"):
            if form == "gx-stats-of-x":  # (gamma * x - mu) / std + beta
                y = (g * x64 - mu) / np.sqrt(var + eps) + b
            elif form == "gx-plus-beta-stats-of-x":  # (gamma * x + beta - mu) / std
                y = (g * x64 + b - mu) / np.sqrt(var + eps)
            elif form == "gx-own-stats":  # standardize(gamma * x) + beta
                y = standardize(g * x64, 0, eps) + b
            elif form == "gx-minus-gmu-over-std-of-gx":  # gamma * (x - mu) / std(gamma * x) + beta
                y = g * (x64 - mu) / np.sqrt((g * x64).var(0) + eps) + b
            elif form == "precedence":  # gamma * (x - mu / std) + beta
                y = g * (x64 - mu / np.sqrt(var + eps)) + b
            else:  # "beta-before-dividing": (gamma * (x - mu) + beta) / std
                y = (g * (x64 - mu) + b) / np.sqrt(var + eps)
        return _out(x, y)
    return forward


_GAMMA_FIRST = ("gamma is applied before normalizing",
                "normalize x first, then scale and shift the normalized values: x_hat = (x - mean) / sqrt(var + eps), "
                "out = gamma * x_hat + beta (gamma * x - mean mixes a scaled x with the mean of the unscaled one)")


def _fwd_var_all(x, g, b, eps=1e-5):  # the mean per feature, the variance of the whole array
    return _out(x, g * (x - x.mean(0)) / np.sqrt(x.var() + eps) + b)


_FORWARD_MISTAKES = [
    mistake("unbiased-variance", _forward("unbiased-variance"),
            hint="normalize with the biased batch variance (divide by N, np.var's default ddof=0); the unbiased "
                 "one (N - 1) is only for updating running_var"),
    mistake("eps-outside-sqrt", _forward("eps-outside-sqrt")),
    mistake("eps-missing", _forward("eps-missing")),
    mistake("eps-hard-coded", _forward("eps-hard-coded")),
    mistake("wrong-axis", _forward(axes=1), name="statistics over the wrong axis",
            hint="each feature (column) has its own mean and variance: reduce over axis=0, the batch"),
    Mistake("one mean and variance for all features",
            "each feature (column) has its own mean and variance: pass axis=0", _forward(axes=None)),
    Mistake("variance over all features (axis missing in the variance)",
            "the mean is per feature, but the variance was taken over the whole array: pass axis=0 to the "
            "variance too", _fwd_var_all),
    mistake("gamma-beta-swapped", _forward("gamma-beta-swapped")),
    mistake("gamma-and-beta-not-applied", _forward("gamma-and-beta-not-applied")),
    mistake("gamma-not-applied-only-beta-added", _forward("gamma-not-applied-only-beta-added")),
    mistake("beta-not-added-only-gamma-applied", _forward("beta-not-added-only-gamma-applied")),
    mistake("beta-scaled-by-gamma", _forward("beta-scaled-by-gamma")),
    mistake("beta-subtracted", _forward("beta-subtracted")),
    mistake("divided-by-gamma", _forward("divided-by-gamma")),
    mistake("divided-by-variance", _forward("divided-by-variance")),
    mistake("multiplied-by-std", _forward("multiplied-by-std")),
    mistake("variance-computed-as-e-x-2", _forward("variance-computed-as-e-x-2")),
    mistake("variance-uncentred", _forward("variance-uncentred")),
    mistake("rms-norm", _forward("rms-norm")),  # without eps too: mean(x**2) dwarfs eps in every case
    mistake("mean-not-subtracted", _forward("mean-not-subtracted")),
    mistake("sqrt-of-std", _forward("sqrt-of-std")),
    mistake("not-divided-by-std", _forward("not-divided-by-std")),
    mistake("eps-added-to-x-hat", _forward("eps-added-to-x-hat")),
    mistake("affine-before-normalizing", lambda x, g, b, eps=1e-5: _out(x, standardize(np.asarray(x, np.float64) * g + b,
                                                                                        0, eps))),
    *(Mistake(*_GAMMA_FIRST, _gamma_first(form), id="gamma-before-normalizing")
      for form in ("gx-stats-of-x", "gx-plus-beta-stats-of-x", "gx-own-stats", "gx-minus-gmu-over-std-of-gx")),
    Mistake("only the mean divided by the standard deviation (operator precedence: x - mean / std)",
            "put the subtraction in brackets: (x - mean) / sqrt(var + eps); x - mean / sqrt(var + eps) divides only "
            "the mean", _gamma_first("precedence"), id="precedence-x-minus-mean-over-std"),
    Mistake("beta added before dividing by the standard deviation",
            "shift after normalizing: out = gamma * (x - mean) / sqrt(var + eps) + beta; (gamma * (x - mean) + beta) "
            "/ std divides beta too", _gamma_first("beta-before-dividing")),
]


def _running(slip: str = ""):
    """The running update with one slip; slips of its own: "biased", "std", "not-updated", "replaced", "swapped",
    "uncentred-unbiased" and "uncentred-biased" (sum(x**2) over N - 1 or N)."""
    def update(x, rm, rv, momentum=0.1):
        mean, var = x.mean(0), x.var(0, ddof=0 if slip == "biased" else 1)
        if slip == "std":
            var = np.sqrt(var)
        if slip == "correction-inverted":
            var = x.var(0) * (x.shape[0] - 1) / x.shape[0]
        if slip.startswith("uncentred-"):  # the mean of x**2 (over N - 1 or N): the mean never subtracted
            var = (np.asarray(x) ** 2).sum(0) / (x.shape[0] - (1 if slip == "uncentred-unbiased" else 0))
        if slip == "batch-unweighted":  # (1 - momentum) * old + batch
            return (1 - momentum) * np.asarray(rm) + mean, (1 - momentum) * np.asarray(rv) + var
        if slip in _NOT_DECAYED:  # the two weights do not add up to one
            w_old, w_new = _NOT_DECAYED[slip](momentum)
            return w_old * np.asarray(rm) + w_new * mean, w_old * np.asarray(rv) + w_new * var
        if slip == "not-updated":
            return np.asarray(rm), np.asarray(rv)
        if slip == "replaced":
            return np.asarray(x).mean(0), np.asarray(x).var(0, ddof=1)
        if slip.startswith("around-"):  # the variance of the batch around a running mean, not its own mean
            old = slip.startswith("around-old")
            centre = np.asarray(rm) if old else blend(np.asarray(rm), mean, momentum)
            var = ((np.asarray(x) - centre) ** 2).sum(0) / (x.shape[0] - (1 if slip.endswith("unbiased") else 0))
        new_m, new_v = blend(np.asarray(rm), mean, momentum, slip), blend(np.asarray(rv), var, momentum, slip)
        return (new_v, new_m) if slip == "swapped" else (new_m, new_v)
    return update


# slip -> (weight of the old value, weight of the batch's) as functions of momentum: none adds up to one
_NOT_DECAYED = {
    "not-decayed": lambda m: (1.0, m),                 # running + momentum * batch
    "not-decayed-flipped": lambda m: (1.0, 1 - m),     # running + (1 - momentum) * batch
    "old-times-momentum": lambda m: (m, 1.0),          # momentum * running + batch
    "old-plus-batch": lambda m: (1.0, 1.0),            # running + batch
    "old-dropped": lambda m: (0.0, m),                 # momentum * batch
    "old-dropped-flipped": lambda m: (0.0, 1 - m),     # (1 - momentum) * batch
    "both-momentum": lambda m: (m, m),                 # momentum * (running + batch)
    "both-one-minus": lambda m: (1 - m, 1 - m),        # (1 - momentum) * (running + batch)
}
_NOT_DECAYED_SAID = {
    "not-decayed": "running + momentum * batch", "not-decayed-flipped": "running + (1 - momentum) * batch",
    "old-times-momentum": "momentum * running + batch", "old-plus-batch": "running + batch",
    "old-dropped": "momentum * batch, the old value dropped", "old-dropped-flipped": "(1 - momentum) * batch, the old value dropped",
    "both-momentum": "momentum * running + momentum * batch", "both-one-minus": "(1 - momentum) * running + (1 - momentum) * batch",
}

_RUNNING_MISTAKES = [
    mistake("momentum-flipped", _running("momentum-flipped")),
    Mistake("running_var updated with the biased variance",
            "running_var takes the unbiased batch variance (ddof=1, divide by N - 1), as PyTorch does; "
            "only the normalization uses the biased one", _running("biased")),
    Mistake("running statistics not updated",
            "return the blended values new = (1 - momentum) * old + momentum * batch, not the old ones",
            _running("not-updated")),
    Mistake("running statistics replaced by the batch statistics",
            "blend with the old values: new = (1 - momentum) * old + momentum * batch", _running("replaced")),
    Mistake("running_var updated with the standard deviation",
            "blend in the unbiased batch variance, not its square root", _running("std")),
    Mistake("running_mean and running_var swapped", "return (new_running_mean, new_running_var) in that order",
            _running("swapped")),
    mistake("momentum-hard-coded", _running("momentum-hard-coded")),
    Mistake("Bessel's correction inverted (var * (N - 1) / N instead of var * N / (N - 1))",
            "the unbiased variance divides the squared deviations by N - 1: x.var(axis=0, ddof=1) = "
            "x.var(axis=0) * N / (N - 1)", _running("correction-inverted"), only=("new_running_var",)),
    Mistake("momentum missing on the batch's term ((1 - momentum) * old + batch)",
            "the two weights add up to one: new = (1 - momentum) * old + momentum * batch",
            _running("batch-unweighted")),
    *(Mistake(f"running statistics not decayed: {said}",
              "the old value and the batch are weighed so the weights add up to one: "
              "new = (1 - momentum) * running + momentum * batch", _running(slip), id="running-not-decayed")
      for slip, said in _NOT_DECAYED_SAID.items()),
    *(Mistake("running_var blended with the mean of x**2 (the variance taken without subtracting the mean)",
              "the batch variance is the mean of the SQUARED DEVIATIONS from the batch mean: x.var(axis=0, ddof=1) "
              "= sum((x - x.mean(0))**2) / (N - 1), not sum(x**2) / (N - 1)", _running(f"uncentred-{ddof}"),
              only=("new_running_var",), id="variance-uncentred") for ddof in ("unbiased", "biased")),
    *(Mistake("running_var blended with the variance around the running mean, not the batch mean",
              "the batch variance is taken around the batch's own mean: x.var(axis=0, ddof=1), i.e. "
              "sum((x - x.mean(0))**2) / (N - 1); the running mean only enters the running_mean blend",
              _running(f"around-{which}-{ddof}"), only=("new_running_var",))
      for which in ("old", "new") for ddof in ("unbiased", "biased")),
]


def _inference(slip: str = ""):
    """Inference with the running statistics, with one shared slip."""
    def inference(x, g, b, rm, rv, eps=1e-5):
        return as_dtype_of(x, affine((x - rm) * inv_std(rv, eps, slip), g, b, slip))
    return inference


def _inf_batch_stats(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, affine(standardize(x, 0, eps), g, b))


def _inf_batch_stats_unbiased(x, g, b, rm, rv, eps=1e-5):
    return as_dtype_of(x, affine(standardize(x, 0, eps, "unbiased-variance"), g, b))


def _inf_updated(x, g, b, rm, rv, eps=1e-5):
    with np.errstate(all="ignore"):  # N=1: the unbiased variance is nan, as in the learner's code
        m, v = blend(rm, x.mean(0), 0.1), blend(rv, x.var(0, ddof=1), 0.1)
        return as_dtype_of(x, g * (x - m) / np.sqrt(v + eps) + b)


def _inf_mixed(mean_from: str):
    """Half batch statistics, half running ones: the batch's mean with running_var, or the converse."""
    def inference(x, g, b, rm, rv, eps=1e-5):
        x = np.asarray(x)
        with np.errstate(all="ignore"):
            mean = x.mean(0) if mean_from == "batch" else rm
            var = rv if mean_from == "batch" else x.var(0, ddof=1 if mean_from == "running-unbiased" else 0)
            return as_dtype_of(x, g * (x - mean) / np.sqrt(var + eps) + b)
    return inference


def _inf_swapped_stats(x, g, b, rm, rv, eps=1e-5):
    return _inference()(x, g, b, rv, rm, eps)


_RUNNING_HINT = "add eps to running_var before the square root: sqrt(running_var + eps)"
_INFERENCE_MISTAKES = [
    Mistake("batch statistics used in inference",
            "in inference normalize with running_mean and running_var, not with this batch's mean and "
            "variance (the output must not depend on the other rows of the batch)", _inf_batch_stats),
    Mistake("batch statistics used in inference (with the unbiased variance)",
            "in inference normalize with running_mean and running_var, not with this batch's mean and "
            "variance (the output must not depend on the other rows of the batch)", _inf_batch_stats_unbiased),
    Mistake("running statistics updated in inference",
            "inference only reads running_mean and running_var; updating them belongs to training", _inf_updated),
    Mistake("the batch's mean used with the running variance",
            "in inference both statistics are the running ones: (x - running_mean) / sqrt(running_var + eps)",
            _inf_mixed("batch")),
    *(Mistake("the running mean used with the batch's variance",
              "in inference both statistics are the running ones: (x - running_mean) / sqrt(running_var + eps)",
              _inf_mixed(which)) for which in ("running", "running-unbiased")),
    mistake("eps-outside-sqrt", _inference("eps-outside-sqrt"), hint=_RUNNING_HINT),
    mistake("eps-hard-coded", _inference("eps-hard-coded")),  # before "eps missing": it also fits an eps=1e-3 case
    mistake("eps-missing", _inference("eps-missing"), hint=_RUNNING_HINT),
    mistake("divided-by-variance", _inference("divided-by-variance"), hint="divide by sqrt(running_var + eps)"),
    mistake("gamma-beta-swapped", _inference("gamma-beta-swapped")),
    Mistake("running_mean and running_var swapped", "subtract running_mean and divide by sqrt(running_var + eps)",
            _inf_swapped_stats),
    mistake("gamma-not-applied-only-beta-added", _inference("gamma-not-applied-only-beta-added")),
    mistake("beta-not-added-only-gamma-applied", _inference("beta-not-added-only-gamma-applied")),
    *(mistake(slip, _inference(slip)) for slip in ("gamma-and-beta-not-applied", "beta-scaled-by-gamma",
                                                   "beta-subtracted", "sqrt-of-std", "not-divided-by-std")),
    mistake("mean-not-subtracted", lambda x, g, b, rm, rv, eps=1e-5: as_dtype_of(x, affine(np.asarray(x) * inv_std(rv, eps),
                                                                                          g, b)),
            hint="subtract running_mean first: (x - running_mean) / sqrt(running_var + eps)"),
]


ENTRIES = {"batchnorm_forward": _FORWARD_MISTAKES, "update_running_stats": _RUNNING_MISTAKES,
           "batchnorm_inference": _INFERENCE_MISTAKES}

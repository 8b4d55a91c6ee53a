"""Checks for notebook 11, "Inside the network": the two measurements the learner writes.

- ``check_saturated_fraction(fn)``: ``fn(h, kind) -> float`` with h a tensor of a layer's outputs
  (N, ...) and kind "tanh", "sigmoid" or "relu": the share of values with |h| > 0.97 (sigmoid:
  |2h - 1| > 0.97), or for ReLU the share of units never active over the batch.
- ``check_update_to_data_ratio(fn)``: ``fn(before, after) -> float``, std(after - before) / std(before).

The learner's function receives torch tensors (float64) and may return a float, a 0-d tensor or a
numpy scalar. ``hidden=True`` runs other seeds and shapes for nbgrader's hidden tests. The
mistakes below are written in numpy, one wrong piece each.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Case, CheckResult, Mistake, check_function

THRESHOLD = 0.97
_FORBIDDEN = ("saturated_fraction", "dead_fraction", "update_to_data_ratio", "_saturated", "_dead", "_ratio",
              "Diagnostics")


class ReturnedManyValues(TypeError):
    """The learner's function returned more than one number."""


def _explain(error_type: str, text: str) -> str:
    if error_type == ReturnedManyValues.__name__:
        return f"return one number for the whole tensor (reduce with .mean() / .std()): {text}"
    return ""


def _scalar(out) -> np.ndarray:
    import torch

    if isinstance(out, torch.Tensor):
        if out.numel() != 1:
            raise ReturnedManyValues(f"got a tensor of shape {tuple(out.shape)}")
        out = out.detach().cpu().double().item()
    arr = np.asarray(out, dtype=np.float64)
    if arr.size != 1:
        raise ReturnedManyValues(f"got {arr.size} values")
    return arr.reshape(1)  # (1,): the engine compares arrays


def _runner(fn):
    """numpy arguments -> the learner's function on float64 tensors -> a (1,) float64 array."""
    import torch

    def run(*args):
        targs = [torch.tensor(a) if isinstance(a, np.ndarray) else a for a in args]
        return _scalar(fn(*targs))
    return run


# ---------------------------------------------------------------------------------------------
# saturated_fraction
# ---------------------------------------------------------------------------------------------


def _units_dead(h: np.ndarray) -> float:
    return float(1.0 - (h > 0).reshape(len(h), -1).any(0).mean())


def _sat(tanh, sigmoid, relu=_units_dead):
    def fn(h, kind):
        h = np.asarray(h, dtype=np.float64)
        got = {"tanh": tanh, "sigmoid": sigmoid, "relu": relu}[kind](h)
        return np.asarray([float(got)])
    return fn


reference_saturated = _sat(lambda h: np.mean(np.abs(h) > THRESHOLD), lambda h: np.mean(np.abs(2 * h - 1) > THRESHOLD))
reference_saturated.__name__ = "reference_saturated"


def _saturation_case(seed: int, kind: str, shape: tuple, scale: float, dead_units: int = 0):
    def make():
        rng = np.random.default_rng([seed, 11])
        x = rng.normal(0.0, scale, size=shape)
        if kind == "tanh":
            h = np.tanh(x)
        elif kind == "sigmoid":
            h = 1.0 / (1.0 + np.exp(-x))
        else:
            x = x + rng.normal(0.0, 0.5, size=shape[1:])  # some units lean negative, some positive
            flat = x.reshape(shape[0], -1)
            flat[:, :dead_units] = -np.abs(flat[:, :dead_units]) - 0.1  # these never fire
            h = np.maximum(flat.reshape(shape), 0.0)
        return h, kind
    return make


def _saturation_cases(hidden: bool) -> list[Case]:
    if hidden:
        return [
            Case("tanh, N=40, D=7, pre-activations std 2.5", _saturation_case(201, "tanh", (40, 7), 2.5)),
            Case("sigmoid, N=25, D=9, pre-activations std 5", _saturation_case(202, "sigmoid", (25, 9), 5.0)),
            Case("relu, N=6, D=20, 5 dead units", _saturation_case(203, "relu", (6, 20), 1.0, 5)),
            Case("relu, N=4, C=2, H=3, W=3 (images), 4 dead units", _saturation_case(204, "relu", (4, 2, 3, 3), 1.0, 4)),
        ]
    return [
        Case("tanh, N=64, D=16, pre-activations std 2", _saturation_case(101, "tanh", (64, 16), 2.0)),
        Case("sigmoid, N=32, D=8, pre-activations std 4", _saturation_case(102, "sigmoid", (32, 8), 4.0)),
        Case("relu, N=16, D=12, 3 dead units", _saturation_case(103, "relu", (16, 12), 1.0, 3)),
        Case("relu, N=8, C=3, H=4, W=4 (images), 6 dead units", _saturation_case(104, "relu", (8, 3, 4, 4), 1.0, 6)),
    ]


SATURATION_MISTAKES = [
    Mistake("saturation measured as if h were the pre-activation",
            "h is the layer's output, already squashed into [-1, 1] by tanh (into [0, 1] by sigmoid): compare |h| "
            "itself with 0.97 (sigmoid: |2h - 1|); do not apply tanh or sigmoid again, and do not use a pre-activation "
            "threshold such as |x| > 2",
            _sat(lambda h: np.mean(np.abs(np.tanh(h)) > THRESHOLD),
                 lambda h: np.mean(np.abs(2 / (1 + np.exp(-h)) - 1) > THRESHOLD))),
    Mistake("threshold compared the wrong way (counted the unsaturated values)",
            "saturated means NEAR the limits: |h| > 0.97, not below it",
            _sat(lambda h: np.mean(np.abs(h) < THRESHOLD), lambda h: np.mean(np.abs(2 * h - 1) < THRESHOLD))),
    Mistake("only the upper limit counted (no absolute value)",
            "tanh saturates at -1 as well as at +1: take the absolute value, |h| > 0.97",
            _sat(lambda h: np.mean(h > THRESHOLD), lambda h: np.mean(2 * h - 1 > THRESHOLD))),
    Mistake("sigmoid tested with tanh's rule",
            "sigmoid's outputs lie in [0, 1]: its limits are 0 and 1, so test |2h - 1| > 0.97 (h within 0.015 of 0 or 1)",
            _sat(lambda h: np.mean(np.abs(h) > THRESHOLD), lambda h: np.mean(np.abs(h) > THRESHOLD))),
    Mistake("a count instead of a fraction",
            "divide by the number of values (or use .float().mean()): the result is a share between 0 and 1",
            _sat(lambda h: np.sum(np.abs(h) > THRESHOLD), lambda h: np.sum(np.abs(2 * h - 1) > THRESHOLD),
                 lambda h: (~(h > 0).reshape(len(h), -1).any(0)).sum())),
    Mistake("ReLU: the share of zero activations instead of units never active",
            "a ReLU unit is dead when it is zero for EVERY example of the batch: per unit (all axes but 0), "
            "any(h > 0) over the batch, then the share of units where that is False",
            _sat(lambda h: np.mean(np.abs(h) > THRESHOLD), lambda h: np.mean(np.abs(2 * h - 1) > THRESHOLD),
                 lambda h: np.mean(h <= 0))),
    Mistake("ReLU: dead examples instead of dead units (reduced over the wrong axis)",
            "reduce over the batch axis 0: a unit is one feature (or one channel position), alive if any example "
            "activates it",
            _sat(lambda h: np.mean(np.abs(h) > THRESHOLD), lambda h: np.mean(np.abs(2 * h - 1) > THRESHOLD),
                 lambda h: 1.0 - (h > 0).reshape(len(h), -1).any(1).mean())),
    Mistake("ReLU: the share of units alive instead of dead",
            "return the share of units that are never active (1 minus the share active at least once)",
            _sat(lambda h: np.mean(np.abs(h) > THRESHOLD), lambda h: np.mean(np.abs(2 * h - 1) > THRESHOLD),
                 lambda h: (h > 0).reshape(len(h), -1).any(0).mean())),
]


def check_saturated_fraction(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(h, kind)`` give the share of saturated tanh/sigmoid values and of dead ReLU units?"""
    return check_function("saturated_fraction", _runner(fn), reference_saturated, _saturation_cases(hidden),
                          SATURATION_MISTAKES, rtol=1e-6, atol=1e-9, check_dtype=False, forbidden=_FORBIDDEN,
                          forbid_torch="", explain_error=_explain)


# ---------------------------------------------------------------------------------------------
# update_to_data_ratio
# ---------------------------------------------------------------------------------------------


def _ratio(stat):
    def fn(before, after):
        b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
        return np.asarray([float(stat(b, a))])
    return fn


reference_update_ratio = _ratio(lambda b, a: np.std(a - b) / np.std(b))
reference_update_ratio.__name__ = "reference_update_ratio"


def _update_case(seed: int, shape: tuple, mean: float, std: float, step: float, drift: float):
    """A parameter before and after one step: data N(mean, std^2), update N(drift, step^2) per entry."""
    def make():
        rng = np.random.default_rng([seed, 12])
        before = rng.normal(mean, std, size=shape)
        after = before + rng.normal(drift, step, size=shape)
        return before, after
    return make


def _update_cases(hidden: bool) -> list[Case]:
    if hidden:
        return [
            Case("weight (20, 10), update 1e-2 of the data", _update_case(301, (20, 10), 0.02, 0.3, 3e-3, -2e-3)),
            Case("BN gamma (12,) near 1", _update_case(302, (12,), 1.0, 0.05, 1e-3, 5e-4)),
            Case("kernel (4, 3, 3, 3), a large update", _update_case(303, (4, 3, 3, 3), -0.1, 0.2, 0.1, 0.05)),
        ]
    return [
        Case("weight (32, 16), update 1e-3 of the data", _update_case(201, (32, 16), 0.01, 0.2, 2e-4, 1e-4)),
        Case("BN gamma (8,) near 1", _update_case(202, (8,), 1.0, 0.1, 2e-3, 1e-3)),
        Case("bias (5,), a large update", _update_case(203, (5,), 0.3, 0.5, 0.2, -0.1)),
    ]


UPDATE_MISTAKES = [
    Mistake("ratio to the new data (after the step) instead of the old",
            "divide by the spread of the parameter BEFORE the step: std(after - before) / std(before)",
            _ratio(lambda b, a: np.std(a - b) / np.std(a))),
    Mistake("ratio of the means instead of the standard deviations",
            "the update's mean can be near zero while it is large: use std(after - before) / std(before)",
            _ratio(lambda b, a: np.mean(a - b) / np.mean(b))),
    Mistake("ratio of mean absolute values instead of standard deviations",
            "use the standard deviations, std(after - before) / std(before), the measure Karpathy plots",
            _ratio(lambda b, a: np.mean(np.abs(a - b)) / np.mean(np.abs(b)))),
    Mistake("ratio of the norms instead of the standard deviations",
            "std subtracts the mean: a parameter like batch norm's gamma sits near 1 and its norm says nothing of "
            "its spread; use std(after - before) / std(before)",
            _ratio(lambda b, a: np.linalg.norm(a - b) / np.linalg.norm(b))),
    Mistake("the change of the standard deviation instead of the standard deviation of the change",
            "first take the update, after - before, then its std: std(after - before), not std(after) - std(before)",
            _ratio(lambda b, a: (np.std(a) - np.std(b)) / np.std(b))),
    Mistake("the parameters compared instead of the update",
            "the numerator is the update, after - before: std(after - before) / std(before)",
            _ratio(lambda b, a: np.std(a) / np.std(b))),
    Mistake("ratio upside down",
            "the update goes on top: std(after - before) / std(before), a small number for a healthy step",
            _ratio(lambda b, a: np.std(b) / np.std(a - b))),
    Mistake("log10 returned instead of the ratio",
            "return the ratio itself; the plots take log10 of it",
            _ratio(lambda b, a: np.log10(np.std(a - b) / np.std(b)))),
]


def check_update_to_data_ratio(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(before, after)`` give std(after - before) / std(before)?"""
    return check_function("update_to_data_ratio", _runner(fn), reference_update_ratio, _update_cases(hidden),
                          UPDATE_MISTAKES, rtol=1e-5, atol=1e-12, check_dtype=False, forbidden=_FORBIDDEN,
                          forbid_torch="", explain_error=_explain)


# Every mistake each check can name (tests write each one the way a learner would and expect its name).
MISTAKES = {"saturated_fraction": SATURATION_MISTAKES, "update_to_data_ratio": UPDATE_MISTAKES}

"""Checks for notebook 11, "Inside the network": the two measurements the learner writes.

- ``check_saturated_fraction(fn)``: ``fn(h, kind) -> float`` with h a tensor of a layer's outputs
  (N, ...) and kind "tanh", "sigmoid" or "relu": the share of values with |h| > 0.97 (sigmoid:
  |2h - 1| > 0.97), or for ReLU the share of units never active over the batch.
- ``check_update_to_data_ratio(fn)``: ``fn(before, after) -> float``, std(after - before) / std(before).

The learner's function receives torch tensors (float64) and may return a float, a 0-d tensor or a
numpy scalar. ``hidden=True`` runs other shapes, drawn from the grading run's hidden seed
(``bncourse.checks.inputs``). The references are ``bncourse.reference.diagnostics``; the mistakes
live in the catalogue (``bncourse.checks.catalogue.diagnostics``).
"""

from __future__ import annotations

import numpy as np

from bncourse.checks import catalogue
from bncourse.checks.calls import kept
from bncourse.checks.core import Case, CheckResult, check_function
from bncourse.checks.inputs import case_seed
from bncourse.reference import diagnostics as ref
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
        with kept(**{f"argument {i}": t for i, t in enumerate(targs)}):
            value = fn(*targs)
        return _scalar(value)
    return run


# ---------------------------------------------------------------------------------------------
# saturated_fraction
# ---------------------------------------------------------------------------------------------


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


# (name, fixed seed of the visible case, kind, shape, pre-activation scale, dead units)
_SATURATION_VISIBLE = [
    ("tanh, N=64, D=16, pre-activations std 2", 101, "tanh", (64, 16), 2.0, 0),
    ("sigmoid, N=32, D=8, pre-activations std 4", 102, "sigmoid", (32, 8), 4.0, 0),
    ("relu, N=16, D=12, 3 dead units", 103, "relu", (16, 12), 1.0, 3),
    ("relu, N=8, C=3, H=4, W=4 (images), 6 dead units", 104, "relu", (8, 3, 4, 4), 1.0, 6),
]
_SATURATION_HIDDEN = [
    ("tanh, N=40, D=7, pre-activations std 2.5", None, "tanh", (40, 7), 2.5, 0),
    ("sigmoid, N=25, D=9, pre-activations std 5", None, "sigmoid", (25, 9), 5.0, 0),
    ("relu, N=6, D=20, 5 dead units", None, "relu", (6, 20), 1.0, 5),
    ("relu, N=4, C=2, H=3, W=3 (images), 4 dead units", None, "relu", (4, 2, 3, 3), 1.0, 4),
]


def _saturation_cases(hidden: bool) -> list[Case]:
    table = _SATURATION_HIDDEN if hidden else _SATURATION_VISIBLE
    return [Case(name, _saturation_case(case_seed("saturated_fraction", name, seed, hidden), kind, shape, scale, dead))
            for name, seed, kind, shape, scale, dead in table]


def check_saturated_fraction(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(h, kind)`` give the share of saturated tanh/sigmoid values and of dead ReLU units?"""
    return check_function("saturated_fraction", _runner(fn), ref.saturated_fraction, _saturation_cases(hidden),
                          catalogue.lazy("saturated_fraction"), rtol=1e-6, atol=1e-9, check_dtype=False, forbidden=_FORBIDDEN,
                          forbid_torch="", explain_error=_explain)


# ---------------------------------------------------------------------------------------------
# update_to_data_ratio
# ---------------------------------------------------------------------------------------------


def _update_case(seed: int, shape: tuple, mean: float, std: float, step: float, drift: float):
    """A parameter before and after one step: data N(mean, std^2), update N(drift, step^2) per entry."""
    def make():
        rng = np.random.default_rng([seed, 12])
        before = rng.normal(mean, std, size=shape)
        after = before + rng.normal(drift, step, size=shape)
        return before, after
    return make


# (name, fixed seed of the visible case, shape, data mean, data std, update std, update mean)
_UPDATE_VISIBLE = [
    ("weight (32, 16), update 1e-3 of the data", 201, (32, 16), 0.01, 0.2, 2e-4, 1e-4),
    ("BN gamma (8,) near 1", 202, (8,), 1.0, 0.1, 2e-3, 1e-3),
    ("bias (5,), a large update", 203, (5,), 0.3, 0.5, 0.2, -0.1),
]
_UPDATE_HIDDEN = [
    ("weight (20, 10), update 1e-2 of the data", None, (20, 10), 0.02, 0.3, 3e-3, -2e-3),
    ("BN gamma (12,) near 1", None, (12,), 1.0, 0.05, 1e-3, 5e-4),
    ("kernel (4, 3, 3, 3), a large update", None, (4, 3, 3, 3), -0.1, 0.2, 0.1, 0.05),
]


def _update_cases(hidden: bool) -> list[Case]:
    table = _UPDATE_HIDDEN if hidden else _UPDATE_VISIBLE
    return [Case(name, _update_case(case_seed("update_to_data_ratio", name, seed, hidden), *rest))
            for name, seed, *rest in table]


def check_update_to_data_ratio(fn, hidden: bool = False) -> CheckResult:
    """Does ``fn(before, after)`` give std(after - before) / std(before)?"""
    return check_function("update_to_data_ratio", _runner(fn), ref.update_to_data_ratio, _update_cases(hidden),
                          catalogue.lazy("update_to_data_ratio"), rtol=1e-5, atol=1e-12, check_dtype=False, forbidden=_FORBIDDEN,
                          forbid_torch="", explain_error=_explain)


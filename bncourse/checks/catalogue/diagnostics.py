"""The catalogue's entries for notebook 11: saturated_fraction and update_to_data_ratio.

Each entry is one wrong piece of the measurement, in numpy; outputs are (1,) arrays as the checks
compare them.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Mistake
from bncourse.reference.diagnostics import THRESHOLD, dead_units as _units_dead


def _sat(tanh, sigmoid, relu=_units_dead):
    def fn(h, kind):
        h = np.asarray(h, dtype=np.float64)
        got = {"tanh": tanh, "sigmoid": sigmoid, "relu": relu}[kind](h)
        return np.asarray([float(got)])
    return fn


def _ratio(stat):
    def fn(before, after):
        b, a = np.asarray(before, dtype=np.float64), np.asarray(after, dtype=np.float64)
        return np.asarray([float(stat(b, a))])
    return fn


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


ENTRIES = {"saturated_fraction": SATURATION_MISTAKES, "update_to_data_ratio": UPDATE_MISTAKES}

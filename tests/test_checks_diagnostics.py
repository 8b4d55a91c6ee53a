"""Notebook 11's checks: the learner's saturated_fraction and update_to_data_ratio, right and wrong."""

from __future__ import annotations

import pytest
import torch

from bncourse.checks import catalogue
from bncourse.checks.diagnostics import check_saturated_fraction, check_update_to_data_ratio


def saturated_right(h, kind):
    if kind == "tanh":
        return (h.abs() > 0.97).float().mean().item()
    if kind == "sigmoid":
        return ((2 * h - 1).abs() > 0.97).float().mean()
    return 1 - (h > 0).flatten(1).any(0).float().mean().item()


def _with(tanh=None, sigmoid=None, relu=None):
    """saturated_right with one kind's rule replaced, as a learner would get one piece wrong."""
    def fn(h, kind):
        wrong = {"tanh": tanh, "sigmoid": sigmoid, "relu": relu}[kind]
        return wrong(h) if wrong else saturated_right(h, kind)
    return fn


SATURATION_WRONG = {
    "saturation measured as if h were the pre-activation": _with(
        tanh=lambda h: (h.abs() > 2).float().mean(), sigmoid=lambda h: (h.abs() > 4).float().mean()),
    "threshold compared the wrong way (counted the unsaturated values)": _with(
        tanh=lambda h: (h.abs() < 0.97).float().mean(), sigmoid=lambda h: ((2 * h - 1).abs() < 0.97).float().mean()),
    "only the upper limit counted (no absolute value)": _with(tanh=lambda h: (h > 0.97).float().mean()),
    "sigmoid tested with tanh's rule": _with(sigmoid=lambda h: (h.abs() > 0.97).float().mean()),
    "a count instead of a fraction": _with(tanh=lambda h: (h.abs() > 0.97).sum()),
    "ReLU: the share of zero activations instead of units never active": _with(relu=lambda h: (h == 0).float().mean()),
    "ReLU: dead examples instead of dead units (reduced over the wrong axis)": _with(
        relu=lambda h: 1 - (h > 0).flatten(1).any(1).float().mean()),
    "ReLU: the share of units alive instead of dead": _with(relu=lambda h: (h > 0).flatten(1).any(0).float().mean()),
}

UPDATE_WRONG = {
    "ratio to the new data (after the step) instead of the old": lambda b, a: (a - b).std() / a.std(),
    "ratio of the means instead of the standard deviations": lambda b, a: (a - b).mean() / b.mean(),
    "ratio of mean absolute values instead of standard deviations": lambda b, a: (a - b).abs().mean() / b.abs().mean(),
    "ratio of the norms instead of the standard deviations": lambda b, a: (a - b).norm() / b.norm(),
    "the change of the standard deviation instead of the standard deviation of the change":
        lambda b, a: (a.std() - b.std()) / b.std(),
    "the parameters compared instead of the update": lambda b, a: a.std() / b.std(),
    "ratio upside down": lambda b, a: b.std() / (a - b).std(),
    "log10 returned instead of the ratio": lambda b, a: torch.log10((a - b).std() / b.std()),
}


def test_do_correct_functions_pass_the_visible_and_hidden_cases():
    for hidden in (False, True):
        assert check_saturated_fraction(saturated_right, hidden=hidden).passed
        assert check_update_to_data_ratio(lambda b, a: ((a - b).std() / b.std()).item(), hidden=hidden).passed
    # the population std, or numpy, give the same ratio
    assert check_update_to_data_ratio(lambda b, a: (a - b).std(correction=0) / b.std(correction=0)).passed


def test_is_every_known_mistake_written_as_a_learner_would():
    assert set(SATURATION_WRONG) == {m.name for m in catalogue.mistakes("saturated_fraction")}
    assert set(UPDATE_WRONG) == {m.name for m in catalogue.mistakes("update_to_data_ratio")}


@pytest.mark.parametrize("name", list(SATURATION_WRONG))
def test_does_the_saturation_check_name_the_mistake(name):
    result = check_saturated_fraction(SATURATION_WRONG[name])
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


@pytest.mark.parametrize("name", list(UPDATE_WRONG))
def test_does_the_update_ratio_check_name_the_mistake(name):
    result = check_update_to_data_ratio(UPDATE_WRONG[name])
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


def test_does_a_tensor_of_many_values_get_a_clear_message():
    result = check_saturated_fraction(lambda h, kind: (h.abs() > 0.97).float().mean(0))
    assert not result.passed and "return one number" in result.diagnosis


def test_does_calling_the_courses_own_diagnostics_score_nothing():
    from bncourse import diagnostics

    assert "handed the work to bncourse.diagnostics" in check_saturated_fraction(diagnostics.saturated_fraction).diagnosis
    assert not check_update_to_data_ratio(lambda b, a: diagnostics.update_to_data_ratio(b, a)).passed

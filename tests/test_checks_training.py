"""The training notebooks' checks (figure1: percentiles; recompute: batch norm statistics) pass
correct code and name the known mistakes, each written here the way a learner would."""

import numpy as np
import pytest
import torch

from bncourse.checks import catalogue
from bncourse.checks import figure1, recompute
from bncourse.checks.figure1 import check_sigmoid_input_percentiles
from bncourse.checks.recompute import check_recompute_bn_statistics


def percentiles(records):
    return np.percentile(records, [15, 50, 85], axis=1).T


def _bn(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def recompute_ok(model, batches):
    layers = _bn(model)
    momenta, was = [m.momentum for m in layers], model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    model.train(was)


@pytest.mark.parametrize("hidden", [False, True])
def test_does_correct_code_pass_both_checks(hidden):
    assert check_sigmoid_input_percentiles(percentiles, hidden=hidden).passed
    assert check_recompute_bn_statistics(recompute_ok, hidden=hidden).passed


@pytest.mark.parametrize("mistake", catalogue.mistakes("sigmoid_input_percentiles"), ids=lambda m: m.name)
def test_is_each_percentile_mistake_named(mistake):
    result = check_sigmoid_input_percentiles(mistake.fn)
    assert not result.passed and result.diagnosis.startswith(mistake.name)


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("fn,name", [
    (lambda r: np.quantile(r, (0.15, 0.5, 0.85), axis=1), "percentiles not transposed"),
    (lambda r: np.percentile(r, (15, 50, 85), axis=0).T, "percentiles over the wrong axis (axis=0, across"),
], ids=["quantile-not-transposed", "axis0-transposed"])
def test_is_a_learner_wrong_shape_named_rather_than_only_reported(fn, name, hidden):
    result = check_sigmoid_input_percentiles(fn, hidden=hidden)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


def test_does_an_unattempted_exercise_fail_with_a_plain_message():
    def blank(*args):
        raise NotImplementedError()

    result = check_sigmoid_input_percentiles(blank)
    assert not result.passed and "not attempted" in result.diagnosis
    result = check_recompute_bn_statistics(blank)
    assert not result.passed and "not attempted" in result.diagnosis


def no_reset(model, batches):
    layers = _bn(model)
    momenta, was = [m.momentum for m in layers], model.training
    for m in layers:
        m.momentum = None
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    model.train(was)


def exponential(model, batches):
    was = model.training
    for m in _bn(model):
        m.reset_running_stats()
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    model.train(was)


def last_batch_only(model, batches):
    layers = _bn(model)
    momenta, was = [m.momentum for m in layers], model.training
    for m in layers:
        m.reset_running_stats()
        m.momentum = 1.0
    model.train()
    with torch.no_grad():
        for x in batches:
            model(x)
    for m, momentum in zip(layers, momenta):
        m.momentum = momentum
    model.train(was)


def in_eval(model, batches):
    was = model.training
    model.eval()
    with torch.no_grad():
        for x in batches:
            model(x)
    model.train(was)


@pytest.mark.parametrize("fn,name", [
    (no_reset, "statistics not reset first"),
    (exponential, "exponential average"),
    (last_batch_only, "only the last batch counted"),
    (in_eval, "the passes ran in eval mode"),
])
def test_is_each_recompute_mistake_named(fn, name):
    result = check_recompute_bn_statistics(fn)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


def test_is_every_registered_recompute_mistake_a_distinct_name():
    names = [m.name for m in catalogue.mistakes("recompute_bn_statistics")]
    assert len(set(names)) == len(names) >= 5


def test_does_leaving_train_mode_on_fail_even_with_right_statistics():
    def forgets_mode(model, batches):
        recompute_ok(model, batches)
        model.train()

    result = check_recompute_bn_statistics(forgets_mode)
    assert not result.passed and "left in training mode" in result.diagnosis, result.diagnosis


def test_are_both_forgotten_restorations_named_mode_and_momentum():
    def restores_nothing(model, batches):
        for m in _bn(model):
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            for x in batches:
                model(x)

    result = check_recompute_bn_statistics(restores_nothing)
    assert not result.passed
    assert "mode" in result.diagnosis and "momentum was not restored" in result.diagnosis, result.diagnosis


def test_do_the_visible_cases_catch_a_hard_coded_eval_and_momentum():
    """A learner who ends with model.eval() and momentum = 0.1 must hear it before the hidden tests."""
    def hard_coded(model, batches):
        recompute_ok(model, batches)
        for m in _bn(model):
            m.momentum = 0.1
        model.eval()

    result = check_recompute_bn_statistics(hard_coded)
    assert not result.passed
    assert "eval mode" in result.diagnosis and "momentum" in result.diagnosis, result.diagnosis


def test_does_an_optimizer_step_count_as_a_failure():
    def trains(model, batches):
        recompute_ok(model, batches)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)

    result = check_recompute_bn_statistics(trains)
    assert not result.passed and "weights changed" in result.diagnosis, result.diagnosis


def test_is_calling_the_courses_own_recompute_refused():
    from bncourse.train import recompute_bn_statistics

    result = check_recompute_bn_statistics(lambda model, batches: recompute_bn_statistics(model, batches))
    assert not result.passed and {c.kind for c in result.cases} == {"delegated"}


def test_are_the_checks_silent_on_stderr(capfd):
    check_sigmoid_input_percentiles(percentiles).assert_passed()
    check_recompute_bn_statistics(recompute_ok).assert_passed()
    assert capfd.readouterr().err == ""

"""The training notebooks' checks pass the reference and name the known mistakes."""

import numpy as np
import pytest

from bncourse.checks import training as T
from bncourse.plots import percentile_bands
from bncourse.train import recompute_bn_statistics


@pytest.mark.parametrize("hidden", [False, True])
def test_does_the_reference_pass_both_checks(hidden):
    assert T.check_sigmoid_input_percentiles(percentile_bands, hidden=hidden).passed
    assert T.check_recompute_bn_statistics(recompute_bn_statistics, hidden=hidden).passed


@pytest.mark.parametrize("mistake", T._percentile_mistakes(), ids=lambda m: m.name)
def test_is_each_percentile_mistake_named(mistake):
    result = T.check_sigmoid_input_percentiles(mistake.fn)
    assert not result.passed and result.diagnosis.startswith(mistake.name)


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("fn,name", [
    (lambda r: np.quantile(r, (0.15, 0.5, 0.85), axis=1), "percentiles not transposed"),
    (lambda r: np.percentile(r, (15, 50, 85), axis=0).T, "percentiles over the wrong axis (axis=0, across"),
], ids=["quantile-not-transposed", "axis0-transposed"])
def test_is_a_learner_wrong_shape_named_rather_than_only_reported(fn, name, hidden):
    result = T.check_sigmoid_input_percentiles(fn, hidden=hidden)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


def test_does_an_unattempted_exercise_fail_with_a_plain_message():
    def blank(records):
        raise NotImplementedError()

    result = T.check_sigmoid_input_percentiles(blank)
    assert not result.passed and "not attempted" in result.diagnosis
    with pytest.raises(AssertionError):
        T.check_recompute_bn_statistics(lambda model, batches: blank(None)).assert_passed()


@pytest.mark.parametrize("name, hint, buggy", T._BN_MISTAKES, ids=[m[0] for m in T._BN_MISTAKES])
def test_is_each_recompute_mistake_named(name, hint, buggy):
    result = T.check_recompute_bn_statistics(buggy)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


def test_does_leaving_train_mode_on_fail_even_with_right_statistics():
    def forgets_mode(model, batches):
        recompute_bn_statistics(model, batches)
        model.train()

    result = T.check_recompute_bn_statistics(forgets_mode)
    assert not result.passed and "mode" in result.diagnosis


def test_are_both_forgotten_restorations_named_mode_and_momentum():
    def restores_nothing(model, batches):
        import torch

        for m in T._bn_layers(model):
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            for x in batches:
                model(x)

    result = T.check_recompute_bn_statistics(restores_nothing)
    assert not result.passed
    assert "mode" in result.diagnosis and "momentum was not restored" in result.diagnosis, result.diagnosis


def test_do_the_visible_cases_catch_a_hard_coded_eval_and_momentum():
    """A learner who ends with model.eval() and momentum = 0.1 must hear it before the hidden tests."""
    def hard_coded(model, batches):
        recompute_bn_statistics(model, batches)
        for m in T._bn_layers(model):
            m.momentum = 0.1
        model.eval()

    result = T.check_recompute_bn_statistics(hard_coded)
    assert not result.passed
    assert "eval mode" in result.diagnosis and "momentum" in result.diagnosis, result.diagnosis


def test_does_an_optimizer_step_count_as_a_failure():
    import torch

    def trains(model, batches):
        recompute_bn_statistics(model, batches)
        with torch.no_grad():
            next(model.parameters()).add_(1.0)

    result = T.check_recompute_bn_statistics(trains)
    assert not result.passed and "weights changed" in result.diagnosis


def test_are_the_checks_silent_on_stderr(capfd):
    T.check_sigmoid_input_percentiles(percentile_bands).assert_passed()
    T.check_recompute_bn_statistics(recompute_bn_statistics).assert_passed()
    assert capfd.readouterr().err == ""

"""Checks of notebook 1: does each known scaling mistake get its name?"""

from __future__ import annotations

import numpy as np
import pytest

from bncourse.checks.normalize import check_min_max_scale, check_standardize
from bncourse.reference import normalize as ref


def _f(X):
    return np.asarray(X, dtype=np.float64)


def std_test_stats(tr, te):
    tr, te = _f(tr), _f(te)
    return (tr - tr.mean(0)) / tr.std(0), (te - te.mean(0)) / te.std(0)


def std_ddof1(tr, te):
    tr, te = _f(tr), _f(te)
    m, s = tr.mean(0), tr.std(0, ddof=1)
    return (tr - m) / s, (te - m) / s


def std_axis1(tr, te):
    tr, te = _f(tr), _f(te)
    return ((tr - tr.mean(1, keepdims=True)) / tr.std(1, keepdims=True),
            (te - te.mean(1, keepdims=True)) / te.std(1, keepdims=True))


def std_variance(tr, te):
    tr, te = _f(tr), _f(te)
    m, v = tr.mean(0), tr.var(0)
    return (tr - m) / v, (te - m) / v


def std_pooled(tr, te):
    tr, te = _f(tr), _f(te)
    both = np.concatenate([tr, te])
    m, s = both.mean(0), both.std(0)
    return (tr - m) / s, (te - m) / s


def mm_test_range(tr, te):
    tr, te = _f(tr), _f(te)
    return (tr - tr.min(0)) / np.ptp(tr, 0), (te - te.min(0)) / np.ptp(te, 0)


def mm_by_max(tr, te):
    tr, te = _f(tr), _f(te)
    return (tr - tr.min(0)) / tr.max(0), (te - tr.min(0)) / tr.max(0)


@pytest.mark.parametrize(
    "buggy, name",
    [
        (std_test_stats, "test data scaled with its own statistics"),
        (std_ddof1, "sample standard deviation (ddof=1)"),
        (std_axis1, "statistics over the wrong axis"),
        (std_variance, "divided by the variance"),
        (std_pooled, "statistics taken from train and test together"),
    ],
)
def test_is_each_standardization_mistake_named(buggy, name):
    result = check_standardize(buggy)
    assert not result.passed
    assert name in result.diagnosis


@pytest.mark.parametrize(
    "buggy, name",
    [(mm_test_range, "own minimum and maximum"), (mm_by_max, "divided by the maximum"), (ref.standardize, "standardized instead")],
)
def test_is_each_min_max_mistake_named(buggy, name):
    result = check_min_max_scale(buggy)
    assert not result.passed and name in result.diagnosis


def sklearn_style(tr, te):
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(tr)
    return scaler.transform(tr), scaler.transform(te)


def two_pass(tr, te):
    tr, te = _f(tr), _f(te)
    mean = tr.sum(axis=0) / len(tr)
    std = np.sqrt(((tr - mean) ** 2).sum(axis=0) / len(tr))
    return (tr - mean) / std, (te - mean) / std


def sklearn_minmax(tr, te):
    from sklearn.preprocessing import MinMaxScaler

    scaler = MinMaxScaler().fit(tr)
    return scaler.transform(tr), scaler.transform(te)


@pytest.mark.parametrize("correct", [sklearn_style, two_pass])
@pytest.mark.parametrize("hidden", [False, True])
def test_do_different_correct_standardizations_pass(correct, hidden):
    check_standardize(correct, hidden=hidden).assert_passed()


@pytest.mark.parametrize("correct", [sklearn_minmax])
@pytest.mark.parametrize("hidden", [False, True])
def test_do_different_correct_min_max_scalings_pass(correct, hidden):
    check_min_max_scale(correct, hidden=hidden).assert_passed()


def test_does_the_reference_refuse_bad_input_naming_it():
    with pytest.raises(ValueError, match=r"got 1D input of shape \(3,\)"):
        ref.standardize(np.zeros(3), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="X_train has 2 features but X_test has 3"):
        ref.min_max_scale(np.ones((4, 2)), np.ones((1, 3)))

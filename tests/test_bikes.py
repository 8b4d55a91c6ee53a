"""The bike example's gradient-descent facts, which notebook 1 shows the learner."""

import numpy as np

from bncourse import bikes
from bncourse.reference.normalize import standardize


def test_does_descent_converge_just_below_the_predicted_limit_and_diverge_just_above():
    X, y = bikes.make_bikes(100)
    Xb = bikes.add_bias(standardize(X, X)[0])
    limit = bikes.largest_stable_lr(Xb)
    best = bikes.mse(bikes.least_squares(Xb, y), Xb, y)
    assert bikes.gradient_descent(Xb, y, 0.95 * limit, 2000).losses[-1] < 1.001 * best
    assert not np.isfinite(bikes.gradient_descent(Xb, y, 1.1 * limit, 2000).losses[-1])


def test_does_standardizing_shrink_the_condition_number_by_orders_of_magnitude():
    X, y = bikes.make_bikes(100)
    raw = bikes.condition_number(bikes.add_bias(X))
    scaled = bikes.condition_number(bikes.add_bias(standardize(X, X)[0]))
    assert raw > 1e8 and scaled < 20


def test_are_bikes_reproducible_and_in_range():
    X1, y1 = bikes.make_bikes(50, seed=3)
    X2, y2 = bikes.make_bikes(50, seed=3)
    assert np.array_equal(X1, X2) and np.array_equal(y1, y2)
    assert X1[:, 0].min() >= 0 and X1[:, 0].max() <= 20 and (y1 > 0).all()

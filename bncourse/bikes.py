"""The bike-price example of "Why normalize?": linear regression by gradient descent.

A used bike's price is estimated from its age (0-20 years) and kilometres driven (0 to a few
hundred thousand). The two features live on scales 10^4 apart, and that alone decides how fast,
and whether, gradient descent converges. Everything here is plain numpy and deterministic.

Shapes: X (N, D) features, Xb (N, D + 1) features with a leading column of ones, w (D + 1,).
Loss: L(w) = mean((Xb @ w - y) ** 2), whose Hessian is H = 2 Xb^T Xb / N; gradient descent with
learning rate lr converges if and only if lr < 2 / lambda_max(H).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

FEATURES = ("age (years)", "km driven")


def make_bikes(n: int = 200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n synthetic used bikes: X (n, 2) = [age in years, km driven], y (n,) price in euros.

    Older bikes have been ridden further, so the two features are correlated, as in real listings.
    """
    if n < 2:
        raise ValueError(f"expected at least 2 bikes, got n={n}")
    rng = np.random.default_rng(seed)
    age = rng.uniform(0, 20, size=n)
    km = age * rng.uniform(2_000, 15_000, size=n) + rng.uniform(0, 5_000, size=n)
    price = 2_500 - 60 * age - 0.004 * km + rng.normal(0, 100, size=n)
    return np.stack([age, km], axis=1), np.maximum(price, 50.0)


def split(X: np.ndarray, y: np.ndarray, test_fraction: float = 0.25, seed: int = 0):
    """Shuffle and split into (X_train, X_test, y_train, y_test)."""
    idx = np.random.default_rng(seed).permutation(len(X))
    n_test = max(1, int(round(test_fraction * len(X))))
    test, train = idx[:n_test], idx[n_test:]
    return X[train], X[test], y[train], y[test]


def add_bias(X: np.ndarray) -> np.ndarray:
    """X (N, D) -> Xb (N, D + 1) with a first column of ones (the intercept)."""
    return np.concatenate([np.ones((len(X), 1)), np.asarray(X, dtype=np.float64)], axis=1)


def mse(w: np.ndarray, Xb: np.ndarray, y: np.ndarray) -> float:
    """Mean squared error of the linear model Xb @ w."""
    r = Xb @ w - y
    return float(r @ r / len(y))


def hessian(Xb: np.ndarray) -> np.ndarray:
    """(D + 1, D + 1) Hessian 2 Xb^T Xb / N of the mean squared error (constant in w)."""
    return 2.0 * Xb.T @ Xb / len(Xb)


def largest_stable_lr(Xb: np.ndarray) -> float:
    """2 / lambda_max(H): any larger learning rate makes gradient descent diverge."""
    return 2.0 / float(np.linalg.eigvalsh(hessian(Xb))[-1])


def condition_number(Xb: np.ndarray) -> float:
    """lambda_max / lambda_min of the Hessian: roughly how many steps gradient descent needs."""
    ev = np.linalg.eigvalsh(hessian(Xb))
    return float(ev[-1] / max(ev[0], np.finfo(float).tiny))


def least_squares(Xb: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The exact minimizer of the loss, w* (D + 1,)."""
    return np.linalg.lstsq(Xb, y, rcond=None)[0]


class DescentRun(NamedTuple):
    """weights (steps + 1, D + 1) and losses (steps + 1,) along a gradient-descent run."""

    weights: np.ndarray
    losses: np.ndarray


def gradient_descent(Xb: np.ndarray, y: np.ndarray, lr: float, steps: int, w0: np.ndarray | None = None) -> DescentRun:
    """Full-batch gradient descent on the mean squared error, starting from w0 (default zeros).

    Stops early (filling the rest with inf) once the loss overflows, so a diverging run is cheap.
    """
    w = np.zeros(Xb.shape[1]) if w0 is None else np.array(w0, dtype=np.float64)
    weights = np.full((steps + 1, len(w)), np.inf)
    losses = np.full(steps + 1, np.inf)
    n = len(y)
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(steps + 1):
            r = Xb @ w - y
            loss = r @ r / n
            weights[t], losses[t] = w, loss
            if not np.isfinite(loss) or loss > 1e30:
                break
            w = w - lr * (2.0 / n) * (Xb.T @ r)
    return DescentRun(weights, losses)


def steps_to_reach(losses: np.ndarray, target: float) -> int | None:
    """First step whose loss is at or below ``target``; None if the run never gets there."""
    hit = np.flatnonzero(losses <= target)
    return int(hit[0]) if hit.size else None


def loss_surface(Xb: np.ndarray, y: np.ndarray, center: np.ndarray, i: int, j: int, span_i: float, span_j: float, num: int = 121):
    """Loss on a grid over weights i and j around ``center`` (others fixed): (Wi, Wj, L), each (num, num)."""
    wi = center[i] + np.linspace(-span_i, span_i, num)
    wj = center[j] + np.linspace(-span_j, span_j, num)
    Wi, Wj = np.meshgrid(wi, wj)
    W = np.repeat(center[None, :], Wi.size, axis=0)
    W[:, i], W[:, j] = Wi.ravel(), Wj.ravel()
    R = W @ Xb.T - y
    return Wi, Wj, (R * R).mean(axis=1).reshape(Wi.shape)

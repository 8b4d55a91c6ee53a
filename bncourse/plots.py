"""Plotting helpers for training histories: curves, percentile bands, sweeps, side by side.

All functions draw on a matplotlib ``Axes`` (made for you when ``ax=None``) and return it, so
notebooks can compose figures:

    fig, axes = side_by_side(3, titles=["test accuracy", "without BN", "with BN"])
    plot_curves([h_plain, h_bn], "test_acc", ax=axes[0])
    plot_percentile_bands(h_plain.eval_steps, percentile_bands(h_plain.records), ax=axes[1])
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

PERCENTILES = (15, 50, 85)  # the three lines of Ioffe & Szegedy's Figure 1(b, c)


def _axes(ax):
    if ax is None:
        import matplotlib.pyplot as plt

        _, ax = plt.subplots(figsize=(5, 3.5))
    return ax


def side_by_side(n: int, titles: Sequence[str] | None = None, width: float = 4.5, height: float = 3.5,
                 sharey: bool = False):
    """A figure with ``n`` axes in a row: (fig, axes list)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, n, figsize=(width * n, height), sharey=sharey, squeeze=False)
    axes = list(axes[0])
    for ax, title in zip(axes, titles or []):
        ax.set_title(title)
    fig.tight_layout()
    return fig, axes


def smooth(values: Sequence[float], window: int) -> np.ndarray:
    """Moving average over ``window`` points (trailing; the first points average what exists)."""
    v = np.asarray(values, dtype=np.float64)
    if window <= 1 or len(v) == 0:
        return v
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


_METRICS = {
    "test_acc": ("eval_steps", "test accuracy"),
    "test_loss": ("eval_steps", "test loss"),
    "train_loss": ("steps", "training loss"),
    "train_acc": ("steps", "training batch accuracy"),
    "epoch_test_acc": (None, "test accuracy"),
    "epoch_train_loss": (None, "training loss"),
    "epoch_train_acc": (None, "training accuracy"),
    "epoch_test_loss": (None, "test loss"),
}


def plot_curves(histories, metric: str = "test_acc", ax=None, labels: Sequence[str] | None = None,
                window: int = 1, logy: bool = False, **line_kw):
    """One line per history: ``metric`` against steps (or epochs for ``epoch_*`` metrics).

    ``histories`` is a History or a list of them; ``labels`` default to each history's label;
    ``window`` smooths per-step metrics with a moving average.
    """
    if metric not in _METRICS:
        raise ValueError(f"metric must be one of {sorted(_METRICS)}, got {metric!r}")
    ax = _axes(ax)
    histories = histories if isinstance(histories, (list, tuple)) else [histories]
    labels = labels or [h.label for h in histories]
    x_attr, y_label = _METRICS[metric]
    for h, label in zip(histories, labels):
        y = getattr(h, metric)
        x = np.arange(1, len(y) + 1) if x_attr is None else getattr(h, x_attr)
        ax.plot(x, smooth(y, window), label=label or None, **line_kw)
    ax.set_xlabel("epoch" if x_attr is None else "training step")
    ax.set_ylabel(y_label)
    if logy:
        ax.set_yscale("log")
    if any(labels):
        ax.legend()
    ax.grid(alpha=0.3)
    return ax


def percentile_bands(records, q: Sequence[float] = PERCENTILES) -> np.ndarray:
    """(T, len(q)) percentiles of each recorded (N,) vector: row t is ``np.percentile(records[t], q)``.

    ``records`` is (T, N) (numbers, or a list of T tensors/arrays of N values each).
    """
    rows = [np.asarray(r.detach().cpu() if hasattr(r, "detach") else r, dtype=np.float64).ravel() for r in records]
    if not rows:
        return np.zeros((0, len(q)))
    return np.percentile(np.stack(rows), q, axis=1).T


def plot_percentile_bands(steps: Sequence[int], bands: np.ndarray, ax=None, q: Sequence[float] = PERCENTILES,
                          color: str = "C0", title: str | None = None, ylim=None):
    """The paper's Figure 1(b, c): the median as a solid line, the other percentiles dashed, shaded between.

    bands: (T, 3) from ``percentile_bands``; steps: the T training steps they were recorded at.
    """
    ax = _axes(ax)
    bands = np.asarray(bands)
    steps = np.asarray(steps)
    mid = len(q) // 2
    ax.fill_between(steps, bands[:, 0], bands[:, -1], color=color, alpha=0.15)
    for j, p in enumerate(q):
        ax.plot(steps, bands[:, j], color=color, ls="-" if j == mid else "--", lw=2 if j == mid else 1,
                label=f"{p:g}th percentile")
    ax.set_xlabel("training step")
    ax.set_ylabel("sigmoid input")
    if title:
        ax.set_title(title)
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return ax


def plot_sweep(xs: Sequence[float], results: Mapping[str, Sequence[float]], ax=None, xlabel: str = "",
               ylabel: str = "final test accuracy", logx: bool = True, chance: float | None = None):
    """One line with markers per entry of ``results`` (label -> one value per x), e.g. accuracy vs lr."""
    ax = _axes(ax)
    for label, ys in results.items():
        ax.plot(xs, ys, marker="o", label=label)
    if chance is not None:
        ax.axhline(chance, color="gray", ls=":", label="chance")
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend()
    ax.grid(alpha=0.3)
    return ax

"""MNIST-1D (Greydanus & Kobak 2024) as a ``Task``: a data set on which architectures differ.

The harder 8x8 digits serve where a plain MLP is compared with itself (they keep a good MLP near
85%, below saturation). Where a CNN is compared with an MLP they do not: on 64 pixels both reach
similar accuracies. MNIST-1D was made for this: 40-sample 1D signals of the ten digit templates,
shifted, scaled, sheared and noised, generated offline by the ``mnist1d`` package in seconds; the
paper reports about 68% for an MLP and 94% for a CNN. The 4,000 training signals are split into
training and validation (``n_val``, drawn from the seed); the 1,000 test signals stay the test set.

The generated arrays are cached under the course's data cache (``bncourse.data.data_root()`` /
``mnist1d``), so a second run, or a run without the package, reads them from disk.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bncourse.experiments.common import Task, he_init

CACHE_NAME = "mnist1d_default_args.npz"


def cache_path() -> Path:
    from bncourse.data import data_root

    return data_root() / "mnist1d" / CACHE_NAME


@functools.lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x (4000, 40), y, x_test (1000, 40), y_test): the package's default data set, cached on disk."""
    path = cache_path()
    if path.exists():
        z = np.load(path)
        return z["x"], z["y"], z["x_test"], z["y_test"]
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as err:
        raise ImportError(f"MNIST-1D is neither cached at {path} nor can it be generated: pip install mnist1d "
                          f"({err})") from None
    d = make_dataset(get_dataset_args())
    arrays = (np.asarray(d["x"], np.float32), np.asarray(d["y"], np.int64), np.asarray(d["x_test"], np.float32),
              np.asarray(d["y_test"], np.int64))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, x=arrays[0], y=arrays[1], x_test=arrays[2], y_test=arrays[3])
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache: generate again next time
    return arrays


def mnist1d(seed: int = 0, n_val: int = 500) -> Task:
    """MNIST-1D: inputs (N, 40) standardized with the training statistics; ``n_val`` validation signals.

    ``Task.signals()`` gives (N, 1, 40) for 1D CNNs.
    """
    x, y, xt, yt = _arrays()
    order = np.random.default_rng([seed, 1_000_003]).permutation(len(y))
    val, train = order[:n_val], order[n_val:]
    mean, std = x[train].mean(), x[train].std() + 1e-6
    t = lambda a: torch.from_numpy(((a - mean) / std).astype(np.float32))  # noqa: E731
    return Task(t(x[train]), torch.from_numpy(y[train]), t(x[val]), torch.from_numpy(y[val]), t(xt),
                torch.from_numpy(yt), note=f"MNIST-1D (Greydanus & Kobak 2024): {len(train)} train, {n_val} validation, "
                                           f"{len(yt)} test signals of length 40")


def signals(task: Task) -> Task:
    """The same task with inputs as (N, 1, L) signals (for ``cnn1d``)."""
    r = lambda X: X.reshape(len(X), 1, -1)  # noqa: E731
    return Task(r(task.X_train), task.y_train, r(task.X_val), task.y_val, r(task.X_test), task.y_test, task.note)


def cnn1d(norm: str = "none", channels: int = 32, num_classes: int = 10) -> nn.Sequential:
    """MNIST-1D's CNN (three Conv1d layers of ``channels``, kernel 3, stride 2 after the first, ReLU),
    [BatchNorm1d per channel, over the batch and the positions] before each ReLU, global mean, Linear.
    He-initialized. Shape: (N, 1, 40) -> (N, num_classes)."""
    if norm not in ("none", "batch"):
        raise ValueError(f"norm must be 'none' or 'batch', got {norm!r}")
    layers: list[nn.Module] = []
    c = 1
    for i in range(3):
        layers.append(nn.Conv1d(c, channels, 3, stride=1 if i == 0 else 2, padding=1))
        if norm == "batch":
            layers.append(nn.BatchNorm1d(channels))
        layers.append(nn.ReLU())
        c = channels
    layers += [nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(c, num_classes)]
    return he_init(nn.Sequential(*layers))

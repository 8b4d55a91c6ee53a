"""What the claim experiments share: a harder digits task, an MLP builder, a compact training loop
and a learning-rate search per arm.

- ``harder_digits(seed)``: scikit-learn's 8x8 digits made harder *offline*, because the clean set
  saturates (97-99% for almost any network, so arms cannot be told apart): every image gets
  Gaussian pixel noise (std 0.3 of the [0, 1] pixel range: a good MLP then scores about 85%, not
  97%) and, optionally, random shifts; the split into train / validation / test is drawn from
  the seed. Flattened features (N, 64), standardized with the training statistics.
- ``mlp(...)``: Linear -> [norm] -> activation -> [dropout] blocks (norm "before" the activation,
  the paper's choice, or "after"), He or Gaussian initialization.
- ``fit(model, task, ...)``: plain mini-batch SGD (momentum optional) on tensors in memory, no
  progress bar, stops early when the loss diverges; returns a ``Fit`` with eval-mode accuracies.
- ``tune_lr(...)``: each arm at its own best learning rate, chosen on the *validation* split (the
  ``on=Split.VAL`` argument; ``Split.TEST`` is refused), the grid extended while the best rate is
  at its edge, and the result marked *censored* when it stays there.

Everything runs on the CPU in seconds at the fast sizes.
"""

from __future__ import annotations

import enum
import functools
import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


class Split(enum.Enum):
    """Which part of a ``Task``: choices (learning rates, targets) are made on TRAIN or VAL, never TEST."""

    TRAIN = "train"
    VAL = "val"
    TEST = "test"


class TuningOnTestError(ValueError):
    """A choice (tuning) was asked to look at the test split."""


@dataclass
class Task:
    """A classification task as tensors: X_* (N, D) float32 (or (N, C, H, W)), y_* (N,) int64."""

    X_train: torch.Tensor
    y_train: torch.Tensor
    X_val: torch.Tensor
    y_val: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    note: str = ""

    @property
    def num_features(self) -> int:
        return int(np.prod(self.X_train.shape[1:]))

    @property
    def num_classes(self) -> int:
        return int(self.y_train.max().item()) + 1

    def split(self, which: Split) -> tuple[torch.Tensor, torch.Tensor]:
        """(X, y) of one split."""
        return {Split.TRAIN: (self.X_train, self.y_train), Split.VAL: (self.X_val, self.y_val),
                Split.TEST: (self.X_test, self.y_test)}[Split(which)]

    def images(self) -> "Task":
        """The same task with inputs as (N, 1, 8, 8) images (for CNNs)."""
        r = lambda X: X.reshape(len(X), 1, 8, 8)  # noqa: E731
        return Task(r(self.X_train), self.y_train, r(self.X_val), self.y_val, r(self.X_test), self.y_test, self.note)


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images.astype(np.float32) / 16.0, bunch.target.astype(np.int64)


def _shift(images: np.ndarray, rng: np.random.Generator, max_shift: int) -> np.ndarray:
    """Each (8, 8) image moved by up to ``max_shift`` pixels in x and y, zeros shifted in."""
    out = np.zeros_like(images)
    n, h, w = images.shape
    p = max_shift
    padded = np.zeros((n, h + 2 * p, w + 2 * p), images.dtype)
    padded[:, p:p + h, p:p + w] = images
    dy = rng.integers(-p, p + 1, n)
    dx = rng.integers(-p, p + 1, n)
    for i in range(n):
        out[i] = padded[i, p + dy[i]:p + dy[i] + h, p + dx[i]:p + dx[i] + w]
    return out


def harder_digits(seed: int = 0, noise: float = 0.3, max_shift: int = 0, n_train: int | None = None,
                  n_val: int = 300, n_test: int = 500) -> Task:
    """Digits made harder offline: shifts of up to ``max_shift`` pixels and N(0, noise^2) pixel noise.

    Pixels are in [0, 1] before the noise. The 1797 images are split at random (from ``seed``) into
    ``n_test`` test, ``n_val`` validation and the rest (or ``n_train``) training images; the
    corruption is drawn once per image from the same seed. Inputs (N, 64), standardized per feature
    with the training set's mean and std.
    """
    images, labels = _digits()
    rng = np.random.default_rng([seed, 7919])
    X = _shift(images, rng, max_shift) if max_shift else images.copy()
    X = X + noise * rng.standard_normal(X.shape).astype(np.float32)
    order = rng.permutation(len(labels))
    test, val, rest = order[:n_test], order[n_test:n_test + n_val], order[n_test + n_val:]
    train = rest if n_train is None else rest[:n_train]
    flat = X.reshape(len(X), -1)
    mean, std = flat[train].mean(0), flat[train].std(0) + 1e-6
    t = lambda idx: torch.from_numpy((flat[idx] - mean) / std)  # noqa: E731
    lab = lambda idx: torch.from_numpy(labels[idx])  # noqa: E731
    note = (f"digits made harder offline: shifts up to {max_shift} px, pixel noise std {noise}; "
            f"{len(train)} train, {len(val)} validation, {len(test)} test")
    return Task(t(train), lab(train), t(val), lab(val), t(test), lab(test), note)


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


ACTIVATIONS = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


def mlp(in_features: int, num_classes: int, hidden: int = 64, depth: int = 3, act: str = "relu",
        norm: str | None = None, position: str = "before", dropout: float = 0.0,
        init: str | float = "he") -> nn.Sequential:
    """An MLP of ``depth`` hidden layers: Linear -> [norm] -> act -> [Dropout] (``position="before"``)
    or Linear -> act -> [norm] -> [Dropout] (``"after"``), then a Linear head.

    Args:
        norm: None, "batch" (``nn.BatchNorm1d``) or "layer" (``nn.LayerNorm``).
        init: "he" (N(0, 2/fan_in), for ReLU), "xavier" (N(0, 1/fan_in)) or a number: N(0, init^2).

    Shape: input (N, D) with D = ``in_features`` (images are flattened); output (N, num_classes).
    """
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {sorted(ACTIVATIONS)}, got {act!r}")
    if norm not in (None, "batch", "layer"):
        raise ValueError(f"norm must be None, 'batch' or 'layer', got {norm!r}")
    if position not in ("before", "after"):
        raise ValueError(f"position must be 'before' or 'after' (the activation), got {position!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    width = in_features
    for _ in range(depth):
        lin = nn.Linear(width, hidden)
        nrm = nn.BatchNorm1d(hidden) if norm == "batch" else nn.LayerNorm(hidden) if norm == "layer" else None
        block = [lin, nrm, ACTIVATIONS[act]()] if position == "before" else [lin, ACTIVATIONS[act](), nrm]
        layers += [m for m in block if m is not None]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    for m in layers:
        if isinstance(m, nn.Linear):
            fan_in = m.weight.shape[1]
            std = (math.sqrt(2.0 / fan_in) if init == "he" else math.sqrt(1.0 / fan_in) if init == "xavier"
                   else float(init))
            nn.init.normal_(m.weight, 0.0, std)
            nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------


@dataclass
class Fit:
    """What one training run gave. Accuracies in eval mode; ``diverged`` when the loss blew up."""

    lr: float
    train_acc: float
    val_acc: float
    test_acc: float
    diverged: bool
    steps: int
    steps_to_target: float = math.nan  # first evaluation step with test accuracy >= target (nan: never)
    curve: list[tuple[int, float]] = field(default_factory=list)  # (step, test accuracy)
    losses: list[float] = field(default_factory=list)
    val_steps_to_target: float = math.nan  # the same on the validation split (what tuning may look at)
    val_curve: list[tuple[int, float]] = field(default_factory=list)  # (step, validation accuracy)

    @property
    def gap(self) -> float:
        """Train minus test accuracy (eval mode)."""
        return self.train_acc - self.test_acc


@torch.no_grad()
def accuracy(model: nn.Module, X: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Accuracy of ``model`` in eval mode on (X, y); the model's mode is restored."""
    if len(y) == 0:
        return math.nan
    was = model.training
    model.eval()
    try:
        hits = sum((model(X[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum().item()
                   for i in range(0, len(y), batch_size))
    finally:
        model.train(was)
    return hits / len(y)


def fit(model: nn.Module, task: Task, steps: int, lr: float, batch_size: int = 64, momentum: float = 0.9,
        weight_decay: float = 0.0, seed: int = 0, eval_every: int = 0, target: float | None = None,
        record_loss: bool = False, batches: Callable[[torch.Generator], tuple] | None = None) -> Fit:
    """Train ``model`` with SGD on ``task`` for ``steps`` steps of ``batch_size`` examples.

    Data order comes from ``seed``. With ``eval_every`` the test accuracy is measured that often
    (eval mode) and ``steps_to_target`` is the first step at which it reached ``target``. A loss that
    turns NaN or above 1e4 counts as diverged: training stops and the accuracies are chance-level
    predictions of the broken model (measured, not assumed). ``batches(generator)`` may replace the
    shuffled sampler (it returns one (X, y) batch).
    """
    g = torch.Generator().manual_seed(int(seed) + 1_000_003)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = len(task.y_train)
    order = torch.randperm(n, generator=g)
    pos = 0
    diverged = False
    curve: list[tuple[int, float]] = []
    val_curve: list[tuple[int, float]] = []
    losses: list[float] = []
    hit = val_hit = math.nan
    model.train()
    for step in range(1, steps + 1):
        if batches is not None:
            xb, yb = batches(g)
        else:
            if pos + batch_size > n:
                order, pos = torch.randperm(n, generator=g), 0
            idx = order[pos:pos + batch_size]
            pos += batch_size
            xb, yb = task.X_train[idx], task.y_train[idx]
        loss = F.cross_entropy(model(xb), yb)
        if not torch.isfinite(loss) or loss.item() > 1e4:
            diverged = True
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if record_loss:
            losses.append(loss.item())
        if eval_every and step % eval_every == 0:
            acc = accuracy(model, task.X_test, task.y_test)
            vacc = accuracy(model, task.X_val, task.y_val)
            curve.append((step, acc))
            val_curve.append((step, vacc))
            if target is not None and math.isnan(hit) and acc >= target:
                hit = float(step)
            if target is not None and math.isnan(val_hit) and vacc >= target:
                val_hit = float(step)
    ok = lambda X, y: accuracy(model, X, y) if not diverged else chance_of_broken(model, X, y)  # noqa: E731
    return Fit(lr, ok(task.X_train, task.y_train), ok(task.X_val, task.y_val), ok(task.X_test, task.y_test),
               diverged, step, hit, curve, losses, val_hit, val_curve)


def chance_of_broken(model: nn.Module, X: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of a diverged model, NaN outputs counted as wrong."""
    with torch.no_grad():
        model.eval()
        out = model(X)
        model.train()
    good = torch.isfinite(out).all(1)
    return float(((out.argmax(1) == y) & good).float().mean()) if len(y) else math.nan


@dataclass
class Tuning:
    """A learning-rate search: the chosen fit, every fit (in increasing rate) and whether it is censored."""

    best: Fit
    fits: list[Fit]
    censored: str = ""  # why the best rate is still at the edge of the rates tried ("" when it is not)

    def __iter__(self):  # ``best, fits = tune_lr(...)`` still reads as before
        return iter((self.best, self.fits))

    def __getitem__(self, i: int):
        return (self.best, self.fits)[i]


def _key(select: str):
    if select == "steps_to_target":
        return lambda f: (-(f.val_steps_to_target if not math.isnan(f.val_steps_to_target) else math.inf),
                          f.val_acc, -f.lr)
    if select == "val_acc":
        return lambda f: (f.val_acc, -f.lr)
    raise ValueError(f"select must be 'val_acc' or 'steps_to_target', got {select!r}")


def tune_lr(build: Callable[[], nn.Module], task: Task, lrs: Sequence[float], seed: int,
            select: str = "val_acc", on: Split = Split.VAL, extend: int = 2, step: float = 3.0,
            limits: tuple[float, float] = (1e-4, 30.0), **fit_kwargs) -> Tuning:
    """Train a fresh ``build()`` (seeded identically) at every learning rate in ``lrs``; pick on validation.

    ``select="val_acc"`` picks the highest validation accuracy (ties: the smaller rate);
    ``select="steps_to_target"`` the fewest steps to the target on the *validation* split (ties and
    misses: validation accuracy). ``on`` must be ``Split.VAL`` (or ``Split.TRAIN``): a choice made on
    the test split raises ``TuningOnTestError``. While the best rate is the smallest (largest) tried,
    up to ``extend`` more rates ``step`` times smaller (larger) are tried (within ``limits``); a best
    rate still at the edge then makes the tuning ``censored`` (say so in the trial's output:
    ``"censored": tuning.censored``). A flat grid, the same validation accuracy at every rate tried (a
    network that learns at none of them, e.g. a deep sigmoid MLP at chance), is neither extended nor
    censored: its best rate is a tie, not an optimum beyond the edge (whether an arm must learn is the
    ``MustLearn`` guard's question). A rate whose run diverged is never chosen over one that did not.

    Returns a ``Tuning`` (unpacks as ``best, fits``).
    """
    if Split(on) is Split.TEST:
        raise TuningOnTestError("tuning may look at the training or validation split, never the test split "
                             f"(got on={on!r}); evaluate on the test split only after the choice")
    if on is Split.TRAIN and select != "val_acc":
        raise ValueError("on=Split.TRAIN supports select='val_acc' only (reading training accuracy)")
    if not lrs:
        raise ValueError("lrs must hold at least one learning rate")
    key = _key(select)
    if on is Split.TRAIN:
        key = lambda f: (f.train_acc, -f.lr)  # noqa: E731
    ranked = lambda f: (not f.diverged, key(f))  # noqa: E731
    fits: dict[float, Fit] = {}

    def run(lr: float) -> None:
        torch.manual_seed(seed)
        fits[lr] = fit(build(), task, lr=lr, seed=seed, **fit_kwargs)

    for lr in lrs:
        run(float(lr))
    added, censored = 0, ""
    while True:
        order = sorted(fits)
        best = max(fits.values(), key=ranked)
        if len(order) < 2 or order[0] < best.lr < order[-1]:
            break
        if len({round(f.val_acc, 9) for f in fits.values()}) == 1:
            break  # flat: every rate gives the same validation accuracy (no rate learned); an edge means nothing
        new = order[0] / step if best.lr == order[0] else order[-1] * step
        new = float(f"{new:.3g}")
        if added >= extend or not limits[0] <= new <= limits[1]:
            side = "smallest" if best.lr == order[0] else "largest"
            censored = (f"best rate {best.lr:g} is the {side} of those tried ({', '.join(f'{r:g}' for r in order)})"
                        f" after {added} extension(s)")
            break
        run(new)
        added += 1
    return Tuning(max(fits.values(), key=ranked), [fits[r] for r in sorted(fits)], censored)


def he_init(model: nn.Module) -> nn.Module:
    """Kaiming (He) normal initialization of every Conv and Linear weight (fan_in, ReLU), zero biases.

    PyTorch's default (``kaiming_uniform_(a=sqrt(5))``, std 1/sqrt(3 fan_in)) shrinks the signal by
    about sqrt(6) per ReLU layer, so a deep CNN without normalization starts with vanishing outputs
    and may never leave chance; He init keeps the variance. Returns ``model``.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return model


@functools.lru_cache(maxsize=16)
def _trained_cached(seed: int, norm, dropout: float, steps: int) -> tuple[nn.Module, Task]:
    task = harder_digits(seed)
    torch.manual_seed(seed)
    model = mlp(task.num_features, task.num_classes, 64, 3, "relu", norm=norm, dropout=dropout)
    fit(model, task, steps, lr=0.1, batch_size=32, seed=seed)
    return model, task


def trained_mlp(seed: int, norm: str | None = "batch", dropout: float = 0.0, steps: int | None = None):
    """(a copy of) a ReLU MLP 64-64-64-64-10 trained on the harder digits, and its task.

    SGD lr 0.1, momentum 0.9, batch 32, ``steps`` steps (300 in fast mode, 1000 otherwise). Trained
    once per (seed, norm, dropout, steps) in a process and cached; each call returns a fresh copy.
    """
    import copy

    from bncourse.runtime import pick

    steps = steps if steps is not None else pick(fast=300, full=1000, grading=150)
    model, task = _trained_cached(int(seed), norm, float(dropout), int(steps))
    return copy.deepcopy(model), task

"""Small batches, fairly: batch, group, layer and no normalization at batch sizes 2 to 128.

Wu & He (2018) found that batch norm's ImageNet error grows at small batches (ResNet-50, 23.6%
at 32 images per GPU, 34.7% at 2) while group norm's stays near 24%. This module puts that claim
to a small CNN (``bncourse.models.SmallCNN``, widths 16 and 32, He initialization)
on digits made harder offline (``common.harder_digits``: one-pixel shifts and pixel noise std 0.3,
which keeps the CNN near 75% instead of the clean digits' 98-99%), with a train / validation /
test split that stays fixed while the seeds change the initialization and the data order.

Two training budgets, because "the same training" has two meanings when the batch size changes:

* ``"fixed epochs"``: every batch size sees the same number of examples (``epochs`` passes), so a
  batch of 2 takes 64 times the optimizer steps of a batch of 128 (Wu & He's protocol);
* ``"fixed steps"``: every batch size takes the same number of optimizer steps, so the large
  batches see more examples; the amount of updating is the same, only the batch differs.

Fair learning rates: each (normalization, batch size) arm gets its own rate, chosen by validation
accuracy (``common.tune_lr``) on a tuning seed that is not one of the verdict seeds, starting from
a small grid (factors 3 apart around the linear scaling rule ``base_lr * B / 32``, Wu & He's);
when the best rate is the smallest or the largest tried, the search goes one factor-3 step further
that way and tries again (``tune_until_interior``), until the best rate has a worse one on each
side or a stated limit stops it (the number of extensions, or the rate bounds ``LR_LIMITS``).
The verdict seeds then train at the chosen rate and are scored on the test split. The choices are
data: ``SmallBatchRun.tuning`` (every rate tried and its validation accuracy) and ``.lrs()``.

The decision rule, fixed in ``run_small_batches`` before the run, compares the accuracy lost from
the reference batch (32, Wu & He's) to the smallest one (the ``drop``), per seed:
batch norm loses more than 2 points, group norm at most 2, and batch norm's drop exceeds group
norm's by more than 2 points (the difference of differences cancels what the budget does to every
normalization alike). Each by more than 2 seed-to-seed spreads.

The CNNs are tiny, so the runs use one torch thread (faster on a busy CPU; restored afterwards).
"""

from __future__ import annotations

import html
import math
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from bncourse.experiments.common import Task, fit, harder_digits, tune_lr
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import AtLeast, AtMost, Better
from bncourse.experiments.seed_summary import Summary
from bncourse.models import SmallCNN

__all__ = ["WU_HE_2018", "VARIANTS", "small_batch_task", "steps_per_batch", "lr_grid", "LRChoice",
           "LR_LIMITS", "tune_until_interior", "SmallBatchRun", "run_small_batches", "one_torch_thread"]

# Wu & He 2018 (Group Normalization), ResNet-50 on ImageNet, top-1 validation error (%) against
# images per GPU (8 GPUs), Figure 1 / Table 3.
WU_HE_2018 = {
    "batch norm": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
    "group norm": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1},
}

VARIANTS = ("fixed epochs", "fixed steps")
_NAMES = {"fixed epochs": "small-batches", "fixed steps": "small-batches-fixed-steps"}
CLAIM = "group norm's accuracy is stable across batch sizes while batch norm's drops at small batches (Wu & He 2018)"


def small_batch_task(n_train: int | None = None, noise: float = 0.3, max_shift: int = 1) -> Task:
    """The harder digits as (N, 1, 8, 8) images with a fixed train / validation / test split (seed 0)."""
    return harder_digits(0, noise=noise, max_shift=max_shift, n_train=n_train).images()


def steps_per_batch(variant: str, batch_sizes: Sequence[int], n_train: int, epochs: float = 1.0,
                    steps: int = 100) -> dict[int, int]:
    """Optimizer steps for each batch size: ``ceil(epochs * n_train / B)`` ("fixed epochs") or
    ``steps`` for every B ("fixed steps")."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if variant == "fixed steps":
        return {int(b): int(steps) for b in batch_sizes}
    return {int(b): max(1, math.ceil(epochs * n_train / b)) for b in batch_sizes}


def lr_grid(batch_size: int, base_lr: float = 0.05, factors: Sequence[float] = (1 / 3, 1.0, 3.0)) -> tuple[float, ...]:
    """The rates tried for one batch size: ``base_lr * B / 32 * factor`` for each factor."""
    center = base_lr * batch_size / 32
    return tuple(float(f"{center * f:.3g}") for f in factors)


# Hard bounds of the learning-rate search (SGD with momentum 0.9 on these CNNs): the search never
# goes below the first or above the second; a best rate at a bound is reported as at the edge.
LR_LIMITS = (1e-5, 1.0)


def _best(tried: dict[float, float]) -> float:
    """The rate with the highest score; ties go to the smaller rate (as ``common.tune_lr``)."""
    return max(tried, key=lambda lr: (tried[lr], -lr))


def tune_until_interior(score: Callable[[float], float], grid: Sequence[float], step: float = 3.0,
                        max_extensions: int = 4, limits: tuple[float, float] = LR_LIMITS
                        ) -> tuple[dict[float, float], float, str | None]:
    """Score every rate of ``grid``; while the best is the smallest (largest) rate tried, score one
    more rate ``step`` times smaller (larger) and look again.

    ``score(lr)`` is called once per rate (higher is better). Stops when the best rate has a tried
    rate on each side, or at a limit: ``max_extensions`` new rates, or a new rate outside ``limits``.
    Returns ({rate: score} of every rate tried, in increasing rate; the best rate; None or the
    limit that stopped the search with the best rate still at the edge).
    """
    if not grid:
        raise ValueError("grid must hold at least one learning rate, got an empty grid")
    if step <= 1:
        raise ValueError(f"step must be > 1, got {step!r}")
    lo, hi = limits
    tried = {float(lr): float(score(float(lr))) for lr in grid}
    extensions = 0
    while True:
        lrs = sorted(tried)
        best = _best(tried)
        if best == lrs[0]:
            new = float(f"{lrs[0] / step:.3g}")
            if new < lo:
                return dict(sorted(tried.items())), best, f"lower bound {lo:g}"
        elif best == lrs[-1]:
            new = float(f"{lrs[-1] * step:.3g}")
            if new > hi:
                return dict(sorted(tried.items())), best, f"upper bound {hi:g}"
        else:
            return dict(sorted(tried.items())), best, None
        if extensions >= max_extensions:
            return dict(sorted(tried.items())), best, f"{max_extensions} extensions"
        tried[new] = float(score(new))
        extensions += 1


@dataclass(frozen=True)
class LRChoice:
    """The learning rate chosen for one arm: every rate tried with its validation accuracy, and the best."""

    norm: str
    batch_size: int
    steps: int
    grid: tuple[float, ...]  # every rate tried, increasing: the first grid and its extensions
    val_acc: tuple[float, ...]  # one per rate tried (tuning seed, validation split)
    lr: float
    limit: str | None = None  # what stopped the search with the best rate at the edge, if anything

    @property
    def at_edge(self) -> bool:
        """True when the best rate is the smallest or largest tried (the optimum may lie outside);
        after ``tune_until_interior`` only when a limit (``.limit``) stopped the search."""
        return len(self.grid) > 1 and self.lr in (min(self.grid), max(self.grid))


@dataclass
class SmallBatchRun:
    """One budget's experiment: the tuned rates, the optimizer steps per batch size, the verdict."""

    variant: str
    steps: dict[int, int]  # batch size -> optimizer steps of every arm at that size
    tuning: list[LRChoice]
    tuning_seed: int
    result: ExperimentResult
    batch_sizes: tuple[int, ...] = field(default=())

    @property
    def verdict(self) -> str:
        return self.result.verdict

    def lrs(self) -> dict[str, dict[int, float]]:
        """{norm: {batch size: chosen learning rate}}."""
        out: dict[str, dict[int, float]] = {}
        for c in self.tuning:
            out.setdefault(c.norm, {})[c.batch_size] = c.lr
        return out

    def accuracy_table(self) -> dict[str, dict[int, Summary]]:
        """{norm: {batch size: Summary of the test accuracy over the verdict seeds}}."""
        return {arm: {b: self.result.summary(arm, f"test_acc@{b}") for b in self.batch_sizes} for arm in self.result.arms}

    def __str__(self) -> str:
        lines = [str(self.result), f"  tuned learning rates (tuning seed {self.tuning_seed}, validation split):"]
        for c in self.tuning:
            grid = ", ".join(f"{lr:g}: {acc:.1%}" for lr, acc in zip(c.grid, c.val_acc))
            edge = f" (edge of the rates tried; stopped by: {c.limit or 'the grid'})" if c.at_edge else ""
            lines.append(f"    {c.norm}@{c.batch_size} ({c.steps} steps): {c.lr:g}{edge}  [{grid}]")
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        e = html.escape
        norms = list(self.lrs())
        head = "".join(f"<th>B = {b} ({self.steps[b]} steps)</th>" for b in self.batch_sizes)
        rows = "".join(
            f"<tr><td style='text-align:left'><b>{e(n)}</b></td>"
            + "".join(f"<td title='validation accuracy per rate tried: {e(', '.join(f'{lr:g}: {a:.1%}' for lr, a in zip(c.grid, c.val_acc)))}'>"
                      f"{c.lr:g}{' *' if c.at_edge else ''}</td>"
                      for b in self.batch_sizes for c in self.tuning if c.norm == n and c.batch_size == b)
            + "</tr>" for n in norms)
        return (self.result._repr_html_()
                + f"<p><b>Tuned learning rates</b> ({e(self.variant)}; tuning seed {self.tuning_seed}, chosen by "
                  f"validation accuracy, the grid extended by factors of 3 while the best rate was at its edge; "
                  f"* = still at the edge of the rates tried, stopped by a limit; hover for every rate tried)</p>"
                  f"<table><tr><th>norm</th>{head}</tr>{rows}</table>")


@contextmanager
def one_torch_thread():
    """Run the block with one torch CPU thread (tiny models: faster, and no waiting on busy cores)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _build(norm: str):
    """SmallCNN (widths 16, 32) with He initialization (``common.he_init``), so every normalization, none
    included, starts with signals of a healthy size."""
    from bncourse.experiments.common import he_init

    return lambda: he_init(SmallCNN(in_channels=1, num_classes=10, widths=(16, 32), norm=norm))


def _trial(config: dict, seed: int) -> dict:
    """config: task, norm, steps {B: steps}, lrs {B: lr}, small, reference -> test_acc@B per B, drop."""
    task: Task = config["task"]
    out: dict = {}
    ran: dict[int, int] = {}
    for b, steps in config["steps"].items():
        torch.manual_seed(seed)
        f = fit(_build(config["norm"])(), task, steps=steps, lr=config["lrs"][b], batch_size=b, momentum=0.9, seed=seed)
        out[f"test_acc@{b}"] = f.test_acc
        ran[b] = f.steps
    out["drop"] = out[f"test_acc@{config['reference']}"] - out[f"test_acc@{config['small']}"]
    out["steps_run"] = ran  # an artifact: the optimizer steps each batch size actually took
    return out


def run_small_batches(task: Task, variant: str = "fixed epochs", batch_sizes: Sequence[int] = (2, 32),
                      norms: Sequence[str] = ("batch", "group"), epochs: float = 1.0, steps: int = 100,
                      lr_factors: Sequence[float] = (1 / 3, 1.0, 3.0), base_lr: float = 0.05,
                      reference_batch: int = 32, seeds=None, tuning_seed: int | None = None,
                      max_extensions: int = 4, progress: bool = True) -> SmallBatchRun:
    """Accuracy against batch size per normalization, each arm at its own tuned learning rate.

    Args:
        task: images (N, 1, H, W) with a validation split, e.g. ``small_batch_task()``.
        variant: "fixed epochs" (``epochs`` passes over the training set at every batch size) or
            "fixed steps" (``steps`` optimizer steps at every batch size).
        lr_factors: the first grid, as factors of ``base_lr * B / 32`` (the linear scaling rule).
        max_extensions: how many rates (a factor 3 beyond the edge each) the search may add per arm
            while the best rate is at the edge of those tried (``tune_until_interior``; 0: the grid only).
        reference_batch: the batch the smallest one is compared with (32: Wu & He's).
        seeds: the verdict seeds (default: ``default_seeds()``, 3 fast / 5 full).
        tuning_seed: the seed of the tuning runs (default 1000 + the first verdict seed: never a
            verdict seed); the rate is picked on the validation split, the verdict read on the test split.

    Decision rule, fixed here before the run, on ``drop`` = test accuracy at ``reference_batch``
    minus at the smallest batch, paired by seed: batch norm's drop is at least 2 points, group
    norm's at most 2 points, and batch norm's exceeds group norm's by more than 2 points; each by
    more than 2 seed-to-seed spreads. Held if all three hold, contradicted if any reverses.
    """
    from bncourse.experiments.harness import default_seeds

    batch_sizes = tuple(sorted(int(b) for b in batch_sizes))
    small = batch_sizes[0]
    if reference_batch not in batch_sizes or reference_batch == small:
        raise ValueError(f"reference_batch must be one of the batch sizes and larger than the smallest; "
                         f"got {reference_batch} with batch sizes {batch_sizes}")
    if not {"batch", "group"} <= set(norms):
        raise ValueError(f"norms must include 'batch' and 'group' (the claim compares them), got {tuple(norms)}")
    if task.X_train.ndim != 4:
        raise ValueError(f"expected image inputs (N, C, H, W), got X_train of shape {tuple(task.X_train.shape)}")
    seed_list = list(seeds) if seeds is not None else default_seeds()
    tuning_seed = 1000 + seed_list[0] if tuning_seed is None else int(tuning_seed)
    if tuning_seed in seed_list:
        raise ValueError(f"the tuning seed {tuning_seed} must not be a verdict seed ({seed_list})")
    n_steps = steps_per_batch(variant, batch_sizes, len(task.y_train), epochs, steps)
    rules = [AtLeast("drop", "batch", 0.02), AtMost("drop", "group", 0.02),
             Better("drop", "group", "batch", higher_is_better=False, floor=0.02)]
    with one_torch_thread():
        tuning = []
        for norm in norms:
            for b in batch_sizes:
                def score(lr: float, norm=norm, b=b) -> float:
                    best, _ = tune_lr(_build(norm), task, [lr], tuning_seed, select="val_acc",
                                      steps=n_steps[b], batch_size=b, momentum=0.9)
                    return best.val_acc

                tried, lr, limit = tune_until_interior(score, lr_grid(b, base_lr, lr_factors),
                                                       max_extensions=max_extensions)
                tuning.append(LRChoice(norm, b, n_steps[b], tuple(tried), tuple(tried.values()), lr, limit))
        lrs = {c.norm: {} for c in tuning}
        for c in tuning:
            lrs[c.norm][c.batch_size] = c.lr
        arms = {n: {"task": task, "norm": n, "steps": n_steps, "lrs": lrs[n], "small": small,
                    "reference": reference_batch} for n in norms}
        what = (f"same number of examples ({epochs:g} epochs)" if variant == "fixed epochs"
                else f"same number of optimizer steps ({steps})")
        result = run_experiment(_NAMES[variant], _trial, arms, rules, seeds=seed_list, progress=progress,
                                claim=f"{CLAIM}; {what} at every batch size, each arm at its own tuned learning rate; "
                                      f"drop = test accuracy at batch {reference_batch} minus at batch {small}")
    return SmallBatchRun(variant, n_steps, tuning, tuning_seed, result, batch_sizes)

"""Notebook 5's experiments: Ioffe & Szegedy's Figure 1 and the two sweeps, over several seeds.

The network is the paper's MNIST MLP (``models.BNPaperMLP``: three hidden layers of 100 sigmoid
units, batch norm optional before each sigmoid, Gaussian initialization), trained with plain SGD
in batches of 60 (the paper's batch size; the paper gives neither the learning rate nor the
initialization's standard deviation for this figure, so those are our choices, passed in).

- ``figure1(data, ...)``: per seed, both networks from the same initial weights; metrics: final
  test accuracy, the first evaluated step at >= 95% test accuracy, and the median over the 100
  last-hidden-layer units of the drift of their 15th/50th/85th-percentile lines after the first 10%
  of training. The per-seed ``History`` (with the recorded sigmoid inputs) is kept as an artifact
  for the plots.
- ``lr_sweep(data, ...)``: final test accuracy at each learning rate; two results from one run: the
  claim that batch norm trains at larger rates, and the orientation figure the course started from
  (the plain network stops learning at every rate >= 0.3).
- ``init_sweep(data, ...)``: final test accuracy at each initialization scale, each network at its
  own learning rate at each scale, chosen on a validation split carved from the training set (the
  last 15%; the test split is read only at the chosen rate), the grid extended once when the best
  rate is at its edge (and the result *censored* if it stays there).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bncourse.experiments.common import Task, fit, tune_lr
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import AtMost, Better, MustLearn

ARMS = {"without BN": {"bn": False}, "with BN": {"bn": True}}
LEARNS = 0.5  # "learns": final test accuracy above 50% (chance is 10%)


def task_of(data, val_fraction: float = 0.0) -> Task:
    """A ``DataSplit`` as a ``Task`` with flattened inputs (N, D); the last ``val_fraction`` of the
    training examples become the validation split (none by default)."""
    X, y = data.X_train.flatten(1), data.y_train
    n_val = int(round(val_fraction * len(y)))
    cut = len(y) - n_val
    return Task(X[:cut], y[:cut], X[cut:], y[cut:], data.X_test.flatten(1), data.y_test,
                note=getattr(data, "note", ""))


def drift(history, units, start_step: float) -> np.ndarray:
    """Per unit: the mean over its 15th/50th/85th-percentile lines of (largest - smallest value)
    from ``start_step`` on; ``history.records`` holds (N, units) sigmoid inputs per evaluation."""
    keep = [i for i, s in enumerate(history.eval_steps) if s >= start_step]
    out = []
    for u in units:
        b = np.percentile(np.stack([history.records[i][:, u].numpy() for i in keep]), [15, 50, 85], axis=1).T
        out.append(float(np.mean(b.max(0) - b.min(0))))
    return np.array(out)


def steps_to(history, target: float) -> float:
    """First evaluated step with test accuracy >= target (nan: never)."""
    hit = [s for s, a in zip(history.eval_steps, history.test_acc) if a >= target]
    return float(hit[0]) if hit else math.nan


def figure1(data, steps: int, eval_every: int, lr: float, init_std: float, n_fixed: int = 300, batch: int = 60,
            seeds=None, progress: bool = True) -> ExperimentResult:
    """Figure 1 of the paper on ``data``, for every seed: accuracy, steps to 95%, percentile drift."""
    from bncourse.models import BNPaperMLP
    from bncourse.train import TrainConfig, train

    x_fixed = data.X_test[:n_fixed]

    def record_sigmoid_inputs(model):
        # (n_fixed, 100): every last-hidden-layer sigmoid's input, for the fixed test images
        return model.forward_with_preact(x_fixed.to(next(model.parameters()).device))[1].float().cpu()

    def trial(config, seed):
        torch.manual_seed(seed)
        model = BNPaperMLP(data.num_features, data.num_classes, batch_norm=config["bn"], init_std=init_std)
        cfg = TrainConfig(steps=steps, batch_size=batch, lr=lr, momentum=0.0, eval_every=eval_every, seed=seed,
                          record=record_sigmoid_inputs, progress=False,
                          label="with BN" if config["bn"] else "without BN")
        h = train(model, data.train, data.test, cfg)
        d = drift(h, range(h.records[0].shape[1]), 0.1 * steps)
        s95 = steps_to(h, 0.95)
        return {"final_test_acc": h.final_test_acc, "steps_to_95": s95 if not math.isnan(s95) else steps + eval_every,
                "median_drift": float(np.median(d)), "history": h}

    floor_acc = max(0.005, 3 / len(data.y_test))  # 3 test images
    rules = [
        Better("final_test_acc", "with BN", "without BN", floor=floor_acc),
        Better("steps_to_95", "with BN", "without BN", higher_is_better=False, floor=eval_every),
        Better("median_drift", "with BN", "without BN", higher_is_better=False),
    ]
    return run_experiment(
        "figure-1", trial, ARMS, rules, seeds=seeds, progress=progress,
        must_learn=MustLearn("final_test_acc", chance=0.1, margin=0.1),
        claim=(f"Figure 1: with batch norm a higher final test accuracy (by more than {floor_acc:.1%}), 95% reached "
               f"sooner (by more than {eval_every} steps), and steadier sigmoid inputs (median percentile drift); "
               f"{steps} steps, lr {lr}, init N(0, {init_std}^2), batch {batch}"))


def _sweep(data, values, build, steps: int, lr_of, batch: int, seed: int):
    task = task_of(data)
    accs = []
    for v in values:
        best = -1.0
        for lr in lr_of(v):
            torch.manual_seed(seed)
            best = max(best, fit(build(v), task, steps, lr=lr, batch_size=batch, momentum=0.0, seed=seed).test_acc)
        accs.append(best)
    return accs


def lr_sweep(data, lrs, steps: int, init_std: float, batch: int = 60, seeds=None,
             progress: bool = True) -> tuple[ExperimentResult, ExperimentResult]:
    """Final test accuracy at each learning rate; (the higher-rates result, the orientation result)."""
    from bncourse.models import BNPaperMLP

    lrs = list(lrs)
    high = [lr for lr in lrs if lr >= 0.3]

    def trial(config, seed):
        build = lambda _: BNPaperMLP(data.num_features, data.num_classes, batch_norm=config["bn"], init_std=init_std)  # noqa: E731
        accs = _sweep(data, lrs, build, steps, lambda lr: [lr], batch, seed)
        learned = [lr for lr, a in zip(lrs, accs) if a > LEARNS]
        return {"log10_largest_lr_that_learns": math.log10(max(learned)) if learned else math.log10(lrs[0]) - 0.5,
                "rates_that_learn": len(learned),
                "share_of_rates_from_0.3_that_learn": float(np.mean([a > LEARNS for lr, a in zip(lrs, accs) if lr >= 0.3])),
                "accuracy": accs}

    higher = run_experiment(
        "lr-sweep", trial, ARMS, [Better("log10_largest_lr_that_learns", "with BN", "without BN", floor=0.25),
                                  Better("rates_that_learn", "with BN", "without BN", floor=0.5)],
        seeds=seeds, progress=progress, must_learn=MustLearn("rates_that_learn", chance=0.0, margin=0.5),
        claim=(f"batch norm trains at larger learning rates: the largest rate of {lrs} at which the network learns "
               f"(> {LEARNS:.0%} test accuracy after {steps} steps) is larger, and it learns at more of them"))
    orientation = ExperimentResult(
        "lr-sweep-orientation", (f"the network without batch norm stops learning at every rate >= 0.3 ({high}): at most "
                                 f"5% of those rates reach {LEARNS:.0%}"),
        higher.arms, higher.seeds, higher.metrics, higher.artifacts,
        [AtMost("share_of_rates_from_0.3_that_learn", "without BN", 0.05)], higher.seconds)
    return higher, orientation


def init_sweep(data, stds, steps: int, lrs, batch: int = 60, seeds=None, progress: bool = True) -> ExperimentResult:
    """Final test accuracy at each initialization scale (each at its best rate of ``lrs``)."""
    from bncourse.models import BNPaperMLP

    stds, lrs = list(stds), list(lrs)

    task = task_of(data, val_fraction=0.15)

    def trial(config, seed):
        accs, chosen, censored = [], [], []
        for s in stds:
            build = lambda s=s: BNPaperMLP(data.num_features, data.num_classes, batch_norm=config["bn"], init_std=s)  # noqa: E731
            tuning = tune_lr(build, task, lrs, seed, steps=steps, batch_size=batch, momentum=0.0, extend=1)
            accs.append(tuning.best.test_acc)
            chosen.append(tuning.best.lr)
            if tuning.censored:
                censored.append(f"init {s:g}: {tuning.censored}")
        return {"acc_range_over_inits": max(accs) - min(accs), "worst_acc": min(accs), "best_acc": max(accs),
                "accuracy": accs, "chosen_lr": chosen, "censored": "; ".join(censored)}

    return run_experiment(
        "init-sweep", trial, ARMS, [Better("acc_range_over_inits", "with BN", "without BN", higher_is_better=False,
                                           floor=0.02)],
        seeds=seeds, progress=progress, must_learn=MustLearn("best_acc", chance=0.1, margin=0.1),
        claim=(f"batch norm makes training less sensitive to the initialization: over init scales {stds} (each at "
               f"its own rate of {lrs}, chosen on a validation split, {steps} steps) the test accuracy varies less "
               f"(range max - min)"))


def per_seed(result: ExperimentResult, metric: str = "accuracy") -> dict[str, np.ndarray]:
    """arm -> (seeds, values) array of a per-seed list artifact (the sweeps' accuracies)."""
    return {a: np.array([art[metric] for art in result.artifacts[a]]) for a in result.arms}

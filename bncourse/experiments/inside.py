"""Inside the network: a deep tanh MLP watched layer by layer, at bad and good inits, with and without BN.

The network (``deep_mlp``): ``depth`` hidden layers Linear -> [BatchNorm1d] -> tanh of ``width``
units, then a Linear head, on the harder digits (``common.harder_digits``: pixel noise, so the
task does not saturate). Hidden weights start N(0, gain^2 / fan_in) for the inits in ``INITS``:

- ``"default"``: PyTorch's own ``nn.Linear`` init (uniform, std 1 / sqrt(3 fan_in): gain 0.58),
  what a network gets when nobody thinks about it; too small for tanh, so activations shrink
  layer by layer;
- ``"gain 5/3"``: Kaiming's gain for tanh (``nn.init.calculate_gain("tanh")``), the good one;
- ``"gain 3"``: too large: pre-activations far beyond +-2, tanh saturated.

The head always starts N(0, 1 / fan_in). Each (norm, init) trains with SGD (momentum 0.9, batch
64) at its own best learning rate from a small grid (chosen on validation accuracy, reported on
the test set) with ``bncourse.diagnostics`` attached, recording every few steps.

Metrics per seed (each arm "no norm" / "batch norm" runs every init on that seed):

- ``grad_layer_spread_<init>``: mean over the recorded steps of |log10(std of the gradient at the
  first tanh / std at the last tanh)|: 0 when every layer receives gradients of the same size,
  1 when they differ tenfold between the first and last layer (vanishing or exploding);
- ``update_ratio_spread_<init>``: over the second half of training, the std across the hidden
  weight matrices of their mean log10 update-to-data ratio (0: every layer learns at the same
  pace);
- ``saturated_at_init_<init>``: mean saturated fraction of the tanh layers at step 0;
- ``test_acc_<init>``, and over the inits ``acc_range_over_inits`` (max - min) and ``worst_acc``;
  ``worst_grad_layer_spread`` and ``worst_update_ratio_spread`` (max over the inits).

Claims (rules fixed here, before any run):

- ``stable-gradients`` (``stable_gradients()``): with batch norm, the worst gradient spread across
  layers is smaller by more than 0.1 (decades) and the worst update-ratio spread is smaller by more
  than 0.05, each beyond 2x the seed-to-seed spread of the paired difference.
- ``init-insensitive`` (``init_insensitive()``): with batch norm the test accuracy varies less over
  the three inits, by more than 2 points and 2x the spread.

Both come from one run (``inside_the_network()``, cached per seeds and size), so asking for both
costs one run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bncourse.diagnostics import Diagnostics, DiagnosticsReport
from bncourse.experiments.common import Task, accuracy, harder_digits, mlp
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import default_seeds, run_experiment
from bncourse.experiments.rules import Better, MustLearn
from bncourse.runtime import fast_mode, grading_mode, pick

INITS = {"default": None, "gain 5/3": 5.0 / 3.0, "gain 3": 3.0}
ARMS = {"no norm": {"batch_norm": False}, "batch norm": {"batch_norm": True}}
DEPTH, WIDTH, BATCH = 10, 64, 64


def deep_mlp(in_features: int, num_classes: int, depth: int = DEPTH, width: int = WIDTH, gain: float | None = 5 / 3,
             batch_norm: bool = False, act: str = "tanh") -> nn.Sequential:
    """Flatten, ``depth`` x (Linear -> [BatchNorm1d] -> act), Linear head: (N, in_features) -> (N, num_classes).

    gain: hidden weights N(0, gain^2 / fan_in); None keeps PyTorch's default ``nn.Linear`` init.
    The head starts N(0, 1 / fan_in), biases at zero (default init: PyTorch's).
    """
    model = mlp(in_features, num_classes, width, depth, act, norm="batch" if batch_norm else None, init="xavier")
    linears = [m for m in model if isinstance(m, nn.Linear)]
    for lin in linears[:-1]:
        if gain is None:
            lin.reset_parameters()
        else:
            nn.init.normal_(lin.weight, 0.0, gain / math.sqrt(lin.weight.shape[1]))
    return model


@dataclass
class Watched:
    """One training run with diagnostics: accuracies, the loss curve and the diagnostics report."""

    lr: float
    val_acc: float
    test_acc: float
    losses: list[float]
    report: DiagnosticsReport
    censored: str = ""  # why the chosen rate is still at the edge of the rates tried ("" when it is not)


def train_and_watch(model: nn.Module, task: Task, steps: int, lr: float, seed: int = 0, every: int = 1,
                    batch_size: int = BATCH, momentum: float = 0.9) -> Watched:
    """Train ``model`` on ``task`` (SGD) with ``Diagnostics`` on its nonlinearities and parameters;
    histograms at the first and the last recorded step."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    losses: list[torch.Tensor] = []
    last = ((steps - 1) // every) * every
    with Diagnostics(model, every=every, histograms_at=(0, last), layers=(nn.Tanh, nn.Sigmoid, nn.ReLU)) as diag:
        model.train()
        for _ in range(steps):
            idx = torch.randint(0, len(task.y_train), (batch_size,), generator=g)
            loss = F.cross_entropy(model(task.X_train[idx]), task.y_train[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        report = diag.report()
    curve = torch.stack(losses).tolist()
    diverged = not all(math.isfinite(v) for v in curve)
    val = 0.0 if diverged else accuracy(model, task.X_val, task.y_val)
    test = 0.0 if diverged else accuracy(model, task.X_test, task.y_test)
    return Watched(lr, val, test, curve, report)


def steps() -> int:
    return pick(fast=100, full=1000, grading=60, cpu=400, what="training steps per run (inside-the-network experiment)")


def learning_rates() -> tuple[float, ...]:
    return pick(fast=(0.03, 0.3), full=(0.01, 0.03, 0.1, 0.3, 1.0), cpu=(0.03, 0.1, 0.3),
                what="learning rates tried (inside-the-network experiment)")


def extensions() -> int:
    """How many rates (a factor 3 beyond the edge, one at a time) a search adds while its best rate is at the edge."""
    return pick(fast=1, full=3)


@lru_cache(maxsize=8)
def _task(seed: int) -> Task:
    return harder_digits(seed)


def watch(init: str, batch_norm: bool, seed: int, lr: float | None = None) -> Watched:
    """Train the deep tanh MLP at ``init`` (a key of ``INITS``) on seed ``seed``'s harder digits.

    lr: None picks the best of ``learning_rates()`` on validation accuracy (each one a full run); a best
    rate at the edge of the grid gets one more rate 3x beyond it (up to ``extensions()`` times), and a best rate still at the edge
    then is reported in ``Watched.censored`` (the harness's *censored* verdict).
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {list(INITS)}, got {init!r}")
    task = _task(seed)
    every = pick(fast=5, full=10)
    runs: dict[float, Watched] = {}

    def run(rate: float) -> None:
        torch.manual_seed(seed)
        model = deep_mlp(task.num_features, task.num_classes, gain=INITS[init], batch_norm=batch_norm)
        runs[rate] = train_and_watch(model, task, steps(), rate, seed=seed, every=every)

    def best() -> Watched:  # the highest validation accuracy; ties: the smaller rate
        return max(runs.values(), key=lambda w: (w.val_acc, -w.lr))

    for rate in (learning_rates() if lr is None else (lr,)):
        run(float(rate))
    if lr is None and len(runs) > 1:
        limit = extensions()
        for added in range(limit + 1):  # extend while the best is at the edge, then look once more
            tried = sorted(runs)
            chosen = best()
            if tried[0] < chosen.lr < tried[-1]:
                break
            if added == limit:
                chosen.censored = (f"best rate {chosen.lr:g} is the {'smallest' if chosen.lr == tried[0] else 'largest'}"
                                   f" of those tried ({', '.join(f'{r:g}' for r in tried)}) after {added} extension(s)")
                break
            run(float(f"{(tried[0] / 3 if chosen.lr == tried[0] else tried[-1] * 3):.3g}"))
    return best()


# ---------------------------------------------------------------------------------------------
# Measures on a report
# ---------------------------------------------------------------------------------------------


def grad_layer_spread(report: DiagnosticsReport) -> float:
    """Mean over steps of |log10(gradient std at the first nonlinearity / at the last)|."""
    acts = [t for t in report.activation_layers() if len(t.grad_std)]
    if len(acts) < 2:
        raise ValueError("need at least two tanh/sigmoid/ReLU layers with gradients to compare")
    first, last = acts[0].grad_std, acts[-1].grad_std
    n = min(len(first), len(last))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.abs(np.log10(first[:n] / last[:n]))
    r = np.where(np.isfinite(r), r, 10.0)  # a dead or NaN gradient counts as ten decades
    return float(np.mean(r))


def update_ratio_spread(report: DiagnosticsReport) -> float:
    """Std across hidden weight matrices of their mean log10 update-to-data ratio, second half of training."""
    weights = report.weights()[:-1]  # the hidden layers; the head is left out
    means = []
    for p in weights:
        u = p.log10_update_to_data
        u = u[len(u) // 2:]
        u = u[np.isfinite(u)]
        means.append(float(np.mean(u)) if len(u) else -10.0)
    return float(np.std(means))


def saturated_at_init(report: DiagnosticsReport) -> float:
    sats = [t.saturated[0] for t in report.activation_layers(("tanh", "sigmoid")) if len(t.saturated)]
    return float(np.mean(sats)) if sats else math.nan


def inside_trial(config: dict, seed: int) -> dict:
    out: dict = {}
    accs, spreads, ratios, runs, censored = {}, {}, {}, {}, []
    for init in INITS:
        run = watch(init, config["batch_norm"], seed)
        accs[init], runs[init] = run.test_acc, run
        spreads[init] = grad_layer_spread(run.report)
        ratios[init] = update_ratio_spread(run.report)
        out[f"test_acc_{init}"] = run.test_acc
        out[f"grad_layer_spread_{init}"] = spreads[init]
        out[f"update_ratio_spread_{init}"] = ratios[init]
        out[f"saturated_at_init_{init}"] = saturated_at_init(run.report)
        out[f"lr_{init}"] = run.lr
        if run.censored:
            censored.append(f"init {init}: {run.censored}")
    out.update(acc_range_over_inits=max(accs.values()) - min(accs.values()), worst_acc=min(accs.values()),
               best_acc=max(accs.values()), censored="; ".join(censored),
               worst_grad_layer_spread=max(spreads.values()), worst_update_ratio_spread=max(ratios.values()),
               runs=runs)
    return out


STABLE_RULES = (
    Better("worst_grad_layer_spread", "batch norm", "no norm", higher_is_better=False, floor=0.1),
    Better("worst_update_ratio_spread", "batch norm", "no norm", higher_is_better=False, floor=0.05),
)
# Every arm must learn at its best init (at a bad init, failing to learn is what the claims predict).
MUST_LEARN = MustLearn("best_acc", chance=0.1, margin=0.1)
INIT_RULES = (Better("acc_range_over_inits", "batch norm", "no norm", higher_is_better=False, floor=0.02),)


def _setup() -> str:
    return (f"a tanh MLP of {DEPTH} hidden layers of {WIDTH} (Linear -> [BN] -> tanh), inits {list(INITS)}, "
            f"each at its own best SGD rate of {list(learning_rates())} (momentum 0.9, batch {BATCH}, {steps()} "
            f"steps, chosen on validation data), harder digits")


@dataclass
class InsideResults:
    """The two claims' results from one run (they share the trials, metrics and artifacts)."""

    stable_gradients: ExperimentResult
    init_insensitive: ExperimentResult


@lru_cache(maxsize=4)
def _run(seeds: tuple[int, ...], size: tuple[bool, bool], progress: bool) -> InsideResults:
    base = run_experiment("inside-the-network", inside_trial, ARMS, list(STABLE_RULES) + list(INIT_RULES),
                          seeds=list(seeds), progress=progress, must_learn=MUST_LEARN)

    def view(name: str, rules, claim: str) -> ExperimentResult:
        return ExperimentResult(name, claim, base.arms, base.seeds, base.metrics, base.artifacts, list(rules),
                                base.seconds, must_learn=MUST_LEARN)

    return InsideResults(
        view("stable-gradients", STABLE_RULES,
             "batch norm keeps gradients in line across layers: in " + _setup() + ", the gradient size at the "
             "first and last tanh differs less, and the layers' update-to-data ratios spread less, at the worst "
             "of the three inits"),
        view("init-insensitive", INIT_RULES,
             "training is less sensitive to the initialization with batch norm: in " + _setup() + ", the test "
             "accuracy varies less over the three inits"),
    )


def inside_the_network(seeds=None, progress: bool = True) -> InsideResults:
    """Run the experiment once (cached for these seeds and this size) and return both claims' results."""
    from bncourse.device import configure_cpu_threads

    configure_cpu_threads()
    seed_list = tuple(default_seeds() if seeds is None else seeds)
    return _run(seed_list, (fast_mode(), grading_mode()), progress)


def stable_gradients(seeds=None, progress: bool = True) -> ExperimentResult:
    """Claim ``stable-gradients``, decided on the deep tanh MLP (see the module docstring)."""
    return inside_the_network(seeds, progress).stable_gradients


def init_insensitive(seeds=None, progress: bool = True) -> ExperimentResult:
    """Claim ``init-insensitive``, decided on the deep tanh MLP (see the module docstring)."""
    return inside_the_network(seeds, progress).init_insensitive

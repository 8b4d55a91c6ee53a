"""Running an experiment: every arm (a named config) at every seed, then the rules written before the run.

Where the parts live: the rules and the learning guard in ``rules``, the result in
``experiment_result``, the verdict words in ``verdicts``, a metric over seeds in ``seed_summary``;
all of them can still be imported from here.

An experiment is a ``trial(config, seed) -> {metric: number, ...}`` run for every arm (a named
config) and every seed. Rules, written before the run, compare the arms' per-seed metrics and
each gives ``held``, ``contradicted`` or ``inconclusive``; the experiment's verdict combines them.

    result = run_experiment(
        "faster-convergence",
        trial=train_and_measure,                      # (config, seed) -> {"steps_to_95": 150.0, ...}
        arms={"plain": {"bn": False}, "bn": {"bn": True}},
        rules=[Better("steps_to_95", "bn", "plain", higher_is_better=False, floor=10)],
    )
    result                 # an HTML table in JupyterLab, text elsewhere
    result.verdict         # "held" | "contradicted" | "inconclusive"

Seeds come from ``default_seeds()``: 3 in fast mode, 5 in the full run, all shifted by ``BNCOURSE_SEED``
(default 0), so a learner can rerun with other seeds and see whether a verdict survives.

What a trial returns besides numbers (curves, arrays) is kept as an artifact for plots:
``result.artifacts[arm][i]`` for the i-th seed. Every arm runs on the same seeds, one seed at a
time (arm after arm), so comparisons are paired by seed.

Guards, so that a verdict cannot rest on a broken comparison:

- ``must_learn=MustLearn("test_acc", chance=0.1, margin=0.05)``: every trained arm (or the arms it
  names) must score beyond chance plus the margin at every seed and never diverge (a trial that
  returns ``"diverged": True``, or a non-finite value of the metric). Otherwise the result is
  ``invalid`` with the reason, never a verdict.
- A trial that returns ``"censored": "<why>"`` (a learning-rate grid whose best value stayed at its
  edge after the search was extended, see ``common.tune_lr``) makes the verdict ``censored``.
- ``kind``: an *experiment* (trained or sampled over seeds, a rule with a spread) or, through
  ``demonstrate(...)``, a *demonstration* (algebra, an API fact, a count, a construction): one
  computation with a stated expectation, shown without a spread.
"""

from __future__ import annotations

import numbers
import os
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

# What a notebook uses with ``run_experiment``, importable from here as well as from its own module.
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.rules import AtLeast, AtMost, Better, Differs, MustLearn, Outcome, Rule, Similar  # noqa: F401
from bncourse.experiments.seed_summary import Summary, format_number  # noqa: F401
from bncourse.experiments.verdicts import (  # noqa: F401
    _COLOR, CENSORED, CONTRADICTED, DEMONSTRATION, EXPERIMENT, HELD, INCONCLUSIVE, INVALID, KINDS, UNTESTED, VERDICTS,
    combine)
from bncourse.runtime import pick

SEED_ENV = "BNCOURSE_SEED"


def default_seeds(fast: int = 3, full: int = 5, grading: int | None = None) -> list[int]:
    """The seeds of one experiment: ``fast`` of them in fast mode, ``full`` otherwise.

    Shifted by ``$BNCOURSE_SEED`` (default 0): ``BNCOURSE_SEED=100`` gives 100, 101, ...
    """
    if fast < 3 or full < 5:
        raise ValueError(f"experiments run at least 3 seeds in fast mode and 5 in full (got fast={fast}, full={full})")
    raw = os.environ.get(SEED_ENV, "0").strip() or "0"
    try:
        base = int(raw)
    except ValueError:
        raise ValueError(f"{SEED_ENV} must be a whole number, got {raw!r}") from None
    n = pick(fast=fast, full=full) if grading is None else pick(fast=fast, full=full, grading=max(3, grading))
    return [base + i for i in range(n)]


def run_experiment(
    name: str,
    trial: Callable[[Any, int], Mapping[str, Any]],
    arms: Mapping[str, Any],
    rules: Sequence[Rule],
    seeds: Sequence[int] | None = None,
    claim: str = "",
    progress: bool = True,
    must_learn: MustLearn | None = None,
    trained: bool = True,
) -> ExperimentResult:
    """Run ``trial(config, seed)`` for every seed and every arm, then apply ``rules``.

    Args:
        name: a short id, shown in the table and the progress bar.
        trial: returns a mapping of metric name to number (anything else is kept as an artifact).
        arms: arm name -> the config handed to ``trial``.
        rules: the decision rule, fixed before the run (at least one).
        seeds: default ``default_seeds()`` (3 in fast mode, 5 in full, shifted by ``$BNCOURSE_SEED``).
        claim: the claim under test, in words, shown with the result.
        progress: show a tqdm progress bar over the (seed, arm) trials.
        must_learn: the guard every trained arm must pass (``MustLearn``), else the result is ``invalid``.
        trained: False when the arms are not trained (then ``must_learn`` is not needed).
    """
    if not rules:
        raise ValueError(f"experiment {name!r} has no decision rule; write it before the run")
    if not arms:
        raise ValueError(f"experiment {name!r} has no arms")
    seed_list = list(seeds) if seeds is not None else default_seeds()
    arm_names = list(arms)
    metrics: dict[str, list[dict[str, float]]] = {a: [] for a in arm_names}
    artifacts: dict[str, list[dict[str, Any]]] = {a: [] for a in arm_names}
    start = time.perf_counter()
    bar = _progress_bar(len(seed_list) * len(arm_names), name) if progress else None
    try:
        for seed in seed_list:
            for arm in arm_names:
                if bar is not None:
                    bar.set_postfix_str(f"{arm}, seed {seed}", refresh=False)
                out = trial(arms[arm], seed)
                if not isinstance(out, Mapping):
                    raise TypeError(f"trial of {name!r} must return a dict of metrics, got {type(out).__name__}")
                nums = {k: float(v) for k, v in out.items() if _is_number(v)}
                metrics[arm].append(nums)
                artifacts[arm].append({k: v for k, v in out.items() if not _is_number(v)})
                if bar is not None:
                    bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return ExperimentResult(name, claim, arm_names, seed_list, metrics, artifacts, list(rules),
                            time.perf_counter() - start, must_learn=must_learn, trained=trained)


def _is_number(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    return isinstance(v, numbers.Real) or (isinstance(v, np.ndarray) and v.ndim == 0 and v.dtype.kind in "fiu")


def _progress_bar(total: int, name: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=name, unit="trial", leave=False)

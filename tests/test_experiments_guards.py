"""The harness's guards: can a verdict rest on an arm that never learned, a choice made on the test
split, a grid whose best value is at its edge, or a construction shown as an experiment?"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bncourse.experiments import (
    CENSORED, CONTRADICTED, DEMONSTRATION, HELD, INVALID, Better, MustLearn, run_experiment)
from bncourse.experiments.common import Split, Task, TuningOnTestError, tune_lr
from bncourse.experiments.demonstration import demonstrate

ARMS = {"control": {"acc": 0.6}, "treatment": {"acc": 0.9}}
RULE = Better("acc", "treatment", "control")


def _trial(stuck_at=None, diverge_seed=None):
    def trial(config, seed):
        acc = config["acc"] + 0.01 * np.random.default_rng(seed).normal()
        if stuck_at is not None and config["acc"] == 0.6:
            acc = stuck_at
        out = {"acc": acc}
        if diverge_seed == seed and config["acc"] == 0.6:
            out["diverged"] = True
        return out
    return trial


def test_does_a_clear_effect_with_learning_arms_keep_its_verdict():
    r = run_experiment("ok", _trial(), ARMS, [RULE], seeds=range(3), progress=False,
                       must_learn=MustLearn("acc", chance=0.1))
    assert r.verdict == HELD and not r.invalid_reasons


def test_is_an_arm_stuck_at_chance_invalid_with_the_reason_instead_of_a_verdict():
    r = run_experiment("stuck", _trial(stuck_at=0.11), ARMS, [RULE], seeds=range(3), progress=False,
                       must_learn=MustLearn("acc", chance=0.1, margin=0.05))
    assert r.rule_verdict == HELD  # the rule alone would have called it
    assert r.verdict == INVALID
    assert "'control' did not learn" in r.guard_note and "INVALID" in str(r)
    assert r.to_dict()["verdict"] == INVALID


def test_is_an_arm_that_diverged_at_one_seed_invalid():
    r = run_experiment("diverged", _trial(diverge_seed=1), ARMS, [RULE], seeds=range(3), progress=False,
                       must_learn=MustLearn("acc", chance=0.1))
    assert r.verdict == INVALID and "diverged at seed 1" in r.guard_note


def test_may_an_arm_whose_failure_is_the_claim_be_exempted_by_name():
    r = run_experiment("exempt", _trial(stuck_at=0.1), ARMS, [Better("acc", "control", "treatment")],
                       seeds=range(3), progress=False, must_learn=MustLearn("acc", chance=0.1, arms=("treatment",)))
    assert r.verdict == CONTRADICTED


def _task(n=60, seed=0) -> Task:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(3 * n, 4, generator=g)
    y = (X[:, 0] > 0).long()
    return Task(X[:n], y[:n], X[n:2 * n], y[n:2 * n], X[2 * n:], y[2 * n:])


def _linear():
    return torch.nn.Linear(4, 2)


def test_does_tuning_refuse_the_test_split():
    with pytest.raises(TuningOnTestError, match="never the test split"):
        tune_lr(_linear, _task(), [0.1, 1.0], seed=0, on=Split.TEST, steps=5)


@pytest.fixture
def peaked_fit(monkeypatch):
    """``fit`` replaced by one whose validation accuracy peaks at lr 0.03 (no training: the search is tested)."""
    from bncourse.experiments import common

    def fake_fit(model, task, lr, seed=0, **kw):
        acc = 0.9 - 0.1 * abs(math.log10(lr / 0.03))
        return common.Fit(lr, acc, acc, acc, False, 1)

    monkeypatch.setattr(common, "fit", fake_fit)


def test_is_a_best_rate_at_the_edge_extended_until_it_is_inside(peaked_fit):
    tuning = tune_lr(_linear, _task(), [0.001, 0.003], seed=0, extend=3)
    assert [f.lr for f in tuning.fits] == [0.001, 0.003, 0.009, 0.027, 0.081]
    assert tuning.best.lr == 0.027 and not tuning.censored


def test_does_a_best_rate_still_at_the_edge_censor_the_verdict(peaked_fit):
    tuning = tune_lr(_linear, _task(), [0.001, 0.003], seed=0, extend=1)
    assert tuning.best.lr == 0.009 and "largest of those tried" in tuning.censored

    def trial(config, seed):
        return {"acc": config["acc"], "censored": tuning.censored if config["acc"] == 0.9 else ""}
    r = run_experiment("edge", trial, ARMS, [RULE], seeds=range(3), progress=False,
                       must_learn=MustLearn("acc", chance=0.1))
    assert r.rule_verdict == HELD and r.verdict == CENSORED and "edge" in r.guard_note


def test_is_a_flat_grid_neither_extended_nor_censored(monkeypatch):
    from bncourse.experiments import common

    monkeypatch.setattr(common, "fit", lambda model, task, lr, seed=0, **kw: common.Fit(lr, 0.09, 0.09, 0.09, False, 1))
    tuning = tune_lr(_linear, _task(), [0.01, 0.03, 0.1], seed=0, extend=3)  # at chance at every rate
    assert [f.lr for f in tuning.fits] == [0.01, 0.03, 0.1] and not tuning.censored


def test_does_a_demonstration_show_facts_without_seeds_or_a_spread():
    demo = demonstrate("count", claim="transformers use batch norm", compute=lambda: {"batch-norm layers": 0,
                                                                                      "layer-norm layers": 25},
                       claim_holds=lambda f: f["batch-norm layers"] > f["layer-norm layers"],
                       expectation="more batch-norm than layer-norm layers")
    assert demo.kind == DEMONSTRATION and demo.verdict == CONTRADICTED and demo.seeds == []
    assert "±" not in str(demo) and "±" not in demo._repr_html_()
    assert all(math.isnan(o.spread) for o in demo.outcomes)
    assert "std" not in demo.to_dict() and demo.to_dict()["facts"]["layer-norm layers"] == 25


def test_can_the_noise_like_dropout_rules_come_out_either_way():
    from bncourse.experiments.generalization import NotWorse

    def result(bn_gap, bn_acc):
        table = {"none": (0.30, 0.70), "batch norm": (bn_gap, bn_acc), "dropout": (0.10, 0.80)}

        def trial(arm, seed):
            gap, acc = table[arm]
            return {"gap": gap + 0.001 * seed, "test_acc": acc + 0.001 * seed}
        rules = [Better("gap", "dropout", "none", higher_is_better=False, floor=0.01),
                 Better("gap", "batch norm", "none", higher_is_better=False, floor=0.01),
                 NotWorse("test_acc", "batch norm", "dropout", margin=0.01)]
        return run_experiment("like-dropout", trial, {a: a for a in table}, rules, seeds=range(3), progress=False,
                              must_learn=MustLearn("test_acc", chance=0.1))
    assert result(bn_gap=0.12, bn_acc=0.80).verdict == HELD
    assert result(bn_gap=0.40, bn_acc=0.80).verdict == CONTRADICTED  # batch norm widens the gap
    assert result(bn_gap=0.12, bn_acc=0.60).verdict == CONTRADICTED  # it cannot replace dropout here

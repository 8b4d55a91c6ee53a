"""Shared experiment pieces: the harder digits, the MLP, the training loop, Differs, folding, batch noise."""

from __future__ import annotations

import math

import pytest
import torch

from bncourse.experiments import Differs, run_experiment
from bncourse.experiments.common import fit, harder_digits, mlp, tune_lr
from bncourse.experiments.generalization import output_movement
from bncourse.experiments.overhead import fold_batchnorm


def test_are_the_harder_digits_split_without_overlap_and_standardized():
    t = harder_digits(0, n_train=300)
    assert (len(t.y_train), len(t.y_val), len(t.y_test)) == (300, 300, 500)
    assert t.X_train.shape == (300, 64)
    assert abs(t.X_train.mean().item()) < 1e-4 and abs(t.X_train.std(0).mean().item() - 1) < 0.01
    assert not torch.equal(harder_digits(1).X_test, t.X_test)  # the seed draws another split and noise


def test_does_the_mlp_put_batch_norm_before_or_after_the_activation():
    before = [type(m).__name__ for m in mlp(64, 10, 8, 1, norm="batch")]
    after = [type(m).__name__ for m in mlp(64, 10, 8, 1, norm="batch", position="after")]
    assert before[1:4] == ["Linear", "BatchNorm1d", "ReLU"] and after[1:4] == ["Linear", "ReLU", "BatchNorm1d"]
    with pytest.raises(ValueError, match="'groups'"):
        mlp(64, 10, norm="groups")


def test_does_fit_report_divergence_at_an_absurd_learning_rate():
    t = harder_digits(0)
    torch.manual_seed(0)
    f = fit(mlp(64, 10, 32, 3), t, steps=50, lr=1e4, momentum=0.0)
    assert f.diverged and f.steps < 50
    torch.manual_seed(0)
    ok = fit(mlp(64, 10, 32, 2, norm="batch"), t, steps=150, lr=0.1, eval_every=50, target=0.3)
    assert not ok.diverged and ok.test_acc > 0.5 and ok.steps_to_target <= 150


def test_does_tune_lr_pick_the_rate_with_the_best_validation_accuracy():
    t = harder_digits(0)
    best, fits = tune_lr(lambda: mlp(64, 10, 32, 2), t, [1e-5, 0.1], seed=0, steps=100)
    assert best.lr == 0.1 and best.val_acc == max(f.val_acc for f in fits)


def test_does_differs_hold_a_gap_and_contradict_a_tie():
    arms = {"a": 0.0, "b": 1.0}
    gap = run_experiment("gap", lambda c, s: {"m": c * 0.2 + 0.001 * s}, arms, [Differs("m", "b", "a", 0.05)],
                         seeds=range(3), progress=False)
    tie = run_experiment("tie", lambda c, s: {"m": 0.5 + 0.001 * s}, arms, [Differs("m", "b", "a", 0.05)],
                         seeds=range(3), progress=False)
    noisy = run_experiment("noisy", lambda c, s: {"m": c * 0.06 * (s % 2)}, arms, [Differs("m", "b", "a", 0.05)],
                           seeds=range(4), progress=False)
    assert (gap.verdict, tie.verdict, noisy.verdict) == ("held", "contradicted", "inconclusive")


def test_does_folding_batch_norm_into_the_linear_layer_keep_the_outputs():
    torch.manual_seed(0)
    model = mlp(64, 10, 16, 2, norm="batch")
    model.train()
    with torch.no_grad():
        for _ in range(5):
            model(torch.randn(32, 64) * 2 + 1)
    model.eval()
    folded = fold_batchnorm(model)
    x = torch.randn(20, 64)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded)
    assert torch.allclose(folded(x), model(x), atol=1e-5)


def test_does_only_batch_norm_make_an_output_move_with_its_batch_mates():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    pool, x = torch.randn(200, 64), torch.randn(10, 64)
    plain, _ = output_movement(mlp(64, 10, 16, 2), x, pool, 8, 5, g)
    bn, _ = output_movement(mlp(64, 10, 16, 2, norm="batch"), x, pool, 8, 5, g)
    assert plain < 1e-7 < 1e-3 < bn and math.isfinite(bn)

"""The DDP experiment's arms: which single-process training each distributed one reproduces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

import bncourse.distributed
from bncourse.experiments import distributed_bn
from bncourse.experiments.distributed_bn import DDPConfig, cached_run, ghost_batch_norm, main, train_all, train_trial


def test_does_ghost_batch_norm_normalize_each_sub_batch_on_its_own():
    torch.manual_seed(0)
    x = torch.randn(8, 3, 4, 4, dtype=torch.float64)
    layer = ghost_batch_norm(3, ghost=4).double()
    halves = [F.batch_norm(h, None, None, training=True) for h in x.split(4)]
    torch.testing.assert_close(layer(x), torch.cat(halves))
    assert not torch.allclose(layer.running_mean, torch.zeros(3, dtype=torch.float64)), "running statistics should be updated"


@pytest.mark.slow
def test_do_ddp_arms_end_where_their_single_process_twins_end():
    """3 steps in float64: sync BN on 2 x 4 = one process on 8; per-process BN on 2 x 4 = ghost BN."""
    common = dict(steps=3, widths=(4, 8))
    whole = train_trial(DDPConfig(world_size=1, per_rank=8, **common), seed=0)["params"]
    ghost = train_trial(DDPConfig(norm="ghost", world_size=1, per_rank=8, ghost=4, **common), seed=0)["params"]
    sync = train_trial(DDPConfig(norm="sync", **common), seed=0)["params"]
    local = train_trial(DDPConfig(norm="batch", **common), seed=0)["params"]
    assert np.abs(sync - whole).max() < 1e-10
    assert np.abs(local - ghost).max() < 1e-10
    assert np.abs(local - whole).max() > 1e-4, "per-process statistics should change the training"


@pytest.mark.slow
def test_does_a_run_trained_after_others_in_one_process_group_end_where_a_run_of_its_own_ends(monkeypatch):
    """train_all trains every DDP run of one world size in one launch, one after the other: the last
    of them (per-process BN, seed 1, after three other runs) must equal the same run launched alone."""
    monkeypatch.setattr(distributed_bn, "_RUNS", {})
    common = dict(steps=3, widths=(4, 8))
    sync, local = DDPConfig(norm="sync", **common), DDPConfig(norm="batch", **common)
    launches = []
    real = bncourse.distributed.run_distributed
    monkeypatch.setattr(bncourse.distributed, "run_distributed", lambda *a, **k: launches.append(a) or real(*a, **k))
    train_all([sync, local], seeds=[0, 1])
    assert set(distributed_bn._RUNS) == {(sync, 0), (sync, 1), (local, 0), (local, 1)}
    assert len(launches) == 1, f"4 DDP runs of one world size should share one launch, not {len(launches)}"
    shared = cached_run(local, 1)["params"]
    alone = train_trial(local, seed=1)["params"]
    assert np.array_equal(shared, alone)
    assert not np.array_equal(cached_run(local, 0)["params"], shared), "two seeds should train differently"


def test_does_the_script_say_how_to_start_it_without_torchrun(monkeypatch, capsys):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SystemExit):
        main(["--steps", "1"])
    assert "start me with torchrun" in capsys.readouterr().err

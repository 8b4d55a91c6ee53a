"""The DDP experiment's arms: which single-process training each distributed one reproduces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bncourse.experiments.distributed_bn import DDPConfig, ghost_batch_norm, main, train_trial


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


def test_does_the_script_say_how_to_start_it_without_torchrun(monkeypatch, capsys):
    for var in ("RANK", "WORLD_SIZE"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SystemExit):
        main(["--steps", "1"])
    assert "start me with torchrun" in capsys.readouterr().err

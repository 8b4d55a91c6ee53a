"""Does the course's GPU check run to its end on a machine without a GPU, and say so?"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


def test_does_gpu_check_say_there_is_no_gpu_and_run_its_tiny_version_to_the_end(capsys, monkeypatch):
    from bncourse import device as dev

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    result = module.main([])
    out = capsys.readouterr().out
    assert "NO GPU on this machine" in out and result["smoke"] and result["device"] == "cpu"
    for name in ("device", "precision", "data", "images_per_s", "epoch_s", "time_to_94",
                 "folded_vs_unfolded_batch1", "trainer_vs_bare_loop", "seconds"):
        assert f"gpu_check_{name}: " in out, name
    assert "gpu_check_data: synthetic" in out and result["resnet"]["images_per_s"] > 0


# ---------------------------------------------------------------------------------------------
# On a real GPU only (skipped on the CPU, so CI does not run them; benchmarks/gpu_check.py does)
# ---------------------------------------------------------------------------------------------

_MPS = getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
GPU = "cuda" if torch.cuda.is_available() else ("mps" if _MPS else None)
needs_gpu = pytest.mark.skipif(GPU is None, reason="needs a GPU (cuda or mps)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


@needs_gpu
def test_on_a_real_gpu_does_the_course_loop_learn_with_the_fast_path():
    from bncourse.data import load_digits
    from bncourse.models import SmallCNN
    from bncourse.train import TrainConfig, train

    data = load_digits()
    torch.manual_seed(0)
    h = train(SmallCNN(1, 10, widths=(16, 32)), data.train, data.test,
              TrainConfig(steps=150, batch_size=64, lr=0.05, device=GPU, progress=False))
    assert not h.diverged and h.final_test_acc > 0.8 and h.images_per_s > 0 and h.device.startswith(GPU)


@needs_gpu
def test_on_a_real_gpu_does_the_device_timer_count_the_work_not_its_queueing():
    import time

    from bncourse.device import device_timer, synchronize

    x = torch.randn(2048, 2048, device=GPU)
    synchronize(GPU)
    t0 = time.perf_counter()
    for _ in range(20):
        y = x @ x
    queued = time.perf_counter() - t0
    with device_timer(GPU) as timer:
        for _ in range(20):
            y = x @ x
    assert timer.seconds > 0 and y.shape == x.shape
    print(f"queueing {queued * 1e3:.2f} ms, device time {timer.seconds * 1e3:.2f} ms")


@needs_cuda
@pytest.mark.parametrize("layer", ["bncourse.nn", "notebook 4", "renorm", "nn_sync"])
def test_on_a_real_gpu_do_the_course_layers_match_pytorch_under_cuda_autocast(layer):
    from torch import nn

    from bncourse.device import autocast_precision
    from test_nn import _notebook_solution, autocast_side_by_side

    dtype = autocast_precision("cuda") or torch.bfloat16
    if layer == "bncourse.nn":
        from bncourse.nn import BatchNorm2d as make
    elif layer == "notebook 4":
        make = _notebook_solution("04_batchnorm_pytorch/batchnorm_pytorch.ipynb", "batchnorm2d",
                                  {"torch": torch, "nn": nn})["BatchNorm2d"]
    elif layer == "renorm":
        from bncourse.renorm import BatchRenorm

        def make(c):
            return BatchRenorm(c, r_max=1.0, d_max=0.0)
    else:
        from bncourse.nn_sync import SyncBatchNorm as make
    autocast_side_by_side(make(6), nn.BatchNorm2d(6), dtype, steps=2, device="cuda")


@needs_cuda
def test_on_a_real_gpu_does_notebook_8s_hello_run_with_the_backend_each_device_needs():
    import torch.distributed as dist

    from bncourse.distributed import run_distributed
    from bncourse.distributed_devices import default_backend, rank_device

    world = min(2, torch.cuda.device_count())

    def hello(rank, world_size):
        t = torch.tensor([float(rank + 1)], device=rank_device())
        dist.all_reduce(t)
        return dist.get_backend(), str(t.device), t.item()

    results = run_distributed(hello, world_size=world)
    total = float(sum(range(1, world + 1)))
    assert default_backend(world) == "nccl"
    assert [r[0] for r in results] == ["nccl"] * world and all(r[1].startswith("cuda") for r in results)
    assert all(r[2] == total for r in results)

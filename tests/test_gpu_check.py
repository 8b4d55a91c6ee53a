"""Does the course's GPU check run to its end on a machine without a GPU, and say so?"""

from __future__ import annotations

import importlib.util
from pathlib import Path

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

"""Device choice, seeding and the GPU fast path (on the CPU)."""

import pytest
import torch

from bncourse import device as dev


def test_does_get_device_fall_back_to_the_cpu_here_and_say_so_once(capsys, monkeypatch):
    monkeypatch.setattr(dev, "_ANNOUNCED", set())
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: False)
    assert dev.get_device() == torch.device("cpu")
    dev.get_device()
    out = capsys.readouterr().out
    assert out.count("bncourse: using cpu") == 1


def test_does_get_device_prefer_cuda_then_mps(monkeypatch):
    monkeypatch.setattr(dev, "_ANNOUNCED", set())
    monkeypatch.delenv(dev.DEVICE_ENV, raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(dev, "_mps_available", lambda: True)
    assert dev.get_device(announce=False).type == "mps"


def test_does_asking_for_a_missing_gpu_raise_a_clear_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="no CUDA GPU"):
        dev.get_device("cuda")


def test_does_set_seed_make_torch_and_numpy_repeat():
    import numpy as np

    dev.set_seed(3)
    a = (torch.randn(4), np.random.rand(2))
    dev.set_seed(3)
    b = (torch.randn(4), np.random.rand(2))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_is_the_fast_path_off_on_cpu_and_on_for_cuda():
    cpu = dev.fast_path("cpu")
    assert cpu.autocast_dtype is None and not cpu.channels_last
    cuda = dev.fast_path(torch.device("cuda"))  # deciding needs no GPU
    assert cuda.autocast_dtype is torch.bfloat16 and cuda.channels_last
    assert dev.fast_path("cuda", enabled=False).autocast_dtype is None


def test_does_channels_last_change_layout_but_not_values():
    fp = dev.FastPath("cuda", None, True)  # only the layout part, usable on the CPU
    x = torch.randn(2, 3, 4, 5)
    y = fp.to_input(x)
    assert y.is_contiguous(memory_format=torch.channels_last) and torch.equal(x, y)
    assert fp.to_input(torch.randn(2, 3)).shape == (2, 3)


def test_does_configure_cpu_threads_honour_the_environment(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv(dev.THREADS_ENV, "1")
        assert dev.configure_cpu_threads() == 1
    finally:
        torch.set_num_threads(before)

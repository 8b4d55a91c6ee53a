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


def _fake_gpu(monkeypatch, capability, bf16_native=None):
    """A CUDA GPU of the given compute capability, faked where torch reports it."""
    monkeypatch.setattr(dev, "_ANNOUNCED", set())
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: capability)
    native = capability >= (8, 0) if bf16_native is None else bf16_native
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: native or including_emulation)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", torch.backends.cudnn.benchmark)


def test_is_the_fast_path_off_on_cpu_and_on_for_cuda(monkeypatch):
    cpu = dev.fast_path("cpu")
    assert cpu.autocast_dtype is None and not cpu.channels_last and cpu.grad_scaler() is None
    _fake_gpu(monkeypatch, (9, 0))
    cuda = dev.fast_path(torch.device("cuda"))
    assert cuda.autocast_dtype is torch.bfloat16 and cuda.channels_last and cuda.grad_scaler() is None
    assert dev.fast_path("cuda", enabled=False).autocast_dtype is None


@pytest.mark.parametrize("capability, bf16_native, expected, words", [
    ((8, 0), None, torch.bfloat16, "bf16 autocast (compute capability 8.0"),  # A100
    ((7, 5), None, torch.float16, "fp16 autocast with a gradient scaler (compute capability 7.5"),  # T4
    ((7, 0), None, torch.float16, "fp16"),  # V100
    ((7, 0), True, torch.bfloat16, "bf16 autocast"),  # a device torch says computes bf16 natively (e.g. ROCm)
])
def test_does_the_capability_check_pick_bf16_only_where_the_gpu_runs_it_natively(
        monkeypatch, capsys, capability, bf16_native, expected, words):
    _fake_gpu(monkeypatch, capability, bf16_native)
    fp = dev.fast_path("cuda")
    dev.fast_path("cuda")
    assert fp.autocast_dtype is expected and fp.needs_grad_scaler == (expected is torch.float16)
    out = capsys.readouterr().out
    assert out.count(words) == 1, out  # printed once
    if expected is torch.float16:
        assert isinstance(fp.grad_scaler(), torch.amp.GradScaler)


def test_is_there_no_autocast_on_mps_or_cpu():
    assert dev.autocast_precision("mps") is None and dev.autocast_precision("cpu") is None
    assert dev.fast_path("mps").autocast_dtype is None


@pytest.mark.parametrize("device, expected", [("cuda", "cuda"), ("cuda:1", "cuda"), ("mps", "mps"), ("cpu", None)])
def test_does_synchronize_wait_through_whatever_device_it_is_given(monkeypatch, device, expected):
    calls = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: calls.append(("cuda", d)))
    monkeypatch.setattr(torch.mps, "synchronize", lambda: calls.append(("mps", None)))
    dev.synchronize(device)
    assert [c[0] for c in calls] == ([expected] if expected else [])
    if device == "cuda:1":
        assert calls[0][1] == torch.device("cuda:1")


@pytest.mark.parametrize("device", ["cuda", "mps"])
def test_does_the_device_timer_wait_for_the_device_before_reading_the_clock(monkeypatch, device):
    """A GPU queues work and returns at once: the timer must wait for the queue at both ends."""
    events = []
    sync = lambda *a: events.append("sync")  # noqa: E731
    monkeypatch.setattr(torch.cuda, "synchronize", sync)
    monkeypatch.setattr(torch.mps, "synchronize", sync)
    clock = iter([10.0, 12.5])

    def perf_counter():
        events.append("clock")
        return next(clock)

    monkeypatch.setattr(dev.time, "perf_counter", perf_counter)
    with dev.device_timer(device) as t:
        events.append("work")
    assert events == ["sync", "clock", "work", "sync", "clock"] and t.seconds == 2.5
    assert "synchronized" in t.clock_name


def test_does_the_device_timer_use_cpu_time_on_the_cpu_when_asked():
    with dev.device_timer("cpu", cpu_clock="process") as t:
        sum(range(20000))
    assert t.clock is dev.time.process_time and t.seconds >= 0
    assert dev.device_timer("cpu").clock is dev.time.perf_counter
    with pytest.raises(ValueError, match="cpu_clock must be 'wall' or 'process', got 'gpu'"):
        dev.device_timer("cpu", cpu_clock="gpu")


def test_does_deterministic_set_every_switch_and_undo_them(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    monkeypatch.setattr(dev, "_ANNOUNCED", set())
    before = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.deterministic,
              torch.backends.cudnn.benchmark)
    try:
        dev.deterministic(5)
        assert torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic
        assert not torch.backends.cudnn.benchmark and dev.os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        a = torch.randn(3)
        dev.deterministic(5)
        assert torch.equal(a, torch.randn(3))  # seeded
        dev.deterministic(enabled=False)
        assert not torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.deterministic
    finally:
        torch.use_deterministic_algorithms(before[0])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[1], before[2]


def test_does_the_environment_switch_turn_determinism_on_at_get_device(monkeypatch, capsys):
    monkeypatch.setattr(dev, "_ANNOUNCED", set())
    monkeypatch.setenv(dev.DETERMINISTIC_ENV, "1")
    seen = []
    monkeypatch.setattr(dev, "deterministic", lambda seed=0, enabled=True: seen.append(seed))
    dev.get_device("cpu", announce=False)
    dev.get_device("cpu", announce=False)
    assert seen == [0]


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

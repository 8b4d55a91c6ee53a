"""Where the tensors live, how randomness is seeded, and the few GPU-only speed switches.

Everything device-specific in the course is decided here, once:

- ``get_device(prefer=None)``: cuda, then mps, then cpu; the choice is printed once per process
  (with the GPU's name), so a notebook's output always says where it ran.
- on the CPU, torch's thread count (``configure_cpu_threads``: 1 in fast mode, where parallel
  test workers compete for the cores; all cores otherwise);
- ``set_seed(seed)``: seeds Python, numpy and torch (all devices) in one call.
- ``fast_path(device)``: the GPU fast path, autocast and channels_last memory format, which
  is switched on for CUDA only. The autocast precision comes from ``autocast_precision(device)``:
  bf16 where the GPU computes it natively (compute capability 8.0 and later: A100, RTX 30xx, H100),
  fp16 with a gradient scaler on older GPUs (T4, V100: they only emulate bf16, slowly), float32
  elsewhere; the choice is printed once. Everything else (the loop, the data loader, augmentation)
  is the same code on every device, so the CPU tests exercise it.
- ``synchronize(device)`` and ``device_timer(device)``: GPUs run asynchronously, so a clock read
  without waiting for the device measures how fast work was *queued*. Every timing in the course
  goes through these two, which wait for cuda and mps alike (and do nothing on the CPU).
- ``deterministic(seed)`` (or ``BNCOURSE_DETERMINISTIC=1`` in the environment): exact
  reproduction on a GPU, at some cost in speed (deterministic kernels, no cuDNN autotuning).

    device = get_device()          # prints e.g. "bncourse: using cpu (no GPU found)"
    fp = fast_path(device)         # FastPath(autocast_dtype=None, channels_last=False) on cpu
    with fp.autocast():
        logits = model(fp.to_input(x))
    with device_timer(device) as t:
        model(x)
    t.seconds                      # the device's time, not the time to queue the work
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from dataclasses import dataclass

import numpy as np
import torch

_ANNOUNCED: set[str] = set()

DEVICE_ENV = "BNCOURSE_DEVICE"  # e.g. BNCOURSE_DEVICE=cpu forces the CPU on a GPU machine
THREADS_ENV = "BNCOURSE_THREADS"  # torch's intra-op CPU threads, e.g. BNCOURSE_THREADS=4
DETERMINISTIC_ENV = "BNCOURSE_DETERMINISTIC"  # BNCOURSE_DETERMINISTIC=1: deterministic(seed=0) at get_device()


def configure_cpu_threads(n: int | None = None) -> int:
    """Set torch's CPU thread count and return it.

    ``n`` if given, else $BNCOURSE_THREADS, else 1 in fast mode (CI) and torch's default (all
    cores) otherwise. Why 1 in CI: the course's models are small, and when other processes compete
    for the cores (parallel test workers), torch's multi-threaded kernels wait on descheduled
    threads; measured here on 2 busy cores, a BN-MLP step took 21 ms with 2 threads against 1.2 ms
    with 1.
    """
    from bncourse.run_size import fast_mode

    if n is None:
        env = os.environ.get(THREADS_ENV, "").strip()
        n = int(env) if env else (1 if fast_mode() else None)
    if n is not None and n > 0 and n != torch.get_num_threads():
        torch.set_num_threads(int(n))
    return torch.get_num_threads()


def _describe(device: torch.device) -> str:
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda ({torch.cuda.get_device_name(index)})"
    if device.type == "mps":
        return "mps (Apple GPU)"
    return "cpu (no GPU found)" if not torch.cuda.is_available() else "cpu"


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def get_device(prefer: str | torch.device | None = None, *, announce: bool = True) -> torch.device:
    """The device to train on: ``prefer`` if given, else cuda, then mps, then cpu.

    Args:
        prefer: "cuda", "cuda:1", "mps", "cpu" or a ``torch.device``; ``None`` (default) reads the
            environment variable ``BNCOURSE_DEVICE`` and otherwise picks the fastest available.
        announce: print the choice (once per process and device).

    Raises:
        ValueError: when ``prefer`` names a device this machine does not have.
    """
    prefer = prefer if prefer is not None else (os.environ.get(DEVICE_ENV) or None)
    if prefer is not None:
        device = torch.device(prefer)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"asked for device {str(device)!r}, but torch sees no CUDA GPU here")
        if device.type == "mps" and not _mps_available():
            raise ValueError(f"asked for device {str(device)!r}, but MPS is not available here")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    elif _mps_available():
        device = torch.device("mps")
    else:
        device = torch.device("cpu")
    if device.type == "cpu" and "threads" not in _ANNOUNCED:
        _ANNOUNCED.add("threads")
        configure_cpu_threads()
    if "deterministic" not in _ANNOUNCED and os.environ.get(DETERMINISTIC_ENV, "").strip() not in ("", "0"):
        _ANNOUNCED.add("deterministic")
        deterministic(0)
    if announce and str(device) not in _ANNOUNCED:
        _ANNOUNCED.add(str(device))
        threads = f", {torch.get_num_threads()} torch thread(s)" if device.type == "cpu" else ""
        print(f"bncourse: using {_describe(device)}{threads}")
    return device


def describe_device(device: torch.device | str) -> str:
    """A short human-readable name: 'cpu', 'cuda (NVIDIA H100 80GB HBM3)', ..."""
    device = torch.device(device)
    return "cpu" if device.type == "cpu" else _describe(device)


def set_seed(seed: int) -> torch.Generator:
    """Seed Python's ``random``, numpy's global generator and torch (CPU and every GPU).

    Returns a fresh ``torch.Generator`` (CPU) seeded with ``seed``, for code that prefers an
    explicit generator to global state.
    """
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds cuda and mps
    return torch.Generator().manual_seed(seed)


def synchronize(device: torch.device | str | None = None) -> None:
    """Wait until ``device`` has finished all queued work: cuda and mps wait, the CPU returns at once.

    ``device`` may be a ``torch.device``, a string ("cuda", "cuda:1", "mps", "cpu") or a tensor
    (its device); ``None`` means the current CUDA device when there is one, else nothing.
    """
    if isinstance(device, torch.Tensor):
        device = device.device
    if device is None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


class DeviceTimer:
    """Seconds of work on one device; a context manager (``with device_timer(device) as t: ...``).

    Entering waits for the device's queued work and starts the clock; leaving waits for the work
    queued inside the block and stops it, so ``t.seconds`` is the device's time for the block on
    cuda and mps (``time.perf_counter``). On the CPU the work is done when the call returns; the
    clock there is ``time.process_time`` (CPU time of this process: on a shared machine it does
    not count time other jobs held the core) with ``cpu_clock="process"``, the wall clock with
    ``cpu_clock="wall"``.
    """

    def __init__(self, device: torch.device | str, cpu_clock: str = "wall"):
        if cpu_clock not in ("wall", "process"):
            raise ValueError(f"cpu_clock must be 'wall' or 'process', got {cpu_clock!r}")
        self.device = torch.device(device)
        on_cpu = self.device.type == "cpu"
        self.clock = time.process_time if (on_cpu and cpu_clock == "process") else time.perf_counter
        self.clock_name = "CPU time of this process" if self.clock is time.process_time else (
            "wall-clock time" if on_cpu else f"{self.device.type} time (synchronized)")
        self.seconds = float("nan")
        self._start = None

    def __enter__(self) -> "DeviceTimer":
        synchronize(self.device)
        self._start = self.clock()
        return self

    def __exit__(self, *exc) -> None:
        synchronize(self.device)
        self.seconds = self.clock() - self._start


def device_timer(device: torch.device | str, cpu_clock: str = "wall") -> DeviceTimer:
    """A ``DeviceTimer`` for ``device``: ``with device_timer(device) as t: work()``, then ``t.seconds``."""
    return DeviceTimer(device, cpu_clock)


def deterministic(seed: int | None = 0, enabled: bool = True) -> None:
    """Make runs repeat exactly (on a GPU too), at some cost in speed; ``seed`` is passed to ``set_seed``.

    Sets ``torch.use_deterministic_algorithms`` (an op without a deterministic kernel then raises
    instead of silently varying), ``torch.backends.cudnn.deterministic = True`` and
    ``cudnn.benchmark = False`` (no autotuning, which can pick different kernels per run), and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` (needed by cuBLAS for deterministic matrix products; it must
    be set before the first CUDA matrix product of the process: call this first). The same happens
    on the first ``get_device()`` when ``BNCOURSE_DETERMINISTIC=1``. ``enabled=False`` undoes it.
    On the CPU the course's runs repeat exactly without it.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = False
    if enabled and seed is not None:
        set_seed(seed)
    if enabled and "deterministic-said" not in _ANNOUNCED:
        _ANNOUNCED.add("deterministic-said")
        print("bncourse: deterministic algorithms on (exact repeats; GPU runs are slower)")


def _bf16_native(index: int) -> bool:
    """True when CUDA device ``index`` computes bf16 in hardware (compute capability >= 8.0)."""
    major, _ = torch.cuda.get_device_capability(index)
    if major >= 8:
        return True
    try:  # ROCm and future devices: torch's own answer, emulation excluded
        return bool(torch.cuda.is_bf16_supported(including_emulation=False))
    except TypeError:  # pragma: no cover - older torch without the argument
        return False


def autocast_precision(device: torch.device | str, announce: bool = True) -> torch.dtype | None:
    """The autocast dtype for ``device``: bf16, fp16 (needs a ``GradScaler``) or ``None`` (float32).

    CUDA with compute capability >= 8.0 (A100, RTX 30xx/40xx, H100) or torch's word that bf16 is
    native: ``torch.bfloat16``, whose 8 exponent bits cover float32's range, so no loss scaling.
    Older CUDA GPUs (T4, V100, P100): ``torch.float16``, which they run on tensor cores; its small
    range underflows small gradients, so the loop scales the loss (``FastPath.grad_scaler``).
    mps and cpu: ``None``, plain float32. The choice is printed once per device (``announce``).
    """
    device = torch.device(device)
    if device.type != "cuda":
        dtype, why = None, f"float32 on {device.type}"
    else:
        index = device.index if device.index is not None else torch.cuda.current_device()
        major, minor = torch.cuda.get_device_capability(index)
        if _bf16_native(index):
            dtype, why = torch.bfloat16, f"bf16 autocast (compute capability {major}.{minor} runs bf16 natively)"
        else:
            dtype, why = torch.float16, (f"fp16 autocast with a gradient scaler (compute capability {major}.{minor} "
                                         f"only emulates bf16)")
    key = f"precision:{device}"
    if announce and device.type == "cuda" and key not in _ANNOUNCED:
        _ANNOUNCED.add(key)
        print(f"bncourse: {why}")
    return dtype


@dataclass(frozen=True)
class FastPath:
    """The device-specific speed switches, decided in one place.

    Attributes:
        autocast_dtype: on CUDA ``torch.bfloat16`` (Ampere and later) or ``torch.float16`` (older
            GPUs; the loop then scales the loss): matmuls and convolutions in that dtype, batch
            norm's statistics and the loss stay float32 under autocast; ``None`` elsewhere.
        channels_last: store images and conv weights as (N, H, W, C) in memory on CUDA, the layout
            tensor cores want; the logical shape stays (N, C, H, W).
    """

    device_type: str = "cpu"
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self):
        """A context manager: autocast in ``autocast_dtype`` when set, a no-op otherwise."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        """fp16 autocast: small gradients underflow float16 unless the loss is scaled up first."""
        return self.autocast_dtype is torch.float16

    def grad_scaler(self):
        """A ``torch.amp.GradScaler`` for fp16 autocast, ``None`` when none is needed (bf16, float32)."""
        if not self.needs_grad_scaler:
            return None
        return torch.amp.GradScaler(self.device_type)

    def to_input(self, x: torch.Tensor) -> torch.Tensor:
        """Images (N, C, H, W) in channels_last layout when enabled; anything else unchanged."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def prepare_model(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        """Move ``model`` to ``device`` (and to channels_last when enabled). Returns the model."""
        model.to(device)
        if self.channels_last:
            model.to(memory_format=torch.channels_last)  # only 4-D weights change
        return model


def fast_path(device: torch.device | str, enabled: bool = True) -> FastPath:
    """The fast path for ``device``: autocast (``autocast_precision``) + channels_last on CUDA, nothing elsewhere.

    ``enabled=False`` turns both off (e.g. to compare against plain float32 on a GPU). On CUDA it
    also lets cuDNN autotune its convolution kernels (``cudnn.benchmark``) unless ``deterministic``
    is on: the first steps with each new input shape then pay the search (``train.warm_up``).
    """
    device = torch.device(device)
    if enabled and device.type == "cuda":
        if not torch.backends.cudnn.deterministic:
            torch.backends.cudnn.benchmark = True
        return FastPath("cuda", autocast_precision(device), True)
    return FastPath(device.type, None, False)

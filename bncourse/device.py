"""Where the tensors live, how randomness is seeded, and the few GPU-only speed switches.

Everything device-specific in the course is decided here, once:

- ``get_device(prefer=None)``: cuda, then mps, then cpu; the choice is printed once per process
  (with the GPU's name), so a notebook's output always says where it ran.
- on the CPU, torch's thread count (``configure_cpu_threads``: 1 in fast mode, where parallel
  test workers compete for the cores; all cores otherwise);
- ``set_seed(seed)``: seeds Python, numpy and torch (all devices) in one call.
- ``fast_path(device)``: the GPU fast path, bf16 autocast and channels_last memory format, which
  is switched on for CUDA only. Everything else (the loop, the data loader, augmentation) is the
  same code on every device, so the CPU tests exercise it.

    device = get_device()          # prints e.g. "bncourse: using cpu (no GPU found)"
    fp = fast_path(device)         # FastPath(autocast_dtype=None, channels_last=False) on cpu
    with fp.autocast():
        logits = model(fp.to_input(x))
"""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass

import numpy as np
import torch

_ANNOUNCED: set[str] = set()

DEVICE_ENV = "BNCOURSE_DEVICE"  # e.g. BNCOURSE_DEVICE=cpu forces the CPU on a GPU machine
THREADS_ENV = "BNCOURSE_THREADS"  # torch's intra-op CPU threads, e.g. BNCOURSE_THREADS=4


def configure_cpu_threads(n: int | None = None) -> int:
    """Set torch's CPU thread count and return it.

    ``n`` if given, else $BNCOURSE_THREADS, else 1 in fast mode (CI) and torch's default (all
    cores) otherwise. Why 1 in CI: the course's models are small, and when other processes compete
    for the cores (parallel test workers), torch's multi-threaded kernels wait on descheduled
    threads; measured here on 2 busy cores, a BN-MLP step took 21 ms with 2 threads against 1.2 ms
    with 1.
    """
    from bncourse.runtime import fast_mode

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


@dataclass(frozen=True)
class FastPath:
    """The device-specific speed switches, decided in one place.

    Attributes:
        autocast_dtype: ``torch.bfloat16`` on CUDA (matmuls and convolutions in bf16, batch norm
            and the loss stay float32 under autocast); ``None`` elsewhere.
        channels_last: store images and conv weights as (N, H, W, C) in memory on CUDA, the layout
            tensor cores want; the logical shape stays (N, C, H, W).
    """

    device_type: str = "cpu"
    autocast_dtype: torch.dtype | None = None
    channels_last: bool = False

    def autocast(self):
        """A context manager: bf16 autocast on CUDA, a no-op elsewhere."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.autocast_dtype)

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
    """The fast path for ``device``: bf16 autocast + channels_last on CUDA, nothing elsewhere.

    ``enabled=False`` turns both off (e.g. to compare against plain float32 on a GPU).
    """
    device = torch.device(device)
    if enabled and device.type == "cuda":
        return FastPath("cuda", torch.bfloat16, True)
    return FastPath(device.type, None, False)

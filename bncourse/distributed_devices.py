"""Which backend a process group uses, and which device each rank's collective tensors live on.

A collective's tensors must live where its backend works: NCCL takes CUDA tensors only (a CPU
tensor fails with "No backend type associated with device type cpu"), gloo takes CPU tensors.

- ``default_backend(world_size) -> "nccl" | "gloo"``: NCCL when every one of the ranks can have a GPU.
- ``device_for(backend, rank) -> torch.device``: ``cuda:(rank mod GPUs)`` under NCCL, else the CPU.
- ``rank_device() -> torch.device``: the same, asked from inside a rank of an initialized group.

torch is imported inside each function, so importing this module costs nothing.
"""

from __future__ import annotations


def default_backend(world_size: int) -> str:
    """``"nccl"`` when every one of ``world_size`` workers can have its own CUDA GPU, else ``"gloo"``."""
    import torch
    import torch.distributed as dist

    if torch.cuda.is_available() and torch.cuda.device_count() >= world_size and dist.is_nccl_available():
        return "nccl"
    return "gloo"


def device_for(backend: str, rank: int = 0):
    """The device a rank's collective tensors must live on under ``backend``.

    ``"nccl"``: the rank's own GPU, ``cuda:(rank mod the number of GPUs)`` (NCCL refuses CPU
    tensors, and two ranks on one GPU deadlock it); ``"gloo"`` (or anything else): the CPU.
    """
    import torch

    if backend == "nccl":
        count = torch.cuda.device_count()
        if count < 1:
            raise ValueError("the NCCL backend needs a CUDA GPU per rank, but torch sees none here")
        return torch.device("cuda", int(rank) % count)
    return torch.device("cpu")


def rank_device():
    """Inside a worker: the device this rank's tensors belong on (``cuda:rank`` with NCCL, else cpu)."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")

"""What runs on one rank: join the process group, call the function, hand back its value or its error.

``run_rank(rank, world_size, run_dir, setup, payload)`` is the target of each process that
``bncourse.distributed.run_distributed`` starts. ``payload`` is ``cloudpickle.dumps((fn, args))``;
``setup`` carries the caller's environment, working folder, ``sys.path``, notebook source lines,
backend, timeout and torch thread count. In ``run_dir`` the rank writes:

- ``rank{r}.out`` / ``rank{r}.err``: everything it printed (file descriptors 1 and 2 redirected);
- ``rank{r}.result``: ``fn(rank, world_size, *args)``, cloudpickled, when it returned;
- ``rank{r}.error``: a pickled dict (type, message, traceback, time, where) when it raised.

The group meets through ``run_dir/store`` (``file://`` rendezvous); the process then leaves by
``os._exit`` (a group a peer abandoned can block interpreter shutdown). On SIGUSR1 a rank dumps its
stack to ``rank{r}.err`` (``faulthandler``), which is how a timed-out run shows where it hung.

``main_under_torchrun(fn, *args)`` is the same call in a script that ``torchrun`` started.
"""

from __future__ import annotations

import faulthandler
import linecache
import os
import pickle
import signal
import socket
import sys
import time
import traceback
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

from bncourse.distributed_devices import default_backend, device_for


def _loopback_interface() -> str | None:
    try:
        names = [name for _, name in socket.if_nameindex()]
    except (OSError, AttributeError):
        return None
    for name in names:
        if name == "lo" or name.startswith("lo"):
            return name
    return None


def _redirect_fd(fd: int, path: Path):
    f = open(path, "ab", buffering=0)
    os.dup2(f.fileno(), fd)
    f.close()


def _where(tb) -> str:
    """``line N: code`` of the last frame outside bncourse, torch and the standard library."""
    skip = (os.sep + "bncourse" + os.sep, os.sep + "torch" + os.sep, os.sep + "multiprocessing" + os.sep)
    frames = [f for f in traceback.extract_tb(tb) if not any(s in (f.filename or "") for s in skip)]
    if not frames:
        return ""
    f = frames[-1]
    return f"at line {f.lineno}: {f.line.strip()}" if f.line else f"at line {f.lineno} of {f.name}"


def run_rank(rank: int, world_size: int, run_dir: str, setup: dict, payload: bytes) -> None:
    run = Path(run_dir)
    _redirect_fd(1, run / f"rank{rank}.out")
    _redirect_fd(2, run / f"rank{rank}.err")
    sys.stdout = open(1, "w", buffering=1, closefd=False, errors="replace")
    sys.stderr = open(2, "w", buffering=1, closefd=False, errors="replace")
    faulthandler.enable(file=sys.stderr, all_threads=True)
    if hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    code = 0
    try:
        os.environ.clear()
        os.environ.update(setup["environ"])
        os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world_size)
        os.environ["LOCAL_RANK"], os.environ["LOCAL_WORLD_SIZE"] = str(rank), str(world_size)
        if "GLOO_SOCKET_IFNAME" not in os.environ and (lo := _loopback_interface()):
            os.environ["GLOO_SOCKET_IFNAME"] = lo  # all ranks are on this machine
        try:
            os.chdir(setup["cwd"])
        except OSError:
            pass
        sys.path[:] = setup["sys_path"]
        linecache.cache.update(setup["lines"])

        import torch
        import torch.distributed as dist

        torch.set_num_threads(max(1, setup["threads"]))
        backend = setup["backend"]
        if backend == "nccl":
            torch.cuda.set_device(device_for(backend, rank))
        dist.init_process_group(backend, init_method=(run / "store").as_uri(), rank=rank, world_size=world_size,
                                timeout=timedelta(seconds=setup["timeout"]))
        # Every rank finishes connecting before any runs the function: otherwise a rank whose function
        # needs no collective can finish and exit while a peer is still connecting to it, and the
        # peer fails with gloo's "connectFullMesh failed ... Connection closed by peer".
        dist.barrier()
        fn, args = pickle.loads(payload)
        value = fn(rank, world_size, *args)
        import cloudpickle

        tmp = run / f"rank{rank}.result.tmp"
        with open(tmp, "wb") as fh:
            cloudpickle.dump(value, fh)
        os.replace(tmp, run / f"rank{rank}.result")
    except BaseException as exc:  # noqa: BLE001 - report everything, SystemExit included
        code = 1
        info = {"type": type(exc).__name__, "message": str(exc)[:2000], "time": time.time(),
                "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
                "where": _where(exc.__traceback__)}
        tmp = run / f"rank{rank}.error.tmp"
        with open(tmp, "wb") as fh:
            pickle.dump(info, fh)
        os.replace(tmp, run / f"rank{rank}.error")
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        # Skip interpreter shutdown: a process group a peer abandoned can block in its destructor.
        os._exit(code)


def main_under_torchrun(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(rank, world_size, *args)`` in a script started by ``torchrun`` (env:// rendezvous).

        torchrun --standalone --nproc-per-node 2 my_script.py

    Joins the group torchrun describes in the environment (RANK, WORLD_SIZE, MASTER_ADDR, ...),
    with NCCL when every local rank has a GPU, calls ``fn`` and leaves the group.
    """
    import torch
    import torch.distributed as dist

    world_size = int(os.environ["WORLD_SIZE"])
    backend = default_backend(int(os.environ.get("LOCAL_WORLD_SIZE", world_size)))
    if backend == "nccl":
        torch.cuda.set_device(device_for(backend, int(os.environ.get("LOCAL_RANK", 0))))
    dist.init_process_group(backend)
    try:
        return fn(dist.get_rank(), dist.get_world_size(), *args)
    finally:
        dist.destroy_process_group()

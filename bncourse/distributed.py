"""Run one function on several processes at once (a torch.distributed group), from a notebook.

``run_distributed(fn, world_size)`` starts ``world_size`` worker processes, joins them in one
``torch.distributed`` process group (gloo on the CPU; NCCL when every worker has a CUDA GPU),
calls ``fn(rank, world_size, *args)`` on each and returns the ranks' return values, rank 0 first:

    def work(rank, world_size):
        t = torch.tensor([float(rank + 1)], device=rank_device())   # cuda:rank with NCCL, else cpu
        dist.all_reduce(t)                     # sum over the ranks
        return t.item()

    run_distributed(work, world_size=2)       # [3.0, 3.0]

A collective's tensors must live where its backend works: NCCL takes CUDA tensors only (a CPU
tensor fails with "No backend type associated with device type cpu"), gloo takes CPU tensors.
``rank_device()`` (inside a worker) and ``device_for(backend, rank)`` give that device
(``bncourse.distributed_devices``; importable from here too).

It is built to be safe to call from a JupyterLab kernel, nbgrader's grading kernel and pytest:

- ``fn`` may be defined in the notebook: it travels to the workers by value (cloudpickle), with
  the notebook's environment variables, working folder and ``sys.path``.
- Workers are forked from a server process that imported torch once (multiprocessing's
  ``forkserver``; ``spawn`` where there is no fork), never from the kernel itself: the kernel's
  threads, CUDA state and sockets stay out of the workers.
- The first worker that raises ends the run: ``WorkerError`` names the rank and carries its
  traceback. A worker that dies (a crash, ``os._exit``, a signal) or hangs past ``timeout``
  seconds ends the run the same way; a hung worker's stack (``faulthandler``) is in the error.
  The other workers are stopped; the kernel never hangs.
- The group meets through a file in a fresh temporary folder (``file://`` rendezvous), and gloo
  listens on ports the operating system picks: parallel runs (pytest-xdist, several grading
  workers) never collide on a port.
- Everything a worker prints, on Python's streams or on file descriptors 1 and 2 (C++ warnings),
  is captured; its standard output is shown in the caller's output as ``[rank r] ...`` lines, its
  standard error only inside a ``WorkerError``. Nothing reaches the kernel's stderr (nbgrader
  scores a test cell 0 when something does).

This module is the caller's side: start the ranks, wait, collect their values or the first failure.
What each rank does (join the group, call ``fn``, write its value or error) is
``bncourse.distributed_rank``. The same worker function runs under ``torchrun`` as a script: see
``main_under_torchrun`` (there; importable from here too).
"""

from __future__ import annotations

import contextlib
import linecache
import multiprocessing as mp
import multiprocessing.connection
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

# device_for, rank_device and main_under_torchrun live beside this module; learners import them from here.
from bncourse.distributed_devices import default_backend, device_for, rank_device  # noqa: F401
from bncourse.distributed_rank import main_under_torchrun, run_rank  # noqa: F401

DEFAULT_TIMEOUT = 120.0  # seconds for a whole run; the grading kernel's cell timeout is 300 s
# Imported once by the forkserver, so each worker starts with them loaded (torch takes seconds).
_PRELOAD = ["torch", "torch.distributed", "torch.nn.parallel", "numpy", "cloudpickle", "bncourse.distributed",
            "bncourse.nn_sync", "bncourse.models", "bncourse.checks.sync_batchnorm",
            "bncourse.experiments.distributed_bn"]
_context = None


class WorkerError(RuntimeError):
    """A worker raised, died or hung; ``rank`` says which (the first one, when several did).

    Attributes:
        rank: the worker's rank.
        reason: ``"raised"``, ``"died"`` or ``"timed out"``.
        exc_type, exc_message: the exception the worker raised ('' unless ``reason == "raised"``).
        remote_traceback: the worker's traceback (or, for a hung worker, its stack when stopped).
        outputs: rank -> what that worker printed (stdout and stderr), for every rank.
    """

    def __init__(self, rank: int, reason: str, summary: str, remote_traceback: str = "",
                 exc_type: str = "", exc_message: str = "", outputs: dict | None = None):
        self.rank = rank
        self.reason = reason
        self.summary = summary
        self.exc_type = exc_type
        self.exc_message = exc_message
        self.remote_traceback = remote_traceback
        self.outputs = outputs or {}
        text = f"rank {rank} {summary}"
        if remote_traceback:
            text += f"\n\n--- on rank {rank} ---\n{remote_traceback.rstrip()}"
        super().__init__(text)

    def __reduce__(self):
        return (WorkerError, (self.rank, self.reason, self.summary, self.remote_traceback, self.exc_type,
                              self.exc_message, self.outputs))


@dataclass
class _Rank:
    rank: int
    process: Any
    out: Path
    err: Path
    result: Path
    error: Path
    exited_at: float | None = None
    captured: dict = field(default_factory=dict)


def _get_context():
    """multiprocessing's forkserver (torch imported once, in the server), or spawn without fork."""
    global _context
    if _context is None:
        if "forkserver" in mp.get_all_start_methods():
            ctx = mp.get_context("forkserver")
            ctx.set_forkserver_preload(_PRELOAD)
        else:  # pragma: no cover - Windows
            ctx = mp.get_context("spawn")
        _context = ctx
    return _context


_START_LOCK = threading.Lock()


@contextlib.contextmanager
def _without_main_module():
    """Start workers without re-importing the caller's ``__main__`` in them.

    multiprocessing's forkserver and spawn run the parent's main module (a script, a notebook's
    kernel launcher) again in every child, which re-runs a script's top level or costs seconds.
    The worker target lives in ``bncourse.distributed_rank`` and the function travels by value, so
    the children need no main module: leave it out of the start-up data.
    """
    from multiprocessing import spawn

    with _START_LOCK:
        original = spawn.get_preparation_data

        def preparation_data(name):
            data = original(name)
            data.pop("init_main_from_name", None)
            data.pop("init_main_from_path", None)
            return data

        spawn.get_preparation_data = preparation_data
        try:
            yield
        finally:
            spawn.get_preparation_data = original


def _virtual_source_lines() -> dict:
    """linecache entries of code that has no file on disk (notebook cells), for worker tracebacks."""
    out = {}
    for name, entry in list(linecache.cache.items()):
        if isinstance(entry, tuple) and len(entry) == 4 and name and not os.path.exists(name):
            out[name] = entry
    return out


def run_distributed(
    fn: Callable[..., Any],
    world_size: int = 2,
    args: Sequence[Any] = (),
    *,
    rank_args: Sequence[Sequence[Any]] | None = None,
    backend: str | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    threads: int = 1,
    show_output: bool = True,
) -> list[Any]:
    """Call ``fn(rank, world_size, *args)`` on ``world_size`` processes in one process group.

    Args:
        fn: the worker function; it may be defined in a notebook. It can use ``torch.distributed``
            (``dist.all_reduce`` ...) directly: the group is initialized before it is called.
        world_size: the number of processes (ranks 0 .. world_size - 1).
        args: further positional arguments, the same for every rank (sent by value).
        rank_args: instead of ``args``, each rank's own arguments (``rank_args[r]`` for rank r, one
            sequence per rank): a rank then holds only its own data (a rank's slice of a batch).
        backend: ``"gloo"`` or ``"nccl"``; default ``default_backend(world_size)``.
        timeout: seconds the whole run may take; then the workers are stopped and ``WorkerError``
            names the ranks that had not finished.
        threads: torch CPU threads per worker (1: the workers share the machine's cores).
        show_output: print what the workers printed, as ``[rank r] ...`` lines.

    Returns:
        The ranks' return values, ``[value of rank 0, value of rank 1, ...]``.

    Raises:
        WorkerError: a worker raised (its traceback included), died or did not finish in time.
        ValueError, TypeError: bad arguments, named.
    """
    if not callable(fn):
        raise TypeError(f"run_distributed needs a function to run on each rank, got {type(fn).__name__}")
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a whole number >= 1, got {world_size!r}")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    backend = backend or default_backend(world_size)
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl', got {backend!r}")

    if rank_args is not None:
        if args:
            raise ValueError("give either args (the same for every rank) or rank_args (one per rank), not both")
        if len(rank_args) != world_size:
            raise ValueError(f"rank_args needs one sequence of arguments per rank ({world_size}), got {len(rank_args)}")
    import cloudpickle

    try:
        payloads = [cloudpickle.dumps((fn, tuple(rank_args[r] if rank_args is not None else args)))
                    for r in range(world_size)]
    except Exception as exc:  # noqa: BLE001 - say which object could not travel
        raise TypeError(f"the function or its arguments cannot be sent to the workers: {type(exc).__name__}: {exc}") from exc
    from bncourse.run_size import current_size

    setup = {  # the ranks run at this process's size (``bncourse.run_size.use_size`` included)
        "environ": {**os.environ, **current_size().kernel_env()}, "cwd": os.getcwd(), "sys_path": list(sys.path),
        "lines": _virtual_source_lines(), "backend": backend, "timeout": float(timeout), "threads": int(threads),
    }
    ctx = _get_context()
    run_dir = Path(tempfile.mkdtemp(prefix="bncourse-dist-"))
    ranks: list[_Rank] = []
    try:
        for r in range(world_size):
            rk = _Rank(r, None, run_dir / f"rank{r}.out", run_dir / f"rank{r}.err",
                       run_dir / f"rank{r}.result", run_dir / f"rank{r}.error")
            rk.process = ctx.Process(target=run_rank, args=(r, world_size, str(run_dir), setup, payloads[r]),
                                     name=f"bncourse-rank{r}", daemon=True)
            ranks.append(rk)
        with _without_main_module():
            for rk in ranks:
                rk.process.start()
        failure = _wait(ranks, time.monotonic() + timeout, timeout)
        for rk in ranks:
            rk.captured = {"stdout": _read(rk.out), "stderr": _read(rk.err)}
        if show_output:
            _show_output(ranks)
        if failure is not None:
            failure.outputs = {rk.rank: rk.captured for rk in ranks}
            raise failure
        values = []
        for rk in ranks:
            with open(rk.result, "rb") as fh:
                values.append(pickle.load(fh))
        return values
    finally:
        _stop(ranks)
        shutil.rmtree(run_dir, ignore_errors=True)


def _wait(ranks: list[_Rank], deadline: float, timeout: float) -> WorkerError | None:
    """Wait until every rank finished (None) or one failed or time ran out (the error)."""
    pending = {rk.rank: rk for rk in ranks}
    while pending:
        now = time.monotonic()
        if now >= deadline:
            return _timed_out(list(pending.values()), timeout)
        sentinels = {rk.process.sentinel: rk for rk in pending.values()}
        ready = mp.connection.wait(list(sentinels), timeout=min(0.5, max(0.0, deadline - now)))
        finished = []
        for s in ready:
            rk = sentinels[s]
            rk.process.join()
            rk.exited_at = time.time()
            finished.append(rk)
        failed = [rk for rk in finished if rk.process.exitcode != 0 or not rk.result.exists()]
        if failed:
            # Several may fail in one wait (a rank raised, so its peer's collective broke):
            # the earliest error is the cause.
            return min((_failure(rk) for rk in failed), key=lambda e: e[0])[1]
        for rk in finished:
            del pending[rk.rank]
    return None


def _failure(rk: _Rank) -> tuple[float, WorkerError]:
    if rk.error.exists():
        try:
            with open(rk.error, "rb") as fh:
                info = pickle.load(fh)
            where = f" ({info['where']})" if info.get("where") else ""
            summary = f"raised {info['type']}: {info['message']}{where}"
            return info["time"], WorkerError(rk.rank, "raised", summary, info["traceback"], info["type"], info["message"])
        except Exception:  # noqa: BLE001 - a half-written error file: fall through to the exit code
            pass
    code = rk.process.exitcode
    if code is not None and code < 0:
        try:
            how = f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            how = f"killed by signal {-code}"
    else:
        how = f"exited with code {code}"
    tail = _read(rk.err)[-2000:]
    summary = f"died ({how}) before returning a result"
    return rk.exited_at or time.time(), WorkerError(rk.rank, "died", summary, tail)


def _timed_out(pending: list[_Rank], timeout: float) -> WorkerError:
    """Dump the stacks of the unfinished ranks (faulthandler on SIGUSR1) and name them."""
    for rk in pending:
        if hasattr(signal, "SIGUSR1") and rk.process.is_alive():
            try:
                os.kill(rk.process.pid, signal.SIGUSR1)
            except OSError:
                pass
    time.sleep(0.5)
    names = ", ".join(str(rk.rank) for rk in pending)
    first = pending[0]
    stack = _read(first.err)[-4000:]
    plural = "s" if len(pending) > 1 else ""
    summary = (f"did not finish within {timeout:g} s (still running: rank{plural} {names}); "
               f"a rank stuck in a collective waits for a peer that never joins it, or it loops")
    return WorkerError(first.rank, "timed out", summary, stack)


def _stop(ranks: list[_Rank]) -> None:
    """End every worker still running: SIGTERM, then SIGKILL after a moment."""
    alive = [rk.process for rk in ranks if rk.process is not None and rk.process.is_alive()]
    for p in alive:
        p.terminate()
    end = time.monotonic() + 2.0
    for p in alive:
        p.join(max(0.0, end - time.monotonic()))
    for p in alive:
        if p.is_alive():
            p.kill()
            p.join(2.0)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _show_output(ranks: list[_Rank]) -> None:
    for rk in ranks:
        text = rk.captured.get("stdout", "")
        for line in text.splitlines():
            print(f"[rank {rk.rank}] {line}")

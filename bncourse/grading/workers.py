"""The local grading workers behind ``bncourse grade --jobs N``: N processes, one submission each at a time.

``run_local(tasks, jobs)`` yields the outcome of ``grade_submission`` for every task, as they
finish, from ``jobs`` worker processes on this machine. What it guarantees:

- **A dead worker costs a retry.** A worker killed while it grades (``kill -9``, the out-of-memory
  killer, a kernel that kills its parent) is replaced; its submission is tried again on a fresh
  worker, up to ``tries`` times, then comes back failed with the reason ("the worker grading it
  died on every try"). It is never lost and never half-written: outcomes are whole messages, and
  only the caller writes the gradebook.
- **No kernel outlives its submission.** Each worker is a child subreaper (Linux), so a process a
  kernel leaves behind stays under the worker; after every submission the worker kills whatever
  still runs under it. The caller keeps a list of each busy worker's processes and kills them
  when the worker dies.
- **The workers see the caller's environment** (``BNCOURSE_CELL_TIMEOUT`` and the rest) as it is
  when grading starts, whatever process they were forked from.

Workers come from the grading forkserver (``_context()``): nbgrader is imported once, in the
server, and nothing of the calling process (a Jupyter kernel's sockets, torch's threads) is
inherited. Python keeps one forkserver per process, shared with ``bncourse.distributed``; which
of the two starts it first only changes what is preloaded, never what a worker sees.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import socket
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import wait
from typing import Iterator

from bncourse.grading.submission import GradingTask, Outcome, grade_safely

_PRELOAD = ["bncourse.grading.workers", "nbgrader.apps", "nbgrader.api"]
POLL_SECONDS = 0.5  # how often the caller refreshes its list of each worker's processes


def _context():
    """multiprocessing's forkserver with the grading code preloaded (spawn where there is no fork)."""
    if "forkserver" not in mp.get_all_start_methods():  # pragma: no cover - Windows
        return mp.get_context("spawn")
    ctx = mp.get_context("forkserver")
    try:
        ctx.set_forkserver_preload(_PRELOAD)
    except Exception:  # noqa: BLE001 - only a hint to the server; never fatal
        pass
    return ctx


def _become_subreaper() -> None:
    """Linux: orphans of this process's descendants (a kernel's children) are re-parented here."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except Exception:  # noqa: BLE001 - without it, the caller's list of processes still applies
        pass


def _descendants(pid: int) -> list:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def kill_processes(processes) -> None:
    """SIGKILL each psutil.Process that is still the process it was (pid reuse is checked)."""
    import psutil

    for p in processes:
        try:
            p.kill()
        except psutil.Error:
            pass
    psutil.wait_procs([p for p in processes], timeout=5)


def _kill_own_descendants() -> None:
    """Kill every process under this one, and reap them (kernels, their children, orphans)."""
    kill_processes(_descendants(os.getpid()))


def _worker_main(conn, environ: dict) -> None:
    """A worker's life: grade the tasks that arrive on ``conn`` one at a time, until ``None``."""
    os.environ.clear()
    os.environ.update(environ)
    _become_subreaper()
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):
            break
        if task is None:
            break
        out = grade_safely(task)
        _kill_own_descendants()  # a kernel that outlived its notebook, and anything it started
        conn.send(out)
    _kill_own_descendants()


@dataclass
class _Worker:
    process: object
    conn: object
    task: GradingTask | None = None
    attempt: int = 0  # the task's try on this worker (1 = first)
    processes: list = field(default_factory=list)  # its descendants when last looked at


def run_local(tasks: list[GradingTask], jobs: int, tries: int = 3) -> Iterator[Outcome]:
    """Outcomes of ``grade_submission`` over ``tasks`` in ``jobs`` worker processes, as they finish.

    Each outcome's ``attempts`` says how many tries it took; a submission whose worker died on
    each of ``tries`` tries comes back failed with that reason.
    """
    if tries < 1:
        raise ValueError(f"tries must be at least 1, got {tries!r}")
    ctx, environ = _context(), dict(os.environ)
    pending = deque((task, 1) for task in tasks)
    workers: list[_Worker] = []

    def start_worker() -> _Worker:
        mine, theirs = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(theirs, environ), name="bncourse-grade-worker", daemon=True)
        proc.start()
        theirs.close()
        w = _Worker(proc, mine)
        workers.append(w)
        return w

    try:
        while pending or any(w.task is not None for w in workers):
            while pending and (len(workers) < jobs or any(w.task is None for w in workers)):
                w = next((w for w in workers if w.task is None), None) or start_worker()
                w.task, w.attempt = pending.popleft()
                w.conn.send(w.task)
            busy = [w for w in workers if w.task is not None]
            ready = wait([w.conn for w in busy] + [w.process.sentinel for w in busy], timeout=POLL_SECONDS)
            for w in busy:
                if w.conn not in ready and w.process.sentinel not in ready:
                    w.processes = _descendants(w.process.pid) or w.processes
                    continue
                task, attempt = w.task, w.attempt
                out = None
                if w.conn.poll():
                    try:
                        out = w.conn.recv()
                    except (EOFError, OSError):
                        out = None
                if out is not None:
                    w.task, w.processes = None, []
                    out.attempts = attempt
                    yield out
                    continue
                # The worker died with the submission: its processes go too, the submission is retried.
                w.process.join(5)
                kill_processes(w.processes)
                workers.remove(w)
                w.conn.close()
                code = w.process.exitcode
                if attempt < tries:
                    pending.appendleft((task, attempt + 1))
                else:
                    how = f"signal {-code}" if code is not None and code < 0 else f"exit status {code}"
                    yield Outcome.failed(task, f"the worker grading it died on every try ({tries} tries, the last "
                                                f"with {how}): the submission may crash or exhaust its machine",
                                          f"{socket.gethostname()} pid {w.process.pid}", tries)
    finally:
        _stop(workers)


def _stop(workers: list[_Worker]) -> None:
    """Ask idle workers to finish; kill busy ones (the caller stopped early) and all they started."""
    for w in workers:
        try:
            if w.task is None:
                w.conn.send(None)
        except OSError:
            pass
    deadline = time.monotonic() + 10
    for w in workers:
        if w.task is None:
            w.process.join(max(0.1, deadline - time.monotonic()))
        if w.process.is_alive():
            processes = _descendants(w.process.pid) or w.processes
            w.process.kill()
            w.process.join(5)
            kill_processes(processes)
        w.conn.close()

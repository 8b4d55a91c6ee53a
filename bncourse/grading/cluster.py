"""Autograde on several machines: the submissions of one assignment as tasks on dask.distributed.

``bncourse grade ASSIGNMENT --scheduler tcp://HOST:8786`` (``grade(..., scheduler=...)``) sends
each submission, as one ``grade_submission`` task (the same task ``--jobs N`` runs in local
processes), to the workers of a running scheduler that the instructor started:

    dask scheduler                                          # on one machine; prints tcp://HOST:8786
    dask worker tcp://HOST:8786 --nthreads 1 --nworkers 2   # on each grading machine

Every worker must see the course folder at the same path (shared storage, e.g. NFS on a
JupyterHub) and have the course's Python environment; workers only read the course. Each task
returns the student's private gradebook and autograded files as data, and only this process
writes the course's gradebook and ``autograded/``, one finished submission at a time.

A worker that dies mid-submission (machine lost, ``kill -9``, out of memory) costs a retry: the
scheduler gives the submission to another worker, up to its ``allowed-failures`` setting (3 by
default). A submission that kills every worker that tries it, or raises on every try, comes back
as a failed outcome with its reason and is recorded with 0 points, never half-written.

Submissions are handed out one per free worker thread (the rest wait here), so a dying worker
takes at most its own submissions with it and workers that join later get work.
``LocalDaskProcesses`` starts a scheduler and workers on this machine exactly as above (tests and
the benchmark use it).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import deque
from dataclasses import replace
from typing import Iterator
from urllib.parse import urlparse

from bncourse.grading.submission import GradingTask, Outcome, grade_submission

#: Environment variables forwarded to the workers' nbgrader config (e.g. BNCOURSE_CELL_TIMEOUT):
#: the course's nbgrader_config.py reads them, and it must read what the instructor set here.
FORWARDED_ENV_PREFIX = "BNCOURSE_"


def _client(address: str, timeout: float):
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("--scheduler needs dask.distributed: pip install 'bncourse[cluster]'") from None
    try:
        return Client(address, timeout=f"{timeout}s", set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ValueError(f"could not reach the dask scheduler at {address!r}: {exc}") from None


def _threads_by_host(client) -> dict[str, int]:
    """{host: worker threads on it}, from the scheduler's view of its workers."""
    out: dict[str, int] = {}
    for info in client.scheduler_info(n_workers=-1)["workers"].values():
        out[info["host"]] = out.get(info["host"], 0) + int(info["nthreads"])
    return out


def _history(client, key) -> tuple[int, str]:
    """(workers that died while running ``key``, a worker it erred on): the scheduler's record."""

    def history(dask_scheduler, key=key):  # defined here so that it travels by value
        ts = dask_scheduler.tasks.get(key)
        if ts is None:
            return 0, ""
        return ts.suspicious, ",".join(sorted(ts.erred_on or ()))

    try:
        deaths, erred_on = client.run_on_scheduler(history)
        return int(deaths), str(erred_on)
    except Exception:  # noqa: BLE001 - a missing record only loses the "retried" note
        return 0, ""


def run_on_scheduler(address: str, tasks: list[GradingTask], *, connect_timeout: float = 30,
                     no_worker_timeout: float = 600) -> Iterator[Outcome]:
    """Outcomes of ``grade_submission`` for ``tasks`` on the scheduler's workers, as they finish.

    Waits up to ``no_worker_timeout`` seconds for a worker whenever none is connected; after that
    the submissions still waiting come back failed ("no dask worker ..."), never silently dropped.
    """
    from distributed import KilledWorker, wait

    client = _client(address, connect_timeout)
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIX)}
    pending, running = deque(tasks), {}
    no_worker_since = None
    try:
        while pending or running:
            hosts = _threads_by_host(client)
            capacity = sum(hosts.values())
            if capacity == 0:
                no_worker_since = no_worker_since or time.monotonic()
                if time.monotonic() - no_worker_since > no_worker_timeout:
                    reason = f"no dask worker was connected to {address} for {no_worker_timeout:.0f} s"
                    for fut, task in running.items():
                        fut.cancel()
                        yield Outcome.failed(task, reason)
                    for task in pending:
                        yield Outcome.failed(task, reason)
                    return
            else:
                no_worker_since = None
            while pending and len(running) < capacity:
                task = replace(pending.popleft(), kernel_threads=hosts, env=env)
                key = f"grade-{task.assignment}-{task.student}-{uuid.uuid4().hex[:8]}"
                running[client.submit(grade_submission, task, key=key, pure=False, retries=1)] = task
            if not running:
                time.sleep(1)
                continue
            try:
                with client.as_current():
                    done = wait(list(running), timeout=2, return_when="FIRST_COMPLETED").done
            except TimeoutError:
                continue
            for fut in done:
                task = running.pop(fut)
                deaths, erred_on = _history(client, fut.key)
                attempts = 1 + deaths
                try:
                    out = fut.result()
                except KilledWorker as exc:  # every try ended with a dead worker
                    attempts = deaths
                    last = getattr(getattr(exc, "last_worker", None), "address", "") or ""
                    out = Outcome.failed(task, f"the worker grading it died on every try ({attempts} tries, "
                                                f"the last on {last or 'an unknown worker'}): the submission may "
                                                "crash or exhaust its machine", last, attempts)
                except Exception as exc:  # noqa: BLE001 - raised twice on a worker (retries=1)
                    out = Outcome.failed(task, f"grading raised {type(exc).__name__} on every try: "
                                                f"{str(exc)[:300]}", erred_on, attempts)
                out.attempts = attempts
                fut.release()
                yield out
    finally:
        for fut in running:
            fut.cancel()
        client.close()


# --- a scheduler and workers on this machine, started as an instructor would ---------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _dask_command() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "dask")
    return [exe] if os.path.exists(exe) else [shutil.which("dask") or "dask"]


class LocalDaskProcesses:
    """``dask scheduler`` and N ``dask worker`` commands as processes on this machine.

    ``kill_worker(i)`` ends a worker the way a lost machine does (``kill -9`` of the command, the
    worker process under it and the kernel it is running).

        with LocalDaskProcesses(n_workers=2) as cluster:
            grade("01_why_normalize", course, scheduler=cluster.address)
    """

    def __init__(self, n_workers: int = 2, nthreads: int = 1, scheduler_env: dict | None = None,
                 worker_env: dict | None = None, start_timeout: float = 120):
        self.n_workers, self.nthreads, self.start_timeout = n_workers, nthreads, start_timeout
        self.scheduler_env, self.worker_env = scheduler_env or {}, worker_env or {}
        self.address = f"tcp://127.0.0.1:{free_port()}"
        self.scheduler: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def _popen(self, args: list[str], env: dict) -> subprocess.Popen:
        return subprocess.Popen(_dask_command() + args, env={**os.environ, **env}, start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_worker(self, name: str) -> subprocess.Popen:
        proc = self._popen(["worker", self.address, "--nthreads", str(self.nthreads), "--nworkers", "1",
                            "--name", name, "--no-dashboard"], self.worker_env)
        self.workers.append(proc)
        return proc

    def __enter__(self) -> "LocalDaskProcesses":
        port = urlparse(self.address).port
        self.scheduler = self._popen(["scheduler", "--host", "127.0.0.1", "--port", str(port),
                                      "--no-dashboard"], self.scheduler_env)
        try:
            for i in range(self.n_workers):
                self.start_worker(f"worker-{i}")
            self.wait_for_workers(self.n_workers)
        except BaseException:
            self.close()
            raise
        return self

    def wait_for_workers(self, n: int) -> None:
        from distributed import Client

        with Client(self.address, timeout=f"{self.start_timeout}s", set_as_default=False) as client:
            client.wait_for_workers(n, timeout=self.start_timeout)

    def worker_processes(self, i: int) -> list:
        """psutil.Process of worker ``i``'s command and everything under it (nanny, worker, kernels)."""
        import psutil

        try:
            top = psutil.Process(self.workers[i].pid)
            return [top, *top.children(recursive=True)]
        except psutil.Error:
            return []

    def kill_worker(self, i: int) -> None:
        """``kill -9`` of worker ``i`` and everything under it, as when its machine is lost.

        (Kernels run in process groups of their own, so the process tree is what is killed.)
        """
        for proc in self.worker_processes(i):
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.workers[i].wait()

    def close(self) -> None:
        leftovers = [p for i in range(len(self.workers)) for p in self.worker_processes(i)[1:]]
        for proc in [*self.workers, self.scheduler]:
            if proc is not None:
                try:  # the whole group: a kernel a worker left behind goes too
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    continue
        for proc in [*self.workers, self.scheduler]:
            if proc is None:
                continue
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        for proc in leftovers:  # a kernel still running in its own process group
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass

    def __exit__(self, *exc) -> None:
        self.close()

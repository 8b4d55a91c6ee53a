"""One submission's autograde: the task a grading worker runs, on this machine or on a dask worker.

``grade_submission(task)`` runs nbgrader's own autograde for one student in a private folder (a
copy of the submission, a private copy of the gradebook) and returns the private gradebook and
the autograded files as data; ``bncourse.grading.parallel.grade`` merges them. The local workers
(``workers``) and dask (``cluster``) run it the same way.
"""

from __future__ import annotations

import os
import shutil
import socket
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from bncourse.grading.config import load_config
from bncourse.grading.gradebook import alembic_on_path
from bncourse.run_size import RunSize


def worker_label() -> str:
    """Who is grading: a dask worker's address inside a dask worker, else "host pid N"."""
    if "distributed" in sys.modules:
        try:
            from distributed import get_worker

            return str(get_worker().address)
        except (ImportError, ValueError):
            pass
    return f"{socket.gethostname()} pid {os.getpid()}"


def _kernel_threads(spec, label: str) -> int | None:
    """BLAS/torch threads for one kernel: an int, or {host: worker threads on that host} (dask)."""
    if isinstance(spec, dict):
        from urllib.parse import urlparse

        slots = spec.get(urlparse(label).hostname or "", 0) or 1
        return max(1, (os.cpu_count() or 1) // slots)
    return spec


@contextmanager
def _environ(values: dict[str, str]):
    """``os.environ`` with ``values`` set for the duration, then exactly as before."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class GradingTask:
    """One submission to grade, as a worker (a local process or a dask worker) receives it."""

    student: str
    assignment: str
    course_dir: str                        # the course folder, at the same path on every worker
    template: bytes                        # the gradebook the worker's private copy starts from (SQLite)
    size: RunSize = RunSize.GRADING        # the kernel's size
    sandbox: bool = True                   # False: unsandboxed, as the instructor asked
    hidden_seed: int | None = None         # the run's hidden-case seed
    rejudge_server: str = ""               # the re-judging server's socket ('': the worker's own)
    kernel_threads: int | dict[str, int] | None = None  # BLAS threads, or {host: worker threads} (dask)
    env: dict[str, str] = field(default_factory=dict)   # environment set while grading (dask workers)


@dataclass
class Outcome:
    """What grading one submission gave: nbgrader's verdict, its private gradebook and autograded files."""

    student: str
    success: bool
    log: str = ""
    error: str = ""
    reason: str = ""                          # why it could not be graded ('' if it was)
    gradebook: bytes | None = None            # the private SQLite gradebook, as bytes
    autograded: dict[str, bytes] | None = None  # relative path -> bytes of the autograded files
    seconds: float = 0.0
    worker: str = ""                          # "host pid N" or a dask worker's address
    attempts: int = 1

    @classmethod
    def failed(cls, task: GradingTask, reason: str, worker: str = "", attempts: int = 1) -> "Outcome":
        """The outcome of a task that could not be graded, and why (it is recorded with 0 points)."""
        return cls(task.student, False, error=reason, reason=reason, worker=worker, attempts=attempts)


def grade_submission(task: GradingTask) -> Outcome:
    """One student's nbgrader autograde in a private folder: the task a worker runs (pool or dask).

    Reads the course (``task.course_dir``, the same path on every machine) and never writes to
    it: the submission is copied to a local folder, the gradebook is a private copy of
    ``task.template`` (SQLite bytes), and nbgrader's autograded files land locally too. Returns
    them as data (an ``Outcome``); the main process merges them.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    start = time.perf_counter()
    label = worker_label()
    course_dir, student, assignment = Path(task.course_dir), task.student, task.assignment
    submission = course_dir / "submitted" / student / assignment
    if not submission.is_dir():
        return Outcome.failed(task, f"{submission} is not reachable from {label}: every worker must see the "
                                     "course folder at the same path (shared storage)", label)
    alembic_on_path()
    kernel_env = RunSize(task.size).kernel_env()
    threads = _kernel_threads(task.kernel_threads, label)
    if threads:  # N kernels at once: each gets its share of the cores, not a full BLAS/torch pool
        kernel_env.update({k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    with tempfile.TemporaryDirectory(prefix="bncourse-grade-") as tmp, _environ(task.env):
        tmp = Path(tmp)
        shutil.copytree(submission, tmp / "submitted" / student / assignment)
        db_file = tmp / "gradebook.db"
        db_file.write_bytes(task.template)
        cfg = load_config(course_dir, **{
            "CourseDirectory.db_url": f"sqlite:///{db_file}",
            "CourseDirectory.submitted_directory": str(tmp / "submitted"),
            "CourseDirectory.autograded_directory": str(tmp / "autograded"),
        })
        cfg.GradingExecute.kernel_env = kernel_env
        cfg.GradingExecute.sandbox = bool(task.sandbox)
        if task.hidden_seed is not None:
            cfg.GradingExecute.hidden_seed = int(task.hidden_seed)
        cfg.GradingKernelManager.ipc_dir = str(tmp)  # a killed kernel's socket files go with the folder
        if task.rejudge_server:
            cfg.GradingExecute.rejudge_server = task.rejudge_server
        api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
        with warnings.catch_warnings():
            # nbgrader's autograde makes SQLAlchemy say "Object of type <...> not in session, add operation
            # along ... will not proceed" for every submission: its own chatter, not the instructor's concern.
            warnings.filterwarnings("ignore", message=r"Object of type <\w+> not in session")
            result = api.autograde(assignment, student, force=True, create=True)
        graded = tmp / "autograded" / student / assignment
        files = {str(p.relative_to(graded)): p.read_bytes() for p in sorted(graded.rglob("*")) if p.is_file()}
        return Outcome(student, bool(result.get("success")), log=str(result.get("log", ""))[-20000:],
                       error=str(result.get("error", ""))[-5000:], gradebook=db_file.read_bytes(), autograded=files,
                       seconds=time.perf_counter() - start, worker=label)


def grade_safely(task: GradingTask) -> Outcome:
    """``grade_submission`` in a pool process: an exception becomes a failed outcome with its reason."""
    try:
        return grade_submission(task)
    except Exception as exc:  # noqa: BLE001 - one broken submission never stops the others
        return Outcome.failed(task, f"grading raised {type(exc).__name__}: {str(exc)[:300]}", worker_label())

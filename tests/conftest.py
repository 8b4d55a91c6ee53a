"""Shared test set-up: fast mode, a headless matplotlib, and a scratch copy of the course."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("BNCOURSE_FAST", "1")
os.environ.setdefault("MPLBACKEND", "Agg")
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One thread per worker (and per kernel it starts): the workers already fill the cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
# nbgrader runs `alembic` from PATH: make this interpreter's scripts folder visible even when the
# environment was not activated (the README's commands call .venv/bin/python directly).
_bin = os.path.dirname(sys.executable)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")

REPO = Path(__file__).resolve().parent.parent
COURSE = REPO / "notebooks"
GENERATED = ("release", "submitted", "autograded", "feedback", "gradebook.db", ".nbgrader.log", ".ipynb_checkpoints")


@pytest.fixture
def course_copy(tmp_path, monkeypatch) -> Path:
    """A private copy of the nbgrader course (source + config), with its own exchange folder."""
    dest = tmp_path / "course"
    shutil.copytree(COURSE, dest, ignore=shutil.ignore_patterns(*GENERATED, "__pycache__"))
    monkeypatch.setenv("BNCOURSE_EXCHANGE", str(tmp_path / "exchange"))
    return dest



def pytest_terminal_summary(terminalreporter):
    """Say where the browser tests put their screenshots (recorded as a test property)."""
    folders = {value for report in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
               for name, value in getattr(report, "user_properties", []) if name == "screenshots"}
    for value in sorted(folders):
        terminalreporter.write_line(f"browser screenshots in {value}")


# The files that take minutes, longest first (seconds measured in CI's fresh-clone run of 2026-12-07,
# 2 workers on 2 cores). pytest-xdist hands whole files to its workers in collection order (the
# README's addopts turn off xdist's own reordering by test count, which left these to the end), so
# starting the long ones first keeps one worker from being left with a long file at the end while
# the others idle; the many short files after them even out the workers' ends.
LONGEST_FIRST = (
    "test_fail_closed.py",            # ~370 s: every notebook's fake class (and the library attackers)
    "test_browser.py",                # ~190 s: one learner session in JupyterLab
    "test_postgres.py",               # ~175 s
    "test_grading.py",                # ~120 s
    "test_grading_hardening.py",      # ~100 s
    "what_batchnorm_does.ipynb",      # ~90 s under nbval
    "test_instructor_guide.py",       # ~90 s
    "figure1.ipynb",                  # ~85 s
    "test_cluster.py",                # ~60 s
    "cnns_gpu.ipynb",
    "test_checks_sync_batchnorm.py",
    "test_attacks.py",                # ~45 s
    "test_grading_no_reference.py",   # ~43 s
    "test_attacks_redteam2.py",       # ~40 s
    "inside_the_network.ipynb",       # ~40 s
    "test_experiments_distributed_bn.py",
    "batchnorm_across_devices.ipynb",
    "test_roundtrip.py",              # ~30 s
    "test_grading_size.py",           # ~26 s
    "test_roundtrip_distributed.py",
    "test_distributed.py",
    "test_checks_pytorch.py",
    "test_checks_wrong_solutions.py",
    "test_checks_batchnorm.py",
    "beyond_batchnorm.ipynb",
    "batchnorm_pytorch.ipynb",
    "test_checks_hidden_seed.py",
    "test_workspace.py",
    "folding.ipynb",
    "test_experiments_claims.py",
)


WORKERS_PER_CORE = 2
GB_PER_WORKER = 3  # a worker grading a class: its kernels, nbgrader, the browser or PostgreSQL


@pytest.hookimpl(optionalhook=True)  # an xdist hook: unknown (and harmless) under -p no:xdist
def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: two workers per core, as memory allows.

    The suite mostly waits (kernels starting, nbgrader, PostgreSQL, the browser, sandboxes, cell
    time limits): with one worker per core it kept about 0.8 of 2 cores busy (CI, 2026-12-07). Measured
    in one period on the same busy 2-core machine: 2 workers 2774 s, 4 workers 1616 s, about the same
    CPU time (724 and 813 s); peak memory of the 4 workers under 6 GB.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        with open("/proc/meminfo") as f:
            available_kb = next(int(line.split()[1]) for line in f if line.startswith("MemAvailable:"))
        by_memory = max(1, available_kb // (GB_PER_WORKER * 1024 * 1024))
    except (OSError, StopIteration, ValueError):
        by_memory = cores
    return max(1, min(WORKERS_PER_CORE * cores, by_memory))


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a file is kept (nbval's cells must run in order)

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


# The files that take minutes, longest first (measured with --durations). pytest-xdist hands whole
# files to its workers in collection order, so starting the long ones first keeps one worker from
# being left with a long file at the end while the other idles.
LONGEST_FIRST = ("test_fail_closed.py", "test_postgres.py", "test_grading_hardening.py", "test_grading_size.py",
                 "test_browser.py", "test_instructor_guide.py", "test_grading.py", "test_cluster.py", "cnns_gpu.ipynb", "figure1.ipynb",
                 "what_batchnorm_does.ipynb", "batchnorm_across_devices.ipynb", "test_roundtrip.py",
                 "test_roundtrip_distributed.py", "test_workspace.py")


def pytest_collection_modifyitems(config, items):
    def rank(item) -> int:
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)  # stable: the order inside a file is kept (nbval's cells must run in order)

"""Shared test set-up: fast mode, a headless matplotlib, and a scratch copy of the course."""

from __future__ import annotations

import os
import re
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


# Work units: pytest-xdist hands a whole file to one worker (`--dist loadfile`: a module's fixtures are
# built once), except the files below, whose slow tests share nothing a worker could reuse: there each
# slow part is a unit of its own, so no worker is left with a chain of them while the others idle.
# test_fail_closed.py grades one fake class per assignment (its tests of that class stay together, by
# the assignment in their parameters); test_postgres.py's three grading runs each start their server.
SPLIT_FILES = {
    "tests/test_fail_closed.py": re.compile(r"\[(\d\d_[a-z0-9_]+?)[-\]]"),  # the assignment parameter
    "tests/test_postgres.py": re.compile(r"::(test_does_the_instructor_round_trip\w*|test_do_parallel_autograde\w*"
                                         r"|test_does_a_grading_process_killed\w*)"),
}


def work_unit(nodeid: str) -> str:
    """The unit a test is handed out in: its file, or a part of one of ``SPLIT_FILES``."""
    path = nodeid.split("::", 1)[0]
    part = SPLIT_FILES[path].search(nodeid) if path in SPLIT_FILES else None
    return f"{path}::{part.group(1)}" if part else path


# Units that take a minute or more, with their seconds in the fresh-clone run of 2026-12-08 (4 workers,
# the machine shared with other work: the computing units took up to twice their idle time). They start longest first: pytest-xdist hands out
# units in collection order (the README's addopts turn off its reordering by test count, which left
# these to the end), so no worker is left with a long unit at the end while the others idle; the many
# short ones after them even out the workers' ends.
LONGEST_FIRST = {
    "tests/test_instructor_guide.py": 497,
    "tests/test_cluster.py": 236,
    "tests/test_fail_closed.py::08_batchnorm_across_devices": 231,
    "tests/test_checks_sync_batchnorm.py": 229,
    "tests/test_postgres.py::test_do_parallel_autograde_and_a_grader_in_the_formgrader_share_one_postgres_"
    "gradebook_without_losing_a_grade": 221,
    "tests/test_browser.py": 220,
    "tests/test_postgres.py::test_does_the_instructor_round_trip_on_postgresql_give_the_same_scores_as_on_sqlite":
        208,
    "tests/test_checks_folding.py": 200,
    "tests/test_grading.py": 199,
    "tests/test_grading_no_reference.py": 197,
    "tests/test_grading_hardening.py": 185,
    "tests/test_postgres.py::test_does_a_grading_process_killed_mid_write_leave_every_student_either_old_or_new":
        184,
    "notebooks/source/05_figure1/figure1.ipynb": 141,
    "tests/test_fail_closed.py::10_folding": 140,
    "notebooks/source/07_what_batchnorm_does/what_batchnorm_does.ipynb": 135,
    "tests/test_roundtrip.py": 126,
    "tests/test_fail_closed.py::06_cnns_gpu": 125,
    "tests/test_attacks.py": 124,
    "tests/test_attacks_native.py": 109,
    "tests/test_attacks_redteam2.py": 101,
    "tests/test_grading_sandbox.py": 94,
    "tests/test_grading_size.py": 78,
    "tests/test_fail_closed.py::04_batchnorm_pytorch": 77,
    "tests/test_experiments_claims_workers.py": 75,
    "tests/test_fail_closed.py::05_figure1": 69,
    "notebooks/source/06_cnns_gpu/cnns_gpu.ipynb": 66,
    "tests/test_experiments_distributed_bn.py": 66,
    "notebooks/source/11_inside_the_network/inside_the_network.ipynb": 61,
    "tests/test_checks_pytorch.py": 57,
    "notebooks/source/08_batchnorm_across_devices/batchnorm_across_devices.ipynb": 53,
    "tests/test_fail_closed.py::11_inside_the_network": 52,
    "tests/test_fail_closed.py::09_beyond_batchnorm": 49,
    "tests/test_fail_closed.py::07_what_batchnorm_does": 47,
    "tests/test_roundtrip_distributed.py": 43,
    "tests/test_distributed.py": 42,
    "tests/test_workspace.py": 42,
    "tests/test_attacks_shipped_code.py": 41,
    "notebooks/source/09_beyond_batchnorm/beyond_batchnorm.ipynb": 38,
    "tests/test_checks_hidden_seed.py": 37,
    "tests/test_experiments_norm_family.py": 35,
    "tests/test_diagnostics.py": 34,
    "tests/test_fail_closed.py::03_batchnorm_backward": 33,
    "tests/test_checks_norm_family.py": 29,
    "tests/test_rejudging.py": 28,
    "tests/test_fail_closed.py::01_why_normalize": 27,
    "tests/test_checks_wrong_solutions.py": 24,
    "tests/test_checks_batchnorm.py": 23,
    "tests/test_lms.py": 23,
}


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


@pytest.hookimpl(optionalhook=True)  # an xdist hook, as above
def pytest_xdist_make_scheduler(config, log):
    """`--dist loadfile` with the units of ``work_unit`` (a file, or a part of one of ``SPLIT_FILES``)."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class WorkUnitScheduling(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return work_unit(nodeid)

    return WorkUnitScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    first_seen: dict[str, int] = {}
    for item in items:
        first_seen.setdefault(work_unit(item.nodeid), len(first_seen))

    def rank(item) -> tuple[int, int]:
        unit = work_unit(item.nodeid)
        return -LONGEST_FIRST.get(unit, 0), first_seen[unit]

    items.sort(key=rank)  # stable: the order inside a unit is kept (nbval's cells must run in order)

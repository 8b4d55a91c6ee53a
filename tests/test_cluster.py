"""Does `bncourse grade --scheduler` on real dask processes leave sequential nbgrader autograde's gradebook,
even when a worker is killed mid-submission and a submission kills every worker that grades it?"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest

pytest.importorskip("distributed")

from bncourse import grading  # noqa: E402
from bncourse.grading.cluster import LocalDaskProcesses  # noqa: E402
from gradebook_cells import gradebook_cells  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
ASSIGNMENT = "01_why_normalize"
NOTEBOOK = "why_normalize"
GENERATED = ("release", "submitted", "autograded", "feedback", "gradebook.db", ".nbgrader.log",
             ".ipynb_checkpoints", "grading_reports", "__pycache__")
CONFIG_LINE = "\nfrom bncourse.grading import configure_nbgrader\nconfigure_nbgrader(c)\n"
# A submission that takes down whatever grades it: its kernel kills its parent, the grading process.
KILL_PARENT = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)"


def _course(root: Path) -> Path:
    """A course with 01 generated and three submissions: the solution, the blank release, one wrong answer."""
    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns(*GENERATED))
    config = root / "nbgrader_config.py"
    if "configure_nbgrader" not in config.read_text():
        config.write_text(config.read_text() + CONFIG_LINE)
    gen = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT], cwd=root,
                         capture_output=True, text=True, timeout=600)
    assert gen.returncode == 0, gen.stderr[-2000:]
    source = nbformat.read(root / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    release = nbformat.read(root / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    wrong = nbformat.reads(nbformat.writes(source), as_version=4)
    for cell in wrong.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "min_max_scale":
            cell.source = "def min_max_scale(X_train, X_test):\n    return X_train / X_train.max(0), X_test / X_train.max(0)\n"
    for student, nb in {"ada": source, "bob": release, "cy": wrong}.items():
        dest = root / "submitted" / student / ASSIGNMENT
        dest.mkdir(parents=True)
        nbformat.write(nb, dest / f"{NOTEBOOK}.ipynb")
    return root


def _graded_outputs(course: Path, student: str) -> dict:
    """What feedback shows of each graded cell: its outputs' types and error names, from autograded/."""
    nb = nbformat.read(course / "autograded" / student / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    return {c.metadata["nbgrader"]["grade_id"]: [(o.output_type, o.get("ename")) for o in c.get("outputs", [])]
            for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade")}


def _grading_student(processes) -> str | None:
    """The student whose notebook a kernel among ``processes`` (a worker's tree) is running, if any."""
    import psutil

    for p in processes:
        try:
            if "ipykernel" in " ".join(p.cmdline()):
                parts = Path(p.cwd()).parts
                if ASSIGNMENT in parts:
                    return parts[parts.index(ASSIGNMENT) - 1]
        except psutil.Error:
            continue
    return None


@pytest.mark.slow
def test_does_a_killed_worker_cost_only_a_retry_and_the_gradebook_equal_sequential_autograde(tmp_path, monkeypatch):
    """Scheduler and two workers started as `dask scheduler` / `dask worker` commands; `bncourse grade
    --scheduler` as a command; one worker killed with SIGKILL while a kernel of it grades a student.

    `--unsandboxed`: the poisoned submission kills its own worker, which a sandboxed kernel cannot do
    (tests/test_grading_sandbox.py); the killed worker and the retry are what is tested here."""
    monkeypatch.setenv("BNCOURSE_EXCHANGE", str(tmp_path / "exchange"))
    monkeypatch.setenv("BNCOURSE_CELL_TIMEOUT", "60")
    grading.alembic_on_path()
    seq = _course(tmp_path / "sequential")
    dask = tmp_path / "dask"
    shutil.copytree(seq, dask)
    poison = nbformat.read(seq / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    poison.cells.insert(0, nbformat.v4.new_code_cell(KILL_PARENT))
    (dask / "submitted" / "zz_kills_its_worker" / ASSIGNMENT).mkdir(parents=True)
    nbformat.write(poison, dask / "submitted" / "zz_kills_its_worker" / ASSIGNMENT / f"{NOTEBOOK}.ipynb")
    submitted_before = {p: p.read_bytes() for p in (dask / "submitted").rglob("*") if p.is_file()}

    auto = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT], cwd=seq,
                          capture_output=True, text=True, timeout=900)
    assert auto.returncode == 0, auto.stderr[-3000:]

    # allowed-failures 1: a submission gets two tries (the default, 3, would only make the test longer).
    with LocalDaskProcesses(n_workers=2, scheduler_env={"DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES": "1"}) as cl:
        t0 = time.monotonic()
        cli = subprocess.Popen([sys.executable, "-m", "bncourse.cli", "grade", ASSIGNMENT, "--scheduler", cl.address,
                                "--course", str(dask), "--no-progress", "--unsandboxed"], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
        killed = None
        while killed is None and cli.poll() is None and time.monotonic() - t0 < 600:
            for i in range(len(cl.workers)):
                student = _grading_student(cl.worker_processes(i))
                if student in ("ada", "bob"):  # the first two: the poison is not handed out yet
                    cl.kill_worker(i)  # kill -9 of the nanny, the worker and the kernel grading `student`
                    killed = student
                    break
            time.sleep(0.2)
        output, _ = cli.communicate(timeout=900)
        seconds = time.monotonic() - t0
    assert killed is not None, f"no worker was seen grading before the run ended:\n{output}"
    assert cli.returncode == 1, output  # one submission was not graded: a loud, non-zero exit
    print(f"killed the worker grading {killed}; --scheduler run took {seconds:.0f} s\n{output}")

    with open(dask / grading.REPORT_DIR / f"{ASSIGNMENT}.csv") as f:
        rows = {r["student"]: r for r in csv.DictReader(f)}
    assert {s: rows[s]["status"] for s in rows} == {"ada": "graded", "bob": "graded", "cy": "graded",
                                                     "zz_kills_its_worker": "failed"}
    assert int(rows[killed]["attempts"]) == 2
    assert "died on every try" in rows["zz_kills_its_worker"]["reason"]

    sequential, distributed = (gradebook_cells(c, ASSIGNMENT, comments=True) for c in (seq, dask))
    poisoned = {k: v for k, v in distributed.items() if k[0] == "zz_kills_its_worker"}
    assert {k: v for k, v in distributed.items() if k[0] != "zz_kills_its_worker"} == sequential
    assert len(sequential) > 0 and all(v in ((0.0, False), None) for v in poisoned.values())
    assert not (dask / "autograded" / "zz_kills_its_worker").exists() or not any(
        (dask / "autograded" / "zz_kills_its_worker").rglob("*.ipynb"))
    for student in ("ada", "bob", "cy"):
        assert _graded_outputs(dask, student) == _graded_outputs(seq, student)
    assert {p: p.read_bytes() for p in (dask / "submitted").rglob("*") if p.is_file()} == submitted_before
    feedback = subprocess.run([sys.executable, "-m", "nbgrader", "generate_feedback", ASSIGNMENT, "--student", "cy"],
                              cwd=dask, capture_output=True, text=True, timeout=600)
    assert feedback.returncode == 0 and (dask / "feedback" / "cy" / ASSIGNMENT / f"{NOTEBOOK}.html").exists()


def test_does_an_unreachable_scheduler_give_a_clear_error():
    """A ValueError naming the address (the command turns it into exit status 2), not a traceback."""
    from bncourse.grading.cluster import free_port, run_on_scheduler

    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ValueError, match=f"could not reach the dask scheduler at '{address}'"):
        next(run_on_scheduler(address, [], connect_timeout=2))

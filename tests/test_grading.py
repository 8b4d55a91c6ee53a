"""Does `bncourse grade --jobs 2` leave the same gradebook as nbgrader's own sequential autograde?"""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from bncourse import grading
from gradebook_cells import gradebook_cells
from standardize_receipts import TEST_CELL, ddof1, my_standardize, receipts_of

REPO = Path(__file__).resolve().parent.parent
ASSIGNMENT = "01_why_normalize"
NOTEBOOK = "why_normalize"
GENERATED = ("release", "submitted", "autograded", "feedback", "gradebook.db", ".nbgrader.log",
             ".ipynb_checkpoints", "grading_reports", "__pycache__")
CONFIG_LINE = "\nfrom bncourse.grading import configure_nbgrader\nconfigure_nbgrader(c)\n"


@pytest.mark.slow
def test_does_parallel_grading_give_the_same_gradebook_as_sequential_nbgrader_autograde(tmp_path, monkeypatch):
    """Also with a non-SQLite-file gradebook URL (the PostgreSQL path), and readable by `nbgrader export`."""
    monkeypatch.setenv("BNCOURSE_EXCHANGE", str(tmp_path / "exchange"))
    monkeypatch.setenv("BNCOURSE_CELL_TIMEOUT", "30")
    grading.alembic_on_path()
    seq = tmp_path / "sequential"
    shutil.copytree(REPO / "notebooks", seq, ignore=shutil.ignore_patterns(*GENERATED))
    config = seq / "nbgrader_config.py"
    if "configure_nbgrader" not in config.read_text():  # the line the instructor guide asks for
        config.write_text(config.read_text() + CONFIG_LINE)
    run = dict(cwd=seq, capture_output=True, text=True, timeout=600)
    gen = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", ASSIGNMENT], **run)
    assert gen.returncode == 0, gen.stderr[-2000:]

    source = nbformat.read(seq / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    release = nbformat.read(seq / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    half = nbformat.reads(nbformat.writes(source), as_version=4)
    for cell in half.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "min_max_scale":
            cell.source = "def min_max_scale(X_train, X_test):\n    return X_train / X_train.max(0), X_test / X_train.max(0)\n"
    for student, nb in {"ada": source, "bob": release, "cy": half, "dee": source}.items():
        dest = seq / "submitted" / student / ASSIGNMENT
        dest.mkdir(parents=True)
        nbformat.write(nb, dest / f"{NOTEBOOK}.ipynb")
    par = tmp_path / "parallel"
    shutil.copytree(seq, par)
    # A gradebook URL that is not plain "sqlite:///": the path PostgreSQL users take (worker
    # gradebooks generated from the source instead of copied).
    (par / "nbgrader_config.py").write_text((par / "nbgrader_config.py").read_text()
                                            + f"\nc.CourseDirectory.db_url = 'sqlite+pysqlite:///{par / 'gradebook.db'}'\n")

    auto = subprocess.run([sys.executable, "-m", "nbgrader", "autograde", ASSIGNMENT], **run)
    assert auto.returncode == 0, auto.stderr[-3000:]
    assert "without encryption" not in auto.stderr, "the grading kernels still talk over TCP (GradingKernelManager)"
    report = grading.grade(ASSIGNMENT, par, jobs=2)

    sequential, parallel = gradebook_cells(seq, ASSIGNMENT), gradebook_cells(par, ASSIGNMENT)
    assert sequential == parallel
    assert report.scores() == {"ada": 5, "bob": 0, "cy": 3, "dee": 5}
    export = subprocess.run([sys.executable, "-m", "nbgrader", "export"], **{**run, "cwd": par})
    assert export.returncode == 0 and "ada" in (par / "grades.csv").read_text()


# --- the grader's re-run, without nbgrader (fast) -----------------------------------------------

def test_does_the_grader_rerun_confirm_an_honest_pass_and_reject_wrong_or_missing_receipts(monkeypatch):
    receipts = receipts_of(my_standardize, monkeypatch)
    cells = [
        {"id": "honest", "source": TEST_CELL, "receipts": receipts},
        {"id": "wrong", "source": TEST_CELL, "receipts": receipts_of(ddof1, monkeypatch)},
        {"id": "missing", "source": TEST_CELL, "receipts": receipts[:1]},
        {"id": "swapped", "source": TEST_CELL, "receipts": receipts[::-1]},
        {"id": "direct", "source": "assert standardize(1, 2) is not None", "receipts": []},
    ]
    verdicts = grading.replay_cells(cells)
    assert verdicts["honest"] == ["pass", ""]
    assert [verdicts[k][0] for k in ("wrong", "missing", "swapped")] == ["fail"] * 3
    assert verdicts["direct"][0] == "not_replayable"


def test_is_checking_bncourse_s_own_reference_instead_of_the_learner_s_function_rejected(monkeypatch):
    from bncourse.reference.normalize import standardize

    verdicts = grading.replay_cells([{"id": "ref", "source": TEST_CELL,
                                      "receipts": receipts_of(standardize, monkeypatch)}])
    assert verdicts["ref"] == ["delegated", "bncourse.reference.normalize.standardize"]


def _graded_notebook(learner_source: str, receipts: list, test_source: str = TEST_CELL):
    """A notebook as it leaves nbgrader's Execute: the learner's cell, and a test cell that passed in the kernel."""
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from bncourse.checks import replay

    test = new_code_cell(test_source, metadata={"nbgrader": {"grade": True, "solution": False, "points": 3,
                                                             "grade_id": "t", "schema_version": 3, "locked": True}})
    test.outputs = [new_output("display_data", data={replay.MIME: r}) for r in receipts]
    learner = new_code_cell(learner_source, metadata={"nbgrader": {"grade": False, "solution": True,
                                                                   "grade_id": "s", "schema_version": 3}})
    return new_notebook(cells=[learner, test])


DELEGATES = ("import bncourse.reference.normalize as r\n"
             "def standardize(X_train, X_test):\n    return r.standardize(X_train, X_test)\n")


def test_does_the_grader_give_zero_with_the_reason_to_delegation_the_kernel_did_not_report(monkeypatch):
    """The kernel's watch switched off (a learner can do that): the grader reads the source and refuses."""
    from bncourse.checks import delegation
    from bncourse.grading.pipeline import REFUSED_ENAME, VerifyChecks

    monkeypatch.setattr(delegation.Watch, "__enter__", lambda self: self)
    namespace = {}
    exec(DELEGATES, namespace)  # noqa: S102
    receipts = receipts_of(namespace["standardize"], monkeypatch)
    nb, _ = VerifyChecks().preprocess(_graded_notebook(DELEGATES, receipts), {})
    error = nb.cells[1].outputs[0]
    assert error.output_type == "error" and error.ename == REFUSED_ENAME
    assert "bncourse.reference.normalize.standardize" in error.evalue and "scores 0" in error.evalue


def test_does_a_test_cell_the_grader_cannot_re_judge_score_zero_not_the_kernels_word(monkeypatch):
    from bncourse.grading.pipeline import REFUSED_ENAME, VerifyChecks

    honest = "def standardize(X_train, X_test):\n    return X_train, X_test\n"
    nb, _ = VerifyChecks().preprocess(_graded_notebook(honest, [], "assert standardize(1, 2) is not None"), {})
    error = nb.cells[1].outputs[0]
    assert error.ename == REFUSED_ENAME and "could not re-judge" in error.evalue
    assert grading.HideHiddenTests().preprocess_cell(nb.cells[1], {}, 1)[0].outputs[0].evalue == error.evalue


def test_does_a_printed_value_before_a_failure_earn_nothing_and_a_kernel_error_after_a_genuine_pass_cost_nothing(
        monkeypatch):
    """nbgrader reads a failed test cell's first execute_result as partial credit ('passed' = full):
    the grader re-judges every test cell, whatever the kernel said, and leaves nbgrader its verdict only."""
    from nbformat.v4 import new_output
    from nbgrader.utils import determine_grade

    from bncourse.grading.pipeline import VerifyChecks

    printed = [new_output("execute_result", data={"text/plain": "'passed'"}, execution_count=1),
               new_output("error", ename="NotImplementedError", evalue="", traceback=[])]
    stub = "def standardize(X_train, X_test):\n    raise NotImplementedError()\n"
    failing = _graded_notebook(stub, receipts_of(lambda a, b: (_ for _ in ()).throw(NotImplementedError()),
                                                  monkeypatch))
    failing.cells[1].outputs = printed + failing.cells[1].outputs
    honest = _graded_notebook(stub, receipts_of(my_standardize, monkeypatch))
    honest.cells[1].outputs += [new_output("error", ename="AssertionError", evalue="kernel said no", traceback=[]),
                                new_output("stream", name="stderr", text="a warning\n")]
    failing, _ = VerifyChecks().preprocess(failing, {})
    honest, _ = VerifyChecks().preprocess(honest, {})
    assert determine_grade(failing.cells[1]) == (0, 3.0)
    assert "execute_result" not in [o.output_type for o in failing.cells[1].outputs]
    assert determine_grade(honest.cells[1]) == (3.0, 3.0)


def test_does_feedback_hide_a_hidden_failure_but_keep_a_visible_one():
    from nbformat.v4 import new_code_cell, new_output

    def cell(line):
        c = new_code_cell(TEST_CELL, metadata={"nbgrader": {"grade": True, "solution": False, "points": 3,
                                                            "grade_id": "t", "schema_version": 3}})
        c.outputs = [new_output("error", ename="AssertionError", evalue="standardize: FAILED (N=7, M=3, D=4)",
                                traceback=[f"Cell In[8], line {line}\n----> {line} check_standardize(...)"])]
        return c

    hide = grading.HideHiddenTests()
    hidden, _ = hide.preprocess_cell(cell(4), {}, 0)
    visible, _ = hide.preprocess_cell(cell(2), {}, 0)
    assert "hidden=True" not in hidden.source and "N=7" not in str(hidden.outputs)
    assert hidden.outputs[0].evalue == grading.HIDDEN_MESSAGE
    assert "N=7" in visible.outputs[0].evalue and len(visible.outputs[0].traceback) == 1


# --- `--jobs N` when a worker dies, and what a spinning kernel leaves behind (a tiny assignment) ----

TINY = "tiny"
SQUARE = "def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION"
SQUARE_TEST = ("import numpy as np\nfrom bncourse.checks.core import Case, check_function\n"
               "check_function('square', square, np.square,\n"
               "               [Case('x = [3, -2]', lambda: (np.array([3.0, -2.0]),))]).assert_passed()")
KILL_WORKER = "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)  # the kernel's parent: the grading worker\n"
ORPHAN = "bncourse-test-orphan"


def _meta(grade_id, **kw):
    meta = {"grade_id": grade_id, "solution": False, "grade": False, "locked": True, "schema_version": 3, **kw}
    meta["locked"] = not meta["solution"]
    return {"nbgrader": meta}


def _tiny_course(root: Path, cells: dict[str, str]) -> Path:
    """The course's nbgrader_config.py and a 2-point assignment (``square``); one submission per
    entry of ``cells``: {student: the source of their solution cell}."""
    from nbformat.v4 import new_code_cell, new_notebook

    (root / "source" / TINY).mkdir(parents=True)
    shutil.copy(REPO / "notebooks" / "nbgrader_config.py", root / "nbgrader_config.py")
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [new_code_cell(SQUARE, metadata=_meta("square", solution=True)),
                new_code_cell(SQUARE_TEST, metadata=_meta("square_test", grade=True, points=2))]
    nbformat.write(nb, root / "source" / TINY / f"{TINY}.ipynb")
    gen = subprocess.run([sys.executable, "-m", "nbgrader", "generate_assignment", TINY], cwd=root,
                         capture_output=True, text=True, timeout=600)
    assert gen.returncode == 0, gen.stderr[-2000:]
    for student, source in cells.items():
        sub = nbformat.reads(nbformat.writes(nb), as_version=4)
        sub.cells[0].source = source
        (root / "submitted" / student / TINY).mkdir(parents=True)
        nbformat.write(sub, root / "submitted" / student / TINY / f"{TINY}.ipynb")
    return root


def _left_behind(exchange: str) -> list[str]:
    """Processes still running that grading started: they carry the test's exchange folder in their
    environment (workers, kernels, what kernels started) or the orphan's marker."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.pid == os.getpid() or "multiprocessing" in cmd:  # this process, the forkserver, the tracker
                continue
            if ORPHAN in cmd or p.environ().get("BNCOURSE_EXCHANGE") == exchange:
                out.append(f"{p.pid}: {cmd[:120]}")
        except psutil.Error:
            continue
    return out


@pytest.mark.slow
def test_does_a_killed_grading_worker_cost_only_a_retry_and_leave_no_process_behind(tmp_path, monkeypatch):
    """`grade(..., jobs=2)`: a worker SIGKILLed mid-submission (its kernel kills it) costs a retry; a
    submission that kills every worker fails with its reason, 0 points, nothing half-written; a kernel
    that spins through its cell's timeout and started a detached process leaves nothing running.

    Unsandboxed: a sandboxed kernel cannot see, let alone kill, its worker (tests/test_grading_sandbox.py),
    so a worker's death (out of memory, a lost machine) is simulated by a kernel outside the sandbox."""
    exchange = str(tmp_path / "exchange")
    monkeypatch.setenv("BNCOURSE_EXCHANGE", exchange)
    monkeypatch.setenv("BNCOURSE_CELL_TIMEOUT", "5")  # set after any forkserver started: workers must see it
    grading.alembic_on_path()
    marker = tmp_path / "killed-once"
    spinner = (f"import subprocess, sys\nsubprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', "
               f"'{ORPHAN}'], start_new_session=True)  # a process of its own session: killpg misses it\n"
               "def square(x):\n    while True:  # and an interrupt does not stop it\n        try:\n"
               "            while True:\n                pass\n        except KeyboardInterrupt:\n            pass\n")
    once = (f"import pathlib\nif not pathlib.Path({str(marker)!r}).exists():\n    pathlib.Path({str(marker)!r}).touch()\n"
            + "".join("    " + line + "\n" for line in KILL_WORKER.splitlines()))
    course = _tiny_course(tmp_path / "course", {"ada": SQUARE, "killed_once": once + SQUARE, "spinner": spinner,
                                                "zz_kills_every_time": KILL_WORKER + SQUARE})
    submitted = {p: p.read_bytes() for p in (course / "submitted").rglob("*") if p.is_file()}

    report = grading.grade(TINY, course, jobs=2, write_report=False, sandbox=False)

    by = {s.student: s for s in report.students}
    assert {s: (r.status, r.score) for s, r in by.items()} == {
        "ada": ("graded", 2), "killed_once": ("graded", 2), "spinner": ("graded", 0),
        "zz_kills_every_time": ("failed", 0)}, str(report)
    assert by["killed_once"].attempts == 2 and by["ada"].attempts == 1
    assert by["zz_kills_every_time"].attempts == 3 and "died on every try" in by["zz_kills_every_time"].reason
    # a kernel an interrupt cannot stop is killed; its cell scores 0 with the reason, the rest is graded
    assert any("ignored the interrupt" in note and "time limit" in note for note in by["spinner"].notes)
    cells = gradebook_cells(course, TINY)
    assert cells[("zz_kills_every_time", TINY, "square_test")] == (0.0, False)  # recorded, not half-written
    assert not (course / "autograded" / "zz_kills_every_time").exists()
    assert {p: p.read_bytes() for p in (course / "submitted").rglob("*") if p.is_file()} == submitted
    assert _left_behind(exchange) == []


def test_does_grading_wait_for_a_cells_late_outputs_and_reach_kernels_without_tcp(tmp_path):
    """A late receipt must not be dropped after nbclient's 4 s (a correct cell would score 0 on a busy
    machine without a word): GradingExecute waits longer, then fails the submission with the reason."""
    from bncourse.grading.reasons import reason_from_log
    from bncourse.grading.pipeline import GradingExecute, GradingKernelManager

    execute = GradingExecute(config=grading.load_config(REPO / "notebooks"))
    assert execute.iopub_timeout > 4 and execute.raise_on_iopub_timeout
    assert execute.kernel_manager_class is GradingKernelManager
    assert GradingKernelManager(kernel_name="python3").transport == ("ipc" if os.name == "posix" else "tcp")
    # bncourse grade puts the socket files in the submission's private folder, removed with it
    assert GradingKernelManager(kernel_name="python3", ipc_dir=str(tmp_path)).ip.startswith(str(tmp_path))
    assert "outputs had not all arrived" in reason_from_log("CellTimeoutError: Timeout waiting for IOPub output")


@pytest.mark.slow
def test_does_a_new_gradebook_get_nbgraders_schema_revision_without_an_alembic_process(tmp_path):
    """nbgrader stamps a gradebook it creates with the output of `alembic heads` run as a subprocess;
    the course's config reads the same revision in process: a course command works even where the
    environment's `bin` (so `alembic`) is not on PATH, and the stamp is the one `alembic heads` gives."""
    import sqlite3

    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(REPO / "notebooks" / "nbgrader_config.py", course)
    bindir = os.path.dirname(sys.executable)
    path = os.pathsep.join(p for p in os.environ.get("PATH", "").split(os.pathsep)
                           if p and p != bindir and not os.path.exists(os.path.join(p, "alembic")))
    env = dict(os.environ, PATH=path, BNCOURSE_EXCHANGE=str(tmp_path / "exchange"))
    add = subprocess.run([sys.executable, "-m", "nbgrader", "db", "student", "add", "s01"], cwd=course, env=env,
                         capture_output=True, text=True, timeout=300)
    assert add.returncode == 0, add.stderr[-2000:]
    with sqlite3.connect(course / "gradebook.db") as db:
        stamped = db.execute("SELECT version_num FROM alembic_version").fetchall()
    from nbgrader.dbutil import _temp_alembic_ini

    with _temp_alembic_ini("sqlite:///unused.db") as ini:  # what nbgrader itself runs
        heads = subprocess.run([os.path.join(bindir, "alembic"), "-c", ini, "heads"], capture_output=True,
                               text=True, timeout=120, check=True).stdout.split()[0]
    assert stamped == [(heads,)], (stamped, heads)


def test_does_the_re_judging_use_the_grading_runs_hidden_seed(monkeypatch):
    """The seed a grading run drew reaches the re-judging process's hidden cases (the kernel gets it as
    BNCOURSE_HIDDEN_SEED); bncourse.checks.inputs.use_hidden_seed draws the cases from it."""
    from bncourse.checks import inputs, replay
    from bncourse.grading.execute import run_seed

    seen = []
    monkeypatch.setattr(inputs, "use_hidden_seed", seen.append, raising=False)
    replay.judge({"cells": [{"id": "a", "source": "x = 1", "receipts": [], "hidden_seed": 12345}]})
    assert seen == [12345]
    assert run_seed() == run_seed() and 0 <= run_seed() < 2**62


@pytest.mark.slow
def test_does_grade_name_an_empty_collect_and_a_misnamed_notebook_and_exit_non_zero(tmp_path, monkeypatch):
    """Nothing collected: exit 2 and say so. A notebook renamed by an LMS (`tiny-1.ipynb`): that student is
    named on stderr with the expected and the found file name, recorded with 0, and the exit status is 1."""
    monkeypatch.setenv("BNCOURSE_EXCHANGE", str(tmp_path / "exchange"))
    course = _tiny_course(tmp_path / "course", {})
    cmd = [sys.executable, "-m", "bncourse.cli", "grade", TINY, "--jobs", "1", "--no-progress", "--course", str(course)]
    empty = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert empty.returncode == 2 and "no submissions of tiny to grade" in empty.stderr and "collect" in empty.stderr

    source = course / "source" / TINY / f"{TINY}.ipynb"
    for student, name in (("good", f"{TINY}.ipynb"), ("renamed", f"{TINY}-1.ipynb")):
        (course / "submitted" / student / TINY).mkdir(parents=True)
        shutil.copy(source, course / "submitted" / student / TINY / name)
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 1, run.stdout[-2000:] + run.stderr[-2000:]
    assert f"NOT GRADED renamed: expected {TINY}.ipynb, found {TINY}-1.ipynb" in run.stderr
    assert "NOT GRADED good" not in run.stderr and "1 of 2 submission(s)" in run.stderr
    with open(course / grading.REPORT_DIR / f"{TINY}.csv") as f:
        rows = {r["student"]: (r["status"], float(r["score"])) for r in csv.DictReader(f)}
    assert rows == {"good": ("graded", 2.0), "renamed": ("failed", 0.0)}


def test_is_a_submission_carrying_the_instructors_source_refused_with_the_reason(tmp_path):
    """A link in the exchange that `nbgrader collect` followed copies the source notebook (solutions
    and hidden tests) into the submission, where the kernel could read it (red team, 2026-12-07)."""
    from bncourse.grading.reasons import precheck_submission

    sub = tmp_path / "submitted" / "mallory" / "a"
    sub.mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(), str(sub / "a.ipynb"))
    assert precheck_submission(sub, ["a"]) == ""
    (sub / "answers.json").write_text('{"source": ["### BEGIN SOLUTION\\n", "x = 1\\n"]}')
    assert "answers.json holds the instructor's solution markers" in precheck_submission(sub, ["a"])
    (sub / "answers.json").unlink()
    (sub / "link.json").symlink_to(tmp_path)
    assert "link.json is a symbolic link" in precheck_submission(sub, ["a"])


def test_does_the_courses_collect_keep_a_students_link_as_a_link(tmp_path):
    """nbgrader's collect follows links with the instructor's rights; the course's keeps them, to be refused."""
    from nbgrader.coursedir import CourseDirectory

    from bncourse.grading.exchange import LinkKeepingCollect

    secret = tmp_path / "source.ipynb"
    secret.write_text("### BEGIN SOLUTION")
    inbound = tmp_path / "inbound"
    inbound.mkdir()
    (inbound / "a.ipynb").write_text("{}")
    (inbound / "answers.json").symlink_to(secret)
    LinkKeepingCollect(coursedir=CourseDirectory()).do_copy(str(inbound), str(tmp_path / "submitted"))
    copied = tmp_path / "submitted" / "answers.json"
    assert copied.is_symlink() and (tmp_path / "submitted" / "a.ipynb").read_text() == "{}"

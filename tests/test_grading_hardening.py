"""Can instructors trust the grades? Real nbgrader autograde on one fake class made from notebook 01.

One class of fake students, each a different way a submission can go wrong, is graded ONCE by
``bncourse.grading.grade(..., jobs=2)`` (nbgrader's own autograde in two workers) with a short
per-cell timeout; the tests then read the one gradebook, the report, the exported CSV, the
feedback and the submitted files. Notebook 01: standardize (3 points), min_max_scale (2 points).
"""

from __future__ import annotations

import csv
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import numpy as np
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
COURSE = REPO / "notebooks"
ASSIGNMENT = "01_why_normalize"
NOTEBOOK = "why_normalize"
SUBMISSION_SECONDS = 30  # each submission's time limit here (the cell limit is 10 s)
DISK_MB = 16             # each kernel's /tmp and working copy here
HOG = """import os
for fd in sorted(int(f) for f in os.listdir("/proc/self/fd")):
    try:
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(("socket:", "anon_inode:")):
            os.write(fd, b"\\n[forged] standardize_tests: the grader says pass\\x1b[2J\\n")
    except OSError:
        pass
for where in ("/tmp", "."):
    try:
        with open(os.path.join(where, "fill.bin"), "wb") as f:
            for _ in range(2 * DISK_MB):
                f.write(b"\\0" * (1 << 20))
        print("FILLED", where)
    except OSError as e:
        print("FULL", where, e.strerror)
    os.remove(os.path.join(where, "fill.bin"))
""".replace("DISK_MB", str(DISK_MB))
GENERATED = ("release", "submitted", "autograded", "feedback", "gradebook.db", ".nbgrader.log",
             ".ipynb_checkpoints", "grading_reports", "__pycache__")

STD_DDOF1 = """def standardize(X_train, X_test):
    m, s = X_train.mean(0), X_train.std(0, ddof=1)
    return (X_train - m) / s, (X_test - m) / s
"""
STD_WRONG = "def standardize(X_train, X_test):\n    return X_train, X_test\n"
MM_WRONG = "def min_max_scale(X_train, X_test):\n    return X_train, X_test\n"
STD_HIDDEN_ONLY_WRONG = """def standardize(X_train, X_test):
    X_train, X_test = np.asarray(X_train, float), np.asarray(X_test, float)
    m, s = X_train.mean(0), X_train.std(0)
    if X_train.shape[0] == 7:          # wrong only on a case the visible tests do not run
        s = X_train.var(0)
    return (X_train - m) / s, (X_test - m) / s
"""
NOISY = """import sys, os, warnings
def _noise():
    warnings.warn("learner's UserWarning")
    print("learner's debug line on stderr", file=sys.stderr)
    os.write(2, b"fd-level message, as torch's C++ side writes\\n")
"""
CHEAT_CHECKS = """
import bncourse.checks.core as _core, bncourse.checks.normalize as _cn
class _Fake:
    passed = True
    def assert_passed(self):
        return self
_core.CheckResult.passed = property(lambda self: True)
_core.CheckResult.assert_passed = lambda self: self
_core.check_function = lambda *a, **k: _Fake()
_cn.check_function = lambda *a, **k: _Fake()
_cn.check_standardize = lambda *a, **k: _Fake()
_orig_mm = _cn.check_min_max_scale
from bncourse.reference import normalize as _ref
_cn.check_min_max_scale = lambda fn, hidden=False: _orig_mm(_ref.min_max_scale, hidden)  # wrap: check the reference
"""
CHEAT_NUMPY = """
import numpy as _np, torch as _torch
_np.isclose = lambda a, b, **k: _np.ones(_np.broadcast(_np.asarray(a), _np.asarray(b)).shape, dtype=bool)
_np.allclose = lambda *a, **k: True
_np.array_equal = lambda *a, **k: True
_np.testing.assert_allclose = lambda *a, **k: None
_torch.allclose = lambda *a, **k: True
_torch.equal = lambda *a, **k: True
"""
CHEAT_OBJECT = """
class Anything(np.ndarray):
    def __eq__(self, other): return np.ones(np.shape(other), bool)
    def __sub__(self, other): return np.zeros(np.shape(other))
    __rsub__ = __sub__
class Pretender:
    shape = property(lambda self: self._shape)
    dtype = np.dtype("float64")
    __class__ = property(lambda self: np.ndarray)   # isinstance(x, np.ndarray) is True
    def __init__(self, shape): self._shape = shape
    def __eq__(self, other): return True
    def __array__(self, *a, **k): return np.zeros(self._shape)
    def __getattr__(self, name): return lambda *a, **k: self
def standardize(X_train, X_test):
    return Pretender(X_train.shape), Pretender(X_test.shape)
def min_max_scale(X_train, X_test):
    return np.asarray(X_train, float).view(Anything), np.asarray(X_test, float).view(Anything)
"""
CHEAT_BLANK_TESTS = """
def _blank(lines):
    return ["pass\\n"] if any("assert_passed" in line for line in lines) else lines
get_ipython().input_transformers_cleanup.append(_blank)
"""
CHEAT_SWALLOW = """
get_ipython().set_custom_exc((BaseException,), lambda *args, **kwargs: None)
"""


SCIPY_ZSCORE = """def standardize(X_train, X_test):
    from scipy import stats
    mean, std = X_train.mean(axis=0), X_train.std(axis=0)
    return stats.zscore(X_train, axis=0), (X_test - mean) / std
"""
SKLEARN_MINMAX = """def min_max_scale(X_train, X_test):
    from sklearn.preprocessing import MinMaxScaler
    scaler = MinMaxScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test)
"""


def _set(nb, grade_id, source):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            cell.source = source
            return nb
    raise KeyError(grade_id)


def _source_of(nb, grade_id):
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _fake_class(source_nb, release_nb):
    """{student: (notebook or raw bytes, expected score or None for 'not gradable')}."""
    good_std, good_mm = _source_of(source_nb, "standardize"), _source_of(source_nb, "min_max_scale")

    def student(**cells):
        nb = nbformat.from_dict(release_nb)  # what a learner starts from
        nb = nbformat.reads(nbformat.writes(nb), as_version=4)
        for gid, src in {"standardize": good_std, "min_max_scale": good_mm, **cells}.items():
            _set(nb, gid, src)
        return nb

    tampered = student(standardize=STD_DDOF1)
    _set(tampered, "standardize_tests", "pass  # nothing to see here")
    tampered.cells = [c for c in tampered.cells
                      if c.metadata.get("nbgrader", {}).get("grade_id") != "min_max_scale_tests"]
    # Red team 2, attack 8: cells that sleep between the two exercises, each stopped at the cell's limit;
    # the submission's time limit (SUBMISSION_SECONDS here) stops them all.
    sleeper = student()
    at = next(i for i, c in enumerate(sleeper.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "min_max_scale")
    sleeper.cells[at:at] = [nbformat.v4.new_code_cell("import time\ntime.sleep(3600)") for _ in range(4)]
    # Red team 2, attacks 9 and 11, before the first exercise's test: fill /tmp and the working copy past
    # their size (DISK_MB here), and write forged lines into every descriptor the kernel holds.
    first = next(i for i, c in enumerate(sleeper.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == "standardize")
    sleeper.cells.insert(first, nbformat.v4.new_code_cell(HOG))
    corrupt = nbformat.writes(source_nb).encode()[:-200]
    noisy_std = NOISY + good_std.replace('"""\n', '"""\n    _noise()\n', 1)
    return {
        "solution": (source_nb, 5),
        "blank": (release_nb, 0),
        "syntax_error": (student(standardize="def standardize(X_train, X_test)\n    return X_train\n"), 2),
        "exception": (student(standardize="raise RuntimeError('half-finished')\n" + good_std), 2),
        "loop_in_cell": (student(standardize="while True:\n    pass\n" + good_std), 2),
        "loop_in_function": (student(min_max_scale="def min_max_scale(X_train, X_test):\n    while True:\n        pass\n"), 3),
        "crash_exit": (student(standardize="import os\nos._exit(1)\n"), None),
        "crash_segfault": (student(standardize="import faulthandler\nfaulthandler._sigsegv()\n"), None),  # no ctypes in the sandbox
        "corrupt_json": (corrupt, None),
        "tampered_tests": (tampered, 2),
        "stderr_noise": (student(standardize=noisy_std), 5),
        "hidden_fail": (student(standardize=STD_HIDDEN_ONLY_WRONG), 2),
        "sleeper": (sleeper, 3),
        "cheat_checks": (student(standardize=STD_WRONG + CHEAT_CHECKS, min_max_scale=MM_WRONG), 0),
        "cheat_numpy": (student(standardize=STD_WRONG + CHEAT_NUMPY, min_max_scale=MM_WRONG), 0),
        "cheat_objects": (student(standardize=CHEAT_OBJECT, min_max_scale="pass"), 0),
        "cheat_blank_tests": (student(standardize=STD_WRONG + CHEAT_BLANK_TESTS, min_max_scale=MM_WRONG), 0),
        "cheat_swallow_errors": (student(standardize=STD_WRONG + CHEAT_SWALLOW, min_max_scale=MM_WRONG), 0),
        # Other libraries' scalers: notebook 1's grading kernels have no scikit-learn or SciPy (issue 20).
        "cheat_libraries": (student(standardize=SCIPY_ZSCORE, min_max_scale=SKLEARN_MINMAX), 0),
    }


def _hashes(root: Path) -> dict:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """The fake class, generated, submitted, graded with 2 workers, feedback generated, exported."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from bncourse import grading

    tmp = tmp_path_factory.mktemp("hardening")
    old_env = dict(os.environ)
    os.environ.update(BNCOURSE_CELL_TIMEOUT="10", BNCOURSE_SUBMISSION_TIMEOUT=str(SUBMISSION_SECONDS),
                      BNCOURSE_KERNEL_DISK_MB=str(DISK_MB),
                      BNCOURSE_EXCHANGE=str(tmp / "exchange"))
    try:
        course = tmp / "course"
        shutil.copytree(COURSE, course, ignore=shutil.ignore_patterns(*GENERATED))
        grading.alembic_on_path()
        cfg = grading.load_config(course)
        api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
        assert api.generate_assignment(ASSIGNMENT, force=True)["success"]
        source_nb = nbformat.read(course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
        release_nb = nbformat.read(course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
        klass = _fake_class(source_nb, release_nb)
        for name, (nb, _) in klass.items():
            dest = course / "submitted" / name / ASSIGNMENT
            dest.mkdir(parents=True)
            path = dest / f"{NOTEBOOK}.ipynb"
            path.write_bytes(nb) if isinstance(nb, bytes) else nbformat.write(nb, path)
            (dest / "timestamp.txt").write_text("2026-11-20 10:00:00.000000 UTC")
        before = _hashes(course / "submitted")
        report = grading.grade(ASSIGNMENT, course, jobs=2)
        left = _left_behind(str(tmp / "exchange"))
        api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
        feedback = api.generate_feedback(ASSIGNMENT)
        export = subprocess.run([sys.executable, "-m", "nbgrader", "export"], cwd=course,
                                capture_output=True, text=True, timeout=300)
        after = _hashes(course / "submitted")
        yield {"course": course, "report": report, "class": klass, "before": before, "after": after,
               "feedback": feedback, "export": export, "source_nb": source_nb, "left": left}
    finally:
        os.environ.clear()
        os.environ.update(old_env)


def _left_behind(exchange: str) -> list[str]:
    """Processes of the grading run still alive (they carry its exchange folder in their environment)."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid", "cmdline"]):
        try:
            cmd = " ".join(p.info["cmdline"] or [])
            if p.pid != os.getpid() and "multiprocessing" not in cmd and p.environ().get("BNCOURSE_EXCHANGE") == exchange:
                out.append(f"{p.pid}: {cmd[:120]}")
            elif _orphaned_sandboxed_kernel(p.info["cmdline"] or []):
                out.append(f"{p.pid} (sandboxed kernel): {cmd[:120]}")
        except psutil.Error:
            continue
    return out


def _orphaned_sandboxed_kernel(cmdline: list[str]) -> bool:
    """A sandboxed kernel (its environment is cleared, so it carries no exchange) whose grading folder
    is gone: the run that started it has finished without it."""
    if "ipykernel_launcher" not in " ".join(cmdline) or "-f" not in cmdline:
        return False
    connection = cmdline[cmdline.index("-f") + 1] if cmdline.index("-f") + 1 < len(cmdline) else ""
    return "bncourse-kernel-" in connection and not os.path.exists(connection)


def _gradebook_scores(course: Path) -> dict:
    from nbgrader.api import Gradebook

    from bncourse.grading import db_url_of

    with Gradebook(db_url_of(course)) as gb:
        return {s.student.id: s.score for s in gb.assignment_submissions(ASSIGNMENT)}


def test_does_every_fake_student_get_exactly_the_expected_score(graded):
    expected = {name: (score or 0) for name, (_, score) in graded["class"].items()}
    assert _gradebook_scores(graded["course"]) == expected
    assert graded["report"].scores() == expected


def test_are_crashed_and_corrupted_submissions_reported_with_a_reason(graded):
    failed = {s.student: s.reason for s in graded["report"].failed}
    assert set(failed) == {name for name, (_, score) in graded["class"].items() if score is None}
    assert "kernel died" in failed["crash_exit"] and "kernel died" in failed["crash_segfault"]
    assert "JSON" in failed["corrupt_json"]


def test_does_the_export_give_zero_to_submissions_that_could_not_be_graded(graded):
    assert graded["export"].returncode == 0, graded["export"].stderr[-2000:]
    rows = list(csv.DictReader(open(graded["course"] / "grades.csv")))
    by_student = {r["student_id"]: float(r["score"]) for r in rows if r["assignment"] == ASSIGNMENT}
    assert by_student["crash_exit"] == 0 and by_student["corrupt_json"] == 0
    assert by_student["solution"] == 5 and by_student["tampered_tests"] == 2


def test_do_timeouts_stop_infinite_loops_in_a_cell_and_in_a_graded_function(graded):
    notes = {s.student: s.notes for s in graded["report"].students}
    assert "standardize_tests: timed out" not in notes["loop_in_cell"]  # the loop was in the solution cell
    assert "min_max_scale_tests: timed out" in notes["loop_in_function"]
    nb = nbformat.read(graded["course"] / "autograded" / "loop_in_cell" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    timeouts = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "error" and o.ename == "CellTimeoutError"]
    assert timeouts, "the loop in the solution cell should have been stopped by the cell timeout"


def test_does_the_submission_time_limit_stop_a_submission_of_sleeping_cells_and_only_it(graded):
    """Four cells that sleep would hold a worker for 4 cell limits (K cells: K limits); the submission's
    limit kills its kernel: the test cell after them scores 0 with the reason,
    the one before keeps its points, and the rest of the class is graded as expected (the first test)."""
    student = next(s for s in graded["report"].students if s.student == "sleeper")
    reason = f"submission time limit ({SUBMISSION_SECONDS} s) reached"
    assert f"min_max_scale_tests: {reason}" in student.notes, student.notes
    nb = nbformat.read(graded["course"] / "autograded" / "sleeper" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "min_max_scale_tests")
    assert [(o.ename, o.evalue) for o in cell.outputs if o.output_type == "error"] == [("SubmissionTimeLimit", reason)]


def test_do_a_full_disk_and_forged_lines_in_the_kernels_descriptors_leave_grading_going(graded):
    """The same submission first wrote forged lines into every descriptor its kernel holds and filled
    /tmp and its working copy past their size: both writes failed in the kernel, and its first
    exercise still earned its 3 points (the first test: 3 in all)."""
    nb = nbformat.read(graded["course"] / "autograded" / "sleeper" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    shown = "".join(o.get("text", "") for c in nb.cells if "FULL" in c.source for o in c.outputs)
    assert "FULL /tmp No space left on device" in shown and "FULL . No space left on device" in shown, shown


def test_does_no_kernel_outlive_grading_not_even_a_spinning_or_crashed_one(graded):
    """Workers, kernels (loop_in_cell, loop_in_function, the crashes) and their children are all gone
    when `grade` returns (the forkserver and this process aside)."""
    assert graded["left"] == []


def test_are_edited_and_deleted_test_cells_restored_from_the_source(graded):
    nb = nbformat.read(graded["course"] / "autograded" / "tampered_tests" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    sources = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in nb.cells}
    assert "check_standardize(standardize).assert_passed()" in sources["standardize_tests"]
    assert "check_min_max_scale(min_max_scale).assert_passed()" in sources["min_max_scale_tests"]


def test_do_monkeypatching_cheats_gain_no_points(graded):
    scores = graded["report"].scores()
    cheats = [n for n in scores if n.startswith("cheat_")]
    assert len(cheats) == 6 and all(scores[n] == 0 for n in cheats), {n: scores[n] for n in cheats}


def test_is_the_kernel_fooled_by_the_cheats_so_that_only_the_grader_re_run_catches_them(graded):
    """Without the grader's re-run these cheats WOULD pass in the kernel (else the test above proves nothing)."""
    nb = nbformat.read(graded["course"] / "autograded" / "cheat_checks" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", 4)
    errors = [o for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade") for o in c.outputs
              if o.output_type == "error"]
    assert errors and all(o.ename == "GradingVerificationError" for o in errors)


def test_do_warnings_on_stderr_cost_no_points(graded):
    assert graded["report"].scores()["stderr_noise"] == 5


def test_are_submitted_files_byte_identical_after_grading_and_feedback(graded):
    assert graded["before"] == graded["after"]
    assert graded["report"].modified_submissions == []


def _text(path: Path) -> str:
    """The feedback page as plain text (code is split into highlighted spans in the HTML)."""
    import html
    import re

    return html.unescape(re.sub(r"<[^>]+>", "", path.read_text()))


def test_does_feedback_reveal_neither_hidden_test_code_nor_hidden_values(graded):
    from bncourse.checks.normalize import _cases
    from bncourse.reference.normalize import standardize

    assert graded["feedback"]["success"], graded["feedback"].get("error")
    html = _text(graded["course"] / "feedback" / "hidden_fail" / ASSIGNMENT / f"{NOTEBOOK}.html")
    assert "check_standardize(standardize).assert_passed()" in html  # the visible test is shown
    assert "hidden=True" not in html and "BEGIN HIDDEN TESTS" not in html
    assert "hidden test did not pass" in html
    for case in _cases(hidden=True):
        assert case.name not in html
        for out in standardize(*case.make_args()):
            for value in np.ravel(out)[:20]:
                text = f"{value:.6g}"
                if len(text.lstrip("-")) >= 7:  # only numbers specific enough to mean something
                    assert text not in html
    solved = _text(graded["course"] / "feedback" / "solution" / ASSIGNMENT / f"{NOTEBOOK}.html")
    assert "hidden=True" not in solved

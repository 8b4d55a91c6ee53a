"""Does `bncourse progress` tell a self-paced learner where they stand, without touching their files?"""

from __future__ import annotations

import hashlib
from pathlib import Path

import nbformat
import pytest

from bncourse import progress as prog

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "notebooks" / "source" / "01_why_normalize" / "why_normalize.ipynb"

MM_DIVIDED_BY_MAX = """def min_max_scale(X_train, X_test):
    lo, hi = X_train.min(0), X_train.max(0)
    return (X_train - lo) / hi, (X_test - lo) / hi
"""


def student_version() -> nbformat.NotebookNode:
    """What a learner starts from: solutions replaced by stubs, hidden tests removed, checksums set."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearSolutions, ComputeChecksums

    nb = nbformat.read(SOURCE, as_version=4)
    resources = {"language": "python"}
    for pp in (ClearSolutions(code_stub={"python": "# YOUR CODE HERE\nraise NotImplementedError()"}),
               ClearHiddenTests(), ComputeChecksums()):
        nb, resources = pp.preprocess(nb, resources)
    return nb


def _solve(nb, grade_id, source):
    next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id).source = source


@pytest.fixture
def workspace(tmp_path) -> Path:
    """Two notebooks: one half done (standardize solved, min_max_scale untouched), one with a known mistake."""
    source = nbformat.read(SOURCE, as_version=4)
    good_std = next(c.source for c in source.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "standardize")
    half = student_version()
    _solve(half, "standardize", good_std)
    wrong = student_version()
    _solve(wrong, "standardize", good_std)
    _solve(wrong, "min_max_scale", MM_DIVIDED_BY_MAX)
    for folder, nb in (("01_why_normalize", half), ("second_try", wrong)):
        (tmp_path / folder).mkdir()
        nbformat.write(nb, tmp_path / folder / "why_normalize.ipynb")
    (tmp_path / "01_why_normalize" / ".ipynb_checkpoints").mkdir()
    nbformat.write(student_version(), tmp_path / "01_why_normalize" / ".ipynb_checkpoints" / "why_normalize-checkpoint.ipynb")
    return tmp_path


def _kernels_of_this_process() -> list[str]:
    """Command lines of kernels started by this test process that are still alive."""
    import psutil

    return [" ".join(p.cmdline()) for p in psutil.Process().children(recursive=True)
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(p.cmdline())]


def _hashes(root: Path) -> dict:
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_does_progress_report_a_partly_solved_workspace_correctly(workspace, capfd):
    before = _hashes(workspace)
    kernels_before = _kernels_of_this_process()
    capfd.readouterr()
    report = prog.progress(workspace, timeout=60)
    # The kernels' own stderr reaches the learner's terminal: no library warning may be in it
    # (ipykernel >= 7 warns "Kernel is running over TCP without encryption" unless it runs over IPC).
    noise = capfd.readouterr().err
    assert "without encryption" not in noise and "WARNING" not in noise, noise
    rows = {(r.notebook, r.exercise): r for r in report.rows}
    assert set(rows) == {("01_why_normalize/why_normalize.ipynb", "standardize"),
                         ("01_why_normalize/why_normalize.ipynb", "min_max_scale"),
                         ("second_try/why_normalize.ipynb", "standardize"),
                         ("second_try/why_normalize.ipynb", "min_max_scale")}
    done = rows[("01_why_normalize/why_normalize.ipynb", "standardize")]
    assert (done.points, done.max_points, done.status) == (3, 3, "passed")
    todo = rows[("01_why_normalize/why_normalize.ipynb", "min_max_scale")]
    assert (todo.points, todo.max_points, todo.status) == (0, 2, "not attempted")
    wrong = rows[("second_try/why_normalize.ipynb", "min_max_scale")]
    assert (wrong.points, wrong.status) == (0, "failed")
    assert "divided by the maximum instead of the range" in wrong.diagnosis
    assert report.points == 6 and report.max_points == 10
    text = str(report)
    assert "not attempted" in text and "divided by the maximum" in text and "6 of 10" in text
    assert wrong.failing_cases and "cases passed" in wrong.diagnosis and "see the cases below" not in text
    assert all(len(line) <= 100 for line in text.splitlines()) and "hidden tests" not in text
    assert _hashes(workspace) == before, "progress must never write into the learner's workspace"
    assert _kernels_of_this_process() == kernels_before, "every kernel progress started must be shut down"


def test_is_an_untouched_stub_not_attempted_and_a_crashed_run_not_counted_as_passed():
    nb = student_version()
    rows = prog.score_notebook(nb, "nb", ran=False)
    assert [r.status for r in rows] == ["not attempted", "not attempted"]
    _solve(nb, "standardize", "def standardize(a, b):\n    return a, b")
    rows = prog.score_notebook(nb, "nb", ran=False)
    assert rows[0].status == "not run" and rows[0].points == 0


def test_is_a_notebook_with_nothing_attempted_reported_without_running_it(tmp_path, monkeypatch):
    """A fresh workspace should not wait for every notebook's experiments to run."""
    folder = tmp_path / "ws" / "01_why_normalize"
    folder.mkdir(parents=True)
    nbformat.write(student_version(), folder / "why_normalize.ipynb")

    def must_not_run(*args, **kwargs):
        raise AssertionError("an untouched notebook was executed")

    monkeypatch.setattr(prog, "run_copy", must_not_run)
    report = prog.progress(tmp_path / "ws")
    assert [r.status for r in report.rows] == ["not attempted", "not attempted"]
    assert report.points == 0 and report.max_points == 5


def _failed_check_cell(nb, exercise: str, message: str):
    """The test cell of ``exercise`` as a failed check leaves it: an AssertionError with the check's text."""
    cell = next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == f"{exercise}_tests")
    cell.execution_count = 1
    cell.outputs = [nbformat.v4.new_output("error", ename="AssertionError", evalue=message, traceback=[])]
    return nb


LONG_FAILURE = (
    "min_max_scale: FAILED (4/7 cases). divided by the maximum instead of the range: this exercise maps the "
    "training range to [0, 1]: (X - min) / (max - min) (see the cases below)\n"
    "  [ok  ] N=5, D=2\n"
    "  [FAIL] N=40, D=7, features on very different scales, some of them constant across the training rows: "
    "out: 12 of 280 values differ (max abs diff 0.52); test_out: 3 of 70 values differ\n"
    "  [FAIL] one row\n"
    "  tolerance: rtol=1e-05, atol=1e-06")


def test_does_a_failed_check_read_in_plain_words_with_its_failing_cases_in_100_columns():
    nb = student_version()
    _solve(nb, "min_max_scale", MM_DIVIDED_BY_MAX)
    rows = prog.score_notebook(_failed_check_cell(nb, "min_max_scale", LONG_FAILURE), "nb", ran=True)
    wrong = rows[1]
    assert wrong.diagnosis.startswith("4 of 7 cases passed. divided by the maximum")
    assert "see the cases below" not in wrong.diagnosis
    assert [c.split(":")[0] for c in wrong.failing_cases] == ["N=40, D=7, features on very different scales, some "
                                                              "of them constant across the training rows", "one row"]
    text = str(prog.NotebookProgress("01_why_normalize/why_normalize.ipynb", rows, seconds=3))
    assert all(len(line) <= 100 for line in text.splitlines()), max(text.splitlines(), key=len)
    assert "failing case one row" in text and "hint('min_max_scale')" in text
    assert "hidden tests" not in text


def test_does_progress_print_each_notebook_before_running_the_next(tmp_path, monkeypatch):
    """No long silence: a notebook's lines are out before the next notebook starts running."""
    import io

    for folder in ("01_a", "02_b"):
        (tmp_path / folder).mkdir()
        nb = student_version()
        _solve(nb, "standardize", "def standardize(a, b):\n    return a, b")
        nbformat.write(nb, tmp_path / folder / "why_normalize.ipynb")
    out = io.StringIO()
    seen_when_running = []

    def fake_run(path, fast=True, timeout=None):  # stands in for the kernel: a notebook whose checks ran
        seen_when_running.append(out.getvalue())
        return _failed_check_cell(nbformat.read(path, as_version=4), "standardize",
                                  "standardize: FAILED (0/3 cases). mean not subtracted"), ""

    monkeypatch.setattr(prog, "run_copy", fake_run)
    assert prog.main(tmp_path, out=out) == 0
    assert "01_a/why_normalize.ipynb: 0 of 5 points" not in seen_when_running[0]
    assert "01_a/why_normalize.ipynb: 0 of 5 points" in seen_when_running[1]
    assert "0 of 3 cases passed. mean not subtracted" in seen_when_running[1]
    assert out.getvalue().rstrip().endswith("Total: 0 of 10 points from the checks in your notebooks.")

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

"""The nbgrader round trip, as an instructor runs it, for every assignment of the course.

generate_assignment -> fake class submits -> autograde -> generate_feedback -> export, all through
nbgrader's own command line in a private copy of the course; scores are read from the gradebook.
Every assignment's solution, wrong-solution and stub submissions are graded, cell by cell, in
``test_fail_closed.py``.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook



pytestmark = pytest.mark.slow

CLASS_ASSIGNMENT = "01_why_normalize"  # graded with a whole fake class below, solution and blank included


def nbgrader(course: Path, *args: str, timeout: int = 1200) -> subprocess.CompletedProcess:
    """Run one nbgrader command in the course folder; fail loudly with its log when it fails."""
    proc = subprocess.run(
        [sys.executable, "-m", "nbgrader", *args], cwd=course, capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def submit(course: Path, student: str, assignment: str, notebooks: dict[str, nbformat.NotebookNode]) -> None:
    folder = course / "submitted" / student / assignment
    folder.mkdir(parents=True, exist_ok=True)
    for name, nb in notebooks.items():
        nbformat.write(nb, folder / name)
    (folder / "timestamp.txt").write_text("2026-11-22 10:00:00.000000 UTC")


def replace_solution(nb: nbformat.NotebookNode, grade_id: str, source: str) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(json.loads(json.dumps(nb)))
    cells = [c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id]
    assert len(cells) == 1, f"no solution cell {grade_id!r}"
    cells[0].source = source
    return nb


def scores(course: Path, assignment: str) -> dict[str, tuple[float, float]]:
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gb:
        return {s.student_id: (s.score, s.max_score) for s in gb.assignment_submissions(assignment)}


def notebooks_of(folder: Path) -> dict[str, nbformat.NotebookNode]:
    return {p.name: nbformat.read(p, as_version=4) for p in sorted(folder.glob("*.ipynb"))}


def generate(course: Path, assignment: str) -> None:
    """generate_assignment, then: do the student versions hold no solution and no hidden test?"""
    nbgrader(course, "generate_assignment", assignment, "--force")
    for name, nb in notebooks_of(course / "release" / assignment).items():
        text = json.dumps(nb)
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text, f"{name} leaks markers"
        assert "hidden=True" not in text, f"{name} still holds hidden tests"
        assert nb.metadata.kernelspec.name == "python3"


def test_full_class_on_notebook_1(course_copy, monkeypatch):
    """Grade a fake class on notebook 1: right, blank, half right, and one stuck in an infinite loop.

    The loop is stopped by the per-cell timeout and everybody else is still graded; feedback is
    generated and the exported CSV holds the same scores as the gradebook.
    """
    monkeypatch.setenv("BNCOURSE_CELL_TIMEOUT", "4")
    a = CLASS_ASSIGNMENT
    generate(course_copy, a)
    source = notebooks_of(course_copy / "source" / a)
    blank = notebooks_of(course_copy / "release" / a)
    (name, solution), = source.items()

    wrong_standardize = '''
def standardize(X_train, X_test):
    """Uses the test set's own statistics: the classic leak."""
    return ((X_train - X_train.mean(0)) / X_train.std(0), (X_test - X_test.mean(0)) / X_test.std(0))
'''
    looping_standardize = '''
def standardize(X_train, X_test):
    while True:
        pass
'''
    submit(course_copy, "alice", a, {name: solution})
    submit(course_copy, "bob", a, blank)
    submit(course_copy, "carol", a, {name: replace_solution(solution, "standardize", wrong_standardize)})
    submit(course_copy, "dave", a, {name: replace_solution(solution, "standardize", looping_standardize)})

    nbgrader(course_copy, "autograde", a, "--force")
    got = scores(course_copy, a)
    assert got == {"alice": (5.0, 5.0), "bob": (0.0, 5.0), "carol": (2.0, 5.0), "dave": (2.0, 5.0)}

    nbgrader(course_copy, "generate_feedback", a, "--force")
    for student in got:
        html = (course_copy / "feedback" / student / a / name.replace(".ipynb", ".html")).read_text()
        assert "Why normalize" in html
    carol = (course_copy / "feedback" / "carol" / a / name.replace(".ipynb", ".html")).read_text()
    assert "test data scaled with its own statistics" in carol, "feedback should name carol's mistake"

    out = course_copy / "grades.csv"
    nbgrader(course_copy, "export", "--to", str(out))
    rows = {r["student_id"]: float(r["score"]) for r in csv.DictReader(out.open()) if r["assignment"] == a}
    assert rows == {s: v[0] for s, v in got.items()}

"""Does the grading size (BNCOURSE_GRADING=1) change what runs, and never a score?

The grading size shrinks only experiments whose outputs earn no points (``pick(..., grading=...)``
in a notebook), does not run the cells after the last graded cell, nor ungraded cells tagged
``skip-when-grading``. This grades the same submissions of notebook 1 both ways with real nbgrader
(the solution, the blank notebook and a wrong answer) and shows that the kernel really runs at each
size and which cells are left out. For every assignment whose grading size differs from its fast
size, ``test_fail_closed.py`` grades the solution at both sizes and compares every cell's score.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest

from bncourse import grading

REPO = Path(__file__).resolve().parent.parent
GENERATED = ("release", "submitted", "autograded", "feedback", "gradebook.db", ".nbgrader.log",
             ".ipynb_checkpoints", "grading_reports", "__pycache__")
# An ungraded cell a learner could add: it prints the size the grading kernel runs at.
SIZE_PROBE = "from bncourse.runtime import fast_mode, grading_mode\nprint('sizes:', fast_mode(), grading_mode())"
TRAILING = "print('a cell after the last graded cell ran')"
TAGGED = "print('a tagged experiment ran')"  # inserted before the last graded cell, tagged skip-when-grading
WRONG = {  # the solution, the blank release and one wrong answer; elsewhere (costly experiments) the solution
    "01_why_normalize": ("min_max_scale", "def min_max_scale(X_train, X_test):\n"
                                          "    return X_train / X_train.max(0), X_test / X_train.max(0)\n"),
}


def _course(root: Path, assignment: str) -> Path:
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns(*GENERATED))
    cfg = grading.load_config(root)
    res = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg).generate_assignment(assignment, force=True)
    assert res["success"], res.get("error")
    for src in (root / "source" / assignment).glob("*.ipynb"):
        solution = nbformat.read(src, as_version=4)
        solution.cells.insert(0, nbformat.v4.new_code_cell(SIZE_PROBE))  # runs at every size
        solution.cells.append(nbformat.v4.new_code_cell(TRAILING))  # runs in fast mode only
        tagged = nbformat.v4.new_code_cell(TAGGED, metadata={"tags": ["skip-when-grading"]})
        solution.cells.insert(2, tagged)  # before the graded cells: runs in fast mode only
        subs = {"solution": solution}
        if assignment in WRONG:  # 01 is cheap: the blank and a wrong answer too
            subs["blank"] = nbformat.read(root / "release" / assignment / src.name, as_version=4)
            grade_id, code = WRONG[assignment]
            wrong = nbformat.reads(nbformat.writes(solution), as_version=4)
            for cell in wrong.cells:
                if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
                    cell.source = code
            subs["wrong"] = wrong
        for student, nb in subs.items():
            (root / "submitted" / student / assignment).mkdir(parents=True, exist_ok=True)
            nbformat.write(nb, root / "submitted" / student / assignment / src.name)
    return root


def _cell_scores(course: Path, assignment: str) -> dict:
    from nbgrader.api import Gradebook

    with Gradebook(grading.db_url_of(course)) as gb:
        return {(sub.student.id, nb.name, g.name): g.auto_score
                for sub in gb.assignment_submissions(assignment) for nb in sub.notebooks for g in nb.grades}


def _probe(course: Path, assignment: str, source: str = SIZE_PROBE) -> str:
    for path in (course / "autograded" / "solution" / assignment).glob("*.ipynb"):
        for cell in nbformat.read(path, as_version=4).cells:
            if cell.cell_type == "code" and cell.source == source:
                return "".join(o.get("text", "") for o in cell.outputs).strip()
    return ""


@pytest.mark.slow
def test_does_the_grading_size_leave_out_only_cells_that_cannot_change_a_score(tmp_path, monkeypatch):
    assignment = "01_why_normalize"
    monkeypatch.setenv("BNCOURSE_EXCHANGE", str(tmp_path / "exchange"))
    monkeypatch.delenv("BNCOURSE_GRADING", raising=False)
    grading.alembic_on_path()
    at_grading = _course(tmp_path / "grading", assignment)
    at_fast = tmp_path / "fast"
    shutil.copytree(at_grading, at_fast)

    by_grading = grading.grade(assignment, at_grading, jobs=2, size="grading", write_report=False)
    by_fast = grading.grade(assignment, at_fast, jobs=2, size="fast", write_report=False)

    assert _probe(at_grading, assignment) == "sizes: True True"  # the kernel ran at the grading size
    assert _probe(at_fast, assignment) == "sizes: True False"
    assert _probe(at_fast, assignment, TRAILING) == "a cell after the last graded cell ran"
    assert _probe(at_grading, assignment, TRAILING).startswith("[not run by the grader")
    assert _probe(at_fast, assignment, TAGGED) == "a tagged experiment ran"
    assert _probe(at_grading, assignment, TAGGED).startswith("[not run by the grader: an experiment")
    assert not by_grading.failed and not by_fast.failed
    scores = _cell_scores(at_grading, assignment)
    assert scores == _cell_scores(at_fast, assignment)
    full = by_grading.scores()["solution"]
    assert full == by_grading.students[0].max_score > 0
    assert by_grading.scores()["blank"] == 0 and 0 < by_grading.scores()["wrong"] < full

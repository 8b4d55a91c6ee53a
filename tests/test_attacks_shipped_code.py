"""Does code a student ships beside the notebook reach the grading kernel (red team 3, R4)?

``nbgrader submit`` copies the notebook's whole folder: a vendored autodiff library (HIPS autograd)
beside the notebook once computed the numpy backward exercises. A graded kernel's working copy now
holds only the files the assignment's release holds (same relative paths: the instructor's data
files); the grading report names every file left out.
"""

from __future__ import annotations

import nbformat
from nbgrader import utils as nbutils

from attack_course import attack_course, generated, submit

ASSIGNMENT, NOTEBOOK = "02_batchnorm_forward", "batchnorm_forward"
LOOK = ("import os\nprint('given.txt there:', os.path.exists('given.txt'), "
        "'| helper.py there:', os.path.exists('helper.py'))\n")


def _with_look(nb):
    nb = nbformat.reads(nbformat.writes(nb), as_version=4)
    nb.cells.insert(0, nbformat.v4.new_code_cell(LOOK))
    return nb


def _shipped(source_nb):
    """The solution moved to helper.py; the notebook's solution cells only import it."""
    nb = _with_look(source_nb)
    helper = ["import numpy as np\n"]
    for cell in nb.cells:
        if cell.cell_type == "code" and nbutils.is_solution(cell) and not nbutils.is_grade(cell):
            helper.append(cell.source.replace("### BEGIN SOLUTION", "").replace("### END SOLUTION", "") + "\n")
            cell.source = "from helper import *"
    return nb, "\n".join(helper)


def test_does_code_shipped_beside_the_notebook_earn_nothing_while_release_files_stay(tmp_path):
    from bncourse import grading

    with attack_course(tmp_path) as (course, api):
        (course / "source" / ASSIGNMENT / "given.txt").write_text("the instructor's data\n")
        source_nb, release_nb = generated(course, api, ASSIGNMENT, NOTEBOOK)
        assert (course / "release" / ASSIGNMENT / "given.txt").exists()
        given = {"given.txt": "the instructor's data\n"}
        shipped_nb, helper = _shipped(source_nb)
        submit(course, "honest", ASSIGNMENT, NOTEBOOK, _with_look(source_nb), given)
        submit(course, "shipper", ASSIGNMENT, NOTEBOOK, shipped_nb, {**given, "helper.py": helper})
        submit(course, "blank", ASSIGNMENT, NOTEBOOK, release_nb)
        report = grading.grade(ASSIGNMENT, course, jobs=2)
        rows = {r.student: r for r in report.students}
        looks = {s: "".join(o.get("text", "") for o in nbformat.read(
                     course / "autograded" / s / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4).cells[0].outputs)
                 for s in ("honest", "shipper")}
    assert rows["honest"].score == rows["honest"].max_score > 0, rows["honest"]
    assert rows["shipper"].score == rows["blank"].score < rows["honest"].score, rows["shipper"]
    assert any("helper.py" in n and "given.txt" not in n for n in rows["shipper"].notes), rows["shipper"].notes
    assert not any("not given to the kernel" in n for n in rows["honest"].notes), rows["honest"].notes
    assert "given.txt there: True | helper.py there: False" in looks["shipper"], looks
    assert "given.txt there: True" in looks["honest"], looks


def test_does_the_feedback_tell_the_learner_which_files_the_grader_left_out():
    from bncourse.grading.execute import LEFT_OUT_FILES
    from bncourse.grading.feedback import HideHiddenTests

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")])
    nb.metadata[LEFT_OUT_FILES] = ["helper.py"]
    out, _ = HideHiddenTests().preprocess(nb, {})
    assert out.cells[0].cell_type == "markdown" and "`helper.py`" in out.cells[0].source
    assert "put your code in the notebook" in out.cells[0].source
    plain, _ = HideHiddenTests().preprocess(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), {})
    assert len(plain.cells) == 1

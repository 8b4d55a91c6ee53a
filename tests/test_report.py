"""The class report's parts: does it read the named mistake from a graded cell, and draw a page an instructor can read?

The report of a real graded class (three students, nbgrader, the exchange and a Canvas zip) is checked
in tests/test_instructor_guide.py; these are the cheap cases: outputs as the autograded notebook holds
them, a report written from data, the similarity report on a course's own provided code.
"""

from __future__ import annotations

import base64
import csv
import re

import nbformat
import numpy as np
from nbformat.v4 import new_code_cell, new_notebook

from bncourse.checks.forward import check_batchnorm_forward
from bncourse.grading.report import UNNAMED, CellScore, ClassReport, Lateness, mistakes_in, write_class_report
from bncourse.grading.similarity import similarity_report


def _failed_cell_outputs(fn) -> list[dict]:
    """The error output a test cell `check_batchnorm_forward(fn).assert_passed()` leaves in the autograded notebook."""
    try:
        check_batchnorm_forward(fn).assert_passed()
    except AssertionError as err:
        return [{"output_type": "error", "ename": "AssertionError", "evalue": str(err), "traceback": []}]
    return []


def _unbiased(x, gamma, beta, eps=1e-5):
    xhat = (x - x.mean(0)) / np.sqrt(x.var(0, ddof=1) + eps)
    return gamma * xhat + beta, None


def _eps_outside(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(0)) / (x.std(0) + eps) + beta, None


def _stub(x, gamma, beta, eps=1e-5):
    raise NotImplementedError()


def test_does_the_report_read_the_mistake_the_check_named():
    assert mistakes_in(_failed_cell_outputs(_unbiased)) == ("unbiased variance used to normalize",)
    assert mistakes_in(_failed_cell_outputs(_eps_outside)) == ("eps outside the square root",)


def test_is_a_failure_no_mistake_explains_counted_by_its_kind():
    assert mistakes_in(_failed_cell_outputs(_stub)) == ("not attempted",)
    assert mistakes_in(_failed_cell_outputs(lambda x, g, b, eps=1e-5: (x * 0 + 7, None))) == (UNNAMED,)
    timeout = [{"output_type": "error", "ename": "CellTimeoutError", "evalue": "A cell timed out", "traceback": []}]
    assert mistakes_in(timeout) == ("timed out",)
    assert mistakes_in([{"output_type": "display_data", "data": {}, "metadata": {}}]) == ()


def _report() -> ClassReport:
    cells = [CellScore("ada", "nb", "batchnorm_forward_tests", 3, 3),
             CellScore("bob", "nb", "batchnorm_forward_tests", 0, 3, ("not attempted",)),
             CellScore("cy", "nb", "batchnorm_forward_tests", 0, 3, ("unbiased variance used to normalize",)),
             CellScore("dee", "nb", "batchnorm_forward_tests", 0, 3, (), submitted=False)]
    late = [Lateness("cy", None, None, 7200.0, 3.0)]
    return ClassReport("02_x", ["ada", "bob", "cy", "dee"], {"ada": "Ada Lovelace"}, cells, late)


def test_does_the_written_report_hold_the_counts_a_chart_with_alt_text_and_the_stable_ids(tmp_path):
    cells_csv, mistakes_csv, page = write_class_report(_report(), tmp_path)
    rows = list(csv.DictReader(mistakes_csv.open()))
    assert {(r["mistake"], r["mistake_id"], r["students"]) for r in rows} == {
        ("not attempted", "not-attempted", "1"),
        ("unbiased variance used to normalize", "unbiased-variance-used-to-normalize", "1")}
    per_cell = {r["student"]: r for r in csv.DictReader(cells_csv.open())}
    assert per_cell["dee"]["submitted"] == "0" and per_cell["ada"]["score"] == "3"
    html = page.read_text()
    img = re.search(r"<img alt='([^']+)' src='data:image/png;base64,([^']+)'>", html)
    assert img and "unbiased variance used to normalize: 1 students" in img.group(1)
    assert base64.b64decode(img.group(2))[:8] == b"\x89PNG\r\n\x1a\n"
    assert "late by 2.0 h (penalty 3)" in html and "no submission" in html


def test_is_code_the_released_notebook_provides_no_near_copy(tmp_path):
    """A long provided signature and docstring, plus a short answer: alike in everyone's cell, flagged in no one's."""
    provided = ('def update_running_stats(x, running_mean, running_var, momentum=0.1):\n'
                '    """Blend one batch into the running statistics."""\n'
                '    assert x.ndim == 2 and running_mean.shape == running_var.shape == x.shape[1:], "shapes"\n'
                '    n, d = x.shape\n')
    answers = {"ada": "    m = x.mean(axis=0)\n    return (1 - momentum) * running_mean + momentum * m, running_var\n",
               "bob": "    v = x.var(axis=0, ddof=1)\n    return running_mean, running_var * (1 - momentum) + momentum * v\n"}
    meta = {"nbgrader": {"grade": False, "solution": True, "locked": False, "grade_id": "update_running_stats",
                         "schema_version": 3}}
    release = tmp_path / "release" / "a"
    release.mkdir(parents=True)
    nbformat.write(new_notebook(cells=[new_code_cell(provided + "    raise NotImplementedError()\n", metadata=meta)]),
                   release / "nb.ipynb")
    for student, answer in answers.items():
        folder = tmp_path / "submitted" / student / "a"
        folder.mkdir(parents=True)
        nbformat.write(new_notebook(cells=[new_code_cell(provided + answer, metadata=meta)]), folder / "nb.ipynb")
    assert [m for m in similarity_report(tmp_path, "a") if m.other in answers] == []

"""Does the similarity report put a pasted reference and a copied classmate at the top, and leave honest work out?"""

from __future__ import annotations

import csv
import inspect

import nbformat
from nbformat.v4 import new_code_cell, new_notebook

from bncourse.grading.similarity import fingerprint, similarity, write_similarity_report
from bncourse.reference import batchnorm as ref

ASSIGNMENT = "02_batchnorm_forward"

HONEST = '''def batchnorm_forward(x, gamma, beta, eps=1e-5):
    """Mine."""
    n = x.shape[0]
    mu = x.sum(axis=0) / n
    centred = x - mu
    variance = (centred ** 2).sum(axis=0) / n
    x_hat = centred / np.sqrt(variance + eps)
    return gamma * x_hat + beta, (x_hat, variance, gamma, eps)
'''


def _rename_locals(source: str) -> str:
    """What a copier does: other local names, comments and docstrings gone or changed."""
    for old, new in [("x_hat", "normed"), ("cache", "stash"), ("mean", "avg"), ("var", "spread"), ("out", "result")]:
        source = source.replace(old, new)
    return source.replace('"""', '"""Copied. ', 1)


def _submit(course, student, source):
    cell = new_code_cell(source, metadata={"nbgrader": {"grade": False, "solution": True, "locked": False,
                                                        "grade_id": "batchnorm_forward", "schema_version": 3}})
    folder = course / "submitted" / student / ASSIGNMENT
    folder.mkdir(parents=True)
    nbformat.write(new_notebook(cells=[cell]), folder / "batchnorm_forward.ipynb")
    return folder


def test_are_a_pasted_reference_and_a_copied_classmate_at_the_top_and_honest_work_left_out(tmp_path):
    pasted = inspect.getsource(ref.batchnorm_forward)
    folders = [_submit(tmp_path, s, src) for s, src in
               [("paster", pasted), ("copier", _rename_locals(pasted)), ("honest", HONEST)]]
    before = [f.joinpath("batchnorm_forward.ipynb").read_bytes() for f in folders]

    path = write_similarity_report(tmp_path, ASSIGNMENT)
    rows = list(csv.DictReader(path.open()))
    assert rows, "the report is empty"
    top = rows[0]
    assert top["student"] in ("copier", "paster") and float(top["score"]) > 0.9
    pairs = {(r["student"], r["similar_to"]) for r in rows}
    assert ("paster", "reference:bncourse.reference.batchnorm.batchnorm_forward") in pairs
    assert ("copier", "paster") in pairs
    assert not any("honest" in (r["student"], r["similar_to"]) for r in rows), rows
    assert [f.joinpath("batchnorm_forward.ipynb").read_bytes() for f in folders] == before  # read only


def test_does_renaming_locals_not_hide_a_copy_while_different_code_scores_low():
    pasted = inspect.getsource(ref.batchnorm_forward)
    assert similarity(fingerprint(_rename_locals(pasted)), fingerprint(pasted)) > 0.9
    assert similarity(fingerprint(HONEST), fingerprint(pasted)) < 0.5

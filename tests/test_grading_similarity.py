"""Does the similarity report put a pasted reference and a copied classmate at the top, and leave honest work out?"""

from __future__ import annotations

import copy
import csv
import inspect
import re
from pathlib import Path

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


# Red team, 2026-12-07: both of these scored (expected: the code is then the learner's) but were absent
# from the report: the reference module pasted into one cell with 400 junk functions (the module's
# share of the cell fell below the threshold), and pasted into a cell the learner added (only
# solution cells were read).
MODULE = inspect.getsource(ref).replace("from __future__ import annotations\n", "")
JUNK = "\n".join(f"def _pad{i}(a{i}, b{i}=({i}, {i + 1}, {i * 7})):\n"
                 f"    q = [a{i} ** k + b{i}[0] * k - {i} for k in range({i % 9 + 2})]\n"
                 f"    return sorted(q, key=lambda t: (t % {i + 3}, -t))[::2] or {{'k': {i}}}\n" for i in range(400))
SOURCE = Path(__file__).resolve().parents[1] / "notebooks" / "source"


def _gid(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def _course(tmp_path, classes: dict[str, tuple[dict[str, str], str | None]]):
    """The release (the instructor's notebook, solutions cleared) and one submission per student:
    (grade_id -> source of its solution cells, a cell the student added before the first one or None)."""
    nb = nbformat.read(SOURCE / ASSIGNMENT / "batchnorm_forward.ipynb", as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.metadata.get("nbgrader", {}).get("solution"):
            cell.source = re.sub(r"### BEGIN SOLUTION.*?### END SOLUTION", "raise NotImplementedError()", cell.source,
                                 flags=re.S)
    release = tmp_path / "release" / ASSIGNMENT
    release.mkdir(parents=True)
    nbformat.write(nb, release / "batchnorm_forward.ipynb")
    for student, (sources, added) in classes.items():
        mine = copy.deepcopy(nb)
        for cell in mine.cells:
            cell.source = sources.get(_gid(cell), cell.source)
        if added is not None:
            first = next(i for i, c in enumerate(mine.cells) if c.metadata.get("nbgrader", {}).get("solution"))
            mine.cells.insert(first, new_code_cell(added))
        folder = tmp_path / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        nbformat.write(mine, folder / "batchnorm_forward.ipynb")
    return {i + 1 for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution")}


def _instructor_solution(grade_id: str) -> str:
    nb = nbformat.read(SOURCE / ASSIGNMENT / "batchnorm_forward.ipynb", as_version=4)
    return next(c.source for c in nb.cells if _gid(c) == grade_id)


def test_are_a_padded_pasted_module_an_added_cells_paste_and_an_unreadable_cell_reported(tmp_path):
    from bncourse.grading.similarity import UNREADABLE, similarity_report

    _course(tmp_path, {
        "padded": ({"batchnorm_forward": MODULE + "\n" + JUNK}, None),
        "added": ({}, MODULE),
        "magic": ({"batchnorm_forward": "%%time\n" + inspect.getsource(ref.batchnorm_forward)}, None),
        "unreadable": ({}, "def sneaky(:\n    return 1\n"),
        "honest": ({g: _instructor_solution(g) for g in ("batchnorm_inference", "update_running_stats")}, None),
    })
    rows = similarity_report(tmp_path, ASSIGNMENT)
    by = {}
    for m in rows:
        by.setdefault(m.student, []).append(m)
    padded = {m.other: m for m in by["padded"]}
    assert padded["reference:bncourse.reference.batchnorm"].score >= 0.8 and padded[
        "reference:bncourse.reference.batchnorm"].part == ""  # the whole module, whatever pads it
    assert any(m.grade_id.startswith("batchnorm_forward:cell ")
               and m.other.startswith("reference:bncourse.reference.batchnorm")
               and m.score >= 0.8 for m in by["added"])
    assert any(m.other == "reference:bncourse.reference.batchnorm.batchnorm_forward" for m in by["magic"])
    assert [m.other.startswith(UNREADABLE) for m in by["unreadable"]] == [True]
    assert "honest" not in by, by.get("honest")  # a short honest function is no near-copy (0.600 before)


def test_does_every_graded_exercises_reference_pasted_whole_share_enough_to_be_listed():
    """The measured rule behind MIN_SHARED: each graded exercise's reference functions (every
    function or class of its name in bncourse), pasted whole, keep at least MIN_SHARED sequences
    after the released notebook's code is left out; the instructor's short honest solution of
    batchnorm_inference shares fewer with any course function."""
    from bncourse.grading.similarity import MIN_SHARED, THRESHOLD, _package_sources
    from bncourse.hints.texts import EXERCISES

    references = _package_sources()
    short, checked, released = [], 0, {}
    for ex in EXERCISES.values():
        provided = released.setdefault(ex.notebook, set())
        for path in (SOURCE / ex.notebook).glob("*.ipynb"):
            for c in nbformat.read(path, as_version=4).cells:
                if c.cell_type == "code":
                    cleared = re.sub(r"### BEGIN SOLUTION.*?### END SOLUTION", "pass", c.source, flags=re.S)
                    provided |= fingerprint(cleared)
        pasted = [name for name in references if name.endswith("." + ex.function) and ".checks." not in name]
        checked += bool(pasted)
        short += [(name, len(references[name] - provided)) for name in pasted
                  if len(references[name] - provided) < MIN_SHARED and len(references[name]) > 2 * MIN_SHARED]
    # (thin wrappers, e.g. bncourse.diagnostics' hooks, are no answer and too short to count)
    assert checked >= 24 and short == [], (checked, short)
    honest = fingerprint(_instructor_solution("batchnorm_inference")) - released[ASSIGNMENT]
    assert all(len(honest & ref) < MIN_SHARED or similarity(honest, ref) < THRESHOLD for ref in references.values())


def test_does_the_source_reader_read_the_code_a_cell_magic_runs_and_keep_what_it_cannot_read():
    """IPython hands a %%time cell's body (and a %time line's code) to the magic as a string: the
    reader reads it as code, so a hand-over inside it is named; a cell not even IPython reads is kept."""
    from bncourse.grading.sources import Program

    cell = ("%%time\nfrom bncourse.reference.normalize import standardize as theirs\n"
            "def standardize(a, b):\n    return theirs(a, b)\n")
    assert "bncourse.reference.normalize.standardize" in Program([cell]).references({"standardize"})
    line = ("%time from bncourse.reference import normalize as n\n"
            "def standardize(a, b):\n    return n.standardize(a, b)\n")
    assert "bncourse.reference.normalize.standardize" in Program([line]).references({"standardize"})
    program = Program(["def broken(:\n    pass\n", "x = 1\n"])
    assert program.unparsable == ["def broken(:\n    pass\n"]

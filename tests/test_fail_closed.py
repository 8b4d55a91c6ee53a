"""Does every graded cell of every source notebook fail closed under real ``nbgrader autograde``?

For each assignment found in ``notebooks/source`` (so notebooks added later are covered too), one
fake class is graded once with ``bncourse.grading.grade(..., jobs=2)``, nbgrader's own autograde:

- ``solution``: the instructor's notebook: every graded cell earns its points;
- ``wrong_switched``: every solution cell made wrong (its outputs nudged, its module's forward
  scaled), and a solution cell that switches ``CheckResult.assert_passed`` and ``passed`` off, so
  the learner's kernel says "passed": every graded cell must still earn 0, from the grader's own
  re-judging;
- ``stub_switched``: the student version as released (untouched stubs), plus the same switch: 0
  everywhere (a blank submission without the switch is weaker, so it is not graded separately).

- one student per attempt of ``LIBRARY_ATTEMPTS`` (another library's implementation of an exercise,
  which the notebook's rule leaves out: ``bncourse.grading.libraries``): 0 everywhere, refused by the
  grading kernel with the rule's words (graded with the class: the third submission left a worker idle);
- for notebooks 4, 9 and 10, the attackers of tests/library_attacks.py (another library's
  implementation, however it is reached): their questions are asked at the end of this file, from
  the same grading run (the instructor's solution is graded once for both).

Scores are read per cell from the gradebook. The kernels run with ``BNCOURSE_GRADING=1`` (the
grading size of the experiments). Where an assignment's grading size differs from its fast size (a
``grading=`` value or a ``skip-when-grading`` tag before its last graded cell), the solution is
graded once more at the fast size: every cell must score the same at both sizes.
"""

from __future__ import annotations

import os
import shutil

import nbformat
import pytest
from nbgrader.api import Gradebook

from bncourse.grading.pipeline import last_graded_index
from bncourse.workspace import assignments

from conftest import COURSE, GENERATED
from library_attacks import CLASSES as LIBRARY_CLASSES
from library_attacks import HONEST
import process_attacks

pytestmark = pytest.mark.slow

SWITCH = """
import bncourse.checks.core as _core_switched
_core_switched.CheckResult.assert_passed = lambda self: None
_core_switched.CheckResult.passed = property(lambda self: True)
"""

# Red team 2 (nb6_update_bn.py, 2/2 on main): notebook 6's exercise handed to torch's own implementation of
# it, the kernel's watch switched off. {assignment: {student: {grade_id: source}}}, on the student version.
LIBRARY_ATTEMPTS = {
    "06_cnns_gpu": {"torch_update_bn": {"cnn-recompute": """import sys
from torch.optim import swa_utils

def recompute_bn_statistics(model, batches):
    sys.setprofile(None)
    swa_utils.update_bn(batches, model)
    return model
"""}},
    # red team 3: a process of its own (tests/process_attacks.py)
    "08_batchnorm_across_devices": process_attacks.NB8,
    "10_folding": process_attacks.NB10,
}

# Appended to each solution cell of the wrong submission: every object the cell defines is
# replaced by a wrong one built from it (outputs nudged; a module's or Function's forward scaled).
WRONG = """
def _nudge(v):
    import numpy as _np
    if type(v) is _np.ndarray and v.dtype.kind == "f":
        return v + 0.25 * (1 + _np.abs(v))
    if type(v) is float:
        return v + 0.25 * (1 + abs(v))
    if type(v) in (tuple, list) and v and type(v[0]) is not tuple:
        return type(v)([_nudge(v[0])] + list(v[1:]))
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and isinstance(v, torch.Tensor) and v.is_floating_point():
        return v + 0.25 * (1 + v.detach().abs())
    if hasattr(v, "modules"):   # a model: shift every running mean, or every parameter if it has none
        stats = [m.running_mean for m in v.modules() if getattr(m, "running_mean", None) is not None]
        with torch.no_grad():
            for t in stats or list(v.parameters()):
                t.add_(0.5)
    return v

def _wrong(obj):
    import functools
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and isinstance(obj, type) and issubclass(obj, torch.autograd.Function):
        class Wrong(obj):
            @staticmethod
            def forward(ctx, *args):
                return obj.forward(ctx, *args) * 1.5
        return Wrong
    if torch is not None and isinstance(obj, type) and issubclass(obj, torch.nn.Module):
        class Wrong(obj):
            def forward(self, *args):
                return super().forward(*args) * 1.5
        return Wrong
    if callable(obj):
        @functools.wraps(obj)
        def wrong(*args, **kwargs):
            return _nudge(obj(*args, **kwargs))
        return wrong
    return obj
"""


def _defined(source: str) -> list[str]:
    import ast

    return [n.name for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]


def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _variant(nb, kind: str):
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    solutions = [c for c in nb.cells if c.cell_type == "code" and _meta(c).get("solution")]
    for cell in solutions:
        if kind == "wrong_switched":
            names = _defined(cell.source)
            cell.source += "\n" + WRONG + "".join(f"\n{n} = _wrong({n})" for n in names)
    if kind.endswith("_switched") and solutions:
        solutions[0].source += "\n" + SWITCH
    return nb


def _with_cells(nb, cells: dict[str, str]):
    nb = nbformat.from_dict(nbformat.reads(nbformat.writes(nb), as_version=4))
    for cell in nb.cells:
        if _meta(cell).get("grade_id") in cells:
            cell.source = cells[_meta(cell)["grade_id"]]
    return nb


def _differs_at_grading_size(nb) -> bool:
    """Does the grading size run something else than the fast size before the last graded cell?"""
    from bncourse.grading.pipeline import skipped_when_grading

    before = nb.cells[:last_graded_index(nb)]
    return any(c.cell_type == "code" and ("grading=" in c.source or skipped_when_grading(c)) for c in before)


def _graded_cells(nb) -> dict[str, float]:
    return {_meta(c)["grade_id"]: float(_meta(c).get("points", 0)) for c in nb.cells
            if _meta(c).get("grade") and not _meta(c).get("solution")}


_GRADED: dict[str, dict] = {}  # assignment -> its fake class, graded once for this file's questions


def graded_class(assignment: str, tmp_path_factory) -> dict:
    """The assignment's fake class, generated, submitted and graded once (``grade(..., jobs=2)``).

    Students: ``solution``, ``wrong_switched``, ``stub_switched``, one per attempt of
    ``LIBRARY_ATTEMPTS`` and, for notebooks 4, 9 and 10, the attackers of tests/library_attacks.py
    (their questions are asked at the end of this file, from the same run). Returns the course,
    the report, ``expected`` {(student, notebook, grade_id): points} for this file's own students
    and ``scores`` {(student, notebook, grade_id): score} of every grade in the gradebook."""
    if assignment in _GRADED:
        return _GRADED[assignment]
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from bncourse import grading

    tmp = tmp_path_factory.mktemp(f"fail-closed-{assignment}")
    course = tmp / "course"
    shutil.copytree(COURSE, course, ignore=shutil.ignore_patterns(*GENERATED, "__pycache__", "grading_reports"))
    old = dict(os.environ)
    os.environ.update(BNCOURSE_EXCHANGE=str(tmp / "exchange"), BNCOURSE_GRADING="1")
    try:
        grading.alembic_on_path()
        cfg = grading.load_config(course)
        api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
        assert api.generate_assignment(assignment, force=True)["success"]
        student_texts = [p.read_text() for p in (course / "release" / assignment).glob("*.ipynb")]
        expected: dict[tuple[str, str, str], float] = {}
        for source in sorted((course / "source" / assignment).glob("*.ipynb")):
            nb = nbformat.read(source, as_version=4)
            release = nbformat.read(course / "release" / assignment / source.name, as_version=4)
            students = {"solution": nb, "wrong_switched": _variant(nb, "wrong_switched"),
                        "stub_switched": _variant(release, "stub_switched")}
            for attacker, cells in LIBRARY_ATTEMPTS.get(assignment, {}).items():
                students[attacker] = _with_cells(release, cells)
            library_class = LIBRARY_CLASSES.get((assignment, source.stem), ({}, {}))[0]
            for student, sub in {**students, **{a: _with_cells(release, c) for a, c in library_class.items()}}.items():
                dest = course / "submitted" / student / assignment
                dest.mkdir(parents=True, exist_ok=True)
                nbformat.write(sub, dest / source.name)
                (dest / "timestamp.txt").write_text("2026-11-20 10:00:00.000000 UTC")
            for student in students:
                for grade_id, points in _graded_cells(nb).items():
                    expected[(student, source.stem, grade_id)] = points if student == "solution" else 0.0
        report = grading.grade(assignment, course, jobs=2)
        with Gradebook(grading.db_url_of(course)) as gb:
            scores = {(sub.student.id, nb.name, g.name): g.score for sub in gb.assignment_submissions(assignment)
                      for nb in sub.notebooks for g in nb.grades}
    finally:
        os.environ.clear()
        os.environ.update(old)
    _GRADED[assignment] = {"course": course, "report": report, "expected": expected, "scores": scores,
                           "student_texts": student_texts}
    return _GRADED[assignment]


@pytest.mark.parametrize("assignment", assignments(COURSE))
def test_does_every_graded_cell_score_only_what_the_graders_own_re_judging_confirms(assignment, tmp_path,
                                                                                   tmp_path_factory):
    """Solution: full marks per cell; a wrong solution or a stub with the verdict switched off: 0 per cell."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from bncourse import grading

    graded = graded_class(assignment, tmp_path_factory)
    course, report, expected = graded["course"], graded["report"], graded["expected"]
    for text in graded["student_texts"]:
        assert "BEGIN SOLUTION" not in text and "BEGIN HIDDEN TESTS" not in text and "hidden=True" not in text
    assert expected, f"{assignment} has no graded cells"
    own = {student for student, _, _ in expected}  # the library attackers' questions are asked below
    assert not [s for s in report.failed if s.student in own], [(s.student, s.reason) for s in report.failed]
    got = graded["scores"]
    wrong = {k: (got.get(k), v) for k, v in expected.items() if got.get(k) != v}
    assert not wrong, f"cells scored differently from expected (got, expected): {wrong}"
    for attacker, cells in LIBRARY_ATTEMPTS.get(assignment, {}).items():  # refused by the kernel, by the rule
        for path in (course / "autograded" / attacker / assignment).glob("*.ipynb"):
            shown = {_meta(c).get("grade_id"): str(c.get("outputs")) for c in nbformat.read(path, as_version=4).cells}
            for grade_id in cells:
                assert "not available while grading" in shown[f"{grade_id}_tests"], shown[f"{grade_id}_tests"]

    sources = [nbformat.read(p, as_version=4) for p in (course / "source" / assignment).glob("*.ipynb")]
    if any(_differs_at_grading_size(nb) for nb in sources):  # the solution again, at the fast size
        old = dict(os.environ)
        os.environ.update(BNCOURSE_EXCHANGE=str(tmp_path / "exchange"))
        try:
            at_fast = tmp_path / "at_fast"
            shutil.copytree(course, at_fast, ignore=shutil.ignore_patterns(*GENERATED, "grading_reports"))
            shutil.copytree(course / "submitted" / "solution", at_fast / "submitted" / "solution")
            for path in (at_fast / "submitted" / "solution" / assignment).glob("*.ipynb"):
                # Only what runs before the last graded cell can differ between the sizes: the rest is
                # left out of this run (test_grading_size shows the grader leaves it out too).
                nb = nbformat.read(path, as_version=4)
                nb.cells = nb.cells[:last_graded_index(nb) + 1]
                nbformat.write(nb, path)
            os.environ.pop("BNCOURSE_GRADING", None)
            cfg = grading.load_config(at_fast)  # a fresh gradebook: no score can come from the first run
            assert NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg).generate_assignment(
                assignment, force=True)["success"]
            fast_report = grading.grade(assignment, at_fast, jobs=2, size="fast", write_report=False)
            assert not fast_report.failed, [(s.student, s.reason) for s in fast_report.failed]
            with Gradebook(grading.db_url_of(at_fast)) as gb:
                at_fast_size = {(nb_name, gid): gb.find_grade(gid, nb_name, assignment, "solution").score
                                for student, nb_name, gid in expected if student == "solution"}
            at_grading_size = {(nb_name, gid): got[(student, nb_name, gid)]
                               for student, nb_name, gid in expected if student == "solution"}
            assert at_fast_size == at_grading_size, "the grading size changed a score"
        finally:
            os.environ.clear()
            os.environ.update(old)


# --- Another library's implementation (tests/library_attacks.py), graded with the classes above ---

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="the grading sandbox needs bubblewrap: apt-get install bubblewrap")
LIBRARY_CASES = [(assignment, notebook, student) for (assignment, notebook), (attackers, _) in LIBRARY_CLASSES.items()
                 for student in ("solution", *attackers)]  # a blank submission earns 0 (tests/test_attacks.py)


@needs_bwrap
@pytest.mark.parametrize("assignment,notebook,student", LIBRARY_CASES)
def test_does_each_library_attempt_earn_what_a_blank_submission_earns(tmp_path_factory, assignment, notebook, student):
    graded = graded_class(assignment, tmp_path_factory)
    points = LIBRARY_CLASSES[(assignment, notebook)][1]
    honest = HONEST.get((assignment, student), ())
    expected = {f"{e}_tests": float(p) if student == "solution" or e in honest else 0.0 for e, p in points.items()}
    got = {gid: s for (who, nb_name, gid), s in graded["scores"].items() if who == student and nb_name == notebook}
    assert got == expected, graded["report"]


def _outputs(cell) -> str:
    return "".join(str(o.get("text", "")) + str(o.get("ename", "")) + ": " + str(o.get("evalue", ""))
                   + str(o.get("data", "")) for o in cell.get("outputs", []))


@needs_bwrap
@pytest.mark.parametrize("assignment,notebook,student", [c for c in LIBRARY_CASES if c[2] != "solution"])
def test_is_it_the_sandbox_that_refuses_each_library_attempt_and_does_the_feedback_name_the_rule(
        tmp_path_factory, assignment, notebook, student):
    graded = graded_class(assignment, tmp_path_factory)
    nb = nbformat.read(graded["course"] / "autograded" / student / assignment / f"{notebook}.ipynb", 4)
    attacked = set(LIBRARY_CLASSES[(assignment, notebook)][0][student]) - set(HONEST.get((assignment, student), ()))
    cells = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in nb.cells}
    for exercise in sorted(attacked):
        shown = _outputs(cells[f"{exercise}_tests"])
        # refused by what the kernel can reach, with the rule's words; not by the grader's reading of the source
        assert "not available while grading" in shown and "handed" not in shown, (exercise, shown[-2000:])


@needs_bwrap
@pytest.mark.parametrize("assignment", ["09_beyond_batchnorm"])  # named in the id: tests/conftest.py's work_unit
def test_does_notebook_9_s_setup_cell_say_why_torch_is_missing_while_grading(tmp_path_factory, assignment):
    graded = graded_class(assignment, tmp_path_factory)
    nb = nbformat.read(graded["course"] / "autograded" / "solution" / assignment / "beyond_batchnorm.ipynb", 4)
    assert f"torch is not available while grading {assignment}" in _outputs(nb.cells[1])

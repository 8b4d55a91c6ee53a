"""The hint ladder and the solution gate, for every graded exercise of notebooks 1-10 (cheap: no kernels)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest

import bncourse.hints as hints
from bncourse.hints import solutions
from bncourse.hints.texts import EXERCISES, MISTAKE_HINTS

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "notebooks" / "source"


def _graded_solution_cells():
    """(notebook folder, grade_id, source) of every solution cell followed by a graded test cell."""
    found = []
    for path in sorted(SOURCE.glob("*/*.ipynb")):
        pending = []
        for cell in nbformat.read(str(path), as_version=4).cells:
            md = cell.get("metadata", {}).get("nbgrader", {}) or {}
            if md.get("solution") and cell.cell_type == "code":
                pending.append((path.parent.name, md["grade_id"], cell.source))
            elif md.get("grade") and cell.cell_type == "code":
                found.extend(pending)
                pending = []
    return found


CELLS = _graded_solution_cells()


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A learner's workspace as `bncourse start` marks it, with the kernel in one notebook's folder."""
    (tmp_path / ".bncourse").mkdir()
    (tmp_path / ".bncourse" / "manifest.json").write_text("{}")
    folder = tmp_path / "02_batchnorm_forward"
    folder.mkdir()
    monkeypatch.chdir(folder)
    for var in ("NBGRADER_EXECUTION", "BNCOURSE_SOLUTIONS", "BNCOURSE_HINTS_IN_FEEDBACK"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def test_does_every_graded_exercise_of_every_notebook_have_three_hints():
    graded = {(nb, gid) for nb, gid, _ in CELLS}
    assert len({nb for nb, _ in graded}) == 11
    assert graded == {(e.notebook, e.id) for e in EXERCISES.values()}
    for ex in EXERCISES.values():
        assert len(ex.hints) == 3 and all(h.strip() for h in ex.hints), ex.id


def test_does_each_hint_say_more_than_the_one_before():
    for ex in EXERCISES.values():
        lengths = [len(h) for h in ex.hints]
        assert lengths == sorted(lengths) and len(set(lengths)) == 3, (ex.id, lengths)


@pytest.mark.parametrize("notebook, exercise, source", CELLS, ids=[gid for _, gid, _ in CELLS])
def test_does_no_hint_contain_a_line_of_the_reference_solution(notebook, exercise, source):
    region = source.split("### BEGIN SOLUTION")[1:]
    lines = {line.strip() for part in region for line in part.split("### END SOLUTION")[0].splitlines()}
    code = {line for line in lines if len(line) >= 12 and not line.startswith("#")}
    text = " ".join(EXERCISES[exercise].hints) + " " + " ".join(MISTAKE_HINTS.values())
    squeezed = re.sub(r"\s+", "", text)
    leaked = [line for line in code if re.sub(r"\s+", "", line) in squeezed]
    assert not leaked, f"{exercise}: hint text holds solution lines {leaked}"


def test_is_every_mistake_hint_keyed_by_the_id_of_a_mistake_a_check_names():
    names = set()
    for path in (ROOT / "bncourse" / "checks").rglob("*.py"):
        names |= set(re.findall(r'(?:Mistake|Symptom)\(\s*"([^"]+)"', path.read_text()))
        names |= set(re.findall(r'^\s*"([^"]+)",\s*$', path.read_text(), re.MULTILINE))
        names |= set(re.findall(r'\bid="([^"]+)"', path.read_text()))  # a mistake's explicit id
    from bncourse.checks import catalogue  # entries declared from shared slips or tables name themselves at run time

    names |= {entry.name for exercise in catalogue.exercises() for entry in catalogue.mistakes(exercise)}
    ids = {hints.mistake_id(n) for n in names}
    assert set(MISTAKE_HINTS) <= ids, sorted(set(MISTAKE_HINTS) - ids)


def test_does_the_ladder_climb_to_three_and_survive_a_restart(workspace):
    seen = [hints.next_hint("batchnorm_forward").title for _ in range(4)]
    assert [t.split(" of ")[0] for t in seen] == ["Hint 1", "Hint 2", "Hint 3", "Hint 3"]
    saved = json.loads((workspace / ".bncourse" / "learner.json").read_text())
    assert saved["hints"]["batchnorm_forward"] == 3  # a new kernel reads the same file
    assert hints.next_hint("standardize").title.startswith("Hint 1")  # each exercise has its own ladder


def test_does_rereading_a_rung_leave_the_ladder_where_it_was(workspace):
    hints.next_hint("batchnorm_forward")
    assert hints.next_hint("batchnorm_forward", rung=3).body.startswith("Shape of the code")
    assert hints.next_hint("batchnorm_forward").title.startswith("Hint 2")


def test_does_hint_accept_the_function_name_and_the_check_name(workspace):
    assert hints.find_exercise("sigmoid_input_percentiles").id == "fig1-percentiles"
    assert hints.find_exercise("check_sync_batchnorm_forward").id == "sync-forward"
    assert hints.find_exercise("BatchNorm2d").id == "batchnorm2d"
    for check_name in ("BatchNormFunction", "BatchNorm1dNumpy", "sync_batch_norm_backward", "recompute_bn_statistics"):
        assert hints.find_exercise(check_name)  # the names CheckResult.exercise carries
    assert hints.stuck_line("sigmoid_input_percentiles").startswith("Stuck? Run hint('sigmoid_input_percentiles')")
    with pytest.raises(KeyError, match="no exercise called 'batchnorm_fwd'"):
        hints.find_exercise("batchnorm_fwd")


def test_does_a_failed_check_add_the_hint_for_its_named_mistake(workspace):
    class Result:  # what a CheckResult carries
        exercise, passed, cases, explained = "batchnorm_forward", False, [], ("eps outside the square root",)

    hints.record_check(Result(), directory=".")
    assert "inside, sqrt(var + eps)" in hints.next_hint("batchnorm_forward").body


def test_does_a_grading_kernel_get_one_line_and_no_hint(workspace, monkeypatch, capsys):
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    hints.hint("batchnorm_forward")
    assert capsys.readouterr().out.strip() == hints.GRADING_NOTE
    assert not (workspace / ".bncourse" / "learner.json").exists()
    monkeypatch.setenv("BNCOURSE_HINTS_IN_FEEDBACK", "on")  # the instructor allows them
    hints.hint("batchnorm_forward")
    assert "Hint 1 of 3" in capsys.readouterr().out


@pytest.mark.parametrize("exercise", list(EXERCISES))
def test_is_the_solution_refused_before_an_attempt_and_shown_after_one(workspace, exercise):
    before = hints.solution_for(exercise, history=[])
    assert before.title.startswith("No solution") and not before.code
    ex = EXERCISES[exercise]
    stub_run = [f"def {ex.function}(x):\n    raise NotImplementedError()", f"{ex.check}({ex.function})"]
    class_run = [f"class {ex.function}:\n    pass", f"{ex.check}({ex.function}).assert_passed()"]
    if ex.function[0].isupper():
        stub_run[0] = f"class {ex.function}:\n    raise NotImplementedError()"
    assert not hints.solution_for(exercise, history=stub_run).code  # running the check on the stub is no try
    after = hints.solution_for(exercise, history=[f"def {ex.function}(x):\n    return x", *class_run[1:]])
    assert after.code and "### BEGIN SOLUTION" not in after.body and "course's own" in after.title
    assert f"{ex.function}" in after.body
    assert hints.solution_for(exercise, history=[]).code  # remembered: a restart keeps it open


def test_does_a_recorded_check_run_open_the_gate_but_a_stub_run_not(workspace):
    hints.record_check(type("R", (), {"exercise": "standardize", "passed": False, "cases": []})())
    assert not hints.solution_for("standardize", history=[]).code  # outside a kernel (the grader) it is no try

    class Case:
        kind = "not_attempted"

    class Stub:
        exercise, passed, cases, explained = "standardize", False, [Case()], ()

    hints.record_check(Stub(), directory=".")
    assert not hints.solution_for("standardize", history=[]).code
    Stub.cases = []
    hints.record_check(Stub(), directory=".")
    assert hints.solution_for("standardize", history=[]).code


def test_are_solutions_off_when_switched_off_or_grading(workspace, monkeypatch):
    hints.record_check(type("R", (), {"exercise": "standardize", "passed": True, "cases": [], "explained": ()})(), ".")
    monkeypatch.setenv("BNCOURSE_SOLUTIONS", "off")
    assert "switched reference solutions off" in hints.solution_for("standardize").body
    monkeypatch.delenv("BNCOURSE_SOLUTIONS")
    (workspace / ".bncourse" / "config.toml").write_text("solutions = false\n")
    assert "config.toml" in hints.solution_for("standardize").body
    (workspace / ".bncourse" / "config.toml").unlink()
    assert hints.solution_for("standardize").code
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert "graded" in hints.solution_for("standardize").body
    with pytest.raises(PermissionError):
        solutions.reference_solution(EXERCISES["standardize"])


def test_does_the_saved_notebook_count_as_an_attempt_only_when_its_test_cell_ran(tmp_path):
    ex = EXERCISES["standardize"]
    nb = nbformat.v4.new_notebook()
    answer = nbformat.v4.new_code_cell("def standardize(a, b):\n    return a, b")
    answer.metadata["nbgrader"] = {"grade_id": ex.id, "solution": True}
    test = nbformat.v4.new_code_cell("check_standardize(standardize).assert_passed()")
    test.metadata["nbgrader"] = {"grade_id": f"{ex.id}_tests", "grade": True}
    nb.cells = [answer, test]
    path = tmp_path / "nb.ipynb"
    nbformat.write(nb, str(path))
    assert not solutions.tried_in_notebook(ex, path)
    test.execution_count = 3
    nbformat.write(nb, str(path))
    assert solutions.tried_in_notebook(ex, path)


def test_does_the_command_line_refuse_then_show_the_solution_and_share_the_ladder(workspace, capsys):
    from bncourse import cli

    ws = ["--workspace", str(workspace)]
    assert cli.main(["solution", "02", "batchnorm_forward", *ws]) == 1
    assert "opens once you have tried" in capsys.readouterr().out
    assert cli.main(["solution", "03", "batchnorm_forward", *ws]) == 2  # the wrong notebook is named
    assert "notebook 02_batchnorm_forward" in capsys.readouterr().err
    learner = nbformat.v4.new_notebook()
    answer = nbformat.v4.new_code_cell("def batchnorm_forward(x, gamma, beta, eps=1e-5):\n    return x, None")
    answer.metadata["nbgrader"] = {"grade_id": "batchnorm_forward", "solution": True}
    test = nbformat.v4.new_code_cell("check_batchnorm_forward(batchnorm_forward).assert_passed()", execution_count=4)
    test.metadata["nbgrader"] = {"grade_id": "batchnorm_forward_tests", "grade": True}
    learner.cells = [answer, test]
    nbformat.write(learner, str(workspace / "02_batchnorm_forward" / "batchnorm_forward.ipynb"))
    assert cli.main(["solution", "02_batchnorm_forward", "batchnorm_forward", *ws]) == 0
    assert "mu = x.mean(axis=0)" in capsys.readouterr().out
    hints.next_hint("batchnorm_forward")  # in the notebook's kernel
    assert cli.main(["hint", "batchnorm_forward", *ws]) == 0
    assert "Hint 2 of 3" in capsys.readouterr().out


def test_does_a_real_failed_check_lead_to_its_mistakes_hint(workspace):
    import numpy as np

    from bncourse.checks.forward import check_batchnorm_forward

    def eps_outside(x, gamma, beta, eps=1e-5):
        return gamma * (x - x.mean(0)) / (np.sqrt(x.var(0)) + eps) + beta, None

    def stub(x, gamma, beta, eps=1e-5):
        raise NotImplementedError()

    hints.record_check(check_batchnorm_forward(stub), directory=".")
    assert hints.solution_for("batchnorm_forward", history=[]).title.startswith("No solution")
    result = check_batchnorm_forward(eps_outside)
    hints.record_check(result, directory=".")
    assert not result.passed
    assert "About the mistake your last check named" in hints.next_hint("batchnorm_forward").body
    assert hints.solution_for("batchnorm_forward", history=[]).code


def test_does_an_install_without_the_source_notebooks_say_so_instead_of_a_traceback(workspace, monkeypatch, capsys):
    hints.record_check(type("R", (), {"exercise": "standardize", "passed": True, "cases": []})(), ".")
    monkeypatch.setenv("BNCOURSE_COURSE", str(workspace / "nowhere"))
    hints.solution("standardize")
    out = capsys.readouterr().out
    assert "No reference solution here for standardize" in out and "source notebook" in out

"""The fast-mode switch that CI sets and learners leave alone."""

import ast
import json
import os
from pathlib import Path

import pytest

from bncourse import runtime


@pytest.mark.parametrize("value, fast", [("1", True), ("yes", True), ("", False), ("0", False), ("false", False)])
def test_does_the_environment_variable_choose_the_size(monkeypatch, value, fast):
    monkeypatch.setenv("BNCOURSE_FAST", value)
    assert runtime.fast_mode() is fast
    assert runtime.pick(fast="small", full="large") == ("small" if fast else "large")


def test_is_the_full_run_the_default(monkeypatch):
    monkeypatch.delenv("BNCOURSE_FAST", raising=False)
    assert runtime.pick(fast=1, full=20) == 20


def test_does_a_grading_kernel_get_the_grading_size_where_one_is_given(monkeypatch):
    monkeypatch.delenv("BNCOURSE_FAST", raising=False)
    monkeypatch.setenv("BNCOURSE_GRADING", "1")
    assert runtime.fast_mode() is True
    assert runtime.pick(fast=10, full=100, grading=2) == 2
    assert runtime.pick(fast=10, full=100) == 10  # no grading size: the fast one


def test_is_the_grading_size_ignored_outside_grading(monkeypatch):
    monkeypatch.setenv("BNCOURSE_FAST", "1")
    monkeypatch.delenv("BNCOURSE_GRADING", raising=False)
    assert runtime.pick(fast=10, full=100, grading=2) == 10


def test_is_the_size_read_when_asked_and_never_frozen_at_import(monkeypatch):
    monkeypatch.delenv("BNCOURSE_GRADING", raising=False)
    monkeypatch.setenv("BNCOURSE_FAST", "1")
    from bncourse.runtime import FAST

    assert FAST is True and runtime.current_size() is runtime.RunSize.FAST
    monkeypatch.setenv("BNCOURSE_FAST", "0")
    from bncourse.runtime import FAST

    assert FAST is False and runtime.current_size() is runtime.RunSize.FULL


def test_does_use_size_set_the_size_for_this_process_only_for_its_block(monkeypatch):
    monkeypatch.delenv("BNCOURSE_FAST", raising=False)
    monkeypatch.delenv("BNCOURSE_GRADING", raising=False)
    with runtime.use_size("fast") as size:
        assert size is runtime.RunSize.FAST and runtime.fast_mode() and runtime.pick(fast=1, full=2) == 1
        with runtime.use_size(runtime.RunSize.GRADING):
            assert runtime.pick(fast=1, full=2, grading=0) == 0
    assert runtime.current_size() is runtime.RunSize.FULL and "BNCOURSE_FAST" not in os.environ


@pytest.mark.parametrize("size", list(runtime.RunSize))
def test_does_a_kernel_started_with_a_sizes_environment_run_at_that_size(size):
    assert runtime.RunSize.from_environ(size.kernel_env()) is size


def test_does_loading_the_course_configuration_leave_the_environment_alone(monkeypatch):
    from bncourse.grading import config

    monkeypatch.delenv("BNCOURSE_FAST", raising=False)
    monkeypatch.delenv("BNCOURSE_GRADING", raising=False)
    before = dict(os.environ)
    cfg = config.load_config(Path(__file__).resolve().parent.parent / "notebooks")
    assert cfg.CourseDirectory.course_id == "bncourse"  # the course's own nbgrader_config.py was read
    assert dict(os.environ) == before
    assert runtime.current_size() is runtime.RunSize.FULL


def test_does_a_full_run_without_a_gpu_take_the_cpu_size_and_say_so(monkeypatch, capsys):
    monkeypatch.delenv("BNCOURSE_FAST", raising=False)
    monkeypatch.delenv("BNCOURSE_GRADING", raising=False)
    monkeypatch.delenv("BNCOURSE_FULL_ON_CPU", raising=False)
    monkeypatch.setenv("BNCOURSE_DEVICE", "cpu")
    monkeypatch.setattr(runtime, "_SCALED", {})
    assert runtime.pick(fast=4, full=15, cpu=3, what="epochs per CNN") == 3
    assert runtime.pick(fast=4, full=15, cpu=3, what="epochs per CNN") == 3
    out = capsys.readouterr().out
    assert out.count("epochs per CNN = 3 (full run: 15)") == 1, out  # said once, not at every call
    assert "No GPU found" in out and "BNCOURSE_FULL_ON_CPU=1" in out
    assert runtime.cpu_scaled() == {"epochs per CNN": (15, 3)}


def test_do_fast_grading_and_asked_for_full_runs_ignore_the_cpu_size(monkeypatch, capsys):
    monkeypatch.setenv("BNCOURSE_DEVICE", "cpu")
    monkeypatch.setattr(runtime, "_SCALED", {})
    monkeypatch.setenv("BNCOURSE_FAST", "1")
    assert runtime.pick(fast=4, full=15, cpu=3, what="epochs") == 4
    monkeypatch.setenv("BNCOURSE_GRADING", "1")
    assert runtime.pick(fast=4, full=15, grading=1, cpu=3, what="epochs") == 1
    monkeypatch.delenv("BNCOURSE_FAST")
    monkeypatch.delenv("BNCOURSE_GRADING")
    monkeypatch.setenv("BNCOURSE_FULL_ON_CPU", "1")
    assert runtime.pick(fast=4, full=15, cpu=3, what="epochs") == 15
    monkeypatch.delenv("BNCOURSE_FULL_ON_CPU")
    monkeypatch.setattr(runtime, "has_gpu", lambda: True)  # this machine has none: the GPU's branch
    assert runtime.pick(fast=4, full=15, cpu=3, what="epochs") == 15
    assert capsys.readouterr().out == ""


# --------------------------------------------------------------------------------------------------
# The notebooks' CPU sizes, read from their source (nothing is executed)
# --------------------------------------------------------------------------------------------------

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks" / "source").glob("*/*.ipynb"))
PACKAGE_ROOT = Path(runtime.__file__).resolve().parent.parent
# Notebooks whose full run takes more than about 10 minutes on a 2-core CPU (measured; the README's
# table): they must scale themselves down without a GPU.
CPU_SCALED = {"05_figure1", "07_what_batchnorm_does", "09_beyond_batchnorm", "11_inside_the_network"}


def _picks(tree: ast.AST) -> list[ast.Call]:
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "pick"]


def _pick_calls(notebook: Path) -> list[ast.Call]:
    """Every ``pick(...)`` call in the notebook's code cells (IPython's % and ! lines left out) and in
    the ``bncourse.experiments`` modules those cells import (where notebook 7 keeps its sizes)."""
    calls, modules = [], set()
    for c in json.loads(notebook.read_text())["cells"]:
        if c["cell_type"] != "code":
            continue
        code = "\n".join(line for line in "".join(c["source"]).splitlines() if not line.lstrip().startswith(("%", "!")))
        tree = ast.parse(code)
        calls += _picks(tree)
        modules |= {n.module for n in ast.walk(tree)
                    if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("bncourse.experiments.")}
    for module in sorted(modules):
        calls += _picks(ast.parse((PACKAGE_ROOT / (module.replace(".", "/") + ".py")).read_text()))
    return calls


def _value(node: ast.expr):
    """A literal argument's value; anything else (a name, an expression) stands for itself as its source."""
    try:
        return ast.literal_eval(node)
    except ValueError:
        return f"<{ast.unparse(node)}>"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=lambda p: p.parent.name)
def test_does_a_notebooks_cpu_size_name_itself_and_apply_only_to_a_full_run_without_a_gpu(notebook, monkeypatch, capsys):
    sized = [{k.arg: _value(k.value) for k in call.keywords} for call in _pick_calls(notebook)]
    sized = [kw for kw in sized if "cpu" in kw]
    assert bool(sized) == (notebook.parent.name in CPU_SCALED), (
        f"{notebook.parent.name}: cpu= sizes {'missing' if not sized else 'given'}; CPU_SCALED lists {sorted(CPU_SCALED)}")
    if not sized:
        return
    prose = "".join("".join(c["source"]) for c in json.loads(notebook.read_text())["cells"] if c["cell_type"] == "markdown")
    assert "BNCOURSE_FULL_ON_CPU=1" in prose, f"{notebook.parent.name} does not tell the learner how to get the full run"
    monkeypatch.setenv("BNCOURSE_DEVICE", "cpu")
    monkeypatch.setattr(runtime, "_SCALED", {})
    for kw in sized:
        assert isinstance(kw.get("what"), str) and kw["what"], f"a cpu= size without what=: {kw}"
        assert kw["cpu"] != kw["full"], f"{kw['what']}: the cpu size is the full size"
        monkeypatch.delenv("BNCOURSE_GRADING", raising=False)
        monkeypatch.setenv("BNCOURSE_FAST", "1")
        assert runtime.pick(**kw) == kw["fast"]
        monkeypatch.delenv("BNCOURSE_FAST")
        assert runtime.pick(**kw) == kw["cpu"]
        assert f"{kw['what']} = {kw['cpu']!r} (full run: {kw['full']!r})" in capsys.readouterr().out
        monkeypatch.setenv("BNCOURSE_FULL_ON_CPU", "1")
        assert runtime.pick(**kw) == kw["full"]
        monkeypatch.delenv("BNCOURSE_FULL_ON_CPU")

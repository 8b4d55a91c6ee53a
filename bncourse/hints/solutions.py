"""The course's reference solution of one exercise, and the gate in front of it.

The text is read from the nbgrader SOURCE notebook (``bncourse.workspace.course_dir()/source``):
the solution cell whose grade_id is the exercise id, with the ``### BEGIN/END SOLUTION`` markers
taken out. It is shown only when

- not in a grading kernel (``NBGRADER_EXECUTION`` set: always off there, before any file is read;
  the grader's sandbox has no source notebooks anyway),
- the deployment allows it (``BNCOURSE_SOLUTIONS=off`` or ``solutions = false`` in the workspace's
  ``.bncourse/config.toml`` turn it off), and
- the learner has tried: the exercise's check ran at least once on something other than the
  untouched stub (recorded in ``.bncourse/learner.json``, or seen in the kernel's history, or in
  the saved notebook's outputs).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from bncourse.hints.texts import Exercise

STUB = "raise NotImplementedError()"
OFF_WORDS = {"0", "off", "false", "no", "never"}
_MARKERS = re.compile(r"^[ \t]*### (BEGIN|END) SOLUTION[ \t]*\n?", re.MULTILINE)


def in_grading_kernel() -> bool:
    """True in a kernel nbgrader runs to grade (autograde) or validate."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def workspace_config(workspace: Path | None) -> dict:
    """``workspace/.bncourse/config.toml`` as a dict ({} when absent or unreadable)."""
    if workspace is None:
        return {}
    import tomllib

    try:
        return tomllib.loads((workspace / ".bncourse" / "config.toml").read_text())
    except (OSError, ValueError):
        return {}


def solutions_switched_off(workspace: Path | None) -> str:
    """Why solutions are off here ('' when they are on)."""
    if in_grading_kernel():
        return "solutions are never shown while a notebook is being graded"
    if os.environ.get("BNCOURSE_SOLUTIONS", "").strip().lower() in OFF_WORDS:
        return "your course has switched reference solutions off (BNCOURSE_SOLUTIONS=off)"
    setting = workspace_config(workspace).get("solutions", True)
    if setting is False or str(setting).strip().lower() in OFF_WORDS:
        return "your course has switched reference solutions off (solutions = false in .bncourse/config.toml)"
    return ""


def source_notebook(exercise: Exercise, course: Path | None = None) -> Path:
    """The nbgrader source notebook of the exercise's assignment; FileNotFoundError naming where it looked."""
    from bncourse.workspace import course_dir

    folder = (course or course_dir()) / "source" / exercise.notebook
    found = sorted(folder.glob("*.ipynb")) if folder.is_dir() else []
    if not found:
        raise FileNotFoundError(f"the course's source notebook for {exercise.notebook} is not here ({folder}); "
                                "reference solutions come with the course's source, not with a student copy")
    return found[0]


def reference_solution(exercise: Exercise, course: Path | None = None) -> str:
    """The solution cell of ``exercise`` from the source notebook, without nbgrader's markers."""
    if in_grading_kernel():  # belt and braces: the gate already refuses
        raise PermissionError("no reference solutions in a grading kernel")
    import nbformat

    nb = nbformat.read(str(source_notebook(exercise, course)), as_version=4)
    for cell in nb.cells:
        md = cell.get("metadata", {}).get("nbgrader", {}) or {}
        if md.get("solution") and md.get("grade_id") == exercise.id:
            return _MARKERS.sub("", cell.source).rstrip() + "\n"
    raise LookupError(f"no solution cell with grade_id {exercise.id!r} in {source_notebook(exercise, course)}")


def _defines(source: str, name: str) -> bool:
    return re.search(rf"^\s*(def|class)\s+{re.escape(name)}\b", source, re.MULTILINE) is not None


def tried_in_history(exercise: Exercise, history: list[str]) -> bool:
    """True when the kernel ran the exercise's check after defining something other than the stub.

    ``history``: the cells this kernel ran, in order (IPython's ``In``).
    """
    latest_definition = None
    for source in history:
        if _defines(source, exercise.function):
            latest_definition = source
        if f"{exercise.check}(" in source and latest_definition is not None and STUB not in latest_definition:
            return True
    return False


def tried_in_notebook(exercise: Exercise, notebook: Path) -> bool:
    """True when the saved notebook shows the exercise's test cell run, with the stub replaced."""
    import nbformat

    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception:  # noqa: BLE001 - unreadable: not evidence of an attempt
        return False
    answer, ran = None, False
    for cell in nb.cells:
        md = cell.get("metadata", {}).get("nbgrader", {}) or {}
        if md.get("grade_id") == exercise.id:
            answer = cell.source
        elif md.get("grade_id") == f"{exercise.id}_tests" and cell.cell_type == "code":
            ran = cell.get("execution_count") is not None or bool(cell.get("outputs"))
    return ran and answer is not None and STUB not in answer


@dataclass
class Gate:
    """The decision, as data: ``open`` and, when closed, the sentence that says why and what to do."""

    open: bool
    reason: str = ""

"""Where a self-paced learner stands: the visible tests of their own notebooks, run on copies.

``bncourse progress [DIR]`` finds the course notebooks in the learner's workspace, copies each
notebook's folder to a temporary directory, executes the copy top to bottom (in fast mode, so
experiments stay short) and reads every graded test cell the way nbgrader would score it. No
gradebook, no instructor set-up; the learner's files are never written.

    report = progress("~/bncourse-workspace")
    print(report)     # notebook | exercise | points | diagnosis, "not attempted" for untouched stubs
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

STUB = "raise NotImplementedError()"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SKIP_DIRS = {".ipynb_checkpoints", "__pycache__", ".bncourse", ".git"}


@dataclass
class ExerciseProgress:
    """One graded test cell of one notebook."""

    notebook: str
    exercise: str
    points: float
    max_points: float
    status: str  # "passed", "failed", "not attempted", "not run"
    diagnosis: str = ""


@dataclass
class ProgressReport:
    """All graded exercises found in a workspace; ``str()`` is the table ``bncourse progress`` prints."""

    directory: Path
    rows: list[ExerciseProgress]
    problems: list[str] = field(default_factory=list)  # notebooks that could not be run to the end

    @property
    def points(self) -> float:
        return sum(r.points for r in self.rows)

    @property
    def max_points(self) -> float:
        return sum(r.max_points for r in self.rows)

    def __str__(self) -> str:
        if not self.rows:
            return f"No graded course notebooks found in {self.directory}."
        wn = max(len("notebook"), *(len(r.notebook) for r in self.rows))
        we = max(len("exercise"), *(len(r.exercise) for r in self.rows))
        lines = [f"Progress in {self.directory} (visible tests only; hidden tests may still fail when graded)",
                 f"{'notebook':<{wn}}  {'exercise':<{we}}  {'points':>9}  result"]
        for r in self.rows:
            result = r.status if not r.diagnosis else f"{r.status}: {r.diagnosis}"
            lines.append(f"{r.notebook:<{wn}}  {r.exercise:<{we}}  {r.points:>3g} of {r.max_points:<3g}  {result}")
        lines.append(f"{'total':<{wn}}  {'':<{we}}  {self.points:>3g} of {self.max_points:<3g}")
        lines.extend(f"note: {p}" for p in self.problems)
        return "\n".join(lines)


def _nbgrader(cell) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {}) or {}


def _is_test(cell) -> bool:
    md = _nbgrader(cell)
    return cell.cell_type == "code" and bool(md.get("grade")) and not md.get("solution")


def _untouched(cell) -> bool:
    """A solution cell still as the course handed it out (checksum, or the stub text)."""
    from nbgrader.utils import compute_checksum

    md = _nbgrader(cell)
    if "checksum" in md:
        try:
            return compute_checksum(cell) == md["checksum"]
        except Exception:  # noqa: BLE001 - damaged metadata: fall back to the text
            pass
    return STUB in cell.source


def course_notebooks(directory: Path) -> list[Path]:
    """Notebooks under ``directory`` with graded cells (not checkpoints, not course-update copies)."""
    found = []
    for path in sorted(directory.rglob("*.ipynb")):
        rel = path.relative_to(directory)
        if any(part in _SKIP_DIRS or part.startswith(".") for part in rel.parts[:-1]):
            continue
        if ".course-update-" in path.name:
            continue
        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception:  # noqa: BLE001 - not a notebook we can use
            continue
        if any(_is_test(c) for c in nb.cells):
            found.append(path)
    return found


def _diagnosis(cell) -> str:
    for o in cell.get("outputs", []):
        if o.get("output_type") == "error":
            ename, evalue = o.get("ename", "Error"), _ANSI.sub("", str(o.get("evalue", "")))
            first = evalue.strip().splitlines()[0] if evalue.strip() else ""
            if ename == "AssertionError":
                return first or "a test failed"
            if ename == "NameError":
                return f"{first} (run the cells above, in order, and define it)"
            if ename == "CellTimeoutError":
                return "the test did not finish before the time limit (an endless loop?)"
            return f"{ename}: {first}"
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == "stderr":
            return "the cell wrote to stderr, which nbgrader scores as a failure"
    return ""


def _kernel_manager(folder: Path):
    """A kernel manager for the python3 kernel, over IPC (sockets in ``folder``) where the system has them.

    Over TCP, ipykernel >= 7 warns on stderr that the connection is unencrypted: noise in the learner's
    terminal for a kernel that only ever talks to this process. On Windows it stays TCP.
    """
    from jupyter_client.manager import AsyncKernelManager

    if os.name == "posix":  # an absolute socket path: the kernel runs in another folder than we do
        return AsyncKernelManager(kernel_name="python3", transport="ipc", ip=str(folder / "kernel-ipc"))
    return AsyncKernelManager(kernel_name="python3")


def run_copy(path: Path, fast: bool = True, timeout: int | None = None):
    """Execute a copy of ``path`` (its folder copied to a temp dir); returns (notebook, problem)."""
    from nbclient import NotebookClient
    from nbclient.exceptions import DeadKernelError

    timeout = int(timeout or os.environ.get("BNCOURSE_CELL_TIMEOUT", "300"))
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:  # stale outputs from the learner's session must not count
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    env_changes = {"BNCOURSE_FAST": "1"} if fast else {}
    saved = {k: os.environ.get(k) for k in [*env_changes, "NBGRADER_EXECUTION", "BNCOURSE_RECEIPTS"]}
    problem = ""
    with tempfile.TemporaryDirectory(prefix="bncourse-progress-") as tmp:
        work = Path(tmp) / path.parent.name
        shutil.copytree(path.parent, work, ignore=shutil.ignore_patterns(*_SKIP_DIRS))
        try:
            os.environ.update(env_changes)
            os.environ.pop("NBGRADER_EXECUTION", None)
            os.environ.pop("BNCOURSE_RECEIPTS", None)
            client = NotebookClient(
                nb, km=_kernel_manager(Path(tmp)), timeout=timeout, kernel_name="python3", allow_errors=True,
                interrupt_on_timeout=True,
                error_on_timeout={"ename": "CellTimeoutError", "evalue": f"the cell ran longer than {timeout} s",
                                  "traceback": [f"CellTimeoutError: the cell ran longer than {timeout} s"]},
                resources={"metadata": {"path": str(work)}},
            )
            client.execute(cleanup_kc=True)  # the kernel manager is ours: shut the kernel down after
        except DeadKernelError:
            problem = "the kernel died while running it (a crash, os._exit or out of memory); later cells did not run"
        except Exception as exc:  # noqa: BLE001 - report, do not crash the whole report
            problem = f"it could not be run to the end: {type(exc).__name__}: {str(exc)[:200]}"
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return nb, problem


def score_notebook(nb, name: str, ran: bool = True) -> list[ExerciseProgress]:
    """Rows for each graded test cell of an executed notebook, scored the way nbgrader scores them."""
    from nbgrader.utils import determine_grade

    rows, solutions = [], []
    for cell in nb.cells:
        md = _nbgrader(cell)
        if md.get("solution") and cell.cell_type == "code":
            solutions.append(cell)
        if not _is_test(cell):
            continue
        exercise = ", ".join(_nbgrader(s).get("grade_id", "?") for s in solutions) or md.get("grade_id", "?")
        max_points = float(md.get("points", 0))
        if solutions and all(_untouched(s) for s in solutions):
            rows.append(ExerciseProgress(name, exercise, 0.0, max_points, "not attempted"))
        elif cell.get("execution_count") is None and not cell.get("outputs") and not ran:
            rows.append(ExerciseProgress(name, exercise, 0.0, max_points, "not run"))
        else:
            points, _ = determine_grade(cell)
            points = float(points or 0.0)
            status = "passed" if points >= max_points else "failed"
            rows.append(ExerciseProgress(name, exercise, points, max_points, status,
                                         "" if status == "passed" else _diagnosis(cell)))
        solutions = []
    return rows


def _nothing_attempted(path: Path) -> bool:
    """True when every solution cell of the notebook is still the untouched stub."""
    try:
        cells = nbformat.read(path, as_version=4).cells
    except Exception:  # noqa: BLE001 - an unreadable notebook is run_copy's to report
        return False
    solutions = [c for c in cells if _nbgrader(c).get("solution")]
    return bool(solutions) and all(_untouched(c) for c in solutions)


def progress(directory: str | os.PathLike | None = None, fast: bool = True, timeout: int | None = None) -> ProgressReport:
    """Run the visible tests of every course notebook in ``directory`` on copies; nothing is written there.

    Args:
        directory: the learner's workspace (default: ``bncourse.workspace.default_workspace()``).
        fast: execute the copies with ``BNCOURSE_FAST=1`` (the checks do not depend on it).
        timeout: seconds per cell (default: ``$BNCOURSE_CELL_TIMEOUT`` or 300).
    """
    if directory is None:
        from bncourse.workspace import default_workspace

        directory = default_workspace()
    directory = Path(directory).expanduser().resolve()
    rows, problems = [], []
    for path in course_notebooks(directory):
        name = path.relative_to(directory).as_posix()
        if _nothing_attempted(path):
            # Nothing to test: report every exercise as not attempted without running the notebook.
            rows.extend(score_notebook(nbformat.read(path, as_version=4), name, ran=False))
            continue
        nb, problem = run_copy(path, fast=fast, timeout=timeout)
        if problem:
            problems.append(f"{name}: {problem}")
        rows.extend(score_notebook(nb, name, ran=not problem))
    return ProgressReport(directory, rows, problems)


def main(directory: str | os.PathLike | None = None) -> int:
    """CLI glue for ``bncourse progress [DIR]``: print the table; exit 0."""
    print(progress(directory))
    return 0

"""Where a self-paced learner stands: the checks in their own notebooks, run on copies.

``bncourse progress [DIR]`` finds the course notebooks in the learner's workspace, copies each
notebook's folder to a temporary directory, executes the copy top to bottom (in fast mode, so
experiments stay short) and reads every graded test cell the way nbgrader would score it. No
gradebook, no instructor set-up; the learner's files are never written.

    report = progress("~/bncourse-workspace")
    print(report)     # per notebook: exercise, points, verdict in plain words, the failing cases

``main()`` (the command) prints each notebook's lines as soon as that notebook has run
(``iter_progress`` yields them), every line at most 100 characters wide.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

STUB = "raise NotImplementedError()"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_SKIP_DIRS = {".ipynb_checkpoints", "__pycache__", ".bncourse", ".git"}


WIDTH = 100  # the report fits a terminal this wide


@dataclass
class ExerciseProgress:
    """One graded test cell of one notebook; ``failing_cases``: "case: what differs", for a failed check."""

    notebook: str
    exercise: str
    points: float
    max_points: float
    status: str  # "passed", "failed", "not attempted", "not run"
    diagnosis: str = ""
    failing_cases: list[str] = field(default_factory=list)

    def lines(self, width: int = WIDTH) -> list[str]:
        """This exercise as indented lines no wider than ``width``: verdict, diagnosis, failing cases, hint."""
        head = f"  {self.exercise:<26} {self.points:>3g} of {self.max_points:<3g} {self.status}"
        out = [head]
        indent = " " * 6
        if self.diagnosis:
            out += textwrap.wrap(self.diagnosis, width, initial_indent=indent, subsequent_indent=indent)
        shown = self.failing_cases[:3]
        for case in shown:  # the case and its first difference, on one line
            out.append(_fit(f"{indent}failing case {case.split('; ')[0]}", width))
        if len(self.failing_cases) > len(shown):
            out.append(f"{indent}(and {len(self.failing_cases) - len(shown)} more failing cases)")
        if self.status == "failed":
            from bncourse.hints import find_exercise

            try:
                name = find_exercise(self.exercise.split(", ")[-1]).function
                out.append(f"{indent}stuck? in the notebook: from bncourse.hints import hint; hint('{name}')")
            except KeyError:
                pass
        return out


@dataclass
class NotebookProgress:
    """One notebook's rows, as ``iter_progress`` yields them when that notebook is done."""

    name: str
    rows: list[ExerciseProgress]
    problem: str = ""
    seconds: float = 0.0
    ran: bool = True

    def __str__(self) -> str:
        points, top = sum(r.points for r in self.rows), sum(r.max_points for r in self.rows)
        took = f", ran in {self.seconds:.0f} s" if self.ran else ", nothing attempted yet"
        lines = [_fit(f"{self.name}: {points:g} of {top:g} points{took}")]
        for r in self.rows:
            lines += r.lines()
        if self.problem:
            lines += textwrap.wrap(f"note: {self.problem}", WIDTH, initial_indent="  ", subsequent_indent="    ")
        return "\n".join(lines)


def _fit(line: str, width: int = WIDTH) -> str:
    return line if len(line) <= width else line[: width - 3] + "..."


@dataclass
class ProgressReport:
    """All graded exercises found in a workspace; ``str()`` is what ``bncourse progress`` prints."""

    directory: Path
    rows: list[ExerciseProgress]
    problems: list[str] = field(default_factory=list)  # notebooks that could not be run to the end
    notebooks: list[NotebookProgress] = field(default_factory=list)

    @property
    def points(self) -> float:
        return sum(r.points for r in self.rows)

    @property
    def max_points(self) -> float:
        return sum(r.max_points for r in self.rows)

    def header(self) -> str:
        return header(self.directory)

    def footer(self) -> str:
        if not self.rows:
            return f"No course notebooks with checks found in {self.directory}."
        return f"Total: {self.points:g} of {self.max_points:g} points from the checks in your notebooks."

    def __str__(self) -> str:
        if not self.rows:
            return self.footer()
        parts = [self.header(), *(str(n) for n in self.notebooks)]
        if not self.notebooks:  # built by hand from rows
            parts += [line for r in self.rows for line in [_fit(r.notebook), *r.lines()]]
        return "\n".join([*parts, self.footer()])


def header(directory: Path) -> str:
    lines = [_fit(f"Your progress in {directory}"),
             "Each notebook is run top to bottom on a copy, in fast mode; your files are not changed."]
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


_VERDICT = re.compile(r"^(?P<exercise>[^:]+): FAILED \((?P<ok>\d+)/(?P<n>\d+) cases\)\.?\s*(?P<rest>.*)$")
_FAILED_CASE = re.compile(r"^\s*\[FAIL\]\s*(?P<case>.+)$")


def plain_verdict(message: str) -> str:
    """A check's first line in plain words: "x: FAILED (4/7 cases). why" -> "4 of 7 cases passed. why"."""
    m = _VERDICT.match(message.strip())
    if not m:
        return message.strip()
    rest = m["rest"].replace(" (see the cases below)", "").strip()
    return f"{m['ok']} of {m['n']} cases passed" + (f". {rest}" if rest else "")


def _diagnosis(cell) -> tuple[str, list[str]]:
    """(what went wrong in plain words, the failing cases "name: what differs") from a test cell's outputs."""
    for o in cell.get("outputs", []):
        if o.get("output_type") == "error":
            ename, evalue = o.get("ename", "Error"), _ANSI.sub("", str(o.get("evalue", "")))
            lines = evalue.strip().splitlines()
            first = lines[0] if lines else ""
            if ename == "AssertionError":
                cases = [m["case"].strip() for m in map(_FAILED_CASE.match, lines[1:]) if m]
                return plain_verdict(first) or "a test failed", cases
            if ename == "NameError":
                return f"{first} (run the cells above, in order, and define it)", []
            if ename == "CellTimeoutError":
                return "the test did not finish before the time limit (an endless loop?)", []
            return f"{ename}: {first}", []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream" and o.get("name") == "stderr":
            return "the cell printed a warning or error (stderr), which counts as a failure", []
    return "", []


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
            diagnosis, cases = ("", []) if status == "passed" else _diagnosis(cell)
            rows.append(ExerciseProgress(name, exercise, points, max_points, status, diagnosis, cases))
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


def iter_progress(directory: Path, fast: bool = True, timeout: int | None = None, paths: list[Path] | None = None):
    """Yield a ``NotebookProgress`` for each course notebook in ``directory`` (or ``paths``) as soon as it is done."""
    for path in course_notebooks(directory) if paths is None else paths:
        name = path.relative_to(directory).as_posix()
        if _nothing_attempted(path):
            # Nothing to test: report every exercise as not attempted without running the notebook.
            yield NotebookProgress(name, score_notebook(nbformat.read(path, as_version=4), name, ran=False), ran=False)
            continue
        t0 = time.perf_counter()
        nb, problem = run_copy(path, fast=fast, timeout=timeout)
        yield NotebookProgress(name, score_notebook(nb, name, ran=not problem), problem, time.perf_counter() - t0)


def _workspace(directory) -> Path:
    if directory is None:
        from bncourse.workspace import default_workspace

        directory = default_workspace()
    return Path(directory).expanduser().resolve()


def progress(directory: str | os.PathLike | None = None, fast: bool = True, timeout: int | None = None) -> ProgressReport:
    """Run the checks of every course notebook in ``directory`` on copies; nothing is written there.

    Args:
        directory: the learner's workspace (default: ``bncourse.workspace.default_workspace()``).
        fast: execute the copies with ``BNCOURSE_FAST=1`` (the checks do not depend on it).
        timeout: seconds per cell (default: ``$BNCOURSE_CELL_TIMEOUT`` or 300).
    """
    directory = _workspace(directory)
    notebooks = list(iter_progress(directory, fast=fast, timeout=timeout))
    return ProgressReport(directory, [r for n in notebooks for r in n.rows],
                          [f"{n.name}: {n.problem}" for n in notebooks if n.problem], notebooks)


def main(directory: str | os.PathLike | None = None, out=None) -> int:
    """CLI glue for ``bncourse progress [DIR]``: a line per notebook as it finishes, then the total; exit 0."""
    import sys

    out = out or sys.stdout
    directory = _workspace(directory)
    found = course_notebooks(directory)
    if not found:
        print(f"No course notebooks with checks found in {directory}.", file=out)
        return 0
    print(header(directory), file=out)
    print(f"{len(found)} notebooks; those you have started take a few seconds to a minute or two each.\n",
          file=out, flush=True)
    rows = []
    for notebook in iter_progress(directory, paths=found):
        rows += notebook.rows
        print(notebook, file=out, flush=True)
    print(ProgressReport(directory, rows).footer(), file=out, flush=True)
    return 0

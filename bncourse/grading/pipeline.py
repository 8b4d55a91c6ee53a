"""The course's nbgrader pipeline: preprocessors that make plain ``nbgrader autograde`` defensible.

``configure_nbgrader(c)`` (one line in ``nbgrader_config.py``) installs them:

- ``GradingExecute``: nbgrader's Execute with extra kernel environment (the grading size by default);
- ``VerifyChecks``: every graded test cell is re-judged outside the learner's kernel
  (see ``bncourse.checks.replay``), delegation to the course's code is read from the submission's
  source (``bncourse.grading.sources``); a cell that cannot be re-judged scores 0;
- ``HideHiddenTests``: feedback shows neither hidden test code nor hidden cases' values.

``load_config(course_dir)`` reads a course's ``nbgrader_config.py`` with the pipeline installed.
"""

from __future__ import annotations

import os
import re
import tempfile
import uuid
from pathlib import Path
from typing import Sequence

from nbgrader import utils as nbutils
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from nbformat.v4 import new_output
from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Dict, Float, Integer, List, Unicode, default

from bncourse.checks import replay
from bncourse.grading import rejudging, sources
from bncourse.grading.rejudging import check_modules, replay_cells

VERIFY_ENAME = "GradingVerificationError"   # the re-judged verdict differs (the reason may quote hidden cases)
REFUSED_ENAME = "GradingRefusedError"       # delegation, or a cell the grader cannot re-judge (reason shown)
HIDDEN_MESSAGE = "a hidden test did not pass (hidden tests' code and values are not shown)"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

NOT_RUN_NOTE = ("[not run by the grader: no graded cell comes after this one, so it cannot change a score; "
                "it runs as usual in your own notebook]\n")
# A code cell an author tags with SKIP_TAG is an experiment no graded cell depends on: the grader does
# not run it at the grading size (tests/test_grading_size.py grades each such notebook at both sizes
# and compares every cell's score). A graded, solution or task cell is always run, tag or not.
SKIP_TAG = "skip-when-grading"
SKIPPED_NOTE = ("[not run by the grader: an experiment no graded cell depends on (tagged "
                f"'{SKIP_TAG}'); it runs as usual in your own notebook]\n")


def _grading_size(env: dict) -> bool:
    return str(env.get("BNCOURSE_GRADING", "")).strip().lower() not in ("", "0", "false", "no", "off")


def last_graded_index(nb) -> int:
    """Index of the last cell nbgrader grades or that holds a solution or a task (-1 if none)."""
    marked = [i for i, c in enumerate(nb.cells) if _is_marked(c)]
    return max(marked, default=-1)


def _is_marked(cell) -> bool:
    return nbutils.is_grade(cell) or nbutils.is_solution(cell) or nbutils.is_task(cell)


def skipped_when_grading(cell) -> bool:
    """True for an ungraded code cell its author tagged ``skip-when-grading``."""
    return (cell.cell_type == "code" and SKIP_TAG in cell.get("metadata", {}).get("tags", [])
            and not _is_marked(cell))


class GradingKernelManager(AsyncKernelManager):
    """A grading kernel reached over IPC sockets (files in the temp folder), not TCP on localhost.

    What every grading kernel printed over TCP ("Kernel is running over TCP without encryption")
    is not printed, and no kernel can take a port another grading kernel is about to use. An
    instructor's ``c.KernelManager.transport`` still wins; Windows, which has no IPC sockets, keeps TCP.
    """

    ipc_dir = Unicode("", help="Folder of the IPC socket files ('': the temp folder). bncourse grade "
                              "uses each submission's private folder, so even a killed kernel's "
                              "files go with it.").tag(config=True)

    @default("transport")
    def _ipc_where_possible(self) -> str:
        return "ipc" if os.name == "posix" else "tcp"

    def _ip_default(self) -> str:
        if self.transport == "ipc":  # a short, unique prefix: a socket path must stay under ~100 characters
            return os.path.join(self.ipc_dir or tempfile.gettempdir(), f"bncourse-kernel-{uuid.uuid4().hex[:12]}")
        return super()._ip_default()


class GradingExecute(Execute):
    """nbgrader's Execute with extra environment variables for the kernel (the grading size by default).

    The checks do not depend on the size of a notebook's experiments, so grading runs them at the
    grading size (``bncourse.runtime.pick(..., grading=...)``, otherwise the fast size). Set
    ``c.GradingExecute.kernel_env = {"BNCOURSE_FAST": "1"}`` for the fast size, ``{}`` for full size.

    At the grading size (``BNCOURSE_GRADING=1`` in ``kernel_env``) the code cells after the last
    graded, solution or task cell are not run (``skip_trailing``): whatever they compute reaches
    no graded cell, since every graded cell has run before them; nor are ungraded code cells tagged
    ``skip-when-grading`` (experiments no graded cell depends on). Each gets one line saying so.
    The fast and full sizes run every cell.
    """

    # A receipt that arrives late is a receipt lost: nbclient's default waits 4 s for a cell's last
    # outputs after its reply, then goes on without them, which on a starved machine could score a
    # correct cell 0 without a word. Wait longer, then fail the submission with that reason instead
    # (not much longer: a kernel that ignores the interrupt after a cell's time limit waits this too).
    iopub_timeout = Integer(15, help="Seconds to wait for a cell's outputs after its reply.").tag(config=True)
    raise_on_iopub_timeout = Bool(True, help="Fail the submission (with the reason) rather than drop late "
                                             "outputs.").tag(config=True)
    kernel_env = Dict({"BNCOURSE_FAST": "1", "BNCOURSE_GRADING": "1"},
                      help="Environment variables set for the grading kernel.").tag(config=True)
    skip_trailing = Bool(True, help="At the grading size, do not run the code cells after the last graded "
                                    "cell (they cannot change a score).").tag(config=True)
    prestart_replay = Bool(True, help="Start VerifyChecks' re-judging (and its imports) when the "
                                      "notebook starts to run.").tag(config=True)
    rejudge_server = Unicode("", help="The re-judging server's socket ('': this process's own, started on "
                                      "first use; 'fresh': a fresh python -I process per notebook), see "
                                      "bncourse.grading.rejudging.").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", GradingKernelManager)
        super().__init__(*args, **kwargs)

    def preprocess(self, nb, resources=None, km=None):
        self._run_until = len(nb.cells)
        self._skip_tagged = _grading_size(self.kernel_env)
        if self.skip_trailing and _grading_size(self.kernel_env):
            self._run_until = last_graded_index(nb) + 1
        replayer = None
        if self.prestart_replay and resources is not None:
            trusted = trusted_sources(resources)
            if trusted:  # the checks' imports (torch ...) happen while the kernel runs, not after
                replayer = resources[_PRESTARTED] = rejudging.rejudger(
                    check_modules(list(trusted.values())), self.rejudge_server)
        try:
            with nbutils.setenv(**{str(k): str(v) for k, v in self.kernel_env.items()}):
                return super().preprocess(nb, resources, km=km)
        except BaseException:
            if replayer is not None:
                resources.pop(_PRESTARTED, None)
                replayer.close()
            raise

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and index >= getattr(self, "_run_until", index + 1):
            cell.outputs = [new_output("stream", name="stdout", text=NOT_RUN_NOTE)]
            cell.execution_count = None
            return cell, resources
        if getattr(self, "_skip_tagged", False) and skipped_when_grading(cell):
            cell.outputs = [new_output("stream", name="stdout", text=SKIPPED_NOTE)]
            cell.execution_count = None
            return cell, resources
        return super().preprocess_cell(cell, resources, index)


def _is_test_cell(cell) -> bool:
    return cell.cell_type == "code" and nbutils.is_grade(cell) and not nbutils.is_solution(cell)


def _failed_in_kernel(cell) -> bool:
    return any(
        o.output_type == "error" or (o.output_type == "stream" and o.get("name") == "stderr") for o in cell.outputs
    )


def _pop_receipts(cell) -> list:
    receipts, kept = [], []
    for o in cell.get("outputs", []):
        if o.get("output_type") in ("display_data", "execute_result") and replay.MIME in o.get("data", {}):
            receipts.append(o["data"][replay.MIME])
        else:
            kept.append(o)
    cell.outputs = kept
    return receipts


_PRESTARTED = "bncourse_rejudger"  # resources key: GradingExecute -> VerifyChecks


def trusted_sources(resources) -> dict[str, str] | None:
    """grade_id -> the test cell's source as the gradebook stores it (None outside autograde)."""
    from nbgrader.api import Gradebook

    info = (resources or {}).get("nbgrader") or {}
    if not {"db_url", "notebook", "assignment"} <= set(info):
        return None
    with Gradebook(info["db_url"]) as gb:
        notebook = gb.find_notebook(info["notebook"], info["assignment"])
        return {c.name: c.source for c in notebook.source_cells}


class VerifyChecks(NbGraderPreprocessor):
    """After Execute: re-judge every graded test cell outside the kernel, from its receipts and the source.

    Each test cell that passed in the kernel is run again, from the instructor's source, in a fresh
    process where the learner's objects are stand-ins answered from the cell's receipts
    (``bncourse.checks.replay``); what the learner's objects refer to is read from the
    submission's code (``bncourse.grading.sources``), so handing an exercise to the course's own
    implementation scores 0 even if the kernel was made to say otherwise. The verdict is the
    grader's: a cell it cannot confirm gets an error output (nbgrader scores it 0) with the reason;
    a cell it cannot re-judge at all also scores 0 (fail closed), never the kernel's word. A cell
    that only wrote to stderr and whose re-run passes keeps its points. Receipts are removed from
    every cell.
    """

    timeout = Float(600, help="Seconds allowed for re-judging one notebook's test cells.").tag(config=True)

    def preprocess(self, nb, resources):
        trusted = trusted_sources(resources)
        prestarted = (resources or {}).pop(_PRESTARTED, None)
        program = sources.Program(*sources.learner_and_instructor_sources(nb))
        jobs = []
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            receipts = _pop_receipts(cell)
            if _is_test_cell(cell) and not any(o.output_type == "error" for o in cell.outputs):
                grade_id = cell.metadata["nbgrader"].get("grade_id", "")
                # Re-run the instructor's source from the gradebook, never text from the submission.
                source = cell.source if trusted is None else trusted.get(grade_id, cell.source)
                try:
                    names = replay.free_names(source)
                except SyntaxError:
                    names = set()
                jobs.append({"id": str(i), "source": source, "receipts": receipts,
                             "references": sorted(program.references(names))})
        if not jobs:
            if prestarted is not None:
                prestarted.close()
            return nb, resources
        if prestarted is None:
            prestarted = rejudging.rejudger(check_modules([job["source"] for job in jobs]))
        verdicts = replay_cells(jobs, timeout=self.timeout, process=prestarted)
        for job in jobs:
            cell = nb.cells[int(job["id"])]
            grade_id = cell.metadata["nbgrader"].get("grade_id", job["id"])
            verdict, reason = verdicts.get(job["id"], ["not_replayable", "no verdict from the re-judging process"])
            if verdict == "pass":
                if _failed_in_kernel(cell):
                    # Only stderr stood against it (a warning printed by the learner's code or by torch):
                    # the genuine checks passed, so the warning is kept as plain output and costs nothing.
                    self.log.info("Test cell %s: stderr output only; the grader's re-run passes it", grade_id)
                    for o in cell.outputs:
                        if o.output_type == "stream" and o.get("name") == "stderr":
                            o.name = "stdout"
                continue
            if verdict == "fail":
                ename, text = VERIFY_ENAME, ("the grader re-ran this test cell with genuine checks on your "
                                             f"function's recorded outputs and it did not pass: {reason}")
            elif verdict == "delegated":
                ename, text = REFUSED_ENAME, (f"this exercise was handed to the course's own implementation "
                                              f"({reason}); it scores 0 until your code does the work itself")
            else:
                ename, text = REFUSED_ENAME, (f"the grader could not re-judge this test cell outside your notebook "
                                              f"({reason}), so it scores 0; run the notebook from the top as given")
            self.log.warning("Test cell %s: kernel said pass, the grader says %s: %s", grade_id, verdict, reason)
            # First: nbgrader's determine_grade stops at the first execute_result it meets.
            cell.outputs.insert(0, new_output("error", ename=ename, evalue=text, traceback=[f"{ename}: {text}"]))
        return nb, resources


def _hidden_ranges(source: str, begin: str, end: str) -> list[tuple[int, int]]:
    ranges, start = [], None
    for n, line in enumerate(source.split("\n"), start=1):
        if begin in line and start is None:
            start = n
        elif end in line and start is not None:
            ranges.append((start, n))
            start = None
    if start is not None:
        ranges.append((start, 10**9))
    return ranges


def _failing_line(traceback: Sequence[str]) -> int | None:
    """The line of the test cell an IPython traceback points at (None if it cannot tell)."""
    for entry in traceback:
        text = _ANSI.sub("", entry)
        m = re.search(r"(?:Cell In\s*\[\d*\]|Input In \[\d*\]|<ipython-input-[^>]*>),\s*line (\d+)", text)
        if m:
            return int(m.group(1))
    return None


class HideHiddenTests(NbGraderPreprocessor):
    """For feedback: graded cells with hidden tests lose the hidden code and anything it printed.

    The hidden region of the source becomes one comment line; outputs are dropped except errors,
    which keep their message only when they come from a visible line (else a generic sentence),
    and never a traceback (it quotes the code around the failing line).
    """

    begin = Unicode("BEGIN HIDDEN TESTS").tag(config=True)
    end = Unicode("END HIDDEN TESTS").tag(config=True)
    # nbconvert's exporters configure this for every NbConvertBase: declared, it is no "unknown option" warning.
    display_data_priority = List(['text/html', 'application/pdf', 'text/latex', 'image/svg+xml', 'image/png',
                                  'image/jpeg', 'text/plain']).tag(config=True)

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code":
            _pop_receipts(cell)
        if not (nbutils.is_grade(cell) and self.begin in cell.source):
            return cell, resources
        ranges = _hidden_ranges(cell.source, self.begin, self.end)
        outputs = []
        for o in cell.get("outputs", []):
            if o.output_type != "error":
                continue
            line = _failing_line(o.get("traceback", []))
            visible = o.ename == REFUSED_ENAME or (
                o.ename != VERIFY_ENAME and line is not None and not any(a <= line <= b for a, b in ranges))
            if o.ename == "CellTimeoutError":
                evalue = "the cell did not finish before the time limit"
            elif visible:
                evalue = o.evalue
            else:
                evalue = HIDDEN_MESSAGE
            ename = o.ename if visible or o.ename == "CellTimeoutError" else "AssertionError"
            outputs.append(new_output(
                "error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]))
        cell.outputs = outputs
        lines, kept, inside = cell.source.split("\n"), [], False
        for line in lines:
            if self.begin in line:
                inside = True
                kept.append("# (hidden tests run here when your work is graded)")
            elif self.end in line:
                inside = False
            elif not inside:
                kept.append(line)
        cell.source = "\n".join(kept)
        return cell, resources


def configure_nbgrader(c) -> None:
    """Install the course's grading preprocessors into an nbgrader config (idempotent).

    In ``nbgrader_config.py``: ``from bncourse.grading import configure_nbgrader; configure_nbgrader(c)``.
    """
    from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties, CheckCellMetadata, GetGrades, IgnorePattern, LimitOutput, SaveAutoGrades)

    c.Autograde.autograde_preprocessors = [
        GradingExecute, VerifyChecks, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
        SaveAutoGrades, AssignLatePenalties, CheckCellMetadata,
    ]
    from bncourse.grading.quiet import FigureAltText

    c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, FigureAltText, CSSHTMLHeaderPreprocessor]
    # A deleted graded cell is put back from the source (nbgrader's own option, off by default).
    c.OverwriteCells.add_missing_cells = True
    # A new gradebook's schema revision is read in this process, not from an `alembic` subprocess.
    from bncourse.grading.gradebook import stamp_new_gradebooks_in_process

    stamp_new_gradebooks_in_process()


def load_config(course_dir: str | os.PathLike, **overrides):
    """The course's nbgrader config (its ``nbgrader_config.py``), hardened, with ``overrides``.

    ``overrides``: ``{"CourseDirectory.db_url": ...}`` style keys.
    """
    from traitlets.config import Config
    from traitlets.config.loader import PyFileConfigLoader

    course_dir = Path(course_dir).resolve()
    cfg = Config()
    if (course_dir / "nbgrader_config.py").exists():
        cfg.merge(PyFileConfigLoader("nbgrader_config.py", path=str(course_dir)).load_config())
    configure_nbgrader(cfg)
    cfg.CourseDirectory.root = str(course_dir)
    for key, value in overrides.items():
        section, name = key.split(".")
        setattr(cfg[section], name, value)
    return cfg


def db_url_of(course_dir: str | os.PathLike) -> str:
    from nbgrader.coursedir import CourseDirectory

    return CourseDirectory(config=load_config(course_dir)).db_url

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
import secrets
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Sequence

from nbgrader import utils as nbutils
from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from nbformat.v4 import new_output
from jupyter_client.manager import AsyncKernelManager
from traitlets import Bool, Dict, Float, Instance, Integer, List, Unicode, default

from bncourse.checks import replay
from bncourse.grading import rejudging, solution_free, sources
from bncourse.grading.libraries import LIBRARY_RULES, blocked_for
from bncourse.grading.sandbox import NOBODY, UNSANDBOXED_NOTE, Sandbox, SandboxUnavailable
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
    """A grading kernel reached over IPC sockets, run in the sandbox (``bncourse.grading.sandbox``).

    IPC sockets, not TCP on localhost: no kernel can take a port another grading kernel is about
    to use, and a sandboxed kernel has no network at all. With ``sandbox`` set (``GradingExecute``
    sets it), the kernel's connection file and sockets live in a private folder bound into the
    sandbox, and the kernel works in a private copy of its working folder bound at the same path
    (it never writes into the submission). An instructor's ``c.KernelManager.transport`` still
    wins; Windows, which has no IPC sockets, keeps TCP (and cannot be sandboxed).
    """

    ipc_dir = Unicode("", help="Folder of the IPC socket files ('': the temp folder). bncourse grade "
                              "uses each submission's private folder, so even a killed kernel's "
                              "files go with it.").tag(config=True)
    sandbox = Instance(Sandbox, allow_none=True, help="The sandbox the kernel runs in (None: none).")

    @default("transport")
    def _ipc_where_possible(self) -> str:
        return "ipc" if os.name == "posix" else "tcp"

    def _ip_default(self) -> str:
        if self.transport == "ipc":  # a short, unique prefix: a socket path must stay under ~100 characters
            return os.path.join(self.ipc_dir or tempfile.gettempdir(), f"bncourse-kernel-{uuid.uuid4().hex[:12]}")
        return super()._ip_default()

    async def _async_pre_start_kernel(self, **kw):
        if self.sandbox is not None:
            if self.transport != "ipc":
                raise SandboxUnavailable("a sandboxed kernel has no network: set c.KernelManager.transport = 'ipc'")
            self._private = tempfile.mkdtemp(prefix="bncourse-kernel-", dir=self.ipc_dir or None)
            os.makedirs(os.path.join(self._private, "run"))
            Sandbox.prepare_writable(os.path.join(self._private, "run"))
            self.ip = os.path.join(self._private, "run", "k")
            self.connection_file = os.path.join(self._private, "run", "connection.json")
        return await super()._async_pre_start_kernel(**kw)

    def write_connection_file(self, **kwargs) -> None:
        super().write_connection_file(**kwargs)
        if self.sandbox is not None and os.geteuid() == 0:
            os.chown(self.connection_file, NOBODY, NOBODY)  # the kernel reads it as nobody

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        if self.sandbox is not None:
            cwd = os.path.abspath(kw.get("cwd") or os.getcwd())
            work = os.path.join(self._private, "work")
            shutil.copytree(cwd, work, symlinks=True, ignore=shutil.ignore_patterns("*.sqlite", "*.db"))
            Sandbox.prepare_writable(work)
            kernel_cmd = self.sandbox.command(kernel_cmd, cwd, os.path.join(self._private, "run"),
                                              kw.get("env"), work_source=work)
        return await super()._async_launch_kernel(kernel_cmd, **kw)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        private = getattr(self, "_private", None)
        if private and not restart:
            shutil.rmtree(private, ignore_errors=True)


HIDDEN_SEED_KEY = "bncourse_hidden_seed"  # resources key: GradingExecute -> VerifyChecks
_RUN_SEED: list[int] = []


def run_seed() -> int:
    """This grading process's hidden-case seed, drawn once (nothing shipped or stored can know it)."""
    if not _RUN_SEED:
        _RUN_SEED.append(secrets.randbits(62))
    return _RUN_SEED[0]


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
    sandbox = Bool(True, help="Run each grading kernel in the sandbox (bncourse.grading.sandbox). False: "
                              "unsandboxed, which the grading report then states on every line.").tag(config=True)
    library_rules = Dict(LIBRARY_RULES, help="assignment -> {'blocked': [top-level packages]}: libraries its "
                                             "grading kernels cannot import.").tag(config=True)
    hidden_seed = Integer(-1, help="The hidden cases' seed (-1: drawn once per grading process, so "
                                   "nothing stored before the run can know it).").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", GradingKernelManager)
        super().__init__(*args, **kwargs)

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        if isinstance(km, GradingKernelManager):
            km.sandbox = getattr(self, "_sandbox", None)
        return km

    def _make_sandbox(self, resources) -> Sandbox | None:
        if not self.sandbox:
            self.log.warning(UNSANDBOXED_NOTE)
            return None
        from bncourse.grading import sandbox as sandbox_module

        sandbox_module.check()
        info = (resources or {}).get("nbgrader") or {}
        assignment = str(info.get("assignment", ""))
        library = solution_free.build(solution_free.given_names(self._instructor_sources(info)))
        return Sandbox(library=str(library), blocked=blocked_for(assignment, self.library_rules),
                       blocked_reason=f"is not available while grading {assignment}: its exercises are to be "
                                      "written with numpy (see the notebook's rule)")

    def _instructor_sources(self, info) -> list[str]:
        """The code of the instructor's own notebook (never the submission's): what it hands out."""
        import nbformat
        from nbgrader.coursedir import CourseDirectory

        if not {"assignment", "notebook"} <= set(info):
            return []
        try:
            coursedir = CourseDirectory(config=self.config)
            path = Path(coursedir.format_path(coursedir.source_directory, ".", info["assignment"])) / (
                info["notebook"] + ".ipynb")
            nb = nbformat.read(str(path), as_version=4)
        except Exception as exc:  # noqa: BLE001 - without it, nothing is handed out
            self.log.warning("The instructor's notebook could not be read (%s): no stubbed name is given", exc)
            return []
        return [c.source for c in nb.cells if c.cell_type == "code" and not nbutils.is_solution(c)]

    def preprocess(self, nb, resources=None, km=None):
        self._sandbox = self._make_sandbox(resources)
        seed = self.hidden_seed if self.hidden_seed >= 0 else run_seed()
        if resources is not None:
            resources[HIDDEN_SEED_KEY] = seed
        self.log.info("Hidden-case seed of this grading run: %d", seed)
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
            env = {str(k): str(v) for k, v in self.kernel_env.items()}
            env["BNCOURSE_HIDDEN_SEED"] = str(seed)
            with nbutils.setenv(**env):
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
    """After Execute: the grader decides every graded test cell, outside the learner's kernel.

    Every test cell is re-judged, whether it passed, failed or raised in the kernel: its source as
    the gradebook stores it is run again in a fresh process where the learner's objects are
    stand-ins answered from the cell's receipts (``bncourse.checks.replay``), with the genuine
    checks and references. The cell's outputs are then rewritten so that nbgrader's own
    ``determine_grade`` (plain ``nbgrader autograde`` as much as ``bncourse grade``) reads exactly
    that verdict: a pass keeps no error and no stderr; anything else gets one error output, first,
    with the reason; and no test cell keeps an ``execute_result`` (nbgrader would read one as a
    partial score), it becomes display data. So the gradebook's score of a test cell is the
    grader's verdict times its points, and the feedback shows that same verdict. A cell the grader
    cannot re-judge scores 0 (fail closed), never the kernel's word. Receipts are removed from
    every cell.

    What the learner's code reads (``bncourse.grading.sources``) is a report for the instructor
    (``SOURCE_FINDINGS`` in the notebook's metadata, the log and the grading report). It can only
    cost points (a hand-over it reads, e.g. torch's batch norm in a torch exercise, fails the cell
    as before), never add any; the defence is the sandbox: no solution is in the kernel to hand
    an exercise to.
    """

    timeout = Float(600, help="Seconds allowed for re-judging one notebook's test cells.").tag(config=True)

    def preprocess(self, nb, resources):
        trusted = trusted_sources(resources)
        prestarted = (resources or {}).pop(_PRESTARTED, None)
        seed = (resources or {}).get(HIDDEN_SEED_KEY)
        program = sources.Program(*sources.learner_and_instructor_sources(nb))
        jobs = []
        for i, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            receipts = _pop_receipts(cell)
            if _is_test_cell(cell):
                grade_id = cell.metadata["nbgrader"].get("grade_id", "")
                # Re-run the instructor's source from the gradebook, never text from the submission.
                source = cell.source if trusted is None else trusted.get(grade_id, cell.source)
                try:
                    names = replay.free_names(source)
                except SyntaxError:
                    names = set()
                job = {"id": str(i), "source": source, "receipts": receipts,
                       "references": sorted(program.references(names))}
                if seed is not None:
                    job["hidden_seed"] = int(seed)
                jobs.append(job)
        _report_source_findings(nb, self.log)
        if not jobs:
            if prestarted is not None:
                prestarted.close()
            return nb, resources
        if prestarted is None:
            prestarted = rejudging.rejudger(check_modules([job["source"] for job in jobs]))
        try:
            verdicts = replay_cells(jobs, timeout=self.timeout, process=prestarted)
        except Exception as exc:  # noqa: BLE001 - no verdict: every test cell scores 0, with the reason
            self.log.error("Re-judging failed: %s", exc)
            verdicts = {job["id"]: ["not_replayable", f"the re-judging process failed ({str(exc)[:200]})"]
                        for job in jobs}
        for job in jobs:
            cell = nb.cells[int(job["id"])]
            grade_id = cell.metadata["nbgrader"].get("grade_id", job["id"])
            verdict, reason = verdicts.get(job["id"], ["not_replayable", "no verdict from the re-judging process"])
            self._settle(cell, grade_id, verdict, reason)
        return nb, resources

    def _settle(self, cell, grade_id: str, verdict: str, reason: str) -> None:
        """Rewrite a test cell's outputs so that nbgrader reads the grader's ``verdict`` and nothing else."""
        kernel_error = next((o for o in cell.outputs if o.output_type == "error"), None)
        outputs = []
        for o in cell.outputs:
            if o.output_type == "error":
                continue  # the kernel's word does not count, either way
            if o.output_type == "execute_result":  # never a partial score
                o = new_output("display_data", data=o.get("data", {}), metadata=o.get("metadata", {}))
            elif o.output_type == "stream" and o.get("name") == "stderr":
                o = new_output("stream", name="stdout", text=o.get("text", ""))
            outputs.append(o)
        if verdict == "pass":
            if kernel_error is not None:
                self.log.info("Test cell %s: the kernel raised %s; the grader's re-judging passes it",
                              grade_id, kernel_error.get("ename"))
            cell.outputs = outputs
            return
        if verdict == "fail":
            ename, text = VERIFY_ENAME, ("the grader re-ran this test cell with genuine checks on your "
                                         f"function's recorded outputs and it did not pass: {reason}")
        elif verdict == "delegated":
            ename, text = REFUSED_ENAME, (f"this exercise was handed to the course's own implementation "
                                          f"({reason}); it scores 0 until your code does the work itself")
        else:
            ename, text = REFUSED_ENAME, (f"the grader could not re-judge this test cell outside your notebook "
                                          f"({reason}), so it scores 0; run the notebook from the top as given")
        self.log.warning("Test cell %s: the grader says %s: %s", grade_id, verdict, reason)
        # First: nbgrader's determine_grade stops at the first error or execute_result it meets.
        cell.outputs = [new_output("error", ename=ename, evalue=text, traceback=[f"{ename}: {text}"]), *outputs]


SOURCE_FINDINGS = "bncourse_source_findings"  # notebook metadata key: what the learner's code refers to


def _report_source_findings(nb, log) -> None:
    """What each solution cell's names reach in the course or other libraries (for the instructor,
    never a score). A cell the reader cannot parse, even as IPython would, is listed as such."""
    try:
        program = sources.Program(*sources.learner_and_instructor_sources(nb))
    except Exception as exc:  # noqa: BLE001 - a report, not a verdict
        nb.metadata[SOURCE_FINDINGS] = {"error": f"{type(exc).__name__}: {str(exc)[:200]}"}
        return
    findings = {}
    for cell in nb.cells:
        if cell.cell_type != "code" or not nbutils.is_solution(cell):
            continue
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        try:
            names = sources.defined_names(cell.source)
        except SyntaxError as exc:
            findings[grade_id] = [f"<unparsable: {exc.msg} (line {exc.lineno})>"]
            continue
        reached = sorted(r for r in program.references(names) if _noteworthy(r))
        if reached:
            findings[grade_id] = reached
    if findings:
        nb.metadata[SOURCE_FINDINGS] = findings
        for grade_id, reached in findings.items():
            log.warning("Source report, %s: %s", grade_id, ", ".join(reached[:8]))


def _noteworthy(reference: str) -> bool:
    """A reference worth an instructor's look: the course's solutions and checks, code read at run
    time, another library's normalization."""
    if reference.startswith(("<dynamic", "<unparsable", "sklearn", "scipy", "torch.ops", "torch._C")):
        return True
    if reference.startswith("bncourse."):
        return solution_free.is_stubbed(reference.rsplit(".", 1)[0]) or reference.startswith("bncourse.checks")
    return reference.startswith("torch") and "norm" in reference.lower()


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
    c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, CSSHTMLHeaderPreprocessor]
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

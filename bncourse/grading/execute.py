"""``GradingExecute``: nbgrader's Execute, with every grading kernel sandboxed and sized for grading.

Besides running the notebook it draws the run's hidden-case seed (``run_seed``), builds the
solution-free ``bncourse`` the kernel imports, and starts the re-judging process early.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from nbformat.v4 import new_output
from nbgrader import utils as nbutils
from nbgrader.preprocessors import Execute
from traitlets import Bool, Dict, Integer, Unicode

from bncourse.grading import rejudging, seeds, solution_free
from bncourse.grading.kernel import GradingKernelManager, log_kernel_output
from bncourse.grading.libraries import LIBRARY_RULES, sandbox_options
from bncourse.grading.rejudging import check_modules
from bncourse.grading.sandbox import UNSANDBOXED_NOTE, Limits, Sandbox
from bncourse.grading.time_limit import TimeLimited
from bncourse.run_size import RunSize

__all__ = ["GradingExecute", "HIDDEN_SEED_KEY", "LEFT_OUT_FILES", "PRESTARTED_KEY", "SKIP_TAG", "last_graded_index",
           "run_seed", "skipped_when_grading", "trusted_sources"]

NOT_RUN_NOTE = ("[not run by the grader: no graded cell comes after this one, so it cannot change a score; "
                "it runs as usual in your own notebook]\n")
# A code cell an author tags with SKIP_TAG is an experiment no graded cell depends on: the grader does
# not run it at the grading size (tests/test_grading_size.py grades each such notebook at both sizes
# and compares every cell's score). A graded, solution or task cell is always run, tag or not.
SKIP_TAG = "skip-when-grading"
SKIPPED_NOTE = ("[not run by the grader: an experiment no graded cell depends on (tagged "
                f"'{SKIP_TAG}'); it runs as usual in your own notebook]\n")


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


HIDDEN_SEED_KEY = "bncourse_hidden_seed"  # resources key: GradingExecute -> VerifyChecks
_RUN_SEED: list[int] = []


def run_seed() -> int:
    """This grading process's hidden-case seed, drawn once (nothing shipped or stored can know it)."""
    if not _RUN_SEED:
        _RUN_SEED.append(secrets.randbits(62))
    return _RUN_SEED[0]


LEFT_OUT_FILES = "bncourse_left_out_files"  # notebook metadata: submitted files the kernel did not get
PRESTARTED_KEY = "bncourse_rejudger"  # resources key: GradingExecute -> VerifyChecks


def trusted_sources(resources) -> dict[str, str] | None:
    """grade_id -> the test cell's source as the gradebook stores it (None outside autograde)."""
    from nbgrader.api import Gradebook

    info = (resources or {}).get("nbgrader") or {}
    if not {"db_url", "notebook", "assignment"} <= set(info):
        return None
    with Gradebook(info["db_url"]) as gb:
        notebook = gb.find_notebook(info["notebook"], info["assignment"])
        return {c.name: c.source for c in notebook.source_cells}


class GradingExecute(TimeLimited, Execute):
    """nbgrader's Execute with extra environment variables for the kernel (the grading size by default).

    The checks do not depend on the size of a notebook's experiments, so grading runs them at the
    grading size (``bncourse.runtime.pick(..., grading=...)``, otherwise the fast size). Set
    ``c.GradingExecute.kernel_env = RunSize.FAST.kernel_env()`` for the fast size,
    ``RunSize.FULL.kernel_env()`` for the full size (``bncourse.run_size.RunSize``).

    At the grading size (``RunSize.from_environ(kernel_env)`` is ``RunSize.GRADING``) the code
    cells after the last graded, solution or task cell are not run (``skip_trailing``): whatever they compute reaches
    no graded cell, since every graded cell has run before them; nor are ungraded code cells tagged
    ``skip-when-grading`` (experiments no graded cell depends on). Each gets one line saying so.
    The fast and full sizes run every cell.

    One time budget per notebook (``submission_timeout``, ``bncourse.grading.time_limit``), and a
    size for the sandboxed kernel's ``/tmp`` and working copy (``disk_mb``).
    """

    # A receipt that arrives late is a receipt lost: nbclient's default waits 4 s for a cell's last
    # outputs after its reply, then goes on without them, which on a starved machine could score a
    # correct cell 0 without a word. Wait longer, then fail the submission with that reason instead
    # (not much longer: a kernel that ignores the interrupt after a cell's time limit waits this too).
    iopub_timeout = Integer(15, help="Seconds to wait for a cell's outputs after its reply.").tag(config=True)
    raise_on_iopub_timeout = Bool(True, help="Fail the submission (with the reason) rather than drop late "
                                             "outputs.").tag(config=True)
    kernel_env = Dict(RunSize.GRADING.kernel_env(),
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
    disk_mb = Integer(512, help="MB each of a sandboxed kernel's private /tmp and working copy may hold (the "
                                "working copy: beyond the submission's own files); writing more fails in the "
                                "kernel with 'No space left on device'.").tag(config=True)
    hidden_seed = Integer(-1, help="The hidden cases' seed (-1: drawn once per grading process, so "
                                   "nothing stored before the run can know it).").tag(config=True)

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("kernel_manager_class", GradingKernelManager)
        super().__init__(*args, **kwargs)

    def create_kernel_manager(self):
        km = super().create_kernel_manager()
        if isinstance(km, GradingKernelManager):
            km.sandbox = getattr(self, "_sandbox", None)
            km.allowed_files = getattr(self, "_allowed_files", None)
        self._last_km = km
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
        disk = max(1, int(self.disk_mb)) * 1024**2
        return Sandbox(library=str(library), limits=Limits(tmp_bytes=disk, work_bytes=disk),
                       **sandbox_options(assignment, self.library_rules))

    def _given_files(self, info) -> set[str] | None:
        """Relative paths of the files the assignment hands out: its release folder's (the source folder's
        if it has no release: the same names). A graded kernel's working copy holds the submission's
        files of these names, nothing else: code a student ships beside the notebook is not run.
        None (everything) outside autograde."""
        from nbgrader.coursedir import CourseDirectory

        if "assignment" not in info:
            return None
        coursedir = CourseDirectory(config=self.config)
        for folder in (coursedir.release_directory, coursedir.source_directory):
            root = Path(coursedir.format_path(folder, ".", info["assignment"]))
            if root.is_dir():
                return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
        return set()

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
        self._allowed_files = self._given_files((resources or {}).get("nbgrader") or {}) if self._sandbox else None
        seed = seeds.for_notebook(self.hidden_seed if self.hidden_seed >= 0 else run_seed(), nb, resources)
        if resources is not None:
            resources[HIDDEN_SEED_KEY] = seed
        self.log.info("Hidden-case seed of this notebook (from the run's and the submission): %d", seed)
        self._run_until = len(nb.cells)
        grading_size = RunSize.from_environ(self.kernel_env) is RunSize.GRADING
        self._skip_tagged = grading_size
        if self.skip_trailing and grading_size:
            self._run_until = last_graded_index(nb) + 1
        replayer = None
        if self.prestart_replay and resources is not None:
            trusted = trusted_sources(resources)
            if trusted:  # the checks' imports (torch ...) happen while the kernel runs, not after
                replayer = resources[PRESTARTED_KEY] = rejudging.rejudger(
                    check_modules(list(trusted.values())), self.rejudge_server)
        try:
            env = {str(k): str(v) for k, v in self.kernel_env.items()}
            env["BNCOURSE_HIDDEN_SEED"] = str(seed)
            self.start_clock(RunSize.from_environ(self.kernel_env))
            with nbutils.setenv(**env):
                return super().preprocess(nb, resources, km=km)
        except BaseException:
            if replayer is not None:
                resources.pop(PRESTARTED_KEY, None)
                replayer.close()
            raise
        finally:
            log_kernel_output(getattr(self, "_last_km", None), self.log)
            left_out = sorted(getattr(getattr(self, "_last_km", None), "left_out", None) or [])
            if left_out:
                nb.metadata[LEFT_OUT_FILES] = left_out
                self.log.warning("Not in the grading kernel's working copy (files beside the notebook that the "
                                 "release does not hold; code belongs in the notebook): %s", ", ".join(left_out))

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and index >= getattr(self, "_run_until", index + 1):
            cell.outputs = [new_output("stream", name="stdout", text=NOT_RUN_NOTE)]
            cell.execution_count = None
            return cell, resources
        if getattr(self, "_skip_tagged", False) and skipped_when_grading(cell):
            cell.outputs = [new_output("stream", name="stdout", text=SKIPPED_NOTE)]
            cell.execution_count = None
            return cell, resources
        return self.within_time_limit(super().preprocess_cell, cell, resources, index)

"""A time limit per submission, on top of nbgrader's per-cell one (``TimeLimited``, mixed into ``GradingExecute``).

A per-cell limit alone lets a submission with K added cells that each sleep hold a grading worker
for K cell limits (red team 2, attack 8: 50 cells at 300 s = 4 h). ``TimeLimited`` gives the whole
notebook one budget (``submission_timeout`` seconds, from the start of its kernel): every cell's
limit is at most what is left of it; when it runs out the kernel is killed (an interrupt can be
ignored), the remaining cells are not run, and every test cell not yet run gets an error output
``SubmissionTimeLimit: submission time limit (N s) reached``, which the grader keeps as the reason
of its 0. The submissions graded after it are not affected: each has its own budget.

The default depends on the kernel's size (``DEFAULT_SECONDS``); ``c.GradingExecute.submission_timeout``
(``BNCOURSE_SUBMISSION_TIMEOUT`` in the course's ``nbgrader_config.py``) sets it.
"""

from __future__ import annotations

import math
from time import monotonic

from jupyter_core.utils import ensure_async, run_sync
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat.v4 import new_output
from nbgrader import utils as nbutils
from traitlets import Integer
from traitlets.config import Configurable

from bncourse.run_size import RunSize

__all__ = ["DEFAULT_SECONDS", "TIME_LIMIT_ENAME", "SubmissionTimeLimit", "TimeLimited", "time_limit_reason"]

TIME_LIMIT_ENAME = "SubmissionTimeLimit"
# A learner's full-size run of the slowest notebook takes minutes; at the fast and grading sizes
# each notebook runs in about 90 s on 2 cores (the course's goal), so 300 s leaves room for a busy machine.
DEFAULT_SECONDS = {RunSize.FULL: 900, RunSize.FAST: 300, RunSize.GRADING: 300}
NOT_RUN_NOTE = "[stopped or not run by the grader: the {reason}]\n"


def time_limit_reason(seconds: int) -> str:
    return f"submission time limit ({seconds} s) reached"


class SubmissionTimeLimit(Exception):
    """The submission's time is up: its kernel has been killed."""


class TimeLimited(Configurable):
    """Mixin for nbgrader's ``Execute``: one time budget for a whole notebook (see the module)."""

    submission_timeout = Integer(0, help="Seconds one notebook's kernel may run, all its cells together "
                                         "(0: by the kernel's size, bncourse.grading.time_limit.DEFAULT_SECONDS); "
                                         "past it the kernel is killed and the test cells not yet run score 0."
                                 ).tag(config=True)

    _deadline: float | None = None
    _time_up: bool = False
    _limit_seconds: int = 0
    _stop_reason: str = ""
    _interrupted = None

    def start_clock(self, size: RunSize) -> None:
        """Start the notebook's budget (call before its kernel starts)."""
        self._limit_seconds = int(self.submission_timeout or DEFAULT_SECONDS[RunSize(size)])
        self._deadline = monotonic() + self._limit_seconds
        self._time_up, self._stop_reason, self._interrupted = False, "", None

    @property
    def time_limit_reason(self) -> str:
        return time_limit_reason(self._limit_seconds)

    def _past_deadline(self, slack: float = 0.0) -> bool:
        return self._deadline is not None and monotonic() >= self._deadline - slack

    def _get_timeout(self, cell):
        timeout = super()._get_timeout(cell)
        if self._deadline is None:
            return timeout
        left = max(1, math.ceil(self._deadline - monotonic()))
        return left if timeout is None else min(timeout, left)

    async def _async_handle_timeout(self, timeout, cell=None):
        if self._past_deadline(slack=0.5):
            await self._stop_kernel()
            raise SubmissionTimeLimit(self.time_limit_reason)
        self._interrupted = cell  # a kernel deaf to this interrupt sends no idle status: see within_time_limit
        return await super()._async_handle_timeout(timeout, cell)

    async def _stop_kernel(self, reason: str = "") -> None:
        if self._time_up:
            return
        self._time_up = True
        self._stop_reason = reason or self.time_limit_reason
        self.log.warning("The %s: the kernel is killed and the remaining cells are not run", self._stop_reason)
        try:
            if self.km is not None:
                await ensure_async(self.km.shutdown_kernel(now=True))
        except Exception as exc:  # noqa: BLE001 - the kernel may be gone already
            self.log.info("Stopping the kernel after the time limit: %s", exc)

    def within_time_limit(self, run, cell, resources, index):
        """``run(cell, resources, index)`` (the parent's ``preprocess_cell``) while there is time; after
        it, the cell is not run, and a test cell gets the time limit as its error."""
        if not self._time_up and self._past_deadline():
            run_sync(self._stop_kernel)()
        if not self._time_up:
            self._interrupted = None
            try:
                return run(cell, resources, index)
            except SubmissionTimeLimit:
                pass
            except DeadKernelError:
                if not self._time_up:
                    raise
            except CellTimeoutError:
                if self._interrupted is not cell:  # late outputs of a finished cell: nbgrader's reason stands
                    raise
                # The kernel ignored the interrupt after the cell's own limit: it would hold every later cell.
                run_sync(self._stop_kernel)(f"kernel ignored the interrupt after a cell's time limit "
                                            f"({self._get_cell_limit(cell)} s)")
        if cell.cell_type == "code":
            cell.execution_count = None
            reason = self._stop_reason or self.time_limit_reason
            if nbutils.is_grade(cell) and not nbutils.is_solution(cell):
                cell.outputs = [new_output("error", ename=TIME_LIMIT_ENAME, evalue=reason,
                                           traceback=[f"{TIME_LIMIT_ENAME}: {reason}"])]
            else:
                cell.outputs = [*cell.get("outputs", []),
                                new_output("stream", name="stdout", text=NOT_RUN_NOTE.format(reason=reason))]
        return cell, resources

    def _get_cell_limit(self, cell) -> int | None:
        return super()._get_timeout(cell)

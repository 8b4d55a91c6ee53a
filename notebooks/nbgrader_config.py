"""nbgrader configuration of the bncourse course (this folder is the course root).

Instructors run nbgrader from this folder (or a copy of it). Everything here is read by both
nbgrader's command line and the bncourse helpers (``bncourse grade``, ``bncourse progress``).
"""

import os
from pathlib import Path

c = get_config()  # noqa: F821 - provided by nbgrader when it loads this file

c.CourseDirectory.course_id = "bncourse"
c.CourseDirectory.root = str(Path(__file__).resolve().parent)

# nbgrader's default exchange (/srv/nbgrader/exchange) is not writable on most machines.
c.Exchange.root = os.environ.get(
    "BNCOURSE_EXCHANGE", str(Path.home() / ".local" / "share" / "bncourse" / "exchange")
)

# Grading needs the exercises, not full-size experiments: the grading kernels run at the grading
# size (c.GradingExecute.kernel_env; `bncourse grade --size` chooses). Loading this file changes
# nothing in the process that loads it.

# A learner's infinite loop must not hang grading: every cell gets at most this many seconds.
c.ExecutePreprocessor.timeout = int(os.environ.get("BNCOURSE_CELL_TIMEOUT", "300"))
c.ExecutePreprocessor.interrupt_on_timeout = True
# ... and a notebook at most this many seconds in all (0: 300 s at the grading and fast sizes, 900 s at
# the full size): past it the kernel is killed and the test cells not yet run score 0, with that reason.
c.GradingExecute.submission_timeout = int(os.environ.get("BNCOURSE_SUBMISSION_TIMEOUT", "0"))
# A grading kernel's private /tmp and working copy hold at most this many MB each (in memory: tmpfs).
c.GradingExecute.disk_mb = int(os.environ.get("BNCOURSE_KERNEL_DISK_MB", "512"))

# What a learner sees in place of a solution.
c.ClearSolutions.code_stub = {
    "python": "# YOUR CODE HERE\nraise NotImplementedError()",
}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# The course's grading pipeline (bncourse.grading): every test cell is re-judged outside the learner's
# kernel, which runs sandboxed (bubblewrap: apt-get install bubblewrap) with no solution in reach;
# feedback hides hidden tests and their values; a deleted graded cell is restored from the source.
# Grading without the sandbox is a knowing choice: c.GradingExecute.sandbox = False.
from bncourse.grading import configure_nbgrader  # noqa: E402

configure_nbgrader(c)

"""The course's nbgrader pipeline: preprocessors that make plain ``nbgrader autograde`` defensible.

One preprocessor per module, as nbgrader has them; this module gathers their names.

- ``execute.GradingExecute``: nbgrader's Execute with every kernel in the sandbox
  (``kernel.GradingKernelManager``, ``sandbox``), a solution-free ``bncourse``
  (``solution_free``), the grading size and the run's hidden-case seed;
- ``verify.VerifyChecks``: every graded test cell is re-judged outside the learner's kernel
  (``bncourse.checks.replay``), and its outputs rewritten so that nbgrader reads that verdict only;
- ``feedback.HideHiddenTests``: feedback shows neither hidden test code nor hidden cases' values;
- ``config.configure_nbgrader(c)`` installs them; ``config.load_config(course_dir)`` reads a
  course's ``nbgrader_config.py`` with them installed.
"""

from bncourse.grading.config import configure_nbgrader, db_url_of, load_config  # noqa: F401
from bncourse.grading.execute import (  # noqa: F401
    HIDDEN_SEED_KEY, NOT_RUN_NOTE, SKIP_TAG, SKIPPED_NOTE, GradingExecute, last_graded_index, run_seed,
    skipped_when_grading, trusted_sources)
from bncourse.grading.feedback import HIDDEN_MESSAGE, HideHiddenTests  # noqa: F401
from bncourse.grading.kernel import GradingKernelManager  # noqa: F401
from bncourse.grading.rejudging import replay_cells  # noqa: F401
from bncourse.grading.verify import REFUSED_ENAME, SOURCE_FINDINGS, VERIFY_ENAME, VerifyChecks  # noqa: F401

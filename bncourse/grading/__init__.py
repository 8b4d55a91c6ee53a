"""Instructor grading over nbgrader, in two parts.

- ``pipeline``: the nbgrader preprocessors (``configure_nbgrader``, ``VerifyChecks``, ...) that
  plain ``nbgrader autograde`` and ``generate_feedback`` use through ``nbgrader_config.py``;
- ``parallel``: ``grade(assignment, course_dir, jobs=N)``, nbgrader's autograde in N workers.
"""

from bncourse.grading.pipeline import (  # noqa: F401
    HIDDEN_MESSAGE, VERIFY_ENAME, GradingExecute, HideHiddenTests, VerifyChecks, configure_nbgrader,
    db_url_of, load_config, replay_cells)
from bncourse.grading.parallel import (  # noqa: F401
    REPORT_DIR, GradeReport, StudentResult, find_submissions, grade, main)
from bncourse.grading.sandbox import SandboxUnavailable  # noqa: F401
from bncourse.grading.gradebook import alembic_on_path  # noqa: F401

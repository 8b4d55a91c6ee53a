"""Instructor grading over nbgrader, in two parts.

- ``pipeline``: the nbgrader preprocessors (``configure_nbgrader``, ``VerifyChecks``, ...) that
  plain ``nbgrader autograde`` and ``generate_feedback`` use through ``nbgrader_config.py``;
- ``parallel``: ``grade(assignment, course_dir, jobs=N)``, nbgrader's autograde in N workers.
"""

from bncourse.grading.pipeline import (  # noqa: F401
    HIDDEN_MESSAGE, VERIFY_ENAME, GradingExecute, HideHiddenTests, VerifyChecks, configure_nbgrader,
    db_url_of, load_config, replay_cells)
from bncourse.grading.parallel import (  # noqa: F401
    REPORT_DIR, GradeReport, StudentResult, _alembic_on_path, find_submissions, grade, main)

"""The course's nbgrader configuration: ``configure_nbgrader(c)`` and ``load_config(course_dir)``.

Loading it has no side effect on the process that loads it (no environment variable is set).
"""

from __future__ import annotations

import os
from pathlib import Path

from bncourse.grading.execute import GradingExecute
from bncourse.grading.feedback import HideHiddenTests
from bncourse.grading.review_safe import SanitizeForReview
from bncourse.grading.verify import VerifyChecks

__all__ = ["configure_nbgrader", "db_url_of", "load_config"]


def configure_nbgrader(c) -> None:
    """Install the course's grading preprocessors into an nbgrader config (idempotent).

    In ``nbgrader_config.py``: ``from bncourse.grading import configure_nbgrader; configure_nbgrader(c)``.
    """
    from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
    from nbgrader.preprocessors import (
        AssignLatePenalties, CheckCellMetadata, GetGrades, IgnorePattern, LimitOutput, SaveAutoGrades)

    c.Autograde.autograde_preprocessors = [
        GradingExecute, VerifyChecks, SanitizeForReview, IgnorePattern, ClearMetadataPreprocessor, LimitOutput,
        SaveAutoGrades, AssignLatePenalties, CheckCellMetadata,
    ]
    from bncourse.grading.alt_text import FigureAltText

    c.ExchangeFactory.collect = "bncourse.grading.exchange.LinkKeepingCollect"  # a student's link stays a link

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

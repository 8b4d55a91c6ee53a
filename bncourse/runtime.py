"""The switch between a learner's full-size run, CI's fast run and the grader's run.

Notebooks read it as ``from bncourse.runtime import FAST, pick`` and size their work with
``pick(fast=..., full=...)``. The test command sets ``BNCOURSE_FAST=1``; learners leave it unset.

A third size exists for autograding: ``BNCOURSE_GRADING=1`` (set by the grading pipeline for the
grading kernel) means "fast, and experiments whose outputs earn no points may shrink further":
``pick(fast=..., full=..., grading=...)`` returns ``grading`` then. A notebook gives ``grading=``
only where no graded cell depends on the value; without it, the grading size is the fast size.
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

FAST_ENV = "BNCOURSE_FAST"
GRADING_ENV = "BNCOURSE_GRADING"

_NO = ("", "0", "false", "no", "off")


def fast_mode() -> bool:
    """True when the environment asks for the fast (CI-sized) run; grading mode implies it."""
    return os.environ.get(FAST_ENV, "").strip().lower() not in _NO or grading_mode()


def grading_mode() -> bool:
    """True inside a grading kernel that asked for the grading size (``BNCOURSE_GRADING=1``)."""
    return os.environ.get(GRADING_ENV, "").strip().lower() not in _NO


FAST = fast_mode()


_UNSET = object()


def pick(*, fast: T, full: T, grading: T = _UNSET) -> T:  # type: ignore[assignment]
    """The value for the current size: ``num_epochs = pick(fast=1, full=20)``.

    ``grading`` (optional) is used by grading kernels; it defaults to ``fast``.
    """
    if grading_mode() and grading is not _UNSET:
        return grading
    return fast if fast_mode() else full

"""The one switch between a learner's full-size run and CI's fast run.

Notebooks read it as ``from bncourse.runtime import FAST, pick`` and size their work with
``pick(fast=..., full=...)``. The test command sets ``BNCOURSE_FAST=1``; learners leave it unset.
"""

from __future__ import annotations

import os
from typing import TypeVar

T = TypeVar("T")

FAST_ENV = "BNCOURSE_FAST"


def fast_mode() -> bool:
    """True when the environment asks for the fast (CI-sized) run."""
    return os.environ.get(FAST_ENV, "").strip().lower() not in ("", "0", "false", "no", "off")


FAST = fast_mode()


def pick(*, fast: T, full: T) -> T:
    """``fast`` in fast mode, else ``full``: ``num_epochs = pick(fast=1, full=20)``."""
    return fast if fast_mode() else full

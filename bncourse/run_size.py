"""The size of a run: a learner's full run (``RunSize.FULL``), CI's fast run or the grader's run.

``RunSize.from_environ()`` is the one reader of ``BNCOURSE_FAST`` and ``BNCOURSE_GRADING`` (a
process's environment is how a notebook kernel or a worker process is told its size, and
``size.kernel_env()`` is what tells it); ``use_size(size)`` sets the size for this process
instead (``bncourse claims --fast``); ``current_size()`` is the size in force. Nothing is read at
import. Notebooks size their work with ``bncourse.runtime.pick``, which asks ``current_size()``.
"""

from __future__ import annotations

import enum
import os
from contextlib import contextmanager
from typing import Iterator, Mapping

__all__ = ["FAST_ENV", "GRADING_ENV", "RunSize", "current_size", "fast_mode", "grading_mode", "switched_on", "use_size"]

FAST_ENV = "BNCOURSE_FAST"
GRADING_ENV = "BNCOURSE_GRADING"

_NO = ("", "0", "false", "no", "off")


def switched_on(value) -> bool:
    """True for a switch's value that means on ("1", "yes", "true", ...); unset, "", "0", "no", "off" mean off."""
    return str(value or "").strip().lower() not in _NO


class RunSize(enum.Enum):
    """How big a run's experiments are: ``FULL`` (a learner's default), ``FAST`` (CI) or ``GRADING``."""

    FULL = "full"
    FAST = "fast"
    GRADING = "grading"

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> "RunSize":
        """The size an environment asks for (default: this process's): ``BNCOURSE_GRADING=1`` is the
        grading size, ``BNCOURSE_FAST=1`` the fast size, neither the full size."""
        environ = os.environ if environ is None else environ
        if switched_on(environ.get(GRADING_ENV)):
            return cls.GRADING
        return cls.FAST if switched_on(environ.get(FAST_ENV)) else cls.FULL

    @property
    def fast(self) -> bool:
        """True for the fast and the grading size (the grading size is the fast size, shrunk further)."""
        return self is not RunSize.FULL

    def kernel_env(self) -> dict[str, str]:
        """The environment variables that start a kernel (or any process) at this size; "0" is
        explicit, since the starting process may have them set."""
        return {FAST_ENV: "1" if self.fast else "0", GRADING_ENV: "1" if self is RunSize.GRADING else "0"}


_CHOSEN: list[RunSize] = []  # use_size's choice for this process, innermost last


def current_size() -> RunSize:
    """The size in force: ``use_size``'s choice if one is active, else what the environment asks for."""
    return _CHOSEN[-1] if _CHOSEN else RunSize.from_environ()


@contextmanager
def use_size(size: RunSize | str) -> Iterator[RunSize]:
    """Run this process's work at ``size`` (a ``RunSize`` or its value) for the block.

    Only this process: a kernel or a worker process it starts is told its size by its environment
    (``size.kernel_env()``).
    """
    size = RunSize(size)
    _CHOSEN.append(size)
    try:
        yield size
    finally:
        _CHOSEN.pop()


def fast_mode() -> bool:
    """True for a fast (CI-sized) run; the grading size implies it."""
    return current_size().fast


def grading_mode() -> bool:
    """True inside a grading kernel that asked for the grading size (``BNCOURSE_GRADING=1``)."""
    return current_size() is RunSize.GRADING

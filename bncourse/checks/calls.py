"""Calling a learner's function safely: its value or error, its warnings, its in-place changes.

``safe_call(fn, args, watch=None) -> Call``. Nothing the learner's code raises, warns or prints
escapes as a traceback or as stderr output (nbgrader scores a test cell with stderr output 0):
the error becomes ``Call.error`` (with ``Call.error_type``), warnings and stderr become
``Call.warnings``. In-place changes to array arguments are noticed at this one call
(``Call.mutated``: their positions), never by calling again. ``watch`` (a
``bncourse.checks.delegation.Watch``) records whether the call handed its work to a forbidden
implementation (``Call.delegated``).
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

_ndarray = np.ndarray
_array_equal = np.array_equal
_copy = np.copy
_errstate = np.errstate


class Uncallable(BaseException):
    """Raised by the grader's stand-ins when a check calls them; must not become a verdict."""


@dataclass
class Call:
    """What happened when a function was called: its return value or the error it raised."""

    value: Any = None
    error: str = ""
    error_type: str = ""
    warnings: list[str] = field(default_factory=list)
    mutated: list[int] = field(default_factory=list)  # positions of array arguments changed in place
    delegated: str = ""  # what the call handed its work to ('' when nothing forbidden was reached)


def _learner_frame(tb) -> str:
    """The last traceback line that is not inside bncourse, as ``line N: code``."""
    frames = [f for f in traceback.extract_tb(tb) if "bncourse" not in (f.filename or "")]
    if not frames:
        return ""
    f = frames[-1]
    where = f"line {f.lineno}" if f.lineno else ""
    return f" (at {where}: {f.line.strip()})" if f.line else (f" (at {where})" if where else "")


class quiet_stderr:
    """Divert stderr (Python's and file descriptor 2) while the learner's code runs.

    ``getvalue()`` gives what was written.
    """

    def __enter__(self):
        self._buf = io.StringIO()
        self._old = sys.stderr
        sys.stderr = self._buf
        self._fd_saved = self._tmp = None
        try:
            sys.__stderr__ and sys.__stderr__.flush()
            self._tmp = tempfile.TemporaryFile()
            self._fd_saved = os.dup(2)
            os.dup2(self._tmp.fileno(), 2)
        except (OSError, ValueError, AttributeError):  # no usable fd 2 (some embedded interpreters)
            self._fd_saved = None
        return self

    def __exit__(self, *exc):
        sys.stderr = self._old
        if self._fd_saved is not None:
            os.dup2(self._fd_saved, 2)
            os.close(self._fd_saved)
        if self._tmp is not None:
            self._tmp.seek(0)
            self._buf.write(self._tmp.read().decode("utf-8", "replace"))
            self._tmp.close()
        return False

    def getvalue(self) -> str:
        return self._buf.getvalue()


def safe_call(fn: Callable, args: tuple, watch=None) -> Call:
    """Call ``fn(*args)``, catching exceptions and warnings and noticing in-place changes."""
    before = [(i, _copy(a)) for i, a in enumerate(args) if type(a) is _ndarray]
    call = Call()
    with warnings.catch_warnings(record=True) as caught, _errstate(all="ignore"), quiet_stderr() as err:
        warnings.simplefilter("always")
        try:
            if watch is None:
                call.value = fn(*args)
            else:
                with watch:
                    call.value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt/SystemExit must not kill grading either
            if isinstance(exc, (KeyboardInterrupt, Uncallable)):
                raise
            call.error_type = type(exc).__name__
            call.error = f"{call.error_type}: {exc}{_learner_frame(exc.__traceback__)}"
        finally:
            if watch is not None:
                call.delegated = watch.found
    call.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    printed = err.getvalue().strip()
    if printed:
        call.warnings.append(f"the function wrote to stderr: {printed[:300]}")
    for i, old in before:
        new = args[i]
        if type(new) is _ndarray and (new.shape != old.shape or not _array_equal(new, old, equal_nan=True)):
            call.mutated.append(i)
    return call

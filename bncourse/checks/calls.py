"""Calling a learner's function safely: its value or error, its warnings, its in-place changes.

``safe_call(fn, args, watch=None) -> Call``. Nothing the learner's code raises, warns or prints
escapes as a traceback or as stderr output (nbgrader scores a test cell with stderr output 0):
the error becomes ``Call.error`` (with ``Call.error_type``), warnings and stderr become
``Call.warnings``. In-place changes to the arguments are noticed at this one call
(``Call.mutated``: their positions), never by calling again: every array, tensor, parameter,
buffer and module mode an argument holds (a cache's fields, a tuple's items, a module's state),
so a change through an alias (``v = cache.x_hat; v *= 2``) counts too.

A runner that builds the objects it hands to the learner's code (tensors, modules) keeps them the
same way: ``with kept(x=xt, weight=w): fn(xt, w)`` raises ``InputChanged`` naming what changed,
which the check reports as an in-place change (kind ``mutated``), not as an error. ``watch`` (a
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


class InputChanged(Exception):
    """Raised by ``kept`` when the learner's code changed an object the caller handed it."""

    PREFIX = "changed in place: "

    def __init__(self, names):
        self.names = tuple(names)
        super().__init__(self.PREFIX + ", ".join(self.names))


def changed_names(error: str) -> tuple[str, ...]:
    """The names an ``InputChanged`` error text lists (``Call.error``, as recorded)."""
    text = error.split(InputChanged.PREFIX, 1)[-1].split(" (at")[0]
    return tuple(n.strip() for n in text.split(",") if n.strip())


_MAX_DEPTH = 4


def snapshot(obj, depth: int = 0, seen: set | None = None) -> list:
    """Copies of every array, tensor, parameter, buffer and module mode ``obj`` holds, as (path, value) pairs.

    Follows tuples, lists, dicts, NamedTuples, dataclasses and plain objects' attributes (to a depth of
    4); an object met twice (an alias) is read once. Torch is looked at only when already imported.
    """
    seen = set() if seen is None else seen
    if id(obj) in seen or depth > _MAX_DEPTH:
        return []
    seen.add(id(obj))
    if type(obj) is _ndarray or isinstance(obj, np.ndarray):
        return [("", ("array", _copy(obj)))]
    torch = sys.modules.get("torch")
    if torch is not None:
        if isinstance(obj, torch.Tensor):
            return [("", ("tensor", obj.detach().clone()))]
        if isinstance(obj, torch.nn.Module):
            state = [(f".{k}", ("tensor", t.detach().clone())) for k, t in obj.state_dict(keep_vars=True).items()
                     if isinstance(t, torch.Tensor)]
            return state + [(f".{k or '<module>'}.training", ("mode", m.training)) for k, m in obj.named_modules()]
    if isinstance(obj, (str, bytes, int, float, complex, bool, type(None))) or callable(obj):
        return []
    if isinstance(obj, (tuple, list)):
        items = enumerate(obj)
        fields = getattr(obj, "_fields", None)
        if fields:
            items = zip(fields, obj)
    elif isinstance(obj, dict):
        items = obj.items()
    elif hasattr(obj, "__dict__"):
        items = vars(obj).items()
    else:
        return []
    found = []
    for key, value in list(items):
        found += [(f".{key}{path}", v) for path, v in snapshot(value, depth + 1, seen)]
    return found


def _same(a, b) -> bool:
    kind, old = a
    if kind != b[0]:
        return False
    new = b[1]
    if kind == "mode":
        return old == new
    if kind == "array":
        return isinstance(new, np.ndarray) and new.shape == old.shape and _array_equal(new, old, equal_nan=True)
    torch = sys.modules["torch"]
    return (new.shape == old.shape and new.dtype == old.dtype
            and bool(torch.equal(new, old) or torch.equal(new.isnan(), old.isnan())
                     and torch.equal(new.nan_to_num(0), old.nan_to_num(0))))


def unchanged(before: list, obj) -> bool:
    """Does ``obj`` still hold what ``snapshot`` found in it (same paths, same values, same modes)?"""
    after = snapshot(obj)
    if [p for p, _ in after] != [p for p, _ in before]:
        return False
    return all(_same(a, b) for (_, a), (_, b) in zip(before, after))


class kept:
    """``with kept(x=xt, weight=w): ...``: raises ``InputChanged`` if the body changed any of them."""

    def __init__(self, **objects):
        self.objects = objects

    def __enter__(self):
        self.before = {name: snapshot(obj) for name, obj in self.objects.items()}
        return self

    def __exit__(self, exc_type, *exc):
        if exc_type is None:
            changed = [n for n, obj in self.objects.items() if not unchanged(self.before[n], obj)]
            if changed:
                raise InputChanged(changed)
        return False


def safe_call(fn: Callable, args: tuple, watch=None) -> Call:
    """Call ``fn(*args)``, catching exceptions and warnings and noticing in-place changes."""
    before = [(i, snapshot(a)) for i, a in enumerate(args)]
    before = [(i, snap) for i, snap in before if snap]
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
    call.mutated = [i for i, old in before if not unchanged(old, args[i])]
    return call

"""No other process from a grading kernel: an audit hook, installed before any learner code runs.

The sandbox's seccomp program (``bncourse.grading.seccomp.seccomp_filter``) already fails every system call that
creates a process. Two things remain for the kernel itself:

- ``os.execv`` needs no new process: it would replace the kernel, blocks and all, by a fresh Python
  (a fresh ipykernel on the same connection file, without ``bncourse.kernel_blocks``);
- a learner who tries deserves an error that says why, not a bare ``EPERM``.

``install()`` adds an audit hook (``sys.addaudithook``: hooks cannot be removed) that raises
``PermissionError`` naming the rule for the events that start a process or replace this one
(``os.exec``, ``os.posix_spawn``, ``os.fork``, ``os.forkpty``, ``os.system``, ``subprocess.Popen``),
and replaces ``_posixsubprocess.fork_exec`` (multiprocessing's spawn, which raises no audit event)
by a function raising the same error, for the message only (the seccomp program refuses the fork).

The hook depends on nothing learner code can change: no closure cell, no module global and no
builtin looked up at call time (everything it uses is a default argument, fixed when it was
defined; its defaults and code can only be replaced or deleted through ``function.__setattr__`` or
``__delattr__``, which raise the ``object.__setattr__``/``__delattr__`` audit events, and the hook
refuses those for itself).

This module imports only the standard library.
"""

from __future__ import annotations

import sys

__all__ = ["REFUSED", "RULE", "install", "launch_code"]

# cpython.PyInterpreterState_New: a subinterpreter has audit hooks of its own (none), from which os.execv
# would replace the kernel (red team 4); the sandbox also masks _xxsubinterpreters' file.
REFUSED = frozenset({"os.exec", "os.posix_spawn", "os.fork", "os.forkpty", "os.system", "subprocess.Popen",
                     "os.spawn", "cpython.PyInterpreterState_New"})
RULE = ("Operation not permitted: the grading sandbox runs no process but this kernel; starting or replacing a "
        "process (%s) is not available while grading this notebook, whose exercises need none")


def _hook(event, args, _refused=REFUSED, _rule=RULE, _error=PermissionError, _frame=sys._getframe,
          _getattr=getattr, _fields=("__code__", "__defaults__", "__kwdefaults__"),
          _changes=("object.__setattr__", "object.__delattr__")):
    if event in _refused:
        raise _error(_rule % event)
    if event in _changes and args[1] in _fields and _getattr(args[0], "__code__", None) is _frame(0).f_code:
        raise _error("the grading sandbox's process rule cannot be changed")


def _refuse_fork_exec(*args, _rule=RULE, _error=PermissionError):
    raise _error(_rule % "a child process")


def install() -> None:
    """Add the audit hook to this process (for good) and refuse ``_posixsubprocess.fork_exec`` by name."""
    import _posixsubprocess

    sys.addaudithook(_hook)
    _posixsubprocess.fork_exec = _refuse_fork_exec


def launch_code(blocks=()) -> str:
    """``python -c`` code that installs ``bncourse.kernel_blocks``' ``blocks`` (if any), then this guard, then
    runs ipykernel as ``-m ipykernel_launcher`` would."""
    return ("import sys\n"
            "if sys.path and sys.path[0] in ('', '.'): del sys.path[0]\n"  # never import from the submission
            "from bncourse.kernel_blocks import install\n"
            f"install({tuple(blocks)!r})\n"
            "from bncourse.kernel_guard import install\n"
            "install()\n"
            "del install\n"
            "from ipykernel import kernelapp\n"
            "kernelapp.launch_new_instance()\n")

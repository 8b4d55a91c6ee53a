"""Can a learner get torch's own batch norm or folding from a process the kernel's blocks do not reach?

Red team 3's winning class: the blocks of ``bncourse.kernel_blocks`` live in one process, so a child
Python (``subprocess.Popen([sys.executable, "-c", ...])``) started from the kernel imports an
unblocked torch and computes ``native_batch_norm(_backward)`` (notebook 4, 10/10) or torch.jit.freeze's
C++ conv-bn fold (notebook 10, 5/5), and notebook 8, which had no rule at all, ran torch's batch norm
on the all_gather'ed batch in the check's own ranks (8/8). The answers:

- every kernel but notebook 8's starts no process (``bncourse.grading.seccomp.seccomp_filter``: a seccomp program;
  ``bncourse.kernel_guard``: an audit hook that refuses exec, spawn and subprocess by name);
- notebook 8 has a rule: torch's normalization is blocked in the kernel, in the check's ranks and in
  every process that imports torch (``bncourse.grading.torch_import_blocks``).

The red team's attempts are graded with the classes that are graded anyway (no extra grading run):
notebooks 8 and 10 in ``tests/test_fail_closed.py`` (``LIBRARY_ATTEMPTS``, sources in
``tests/process_attacks.py``: 0 everywhere, the solution full marks, each refused with the rule's
words), notebook 4's child process in ``tests/test_attacks_native.py`` (student ``subprocess``). Two cheap ``python -c``
runs under bubblewrap check the seccomp program (no fork, threads fine) and the guard (no exec in
place, no way to disarm it).
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow

if shutil.which("bwrap") is None:
    pytest.skip("the grading sandbox needs bubblewrap: apt-get install bubblewrap", allow_module_level=True)

# ---------------------------------------------------------------------------------------------
# The seccomp program and the guard, in one sandboxed process each
# ---------------------------------------------------------------------------------------------

PROBE = r'''
import os, subprocess, sys, threading
import multiprocessing as mp
got = []
t = threading.Thread(target=got.append, args=(1,)); t.start(); t.join()
print("thread =>", got)
def attempt(name, fn):
    try:
        pid = fn()
        if pid == 0:
            os._exit(0)
        print(name, "=> LEAK")
    except OSError as e:
        print(name, "=>", type(e).__name__, e.errno)
attempt("fork", os.fork)
attempt("subprocess", lambda: subprocess.run(["true"]).returncode and 1)
attempt("posix_spawn", lambda: os.posix_spawn("/bin/true", ["true"], {}))
attempt("multiprocessing", lambda: mp.get_context("spawn").Process(target=print).start() or 1)
'''


def _sandboxed(code: str, tmp_path, **options) -> dict[str, str]:
    from bncourse.grading import sandbox, solution_free

    tmp_path.mkdir(parents=True, exist_ok=True)
    sandbox.Sandbox.prepare_writable(str(tmp_path))
    box = sandbox.Sandbox(library=str(solution_free.build()), **options)
    out = subprocess.run(box.command([sys.executable, "-c", code], str(tmp_path), str(tmp_path)),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr[-3000:]
    return dict(line.split(" => ", 1) for line in out.stdout.splitlines() if " => " in line)


def test_does_the_seccomp_program_refuse_every_new_process_but_not_threads(tmp_path):
    lines = _sandboxed(PROBE, tmp_path / "no")
    assert lines.pop("thread") == "[1]"
    assert lines == dict.fromkeys(["fork", "subprocess", "posix_spawn", "multiprocessing"], "PermissionError 1"), lines
    # the control: an assignment that declares it needs processes gets them
    allowed = _sandboxed(PROBE, tmp_path / "yes", processes=True)
    assert all(v == "LEAK" for k, v in allowed.items() if k != "thread"), allowed


GUARD = r'''
import os, subprocess, sys, types
from bncourse.kernel_guard import install, _hook
install()
Refused = PermissionError
def attempt(name, fn):
    try:
        fn()
        print(name, "=> LEAK")
    except Refused as e:
        print(name, "=>", "refused" if "grading sandbox" in str(e) else str(e))
attempt("execv in place", lambda: os.execv(sys.executable, [sys.executable, "-c", "print('fresh')"]))
attempt("subprocess", lambda: subprocess.run(["true"]))
attempt("os.system", lambda: os.system("true"))
# disarm the hook: its code, its defaults, or the builtins and modules it could have looked up
attempt("replace the hook's code", lambda: setattr(_hook, "__code__", (lambda *a: None).__code__))
attempt("replace its defaults", lambda: setattr(_hook, "__defaults__", (frozenset(),) + _hook.__defaults__[1:]))
attempt("delete its defaults", lambda: delattr(_hook, "__defaults__"))
try:  # red team 4: a subinterpreter has no audit hook, and os.execv from it replaced the kernel
    import _xxsubinterpreters as subinterpreters
except ImportError:  # masked in the sandbox's view
    print("a subinterpreter", "=>", "refused")
else:
    attempt("a subinterpreter", subinterpreters.create)
import builtins
builtins.PermissionError = type("Fine", (Exception,), {})
sys.modules["bncourse.kernel_guard"].REFUSED = frozenset()
attempt("execv after patching builtins and the module", lambda: os.execv(sys.executable, [sys.executable, "-c", "pass"]))
'''


def test_can_learner_code_neither_replace_the_kernel_nor_disarm_the_guard(tmp_path):
    lines = _sandboxed(GUARD, tmp_path, processes=True)  # processes allowed: only the guard stands in the way
    assert len(lines) == 8 and set(lines.values()) == {"refused"}, lines


FORGED_MARKER = r'''
import torch
torch._bncourse_blocked = ("normalization",)  # what a learner's copy of torch's __init__ can set
from bncourse.kernel_blocks import install
install(("normalization",))
try:
    torch.ops.aten.native_batch_norm(torch.zeros(2, 1), None, None, None, None, True, 0.1, 1e-5)
    print("LEAK")
except Exception as error:
    print(type(error).__name__)
'''


def test_does_a_rank_install_the_blocks_even_when_torch_claims_to_have_them():
    """Red team 4: a learner's torch __init__ (through PYTHONPATH into the forkserver the ranks fork from) set
    the marker the rank's install trusted, and torch's batch norm ran on notebook 8's ranks (8/8). The install
    now asks the dispatcher."""
    out = subprocess.run([sys.executable, "-c", FORGED_MARKER], capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "LibraryNotAllowed", out.stdout + out.stderr[-2000:]

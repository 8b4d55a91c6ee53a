"""No process but the kernel: the seccomp program of grading kernels whose assignment needs none.

Graded exercises need no process of their own, and a second process is a way around every block
that lives in the kernel's process (``bncourse.kernel_blocks``): a child Python imports an
unblocked torch. So, except where an assignment's rule says it needs processes
(``LIBRARY_RULES[...]["processes"]``: notebook 8, whose check starts gloo ranks), the sandbox gives
its kernel a seccomp program (``no_process_filter``) that fails

- ``fork`` and ``vfork`` (EPERM), ``clone`` without ``CLONE_THREAD`` (EPERM: a new process; a new
  thread has the flag), ``clone3`` (ENOSYS: its flags are in memory a filter cannot read, and ENOSYS
  makes glibc create its threads with ``clone``, which the filter can judge);
- ``memfd_create`` (EPERM), as ``bncourse.grading.sandbox.memfd_filter`` does (bubblewrap takes one
  program: this one replaces it);
- every system call of another ABI than the process's own (x32 numbers, i386's ``int 0x80``), which
  no program of the environment makes.

Threads keep working (ipykernel's, torch's intra-op pool). The filter is inherited by every
``execve`` and cannot be removed. In the kernel, ``bncourse.kernel_guard`` refuses the calls that
would start a process or replace the kernel in place (``os.exec*``, ``subprocess``, ``os.system``,
``os.posix_spawn``, ``os.fork``) with a ``PermissionError`` that names this rule, before the system
call fails.

x86-64 and aarch64; on another machine the filter is only native's ``memfd_filter`` (empty when
that one does not know the machine either).
"""

from __future__ import annotations

import hashlib
import os
import platform
import struct

__all__ = ["CLONE_THREAD", "no_process_filter", "seccomp_file"]

CLONE_THREAD = 0x00010000
_EPERM, _ENOSYS = 1, 38
# audit architecture, {name: number}; fork and vfork exist only on x86-64 (aarch64 forks with clone)
_CALLS = {
    "x86_64": (0xC000003E, {"fork": 57, "vfork": 58, "clone": 56, "clone3": 435, "memfd_create": 319}),
    "aarch64": (0xC00000B7, {"clone": 220, "clone3": 435, "memfd_create": 279}),
}
_X32_BIT = 0x40000000
_LD_W_ABS, _JEQ_K, _JGE_K, _JSET_K, _RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_ALLOW, _ERRNO = 0x7FFF0000, 0x00050000
_NR, _ARCH, _ARG0_LOW = 0, 4, 16  # offsets in struct seccomp_data (args[0]'s low word: little-endian)


def no_process_filter(machine: str | None = None) -> bytes:
    """A seccomp program (``struct sock_filter`` array) that fails every system call creating a process
    (see the module's docstring) and ``memfd_create``; ``b""`` on a machine it does not know."""
    machine = machine or platform.machine()
    if machine not in _CALLS:
        return b""
    audit_arch, calls = _CALLS[machine]
    # (code, k, jump-if-true label, jump-if-false label); labels are resolved below
    prog: list[tuple] = [(_LD_W_ABS, _ARCH, None, None),
                         (_JEQ_K, audit_arch, None, "eperm"),
                         (_LD_W_ABS, _NR, None, None)]
    if machine == "x86_64":
        prog.append((_JGE_K, _X32_BIT, "eperm", None))
    for name in ("fork", "vfork", "memfd_create"):
        if name in calls:
            prog.append((_JEQ_K, calls[name], "eperm", None))
    prog += [(_JEQ_K, calls["clone3"], "enosys", None),
             (_JEQ_K, calls["clone"], None, "allow"),
             (_LD_W_ABS, _ARG0_LOW, None, None),
             (_JSET_K, CLONE_THREAD, "allow", "eperm")]
    labels = {"allow": len(prog), "eperm": len(prog) + 1, "enosys": len(prog) + 2}
    prog += [(_RET_K, _ALLOW, None, None), (_RET_K, _ERRNO | _EPERM, None, None),
             (_RET_K, _ERRNO | _ENOSYS, None, None)]

    def offset(i: int, label) -> int:
        return 0 if label is None else labels[label] - i - 1

    return b"".join(struct.pack("=HBBI", code, offset(i, jt), offset(i, jf), k)
                    for i, (code, k, jt, jf) in enumerate(prog))


def seccomp_file(program: bytes, name: str) -> str:
    """``program`` in a file of the grading cache, for bubblewrap's ``--seccomp FD`` ('' for no program)."""
    from bncourse.grading.solution_free import cache_dir

    if not program:
        return ""
    path = cache_dir() / "seccomp" / f"{name}-{hashlib.sha256(program).hexdigest()[:16]}.bpf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(program)
        os.replace(tmp, path)
    return str(path)

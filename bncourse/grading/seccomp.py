"""The system calls a grading kernel is refused: a seccomp program (classic BPF) for bubblewrap's
``--seccomp FD``.

``seccomp_filter()`` fails ``memfd_create`` with EPERM (a file in memory is the one writable place
the sandbox's noexec mounts cannot cover, so no library the learner brings can be loaded from it);
``seccomp_filter(no_processes=True)`` also fails every way to start a process (fork, vfork, clone
without CLONE_THREAD; clone3 with ENOSYS, so the C library falls back to clone), while threads
still start. ``seccomp_file`` writes the program once into the grading cache for bubblewrap to read.
"""

from __future__ import annotations

import os
import platform
import struct

__all__ = ["seccomp_file", "seccomp_filter"]

# seccomp (classic BPF), per audit architecture: the system calls a grading kernel is refused.
# memfd_create: a file in memory (then /proc/self/fd/N) is the one writable place noexec mounts cannot
# cover. fork, vfork, clone without CLONE_THREAD (clone3: ENOSYS, so the C library falls back to clone):
# a new process starts without the dispatcher blocks of a torch notebook (a child `python -c` would
# compute torch's own batch norm), so kernels with blocks start no process; threads still start.
_SYSCALLS = {
    "x86_64": {"arch": 0xC000003E, "memfd_create": 319, "fork": 57, "vfork": 58, "clone": 56, "clone3": 435,
               "x32": 0x40000000},
    "aarch64": {"arch": 0xC00000B7, "memfd_create": 279, "clone": 220, "clone3": 435},
}
_CLONE_THREAD = 0x00010000
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_JSET_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x45, 0x06
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO, _EPERM, _ENOSYS = 0x7FFF0000, 0x00050000, 1, 38


def seccomp_filter(no_processes: bool = False, machine: str | None = None) -> bytes:
    """A seccomp program (``struct sock_filter`` array) that fails ``memfd_create`` (and, with
    ``no_processes``, every way to start a process) with EPERM and allows every other call;
    ``b""`` on an architecture it does not know."""
    calls = _SYSCALLS.get(machine or platform.machine())
    if calls is None:
        return b""
    # (opcode, k, jump if true, jump if false): a jump is a label or None (the next instruction)
    prog: list[tuple] = [(_BPF_LD_W_ABS, 4, None, None),                     # A = seccomp_data.arch
                         (_BPF_JEQ_K, calls["arch"], None, "allow"),
                         (_BPF_LD_W_ABS, 0, None, None)]                     # A = seccomp_data.nr
    if "x32" in calls:
        prog.append((_BPF_JGE_K, calls["x32"], "eperm", None))              # x32 numbering: none needed
    denied = ["memfd_create"] + (["fork", "vfork"] if no_processes else [])
    prog += [(_BPF_JEQ_K, calls[name], "eperm", None) for name in denied if name in calls]
    if no_processes:
        prog += [(_BPF_JEQ_K, calls["clone3"], "enosys", None),
                 (_BPF_JEQ_K, calls["clone"], None, "allow"),
                 (_BPF_LD_W_ABS, 16, None, None),                            # A = low word of clone's flags
                 (_BPF_JSET_K, _CLONE_THREAD, "allow", "eperm")]
    labels = {"allow": len(prog), "eperm": len(prog) + 1, "enosys": len(prog) + 2}
    prog += [(_BPF_RET_K, _SECCOMP_RET_ALLOW, None, None), (_BPF_RET_K, _SECCOMP_RET_ERRNO | _EPERM, None, None),
             (_BPF_RET_K, _SECCOMP_RET_ERRNO | _ENOSYS, None, None)]

    def offset(i: int, target) -> int:
        return 0 if target is None else labels[target] - i - 1

    return b"".join(struct.pack("=HBBI", op, offset(i, jt), offset(i, jf), k) for i, (op, k, jt, jf) in enumerate(prog))


def seccomp_file(no_processes: bool) -> str:
    """``seccomp_filter(no_processes)`` in a file of the grading cache ('' where there is none)."""
    import hashlib

    from bncourse.grading.solution_free import cache_dir

    program = seccomp_filter(no_processes)
    if not program:
        return ""
    path = cache_dir() / "seccomp" / f"{hashlib.sha256(program).hexdigest()[:16]}.bpf"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}")
        tmp.write_bytes(program)
        os.replace(tmp, path)
    return str(path)

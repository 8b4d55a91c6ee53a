"""The grading kernel's sandbox: bubblewrap, an unprivileged user, a private view of the filesystem.

``Sandbox.command(kernel_cmd, workdir, ipc_dir)`` wraps a kernel's command line so that it runs

- as a uid of its own (``sandbox_uid()``: drawn per command from ``UID_BASE`` ..
  ``UID_BASE + UID_SPAN``, never an account of this machine nor a range of ``/etc/subuid``): as root,
  bubblewrap sets up the view and ``setpriv`` drops to that uid outside as well as inside. The
  process limit (``RLIMIT_NPROC``) counts the processes and threads of a uid across the host, so
  one kernel holding threads cannot take them from a kernel started beside it;
- in a view of the filesystem that holds only the Python environment (read-only: the virtual
  environment, the base interpreter, the system's libraries), the solution-free ``bncourse``
  (read-only, ``bncourse.grading.solution_free``), the submission's working copy (writable), the
  folder of the kernel's IPC sockets and connection file (writable), and a private ``/tmp``.
  Not the course folder, the source notebooks, the gradebook, the configuration, the exchange,
  other submissions or any home directory;
- without network (its own network namespace: the kernel talks over IPC sockets), with its own
  process, IPC and host-name namespaces, and with limits on memory, processes, CPU time and file size;
- with libraries an assignment's rule leaves out (``blocked``) absent from the view: their
  folders in site-packages are replaced by a package that raises ``ImportError``;
- for a torch notebook, with the parts of torch its rule leaves out blocked: ``overlays`` (rewritten
  files of torch, mounted read-only over the originals and their .pyc files) and ``torch_blocks``
  (the kernel starts through ``bncourse.kernel_blocks``, which blocks them in torch's dispatcher
  before ipykernel, and so any learner code, runs). See ``bncourse.grading.libraries``.

``check()`` raises ``SandboxUnavailable`` (saying how to get bubblewrap) when the sandbox cannot run
here. Grading without it is the instructor's explicit choice (``--unsandboxed``).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from bncourse.grading.sandbox_view import (ALWAYS_BLOCKED, blocker_dir, ffi_modules, ffi_stand_in,
                                           foreign_site_packages, python_roots, site_packages)
from bncourse.grading.seccomp import seccomp_file

__all__ = ["NOBODY", "UID_BASE", "UID_SPAN", "sandbox_uid",
           "INSTALL_HINT", "Limits", "STAGING", "Sandbox", "SandboxUnavailable", "check", "sized_tmpfs_supported"]

NOBODY = 65534
# Each sandboxed command runs as its own uid from this range (no account, no subordinate-uid range).
UID_BASE = 2_000_000
UID_SPAN = 1_000_000_000
INSTALL_HINT = ("install bubblewrap (Debian/Ubuntu: apt-get install bubblewrap; Fedora: dnf install bubblewrap), "
                "or grade without a sandbox, knowingly: `bncourse grade --unsandboxed` "
                "(plain nbgrader: c.GradingExecute.sandbox = False)")
UNSANDBOXED_NOTE = "UNSANDBOXED: kernels ran without the sandbox (--unsandboxed); scores do not hold against a determined student"
# Environment variables a grading kernel keeps (prefixes); everything else of the grader's is dropped.
KEPT_ENV = ("BNCOURSE_FAST", "BNCOURSE_GRADING", "BNCOURSE_SEED", "BNCOURSE_FULL_ON_CPU", "BNCOURSE_DEVICE",
            "BNCOURSE_THREADS", "BNCOURSE_HIDDEN_SEED", "BNCOURSE_RECEIPTS", "NBGRADER_", "JPY_",
            "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "LANG", "LC_ALL", "PYDEVD_",
            "MPLBACKEND", "TZ")


# Where the read-only copy of the submission's folder is mounted, for the kernel to copy into its
# size-limited working copy before it starts.
STAGING = "/run/bncourse-submission"


@functools.lru_cache(maxsize=1)
def sized_tmpfs_supported() -> bool:
    """True if this bubblewrap has ``--size`` (0.7 and later): a tmpfs of a fixed size."""
    try:
        out = subprocess.run(["bwrap", "--help"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return "--size" in (out.stdout + out.stderr)


class SandboxUnavailable(RuntimeError):
    """bubblewrap is missing or cannot make a sandbox on this machine."""


@dataclass(frozen=True)
class Limits:
    """Per-kernel resource limits (``prlimit``)."""

    memory_bytes: int = 12 * 1024**3   # address space: torch maps a lot of it without using it
    processes: int = 2048              # threads count as processes for this limit
    cpu_seconds: int = 3600
    file_bytes: int = 2 * 1024**3
    tmp_bytes: int = 512 * 1024**2     # the private /tmp (a tmpfs: RAM, outside the address-space limit)
    work_bytes: int = 512 * 1024**2    # the working copy's tmpfs, beyond what the submission itself holds

    def argv(self) -> list[str]:
        return ["prlimit", f"--as={self.memory_bytes}", f"--nproc={self.processes}", f"--cpu={self.cpu_seconds}",
                f"--fsize={self.file_bytes}", "--core=0", "--"]


def _subordinate_ranges() -> list[range]:
    ranges = []
    for f in ("/etc/subuid", "/etc/subgid"):
        try:
            lines = Path(f).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            parts = line.strip().split(":")
            if len(parts) == 3 and parts[1].isdigit() and parts[2].isdigit():
                ranges.append(range(int(parts[1]), int(parts[1]) + int(parts[2])))
    return ranges


def sandbox_uid() -> int:
    """A fresh uid (and gid, same number) for one sandbox: in ``UID_BASE`` .. ``UID_BASE + UID_SPAN``,
    no account or group of this machine and in no subordinate-uid range, so the kernel's process
    limit (per uid, host-wide) is its own."""
    import grp
    import pwd
    import secrets

    taken = _subordinate_ranges()
    while True:
        uid = UID_BASE + secrets.randbelow(UID_SPAN)
        if any(uid in r for r in taken):
            continue
        try:
            pwd.getpwuid(uid)
            continue
        except KeyError:
            pass
        try:
            grp.getgrgid(uid)
            continue
        except KeyError:
            return uid


def _tree_bytes(path: str) -> int:
    """Bytes of the files under ``path`` (rounded up to 4 kB blocks, as a tmpfs holds them)."""
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        total += 4096 * (1 + len(dirnames))
        for f in filenames:
            try:
                total += -(-os.lstat(os.path.join(dirpath, f)).st_size // 4096) * 4096
            except OSError:
                pass
    return total


NOT_ROOT_HINT = ("the kernels' writable folders (their /tmp, the working copy, the IPC folder) must be noexec tmpfs "
                 "mounts, which only root can make: run `bncourse grade` as root (every kernel still runs as "
                 "user nobody), or grade without a sandbox, knowingly: `bncourse grade --unsandboxed`")


# Run as root in a mount namespace of the kernel's own (``unshare --mount``), before bubblewrap: the
# writable folders become noexec. $1 the IPC folder, $2 the working folder bound as it is ('' when it
# is a tmpfs), $3 and $4 the sizes of the /tmp and working-copy tmpfs, $5 the seccomp program ('': none).
_NOEXEC = r"""set -e
for d in "$1" "$2"; do
  if [ -n "$d" ]; then mount --bind "$d" "$d"; mount -o remount,bind,noexec,nosuid,nodev "$d"; fi
done
m="$1/.noexec"
mkdir -p "$m/tmp" "$m/work"
mount -t tmpfs -o "mode=1777,noexec,nosuid,nodev,size=$3" bncourse-tmp "$m/tmp"
mount -t tmpfs -o "mode=1777,noexec,nosuid,nodev,size=$4" bncourse-work "$m/work"
f="$5"
shift 5
if [ -n "$f" ]; then exec "$@" 9<"$f"; fi
exec "$@"
"""


@dataclass(frozen=True)
class Sandbox:
    """How to run one grading kernel in bubblewrap (see the module's docstring)."""

    library: str = ""                       # a folder put on PYTHONPATH, read-only (the solution-free build)
    blocked: tuple[str, ...] = ()           # top-level packages absent from the view
    blocked_reason: str = "not available while grading this notebook"
    torch_blocks: tuple[str, ...] = ()      # bncourse.kernel_blocks installed before the kernel starts
    overlays: tuple[tuple[str, str], ...] = ()  # (rewritten file, the file it is mounted over)
    processes: bool = False                 # may the kernel start processes? (LIBRARY_RULES' "processes")
    limits: Limits = field(default_factory=Limits)

    def command(self, kernel_cmd: Sequence[str], workdir: str, ipc_dir: str, env: dict | None = None,
                work_source: str = "") -> list[str]:
        """``kernel_cmd`` wrapped in bubblewrap; ``workdir`` and ``ipc_dir`` are the only writable folders.

        ``work_source``: a private copy of the submission's folder. With it, ``workdir`` is a tmpfs of
        ``len(work_source) + limits.work_bytes`` that the sandbox fills from it (mounted read-only at
        ``STAGING``) before the kernel starts; nothing the kernel writes reaches the grader's disk.
        Without it, ``workdir`` itself is bound writable.

        Each command runs as a uid of its own (``sandbox_uid()``): ``ipc_dir``, ``workdir`` (without
        ``work_source``) and ``work_source`` are given to that uid here (``prepare_writable``)."""
        as_root = os.geteuid() == 0
        if not as_root:
            raise SandboxUnavailable(f"a grading kernel cannot be sandboxed by user {os.geteuid()}: {NOT_ROOT_HINT}")
        uid = sandbox_uid()
        for path in {ipc_dir, work_source or workdir}:
            self.prepare_writable(path, uid)
        work_bytes = _tree_bytes(work_source) + self.limits.work_bytes if work_source else 4096
        # A kernel starts no process unless its assignment needs them (a new one would not have the
        # kernel's blocks; bncourse.kernel_guard): its working copy is filled by its own Python (launch code), not by cp.
        no_processes = not self.processes
        seccomp = seccomp_file(no_processes)
        # bubblewrap itself ignores SIGINT: an interrupt (nbclient's, after a cell's time limit) is
        # for the kernel, which sets its own handler; a bwrap killed by it would take the kernel along.
        # Between the two, in a mount namespace of its own, the writable folders become noexec (_NOEXEC).
        args = ["sh", "-c", 'trap "" INT; exec "$@"', "bncourse-sandbox",
                "unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", _NOEXEC, "bncourse-noexec", ipc_dir, "" if work_source else workdir,
                str(self.limits.tmp_bytes), str(work_bytes), seccomp,
                "bwrap", "--die-with-parent", "--unshare-pid", "--unshare-ipc", "--unshare-net", "--unshare-uts",
                "--unshare-cgroup-try", "--hostname", "grading"]
        if seccomp:
            args += ["--seccomp", "9"]  # see seccomp_filter
        noexec = os.path.join(ipc_dir, ".noexec")
        made: set[str] = {"/"}

        def parents(path: str) -> None:
            parts = Path(path).parts
            for i in range(2, len(parts)):
                p = str(Path(*parts[:i]))
                if p not in made:
                    made.add(p)
                    args.extend(["--perms", "0755", "--dir", p])

        for name in ("usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            p = f"/{name}"
            if os.path.islink(p):
                args.extend(["--symlink", os.readlink(p), p])
            elif os.path.isdir(p):
                args.extend(["--ro-bind", p, p])
            made.add(p)
        for f in ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/alternatives",
                  "/etc/nsswitch.conf", "/etc/fonts", "/etc/matplotlibrc"):
            if os.path.exists(f):
                parents(f)
                args.extend(["--ro-bind", f, f])
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--bind", os.path.join(noexec, "tmp"), "/tmp"]  # a noexec tmpfs of limits.tmp_bytes
        made.add("/tmp")
        for root in python_roots():
            parents(root)
            args.extend(["--ro-bind", root, root])
            made.add(root)
        for foreign in foreign_site_packages():
            args.extend(["--tmpfs", foreign])
        for ffi in ffi_modules():  # no foreign-function interface, by any name or loader
            args.extend(["--ro-bind", "/dev/null", ffi])
        # cuda-python sets up its loader with ctypes' structures at import: absent, as the GPU is (torch
        # imports it only if it can).
        always = tuple((name, "is not available in the grading sandbox (no GPU in its view)") for name in ALWAYS_BLOCKED)
        for name, reason in (*((name, self.blocked_reason) for name in self.blocked), *always):
            blocker = str(blocker_dir(name, f"{name} {reason}"))
            for sp in site_packages():
                if os.path.isdir(os.path.join(sp, name)):
                    args.extend(["--ro-bind", blocker, os.path.join(sp, name)])
        for source, path in self.overlays:
            args.extend(["--ro-bind", source, path])
        stand_in = str(ffi_stand_in())
        for folder in (stand_in, self.library):
            if folder:
                parents(folder)
                args.extend(["--ro-bind", folder, folder])
        parents(ipc_dir)
        args.extend(["--bind", ipc_dir, ipc_dir])  # noexec (bound so by _NOEXEC)
        made.add(ipc_dir)
        fill: list[str] = []
        parents(workdir)
        if work_source:
            # A noexec tmpfs of the submission's size + limits.work_bytes, filled from the private copy
            # (mounted read-only at STAGING) before the kernel starts: nothing it writes reaches the grader's disk.
            args.extend(["--bind", os.path.join(noexec, "work"), workdir])
            parents(STAGING)
            args.extend(["--ro-bind", work_source, STAGING])
            # Filled as the sandbox's user, before the limits (the kernel's own files are in there).
            if not no_processes:
                fill = ["sh", "-c", f'cp -R {STAGING}/. . && exec "$@"', "bncourse-fill"]
        else:
            args.extend(["--bind", workdir, workdir])  # noexec (bound so by _NOEXEC)
        made.add(workdir)
        args += ["--chdir", workdir, "--clearenv"]
        for key, value in self.environment(env or os.environ).items():
            args.extend(["--setenv", key, value])
        args.append("--")
        # drop to the sandbox's own uid outside too: no capability, no root-owned file is ours
        args += ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                 "--inh-caps=-all", "--bounding-set=-all", "--"]
        return args + fill + self.limits.argv() + self.with_blocks(kernel_cmd, staged=bool(work_source) and no_processes)

    def with_blocks(self, kernel_cmd: Sequence[str], staged: bool = False) -> list[str]:
        """``kernel_cmd`` (``python -m ipykernel_launcher ...``) started through ``bncourse.kernel_blocks``
        (``staged``: after copying the submission from ``STAGING`` into its working copy)."""
        cmd = list(kernel_cmd)
        if not self.torch_blocks and self.processes:
            return cmd
        if self.processes:
            from bncourse.kernel_blocks import launch_code
        else:  # the blocks, then the guard against processes
            from bncourse.kernel_guard import launch_code

        fill = ("def _fill():\n    import os, shutil\n"
                f"    for e in os.scandir({STAGING!r}):\n"
                "        (shutil.copytree(e.path, e.name, symlinks=True) if e.is_dir(follow_symlinks=False)\n"
                "         else shutil.copy2(e.path, e.name, follow_symlinks=False))\n"
                "_fill()\ndel _fill\n") if staged else ""
        for i in range(len(cmd) - 1):
            if cmd[i] == "-m" and cmd[i + 1] == "ipykernel_launcher":
                return cmd[:i] + ["-c", fill + launch_code(self.torch_blocks)] + cmd[i + 2:]
        if not self.torch_blocks:  # not a kernel (a test's own command): filled, then exec'd
            return [sys.executable, "-I", "-S", "-c", fill + "import os, sys\nos.execvp(sys.argv[1], sys.argv[1:])",
                    *cmd] if staged else cmd
        raise SandboxUnavailable(f"cannot block {', '.join(self.torch_blocks)} in a kernel started by {cmd!r}: "
                                 "grading expects the kernelspec's `python -m ipykernel_launcher` command")

    def environment(self, env: dict) -> dict[str, str]:
        kept = {k: str(v) for k, v in env.items() if k.startswith(KEPT_ENV) and not k.startswith("BNCOURSE_GRADING_")}
        venv_bin = os.path.join(sys.prefix, "bin")
        kept.update({
            "PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin",
            "HOME": "/tmp", "TMPDIR": "/tmp", "MPLCONFIGDIR": "/tmp/matplotlib", "XDG_CACHE_HOME": "/tmp/.cache",
            "PYTHONNOUSERSITE": "1", "PYTHONDONTWRITEBYTECODE": "1",
            "BNCOURSE_SANDBOXED": "1",
        })
        # The ctypes stand-in first: the standard library's ctypes cannot load (its _ctypes is masked).
        kept["PYTHONPATH"] = os.pathsep.join(p for p in (str(ffi_stand_in()), self.library) if p)
        return kept

    @staticmethod
    def prepare_writable(path: str, uid: int = NOBODY) -> None:
        """Make ``path`` (and what is in it) user ``uid``'s, so the kernel can write there
        (``command`` gives its folders to the command's own uid)."""
        if os.geteuid() != 0 or not path:
            return
        for dirpath, dirnames, filenames in os.walk(path):
            os.chown(dirpath, uid, uid)
            for f in filenames:
                try:
                    os.chown(os.path.join(dirpath, f), uid, uid, follow_symlinks=False)
                except OSError:
                    pass


@functools.lru_cache(maxsize=1)
def _self_test() -> str:
    """'' if a sandboxed Python starts here, else what went wrong."""
    if shutil.which("bwrap") is None:
        return "bubblewrap (bwrap) is not installed"
    if os.geteuid() != 0:
        return f"grading runs as user {os.geteuid()}, and {NOT_ROOT_HINT}"
    if any(shutil.which(tool) is None for tool in ("prlimit", "setpriv", "unshare", "mount")):
        return "util-linux's prlimit/setpriv/unshare/mount are missing"
    with tempfile.TemporaryDirectory(prefix="bncourse-sandbox-test-") as tmp:
        Sandbox.prepare_writable(tmp)
        cmd = Sandbox().command([sys.executable, "-c", "import os; open('ok', 'w').write(str(os.getuid()))"], tmp, tmp)
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap could not start a sandbox ({exc})"
        if proc.returncode != 0 or not os.path.exists(os.path.join(tmp, "ok")):
            return f"bubblewrap could not start a sandbox: {proc.stderr.strip()[-500:]}"
    return ""


def check() -> None:
    """Raise ``SandboxUnavailable`` (with how to get it) unless grading kernels can be sandboxed here."""
    problem = _self_test()
    if problem:
        raise SandboxUnavailable(f"grading needs a sandbox for the learners' kernels, and {problem}: {INSTALL_HINT}")

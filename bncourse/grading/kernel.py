"""The grading kernel's manager: IPC sockets, the sandbox around the kernel's process, and the
kernel's own output kept apart from the grader's (``KernelOutput``)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import threading
import uuid

from jupyter_client.manager import AsyncKernelManager
from traitlets import Any, Instance, Unicode, default

from bncourse.grading.sandbox import NOBODY, Sandbox, SandboxUnavailable

__all__ = ["GradingKernelManager", "KernelOutput", "escaped"]

KEPT_OUTPUT_BYTES = 64 * 1024  # of a kernel's own stdout/stderr, what the grader keeps (the rest is counted)


def escaped(data: bytes) -> str:
    """``data`` as one line of printable text: control characters (escape sequences, carriage
    returns, newlines) and anything not printable shown as Python escapes, never acted on."""
    text = data.decode("utf-8", "replace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class KernelOutput:
    """A kernel's own stdout and stderr (not its cells' outputs, which travel over IOPub): a pipe the
    grader drains in a thread, keeping the first ``keep`` bytes and counting the rest.

    The kernel gets the pipe's write end as its fds 1 and 2 and ``/dev/null`` as fd 0: no descriptor
    of the grader's (its terminal, its log) is ever the kernel's. ``lines()`` is what reached the
    pipe, each line escaped and prefixed, for the grader's log."""

    PREFIX = "  kernel| "

    def __init__(self, keep: int = KEPT_OUTPUT_BYTES):
        self.keep, self.kept, self.total = keep, bytearray(), 0
        self._read, self.write_fd = os.pipe()
        self._thread = threading.Thread(target=self._drain, name="bncourse-kernel-output", daemon=True)
        self._thread.start()

    def _drain(self) -> None:
        try:
            while True:
                chunk = os.read(self._read, 1 << 16)
                if not chunk:
                    break
                self.total += len(chunk)
                if len(self.kept) < self.keep:
                    self.kept += chunk[:self.keep - len(self.kept)]
        finally:
            os.close(self._read)

    def launched(self) -> None:
        """The kernel holds the write end now: the grader's copy is closed (EOF comes when it ends)."""
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1

    def lines(self, timeout: float = 5) -> list[str]:
        """What the kernel wrote, escaped, one prefixed line per line it wrote (after it ended)."""
        self.launched()
        self._thread.join(timeout)
        lines = [self.PREFIX + escaped(line) for line in bytes(self.kept).splitlines()]
        if self.total > len(self.kept):
            lines.append(f"{self.PREFIX}[... {self.total - len(self.kept)} more bytes not kept]")
        return lines


_BANNER = ("To exit, you will have to explicitly quit", '"quit" from a client', "To read more about this, see",
           "To connect another client to this kernel", "--existing ")


def log_kernel_output(km, log) -> None:
    """Put what a sandboxed kernel wrote to its own stdout/stderr in the grader's log, as the kernel's
    (each line prefixed ``  kernel| ``, escaped), once."""
    output = getattr(km, "kernel_output", None)
    if output is None:
        return
    km.kernel_output = None
    lines = output.lines()
    if lines:
        # ipykernel's own banner (it prints one when its parent is out of sight) is no news.
        news = [ln for ln in lines if ln.strip() != KernelOutput.PREFIX.strip() and not any(b in ln for b in _BANNER)]
        (log.info if news else log.debug)("The kernel's own stdout/stderr (%d bytes; escaped, each line prefixed):\n%s", output.total,
                 "\n".join(lines))


class GradingKernelManager(AsyncKernelManager):
    """A grading kernel reached over IPC sockets, run in the sandbox (``bncourse.grading.sandbox``).

    IPC sockets, not TCP on localhost: no kernel can take a port another grading kernel is about
    to use, and a sandboxed kernel has no network at all. With ``sandbox`` set (``GradingExecute``
    sets it), the kernel's connection file and sockets live in a private folder bound into the
    sandbox, and the kernel works in a private copy of its working folder bound at the same path
    (it never writes into the submission). An instructor's ``c.KernelManager.transport`` still
    wins; Windows, which has no IPC sockets, keeps TCP (and cannot be sandboxed).
    """

    ipc_dir = Unicode("", help="Folder of the IPC socket files ('': the temp folder). bncourse grade "
                              "uses each submission's private folder, so even a killed kernel's "
                              "files go with it.").tag(config=True)
    sandbox = Instance(Sandbox, allow_none=True, help="The sandbox the kernel runs in (None: none).")
    allowed_files = Any(None, allow_none=True, help="Relative paths (a set) the working copy may hold: the "
                                                    "release's files. None: every file.")
    kernel_output = Instance(KernelOutput, allow_none=True, help="The kernel's own stdout/stderr (sandboxed "
                                                                  "kernels), for the grader's log.")

    @default("transport")
    def _ipc_where_possible(self) -> str:
        return "ipc" if os.name == "posix" else "tcp"

    def _ip_default(self) -> str:
        if self.transport == "ipc":  # a short, unique prefix: a socket path must stay under ~100 characters
            return os.path.join(self.ipc_dir or tempfile.gettempdir(), f"bncourse-kernel-{uuid.uuid4().hex[:12]}")
        return super()._ip_default()

    async def _async_pre_start_kernel(self, **kw):
        if self.sandbox is not None:
            if self.transport != "ipc":
                raise SandboxUnavailable("a sandboxed kernel has no network: set c.KernelManager.transport = 'ipc'")
            self._private = tempfile.mkdtemp(prefix="bncourse-kernel-", dir=self.ipc_dir or None)
            os.makedirs(os.path.join(self._private, "run"))
            Sandbox.prepare_writable(os.path.join(self._private, "run"))
            self.ip = os.path.join(self._private, "run", "k")
            self.connection_file = os.path.join(self._private, "run", "connection.json")
        return await super()._async_pre_start_kernel(**kw)

    def write_connection_file(self, **kwargs) -> None:
        super().write_connection_file(**kwargs)
        if self.sandbox is not None and os.geteuid() == 0:
            os.chown(self.connection_file, NOBODY, NOBODY)  # the kernel reads it as nobody

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        if self.sandbox is not None:
            cwd = os.path.abspath(kw.get("cwd") or os.getcwd())
            work = os.path.join(self._private, "work")
            self.left_out = []
            shutil.copytree(cwd, work, symlinks=True, ignore=self._ignored(cwd))
            Sandbox.prepare_writable(work)
            kernel_cmd = self.sandbox.command(kernel_cmd, cwd, os.path.join(self._private, "run"),
                                              kw.get("env"), work_source=work)
            # No descriptor of the grader's: stdin /dev/null, stdout and stderr a pipe of our own.
            self.kernel_output = KernelOutput()
            kw.update(stdin=subprocess.DEVNULL, stdout=self.kernel_output.write_fd, stderr=self.kernel_output.write_fd)
            try:
                return await super()._async_launch_kernel(kernel_cmd, **kw)
            finally:
                self.kernel_output.launched()
        return await super()._async_launch_kernel(kernel_cmd, **kw)

    def _ignored(self, root: str):
        """copytree's ``ignore``: databases always; with ``allowed_files``, every file but those paths (each
        one left out is kept in ``left_out``, relative to ``root``; the notebook's cells reach the kernel
        from the grader, not from the file)."""
        allowed = None if self.allowed_files is None else set(self.allowed_files)
        default = shutil.ignore_patterns("*.sqlite", "*.db")

        def ignore(folder: str, names: list[str]) -> set[str]:
            skipped = set(default(folder, names))
            if allowed is None:
                return skipped
            for name in names:
                rel = os.path.relpath(os.path.join(folder, name), root)
                if name in skipped or os.path.isdir(os.path.join(folder, name)) and not os.path.islink(
                        os.path.join(folder, name)):
                    continue  # a folder is walked: its files are judged one by one
                if rel in allowed:
                    continue
                skipped.add(name)
                if rel != "timestamp.txt" and ".ipynb_checkpoints" not in rel:  # nbgrader's, Jupyter's own
                    self.left_out.append(rel)
            return skipped

        return ignore

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        private = getattr(self, "_private", None)
        if private and not restart:
            shutil.rmtree(private, ignore_errors=True)

"""The grading kernel's manager: IPC sockets, and the sandbox around the kernel's process."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid

from jupyter_client.manager import AsyncKernelManager
from traitlets import Instance, Unicode, default

from bncourse.grading.sandbox import NOBODY, Sandbox, SandboxUnavailable

__all__ = ["GradingKernelManager"]


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
            shutil.copytree(cwd, work, symlinks=True, ignore=shutil.ignore_patterns("*.sqlite", "*.db"))
            Sandbox.prepare_writable(work)
            kernel_cmd = self.sandbox.command(kernel_cmd, cwd, os.path.join(self._private, "run"),
                                              kw.get("env"), work_source=work)
        return await super()._async_launch_kernel(kernel_cmd, **kw)

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        private = getattr(self, "_private", None)
        if private and not restart:
            shutil.rmtree(private, ignore_errors=True)

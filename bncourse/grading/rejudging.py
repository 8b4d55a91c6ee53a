"""Where the grader re-judges a notebook's test cells: a clean process, never the learner's kernel.

``VerifyChecks`` hands each notebook's test cells to a *rejudger*, which gives back
``{cell id: [verdict, reason]}``. Two kinds, the same answer:

- ``ServerClient``: a child forked for this notebook by the grading process's ``RejudgingServer``
  (``bncourse.checks.replay_server``), a ``python -I`` process that has imported the checks'
  modules once. The default: it saves every torch notebook the ~2.5 s of CPU of importing torch.
- ``ReplayProcess``: a fresh ``python -I`` process per notebook; what a client falls back to when
  the server cannot be reached.

    judge = rejudger(["bncourse.checks.pytorch"])   # when the notebook starts to run: imports begin
    verdicts = judge.judge(cells)                      # after it ran

``RejudgingServer.shared()`` is this process's server (started on first use, one per process; it
exits with its owner). ``bncourse grade --jobs N`` starts it in the main process and its workers
all use it, across assignments.
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from typing import Sequence

from bncourse.checks import replay
from bncourse.checks.replay_server import PROGRAM

def _this_bncourse() -> str:
    """A line that makes a ``python -I`` process import the same ``bncourse`` as this process
    (``-I`` ignores PYTHONPATH: without it, a checkout being tested would be judged by the
    installed package)."""
    import bncourse

    parent = os.path.dirname(os.path.dirname(os.path.abspath(bncourse.__file__)))
    return f"import sys; sys.path.insert(0, {parent!r})\n"


_CHECK_MODULE = re.compile(r"^\s*(?:from|import)\s+(bncourse\.checks\.[A-Za-z_]\w*)", re.M)


def check_modules(sources: Sequence[str]) -> list[str]:
    """The ``bncourse.checks.*`` modules that test cell ``sources`` import (to load them early)."""
    return sorted({m for src in sources for m in _CHECK_MODULE.findall(src)})


def _clean_env() -> dict[str, str]:
    """The re-judging process's environment: no autograde flag, no course settings, one thread."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("NBGRADER_EXECUTION", replay.ENV_FORCE) and not k.startswith("BNCOURSE_")}
    # One thread: the checks' tensors are small, and on a busy machine torch's thread pool made
    # re-judging notebook 4 four times slower (21 s against 5 s at load 8 on 2 cores).
    env.update({k: "1" for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")})
    return env


class ReplayProcess:
    """A fresh ``python -I`` process for one notebook, started before it is needed.

    It imports the checks' modules (torch takes seconds) while the kernel works, then waits for the
    cells on stdin; ``judge`` hands them over.
    """

    def __init__(self, preload: Sequence[str] = ()):
        self._cwd = tempfile.TemporaryDirectory(prefix="bncourse-replay-")
        program = (_this_bncourse() + "from bncourse.checks.replay_server import preload\npreload(sys.argv[1:])\n"
                   "from bncourse.checks.replay import main\nsys.exit(main())")
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", program, *preload],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            cwd=self._cwd.name, env=_clean_env())

    def judge(self, cells: Sequence[dict], timeout: float = 600) -> dict[str, list]:
        try:
            out, err = self.proc.communicate(json.dumps({"cells": list(cells)}), timeout=timeout)
        finally:
            self.close()
        if self.proc.returncode != 0:
            raise RuntimeError(f"the replay process failed: {err.strip()[-2000:]}")
        return json.loads(out)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate()
        self._cwd.cleanup()


class RejudgingServer:
    """A ``python -I`` process that imports the checks once and forks a judging child per notebook.

    ``address`` is its Unix socket. It exits when this object closes it or its owner dies.
    """

    _shared: dict[int, "RejudgingServer"] = {}

    def __init__(self, preload: Sequence[str] = (), start_timeout: float = 30):
        self._dir = tempfile.mkdtemp(prefix="bncourse-rejudge-")
        self.address = os.path.join(self._dir, "socket")
        self.owner = os.getpid()
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", _this_bncourse() + PROGRAM, self.address, *preload], stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self._dir, env=_clean_env())
        deadline = time.monotonic() + start_timeout
        while not os.path.exists(self.address):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise OSError(f"the re-judging server did not start (exit status {self.proc.returncode})")
            time.sleep(0.01)

    @classmethod
    def shared(cls, preload: Sequence[str] = ()) -> "RejudgingServer":
        """This process's server, started on first use (again if it died) importing ``preload``.

        A server already running is not asked again: each notebook's ``ServerClient`` warms it."""
        server = cls._shared.get(os.getpid())
        if server is not None and server.alive():
            return server
        server = cls._shared[os.getpid()] = cls(preload)
        atexit.register(server.close)
        return server

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        if os.getpid() != self.owner:  # a forked copy of the owner: the server is not ours to stop
            return
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(5)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self._dir, ignore_errors=True)


def _send(address: str, header: dict, body: bytes = b"", timeout: float = 30) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(address)
        sock.sendall(json.dumps(header).encode() + b"\n" + body)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        sock.close()
        raise
    return sock


class ServerClient:
    """One notebook's re-judging by a ``RejudgingServer``'s child; a fresh process if the server is gone.

    Created when the notebook starts to run: it asks the server to import ``preload`` meanwhile.
    """

    def __init__(self, address: str, preload: Sequence[str] = ()):
        self.address, self.preload = address, list(preload)
        if self.preload:
            try:
                _send(address, {"preload": self.preload, "judge": False}).close()
            except OSError:
                pass  # judge() finds out, and falls back

    def judge(self, cells: Sequence[dict], timeout: float = 600) -> dict[str, list]:
        body = json.dumps({"cells": list(cells)}).encode()
        try:
            sock = _send(self.address, {"preload": self.preload, "judge": True, "timeout": int(timeout) + 1},
                         body, timeout=timeout + 30)
        except OSError:  # no server (it died, or this machine has none): the notebook gets a fresh process
            return ReplayProcess(self.preload).judge(cells, timeout=timeout)
        with sock:
            chunks = []
            while True:
                chunk = sock.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        if not chunks:
            raise RuntimeError("the re-judging process ended without a verdict (killed, or out of memory?)")
        out = json.loads(b"".join(chunks))
        if "__error__" in out:
            raise RuntimeError(f"the re-judging process failed: {out['__error__']}")
        return out

    def close(self) -> None:
        pass


def rejudger(preload: Sequence[str] = (), server: str = ""):
    """A rejudger for one notebook: by the server at ``server`` ('' = this process's own), or
    ``"fresh"`` for a fresh ``python -I`` process."""
    if server == "fresh":
        return ReplayProcess(preload)
    try:
        return ServerClient(server or RejudgingServer.shared(preload).address, preload)
    except OSError:
        return ReplayProcess(preload)


def replay_cells(cells: Sequence[dict], timeout: float = 600, process=None) -> dict[str, list]:
    """Re-judge test cells outside the learner's kernel: {cell id: [verdict, reason]}."""
    return (process or rejudger()).judge(cells, timeout=timeout)

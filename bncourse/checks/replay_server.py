"""The re-judging server: a clean process that has imported the checks, and forks one child per notebook.

Re-judging a notebook's test cells (``bncourse.checks.replay``) needs a process that never ran
learner code. A fresh ``python -I`` per notebook is one; its cost is the checks' imports (torch:
about 2.5 s of CPU on every submission of notebooks 4 to 10). This server is the same clean
process started once: it imports the checks' modules, then for each notebook forks a child that
judges it and exits, so every notebook is still judged in a process of its own that no learner
code has touched, and the imports are paid once per grading process.

It runs as ``python -I`` (``bncourse.grading.rejudging.RejudgingServer`` starts it) on a Unix
socket. A client connects and sends one header line, ``{"preload": [module, ...], "judge": bool,
"timeout": seconds}``; with ``"judge": true`` the job follows (the JSON ``replay.main`` reads) and
the client shuts its side; the child answers with the verdicts' JSON ({"__error__": text} if it
could not judge) and closes. Only module names of the checks (``bncourse.checks.*``) and ``torch``
are ever imported here; everything the job carries is read by the child, after the fork. The
server exits when its owner closes the server's stdin (or dies).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import selectors
import shutil
import signal
import socket
import sys
import tempfile
import traceback

PRELOADABLE = re.compile(r"bncourse\.checks\.[A-Za-z_]\w*|torch")
_HEADER_LIMIT = 64 * 1024


def preload(names) -> None:
    """Import the checks' modules named (others are ignored: this process imports nothing else)."""
    for name in names:
        if isinstance(name, str) and PRELOADABLE.fullmatch(name) and name not in sys.modules:
            try:
                importlib.import_module(name)
            except Exception:  # noqa: BLE001 - the child imports it again and reports what fails
                pass


def serve(listener: socket.socket, modules=()) -> int:
    """Accept clients on ``listener`` until stdin closes; one forked child per judging request."""
    from bncourse.checks import replay  # noqa: F401 - the child judges with it: import it once, here

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # children are reaped by the kernel
    preload(modules)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(0, selectors.EVENT_READ)
    while True:
        for key, _ in selector.select():
            if key.fd == 0:
                if not os.read(0, 4096):
                    return 0  # the owner closed our stdin or died
                continue
            conn, _ = listener.accept()
            try:
                _handle(conn, listener)
            except Exception:  # noqa: BLE001 - one bad client never stops the server
                pass
            finally:
                conn.close()


def _handle(conn: socket.socket, listener: socket.socket) -> None:
    conn.settimeout(30)
    data = b""
    while b"\n" not in data:
        chunk = conn.recv(65536)
        if not chunk or len(data) > _HEADER_LIMIT:
            return
        data += chunk
    header_line, rest = data.split(b"\n", 1)
    header = json.loads(header_line)
    preload(header.get("preload", []))
    if not header.get("judge"):
        return
    if os.fork() == 0:  # the child: judge this notebook, answer, exit
        try:
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            signal.alarm(max(1, int(header.get("timeout", 600))))  # a job that never ends is killed
            _judge_and_answer(conn, rest)
        finally:
            os._exit(0)


def _judge_and_answer(conn: socket.socket, rest: bytes) -> None:
    from bncourse.checks import replay

    workdir = tempfile.mkdtemp(prefix="bncourse-replay-")
    try:
        os.chdir(workdir)
        conn.settimeout(None)
        chunks = [rest]
        while True:
            chunk = conn.recv(1 << 20)
            if not chunk:
                break
            chunks.append(chunk)
        try:
            reply = replay.judge(json.loads(b"".join(chunks)))
        except BaseException:  # noqa: BLE001 - reported to the client, which fails the notebook closed
            reply = {"__error__": traceback.format_exc()[-2000:]}
        conn.sendall(json.dumps(reply).encode())
        conn.shutdown(socket.SHUT_WR)
    finally:
        os.chdir("/")
        shutil.rmtree(workdir, ignore_errors=True)


# Run by RejudgingServer: bind first (the owner waits for the socket file), import after.
PROGRAM = (
    "import socket, sys\n"
    "listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)\n"
    "listener.bind(sys.argv[1])\n"
    "listener.listen(64)\n"
    "from bncourse.checks.replay_server import serve, remove_socket\n"
    "try:\n"
    "    sys.exit(serve(listener, sys.argv[2:]))\n"
    "finally:\n"
    "    remove_socket(sys.argv[1])\n"
)


def remove_socket(path: str) -> None:
    """The socket file and its folder (the owner made one for it), when the server ends."""
    for remove in (lambda: os.unlink(path), lambda: os.rmdir(os.path.dirname(path))):
        try:
            remove()
        except OSError:
            pass

"""Can one sandboxed kernel take the process limit of another (red team 3, R5)?

``RLIMIT_NPROC`` counts the processes and threads of a real uid across the whole host: were every
sandbox the same uid, a kernel holding threads would stop kernels started beside it (``--jobs 2``,
a dask worker) from starting theirs. Each sandboxed command runs as a uid of its own.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time

import pytest

from bncourse.grading import sandbox

needs_bwrap = pytest.mark.skipif(shutil.which("bwrap") is None,
                                 reason="the grading sandbox needs bubblewrap: apt-get install bubblewrap")

LIMITS = sandbox.Limits(processes=48)
THREADS = """
import sys, threading, time
threading.stack_size(64 * 1024)
n, hold = int(sys.argv[1]), float(sys.argv[2])
stop = threading.Event()
started = 0
try:
    for _ in range(n):
        threading.Thread(target=stop.wait, daemon=True).start()
        started += 1
except RuntimeError as exc:
    print("failed after", started, exc, flush=True)
print("started", started, flush=True)
time.sleep(hold)
stop.set()
"""


def _reuid(cmd: list[str]) -> int:
    return int(next(a for a in cmd if a.startswith("--reuid=")).split("=", 1)[1])


def _command(tmp_path, name: str, n: int, hold: float) -> list[str]:
    folder = tmp_path / name
    folder.mkdir()
    return sandbox.Sandbox(limits=LIMITS).command([sys.executable, "-c", THREADS, str(n), str(hold)],
                                                  str(folder), str(folder))


@needs_bwrap
def test_do_two_sandbox_commands_run_as_different_uids_of_no_account(tmp_path):
    import pwd

    uids = {_reuid(_command(tmp_path, name, 1, 0)) for name in ("a", "b", "c")}
    assert len(uids) == 3
    for uid in uids:
        assert sandbox.UID_BASE <= uid < sandbox.UID_BASE + sandbox.UID_SPAN
        with pytest.raises(KeyError):
            pwd.getpwuid(uid)


@needs_bwrap
def test_does_a_kernel_holding_threads_leave_another_sandbox_its_own_limit(tmp_path):
    # the hog holds 40 of its 48 (threads count as processes); the other then starts 30 of its own
    hog = subprocess.Popen(_command(tmp_path, "hog", 40, 30), stdout=subprocess.PIPE, text=True)
    try:
        first = hog.stdout.readline()
        assert first.strip() == "started 40", first
        other = subprocess.run(_command(tmp_path, "other", 30, 0), capture_output=True, text=True, timeout=60)
        assert hog.poll() is None  # still holding its threads meanwhile
        assert other.returncode == 0, other.stderr[-2000:]
        assert "started 30" in other.stdout and "failed" not in other.stdout, other.stdout
    finally:
        hog.kill()
        hog.wait()

"""Does the re-judging server judge each notebook in a clean process of its own, and fail closed?

``bncourse.grading.rejudging``: one server per grading process imports the checks once and forks a
child per notebook. These tests talk to a real server (a ``python -I`` process) through the same
client ``VerifyChecks`` uses.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from bncourse.grading import rejudging

from standardize_receipts import TEST_CELL, ddof1, my_standardize, receipts_of


def _pid_cell(folder, tag: str) -> dict:
    """A cell that leaves its process id, and whether an earlier cell's mark is still in the checks, in a file."""
    source = textwrap.dedent(f"""\
        import os, bncourse.checks.core as core
        open({str(folder / tag)!r}, "w").write(f"{{os.getpid()}} {{hasattr(core, 'LEFT_BY_AN_EARLIER_CELL')}}")
        core.LEFT_BY_AN_EARLIER_CELL = True""")
    return {"id": tag, "source": source, "receipts": []}


@pytest.fixture
def server():
    s = rejudging.RejudgingServer(["bncourse.checks.normalize"])
    yield s
    s.close()


def test_does_the_server_give_the_verdicts_a_fresh_process_gives(server, monkeypatch):
    cells = [{"id": "honest", "source": TEST_CELL, "receipts": receipts_of(my_standardize, monkeypatch)},
             {"id": "wrong", "source": TEST_CELL, "receipts": receipts_of(ddof1, monkeypatch)},
             {"id": "direct", "source": "assert standardize(1, 2) is not None", "receipts": []}]
    by_server = rejudging.ServerClient(server.address).judge(cells)
    by_fresh_process = rejudging.ReplayProcess().judge(cells)
    assert by_server == by_fresh_process
    assert by_server["honest"] == ["pass", ""] and by_server["wrong"][0] == "fail"


def test_is_every_notebook_judged_in_a_new_process_that_an_earlier_notebook_left_no_mark_on(server, tmp_path):
    for tag in ("first", "second"):
        rejudging.ServerClient(server.address).judge([_pid_cell(tmp_path, tag)])
    (pid1, mark1), (pid2, mark2) = [(tmp_path / t).read_text().split() for t in ("first", "second")]
    assert len({int(pid1), int(pid2), server.proc.pid}) == 3, "a notebook was judged in the server or a reused child"
    assert mark1 == mark2 == "False", "an earlier notebook's change to the checks reached a later one"


def test_does_a_client_fall_back_to_a_fresh_process_when_the_server_is_gone(server, tmp_path):
    client = rejudging.ServerClient(server.address)
    server.proc.kill()
    server.proc.wait()
    client.judge([_pid_cell(tmp_path, "after")])
    assert (tmp_path / "after").exists()


def test_is_a_judging_child_that_never_ends_stopped_at_the_timeout(server):
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="without a verdict"):
        rejudging.ServerClient(server.address).judge([{"id": "loop", "source": "while True:\n    pass",
                                                         "receipts": []}], timeout=1)
    assert time.monotonic() - start < 20


def test_does_the_server_exit_when_the_process_that_owns_it_dies():
    owner = subprocess.Popen([sys.executable, "-c", (
        "from bncourse.grading.rejudging import RejudgingServer\n"
        "server = RejudgingServer.shared()\n"
        "print(server.proc.pid, server.address, flush=True)\n"
        "import time; time.sleep(600)")], stdout=subprocess.PIPE, text=True)
    try:
        pid, address = owner.stdout.readline().split()
        server_pid = int(pid)
        assert psutil.pid_exists(server_pid)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if psutil.Process(server_pid).status() == psutil.STATUS_ZOMBIE:
                    break
            except psutil.NoSuchProcess:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"the re-judging server {server_pid} outlived its owner by 10 s")
        deadline = time.monotonic() + 5
        while os.path.exists(os.path.dirname(address)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not os.path.exists(os.path.dirname(address)), "the server left its socket folder behind"
    finally:
        owner.kill()


def test_is_a_receipt_that_inflates_past_the_cap_refused():
    """A zip bomb in a receipt (red team, 2026-12-07: 272 KB grew to 632 MB in the grader) is no receipt."""
    import base64
    import zlib

    from bncourse.checks import replay

    honest = replay.Receipt("check_standardize", [replay.RecordedCall("d1", None, "oops", "ValueError", [0])])
    assert replay.Receipt.from_json(honest.to_json()) == honest
    bomb = {"v": 1, "z": base64.b64encode(zlib.compress(b"[" + b" " * (replay.MAX_RECEIPT_BYTES + 10) + b"]", 9)).decode()}
    assert len(bomb["z"]) < 2_000_000 and replay.Receipt.from_json(bomb) is None


def test_is_the_replay_mode_decided_in_one_place_and_replay_only_inside_replay_cell(monkeypatch):
    from bncourse.checks import replay

    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv(replay.ENV_FORCE, raising=False)
    assert replay.mode() is replay.Mode.OFF
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")  # how nbgrader starts a grading kernel
    assert replay.mode() is replay.Mode.RECORD_ONLY and replay.recording_only()
    with replay.use_mode(replay.Mode.OFF):
        assert replay.mode() is replay.Mode.OFF and not replay.recording()
    monkeypatch.setattr(replay, "SEEN_IN_THE_CELL", None, raising=False)
    replay.replay_cell("import bncourse.checks.replay as r\nr.SEEN_IN_THE_CELL = r.mode()", [])
    assert replay.SEEN_IN_THE_CELL is replay.Mode.REPLAY and replay.mode() is replay.Mode.RECORD_ONLY
    with pytest.raises(ValueError):
        with replay.use_mode(replay.Mode.REPLAY):
            pass


def test_are_a_cells_receipts_capped_in_number_and_size_per_cell_and_per_notebook(monkeypatch):
    """Red team 2 (receipt_flood.py): each receipt was capped but not their number, and the grader unpacked
    all of a cell's at once (3 receipts of 253 kB: 2.7 GB). Offline, with the caps lowered: an honest cell
    still passes; a cell flooded with receipts is refused unread, with the reason; once a notebook's
    receipts reach its cap the later cells are refused too; a receipt of millions of tiny JSON items is
    not parsed at all."""
    import base64
    import json
    import zlib

    from bncourse.checks import replay

    honest = receipts_of(my_standardize, monkeypatch)
    size = sum(len(zlib.decompress(base64.b64decode(r["z"]))) for r in honest)

    def padded(n_bytes: int) -> dict:  # a receipt for the right exercise, padded to n_bytes of JSON
        text = json.dumps({"exercise": "standardize", "calls": [], "pad": " " * n_bytes}).encode()
        return {"v": 1, "z": base64.b64encode(zlib.compress(text, 9)).decode()}

    flood = [padded(size)] * 50
    tiny_items = {"v": 1, "z": base64.b64encode(zlib.compress(
        b'{"exercise": "standardize", "calls": [], "pad": [' + b"0," * 3_000_000 + b"0]}", 9)).decode()}
    cell = lambda i, receipts: {"id": str(i), "source": TEST_CELL, "receipts": receipts, "references": []}
    flooded = replay.judge({"cells": [cell(0, honest), cell(1, flood), cell(2, honest)]},
                           replay.ReceiptBudget(cell_bytes=4 * size, notebook_bytes=100 * size))
    assert flooded["0"][0] == "pass" and flooded["2"][0] == "pass", flooded
    assert flooded["1"][0] == "not_replayable" and "per test cell" in flooded["1"][1] \
        and "refused unread" in flooded["1"][1], flooded["1"]
    many = replay.judge({"cells": [cell(i, honest) for i in range(4)]},
                        replay.ReceiptBudget(cell_bytes=4 * size, notebook_bytes=int(3.5 * size)))
    assert [many[str(i)][0] for i in range(4)] == ["pass", "pass", "pass", "not_replayable"], many
    assert "per notebook" in many["3"][1], many["3"]
    assert replay.Receipt.from_json(tiny_items) is None  # 6 MB of JSON, 3 million items: never parsed
    assert replay.judge({"cells": [cell(0, [tiny_items, *honest])]})["0"][0] == "pass"  # dropped, judged on the rest
    assert replay.judge({"cells": [cell(0, honest)]})["0"][0] == "pass"  # the default caps

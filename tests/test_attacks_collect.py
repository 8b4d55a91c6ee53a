"""Attacks on collecting: a student who writes into the exchange's inbound folder by hand.

Red team, 2026-12-07: nbgrader trusts the inbound folder's name and its ``timestamp.txt``, both
written by the student, so a submission made after the due date and dated weeks earlier was on time.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import socket
import time

import pytest
from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from nbgrader.exchange.abc.exchange import ExchangeError
from traitlets.config import Config

from bncourse.grading import exchange
from bncourse.grading.exchange import CLOCK_SLACK, LinkKeepingCollect, collected_times

ASSIGNMENT = "ps1"
STAMP = "%Y-%m-%d %H:%M:%S.%f UTC"


def _submit(inbound, student: str, claimed: dt.datetime) -> None:
    """What a student's own account can write into the inbound folder (no nbgrader submit needed)."""
    folder = inbound / f"{student}+{ASSIGNMENT}+{claimed.strftime(STAMP)}+abcd"
    folder.mkdir(parents=True)
    (folder / "ps1.ipynb").write_text("{}")
    (folder / "timestamp.txt").write_text(claimed.strftime(STAMP))


@pytest.fixture(scope="module")
def empty_gradebook(tmp_path_factory):
    """An empty gradebook's file, made once (its schema takes seconds), copied by each collect."""
    path = tmp_path_factory.mktemp("gradebook") / "gradebook.db"
    Gradebook(f"sqlite:///{path}", "bncourse").close()
    return path


def _collect(tmp_path, due: dt.datetime, gradebook, collect=LinkKeepingCollect):
    course, exchange = tmp_path / "course", tmp_path / "exchange"
    course.mkdir(exist_ok=True)
    shutil.copyfile(gradebook, course / "gradebook.db")
    c = Config()
    c.CourseDirectory.root = str(course)
    c.CourseDirectory.course_id = "bncourse"
    c.CourseDirectory.assignment_id = ASSIGNMENT
    c.CourseDirectory.db_url = f"sqlite:///{course / 'gradebook.db'}"
    c.Exchange.root = str(exchange)
    c.ExchangeCollect.check_owner = False
    with Gradebook(c.CourseDirectory.db_url, "bncourse") as gb:
        gb.update_or_create_assignment(ASSIGNMENT, duedate=due)
    coursedir = CourseDirectory(config=c)
    collect(coursedir=coursedir, config=c).start()
    return course


@pytest.fixture
def inbound(tmp_path):
    return tmp_path / "exchange" / "bncourse" / "inbound"


def test_is_a_backdated_submission_counted_when_its_files_were_written(tmp_path, inbound, empty_gradebook):
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    due = now - dt.timedelta(days=7)  # the due date passed a week ago
    _submit(inbound, "mallory", now - dt.timedelta(days=17))  # the folder name claims 10 days before it
    _submit(inbound, "alice", now - dt.timedelta(seconds=5))  # honest, late: claims what it is
    _submit(inbound, "trudy", now)  # an honest folder name, but a timestamp.txt a month old
    (next(inbound.glob("trudy+*")) / "timestamp.txt").write_text((now - dt.timedelta(days=30)).strftime(STAMP))
    os.utime(next(inbound.glob("mallory+*")) / "ps1.ipynb", (0, 0))  # an old mtime changes nothing
    course = _collect(tmp_path, due, empty_gradebook)

    def counted(student):
        text = (course / "submitted" / student / ASSIGNMENT / "timestamp.txt").read_text()
        return dt.datetime.strptime(text.strip(), STAMP)

    assert counted("mallory") > due and abs(counted("mallory") - now) < CLOCK_SLACK
    assert counted("trudy") > due and abs(counted("trudy") - now) < CLOCK_SLACK
    assert abs(counted("alice") - (now - dt.timedelta(seconds=5))) < dt.timedelta(milliseconds=1)  # untouched
    times = collected_times(course, ASSIGNMENT)
    assert set(times) == {"mallory", "trudy"}  # the discrepancies are kept for the class report
    assert times["mallory"]["claimed"].startswith((now - dt.timedelta(days=17)).strftime("%Y-%m-%d"))
    assert "mallory+ps1+" in times["mallory"]["inbound"]


def test_does_the_class_report_state_a_backdated_submission(tmp_path):
    from bncourse.grading.report import ClassReport, Lateness, write_class_report

    when = dt.datetime(2026, 12, 7, 5, 0)
    report = ClassReport(ASSIGNMENT, ["mallory"], {}, [], [
        Lateness("mallory", when, dt.datetime(2026, 12, 1), 6 * 86400 + 18000, 0.0, "2026-11-20 10:00:00.000000 UTC")])
    assert "claimed 2026-11-20 10:00:00.000000 UTC" in str(report)
    page = next(p for p in write_class_report(report, tmp_path) if p.suffix == ".html").read_text()
    assert "claimed 2026-11-20 10:00:00.000000 UTC, but its files were written later" in page


def _counted(course, student) -> dt.datetime:
    text = (course / "submitted" / student / ASSIGNMENT / "timestamp.txt").read_text()
    return dt.datetime.strptime(text.strip(), STAMP)


def test_is_a_notebook_rewritten_while_collect_runs_counted_late(tmp_path, inbound, monkeypatch, empty_gradebook):
    """Red team N9: collect scanned every folder's ctimes before copying any; a process the student left
    watching her folder (inotify) rewrote the notebook in the gap, and the late notebook counted on time.
    Here the rewrite happens once the copy of her folder has begun (the latest moment it can)."""
    monkeypatch.setattr(exchange, "CLOCK_SLACK", dt.timedelta(milliseconds=100))  # not 60 s of waiting
    claimed = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    _submit(inbound, "mallory", claimed)  # on time when the scan runs: written when it claims
    _submit(inbound, "alice", claimed)
    time.sleep(0.3)  # the due date passes
    due = claimed + dt.timedelta(milliseconds=150)
    late_notebook = '{"late": true}'

    class StudentRewritesDuringCopy(LinkKeepingCollect):
        def copy_regular_file(self, src, dst):
            if "/mallory+" in src and not getattr(self, "rewritten", False):
                self.rewritten = True
                (next(inbound.glob("mallory+*")) / "ps1.ipynb").write_text(late_notebook)
            super().copy_regular_file(src, dst)

    course = _collect(tmp_path, due, empty_gradebook, StudentRewritesDuringCopy)
    assert _counted(course, "mallory") > due  # counted late, whichever version was copied
    assert abs(_counted(course, "alice") - claimed) < dt.timedelta(milliseconds=1)  # untouched
    times = collected_times(course, ASSIGNMENT)
    assert set(times) == {"mallory"} and times["mallory"]["rewritten_during_collect"] is True


def test_does_a_folder_that_cannot_be_copied_leave_the_other_students_collected(tmp_path, inbound, caplog,
                                                                               empty_gradebook):
    """Red team N8: a named pipe in one's own inbound folder made copytree raise, and collect stopped
    (exit 1) before every later student. Special files are skipped, never opened; a folder that cannot
    be copied (a file unreadable when collect reads it) is reported, and the others are collected."""
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    for student in ("aaa_pipe", "bbb_unreadable", "zed_honest"):
        _submit(inbound, student, now)
    piped = next(inbound.glob("aaa_pipe+*"))
    os.mkfifo(piped / "notes")  # opening it for reading would block collect forever
    here = os.getcwd()
    try:
        os.chdir(piped)  # a socket's path is limited to 108 bytes
        with socket.socket(socket.AF_UNIX) as sock:
            sock.bind("sock")
    finally:
        os.chdir(here)
    unreadable = next(inbound.glob("bbb_unreadable+*")) / "data.bin"
    unreadable.write_bytes(b"x")
    unreadable.chmod(0)  # unreadable to a collect not run as root; for root it goes once the copy starts:

    class StudentRemovesAFileDuringCopy(LinkKeepingCollect):
        def copy_regular_file(self, src, dst):
            if src.startswith(str(unreadable.parent)):  # her folder has been listed: the file goes
                unreadable.unlink(missing_ok=True)
            super().copy_regular_file(src, dst)

    with caplog.at_level(logging.INFO), pytest.raises(ExchangeError, match=r"1 folder\(s\) NOT COLLECTED"):
        _collect(tmp_path, now + dt.timedelta(days=1), empty_gradebook, StudentRemovesAFileDuringCopy)
    course = tmp_path / "course"  # collect exits 1 (an unattended pipeline notices) after collecting the others
    submitted = course / "submitted"
    assert (submitted / "zed_honest" / ASSIGNMENT / "ps1.ipynb").read_text() == "{}"
    assert sorted(p.name for p in (submitted / "aaa_pipe" / ASSIGNMENT).iterdir()) == ["ps1.ipynb", "timestamp.txt"]
    assert not (submitted / "bbb_unreadable").exists()  # nothing partial to grade
    log = caplog.text
    assert f"SKIPPED in {piped}: " in log and "notes" in log and "sock" in log
    assert f"NOT COLLECTED {unreadable.parent}: data.bin: " in log
    times = collected_times(course, ASSIGNMENT)
    assert set(times) == {"aaa_pipe", "bbb_unreadable"}
    assert sorted(times["aaa_pipe"]["skipped"]) == ["notes", "sock"] and "claimed" not in times["aaa_pipe"]
    assert times["bbb_unreadable"]["not_collected"].startswith("data.bin: ")


def test_does_a_file_removed_while_owners_are_read_leave_the_folder_judged_by_what_remains(tmp_path, monkeypatch):
    """A student's process deleting a file between the listing and the owner check once made collect
    raise FileNotFoundError for every student: a vanished file is nobody's, the rest is judged."""
    folder = tmp_path / "mallory+ps1+x"
    folder.mkdir()
    (folder / "gone.txt").write_text("x")
    me = exchange._owner(str(folder))
    real_owner = exchange._owner

    def owner_after_removal(path):
        if path.endswith("gone.txt"):
            os.unlink(path)
        return real_owner(path)

    monkeypatch.setattr(exchange, "_owner", owner_after_removal)
    assert exchange.foreign_owner(folder, me) is None

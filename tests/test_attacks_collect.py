"""Attacks on collecting: a student who writes into the exchange's inbound folder by hand.

Red team, 2026-12-07: nbgrader trusts the inbound folder's name and its ``timestamp.txt``, both
written by the student, so a submission made after the due date and dated weeks earlier was on time.
"""

from __future__ import annotations

import datetime as dt
import os

import pytest
from nbgrader.api import Gradebook
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config

from bncourse.grading.exchange import CLOCK_SLACK, LinkKeepingCollect, collected_times

ASSIGNMENT = "ps1"
STAMP = "%Y-%m-%d %H:%M:%S.%f UTC"


def _submit(inbound, student: str, claimed: dt.datetime) -> None:
    """What a student's own account can write into the inbound folder (no nbgrader submit needed)."""
    folder = inbound / f"{student}+{ASSIGNMENT}+{claimed.strftime(STAMP)}+abcd"
    folder.mkdir(parents=True)
    (folder / "ps1.ipynb").write_text("{}")
    (folder / "timestamp.txt").write_text(claimed.strftime(STAMP))


def _collect(tmp_path, due: dt.datetime):
    course, exchange = tmp_path / "course", tmp_path / "exchange"
    course.mkdir(exist_ok=True)
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
    LinkKeepingCollect(coursedir=coursedir, config=c).start()
    return course


@pytest.fixture
def inbound(tmp_path):
    return tmp_path / "exchange" / "bncourse" / "inbound"


def test_is_a_backdated_submission_counted_when_its_files_were_written(tmp_path, inbound):
    now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
    due = now - dt.timedelta(days=7)  # the due date passed a week ago
    _submit(inbound, "mallory", now - dt.timedelta(days=17))  # the folder name claims 10 days before it
    _submit(inbound, "alice", now - dt.timedelta(seconds=5))  # honest, late: claims what it is
    _submit(inbound, "trudy", now)  # an honest folder name, but a timestamp.txt a month old
    (next(inbound.glob("trudy+*")) / "timestamp.txt").write_text((now - dt.timedelta(days=30)).strftime(STAMP))
    os.utime(next(inbound.glob("mallory+*")) / "ps1.ipynb", (0, 0))  # an old mtime changes nothing
    course = _collect(tmp_path, due)

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

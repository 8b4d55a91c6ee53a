"""The LMS round trip: a Canvas or Moodle submissions zip in, through nbgrader's ``zip_collect``; grades out as the LMS's CSV.

In (``nbgrader zip_collect``): the file names the LMS writes are matched by a regular expression
(``CANVAS_REGEX``, ``MOODLE_REGEX``, usable with nbgrader's own ``FileNameCollectorPlugin``; nbgrader
matches it against the extracted file's whole path, so each starts with ``(?:.*/)?`` and matches the
file's base name). ``LmsCollectorPlugin`` adds what a regex alone cannot:

- the LMS's id in the file name becomes the nbgrader student id through the roster
  (``roster.csv``, the file ``nbgrader db student import`` reads; its ``lms_user_id`` column);
- an LMS's re-submission suffix (``batchnorm_forward-1.ipynb``) is dropped, so the notebook has the
  name the gradebook expects;
- Canvas's ``late_`` marker is kept: Canvas's zip gives no submission time, so a late file is stamped
  one second after the assignment's due date (``nbgrader db assignment add A --duedate ...``), the
  earliest late time, and nbgrader's ``LateSubmissionPlugin`` applies its penalty; on-time files get
  no timestamp (nbgrader: not late).

Out: ``export_grades(course_dir, assignment, roster, lms="canvas")`` writes the Canvas gradebook
import CSV (``Student, ID, SIS User ID, SIS Login ID, Section, <assignment> (<id>)``) or Moodle's
grade import CSV (``First name, Last name, ID number, Email address, <assignment>``): one row per
roster student, sorted by name, a student who submitted nothing with 0, scores after nbgrader's late
penalty.

    # nbgrader_config.py
    c.ZipCollectApp.collector_plugin = "bncourse.grading.lms.LmsCollectorPlugin"
    c.LmsCollectorPlugin.lms = "canvas"            # or "moodle"
    c.LmsCollectorPlugin.roster = "roster.csv"     # relative to the course folder
"""

from __future__ import annotations

import csv
import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from nbgrader.plugins import FileNameCollectorPlugin
from traitlets import Unicode, default

__all__ = ["CANVAS_REGEX", "MOODLE_REGEX", "RosterEntry", "read_roster", "LmsCollectorPlugin", "export_grades",
           "main"]

# <name>_[late_]<user id>_<submission id>_<file>[-N].ipynb, e.g. doejane_late_1042_88123_batchnorm_forward-1.ipynb
CANVAS_REGEX = (r"^(?:.*/)?(?P<lms_name>[^_/]+)_(?P<late>late_)?(?P<student_id>\d+)_(?P<submission_id>\d+)_"
                r"(?P<file_id>[^/]+?)(?:-\d+)?\.ipynb$")
# <Full name>_<participant id>_assignsubmission_file_[/]<file>.ipynb (flat, or one folder per student)
MOODLE_REGEX = (r"^(?:.*/)?(?P<lms_name>[^_/]+)_(?P<student_id>\d+)_assignsubmission_file_/?"
                r"(?P<file_id>[^/]+?)(?:-\d+)?\.ipynb$")
REGEX = {"canvas": CANVAS_REGEX, "moodle": MOODLE_REGEX}
ROSTER_COLUMNS = ("id", "first_name", "last_name", "email", "lms_user_id", "sis_user_id", "sis_login_id", "section")


@dataclass(frozen=True)
class RosterEntry:
    """One student of ``roster.csv``: nbgrader's id and name, the LMS's ids and section."""

    id: str
    first_name: str = ""
    last_name: str = ""
    email: str = ""
    lms_user_id: str = ""
    sis_user_id: str = ""
    sis_login_id: str = ""
    section: str = ""


def read_roster(path) -> list[RosterEntry]:
    """The roster's students (columns ``ROSTER_COLUMNS``; only ``id`` is required), in file order.

    Raises ``ValueError`` naming the file and the row for a missing ``id`` column, an empty id or a
    duplicate id or LMS id.
    """
    path = Path(path)
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = [x.strip() for x in reader.fieldnames or []]
        if "id" not in fields:
            raise ValueError(f"{path}: the roster needs an 'id' column (the nbgrader student id); found "
                             f"{', '.join(fields) or 'no header'}")
        reader.fieldnames = fields
        out, ids, lms_ids = [], set(), set()
        for n, row in enumerate(reader, start=2):
            entry = RosterEntry(**{k: (row.get(k) or "").strip() for k in ROSTER_COLUMNS})
            if not entry.id:
                raise ValueError(f"{path}, row {n}: empty student id")
            if entry.id in ids or (entry.lms_user_id and entry.lms_user_id in lms_ids):
                raise ValueError(f"{path}, row {n}: student {entry.id!r} (LMS id {entry.lms_user_id!r}) is listed twice")
            ids.add(entry.id)
            lms_ids.add(entry.lms_user_id)
            out.append(entry)
    return out


class LmsCollectorPlugin(FileNameCollectorPlugin):
    """nbgrader's file-name collector for Canvas and Moodle downloads, with a roster and Canvas's late marker."""

    lms = Unicode("canvas", help="The LMS that named the files: 'canvas' or 'moodle'.").tag(config=True)
    roster = Unicode("", help="CSV with columns id and lms_user_id (relative paths: to the course folder); "
                              "empty: the LMS's id is the student id.").tag(config=True)

    @default("named_regexp")
    def _named_regexp_default(self):
        if self.lms not in REGEX:
            raise ValueError(f"LmsCollectorPlugin.lms must be one of {sorted(REGEX)}, got {self.lms!r}")
        return REGEX[self.lms]

    def _course_root(self) -> Path:
        coursedir = getattr(self.parent, "coursedir", None)
        return Path(coursedir.root if coursedir is not None else os.getcwd())

    def _students_by_lms_id(self) -> dict[str, str] | None:
        if not hasattr(self, "_lms_ids"):
            if not self.roster:
                self._lms_ids = None
            else:
                path = Path(self.roster)
                path = path if path.is_absolute() else self._course_root() / path
                self._lms_ids = {e.lms_user_id: e.id for e in read_roster(path) if e.lms_user_id}
        return self._lms_ids

    def _late_timestamp(self) -> str | None:
        """One second after the assignment's due date (None without one), as nbgrader parses it."""
        if not hasattr(self, "_late_stamp"):
            self._late_stamp = None
            coursedir = getattr(self.parent, "coursedir", None)
            if coursedir is not None:
                from nbgrader.api import Gradebook, MissingEntry

                try:
                    with Gradebook(coursedir.db_url) as gb:
                        due = gb.find_assignment(coursedir.assignment_id).duedate
                except MissingEntry:
                    due = None
                if due is not None:
                    self._late_stamp = (due + timedelta(seconds=1)).strftime("%Y-%m-%d %H:%M:%S UTC")
        return self._late_stamp

    def collect(self, submitted_file: str):
        info = super().collect(submitted_file)
        if not info:
            return info
        lms_id = info["student_id"]
        students = self._students_by_lms_id()
        if students is not None:
            if lms_id not in students:
                self.log.warning("%s: LMS id %s is not in the roster %s (column lms_user_id); skipped",
                                 os.path.basename(submitted_file), lms_id, self.roster)
                return None
            info["student_id"] = students[lms_id]
        out = {"student_id": info["student_id"], "file_id": info["file_id"]}
        if info.get("late"):
            stamp = self._late_timestamp()
            if stamp is None:
                self.log.warning("%s is marked late by the LMS, but the assignment has no due date in the gradebook "
                                 "(`nbgrader db assignment add ASSIGNMENT --duedate ...`): no late penalty",
                                 os.path.basename(submitted_file))
            else:
                out["timestamp"] = stamp
        return out


def _canvas_rows(course_dir: Path, assignment: str, roster: list[RosterEntry], scores: dict, column: str):
    yield ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", column]
    yield ["    Points Possible", "", "", "", "", f"{scores['__max__']:g}"]
    for e in sorted(roster, key=lambda e: (e.last_name.lower(), e.first_name.lower(), e.id)):
        name = f"{e.last_name}, {e.first_name}" if e.last_name and e.first_name else (e.last_name or e.first_name or e.id)
        yield [name, e.lms_user_id, e.sis_user_id, e.sis_login_id, e.section, f"{scores.get(e.id, 0.0):g}"]


def _moodle_rows(course_dir: Path, assignment: str, roster: list[RosterEntry], scores: dict, column: str):
    yield ["First name", "Last name", "ID number", "Email address", column]
    for e in sorted(roster, key=lambda e: (e.last_name.lower(), e.first_name.lower(), e.id)):
        yield [e.first_name, e.last_name, e.sis_user_id or e.id, e.email, f"{scores.get(e.id, 0.0):g}"]


def final_scores(course_dir, assignment: str) -> dict:
    """student -> score after nbgrader's late penalty (as ``nbgrader export``), and ``"__max__"``."""
    from nbgrader.api import Gradebook, MissingEntry

    from bncourse.grading.gradebook import check_gradebook
    from bncourse.grading.pipeline import db_url_of

    course_dir = Path(course_dir).resolve()
    db_url = db_url_of(course_dir)
    check_gradebook(db_url, course_dir=course_dir)
    with Gradebook(db_url) as gb:
        try:
            source = gb.find_assignment(assignment)
        except MissingEntry:
            raise ValueError(f"assignment {assignment!r} is not in the gradebook of {course_dir}") from None
        out = {"__max__": float(source.max_score)}
        for sub in source.submissions:
            out[sub.student.id] = max(0.0, float(sub.score) - float(sub.late_submission_penalty or 0.0))
    return out


def export_grades(course_dir, assignment: str, roster, lms: str = "canvas", to=None,
                  column: str | None = None) -> Path:
    """Write the LMS's grade import CSV for ``assignment``; return its path.

    Args:
        roster: the roster CSV (``read_roster``); every row gets a line, graded or not.
        lms: ``"canvas"`` or ``"moodle"``.
        to: the file (default: ``grading_reports/<assignment>-<lms>.csv`` in the course).
        column: the assignment column's header; Canvas matches it by ``name (id)``, so give the
            Canvas assignment id as ``"02 Batch norm forward (12345)"`` (default: ``<assignment>``).
    Raises ``ValueError`` for an unknown LMS, a roster problem, or a graded student missing from the roster.
    """
    if lms not in REGEX:
        raise ValueError(f"lms must be one of {sorted(REGEX)}, got {lms!r}")
    course_dir = Path(course_dir).resolve()
    entries = read_roster(roster)
    scores = final_scores(course_dir, assignment)
    unknown = sorted(set(scores) - {"__max__"} - {e.id for e in entries})
    if unknown:
        raise ValueError(f"graded student(s) not in the roster {roster}: {', '.join(unknown)}; add them "
                         f"(the LMS would not receive their grades)")
    rows = (_canvas_rows if lms == "canvas" else _moodle_rows)(course_dir, assignment, entries, scores,
                                                                 column or assignment)
    path = Path(to) if to else course_dir / "grading_reports" / f"{assignment}-{lms}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def main(assignment: str, course=".", roster="roster.csv", lms: str = "canvas", to=None, column=None) -> int:
    """CLI glue for ``bncourse export ASSIGNMENT --lms canvas|moodle --roster roster.csv``."""
    roster_path = Path(roster)
    if not roster_path.is_absolute() and not roster_path.exists():
        roster_path = Path(course) / roster
    try:
        path = export_grades(course, assignment, roster_path, lms=lms, to=to, column=column)
    except (ValueError, FileNotFoundError) as exc:
        print(f"bncourse export: {exc}", file=sys.stderr)
        return 2
    print(f"{lms} grade import file written: {path}")
    return 0

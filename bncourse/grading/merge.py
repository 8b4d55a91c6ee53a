"""One worker's results into the course: its private gradebook's rows for one student, merged into
the course's gradebook in one transaction (``merge_student``), and its autograded files installed
whole (``install_autograded``). Only the grading process calls these: it is the only writer."""

from __future__ import annotations

import shutil
import sqlite3
from contextlib import contextmanager
from pathlib import Path

__all__ = ["copy_sqlite", "install_autograded", "merge_student"]


def copy_sqlite(src_url: str, dest: Path) -> None:
    src = sqlite3.connect(src_url[len("sqlite:///"):])
    dst = sqlite3.connect(str(dest))
    with dst:
        src.backup(dst)
    src.close()
    dst.close()


def merge_student(gb, src_gb, assignment: str, student: str, ok: bool) -> None:
    """Copy one student's autograde results from a worker's gradebook into the main one, in ONE transaction.

    Only what autograde produces is copied (auto scores, auto comments, flags, the timestamp); what a
    grader saved in the formgrader meanwhile (manual score, extra credit, manual comment) is kept,
    as nbgrader's own autograde keeps it, and a kept manual score marks the cell for review again.
    The student's grade rows are locked while they are merged (``SELECT ... FOR UPDATE`` on
    servers that have it), so a concurrent formgrader save is neither lost nor overwritten.
    """
    from nbgrader.api import MissingEntry

    try:
        stu = src_gb.find_student(student)
        fields = {k: getattr(stu, k) for k in ("first_name", "last_name", "email", "lms_user_id")}
    except MissingEntry:
        fields = {}
    try:
        src = src_gb.find_submission(assignment, student)
    except MissingEntry:
        src = None
    with _one_transaction(gb):
        gb.update_or_create_student(student, **{k: v for k, v in fields.items() if v is not None})
        kwargs = {"timestamp": src.timestamp, "extension": src.extension} if src is not None else {}
        sub = gb.update_or_create_submission(assignment, student, **kwargs)
        _lock_grades(gb, sub)
        src_nbs = {nb.name: nb for nb in src.notebooks} if (src is not None and ok) else {}
        for nb in sub.notebooks:
            src_nb = src_nbs.get(nb.name)
            nb.flagged = src_nb.flagged if src_nb else False
            nb.late_submission_penalty = src_nb.late_submission_penalty if src_nb else None
            src_grades = {g.name: g for g in src_nb.grades} if src_nb else {}
            for g in nb.grades:
                s = src_grades.get(g.name)
                if s is None:  # not graded: 0 points, nothing left for a human to grade automatically
                    g.auto_score, g.needs_manual_grade = 0.0, g.manual_score is not None
                else:
                    g.auto_score = s.auto_score
                    g.needs_manual_grade = bool(s.needs_manual_grade) or g.manual_score is not None
            src_comments = {c.name: c for c in src_nb.comments} if src_nb else {}
            for c in nb.comments:
                s = src_comments.get(c.name)
                c.auto_comment = s.auto_comment if s else None


@contextmanager
def _one_transaction(gb):
    """nbgrader's gradebook helpers commit after each row; inside this block they only flush, and
    the block commits once at its end (or rolls everything back), so a process killed mid-merge
    leaves the student's previous rows, never half of the new ones."""
    session = gb.db()
    session.commit = session.flush  # instance attribute: shadows Session.commit for this block
    try:
        yield
    except BaseException:
        del session.commit
        session.rollback()
        raise
    del session.commit
    session.commit()


def _lock_grades(gb, sub) -> None:
    """Lock (and re-read) the submission's grade and comment rows until the merge commits."""
    from nbgrader.api import Comment, Grade, SubmittedNotebook

    for model in (Grade, Comment):
        (gb.db.query(model).join(SubmittedNotebook, model.notebook_id == SubmittedNotebook.id)
         .filter(SubmittedNotebook.assignment_id == sub.id).order_by(model.id)
         .with_for_update().populate_existing().all())


def install_autograded(dest: Path, files: dict[str, bytes] | None) -> None:
    """Replace ``autograded/<student>/<assignment>`` by the worker's files (none: removed, as nbgrader does)."""
    if dest.exists():
        shutil.rmtree(dest)
    if not files:
        return
    incoming = dest.parent / f".{dest.name}.incoming"
    if incoming.exists():
        shutil.rmtree(incoming)
    for rel, data in files.items():
        (incoming / rel).parent.mkdir(parents=True, exist_ok=True)
        (incoming / rel).write_bytes(data)
    incoming.rename(dest)

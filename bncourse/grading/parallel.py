"""Parallel autograding: nbgrader's own autograde in N worker processes, one gradebook at the end.

``grade(assignment, course_dir, jobs=N)`` autogrades every submission with N worker processes,
each running nbgrader's own autograde for one student at a time against a private copy of the
gradebook; the main process then merges each student's rows into the ONE gradebook, which
``nbgrader export`` and the formgrader read as usual. Workers read a staged copy of the
submissions, so submitted files are never touched (their hashes are checked afterwards). A
submission nbgrader cannot grade (kernel crash, corrupted JSON) is recorded with 0 points and a
reason; the others are graded.

    report = grade("01_why_normalize", "notebooks", jobs=2)
    print(report)                      # one row per student: score, status, reason
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from bncourse.grading.gradebook import check_gradebook, masked
from bncourse.grading.pipeline import VERIFY_ENAME, load_config, db_url_of

REPORT_DIR = "grading_reports"

@dataclass
class StudentResult:
    """How one student's submission went through grading."""

    student: str
    status: str  # "graded" or "failed"
    score: float = 0.0
    max_score: float = 0.0
    reason: str = ""
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class GradeReport:
    """The outcome of ``grade``: one row per student, printable as a table."""

    assignment: str
    jobs: int
    students: list[StudentResult]
    seconds: float
    modified_submissions: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[StudentResult]:
        return [s for s in self.students if s.status != "graded"]

    def scores(self) -> dict[str, float]:
        return {s.student: s.score for s in self.students}

    def __str__(self) -> str:
        w = max([7] + [len(s.student) for s in self.students])
        lines = [f"{self.assignment}: {len(self.students)} submissions graded with {self.jobs} worker(s) "
                 f"in {self.seconds:.1f} s", f"{'student':<{w}}  {'score':>11}  status  reason / notes"]
        for s in self.students:
            extra = s.reason or "; ".join(s.notes)
            lines.append(f"{s.student:<{w}}  {s.score:>5.1f} / {s.max_score:<3g}  {s.status:<6}  {extra}")
        if self.failed:
            lines.append(f"{len(self.failed)} submission(s) could not be graded; they are recorded with 0 points.")
        if self.modified_submissions:
            lines.append("WARNING: submitted files changed during grading: " + ", ".join(self.modified_submissions))
        return "\n".join(lines)


def _tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _precheck(submission: Path) -> str:
    """A reason nbgrader will fail on this submission before running it ('' if none seen)."""
    import nbformat

    for nb in sorted(submission.glob("*.ipynb")):
        try:
            nbformat.read(str(nb), as_version=4)
        except Exception as exc:  # noqa: BLE001 - any unreadable notebook is reported
            return f"{nb.name} is not a readable notebook (corrupted JSON?): {type(exc).__name__}: {str(exc)[:200]}"
    return ""


def _reason_from_log(text: str) -> str:
    if "DeadKernelError" in text or "Kernel died" in text or "kernel died" in text:
        return "the kernel died while running the notebook (os._exit, a segfault or out of memory)"
    if "UnresponsiveKernelError" in text or "became unresponsive" in text:
        return "the kernel stopped responding and could not be interrupted after the time limit"
    if "NotJSONError" in text or "does not appear to be JSON" in text or "JSONDecodeError" in text:
        return "a notebook is not valid JSON (corrupted file)"
    errors = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("[INFO]")]
    return (errors[-1][:300] if errors else "nbgrader could not grade this submission")


def _copy_sqlite(src_url: str, dest: Path) -> None:
    src = sqlite3.connect(src_url[len("sqlite:///"):])
    dst = sqlite3.connect(str(dest))
    with dst:
        src.backup(dst)
    src.close()
    dst.close()


def _worker_task(task: dict) -> dict:
    """One student's nbgrader autograde against a private gradebook (runs in a worker process)."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    start = time.perf_counter()
    db_file = Path(task["db_file"])
    if task["template_db"]:
        shutil.copyfile(task["template_db"], db_file)
    cfg = load_config(
        task["course_dir"],
        **{"CourseDirectory.db_url": f"sqlite:///{db_file}",
           "CourseDirectory.submitted_directory": task["submitted_dir"]},
    )
    cfg.GradingExecute.kernel_env = task["kernel_env"]
    api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
    result = api.autograde(task["assignment"], task["student"], force=True, create=True)
    return {
        "student": task["student"], "success": bool(result.get("success")),
        "log": str(result.get("log", ""))[-20000:], "error": str(result.get("error", ""))[-5000:],
        "db_file": str(db_file), "seconds": time.perf_counter() - start,
    }


def _merge(gb, src_gb, assignment: str, student: str, ok: bool) -> None:
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


def _cell_notes(autograded: Path) -> list[str]:
    """Test cells that failed for a reason worth a line: timeouts and re-run verdicts."""
    import nbformat

    notes = []
    for path in sorted(autograded.glob("*.ipynb")):
        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception:  # noqa: BLE001
            continue
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            gid = cell.metadata.get("nbgrader", {}).get("grade_id", "?")
            for o in cell.get("outputs", []):
                if o.get("output_type") == "error" and o.get("ename") in ("CellTimeoutError", VERIFY_ENAME):
                    what = "timed out" if o["ename"] == "CellTimeoutError" else "rejected by the grader's re-run"
                    notes.append(f"{gid}: {what}")
    return notes


def _pool_context():
    """Worker processes forked from a clean server that has nbgrader imported once (POSIX).

    Not plain fork: the calling process may hold kernel sockets or torch threads. Not spawn
    either: importing nbgrader again for every pool costs seconds per assignment.
    """
    if "forkserver" in mp.get_all_start_methods():
        ctx = mp.get_context("forkserver")
        try:
            ctx.set_forkserver_preload(["bncourse.grading.parallel"])
        except Exception:  # noqa: BLE001 - the server is already running: keep it
            pass
        return ctx
    return mp.get_context("spawn")


def find_submissions(course_dir: str | os.PathLike, assignment: str) -> list[str]:
    root = Path(course_dir).resolve() / "submitted"
    return sorted(p.parent.name for p in root.glob(f"*/{assignment}") if p.is_dir())


def grade(
    assignment: str,
    course_dir: str | os.PathLike = "notebooks",
    jobs: int = 1,
    students: Iterable[str] | None = None,
    fast: bool = True,
    write_report: bool = True,
) -> GradeReport:
    """Autograde every submission of ``assignment`` with ``jobs`` worker processes.

    Each worker runs nbgrader's own autograde for one student at a time against a private copy of
    the gradebook; the results are merged into the course's gradebook (its ``db_url``), so
    ``nbgrader export`` and the formgrader see one consistent gradebook. The assignment must have
    been generated (``nbgrader generate_assignment``) into that gradebook first.

    Args:
        students: grade only these (default: every ``submitted/<student>/<assignment>``).
        fast: run the kernels with ``BNCOURSE_FAST=1`` (the checks do not depend on it).
        write_report: also write ``grading_reports/<assignment>.csv`` in the course folder.
    """
    from nbgrader.api import Gradebook, MissingEntry

    start = time.perf_counter()
    _alembic_on_path()
    course_dir = Path(course_dir).resolve()
    db_url = db_url_of(course_dir)
    check_gradebook(db_url, course_dir=course_dir)  # reachable, nbgrader's tables: never a new SQLite file
    with Gradebook(db_url) as gb:
        try:
            gb.find_assignment(assignment)
        except MissingEntry:
            raise ValueError(
                f"assignment {assignment!r} is not in the gradebook {masked(db_url)}; run "
                f"`nbgrader generate_assignment {assignment}` in {course_dir} first") from None
    wanted = set(students) if students is not None else None
    names = [s for s in find_submissions(course_dir, assignment) if wanted is None or s in wanted]
    jobs = max(1, min(int(jobs), len(names) or 1))
    kernel_env = {"BNCOURSE_FAST": "1"} if fast else {}
    if jobs > 1:  # N kernels at once: each gets its share of the cores, not a full BLAS/torch pool
        threads = str(max(1, (os.cpu_count() or 1) // jobs))
        kernel_env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, OPENBLAS_NUM_THREADS=threads)

    with tempfile.TemporaryDirectory(prefix="bncourse-grade-") as tmp:
        tmp = Path(tmp)
        staged = tmp / "submitted"
        before, prechecks = {}, {}
        for s in names:
            src = course_dir / "submitted" / s / assignment
            before[s] = _tree_hashes(src)
            prechecks[s] = _precheck(src)
            shutil.copytree(src, staged / s / assignment)
        template = ""
        if db_url.startswith("sqlite:///"):
            template = str(tmp / "template.db")
            _copy_sqlite(db_url, Path(template))
        else:  # e.g. PostgreSQL: each worker's private gradebook is generated from the source
            template = str(tmp / "template.db")
            _generate_into(course_dir, assignment, f"sqlite:///{template}", tmp / "release")
        tasks = [
            {"student": s, "assignment": assignment, "course_dir": str(course_dir), "submitted_dir": str(staged),
             "db_file": str(tmp / f"worker-{i}.db"), "template_db": template, "kernel_env": kernel_env}
            for i, s in enumerate(names)
        ]
        if jobs == 1:
            outcomes = [_worker_task(t) for t in tasks]
        else:
            with _pool_context().Pool(jobs) as pool:
                outcomes = pool.map(_worker_task, tasks, chunksize=1)

        results = []
        with Gradebook(db_url) as gb:
            for out in outcomes:
                s = out["student"]
                ok = out["success"]
                with Gradebook(f"sqlite:///{out['db_file']}") as src_gb, warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # SQLAlchemy's autoflush chatter inside nbgrader's API
                    _merge(gb, src_gb, assignment, s, ok)
                sub = gb.find_submission(assignment, s)
                reason = "" if ok else (prechecks[s] or _reason_from_log(out["log"] + "\n" + out["error"]))
                notes = _cell_notes(course_dir / "autograded" / s / assignment) if ok else []
                results.append(StudentResult(s, "graded" if ok else "failed", float(sub.score),
                                             float(sub.max_score), reason, notes, out["seconds"]))
    modified = [s for s in names if _tree_hashes(course_dir / "submitted" / s / assignment) != before[s]]
    report = GradeReport(assignment, jobs, results, time.perf_counter() - start, modified)
    if write_report:
        _write_csv(course_dir / REPORT_DIR / f"{assignment}.csv", report)
        from bncourse.grading.similarity import write_similarity_report  # near-copies, for review

        write_similarity_report(course_dir, assignment)
    return report


def _alembic_on_path() -> None:
    """nbgrader runs ``alembic`` from PATH: make this interpreter's scripts folder visible."""
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")


def _generate_into(course_dir: Path, assignment: str, db_url: str, release: Path) -> None:
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    cfg = load_config(course_dir, **{"CourseDirectory.db_url": db_url,
                                     "CourseDirectory.release_directory": str(release)})
    api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
    res = api.generate_assignment(assignment, force=True, create=True)
    if not res.get("success"):
        raise RuntimeError(f"could not prepare a worker gradebook: {res.get('error')}")


def _write_csv(path: Path, report: GradeReport) -> None:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "score", "max_score", "status", "reason", "notes"])
        for s in report.students:
            w.writerow([s.student, s.score, s.max_score, s.status, s.reason, "; ".join(s.notes)])


def main(assignment: str, course: str | os.PathLike = ".", jobs: int = 1, fast: bool = True) -> int:
    """CLI glue for ``bncourse grade ASSIGNMENT [--jobs N] [--course DIR]``: grade, print the table.

    Exit status 0 when grading ran (crashed submissions are recorded with 0 and listed), 1 if a
    submitted file changed, 2 when the assignment is not in the gradebook.
    """
    try:
        report = grade(assignment, course, jobs=jobs, fast=fast)
    except ValueError as exc:
        print(f"bncourse grade: {exc}", file=sys.stderr)
        return 2
    print(report)
    print(f"report written to {Path(course).resolve() / REPORT_DIR / (assignment + '.csv')}")
    return 0 if not report.modified_submissions else 1

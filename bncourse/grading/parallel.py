"""Parallel autograding: nbgrader's own autograde in N workers, one gradebook at the end.

``grade(assignment, course_dir, jobs=N)`` autogrades every submission with N worker processes on
this machine; ``grade(..., scheduler="tcp://host:8786")`` sends them to the workers of a running
dask.distributed scheduler instead (``bncourse.grading.cluster``). Either way each submission is
one task, ``submission.grade_submission``: nbgrader's own autograde for one student, in a private folder on
the worker (a copy of the submission, a private copy of the gradebook), returning the private
gradebook and the autograded files as data. The main process alone writes: it merges each
student's rows into the ONE gradebook, which ``nbgrader export`` and the formgrader read as usual,
and installs the autograded notebooks. Submitted files are never touched (their hashes are
checked afterwards). A submission nbgrader cannot grade (kernel crash, corrupted JSON, a worker
dying on every try) is recorded with 0 points and a reason; the others are graded.

Kernels run at the grading size (``RunSize.GRADING``, see ``bncourse.runtime``) unless
``size="fast"`` or ``"full"`` is asked for.

    report = grade("01_why_normalize", "notebooks", jobs=2, progress=True)
    print(report)                      # one row per student, then one row per worker
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import sqlite3
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from bncourse.grading.gradebook import check_gradebook, masked
from bncourse.grading.pipeline import SOURCE_FINDINGS, VERIFY_ENAME, load_config, db_url_of
from bncourse.grading.rejudging import RejudgingServer, check_modules
from bncourse.grading.sandbox import UNSANDBOXED_NOTE, SandboxUnavailable
from bncourse.grading.sandbox import check as check_sandbox
from bncourse.grading.submission import GradingTask, Outcome, alembic_on_path
from bncourse.runtime import RunSize

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
    worker: str = ""  # who graded it: "host pid N" or a dask worker's address
    attempts: int = 1  # more than 1: a worker died while grading it and it was retried


@dataclass
class WorkerSummary:
    """One worker's share: submissions graded, failed (with reasons), seconds spent grading."""

    worker: str
    graded: int
    failed: dict[str, str]  # student -> reason
    seconds: float


@dataclass
class GradeReport:
    """The outcome of ``grade``: one row per student, printable as a table."""

    assignment: str
    jobs: int
    students: list[StudentResult]
    seconds: float
    modified_submissions: list[str] = field(default_factory=list)
    engine: str = ""  # "2 worker process(es)" or "dask scheduler tcp://..."
    hidden_seed: int | None = None  # the run's hidden-case seed (a regrade with it reproduces the cases)
    sandboxed: bool = True  # False: the instructor asked for --unsandboxed, and every line says so

    @property
    def failed(self) -> list[StudentResult]:
        return [s for s in self.students if s.status != "graded"]

    def scores(self) -> dict[str, float]:
        return {s.student: s.score for s in self.students}

    def workers(self) -> list[WorkerSummary]:
        """Per worker, in order of appearance (a submission no worker finished: worker "(none)")."""
        out: dict[str, WorkerSummary] = {}
        for s in self.students:
            w = out.setdefault(s.worker or "(none)", WorkerSummary(s.worker or "(none)", 0, {}, 0.0))
            w.seconds += s.seconds
            if s.status == "graded":
                w.graded += 1
            else:
                w.failed[s.student] = s.reason
        return list(out.values())

    def __str__(self) -> str:
        w = max([7] + [len(s.student) for s in self.students])
        engine = self.engine or f"{self.jobs} worker(s)"
        seed = f", hidden-case seed {self.hidden_seed}" if self.hidden_seed is not None else ""
        mark = "" if self.sandboxed else "UNSANDBOXED  "
        lines = [f"{mark}{self.assignment}: {len(self.students)} submissions graded with {engine} "
                 f"in {self.seconds:.1f} s{seed}", f"{mark}{'student':<{w}}  {'score':>11}  status  reason / notes"]
        for s in self.students:
            extra = s.reason or "; ".join(s.notes)
            if s.attempts > 1 and s.status == "graded":
                extra = "; ".join(x for x in (f"retried: {s.attempts} tries (a worker died)", extra) if x)
            lines.append(f"{mark}{s.student:<{w}}  {s.score:>5.1f} / {s.max_score:<3g}  {s.status:<6}  {extra}")
        if not self.sandboxed:
            lines.append(UNSANDBOXED_NOTE)
        if self.failed:
            lines.append(f"{len(self.failed)} submission(s) could not be graded; they are recorded with 0 points.")
        summary = self.workers()
        ww = max([6] + [len(x.worker) for x in summary])
        lines += ["", f"{'worker':<{ww}}  graded  failed  seconds  failed submissions"]
        for x in summary:
            lines.append(f"{x.worker:<{ww}}  {x.graded:>6}  {len(x.failed):>6}  {x.seconds:7.1f}  {', '.join(x.failed)}")
        if self.modified_submissions:
            lines.append("WARNING: submitted files changed during grading: " + ", ".join(self.modified_submissions))
        return "\n".join(lines)


def _tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def precheck_submission(submission: Path, expected: Iterable[str] = ()) -> str:
    """A reason nbgrader will fail on this submission before running it ('' if none seen).

    ``expected``: the assignment's notebook names (without ``.ipynb``); a missing or misnamed one is
    named with what was found instead (an LMS's ``batchnorm_forward-1.ipynb``, a learner's rename).
    """
    import nbformat

    found = sorted(p.name for p in submission.glob("*.ipynb"))
    missing = [f"{name}.ipynb" for name in expected if f"{name}.ipynb" not in found]
    if missing:
        others = [n for n in found if n[:-len(".ipynb")] not in set(expected)]
        what = ", ".join(others) if others else "no notebook at all"
        return (f"expected {' and '.join(missing)}, found {what} in {submission}: rename the file to the expected "
                f"name (or collect again) and grade again")
    for nb in sorted(submission.glob("*.ipynb")):
        try:
            nbformat.read(str(nb), as_version=4)
        except Exception as exc:  # noqa: BLE001 - any unreadable notebook is reported
            return f"{nb.name} is not a readable notebook (corrupted JSON?): {type(exc).__name__}: {str(exc)[:200]}"
    return _instructor_material(submission, {f"{name}.ipynb" for name in expected})


# What only the instructor's source notebooks hold (the student versions have them stripped).
INSTRUCTOR_MARKERS = (b"### BEGIN SOLUTION", b"### BEGIN HIDDEN TESTS")


def _instructor_material(submission: Path, notebooks: set[str] = frozenset()) -> str:
    """A reason if the submission holds a link (the course's collect keeps a student's links as links,
    ``bncourse.grading.exchange``; nbgrader's own followed them and copied the instructor's source:
    red team 2026-12-07) or a file beside its notebooks that holds the instructor's solution markers,
    else ''. Such a submission is not graded: the instructor reads it."""
    for p in sorted(submission.rglob("*")):
        if p.is_symlink():
            return f"{p.relative_to(submission)} is a symbolic link: a submission holds files, not links"
        if p.is_file() and p.name not in notebooks and p.stat().st_size <= 64 * 1024**2:
            data = p.read_bytes()
            marker = next((m for m in INSTRUCTOR_MARKERS if m in data), None)
            if marker:
                return (f"{p.relative_to(submission)} holds the instructor's solution markers ({marker.decode()}): "
                        f"the course's source notebooks reached the submission (a link followed by collect?); "
                        f"not graded, for the instructor to review")
    return ""


def reason_from_log(text: str) -> str:
    if "DeadKernelError" in text or "Kernel died" in text or "kernel died" in text:
        return "the kernel died while running the notebook (os._exit, a segfault or out of memory)"
    if "UnresponsiveKernelError" in text or "became unresponsive" in text:
        return "the kernel stopped responding and could not be interrupted after the time limit"
    if "Timeout waiting for IOPub output" in text and "Timeout waiting for execute reply" not in text:
        return ("a cell's outputs had not all arrived 15 s after it finished (GradingExecute.iopub_timeout); "
                "the grading machine may be overloaded: grade it again")
    if "CellTimeoutError" in text or "Timeout waiting for" in text:
        return ("a cell ran past the time limit and the kernel did not stop when interrupted "
                "(BNCOURSE_CELL_TIMEOUT sets the limit)")
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
        findings = nb.metadata.get(SOURCE_FINDINGS) or {}
        for gid, reached in (findings.items() if isinstance(findings, dict) else []):
            if isinstance(reached, list):  # for review, never a score
                notes.append(f"{gid}: source report: {', '.join(map(str, reached[:4]))}")
    return notes


def find_submissions(course_dir: str | os.PathLike, assignment: str) -> list[str]:
    root = Path(course_dir).resolve() / "submitted"
    return sorted(p.parent.name for p in root.glob(f"*/{assignment}") if p.is_dir())


def _run_pool(tasks: list[GradingTask], jobs: int, tries: int = 3) -> Iterator[Outcome]:
    """Outcomes of ``grade_submission`` over ``tasks`` in ``jobs`` local worker processes, as they finish
    (``bncourse.grading.workers``: a worker that dies costs its submission a retry, up to ``tries``)."""
    from bncourse.grading.workers import run_local

    return run_local(tasks, jobs, tries)


def _install_autograded(dest: Path, files: dict[str, bytes] | None) -> None:
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


def _record(gb, course_dir: Path, assignment: str, out: Outcome, precheck: str, template: Path, tmp: Path) -> StudentResult:
    """Merge one outcome into the gradebook and the autograded folder; a failure is recorded with 0."""
    s, ok = out.student, out.success and not precheck  # a missing notebook is never "graded"
    src = template  # no private gradebook (the task never finished): the merge records 0 points
    if out.gradebook:
        src = tmp / f"result-{s}.db"
        src.write_bytes(out.gradebook)
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{src}") as src_gb, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy's autoflush chatter inside nbgrader's API
        _merge(gb, src_gb, assignment, s, ok)
    if src != template:
        src.unlink()
    _install_autograded(course_dir / "autograded" / s / assignment, out.autograded if ok else None)
    sub = gb.find_submission(assignment, s)
    reason = "" if ok else (precheck or out.reason or reason_from_log(out.log + "\n" + out.error))
    notes = _cell_notes(course_dir / "autograded" / s / assignment) if ok else []
    return StudentResult(s, "graded" if ok else "failed", float(sub.score), float(sub.max_score), reason, notes,
                         out.seconds, out.worker, out.attempts)


def grade(
    assignment: str,
    course_dir: str | os.PathLike = "notebooks",
    jobs: int = 1,
    students: Iterable[str] | None = None,
    write_report: bool = True,
    *,
    size: RunSize | str = RunSize.GRADING,
    scheduler: str | None = None,
    progress: bool = False,
    sandbox: bool = True,
    hidden_seed: int | None = None,
) -> GradeReport:
    """Autograde every submission of ``assignment`` with ``jobs`` worker processes, or on a dask cluster.

    Each worker runs nbgrader's own autograde for one student at a time against a private copy of
    the gradebook; the results are merged into the course's gradebook (its ``db_url``), so
    ``nbgrader export`` and the formgrader see one consistent gradebook. The assignment must have
    been generated (``nbgrader generate_assignment``) into that gradebook first.

    Args:
        students: grade only these (default: every ``submitted/<student>/<assignment>``).
        size: the kernels' size, a ``bncourse.runtime.RunSize`` or its value: ``"grading"`` (default;
            experiments that earn no points may shrink), ``"fast"`` (CI's size) or ``"full"`` (a
            learner's run). The kernels are told it by their environment (``size.kernel_env()``).
        scheduler: address of a running dask.distributed scheduler (``tcp://host:8786``): grade on
            its workers instead of ``jobs`` local processes (see ``bncourse.grading.cluster``).
        progress: show a progress bar over submissions (tqdm, on stderr).
        write_report: also write ``grading_reports/<assignment>.csv`` in the course folder.
        sandbox: run every kernel in the sandbox (``bncourse.grading.sandbox``); ``False`` grades
            unsandboxed, which the report states on every line. Without a working sandbox,
            ``SandboxUnavailable`` says how to get one.
        hidden_seed: the hidden cases' seed (default: drawn for this run; the report prints it, so
            a regrade can reproduce the run).
    """
    from nbgrader.api import Gradebook, MissingEntry
    from tqdm.auto import tqdm

    try:
        size = RunSize(size)
    except ValueError:
        raise ValueError(f"size must be one of {[s.value for s in RunSize]}, got {size!r}") from None
    start = time.perf_counter()
    if sandbox:
        check_sandbox()
    seed = secrets.randbits(62) if hidden_seed is None else int(hidden_seed)
    alembic_on_path()
    course_dir = Path(course_dir).resolve()
    db_url = db_url_of(course_dir)
    check_gradebook(db_url, course_dir=course_dir)  # reachable, nbgrader's tables: never a new SQLite file
    with Gradebook(db_url) as gb:
        try:
            notebooks = gb.find_assignment(assignment).notebooks
            expected = [nb.name for nb in notebooks]
            modules = check_modules([c.source for nb in notebooks for c in nb.source_cells])
        except MissingEntry:
            raise ValueError(
                f"assignment {assignment!r} is not in the gradebook {masked(db_url)}; run "
                f"`nbgrader generate_assignment {assignment}` in {course_dir} first") from None
    wanted = set(students) if students is not None else None
    names = [s for s in find_submissions(course_dir, assignment) if wanted is None or s in wanted]
    if not names:  # an empty collect is an error, not "0 submissions graded"
        raise ValueError(f"no submissions of {assignment} to grade: {course_dir / 'submitted'} holds no "
                         f"<student>/{assignment}/ folder{' for ' + ', '.join(sorted(wanted)) if wanted else ''}; "
                         f"collect them first (`nbgrader collect {assignment}` or `nbgrader zip_collect {assignment}`)")
    jobs = max(1, min(int(jobs), len(names) or 1))

    with tempfile.TemporaryDirectory(prefix="bncourse-grade-") as tmp:
        tmp = Path(tmp)
        before = {s: _tree_hashes(course_dir / "submitted" / s / assignment) for s in names}
        prechecks = {s: precheck_submission(course_dir / "submitted" / s / assignment, expected) for s in names}
        template = tmp / "template.db"
        if db_url.startswith("sqlite:///"):
            _copy_sqlite(db_url, template)
        else:  # e.g. PostgreSQL: each worker's private gradebook is generated from the source
            _generate_into(course_dir, assignment, f"sqlite:///{template}", tmp / "release")
        template_bytes = template.read_bytes()
        tasks = [GradingTask(s, assignment, str(course_dir), template_bytes, size, bool(sandbox), seed) for s in names]
        if scheduler:
            from bncourse.grading import cluster

            outcomes, engine = cluster.run_on_scheduler(scheduler, tasks), f"dask scheduler {scheduler}"
        else:
            try:  # one re-judging server for all the workers (and later runs in this process)
                server = RejudgingServer.shared(modules).address
            except OSError:
                server = ""  # each worker re-judges on its own
            for t in tasks:
                t.rejudge_server = server
            if jobs > 1:
                threads = max(1, (os.cpu_count() or 1) // jobs)
                for t in tasks:
                    t.kernel_threads = threads
            outcomes, engine = _run_pool(tasks, jobs), f"{jobs} worker process(es)"

        results = []
        bar = tqdm(total=len(tasks), desc=f"grading {assignment}", unit="submission", disable=not progress,
                   file=sys.stderr)
        with bar, Gradebook(db_url) as gb:
            for out in outcomes:  # merged as they finish: a stop halfway keeps what was graded
                r = _record(gb, course_dir, assignment, out, prechecks[out.student], template, tmp)
                results.append(r)
                bar.update(1)
                bar.set_postfix(failed=sum(x.status != "graded" for x in results), refresh=False)
    results.sort(key=lambda r: r.student)
    modified = [s for s in names if _tree_hashes(course_dir / "submitted" / s / assignment) != before[s]]
    report = GradeReport(assignment, jobs, results, time.perf_counter() - start, modified, engine,
                         hidden_seed=seed, sandboxed=bool(sandbox))
    if write_report:
        _write_csv(course_dir / REPORT_DIR / f"{assignment}.csv", report)
        from bncourse.grading.similarity import write_similarity_report  # near-copies, for review

        write_similarity_report(course_dir, assignment)
    return report


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
        w.writerow(["student", "score", "max_score", "status", "reason", "notes", "worker", "attempts", "seconds",
                    "sandboxed", "hidden_seed"])
        for s in report.students:
            w.writerow([s.student, s.score, s.max_score, s.status, s.reason, "; ".join(s.notes), s.worker,
                        s.attempts, round(s.seconds, 1), "yes" if report.sandboxed else "NO (UNSANDBOXED)",
                        report.hidden_seed])


def main(assignment: str, course: str | os.PathLike = ".", jobs: int = 1, *,
         scheduler: str | None = None, size: RunSize | str = RunSize.GRADING, progress: bool = True,
         sandbox: bool = True, hidden_seed: int | None = None) -> int:
    """CLI glue for ``bncourse grade ASSIGNMENT [--jobs N | --scheduler ADDRESS] [--course DIR]``.

    Grades, shows a progress bar, prints the per-student and per-worker tables. Exit status 0
    when every submission was graded; 1 when any could not be graded (recorded with 0 points, each
    named on stderr with its reason) or a submitted file changed; 2 when the assignment is not in the
    gradebook, there is nothing to grade, or the scheduler cannot be reached.
    """
    try:
        report = grade(assignment, course, jobs=jobs, size=size, scheduler=scheduler, progress=progress,
                       sandbox=sandbox, hidden_seed=hidden_seed)
    except (ValueError, SandboxUnavailable) as exc:
        print(f"bncourse grade: {exc}", file=sys.stderr)
        return 2
    print(report)
    reports = Path(course).resolve() / REPORT_DIR
    print(f"report written to {reports / (assignment + '.csv')}; near-copies for review in "
          f"{reports / (assignment + '-similarity.csv')}")
    for s in report.failed:  # loud, on stderr too: a cron job's mail or CI log shows who was not graded
        print(f"bncourse grade: NOT GRADED {s.student}: {s.reason}", file=sys.stderr)
    if report.failed:
        print(f"bncourse grade: {len(report.failed)} of {len(report.students)} submission(s) of {assignment} could "
              f"not be graded (recorded with 0 points)", file=sys.stderr)
    return 0 if not report.modified_submissions and not report.failed else 1

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

Kernels run at the grading size (``RunSize.GRADING``, see ``bncourse.run_size``) unless
``size="fast"`` or ``"full"`` is asked for.

    report = grade("01_why_normalize", "notebooks", jobs=2, progress=True)
    print(report)                      # one row per student, then one row per worker
"""

from __future__ import annotations

import hashlib
import os
import secrets
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Iterable, Iterator

from bncourse.grading.config import db_url_of, load_config
from bncourse.grading.grade_report import REPORT_DIR, GradeReport, StudentResult, write_csv
from bncourse.grading.gradebook import alembic_on_path, check_gradebook, masked
from bncourse.grading.merge import copy_sqlite, install_autograded, merge_student
from bncourse.grading.reasons import precheck_submission, reason_from_log
from bncourse.grading.rejudging import RejudgingServer, check_modules
from bncourse.grading.sandbox import SandboxUnavailable
from bncourse.grading.sandbox import check as check_sandbox
from bncourse.grading.submission import GradingTask, Outcome
from bncourse.grading.time_limit import TIME_LIMIT_ENAME
from bncourse.grading.verify import SOURCE_FINDINGS, VERIFY_ENAME
from bncourse.run_size import RunSize


def _tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file():
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


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
                if o.get("output_type") == "error" and o.get("ename") == TIME_LIMIT_ENAME:
                    notes.append(f"{gid}: {o.get('evalue') or 'submission time limit reached'}")
                elif o.get("output_type") == "error" and o.get("ename") in ("CellTimeoutError", VERIFY_ENAME):
                    what = "timed out" if o["ename"] == "CellTimeoutError" else "rejected by the grader's re-run"
                    notes.append(f"{gid}: {what}")
        left_out = nb.metadata.get("bncourse_left_out_files") or []  # execute.LEFT_OUT_FILES
        if isinstance(left_out, list) and left_out:
            notes.append(f"{path.stem}: not given to the kernel (beside the notebook, not in the release): "
                         f"{', '.join(map(str, left_out[:8]))}{' ...' if len(left_out) > 8 else ''}")
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
        merge_student(gb, src_gb, assignment, s, ok)
    if src != template:
        src.unlink()
    install_autograded(course_dir / "autograded" / s / assignment, out.autograded if ok else None)
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
        size: the kernels' size, a ``bncourse.run_size.RunSize`` or its value: ``"grading"`` (default;
            experiments that earn no points may shrink), ``"fast"`` (CI's size) or ``"full"`` (a
            learner's run). The kernels are told it by their environment (``size.kernel_env()``).
        scheduler: address of a running dask.distributed scheduler (``tcp://host:8786``): grade on
            its workers instead of ``jobs`` local processes (see ``bncourse.grading.cluster``).
        progress: show a progress bar over submissions (tqdm, on stderr).
        write_report: also write ``grading_reports/<assignment>.csv`` in the course folder.
        sandbox: run every kernel in the sandbox (``bncourse.grading.sandbox``); ``False`` grades
            unsandboxed, which the report states on every line. Without a working sandbox,
            ``SandboxUnavailable`` says how to get one.
        hidden_seed: the run's hidden-case seed (default: drawn for this run; the report prints it, so
            a regrade can reproduce the run). No kernel sees it: each notebook is graded with a seed
            derived from it and the submission (``bncourse.grading.seeds``).
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
            copy_sqlite(db_url, template)
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
        write_csv(course_dir / REPORT_DIR / f"{assignment}.csv", report)
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

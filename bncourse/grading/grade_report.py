"""What ``grade`` reports: one row per student (``StudentResult``), one per worker, printable as a table.

``GradeReport`` prints as the table ``bncourse grade`` shows; ``write_csv`` writes the same rows to
``grading_reports/<assignment>.csv`` in the course folder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bncourse.grading.sandbox import UNSANDBOXED_NOTE

__all__ = ["REPORT_DIR", "GradeReport", "StudentResult", "WorkerSummary", "write_csv"]

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


def write_csv(path: Path, report: GradeReport) -> None:
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

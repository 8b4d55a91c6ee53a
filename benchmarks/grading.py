"""How fast does `bncourse grade` autograde a class, with 1 and with 2 workers, side by side?

Makes N fake students who each submit the whole course (every assignment in notebooks/source,
the instructor's solutions), then grades every assignment with `bncourse.grading.grade`, once with
1 worker and once with 2 (interleaved assignment by assignment, so that both see the same machine
load), each in its own copy of the same freshly generated course. Prints the
wall time per assignment and ends with:

    workers2_vs_1: <throughput ratio>x
    seconds_per_full_course_submission: <1-worker seconds per student for the whole course>

Run: /tmp/venvtest/bin/python benchmarks/grading.py [--students 8]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GENERATED = ("release", "submitted", "autograded", "feedback", "gradebook.db", ".nbgrader.log",
             ".ipynb_checkpoints", "grading_reports", "__pycache__")


def prepare(root: Path, students: int) -> list[str]:
    """A course copy with every assignment generated and ``students`` full-course submissions."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from bncourse import grading

    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns(*GENERATED))
    assignments = sorted(p.name for p in (root / "source").iterdir() if any(p.glob("*.ipynb")))
    cfg = grading.load_config(root)
    api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
    for a in assignments:
        res = api.generate_assignment(a, force=True)
        if not res["success"]:
            raise SystemExit(f"generate_assignment {a} failed:\n{res.get('error')}")
        for i in range(students):
            dest = root / "submitted" / f"student{i:02d}" / a
            dest.mkdir(parents=True)
            for nb in (root / "source" / a).glob("*.ipynb"):
                shutil.copy(nb, dest / nb.name)
    return assignments


def grade_once(course: Path, assignment: str, jobs: int) -> float:
    from bncourse import grading

    t0 = time.perf_counter()
    report = grading.grade(assignment, course, jobs=jobs, write_report=False)
    seconds = time.perf_counter() - t0
    bad = [s for s in report.students if s.score != s.max_score]
    note = f"  NOT FULL MARKS: {[(s.student, s.score, s.max_score, s.reason) for s in bad]}" if bad else ""
    print(f"  {jobs} worker(s) {assignment:<24} {seconds:7.1f} s  ({len(report.students)} submissions){note}", flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=8)
    args = parser.parse_args()
    from bncourse import grading

    grading._alembic_on_path()
    os.environ.setdefault("BNCOURSE_EXCHANGE", tempfile.mkdtemp(prefix="bncourse-exchange-"))
    with tempfile.TemporaryDirectory(prefix="bncourse-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        assignments = prepare(tmp / "template", args.students)
        print(f"{args.students} students x {len(assignments)} assignments ({', '.join(assignments)}); "
              f"prepared in {time.perf_counter() - t0:.0f} s; cores: {os.cpu_count()}", flush=True)
        shutil.copytree(tmp / "template", tmp / "w1")
        shutil.copytree(tmp / "template", tmp / "w2")
        t1 = t2 = 0.0
        # Interleaved, assignment by assignment: on a shared machine both see the same load.
        for a in assignments:
            t1 += grade_once(tmp / "w1", a, jobs=1)
            t2 += grade_once(tmp / "w2", a, jobs=2)
    print(f"1 worker: {t1:.1f} s; 2 workers: {t2:.1f} s for {args.students} full-course submissions")
    print(f"seconds_per_full_course_submission_with_2_workers: {t2 / args.students:.1f}")
    print(f"workers2_vs_1: {t1 / t2:.2f}x")
    print(f"seconds_per_full_course_submission: {t1 / args.students:.1f}")


if __name__ == "__main__":
    main()

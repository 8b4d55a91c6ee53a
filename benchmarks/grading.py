"""How fast does `bncourse grade` autograde a class: 1 worker, 2 workers, and 2 dask workers, side by side?

Makes N fake students who each submit the whole course (every assignment in notebooks/source,
the instructor's solutions), then grades every assignment at the grading size three ways, each in
its own copy of the same freshly generated course: `--jobs 1`, `--jobs 2`, and `--scheduler` on a
local dask scheduler with two single-threaded worker processes (started as `dask scheduler` and
`dask worker` commands, as an instructor would). The three runs are interleaved assignment by
assignment, so that they see the same machine load. Prints the wall time per assignment and ends
with:

    workers2_vs_1: <throughput of --jobs 2 / --jobs 1>x                     (goal >= 1.7)
    seconds_per_notebook_submission: <--jobs 1 seconds per notebook, mean over the course>  (goal <= 8 on 2 cores)
    dask2_vs_jobs2: <throughput of 2 dask workers / --jobs 2>x              (goal >= 0.9)
    sandbox_seconds_per_notebook_submission: <--jobs 1 minus --jobs 1 --unsandboxed, per notebook>

The fourth run, `--jobs 1 --unsandboxed`, is there only to measure what the grading sandbox
(bubblewrap, the solution-free build, a private working copy filled into a size-limited tmpfs, the
kernel's own output pipe) costs per submission. Before the runs, `sandbox_start_seconds` times a
Python started in the sandbox as a grading kernel is (fixed-size `/tmp`, working copy filled from a
copy of a submission's folder) against the same Python started plainly, interleaved, 5 times each.

Run: python benchmarks/grading.py [--students 4]
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


def prepare(root: Path, students: int) -> tuple[list[str], int]:
    """A course copy with every assignment generated and ``students`` full-course submissions.

    Returns the assignments and the number of notebooks in the course.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from bncourse import grading

    shutil.copytree(REPO / "notebooks", root, ignore=shutil.ignore_patterns(*GENERATED))
    assignments = sorted(p.name for p in (root / "source").iterdir() if any(p.glob("*.ipynb")))
    cfg = grading.load_config(root)
    api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
    notebooks = 0
    for a in assignments:
        res = api.generate_assignment(a, force=True)
        if not res["success"]:
            raise SystemExit(f"generate_assignment {a} failed:\n{res.get('error')}")
        sources = list((root / "source" / a).glob("*.ipynb"))
        notebooks += len(sources)
        for i in range(students):
            dest = root / "submitted" / f"student{i:02d}" / a
            dest.mkdir(parents=True)
            for nb in sources:
                shutil.copy(nb, dest / nb.name)
    return assignments, notebooks


def grade_once(course: Path, assignment: str, label: str, **how) -> float:
    from bncourse import grading

    t0 = time.perf_counter()
    report = grading.grade(assignment, course, write_report=False, **how)
    seconds = time.perf_counter() - t0
    bad = [s for s in report.students if s.score != s.max_score]
    note = f"  NOT FULL MARKS: {[(s.student, s.score, s.max_score, s.reason) for s in bad]}" if bad else ""
    print(f"  {label:<16} {assignment:<24} {seconds:7.1f} s  ({len(report.students)} submissions){note}", flush=True)
    return seconds


def sandbox_start_cost(repeats: int = 5) -> tuple[float, float]:
    """Median seconds to start and end ``python -c pass`` in the grading sandbox (working copy filled
    from a copy of notebook 1's folder) and plainly, interleaved."""
    import statistics
    import subprocess
    import sys

    from bncourse.grading import solution_free
    from bncourse.grading.sandbox import Sandbox

    box = Sandbox(library=str(solution_free.build()))
    boxed, plain = [], []
    with tempfile.TemporaryDirectory(prefix="bncourse-bench-sandbox-") as tmp:
        work, run, source = Path(tmp, "work"), Path(tmp, "run"), Path(tmp, "copy")
        shutil.copytree(REPO / "notebooks" / "source" / "01_why_normalize", source)
        for d in (work, run):
            d.mkdir()
            Sandbox.prepare_writable(str(d))
        Sandbox.prepare_writable(str(source))
        cmd = box.command([sys.executable, "-c", "pass"], str(work), str(run), work_source=str(source))
        for _ in range(repeats):
            for times, argv in ((boxed, cmd), (plain, [sys.executable, "-c", "pass"])):
                t0 = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True)
                times.append(time.perf_counter() - t0)
    return statistics.median(boxed), statistics.median(plain)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=4)
    args = parser.parse_args()
    from bncourse import grading
    from bncourse.grading.cluster import LocalDaskProcesses

    grading.alembic_on_path()
    os.environ.setdefault("BNCOURSE_EXCHANGE", tempfile.mkdtemp(prefix="bncourse-exchange-"))
    print(f"load average before: {os.getloadavg()[0]:.1f}", flush=True)
    boxed, plain = sandbox_start_cost()
    print(f"sandbox_start_seconds: {boxed:.3f} (python -c pass in the sandbox; plainly: {plain:.3f})", flush=True)
    with tempfile.TemporaryDirectory(prefix="bncourse-bench-") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        assignments, notebooks = prepare(tmp / "template", args.students)
        print(f"{args.students} students x {len(assignments)} assignments ({', '.join(assignments)}); "
              f"prepared in {time.perf_counter() - t0:.0f} s; cores: {os.cpu_count()}", flush=True)
        for name in ("w1", "w2", "d2", "u1"):
            shutil.copytree(tmp / "template", tmp / name)
        t1 = t2 = td = tu = 0.0
        with LocalDaskProcesses(n_workers=2, nthreads=1) as cluster:
            # Interleaved, assignment by assignment (the 2-worker pair in alternating order):
            # on a shared machine all three see the same load.
            for i, a in enumerate(assignments):
                t1 += grade_once(tmp / "w1", a, "--jobs 1", jobs=1)
                tu += grade_once(tmp / "u1", a, "--jobs 1 unsandboxed", jobs=1, sandbox=False)
                pair = [("--jobs 2", "w2", {"jobs": 2}), ("dask, 2 workers", "d2", {"scheduler": cluster.address})]
                for label, folder, how in (pair if i % 2 == 0 else pair[::-1]):
                    seconds = grade_once(tmp / folder, a, label, **how)
                    if folder == "w2":
                        t2 += seconds
                    else:
                        td += seconds
    print(f"--jobs 1: {t1:.1f} s; --jobs 2: {t2:.1f} s; dask with 2 workers: {td:.1f} s for {args.students} "
          f"full-course submissions ({notebooks} notebooks each); load average after: {os.getloadavg()[0]:.1f}")
    print(f"workers2_vs_1: {t1 / t2:.2f}x")
    print(f"seconds_per_notebook_submission: {t1 / (args.students * notebooks):.1f}")
    print(f"dask2_vs_jobs2: {t2 / td:.2f}x")
    print(f"sandbox_seconds_per_notebook_submission: {(t1 - tu) / (args.students * notebooks):.2f} "
          f"(--jobs 1 unsandboxed: {tu:.1f} s)")


if __name__ == "__main__":
    main()

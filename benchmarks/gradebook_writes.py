"""Parallel autograde into a PostgreSQL gradebook: merging per-worker results against direct writes.

Both arms autograde the same class of tiny submissions (tests/test_postgres.py's ``tiny``
assignment) with N worker processes, each into a fresh database on a throwaway PostgreSQL server:

- ``merge``: ``bncourse grade`` as shipped: workers write private SQLite gradebooks, the main
  process merges each student into PostgreSQL in one transaction;
- ``direct``: each worker runs nbgrader's own autograde with the PostgreSQL URL (what N parallel
  ``nbgrader autograde --student S`` would do).

Prints, per arm, seconds, peak connections to the gradebook and the database's round trips
(transactions committed + rolled back), then ``direct_vs_merge_seconds: <x>``. Needs Debian's
postgresql server binaries and psycopg (``pip install -e ".[test]"``).

    python benchmarks/gradebook_writes.py [--students 20] [--jobs 2]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

from pg_server import PgServer  # noqa: E402
import test_postgres as tp  # noqa: E402


def _direct(task: tuple[str, str]) -> bool:
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from bncourse.grading.pipeline import load_config

    course, student = task
    cfg = load_config(course)
    api = NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
    return bool(api.autograde(tp.ASSIGNMENT, student, force=True, create=True).get("success"))


def _arm(pg: PgServer, name: str, students: int, jobs: int, root: Path) -> dict:
    db = f"bench_{name}"
    url = pg.create_database(db)
    course = tp.make_course(root / name, url, students=students)
    os.environ.update(tp._env(course))
    peak, stop = [0], threading.Event()

    def watch():
        while not stop.wait(0.1):
            n = pg.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = %s", params=(db,))[0][0]
            peak[0] = max(peak[0], n)

    stats = "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s"
    before = pg.sql(stats, params=(db,))[0][0]
    watcher = threading.Thread(target=watch)
    watcher.start()
    start = time.perf_counter()
    if name == "merge":
        from bncourse.grading import grade

        ok = [s.status == "graded" for s in grade(tp.ASSIGNMENT, course, jobs=jobs, write_report=False).students]
    else:
        names = [f"s{i:02d}" for i in range(students)]
        with mp.get_context("forkserver").Pool(jobs) as pool:
            ok = pool.map(_direct, [(str(course), s) for s in names], chunksize=1)
    seconds = time.perf_counter() - start
    stop.set()
    watcher.join()
    time.sleep(0.5)  # pg_stat_database is updated asynchronously
    xacts = pg.sql(stats, params=(db,))[0][0] - before
    scores = tp.gradebook_rows(url)
    right = all(scores[(f"s{i:02d}", tp.AUTO)][0] == (2.0 if i % 2 == 0 else 0.0) for i in range(students))
    return {"arm": name, "seconds": seconds, "peak_connections": peak[0], "transactions": xacts,
            "graded": sum(ok), "scores_right": right}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--students", type=int, default=20)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    pg = PgServer(max_connections=100).start()
    try:
        with tempfile.TemporaryDirectory(prefix="bncourse-bench-") as tmp:
            print(f"{pg.version}; {args.students} tiny submissions, {args.jobs} workers; load {os.getloadavg()[0]:.1f}")
            results = [_arm(pg, name, args.students, args.jobs, Path(tmp)) for name in ("merge", "direct")]
    finally:
        pg.stop()
    for r in results:
        print(f"{r['arm']:>6}: {r['seconds']:6.1f} s, peak {r['peak_connections']} connections, "
              f"{r['transactions']} transactions, {r['graded']} graded, scores right: {r['scores_right']}")
    merge, direct = results
    print(f"direct_vs_merge_seconds: {direct['seconds'] / merge['seconds']:.2f}")
    print(f"direct_vs_merge_transactions: {direct['transactions'] / max(1, merge['transactions']):.1f}")


if __name__ == "__main__":
    main()

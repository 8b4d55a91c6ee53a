"""The ``bncourse`` command: ``start``, ``doctor``, ``progress``, ``grade`` and ``claims``.

    bncourse start [DIR] [--no-lab]   student notebooks into DIR (never overwriting yours), then JupyterLab
    bncourse doctor [--course DIR]    versions, training device, data cache, offline data set (and DIR's gradebook)
    bncourse progress [DIR]           your points so far, from the visible tests, without touching your files
    bncourse grade ASSIGNMENT [--jobs N | --scheduler ADDRESS]
                                      instructors: autograde every submission with N local workers,
                                      or on the workers of a dask.distributed scheduler
    bncourse claims [--fast] [--only ID ...] [--json]   every claim about batch norm, put to its experiment
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def _start(args: argparse.Namespace) -> int:
    from bncourse import workspace

    ws = Path(args.dir).expanduser().resolve() if args.dir else workspace.default_workspace().resolve()
    if ws.exists() and not ws.is_dir():
        print(f"bncourse start: {ws} exists and is not a folder", file=sys.stderr)
        return 2
    print("Preparing your course notebooks (generated from the course source with nbgrader)...", flush=True)
    actions = workspace.prepare_workspace(ws)
    print(workspace.describe(actions, ws))
    if args.no_lab:
        print(f"Open it later with: bncourse start {ws}")
        return 0
    cmd = workspace.lab_command(ws, open_browser=not args.no_browser, port=args.port)
    print("Starting JupyterLab:", " ".join(cmd), flush=True)
    return subprocess.call(cmd, cwd=ws, env=workspace.lab_environment(ws))


def _doctor(args: argparse.Namespace) -> int:
    from bncourse import doctor

    report = doctor.run_checks(course=args.course)
    print(doctor.format_report(report))
    return 0 if all(item.ok for item in report) else 1


def _progress(args: argparse.Namespace) -> int:
    from bncourse import progress, workspace

    ws = Path(args.dir).expanduser().resolve() if args.dir else workspace.default_workspace().resolve()
    if not ws.is_dir():
        print(f"bncourse progress: no workspace at {ws}; run `bncourse start` first", file=sys.stderr)
        return 2
    return progress.main(ws)


def _grade(args: argparse.Namespace) -> int:
    from bncourse import grading

    return grading.main(args.assignment, course=args.course, jobs=args.jobs, scheduler=args.scheduler,
                        size=args.size, progress=not args.no_progress)


def _claims(args: argparse.Namespace) -> int:
    import contextlib
    import json
    import time

    if args.fast:
        os.environ["BNCOURSE_FAST"] = "1"
    from bncourse.device import configure_cpu_threads
    from bncourse.experiments import claims

    try:
        if args.only:
            [claims.get_claim(i) for i in args.only]
    except KeyError as err:
        print(f"bncourse claims: {err.args[0]}", file=sys.stderr)
        return 2
    configure_cpu_threads()
    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), time.process_time()

    def tell(row):
        if not args.json:
            print(f"  {row.id}: {row.verdict} ({row.seconds:.0f} s)", file=sys.stderr, flush=True)

    # With --json, stdout is the JSON alone: a note an experiment prints (the CPU scale-down) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        rows = claims.run_claims(only=args.only or None, progress=not args.json and sys.stderr.isatty(), on_result=tell)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    if args.record:
        import platform
        from datetime import datetime, timezone
        from pathlib import Path

        from bncourse.experiments import claims_doc

        def torch_threads():
            return __import__("torch").get_num_threads()

        record = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                  "machine": f"{platform.node() or 'unknown'}: {platform.machine()}, {os.cpu_count()} CPU cores, "
                             f"{platform.system()} {platform.release()}, Python {platform.python_version()}, torch "
                             f"{__import__('torch').__version__}, {torch_threads()} torch threads; load average (1, 5, 15 min) "
                             f"before {', '.join(f'{x:.1f}' for x in load_before)}, after "
                             f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
                  "mode": "fast" if os.environ.get("BNCOURSE_FAST") else "full (CPU sizes)",
                  "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                  "command": "bncourse claims" + (" --fast" if args.fast else "") + " --record " + args.record,
                  "cpu_sizes": {what: {"full": repr(full), "cpu": repr(cpu)}
                                for what, (full, cpu) in __import__("bncourse.runtime", fromlist=["x"]).cpu_scaled().items()},
                  "rows": [r.to_dict() for r in rows]}
        path = Path(args.record)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(record, indent=1) + "\n")
        md = path.with_name("claims.md")
        md.write_text(claims_doc.render_markdown(record))
        print(f"recorded {path} and {md}", file=sys.stderr)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows], indent=1))
    else:
        print(claims.format_table(rows))
        mode = "fast" if args.fast or os.environ.get("BNCOURSE_FAST") else "full"
        print(f"{mode} run: {wall:.0f} s wall, {cpu:.0f} s CPU time ({len(rows)} claims)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bncourse", description="A JupyterLab course on batch normalization.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("start", help="prepare your workspace and open the course in JupyterLab")
    p.add_argument("dir", nargs="?", help="workspace folder (default: $BNCOURSE_WORKSPACE or ~/bncourse-workspace)")
    p.add_argument("--no-lab", action="store_true", help="prepare the notebooks only; do not start JupyterLab")
    p.add_argument("--no-browser", action="store_true", help="start JupyterLab without opening a browser")
    p.add_argument("--port", type=int, default=None, help="JupyterLab's port (default: 8888 or the next free one)")
    p.set_defaults(func=_start)

    p = sub.add_parser("doctor", help="check that everything the course needs works here")
    p.add_argument("--course", default=None, metavar="DIR",
                   help="instructors: also check this nbgrader course's gradebook (reachable, nbgrader's tables)")
    p.set_defaults(func=_doctor)

    p = sub.add_parser("progress", help="your points so far, from the visible tests (your files are not changed)")
    p.add_argument("dir", nargs="?", help="workspace folder (default: as for start)")
    p.set_defaults(func=_progress)

    p = sub.add_parser("grade", help="instructors: autograde all submissions of an assignment in parallel")
    p.add_argument("assignment", help="assignment name, e.g. 01_why_normalize")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1,
                       help="worker processes on this machine (default: all cores)")
    where.add_argument("--scheduler", metavar="ADDRESS", default=None,
                       help="grade on the workers of a running dask.distributed scheduler, e.g. tcp://host:8786 "
                            "(the course folder must be on storage the workers see at the same path)")
    p.add_argument("--course", default=".", help="nbgrader course root (default: the current folder)")
    p.add_argument("--size", choices=("grading", "fast", "full"), default="grading",
                   help="the kernels' size: grading (default; experiments that earn no points may shrink), "
                        "fast (CI's size) or full (a learner's run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the tables are still printed)")
    p.set_defaults(func=_grade)

    p = sub.add_parser("claims", help="run the experiment behind every claim about batch norm and print the verdicts")
    p.add_argument("--fast", action="store_true", help="fast mode (BNCOURSE_FAST=1): 3 seeds, small sizes, minutes")
    p.add_argument("--only", nargs="+", metavar="ID", help="only these claim ids (see the table for the ids)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {id, claim, sources, verdict, effect, "
                                                       "spread, seeds, notebook, ...} instead of the table")
    p.add_argument("--record", metavar="FILE", default=None,
                   help="also write the run (with date, machine and times) to FILE, e.g. docs/claims-run.json, "
                        "and the table rendered from it to claims.md beside it")
    p.set_defaults(func=_claims)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

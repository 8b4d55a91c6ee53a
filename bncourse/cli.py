"""The ``bncourse`` command: ``start``, ``doctor``, ``progress`` and ``grade``.

    bncourse start [DIR] [--no-lab]   student notebooks into DIR (never overwriting yours), then JupyterLab
    bncourse doctor                   versions, training device, data cache, offline data set
    bncourse progress [DIR]           your points so far, from the visible tests, without touching your files
    bncourse grade ASSIGNMENT [--jobs N]   instructors: autograde every submission with N workers
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

    report = doctor.run_checks()
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

    return grading.main(args.assignment, course=args.course, jobs=args.jobs)


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
    p.set_defaults(func=_doctor)

    p = sub.add_parser("progress", help="your points so far, from the visible tests (your files are not changed)")
    p.add_argument("dir", nargs="?", help="workspace folder (default: as for start)")
    p.set_defaults(func=_progress)

    p = sub.add_parser("grade", help="instructors: autograde all submissions of an assignment in parallel")
    p.add_argument("assignment", help="assignment name, e.g. 01_why_normalize")
    p.add_argument("--jobs", "-j", type=int, default=os.cpu_count() or 1, help="worker processes (default: all cores)")
    p.add_argument("--course", default=".", help="nbgrader course root (default: the current folder)")
    p.set_defaults(func=_grade)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

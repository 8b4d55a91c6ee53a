"""The ``bncourse`` command: ``start``, ``doctor``, ``progress``, ``grade``, ``claims``, ``hint`` and ``solution``.

    bncourse start [DIR] [--no-lab]   student notebooks into DIR (never overwriting yours), then JupyterLab
    bncourse doctor [--course DIR]    versions, training device, data cache, offline data set (and DIR's gradebook)
    bncourse progress [DIR]           your points so far, from the visible tests, without touching your files
    bncourse grade ASSIGNMENT [--jobs N | --scheduler ADDRESS]
                                      instructors: autograde every submission with N local workers,
                                      or on the workers of a dask.distributed scheduler
    bncourse report ASSIGNMENT [--course DIR]
                                      instructors: after grading, the class report (scores per cell, the
                                      named mistakes per exercise with a bar chart, near-copies, lateness)
    bncourse export ASSIGNMENT --lms canvas|moodle [--roster roster.csv] [--column NAME] [--to FILE]
                                      instructors: the grades as the LMS's import CSV, one row per roster student
    bncourse claims [--fast] [--only ID ...] [--json] [--workers N]   every claim about batch norm, put to its experiment
    bncourse hint EXERCISE [RUNG]     the next of three hints for an exercise (the same ladder as hint() in a notebook)
    bncourse solution NOTEBOOK EXERCISE
                                      the course's reference solution, once your check for it has run
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
                        size=args.size, progress=not args.no_progress, sandbox=not args.unsandboxed,
                        hidden_seed=args.hidden_seed)


def _report(args: argparse.Namespace) -> int:
    from bncourse.grading import report

    return report.main(args.assignment, course=args.course)


def _export(args: argparse.Namespace) -> int:
    from bncourse.grading import lms

    return lms.main(args.assignment, course=args.course, roster=args.roster, lms=args.lms, to=args.to,
                    column=args.column)


def _claims(args: argparse.Namespace) -> int:
    from bncourse.run_size import RunSize, current_size, use_size

    size = RunSize.FAST if args.fast else current_size()
    with use_size(size):
        return _run_claims(args, size)


def _run_claims(args: argparse.Namespace, size) -> int:
    """``bncourse claims`` at ``size`` (``bncourse.run_size.use_size`` is in force)."""
    import contextlib
    import json
    import time

    from bncourse.device import configure_cpu_threads
    from bncourse.experiments import claims
    from bncourse.experiments.claims_catalogue import get_claim

    try:
        if args.only:
            [get_claim(i) for i in args.only]
    except KeyError as err:
        print(f"bncourse claims: {err.args[0]}", file=sys.stderr)
        return 2
    from bncourse.experiments.claims_workers import default_workers

    workers = args.workers if args.workers is not None else default_workers()
    if workers < 1:
        print(f"bncourse claims: --workers must be at least 1, got {workers}", file=sys.stderr)
        return 2
    # One torch thread per experiment unless $BNCOURSE_THREADS says otherwise: the models are small (one thread
    # is fastest), and the same thread count in every worker and in one process gives the same numbers.
    configure_cpu_threads(None if os.environ.get("BNCOURSE_THREADS", "").strip() else 1)
    load_before = os.getloadavg()
    t0, c0 = time.perf_counter(), _cpu_seconds()

    def tell(row):
        if not args.json:
            print(f"  {row.id}: {row.verdict} ({row.seconds:.0f} s)", file=sys.stderr, flush=True)

    # With --json, stdout is the JSON alone: a note an experiment prints (the CPU scale-down) goes to stderr.
    with contextlib.redirect_stdout(sys.stderr if args.json else sys.stdout):
        rows = claims.run_claims(only=args.only or None, progress=not args.json and sys.stderr.isatty(), on_result=tell,
                                 workers=workers)
    wall, cpu = time.perf_counter() - t0, _cpu_seconds() - c0
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
                             f"{__import__('torch').__version__}, {workers} worker process(es) with "
                             f"{torch_threads()} torch "
                             f"thread(s) each; load average (1, 5, 15 min) "
                             f"before {', '.join(f'{x:.1f}' for x in load_before)}, after "
                             f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
                  "mode": "fast" if size.fast else "full (CPU sizes)",
                  "wall_seconds": round(wall, 1), "cpu_seconds": round(cpu, 1),
                  "command": "bncourse claims" + (" --fast" if args.fast else "") + f" --workers {workers}"
                             + " --record " + args.record,
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
        mode = "fast" if size.fast else "full"
        print(f"{mode} run: {wall:.0f} s wall, {cpu:.0f} s CPU time ({len(rows)} claim{'' if len(rows) == 1 else 's'})")
    return 0


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (the claims' workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _exercise_folder(args: argparse.Namespace, exercise) -> tuple[Path, Path | None]:
    """(the exercise's notebook folder in the workspace, the learner's notebook there or None)."""
    from bncourse import workspace

    ws = Path(args.workspace).expanduser().resolve() if args.workspace else workspace.default_workspace().resolve()
    folder = ws / exercise.notebook
    found = sorted(p for p in folder.glob("*.ipynb") if ".course-update-" not in p.name) if folder.is_dir() else []
    return folder, (found[0] if found else None)


def _hint(args: argparse.Namespace) -> int:
    from bncourse import hints

    try:
        exercise = hints.find_exercise(args.exercise)
        folder, _ = _exercise_folder(args, exercise)
        print(hints.next_hint(exercise.id, args.rung, directory=folder))
    except (KeyError, ValueError) as err:
        print(f"bncourse hint: {err.args[0]}", file=sys.stderr)
        return 2
    return 0


def _solution(args: argparse.Namespace) -> int:
    from bncourse import hints

    try:
        exercise = hints.find_exercise(args.exercise)
    except KeyError as err:
        print(f"bncourse solution: {err.args[0]}", file=sys.stderr)
        return 2
    wanted = Path(args.notebook).name.removesuffix(".ipynb")
    number = exercise.notebook.split("_")[0]
    if not (wanted.isdigit() and int(wanted) == int(number)) and not (wanted and wanted in exercise.notebook):
        print(f"bncourse solution: {exercise.id!r} is an exercise of notebook {exercise.notebook}, "
              f"not of {args.notebook!r}", file=sys.stderr)
        return 2
    folder, learner_notebook = _exercise_folder(args, exercise)
    if Path(args.notebook).suffix == ".ipynb" and Path(args.notebook).is_file():
        learner_notebook = Path(args.notebook).resolve()
        folder = learner_notebook.parent
    try:
        shown = hints.solution_for(exercise.id, directory=folder, notebook=learner_notebook, history=[])
    except (FileNotFoundError, LookupError) as err:
        print(f"bncourse solution: {err}", file=sys.stderr)
        return 2
    print(shown)
    return 0 if shown.code else 1


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
    from bncourse.run_size import RunSize

    p.add_argument("--size", choices=[s.value for s in RunSize], default=RunSize.GRADING.value,
                   help="the kernels' size: grading (default; experiments that earn no points may shrink), "
                        "fast (CI's size) or full (a learner's run)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (the tables are still printed)")
    p.add_argument("--unsandboxed", action="store_true",
                   help="run the learners' kernels without the sandbox (bubblewrap): grades then do not hold "
                        "against a determined student, and the report says so on every line")
    p.add_argument("--hidden-seed", type=int, default=None,
                   help="the run's hidden-case seed (default: drawn for this run; the report prints it). Each "
                        "notebook is graded with a seed derived from it and the submission, so a regrade with "
                        "it reproduces every unchanged submission")
    p.set_defaults(func=_grade)

    p = sub.add_parser("report", help="instructors: the class report of a graded assignment (HTML page and CSVs)")
    p.add_argument("assignment", help="assignment name, e.g. 02_batchnorm_forward")
    p.add_argument("--course", default=".", help="nbgrader course root (default: the current folder)")
    p.set_defaults(func=_report)

    p = sub.add_parser("export", help="instructors: grades as a Canvas or Moodle grade import CSV")
    p.add_argument("assignment", help="assignment name, e.g. 02_batchnorm_forward")
    p.add_argument("--lms", choices=("canvas", "moodle"), required=True, help="the LMS that imports the file")
    p.add_argument("--roster", default="roster.csv", help="the class roster CSV (default: roster.csv in the course)")
    p.add_argument("--column", default=None, help="the assignment column's header; for Canvas 'Name (assignment id)'")
    p.add_argument("--to", default=None, metavar="FILE", help="output file (default: grading_reports/ASSIGNMENT-LMS.csv)")
    p.add_argument("--course", default=".", help="nbgrader course root (default: the current folder)")
    p.set_defaults(func=_export)

    p = sub.add_parser("claims", help="run the experiment behind every claim about batch norm and print the verdicts")
    p.add_argument("--fast", action="store_true", help="the fast size (as BNCOURSE_FAST=1): 3 seeds, small sizes, "
                                                       "minutes")
    p.add_argument("--only", nargs="+", metavar="ID", help="only these claim ids (see the table for the ids)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {id, claim, sources, verdict, effect, "
                                                       "spread, seeds, notebook, ...} instead of the table")
    p.add_argument("--record", metavar="FILE", default=None,
                   help="also write the run (with date, machine and times) to FILE, e.g. docs/claims-run.json, "
                        "and the table rendered from it to claims.md beside it")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="run the experiments in N processes, one torch thread each (default: one per CPU core); "
                        "the verdicts and values do not depend on N")
    p.set_defaults(func=_claims)

    p = sub.add_parser("hint", help="the next of three hints for an exercise, e.g. bncourse hint batchnorm_forward")
    p.add_argument("exercise", help="the exercise: its name in the notebook, e.g. batchnorm_forward")
    p.add_argument("rung", nargs="?", type=int, choices=(1, 2, 3), help="re-read hint 1, 2 or 3")
    p.add_argument("--workspace", default=None, metavar="DIR", help="your workspace (default: as for start)")
    p.set_defaults(func=_hint)

    p = sub.add_parser("solution", help="the course's reference solution of an exercise, after your check has run")
    p.add_argument("notebook", help="the notebook: its number (02), folder (02_batchnorm_forward) or file")
    p.add_argument("exercise", help="the exercise: its name in the notebook, e.g. batchnorm_forward")
    p.add_argument("--workspace", default=None, metavar="DIR", help="your workspace (default: as for start)")
    p.set_defaults(func=_solution)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())

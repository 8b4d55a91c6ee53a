"""Does the course's grading hold up with the gradebook on a real PostgreSQL server?

A throwaway PostgreSQL server (Debian's binaries, ``tests/pg_server.py``) is started for this file.
The assignment is a tiny one (``tiny``: one function, a 2-point autograded test, a 3-point answer a
grader scores by hand) so that a class of 50 stays cheap to autograde. Manual grades go through the
formgrader's REST API, served by a real Jupyter server with nbgrader's formgrader extension.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import warnings
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from pg_server import HOW_TO_GET, PgServer, find_bindir

REPO = Path(__file__).resolve().parent.parent
ASSIGNMENT, NOTEBOOK = "tiny", "tiny"
AUTO, MANUAL = "square_test", "explain"  # grade ids: 2 points autograded, 3 points by hand


# --- a tiny course -------------------------------------------------------------------------------

def _meta(grade_id, *, solution=False, grade=False, points=0):
    meta = {"grade_id": grade_id, "solution": solution, "grade": grade, "locked": not solution,
            "schema_version": 3}
    if grade:
        meta["points"] = points
    return {"nbgrader": meta}


def _source_notebook():
    nb = new_notebook(metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nb.cells = [
        new_markdown_cell("Write `square(x)`.", metadata=_meta("intro")),
        new_code_cell("def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION",
                      metadata=_meta("square", solution=True)),
        # Graded test cells must go through the course's checks: the grader re-judges them outside the
        # learner's kernel, and a cell it cannot re-judge scores 0 (docs/instructors.md).
        new_code_cell("import numpy as np\nfrom bncourse.checks.core import Case, check_function\n"
                      "check_function('square', square, np.square,\n"
                      "               [Case('x = [3, -2]', lambda: (np.array([3.0, -2.0]),))]).assert_passed()",
                      metadata=_meta(AUTO, grade=True, points=2)),
        new_markdown_cell("Why is `square` never negative?", metadata=_meta("question")),
        new_markdown_cell("YOUR ANSWER HERE", metadata=_meta(MANUAL, solution=True, grade=True, points=3)),
    ]
    return nb


def make_course(root: Path, db_url: str | None, students: int) -> Path:
    """A course folder with the course's own nbgrader_config.py, the tiny assignment generated into
    the gradebook at ``db_url`` (None: the default SQLite file) and ``students`` submissions: even
    numbers solve it (2 points), odd numbers return x + x (0 points)."""
    course = root / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    config = (REPO / "notebooks" / "nbgrader_config.py").read_text()
    if db_url:
        config += f"\nc.CourseDirectory.db_url = {db_url!r}\n"
    (course / "nbgrader_config.py").write_text(config)
    nbformat.write(_source_notebook(), course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb")
    gen = _run(["nbgrader", "generate_assignment", ASSIGNMENT], course)
    assert gen.returncode == 0, gen.stdout[-3000:] + gen.stderr[-3000:]
    release = nbformat.read(course / "release" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    for i in range(students):
        nb = nbformat.from_dict(json.loads(json.dumps(release)))
        body = "x * x" if i % 2 == 0 else "x + x"
        nb.cells[1].source = f"def square(x):\n    return {body}"
        nb.cells[4].source = f"Student {i}: a square of a real number is never negative."
        dest = course / "submitted" / f"s{i:02d}" / ASSIGNMENT
        dest.mkdir(parents=True)
        nbformat.write(nb, dest / f"{NOTEBOOK}.ipynb")
    return course


def _env(course: Path) -> dict:
    env = dict(os.environ, BNCOURSE_EXCHANGE=str(course.parent / "exchange"), BNCOURSE_CELL_TIMEOUT="60",
               JUPYTER_RUNTIME_DIR=str(course.parent / "runtime"))
    env["PATH"] = os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", "")
    return env


def _run(cmd: list[str], course: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    if cmd[0] == "nbgrader":
        cmd = [sys.executable, "-m", "nbgrader", *cmd[1:]]
    elif cmd[0] == "bncourse":
        cmd = [sys.executable, "-m", "bncourse.cli", *cmd[1:]]
    return subprocess.run(cmd, cwd=course, env=_env(course), capture_output=True, text=True, timeout=timeout)


def bncourse_grade(course: Path, jobs: int) -> subprocess.CompletedProcess:
    return _run(["bncourse", "grade", ASSIGNMENT, "--jobs", str(jobs), "--course", str(course)], course)


def gradebook_rows(db_url: str) -> dict:
    """{(student, grade id): (auto_score, manual_score, needs_manual_grade)} plus submission counts."""
    from nbgrader.api import Gradebook

    rows = {}
    with Gradebook(db_url) as gb:
        for sub in gb.assignment_submissions(ASSIGNMENT):
            for nb in sub.notebooks:
                for g in nb.grades:
                    rows[(sub.student.id, g.name)] = (g.auto_score, g.manual_score, g.needs_manual_grade)
    return rows


# --- the formgrader, served by a real Jupyter server ----------------------------------------------

class Formgrader:
    """``jupyter server`` with nbgrader's formgrader extension, rooted at the course folder."""

    def __init__(self, course: Path):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = "tok" + os.urandom(8).hex()
        self.log = open(course.parent / "formgrader.log", "w")
        cmd = [sys.executable, "-m", "jupyter_server", "--no-browser", "--ip=127.0.0.1", f"--port={self.port}",
               f"--IdentityProvider.token={self.token}", f"--ServerApp.root_dir={course}",
               # the formgrader alone: JupyterLab's own extensions only slow the start
               '--ServerApp.jpserver_extensions={"jupyterlab": False, "notebook": False, "jupyter_lsp": False, '
               '"jupyter_server_terminals": False, "notebook_shim": False, '
               '"nbgrader.server_extensions.formgrader": True}']
        if os.geteuid() == 0:
            cmd.append("--allow-root")
        self.proc = subprocess.Popen(cmd, cwd=course, env=_env(course), stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                self.get("/formgrader/api/status")
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the formgrader did not start: "
                                       + (course.parent / "formgrader.log").read_text()[-3000:])
                time.sleep(0.5)

    def _call(self, method: str, path: str, body=None):
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"token {self.token}",
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=60) as resp:
            return json.loads(resp.read() or b"null")

    def get(self, path: str):
        return self._call("GET", path)

    def put(self, path: str, body: dict):
        return self._call("PUT", path, body)

    def grade_id(self, student: str, grade_name: str) -> str:
        """The gradebook id of one grade, found the way the formgrader's page finds it."""
        nbs = self.get(f"/formgrader/api/student_notebook_submissions/{student}/{ASSIGNMENT}")
        nb_id = next(nb["id"] for nb in nbs if nb["name"] == NOTEBOOK)
        grades = self.get(f"/formgrader/api/grades?submission_id={nb_id}")
        return next(g["id"] for g in grades if g["name"] == grade_name)

    def comment_id(self, student: str, name: str) -> str:
        nbs = self.get(f"/formgrader/api/student_notebook_submissions/{student}/{ASSIGNMENT}")
        nb_id = next(nb["id"] for nb in nbs if nb["name"] == NOTEBOOK)
        return next(c["id"] for c in self.get(f"/formgrader/api/comments?submission_id={nb_id}") if c["name"] == name)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: the server shuts down without asking
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


# --- fixtures --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pg():
    if find_bindir() is None:
        pytest.skip(HOW_TO_GET)
    pytest.importorskip("psycopg", reason='the PostgreSQL driver is missing: pip install -e ".[test]" (or "bncourse[postgres]")')
    server = PgServer(max_connections=40).start()
    yield server
    server.stop()


_counter = iter(range(10**6))


@pytest.fixture
def pg_db(pg):
    """A fresh, empty database on the server: its SQLAlchemy URL (with the password in it)."""
    return pg.create_database(f"gb{next(_counter)}_{os.getpid()}")


# --- 1. the instructor's round trip: same scores on SQLite and on PostgreSQL -----------------------

def _round_trip(root: Path, db_url: str | None) -> dict:
    """generate -> bncourse grade -> manual grades in the formgrader -> re-grade -> feedback -> export."""
    from bncourse.grading import db_url_of

    course = make_course(root, db_url, students=3)
    first = bncourse_grade(course, jobs=2)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    for noise in ("not in session", "without encryption"):  # nbgrader's SQLAlchemy chatter, TCP kernels
        assert noise not in first.stderr, first.stderr[-3000:]
    fg = Formgrader(course)
    try:
        fg.put(f"/formgrader/api/grade/{fg.grade_id('s00', MANUAL)}", {"manual_score": 3})
        fg.put(f"/formgrader/api/grade/{fg.grade_id('s01', MANUAL)}", {"manual_score": 1.5})
        fg.put(f"/formgrader/api/grade/{fg.grade_id('s02', AUTO)}", {"manual_score": 1})  # overrides 2 auto points
        fg.put(f"/formgrader/api/comment/{fg.comment_id('s01', MANUAL)}", {"manual_comment": "Say why: x*x = |x|^2."})
    finally:
        fg.stop()
    again = bncourse_grade(course, jobs=2)  # an instructor re-runs autograde after graders started
    assert again.returncode == 0, again.stdout[-2000:] + again.stderr[-3000:]
    feedback = _run(["nbgrader", "generate_feedback", ASSIGNMENT], course)
    assert feedback.returncode == 0, feedback.stderr[-3000:]
    export = _run(["nbgrader", "export", "--to", "grades.csv"], course)
    assert export.returncode == 0, export.stderr[-3000:]
    with open(course / "grades.csv") as f:
        exported = {row["student_id"]: float(row["score"]) for row in csv.DictReader(f)}
    return {"rows": gradebook_rows(db_url_of(course)), "exported": exported,
            "feedback": (course / "feedback" / "s01" / ASSIGNMENT / f"{NOTEBOOK}.html").read_text(),
            "local_files": sorted(p.name for p in course.glob("*.db"))}


@pytest.mark.slow
def test_does_the_instructor_round_trip_on_postgresql_give_the_same_scores_as_on_sqlite(pg, pg_db, tmp_path):
    on_sqlite = _round_trip(tmp_path / "sqlite", None)
    on_postgres = _round_trip(tmp_path / "postgres", pg_db)
    # s00: 2 auto + 3 by hand; s01: 0 auto + 1.5 by hand; s02: its 2 auto points overridden to 1
    assert on_sqlite["exported"] == {"s00": 5.0, "s01": 1.5, "s02": 1.0}
    assert on_postgres["exported"] == on_sqlite["exported"]
    assert on_postgres["rows"] == on_sqlite["rows"]
    # the re-run autograde kept what the graders saved, and flagged the overridden cell for review
    assert on_postgres["rows"][("s02", AUTO)] == (2.0, 1.0, True)
    assert "Say why: x*x = |x|^2." in on_postgres["feedback"]
    assert on_postgres["local_files"] == [] and on_sqlite["local_files"] == ["gradebook.db"]


# --- 2. several writers at once ------------------------------------------------------------------

CLASS_SIZE, JOBS = 50, 2


def _grade_ids(db_url: str) -> dict:
    """{(student, grade name): grade id} from the gradebook."""
    from nbgrader.api import Gradebook

    with Gradebook(db_url) as gb:
        return {(sub.student.id, g.name): g.id for sub in gb.assignment_submissions(ASSIGNMENT)
                for nb in sub.notebooks for g in nb.grades}


@pytest.mark.slow
def test_do_parallel_autograde_and_a_grader_in_the_formgrader_share_one_postgres_gradebook_without_losing_a_grade(
        pg, pg_db, tmp_path):
    """`bncourse grade --jobs 2` over 50 submissions while a grader keeps saving manual grades
    through the formgrader's API, on the same students: every grader's last save survives, every
    auto score is right, one submission per student, no deadlock, no exhausted connection pool."""
    from nbgrader.api import Gradebook

    course = make_course(tmp_path, pg_db, students=CLASS_SIZE)
    # What an earlier grading run leaves (the graders are already at work): every submission
    # registered in the gradebook, through nbgrader's own API, not yet autograded.
    with Gradebook(pg_db, "bncourse") as gb, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # SQLAlchemy's autoflush chatter inside nbgrader's add_submission
        for i in range(CLASS_SIZE):
            gb.update_or_create_student(f"s{i:02d}")
            gb.add_submission(ASSIGNMENT, f"s{i:02d}")
    ids = _grade_ids(pg_db)
    fg = Formgrader(course)
    saves, errors, peak = [], [], [0]
    stop = threading.Event()

    def grader():  # round after round over the class, a new score each round; every 3rd an override
        k = 0
        while not stop.is_set():
            i = k % CLASS_SIZE
            name, value = (AUTO if i % 3 == 0 else MANUAL), 0.5 + (k // CLASS_SIZE) % 3
            try:
                got = fg.put(f"/formgrader/api/grade/{ids[(f's{i:02d}', name)]}", {"manual_score": value})
                saves.append((time.monotonic(), f"s{i:02d}", name, value, got["auto_score"]))
            except Exception as exc:  # noqa: BLE001 - reported by the assertion below
                errors.append(repr(exc))
            k += 1
            stop.wait(0.05)  # a busy grader, not a flood: the class still sees hundreds of saves mid-merge

    def watch_connections():
        while not stop.wait(0.2):
            peak[0] = max(peak[0], pg.sql("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()",
                                          database=pg_db.rsplit("/", 1)[1])[0][0])

    threads = [threading.Thread(target=grader), threading.Thread(target=watch_connections)]
    try:
        for t in threads:
            t.start()
        start = time.monotonic()
        run = bncourse_grade(course, jobs=JOBS)
        end = time.monotonic()
        time.sleep(0.5)
    finally:
        stop.set()
        for t in threads:
            t.join()
        fg.stop()
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert not errors, errors[:3]
    print(f"\nconcurrency: class of {CLASS_SIZE}, {JOBS} grading workers + 1 merging process + 1 formgrader "
          f"({len(saves)} manual saves), {end - start:.1f} s, peak {peak[0]} connections to the gradebook, "
          f"{pg.version}")

    rows = gradebook_rows(pg_db)
    last = {}
    for _, student, name, value, _ in saves:
        last[(student, name)] = value
    for (student, name), value in last.items():  # no lost update: the grader's last word stands
        assert rows[(student, name)][1] == value, (student, name, rows[(student, name)], value)
    wrong = {f"s{i:02d}": rows[(f"s{i:02d}", AUTO)][0] for i in range(CLASS_SIZE)
             if rows[(f"s{i:02d}", AUTO)][0] != (2.0 if i % 2 == 0 else 0.0)}
    # every auto score right, whatever the grader did meanwhile (else: those students' lines of the report)
    assert not wrong, (wrong, [ln for ln in run.stdout.splitlines() if ln.split(" ", 1)[0] in wrong])
    per_student = pg.sql("SELECT student_id, count(*) FROM submitted_assignment GROUP BY student_id",
                         database=pg_db.rsplit("/", 1)[1])
    assert len(per_student) == CLASS_SIZE and all(n == 1 for _, n in per_student)  # no duplicate submission
    # the grader's saves really interleaved with the merging: some saw the cell before, some after its autograde
    during = [auto for t, _, name, _, auto in saves if name == AUTO and start < t < end]
    assert None in during and any(a is not None for a in during), "no save fell inside the merge: the test proved nothing"
    log = pg.log() + run.stderr
    for trouble in ("deadlock detected", "too many clients", "QueuePool limit", "remaining connection slots"):
        assert trouble not in log
    assert peak[0] < pg.max_connections


@pytest.mark.slow
def test_does_a_grading_process_killed_mid_write_leave_every_student_either_old_or_new(pg, pg_db, tmp_path):
    """The merging process (the only one writing to the course gradebook) is killed while it is
    in the middle of one student's rows: that student's submission keeps its old timestamp AND old
    scores (one transaction rolled back, never half of each), and the next run completes."""
    import psycopg

    course = make_course(tmp_path, pg_db, students=2)
    first = bncourse_grade(course, jobs=1)
    assert first.returncode == 0, first.stderr[-3000:]
    db = pg_db.rsplit("/", 1)[1]
    query = ("SELECT sa.timestamp, g.auto_score FROM submitted_assignment sa JOIN submitted_notebook sn "
             "ON sn.assignment_id = sa.id JOIN grade g ON g.notebook_id = sn.id JOIN grade_cells gc "
             "ON gc.id = g.cell_id JOIN base_cell bc ON bc.id = gc.id WHERE sa.student_id = 's01' AND bc.name = %s")
    before = pg.sql(query, database=db, params=(AUTO,))
    assert before[0][1] == 0.0
    # s01 resubmits a correct solution, with a new timestamp
    sub = course / "submitted" / "s01" / ASSIGNMENT
    nb = nbformat.read(sub / f"{NOTEBOOK}.ipynb", as_version=4)
    nb.cells[1].source = "def square(x):\n    return x * x"
    nbformat.write(nb, sub / f"{NOTEBOOK}.ipynb")
    (sub / "timestamp.txt").write_text("2031-01-02 03:04:05.000000 UTC")

    # hold s01's grade rows, so the merge stops in the middle of s01, with its timestamp written
    lock = psycopg.connect(host="127.0.0.1", port=pg.port, user="grader", password=pg_db.split(":")[2].split("@")[0],
                           dbname=db)
    lock.execute("SELECT g.id FROM grade g JOIN submitted_notebook sn ON g.notebook_id = sn.id JOIN "
                 "submitted_assignment sa ON sn.assignment_id = sa.id WHERE sa.student_id = 's01' FOR UPDATE")
    cmd = [sys.executable, "-m", "bncourse.cli", "grade", ASSIGNMENT, "--jobs", "1", "--course", str(course)]
    proc = subprocess.Popen(cmd, cwd=course, env=_env(course), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 600
        while not pg.sql("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                         params=(db,)):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
            time.sleep(0.2)
        os.killpg(proc.pid, signal.SIGKILL)  # the grading run and its workers, mid-write
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        lock.rollback()
        lock.close()
    deadline = time.monotonic() + 60  # the server notices the dead client and rolls its transaction back
    while pg.sql("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND state <> 'idle'", params=(db,)):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert pg.sql(query, database=db, params=(AUTO,)) == before
    again = bncourse_grade(course, jobs=1)
    assert again.returncode == 0, again.stderr[-3000:]
    after = pg.sql(query, database=db, params=(AUTO,))
    assert after[0][1] == 2.0 and after[0][0] != before[0][0] and after[0][0].year == 2031
    assert gradebook_rows(pg_db)[("s00", AUTO)][0] == 2.0


# --- 3. no silent fallback ----------------------------------------------------------------------

def _course_with_url(root: Path, db_url: str) -> Path:
    course = root / "course"
    (course / "source" / ASSIGNMENT).mkdir(parents=True)
    (course / "nbgrader_config.py").write_text((REPO / "notebooks" / "nbgrader_config.py").read_text()
                                               + f"\nc.CourseDirectory.db_url = {db_url!r}\n")
    return course


def _grade_and_doctor(course: Path, capsys) -> tuple[int, str, int, str]:
    from bncourse.cli import main

    code = main(["grade", ASSIGNMENT, "--course", str(course)])
    grade_err = capsys.readouterr().err
    doctor_code = main(["doctor", "--course", str(course)])
    return code, grade_err, doctor_code, capsys.readouterr().out


def _no_local_gradebook(course: Path) -> bool:
    return not list(course.rglob("*.db")) and not list(Path.cwd().glob("*.db"))


def test_does_an_unreachable_postgres_url_stop_grade_and_doctor_with_the_url_masked(tmp_path, capsys):
    pytest.importorskip("psycopg", reason='the PostgreSQL driver is missing: pip install -e ".[test]"')
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    course = _course_with_url(tmp_path, f"postgresql+psycopg://grader:TopSecret99@127.0.0.1:{port}/bncourse")
    code, err, doctor_code, out = _grade_and_doctor(course, capsys)
    shown = f"postgresql+psycopg://grader:***@127.0.0.1:{port}/bncourse"
    assert code == 2 and "cannot reach the gradebook database" in err and shown in err
    assert "Check that the server is running" in err and "never falls back to a local SQLite file" in err
    assert doctor_code == 1 and "BAD  gradebook" in out and shown in out
    assert "TopSecret99" not in err + out
    assert _no_local_gradebook(course)


def test_does_a_database_without_nbgraders_tables_stop_grade_and_doctor_and_stay_empty(pg, pg_db, tmp_path, capsys):
    course = _course_with_url(tmp_path, pg_db)
    code, err, doctor_code, out = _grade_and_doctor(course, capsys)
    assert code == 2 and "is not an nbgrader gradebook" in err and "nbgrader generate_assignment" in err
    assert pg_db.replace(pg_db.split(":")[2].split("@")[0], "***") in err
    assert doctor_code == 1 and "BAD  gradebook" in out and "is not an nbgrader gradebook" in out
    assert pg.sql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", database=pg_db.rsplit("/", 1)[1]) == []
    assert _no_local_gradebook(course)


def test_does_a_missing_sqlite_gradebook_stop_grade_without_creating_one(tmp_path, capsys):
    course = _course_with_url(tmp_path, f"sqlite:///{tmp_path / 'course' / 'gradebook.db'}")
    code, err, doctor_code, out = _grade_and_doctor(course, capsys)
    assert code == 2 and "does not exist" in err and "Nothing was created" in err
    assert doctor_code == 1 and "BAD  gradebook" in out
    assert _no_local_gradebook(course)


@pytest.mark.slow
def test_does_doctor_report_a_working_postgres_gradebook(pg, pg_db, tmp_path, capsys):
    from bncourse.cli import main

    course = make_course(tmp_path, pg_db, students=0)
    assert main(["doctor", "--course", str(course)]) == 0
    out = capsys.readouterr().out
    assert "ok   gradebook" in out and "1 assignment(s) (tiny)" in out and "pw-Secret-42" not in out

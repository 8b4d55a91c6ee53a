"""The course's gradebook database: checked before anything writes to it, never silently replaced.

nbgrader opens its gradebook with SQLAlchemy and creates whatever is missing: a misspelt SQLite
path becomes a new empty ``gradebook.db``, and a database without nbgrader's tables quietly gets
them. For a course whose gradebook lives on a PostgreSQL server, that turns a typo or an
unreachable server into grades written somewhere nobody looks. ``check_gradebook(db_url)`` looks
first, without creating anything, and raises ``GradebookError`` naming the URL (password masked)
and what to do:

- the URL is not an SQLAlchemy URL, or its driver is not installed (``pip install "bncourse[postgres]"``);
- an SQLite file that does not exist (never created here);
- a server that cannot be reached or refuses the login;
- a database without nbgrader's tables.

    info = check_gradebook("postgresql+psycopg://grader:pw@db.example.edu/bncourse")
    print(info)        # postgresql+psycopg://grader:***@db.example.edu/bncourse: 2 assignments, 48 students
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

#: Tables every nbgrader gradebook has (nbgrader 0.9's schema); one missing means "not a gradebook".
REQUIRED_TABLES = ("assignment", "notebook", "grade_cells", "student", "submitted_assignment",
                   "submitted_notebook", "grade", "comment")
DRIVER_HINT = 'pip install "bncourse[postgres]"  (psycopg 3; use a URL starting postgresql+psycopg://)'
CONNECT_TIMEOUT = 10  # seconds before an unreachable server is reported


class GradebookError(ValueError):
    """The configured gradebook cannot be used; the message names the URL (password masked) and the fix."""


@dataclass
class GradebookInfo:
    """What ``check_gradebook`` found in a usable gradebook."""

    url: str  # password masked
    backend: str  # "sqlite", "postgresql", ...
    assignments: list[str] = field(default_factory=list)
    students: int = 0
    schema: str = ""  # alembic revision nbgrader stamped, "" if none

    def __str__(self) -> str:
        names = ", ".join(self.assignments) if self.assignments else "none yet"
        return (f"{self.url}: {len(self.assignments)} assignment(s) ({names}), {self.students} student(s)"
                + (f", nbgrader schema {self.schema}" if self.schema else ""))


def masked(db_url: str) -> str:
    """``db_url`` with its password replaced by ``***`` (any unparsable URL is returned as ``<unparsable URL>``)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(str(db_url)).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - never echo something that may hold a password
        return "<unparsable URL>"


def _scrub(text: str, password: str | None) -> str:
    text = " ".join(str(text).split())
    return text.replace(password, "***") if password else text


def check_gradebook(db_url: str, *, course_dir: str | os.PathLike | None = None) -> GradebookInfo:
    """Does ``db_url`` name an existing, reachable nbgrader gradebook? Creates nothing.

    Raises ``GradebookError`` (a ``ValueError``) with the URL, password masked, and what to do.
    ``course_dir`` only makes the advice name the folder to run nbgrader in.
    """
    from sqlalchemy import create_engine, inspect, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    where = f" in {course_dir}" if course_dir is not None else " in the course folder"
    config_hint = "c.CourseDirectory.db_url in nbgrader_config.py"
    try:
        url = make_url(str(db_url))
    except ArgumentError:
        raise GradebookError(f"the gradebook URL {masked(db_url)} is not an SQLAlchemy database URL "
                             f"(e.g. postgresql+psycopg://user@host:5432/bncourse); fix {config_hint}") from None
    shown = url.render_as_string(hide_password=True)
    backend = url.get_backend_name()
    connect_args = {}
    if backend == "sqlite":
        path = url.database or ""
        if path and path != ":memory:" and not path.startswith("file:") and not Path(path).is_file():
            raise GradebookError(
                f"the gradebook {shown} does not exist ({path} is not a file). Nothing was created. "
                f"Run `nbgrader generate_assignment ASSIGNMENT`{where} first (it creates the gradebook), "
                f"or fix {config_hint} if the course's gradebook is elsewhere")
    elif backend == "postgresql":
        connect_args = {"connect_timeout": CONNECT_TIMEOUT}
    try:
        engine = create_engine(url, connect_args=connect_args, poolclass=_null_pool())
    except (NoSuchModuleError, ModuleNotFoundError, ImportError) as exc:
        raise GradebookError(f"the database driver for the gradebook {shown} is not installed "
                             f"({type(exc).__name__}: {_scrub(exc, url.password)}); install it: {DRIVER_HINT}") from None
    try:
        with engine.connect() as conn:
            tables = set(inspect(conn).get_table_names())
            missing = [t for t in REQUIRED_TABLES if t not in tables]
            if missing:
                found = ", ".join(sorted(tables)[:8]) or "no tables at all"
                raise GradebookError(
                    f"the database {shown} is not an nbgrader gradebook: it lacks nbgrader's tables "
                    f"({', '.join(missing)}; found {found}). Nothing was written to it. If it is the "
                    f"database meant for this course, run `nbgrader generate_assignment ASSIGNMENT`{where} "
                    f"once to create the tables; otherwise fix {config_hint}")
            assignments = [r[0] for r in conn.execute(text("SELECT name FROM assignment ORDER BY name"))]
            students = conn.execute(text("SELECT count(*) FROM student")).scalar_one()
            schema = ""
            if "alembic_version" in tables:
                schema = conn.execute(text("SELECT version_num FROM alembic_version")).scalar() or ""
    except GradebookError:
        raise
    except Exception as exc:  # noqa: BLE001 - OperationalError, DBAPIError, driver errors: all mean "cannot use it"
        detail = _scrub(getattr(exc, "orig", None) or exc, url.password)
        raise GradebookError(
            f"cannot reach the gradebook database {shown} ({detail[:400]}). Nothing was written anywhere "
            f"(bncourse never falls back to a local SQLite file). Check that the server is running and "
            f"reachable from here, the host, port, user and password (~/.pgpass) are right and the "
            f"database exists (createdb), or fix {config_hint}") from None
    finally:
        engine.dispose()
    return GradebookInfo(shown, backend, assignments, int(students), str(schema))


def _null_pool():
    from sqlalchemy.pool import NullPool

    return NullPool


def schema_revision() -> str:
    """The newest gradebook schema revision of the installed nbgrader, e.g. ``"e43177bfe90b"``.

    Read from nbgrader's own migration scripts with alembic's API, in this process.
    """
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import ALEMBIC_DIR

    return ScriptDirectory(ALEMBIC_DIR).get_current_head()


def stamp_new_gradebooks_in_process() -> None:
    """Make nbgrader stamp each new gradebook with ``schema_revision()`` (idempotent).

    nbgrader stamps a gradebook it creates with the revision printed by ``alembic heads`` run as a
    subprocess: 1.9 s of CPU each time (0.17 s in process), and ``FileNotFoundError`` when the
    environment's ``bin`` is not on ``PATH``. The same answer is read here. ``configure_nbgrader``
    installs it, so every nbgrader command that reads the course's ``nbgrader_config.py`` uses it.
    """
    import nbgrader.api

    nbgrader.api.get_alembic_version = schema_revision


def alembic_on_path() -> None:
    """nbgrader runs ``alembic`` from PATH: make this interpreter's scripts folder visible."""
    bindir = os.path.dirname(sys.executable)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")

"""A throwaway PostgreSQL server for the tests: Debian's server binaries, a cluster in a temporary
folder, listening on a free localhost port, with a password login (so URLs carry a real password).

As root the server runs as the ``postgres`` user (PostgreSQL refuses to run as root). Without the
binaries, ``find_bindir()`` returns None and the tests skip with ``HOW_TO_GET``.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

HOW_TO_GET = ("PostgreSQL's server binaries (initdb, pg_ctl) were not found: install them "
              "(Debian/Ubuntu, as root: apt-get install -y postgresql; .ci/run does this) and rerun")
USER, PASSWORD = "grader", "pw-Secret-42"


def find_bindir() -> Path | None:
    """The folder holding initdb and pg_ctl (newest Debian version first), or None."""
    for cand in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name), reverse=True):
        if (Path(cand) / "initdb").exists() and (Path(cand) / "pg_ctl").exists():
            return Path(cand)
    initdb = shutil.which("initdb")
    return Path(initdb).resolve().parent if initdb and shutil.which("pg_ctl") else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgServer:
    """``PgServer().start()``; ``url(db)`` for SQLAlchemy; ``create_database(name)``; ``stop()``."""

    def __init__(self, max_connections: int = 40):
        self.bindir = find_bindir()
        if self.bindir is None:
            raise RuntimeError(HOW_TO_GET)
        self.port = _free_port()
        self.max_connections = max_connections
        self.root = Path(tempfile.mkdtemp(prefix="bncourse-pg-"))
        self.data = self.root / "data"
        self._ids = None
        if os.geteuid() == 0:
            try:
                entry = pwd.getpwnam("postgres")  # created by Debian's postgresql package
            except KeyError:
                raise RuntimeError("PostgreSQL refuses to run as root and there is no 'postgres' user: "
                                   "reinstall Debian's postgresql package (it creates the user)") from None
            self._ids = (entry.pw_uid, entry.pw_gid)

    def _run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        def demote():
            if self._ids:
                os.setgid(self._ids[1])
                os.setuid(self._ids[0])
        return subprocess.run([str(self.bindir / args[0]), *args[1:]], preexec_fn=demote, capture_output=True,
                              text=True, timeout=120, cwd=self.root, **kw)

    def start(self) -> "PgServer":
        pwfile = self.root / "pw"
        pwfile.write_text(PASSWORD + "\n")
        if self._ids:
            for p in (self.root, pwfile):
                os.chown(p, *self._ids)
        init = self._run("initdb", "-D", str(self.data), "-U", USER, "--pwfile", str(pwfile),
                         "--auth-host=scram-sha-256", "--auth-local=trust", "-E", "UTF8", "--no-sync")
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed: {init.stderr[-2000:]}")
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                f"-c max_connections={self.max_connections} -c deadlock_timeout=200ms")
        start = self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.root / "log"),
                          "-o", opts)
        if start.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {start.stderr[-1000:]} {log[-2000:]}")
        return self

    @property
    def version(self) -> str:
        out = self._run("postgres", "--version").stdout.strip()
        return out.split(")")[-1].strip() or out

    def url(self, database: str, password: str = PASSWORD) -> str:
        return f"postgresql+psycopg://{USER}:{password}@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres", params=None) -> list:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD, dbname=database,
                             autocommit=True) as conn:
            cur = conn.execute(statement, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        self.sql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log(self) -> str:
        path = self.root / "log"
        return path.read_text() if path.exists() else ""

    def stop(self) -> None:
        if self.data.exists():
            self._run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", "-w")
        shutil.rmtree(self.root, ignore_errors=True)

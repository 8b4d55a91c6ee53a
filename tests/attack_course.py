"""A throwaway copy of the course for tests that grade fake students' submissions.

    with attack_course(tmp, cell_timeout=60) as (course, api):
        source, release = generated(course, api, "02_batchnorm_forward", "batchnorm_forward")
        submit(course, "mallory", "02_batchnorm_forward", "batchnorm_forward", nb)
        grading.grade("02_batchnorm_forward", course, jobs=2)

The copy lives in ``tmp``; for the block, BNCOURSE_CELL_TIMEOUT and a private exchange are set in
this process's environment (restored after it).
"""

from __future__ import annotations

import os
import shutil
from contextlib import contextmanager
from pathlib import Path

import nbformat

from conftest import COURSE, GENERATED

ON_TIME = "2026-11-20 10:00:00.000000 UTC"


@contextmanager
def attack_course(tmp: Path, cell_timeout: int = 60):
    """Yield ``(course, api)``: a copy of the course in ``tmp/course`` and its nbgrader API."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    from bncourse import grading

    old_env = dict(os.environ)
    os.environ.update(BNCOURSE_CELL_TIMEOUT=str(cell_timeout), BNCOURSE_EXCHANGE=str(tmp / "exchange"))
    try:
        course = tmp / "course"
        shutil.copytree(COURSE, course, ignore=shutil.ignore_patterns(*GENERATED, "__pycache__"))
        grading.alembic_on_path()
        cfg = grading.load_config(course)
        yield course, NbGraderAPI(coursedir=CourseDirectory(config=cfg), config=cfg)
    finally:
        os.environ.clear()
        os.environ.update(old_env)


def generated(course: Path, api, assignment: str, notebook: str):
    """``(source, release)`` notebooks of ``assignment`` after nbgrader generates its release."""
    assert api.generate_assignment(assignment, force=True)["success"]
    source = nbformat.read(course / "source" / assignment / f"{notebook}.ipynb", as_version=4)
    release = nbformat.read(course / "release" / assignment / f"{notebook}.ipynb", as_version=4)
    return source, release


def submit(course: Path, student: str, assignment: str, notebook: str, nb,
           files: dict[str, str] | None = None) -> Path:
    """Write ``nb`` (and ``files`` beside it) as ``student``'s on-time submission; the notebook's path."""
    dest = course / "submitted" / student / assignment
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    nbformat.write(nb, dest / f"{notebook}.ipynb")
    (dest / "timestamp.txt").write_text(ON_TIME)
    for name, text in (files or {}).items():
        (dest / name).write_text(text)
    return dest / f"{notebook}.ipynb"

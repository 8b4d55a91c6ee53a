"""The learner's workspace: student versions of the notebooks, generated from the course source.

Student versions are never kept by hand: ``student_versions()`` asks nbgrader to generate them
(``nbgrader generate_assignment --no-db``) in a temporary copy of the course, so they are exactly
what an instructor would release. ``prepare_workspace(dir)`` copies them into the learner's folder
and **never overwrites or deletes a file the learner has**: when the course has a newer version of
a notebook the learner already has, the new one is written beside it as
``<name>.course-update-<id>.ipynb`` and the report says so.

A manifest (``.bncourse/manifest.json`` in the workspace) remembers which version of each file the
course last offered, so an unchanged course changes nothing on a second run.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

WORKSPACE_ENV = "BNCOURSE_WORKSPACE"
COURSE_ENV = "BNCOURSE_COURSE"
MANIFEST = Path(".bncourse") / "manifest.json"
_GENERATED = {"release", "submitted", "autograded", "feedback", ".ipynb_checkpoints", "__pycache__"}


def course_dir() -> Path:
    """The nbgrader course root (holds nbgrader_config.py and source/)."""
    if os.environ.get(COURSE_ENV):
        return Path(os.environ[COURSE_ENV]).expanduser().resolve()
    return Path(__file__).resolve().parent.parent / "notebooks"


def default_workspace() -> Path:
    """Where ``bncourse start`` puts the learner's notebooks: $BNCOURSE_WORKSPACE or ~/bncourse-workspace."""
    return Path(os.environ.get(WORKSPACE_ENV) or Path.home() / "bncourse-workspace").expanduser()


def assignments(course: Path | None = None) -> list[str]:
    """The course's assignment names, in order (the folders under source/)."""
    source = (course or course_dir()) / "source"
    if not source.is_dir():
        raise FileNotFoundError(f"no course source folder at {source}")
    return sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith((".", "_")))


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _source_digest(course: Path) -> str:
    """One hash over the course source and config: the cache key of the student versions."""
    h = hashlib.sha256()
    for p in sorted([course / "nbgrader_config.py", *(course / "source").rglob("*")]):
        if p.is_file() and not (_GENERATED & set(p.relative_to(course).parts)):
            h.update(str(p.relative_to(course)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bncourse" / "student-versions"


def student_versions(course: Path | None = None) -> Path:
    """Generate (or reuse) the student versions; returns a folder holding <assignment>/<files>."""
    course = (course or course_dir()).resolve()
    names = assignments(course)
    cached = _cache_root() / _source_digest(course)
    if cached.is_dir() and all((cached / a).is_dir() for a in names):
        return cached
    with tempfile.TemporaryDirectory(prefix="bncourse-generate-") as tmp:
        work = Path(tmp) / "course"
        shutil.copytree(
            course, work, ignore=shutil.ignore_patterns(*_GENERATED, "gradebook.db", ".nbgrader.log")
        )
        for name in names:
            proc = subprocess.run(
                [sys.executable, "-m", "nbgrader", "generate_assignment", name, "--no-db", "--force"],
                cwd=work, capture_output=True, text=True,
            )
            if proc.returncode != 0:
                raise RuntimeError(f"nbgrader could not generate the student version of {name}:\n{proc.stderr[-2000:]}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=cached.parent))
        shutil.copytree(work / "release", staging, dirs_exist_ok=True)
        if cached.exists():
            shutil.rmtree(cached)
        staging.rename(cached)
    return cached


@dataclass
class FileAction:
    """What ``prepare_workspace`` did with one course file."""

    path: Path        # the learner's file
    action: str       # "created", "up to date", "kept yours; course update written beside it"
    update: Path | None = None


def _update_name(target: Path, digest: str) -> Path:
    suffix = "".join(target.suffixes) or ""
    stem = target.name[: len(target.name) - len(suffix)] if suffix else target.name
    return target.with_name(f"{stem}.course-update-{digest[:8]}{suffix}")


def prepare_workspace(workspace: Path | None = None, course: Path | None = None) -> list[FileAction]:
    """Copy the student versions into ``workspace``; never overwrite or delete the learner's files."""
    workspace = (workspace or default_workspace()).expanduser().resolve()
    course = (course or course_dir()).resolve()
    if workspace == course or course in workspace.parents:
        raise ValueError(f"the workspace {workspace} is inside the course source {course}; choose another folder")
    release = student_versions(course)
    workspace.mkdir(parents=True, exist_ok=True)
    manifest_path = workspace / MANIFEST
    manifest: dict[str, str] = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}

    actions: list[FileAction] = []
    for src in sorted(p for p in release.rglob("*") if p.is_file()):
        rel = src.relative_to(release).as_posix()
        target = workspace / rel
        digest = _digest(src)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, target)
            actions.append(FileAction(target, "created"))
        elif manifest.get(rel) == digest or _digest(target) == digest:
            actions.append(FileAction(target, "up to date"))
        else:
            beside = _update_name(target, digest)
            if not beside.exists():
                shutil.copy2(src, beside)
            actions.append(FileAction(target, "kept yours; course update written beside it", beside))
        manifest[rel] = digest
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return actions


def describe(actions: list[FileAction], workspace: Path) -> str:
    """A short report for the terminal."""
    lines = [f"Course workspace: {workspace}"]
    for a in actions:
        rel = a.path.relative_to(workspace)
        if a.action == "created":
            lines.append(f"  new      {rel}")
        elif a.update is not None:
            lines.append(
                f"  update   {rel}: the course has a newer version; yours is untouched and the new one is "
                f"{a.update.relative_to(workspace)}"
            )
    if all(a.action == "up to date" for a in actions):
        lines.append("  all notebooks are up to date; nothing was changed")
    return "\n".join(lines)


def lab_command(workspace: Path, open_browser: bool = True, port: int | None = None) -> list[str]:
    """The command that opens JupyterLab in the workspace (``--allow-root`` when run as root)."""
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={workspace}"]
    if not open_browser:
        cmd.append("--no-browser")
    if port is not None:
        cmd.append(f"--ServerApp.port={port}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd

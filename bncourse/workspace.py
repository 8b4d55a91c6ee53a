"""The learner's workspace: student versions of the notebooks, generated from the course source.

Student versions are never kept by hand: ``student_versions()`` asks nbgrader to generate them
(``nbgrader generate_assignment --no-db``) in a temporary copy of the course, so they are exactly
what an instructor would release. ``prepare_workspace(dir)`` copies them into the learner's folder
and **never overwrites or deletes a file the learner has**: when the course has a newer version of
a notebook the learner already has, the new one is written beside it as
``<name>.course-update-<id>.ipynb`` and the report says so.

A manifest (``.bncourse/manifest.json`` in the workspace) remembers which version of each file the
course last offered, so an unchanged course changes nothing on a second run.

The learner's JupyterLab is the course's, not the instructor's: ``write_lab_config(dir)`` puts a
Jupyter configuration in ``.bncourse/jupyter/`` that turns off nbgrader's instructor tools (the
Nbgrader menu, Create Assignment, the formgrader, the assignment and course lists; Validate stays)
and JupyterLab's news prompt, and runs kernels over local sockets instead of TCP where the system
has them. ``lab_command(dir)`` and ``lab_environment(dir)`` start JupyterLab with it; the
instructor's own ``jupyter lab`` in the course folder is not affected.
"""

from __future__ import annotations

import hashlib
import json
import logging
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
LAB_CONFIG = Path(".bncourse") / "jupyter"  # the learner's Jupyter configuration, on JUPYTER_CONFIG_PATH

# nbgrader 0.9.6 registers four server extensions (in etc/jupyter/jupyter_server_config.d/nbgrader.json)
# and one JupyterLab extension, @jupyter/nbgrader, with six plugins. A learner needs only Validate.
INSTRUCTOR_SERVER_EXTENSIONS = (
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.assignment_list",
    "nbgrader.server_extensions.course_list",
)
LEARNER_SERVER_EXTENSIONS = ("nbgrader.server_extensions.validate_assignment",)
INSTRUCTOR_LAB_PLUGINS = (
    "@jupyter/nbgrader:menu",
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:assignment-list",
    "@jupyter/nbgrader:course-list",
)
NEWS_PLUGIN = "@jupyterlab/apputils-extension:announcements"  # "get notified about Jupyter news?" prompt
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


def kernel_metadata() -> dict:
    """The notebook metadata JupyterLab writes when this environment's ``python3`` kernel starts:
    ``{"kernelspec": {...}, "language_info": {...}}``. The student versions carry it, so a notebook
    the learner only opened is not marked modified (and does not ask "Save your work?" on close)."""
    from ipykernel.ipkernel import IPythonKernel
    from jupyter_client.kernelspec import KernelSpecManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    return {"kernelspec": {"display_name": spec.display_name, "language": spec.language, "name": "python3"},
            "language_info": dict(IPythonKernel.language_info)}


def _cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bncourse" / "student-versions"


def student_versions(course: Path | None = None) -> Path:
    """Generate (or reuse) the student versions; returns a folder holding <assignment>/<files>."""
    course = (course or course_dir()).resolve()
    names = assignments(course)
    metadata = kernel_metadata()
    kernel = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:8]
    cached = _cache_root() / f"{_source_digest(course)}-{kernel}"
    if cached.is_dir() and all((cached / a).is_dir() for a in names):
        return cached
    import nbformat

    with tempfile.TemporaryDirectory(prefix="bncourse-generate-") as tmp:
        work = Path(tmp) / "course"
        shutil.copytree(
            course, work, ignore=shutil.ignore_patterns(*_GENERATED, "gradebook.db", ".nbgrader.log")
        )
        # One nbgrader process for every assignment ("*" matches each folder of source/): nbgrader's
        # own start-up takes seconds, so one call per assignment would pay it ten times.
        proc = subprocess.run(
            [sys.executable, "-m", "nbgrader", "generate_assignment", "*", "--no-db", "--force"],
            cwd=work, capture_output=True, text=True,
        )
        missing = [name for name in names if not (work / "release" / name).is_dir()]
        if proc.returncode != 0 or missing:
            raise RuntimeError(f"nbgrader could not generate the student versions of {', '.join(missing) or names}:\n"
                               f"{proc.stderr[-2000:]}")
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=cached.parent))
        shutil.copytree(work / "release", staging, dirs_exist_ok=True)
        for path in staging.rglob("*.ipynb"):
            nb = nbformat.read(path, as_version=4)
            nb.metadata.update(metadata)
            nbformat.write(nb, path)
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


def _trust(path: Path) -> None:
    """Sign a notebook the course just wrote, as ``jupyter trust`` would (JupyterLab then opens it
    without "not trusted" warnings; it signs again whenever the learner saves)."""
    if path.suffix != ".ipynb":
        return
    try:
        import nbformat
        from nbformat.sign import NotebookNotary

        NotebookNotary().sign(nbformat.read(str(path), as_version=4))
    except Exception:  # noqa: BLE001 - an unsigned notebook still works; trust is a courtesy
        pass


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
            _trust(target)
            actions.append(FileAction(target, "created"))
        elif manifest.get(rel) == digest or _digest(target) == digest:
            actions.append(FileAction(target, "up to date"))
        else:
            beside = _update_name(target, digest)
            if not beside.exists():
                shutil.copy2(src, beside)
                _trust(beside)
            actions.append(FileAction(target, "kept yours; course update written beside it", beside))
        manifest[rel] = digest
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    write_lab_config(workspace)
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


class TornadoPingWarning(logging.Filter):
    """Drops tornado's "websocket_ping_timeout (90000) cannot be longer than ..." warning, nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "websocket_ping_timeout" not in record.getMessage()


def write_lab_config(workspace: Path) -> Path:
    """Write the learner's Jupyter configuration into ``workspace/.bncourse/jupyter``; returns that folder.

    - ``jupyter_server_config.json``: nbgrader's instructor server extensions off, Validate on; kernels
      over IPC (local sockets) on POSIX, so ipykernel has no unencrypted TCP to warn about; tornado's
      warning about jupyter_server's websocket ping settings filtered out;
    - ``jupyter_nbconvert_config.json`` (POSIX): ``jupyter nbconvert --execute`` from a terminal in
      the Lab (which inherits ``JUPYTER_CONFIG_PATH``) runs its kernels over IPC as well;
    - ``labconfig/page_config.json``: nbgrader's instructor plugins and the news prompt off;
    - ``nbgrader_config.py``: an empty nbgrader configuration, so Validate finds one and says nothing.
    Ours alone (rewritten by every ``bncourse start``); the learner's notebooks are not touched.
    """
    folder = Path(workspace) / LAB_CONFIG
    (folder / "labconfig").mkdir(parents=True, exist_ok=True)
    server: dict = {"ServerApp": {
        "jpserver_extensions": {
            **{name: False for name in INSTRUCTOR_SERVER_EXTENSIONS},
            **{name: True for name in LEARNER_SERVER_EXTENSIONS},
        },
        # jupyter_server's websocket pings (every 30 s, a pong due within 90 s) read to tornado >= 6.5
        # as a timeout longer than the interval: it warns at the first notebook opened, and then
        # ignores its own copy of those numbers. Setting them equal would make jupyter_server close
        # live connections, so the one warning is filtered (see TornadoPingWarning) instead.
        "logging_config": {
            "filters": {"tornado_ping": {"()": f"{__name__}.TornadoPingWarning"}},
            "loggers": {"tornado.general": {"filters": ["tornado_ping"]}},
        },
    }}
    if os.name == "posix":
        server["KernelManager"] = {"transport": "ipc"}
        # `jupyter nbconvert --execute` in a terminal of this Lab reads this folder too: its kernels as well.
        nbconvert = {"KernelManager": {"transport": "ipc"}}
        (folder / "jupyter_nbconvert_config.json").write_text(json.dumps(nbconvert, indent=1) + "\n")
    (folder / "jupyter_server_config.json").write_text(json.dumps(server, indent=1) + "\n")
    page = {"disabledExtensions": {name: True for name in (*INSTRUCTOR_LAB_PLUGINS, NEWS_PLUGIN)}}
    (folder / "labconfig" / "page_config.json").write_text(json.dumps(page, indent=1) + "\n")
    (folder / "nbgrader_config.py").write_text(
        "# Written by `bncourse start`: a learner's Validate button needs no course settings.\n"
        "c = get_config()  # noqa: F821\n"
    )
    return folder


def lab_environment(workspace: Path, environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the learner's JupyterLab: ``environ`` (default ``os.environ``) with the
    workspace's ``.bncourse/jupyter`` first on ``JUPYTER_CONFIG_PATH`` (so it outranks the
    environment's own nbgrader settings, while the learner's ``~/.jupyter`` still wins)."""
    env = dict(os.environ if environ is None else environ)
    ours = str(Path(workspace).resolve() / LAB_CONFIG)
    rest = [p for p in env.get("JUPYTER_CONFIG_PATH", "").split(os.pathsep) if p and p != ours]
    env["JUPYTER_CONFIG_PATH"] = os.pathsep.join([ours, *rest])
    return env


def lab_command(workspace: Path, open_browser: bool = True, port: int | None = None) -> list[str]:
    """The command that opens JupyterLab in the workspace (``--allow-root`` when run as root).

    Run it with ``env=lab_environment(workspace)`` and ``cwd=workspace``, as ``bncourse start`` does.
    """
    cmd = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={workspace}"]
    if not open_browser:
        cmd.append("--no-browser")
    if port is not None:
        cmd.append(f"--ServerApp.port={port}")
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    return cmd

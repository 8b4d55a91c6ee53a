"""``bncourse doctor``: does everything the course needs work on this machine?

Each check is a ``Finding(name, ok, detail)``; the command prints them all and exits non-zero when
any check that a learner needs fails, with a message saying what to do. ``bncourse doctor --course
DIR`` also checks the instructor's side: the course's nbgrader gradebook (its ``db_url``) exists,
can be reached and holds nbgrader's tables; nothing is created while checking.
"""

from __future__ import annotations

import importlib
import os
import platform
import sys
from dataclasses import dataclass
from pathlib import Path

PACKAGES = (
    "numpy", "torch", "torchvision", "matplotlib", "jupyterlab", "nbgrader",
    "nbval", "tqdm", "ipywidgets", "sklearn",
)


@dataclass
class Finding:
    """One line of the doctor's report."""

    name: str
    ok: bool
    detail: str


def _package(name: str) -> Finding:
    try:
        module = importlib.import_module(name)
    except Exception as exc:  # noqa: BLE001 - any import failure is the finding
        return Finding(name, False, f"cannot be imported ({type(exc).__name__}: {exc}); reinstall with the README's first command")
    return Finding(name, True, getattr(module, "__version__", "installed"))


def _device() -> Finding:
    try:
        from bncourse.device import describe_device, get_device

        device = get_device(announce=False)
    except Exception as exc:  # noqa: BLE001
        return Finding("training device", False, f"could not be chosen ({type(exc).__name__}: {exc})")
    note = "" if device.type != "cpu" else "; training runs on the CPU (slower; fast mode still works)"
    return Finding("training device", True, describe_device(device) + note)


def _data() -> list[Finding]:
    try:
        from bncourse import data

        root = data.data_root()
        split = data.load_digits()
    except Exception as exc:  # noqa: BLE001
        return [Finding("offline data set", False, f"scikit-learn digits did not load ({type(exc).__name__}: {exc})")]
    writable = root.exists() or root.parent.exists()
    return [
        Finding("data cache", True, f"{root}" + ("" if root.exists() else " (created on first download)")
                + ("" if writable else "; its parent folder does not exist")),
        Finding("offline data set", True, f"digits: {len(split.y_train)} train / {len(split.y_test)} test images"),
    ]


def _course(course: str | os.PathLike | None = None) -> Finding:
    if course is not None:  # the instructor's course folder, not the package's copy of the notebooks
        source = Path(course).expanduser().resolve() / "source"
        names = sorted(p.name for p in source.iterdir() if p.is_dir() and not p.name.startswith(".")) \
            if source.is_dir() else []
        if not names:
            return Finding("course notebooks", False, f"no assignments in {source} (an nbgrader course keeps them "
                                                      "in source/<assignment>/)")
        return Finding("course notebooks", True, f"{len(names)} assignments in {source}: {', '.join(names)}")
    try:
        from bncourse.workspace import assignments, course_dir

        names = assignments()
    except Exception as exc:  # noqa: BLE001
        return Finding("course notebooks", False, f"not found ({exc}); install the course from its git checkout (pip install -e .)")
    return Finding("course notebooks", True, f"{len(names)} assignments in {course_dir()}")


def _gradebook(course: str | os.PathLike) -> Finding:
    """The gradebook that nbgrader and ``bncourse grade`` would use for the course in ``course``."""
    course = Path(course).expanduser().resolve()
    if not (course / "nbgrader_config.py").is_file():
        return Finding("gradebook", False, f"{course} has no nbgrader_config.py: pass the nbgrader course folder "
                                           "(the one holding nbgrader_config.py and source/)")
    try:
        from bncourse.grading.gradebook import check_gradebook
        from bncourse.grading.config import db_url_of

        info = check_gradebook(db_url_of(course), course_dir=course)
    except ValueError as exc:  # GradebookError: the URL (password masked) and what to do
        return Finding("gradebook", False, str(exc))
    except Exception as exc:  # noqa: BLE001 - e.g. a broken nbgrader_config.py
        return Finding("gradebook", False, f"the course's nbgrader configuration in {course} could not be read "
                                           f"({type(exc).__name__}: {exc})")
    return Finding("gradebook", True, str(info))


def run_checks(course: str | os.PathLike | None = None) -> list[Finding]:
    """Every check, in the order the report prints them; ``course``: also check that course's gradebook."""
    findings = [Finding("python", sys.version_info >= (3, 10), f"{platform.python_version()} ({sys.executable})")]
    findings += [_package(name) for name in PACKAGES]
    if all(f.ok for f in findings if f.name in ("torch", "torchvision")):
        findings.append(_device())
        findings += _data()
    findings.append(_course(course))
    if course is not None:
        findings.append(_gradebook(course))
    return findings


def format_report(findings: list[Finding]) -> str:
    width = max(len(f.name) for f in findings)
    lines = [f"{'ok ' if f.ok else 'BAD'}  {f.name:<{width}}  {f.detail}" for f in findings]
    bad = [f.name for f in findings if not f.ok]
    lines.append("")
    lines.append("Everything the course needs works." if not bad else f"Broken: {', '.join(bad)}. Fix these before starting.")
    return "\n".join(lines)

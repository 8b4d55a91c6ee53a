"""Why a submission is not graded: what ``precheck_submission`` sees before nbgrader runs it (a
missing or misnamed notebook, unreadable JSON, a link, the instructor's own material) and what
``reason_from_log`` reads in nbgrader's log after it failed. Each reason names what arrived."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

__all__ = ["INSTRUCTOR_MARKERS", "precheck_submission", "reason_from_log"]


def precheck_submission(submission: Path, expected: Iterable[str] = ()) -> str:
    """A reason nbgrader will fail on this submission before running it ('' if none seen).

    ``expected``: the assignment's notebook names (without ``.ipynb``); a missing or misnamed one is
    named with what was found instead (an LMS's ``batchnorm_forward-1.ipynb``, a learner's rename).
    """
    import nbformat

    found = sorted(p.name for p in submission.glob("*.ipynb"))
    missing = [f"{name}.ipynb" for name in expected if f"{name}.ipynb" not in found]
    if missing:
        others = [n for n in found if n[:-len(".ipynb")] not in set(expected)]
        what = ", ".join(others) if others else "no notebook at all"
        return (f"expected {' and '.join(missing)}, found {what} in {submission}: rename the file to the expected "
                f"name (or collect again) and grade again")
    for nb in sorted(submission.glob("*.ipynb")):
        try:
            nbformat.read(str(nb), as_version=4)
        except Exception as exc:  # noqa: BLE001 - any unreadable notebook is reported
            return f"{nb.name} is not a readable notebook (corrupted JSON?): {type(exc).__name__}: {str(exc)[:200]}"
    return _instructor_material(submission, {f"{name}.ipynb" for name in expected})


# What only the instructor's source notebooks hold (the student versions have them stripped).
INSTRUCTOR_MARKERS = (b"### BEGIN SOLUTION", b"### BEGIN HIDDEN TESTS")


def _instructor_material(submission: Path, notebooks: set[str] = frozenset()) -> str:
    """A reason if the submission holds a link (the course's collect keeps a student's links as links,
    ``bncourse.grading.exchange``; nbgrader's own followed them and copied the instructor's source:
    red team 2026-12-07) or a file beside its notebooks that holds the instructor's solution markers,
    else ''. Such a submission is not graded: the instructor reads it."""
    for p in sorted(submission.rglob("*")):
        if p.is_symlink():
            return f"{p.relative_to(submission)} is a symbolic link: a submission holds files, not links"
        if p.is_file() and p.name not in notebooks and p.stat().st_size <= 64 * 1024**2:
            data = p.read_bytes()
            marker = next((m for m in INSTRUCTOR_MARKERS if m in data), None)
            if marker:
                return (f"{p.relative_to(submission)} holds the instructor's solution markers ({marker.decode()}): "
                        f"the course's source notebooks reached the submission (a link followed by collect?); "
                        f"not graded, for the instructor to review")
    return ""


def reason_from_log(text: str) -> str:
    # What the kernel wrote to its own stdout/stderr is in the log as its own lines (bncourse.grading.kernel):
    # never read as the grader's words.
    text = "\n".join(ln for ln in text.splitlines() if not ln.startswith("  kernel| "))
    if "DeadKernelError" in text or "Kernel died" in text or "kernel died" in text:
        return "the kernel died while running the notebook (os._exit, a segfault or out of memory)"
    if "UnresponsiveKernelError" in text or "became unresponsive" in text:
        return "the kernel stopped responding and could not be interrupted after the time limit"
    if "Timeout waiting for IOPub output" in text and "Timeout waiting for execute reply" not in text:
        return ("a cell's outputs had not all arrived 15 s after it finished (GradingExecute.iopub_timeout); "
                "the grading machine may be overloaded: grade it again")
    if "CellTimeoutError" in text or "Timeout waiting for" in text:
        return ("a cell ran past the time limit and the kernel did not stop when interrupted "
                "(BNCOURSE_CELL_TIMEOUT sets the limit)")
    if "NotJSONError" in text or "does not appear to be JSON" in text or "JSONDecodeError" in text:
        return "a notebook is not valid JSON (corrupted file)"
    errors = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("[INFO]")]
    return (errors[-1][:300] if errors else "nbgrader could not grade this submission")

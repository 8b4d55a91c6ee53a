"""When a learner is stuck: a ladder of three hints per exercise, then the solution after trying.

In a notebook, after a check failed:

    from bncourse.hints import hint, solution
    hint("batchnorm_forward")       # the next hint: 1 a nudge, 2 the key equation, 3 the shape of the code
    hint("batchnorm_forward", 2)    # re-read one rung
    solution("batchnorm_forward")   # the course's reference, once your check has run on your own attempt

From a terminal: ``bncourse hint EXERCISE`` and ``bncourse solution NOTEBOOK EXERCISE``.

The ladder's position and the check runs are kept in the workspace's ``.bncourse/learner.json``
(``bncourse.hints.state``), so a restart does not reset them. Checks report a run with
``record_check(result)`` (one call; it never raises). In a grading kernel (``NBGRADER_EXECUTION``
set) ``hint()`` prints one line and nothing else unless the instructor set
``BNCOURSE_HINTS_IN_FEEDBACK=on``, and ``solution()`` is always off.
"""

from __future__ import annotations

import html
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bncourse.hints import solutions as _solutions
from bncourse.hints.state import LearnerState, find_workspace, state_path
from bncourse.hints.texts import ALIASES, EXERCISES, MISTAKE_HINTS, Exercise

__all__ = ["hint", "solution", "record_check", "mistake_id", "stuck_line", "find_exercise", "next_hint",
           "solution_for", "EXERCISES", "MISTAKE_HINTS"]

RUNG_NAMES = ("a nudge", "the key equation", "the shape of the code")
GRADING_NOTE = "(hints are not shown while a notebook is being graded)"
ON_WORDS = {"1", "on", "true", "yes"}


def mistake_id(name: str) -> str:
    """A mistake's stable id from its name: lower case, words joined by '-'.

    ``mistake_id("eps outside the square root") == "eps-outside-the-square-root"``.
    """
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def find_exercise(name: str) -> Exercise:
    """The exercise called ``name``: its id (the grade_id), the function or class the learner writes,
    or its check's name. ``KeyError`` listing the ids for anything else."""
    key = str(name).strip()
    key = key if key in EXERCISES else ALIASES.get(key, ALIASES.get(key.lower(), ""))
    if key not in EXERCISES:
        raise KeyError(f"no exercise called {name!r}; the exercises are: {', '.join(EXERCISES)}")
    return EXERCISES[key]


def stuck_line(exercise: str) -> str:
    """The last line a failed check can print: the exact call that shows the next hint."""
    try:
        ex = find_exercise(exercise)
    except KeyError:
        return ""
    return f"Stuck? Run hint('{ex.function}') for a hint (up to three), after `from bncourse.hints import hint`."


@dataclass
class Shown:
    """What ``hint()``/``solution()`` show: a title and a body, rendered as text or HTML."""

    title: str
    body: str
    note: str = ""
    code: bool = False  # the body is code (a solution): a <pre> block

    def __str__(self) -> str:
        return "\n".join(x for x in (self.title, self.body, self.note) if x)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        body = (f"<pre style='background:#f6f8fa;padding:6px'>{html.escape(self.body)}</pre>" if self.code
                else f"<p>{html.escape(self.body)}</p>")
        note = f"<p style='color:#666'>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<div style='border-left:4px solid #0969da;padding-left:8px'>"
                f"<p><b>{html.escape(self.title)}</b></p>{body}{note}</div>")


def _show(obj) -> None:
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(obj)
    else:
        print(obj)


def _state(directory=None) -> LearnerState:
    return LearnerState(state_path(directory))


def next_hint(exercise: str, rung: int | None = None, directory=None) -> Shown:
    """The next hint of ``exercise`` (or rung 1-3 when given), advancing the saved ladder."""
    ex = find_exercise(exercise)
    state = _state(directory)
    if rung is None:
        rung = state.advance(ex.id)
    elif rung not in (1, 2, 3):
        raise ValueError(f"rung must be 1, 2 or 3 (got {rung!r})")
    body = ex.hints[rung - 1]
    last = state.attempt(ex.id)
    extra = MISTAKE_HINTS.get(last.get("mistake") or "")
    if extra and last.get("passed") is False:
        body = f"{body}\nAbout the mistake your last check named: {extra}"
    note = (f"Next: hint('{ex.function}') for {RUNG_NAMES[rung]}." if rung < 3 else
            f"That was the last hint. After running the check on your own attempt, solution('{ex.function}') "
            "shows the course's reference solution.")
    return Shown(f"Hint {rung} of 3 for {ex.function} ({RUNG_NAMES[rung - 1]})", body, note)


def _hints_allowed_here() -> bool:
    if not _solutions.in_grading_kernel():
        return True
    return os.environ.get("BNCOURSE_HINTS_IN_FEEDBACK", "").strip().lower() in ON_WORDS


def hint(exercise: str | None = None, rung: int | None = None) -> None:
    """Show the next hint of ``exercise`` (default: the exercise whose check failed last here).

    ``rung``: 1, 2 or 3 to re-read one hint without moving the ladder on.
    """
    if not _hints_allowed_here():
        print(GRADING_NOTE)
        return
    if exercise is None:
        exercise = _last_failed(_state())
        if exercise is None:
            _show(Shown("Which exercise?", "Give its name, e.g. hint('batchnorm_forward'). Exercises: "
                        + ", ".join(EXERCISES)))
            return
    _show(next_hint(exercise, rung))


def _last_failed(state: LearnerState) -> str | None:
    attempts = state.read()["attempts"]
    failed = [k for k, v in attempts.items() if v.get("passed") is False and k in EXERCISES]
    return failed[-1] if failed else None


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    return get_ipython() is not None


def _history() -> list[str]:
    try:
        from IPython import get_ipython
    except ImportError:
        return []
    ip = get_ipython()
    return list(ip.user_ns.get("In", [])) if ip is not None else []


def solution_gate(ex: Exercise, directory=None, notebook: Path | None = None,
                  history: list[str] | None = None) -> _solutions.Gate:
    """Whether the reference solution of ``ex`` may be shown here, and if not, why."""
    ws = find_workspace(directory)
    off = _solutions.solutions_switched_off(ws)
    if off:
        return _solutions.Gate(False, off)
    state = _state(directory)
    if state.attempt(ex.id)["runs"] > 0:
        return _solutions.Gate(True)
    if _solutions.tried_in_history(ex, _history() if history is None else history) or (
            notebook is not None and _solutions.tried_in_notebook(ex, notebook)):
        state.record(ex.id, None)  # remember it: a restart must not close the gate again
        return _solutions.Gate(True)
    return _solutions.Gate(False, f"the solution opens once you have tried: write your {ex.function}, run its "
                                  f"check cell ({ex.check}) at least once, then ask again. Meanwhile "
                                  f"hint('{ex.function}') gives up to three hints.")


def solution_for(exercise: str, directory=None, notebook: Path | None = None,
                 history: list[str] | None = None) -> Shown:
    """The reference solution of ``exercise`` as ``Shown``, or the sentence saying why not yet."""
    ex = find_exercise(exercise)
    gate = solution_gate(ex, directory, notebook, history)
    if not gate.open:
        return Shown(f"No solution for {ex.function} yet", gate.reason)
    code = _solutions.reference_solution(ex)
    return Shown(f"The course's own reference solution for {ex.function} (notebook {ex.notebook})", code,
                 "One correct way among several: if yours passes the check, it is right too.", code=True)


def solution(exercise: str) -> None:
    """Show the course's reference solution of ``exercise``, once its check has run on your attempt."""
    if _solutions.in_grading_kernel():
        print("(solutions are not available while a notebook is being graded)")
        return
    try:
        shown = solution_for(exercise)
    except (FileNotFoundError, LookupError) as err:  # an install without the course's source notebooks
        shown = Shown(f"No reference solution here for {exercise}", str(err))
    _show(shown)


def record_check(result, directory=None) -> None:
    """Note one run of a check (a ``CheckResult``) in the workspace's learner.json; never raises.

    Reads ``result.exercise``, ``result.passed``, ``result.mistake_id`` when the check has one
    (else the id of the first name in ``result.explained``) and ``result.cases`` (a run on the
    untouched stub, every case 'not_attempted', is not an attempt). Does nothing while grading, and
    outside an IPython kernel unless ``directory`` is given (the grader re-judging a check is no attempt).
    """
    try:
        if _solutions.in_grading_kernel() or (directory is None and not _in_ipython()):
            return
        ex = find_exercise(getattr(result, "exercise", ""))
        cases = list(getattr(result, "cases", []) or [])
        if cases and all(getattr(c, "kind", "") == "not_attempted" for c in cases):
            return
        mistake = getattr(result, "mistake_id", None)
        explained = tuple(getattr(result, "explained", ()) or ())
        if explained and mistake not in MISTAKE_HINTS and mistake_id(explained[0]) in MISTAKE_HINTS:
            mistake = mistake_id(explained[0])  # the check's own id and ours may differ: ours has a hint
        _state(directory).record(ex.id, bool(getattr(result, "passed", False)), mistake or None)
    except Exception:  # noqa: BLE001 - a hint bookkeeping problem must never break a check cell
        return

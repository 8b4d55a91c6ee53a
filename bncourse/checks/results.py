"""What a check returns: a ``CheckResult`` of ``CaseResult`` rows, each with the kind of its outcome.

``Case`` (one seeded input), ``Mistake`` (a known wrong implementation) and ``Symptom`` (a named
property of the learner's outputs) are what a check is built from. A ``CheckResult`` renders as
HTML in JupyterLab and as text elsewhere; ``assert_passed()`` shows it and, on a failure, raises
``CheckFailed`` (an ``AssertionError`` whose traceback in IPython is only its one-line verdict: the
learner reads the table and the named mistake, not frames inside this package).
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

__all__ = ["KINDS", "CheckFailed", "Case", "Mistake", "Symptom", "Explanation", "CaseResult", "CheckResult", "combine"]

# What can go wrong in one case, in the order a diagnosis prefers them.
KINDS = ("passed", "delegated", "not_attempted", "raised", "returned", "mutated", "shape", "dtype", "values")


@dataclass(frozen=True)
class Case:
    """One seeded input: ``make_args()`` returns fresh positional arguments each call."""

    name: str
    make_args: Callable[[], tuple]


@dataclass(frozen=True)
class Mistake:
    """A known wrong implementation, with the name and hint the learner will read.

    ``only``: the outputs it must reproduce (default: every compared output).
    """

    name: str
    hint: str
    fn: Callable[..., Any]
    only: tuple = ()
    id: str = ""  # a stable short id (e.g. "unbiased-variance"); default: made from the name

    def __post_init__(self):
        object.__setattr__(self, "id", self.id or slug(self.name))


@dataclass(frozen=True)
class Symptom:
    """A named property of the learner's outputs on a failed case: ``test(outputs) -> bool``.

    ``describe(outputs) -> str``, when given, words the diagnosis from the first failed case's
    outputs instead of ``name: hint``.
    """

    name: str
    hint: str
    test: Callable[[Mapping[str, Any]], bool]
    describe: Callable[[Mapping[str, Any]], str] | None = None
    id: str = ""  # a stable short id; default: made from the name

    def __post_init__(self):
        object.__setattr__(self, "id", self.id or slug(self.name))


# Mistakes several exercises share get one id wherever they occur (hints are keyed by it).
_SHARED_IDS = {
    "eps outside the square root": "eps-outside-sqrt", "eps missing": "eps-missing",
    "running variance without eps": "eps-missing", "eps argument ignored": "eps-hard-coded",
    "gamma and beta swapped": "gamma-beta-swapped", "unbiased variance used to normalize": "unbiased-variance",
    "normalized with the unbiased variance": "unbiased-variance",
    "divided by the variance instead of the standard deviation": "divided-by-variance",
    "statistics over the wrong axis": "wrong-axis", "momentum convention flipped": "momentum-flipped",
    "momentum flipped": "momentum-flipped", "momentum argument ignored": "momentum-hard-coded",
    "dgamma computed from x instead of x_hat": "dgamma-from-x", "mean not subtracted": "mean-not-subtracted",
}


def slug(name: str) -> str:
    """A short stable id from a mistake's name: a shared one ("eps outside the square root" ->
    "eps-outside-sqrt"), else its first words ("momentum convention flipped" -> "momentum-convention-flipped")."""
    for start, shared in _SHARED_IDS.items():
        if name.lower().startswith(start):
            return shared
    words = "".join(ch if ch.isalnum() else " " for ch in name.lower()).split()
    return "-".join(words[:6])


Explanation = Union[Mistake, Symptom]


@dataclass
class CaseResult:
    """How the learner's function did on one case.

    ``kind``: one of ``KINDS``; ``wrong``: the outputs (or, for ``mutated``, the arguments) at
    fault; ``got``: the learner's outputs (not shown; the diagnosis reads them).
    """

    name: str
    passed: bool
    detail: str = ""
    kind: str = ""
    wrong: tuple = ()
    got: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        self.kind = self.kind or ("passed" if self.passed else "values")


@dataclass
class CheckResult:
    """The verdict of one check: per-case results and, on failure, the likely mistake."""

    exercise: str
    cases: list[CaseResult]
    diagnosis: str = ""
    tolerance: str = ""
    notes: list[str] = field(default_factory=list)
    explained: tuple = ()  # names of the known mistakes or symptoms the diagnosis names
    explained_ids: tuple = ()  # their stable ids (``Mistake.id``), in the same order

    @property
    def mistake_id(self) -> str:
        """The stable id of the mistake the diagnosis names ('' when none is named): keys hints."""
        return self.explained_ids[0] if self.explained_ids and not self.passed else ""

    @property
    def n_passed(self) -> int:
        return sum(c.passed is True for c in self.cases)

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed is True for c in self.cases)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def verdict(self) -> str:
        """In plain words: "all 7 cases passed", "4 of 7 cases passed"."""
        n = len(self.cases)
        if self.passed:
            return f"all {n} cases passed" if n > 1 else "the case passed"
        return f"{self.n_passed} of {n} case{'s' if n != 1 else ''} passed"

    @property
    def message(self) -> str:
        head = f"{self.exercise}: {self.verdict}"
        if self.passed:
            return head
        return f"{head}. Likely mistake: {self.diagnosis}" if self.diagnosis else head

    def __str__(self) -> str:
        lines = [self.message]
        for c in self.cases:
            mark = "pass" if c.passed else "FAIL"
            lines.append(f"  [{mark}] {c.name}" + (f": {c.detail}" if c.detail and not c.passed else ""))
        if self.tolerance:
            lines.append(f"  tolerance: {self.tolerance}")
        lines.extend(f"  note: {n}" for n in self.notes)
        return "\n".join(lines)

    __repr__ = __str__

    def _repr_html_(self) -> str:
        green, red = "#1a7f37", "#cf222e"
        color = green if self.passed else red
        rows = "".join(
            f"<tr><td style='text-align:left'>{html.escape(c.name)}</td>"
            f"<td style='color:{green if c.passed else red}'>{'pass' if c.passed else 'fail'}</td>"
            f"<td style='text-align:left'>{'' if c.passed else html.escape(c.detail)}</td></tr>"
            for c in self.cases
        )
        diagnosis = (f"<p style='color:{red}'><b>Likely mistake:</b> {html.escape(self.diagnosis)}</p>"
                     if self.diagnosis and not self.passed else "")
        notes = "".join(f"<p style='color:#666'>{html.escape(n)}</p>" for n in self.notes)
        tol = f"<p style='color:#666'>Tolerance: {html.escape(self.tolerance)}</p>" if self.tolerance else ""
        return (
            f"<div class='bncourse-check' style='border-left:4px solid {color};padding-left:8px'>"
            f"<p><b>{html.escape(self.exercise)}</b>: <span style='color:{color}'><b>{self.verdict}</b></span></p>"
            f"{diagnosis}<table><tr><th>case</th><th>result</th><th>what differs</th></tr>{rows}</table>"
            f"{tol}{notes}</div>"
        )

    def assert_passed(self) -> None:
        """Show the table; raise ``CheckFailed`` (an ``AssertionError``) unless every case passed.

        In a notebook the table is display data (nbgrader would read a returned value, an
        ``execute_result``, as a partial score), pass or fail; a failure then raises so that the test
        cell fails, and IPython shows only the one-line verdict in place of a traceback.
        """
        __tracebackhide__ = True  # pytest leaves this frame out of its report: the message is what matters
        shown = _show(self)
        _note_attempt(self)
        if not self.passed:
            raise CheckFailed(self, shown)


class CheckFailed(AssertionError):
    """A failed check, raised by ``CheckResult.assert_passed``: ``str()`` is the whole result as text.

    IPython renders an exception through ``_render_traceback_`` when it has one: here the verdict
    and the named mistake only, with no frame from inside the package (the table was displayed
    just above; where it was not, the text table follows).
    """

    def __init__(self, result: CheckResult, shown: bool = False):
        super().__init__(str(result))
        self.result = result
        self.shown = shown

    def __reduce__(self):  # across processes it travels as the plain AssertionError it renders as
        return AssertionError, (str(self),)

    def _render_traceback_(self) -> list[str]:
        lines = [f"AssertionError: {self.result.message}"]
        if not self.shown:
            lines += str(self.result).splitlines()[1:]
        stuck = _stuck_line(self.result.exercise)
        return lines + [stuck] if stuck else lines


# nbgrader, the progress report and the grader read a failed test cell's ``ename``: keep the builtin's.
CheckFailed.__name__ = "AssertionError"


def _note_attempt(result: CheckResult) -> None:
    """Tell the learner's hint ladder that this check ran (``bncourse.hints.record_check``; it records
    nothing while grading and never raises). The solution after trying opens on such a record."""
    try:
        from bncourse.hints import record_check
    except ImportError:  # a build of the package without hints
        return
    record_check(result)


def _stuck_line(exercise: str) -> str:
    """'Stuck? Run hint(...)': the exact call for the next hint ('' while grading or unknown)."""
    try:
        from bncourse.hints import solutions, stuck_line
    except ImportError:
        return ""
    return "" if solutions.in_grading_kernel() else stuck_line(exercise)


def _show(result: CheckResult) -> bool:
    """Display ``result`` when running inside IPython/Jupyter (True); do nothing elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return False
    if get_ipython() is None:
        return False
    display(result)
    return True


def combine(exercise: str, *results: CheckResult) -> CheckResult:
    """Join several results into one (e.g. float64 and float32 cases)."""
    failed = [r for r in results if not r.passed]
    return CheckResult(
        exercise,
        [c for r in results for c in r.cases],
        diagnosis=failed[0].diagnosis if failed else "",
        explained=failed[0].explained if failed else (),
        explained_ids=failed[0].explained_ids if failed else (),
        tolerance=results[0].tolerance if results else "",
        notes=list(dict.fromkeys(n for r in results for n in r.notes)),
    )

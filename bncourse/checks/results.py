"""What a check returns: a ``CheckResult`` of ``CaseResult`` rows, each with the kind of its outcome.

``Case`` (one seeded input), ``Mistake`` (a known wrong implementation) and ``Symptom`` (a named
property of the learner's outputs) are what a check is built from. A ``CheckResult`` renders as
HTML in JupyterLab and as text elsewhere; ``assert_passed()`` raises for nbgrader test cells.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Union

__all__ = ["KINDS", "Case", "Mistake", "Symptom", "Explanation", "CaseResult", "CheckResult", "combine"]

# What can go wrong in one case, in the order a diagnosis prefers them.
KINDS = ("passed", "delegated", "not_attempted", "raised", "returned", "mutated", "shape", "dtype", "values")
_MUTATION_HINT = "the function changed its input array in place; work on a copy or build a new array"


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

    @property
    def passed(self) -> bool:
        return bool(self.cases) and all(c.passed is True for c in self.cases)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def message(self) -> str:
        n_ok = sum(c.passed is True for c in self.cases)
        head = f"{self.exercise}: {'PASSED' if self.passed else 'FAILED'} ({n_ok}/{len(self.cases)} cases)"
        if self.passed:
            return head
        return f"{head}. {self.diagnosis}" if self.diagnosis else head

    def __str__(self) -> str:
        lines = [self.message]
        for c in self.cases:
            mark = "ok  " if c.passed else "FAIL"
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
        diagnosis = (f"<p><b>Likely mistake:</b> {html.escape(self.diagnosis)}</p>"
                     if self.diagnosis and not self.passed else "")
        notes = "".join(f"<p style='color:#666'>{html.escape(n)}</p>" for n in self.notes)
        tol = f"<p style='color:#666'>Tolerance: {html.escape(self.tolerance)}</p>" if self.tolerance else ""
        verdict = "passed" if self.passed else "failed"
        return (
            f"<div style='border-left:4px solid {color};padding-left:8px'>"
            f"<p><b>{html.escape(self.exercise)}</b>: <span style='color:{color}'><b>{verdict}</b></span></p>"
            f"{diagnosis}<table><tr><th>case</th><th>result</th><th>what differs</th></tr>{rows}</table>"
            f"{tol}{notes}</div>"
        )

    def assert_passed(self) -> None:
        """Raise ``AssertionError`` (the diagnosis as its message) unless every case passed.

        A pass shows the table in a notebook as display data: nbgrader would read a returned value
        (an ``execute_result``) as a partial score.
        """
        __tracebackhide__ = True  # pytest leaves this frame out of its report: the message is what matters
        if not self.passed:
            raise AssertionError(str(self))
        _show(self)


def _show(result: CheckResult) -> None:
    """Display ``result`` when running inside IPython/Jupyter; do nothing elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is not None:
        display(result)


def combine(exercise: str, *results: CheckResult) -> CheckResult:
    """Join several results into one (e.g. float64 and float32 cases)."""
    failed = [r for r in results if not r.passed]
    return CheckResult(
        exercise,
        [c for r in results for c in r.cases],
        diagnosis=failed[0].diagnosis if failed else "",
        explained=failed[0].explained if failed else (),
        tolerance=results[0].tolerance if results else "",
        notes=list(dict.fromkeys(n for r in results for n in r.notes)),
    )

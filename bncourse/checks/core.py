"""The autograder's engine: run a learner's function on seeded cases and say why it failed.

A check is ``check_function(...)``: it calls the learner's function once per case, compares what
comes back with the reference, and decides. Every case's outcome is data: a ``CaseResult`` whose
``kind`` says what went wrong (``KINDS``: shape, dtype, mutated, raised, values, ...), with the
learner's outputs kept for the diagnosis. The verdict is computed once, from those outcomes; the
table a learner sees in JupyterLab, the text elsewhere, ``result.assert_passed()`` in an nbgrader
test cell and the grader's re-judging (``bncourse.checks.replay``) all render that one decision.

The diagnosis is found from the learner's outputs too: the first ``Symptom`` (a named property
of the outputs) or known ``Mistake`` (a wrong implementation that reproduces them) in the order
the check lists them; else the first structural problem (shape, dtype, in-place change, error).

    result = check_function(
        "standardize", learner_fn, reference_fn,
        cases=[Case("N=5, D=2", lambda: (rng.normal(size=(5, 2)),))],
        mistakes=[Mistake("divided by the variance", "use the standard deviation", buggy_fn)],
    )

Delegation: a learner's function that hands the exercise to the course's own implementation (a
function or class of the same name anywhere in ``bncourse``, or ``forbidden=`` names) or, in a
numpy exercise, to torch's normalization, fails every case (kind ``delegated``). The kernel
watches the calls the learner's function makes (``bncourse.checks.delegation``); the grader finds
the same by reading the submission's source, and does not trust the kernel.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

from bncourse.checks import delegation, replay
from bncourse.checks.calls import Call, InputChanged, changed_names, safe_call
from bncourse.checks.compare import as_outputs, compare_arrays, difference
from bncourse.checks.diagnosis import diagnose
from bncourse.checks.results import KINDS, Case, CaseResult, CheckResult, Explanation, Mistake, Symptom, combine

__all__ = ["Case", "CaseResult", "CheckResult", "Mistake", "Symptom", "check_function", "compare_arrays",
           "combine", "safe_call", "KINDS"]


def check_function(
    exercise: str,
    learner_fn: Callable,
    reference_fn: Callable,
    cases: Sequence[Case],
    mistakes: Sequence[Explanation] | Callable[[], Sequence[Explanation]] = (),
    *,
    outputs: Sequence[str] = ("out",),
    compare: Sequence[str] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    check_dtype: bool = True,
    arg_names: Sequence[str] = (),
    in_place: Mapping[str, tuple[str, str]] | None = None,
    forbidden: Sequence[str] = (),
    forbid_torch: str = "normalization",
    explain_error: Callable[[str, str], str] | None = None,
) -> CheckResult:
    """Run ``learner_fn`` and ``reference_fn`` on every case and diagnose the failures.

    Args:
        outputs: names of the values the function returns (one name: a single value).
        compare: which of those to compare (default: all); e.g. leave a cache out.
        rtol, atol: the tolerance of ``np.isclose``, compared in float64.
        mistakes: ``Mistake`` and ``Symptom`` explanations, tried in this order; or a function that
            returns them (``catalogue.lazy(exercise)``), called only to diagnose a failure.
        arg_names, in_place: names of the positional arguments, and for some of them the
            (name, hint) of the mistake "changed in place" (default: a generic sentence).
        forbidden: more names of the course's implementations the learner may not call (the
            exercise's own name and the reference's are always forbidden).
        forbid_torch: which of torch's own layers the learner may not call: "normalization" (a
            numpy exercise: batch, layer, group, instance norm), "batch_norm", "folding" (torch's
            ``fuse_*_bn_*`` helpers) or "" (none).
        explain_error: ``(error type, error text) -> likely mistake`` ('' if unknown) for a
            function that raised.
    """
    compare = list(compare or outputs)
    tolerance = f"rtol={rtol:g}, atol={atol:g}"
    rule = delegation.Rule.of(delegation.forbidden_names(exercise, reference_fn, forbidden), forbid_torch)
    if not callable(learner_fn):
        return CheckResult(exercise, [CaseResult("setup", False, f"expected a function, got {type(learner_fn).__name__}",
                                                 kind="returned")],
                           diagnosis="pass the function itself (no parentheses after its name)", tolerance=tolerance)
    learner = replay.Learner(exercise, learner_fn, rule)
    if replay.recording_only():  # a grading kernel: record the learner's outputs; the grader judges them
        return _recorded(exercise, cases, learner, tolerance)
    if learner.delegated:  # the grader read the submission and found the hand-over
        return _delegated(exercise, cases, learner.delegated, tolerance)
    results: list[CaseResult] = []
    notes: list[str] = []
    for case in cases:
        call = learner.call(case)
        notes.extend(w for w in call.warnings if w not in notes)
        results.append(_judge(case, call, reference_fn, outputs, compare, rtol, atol, check_dtype, arg_names))
    learner.finish()
    result = CheckResult(exercise, results, tolerance=tolerance, notes=notes)
    if not result.passed:
        found: list = []
        explanations = _explanations(mistakes)
        result.diagnosis = diagnose(result.cases, cases, explanations, reference_fn, outputs, compare, rtol, atol,
                                    in_place or {}, explain_error, found)
        result.explained = tuple(ex.name for ex in found)
        result.explained_ids = tuple(ex.id for ex in found)
    return result


def _explanations(mistakes) -> list:
    """The check's known mistakes; none when the catalogue is out of reach (a grading kernel's stub)."""
    if not callable(mistakes):
        return list(mistakes)
    try:
        return list(mistakes())
    except Exception:  # noqa: BLE001 - without the catalogue the verdict stands, unnamed
        return []


class _Recorded(CheckResult):
    """A grading kernel's result: the outputs were recorded; the verdict is the grader's, not shown here."""

    def assert_passed(self) -> None:
        return None  # nothing to show: the grader's verdict replaces this cell's outputs

    def __str__(self) -> str:
        return f"{self.exercise}: {len(self.cases)} cases recorded; the grader judges them outside this kernel"

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return f"<p>{self}</p>"


def _recorded(exercise: str, cases: Sequence[Case], learner, tolerance: str) -> CheckResult:
    """Call the learner's function on every case and publish the receipt; judge nothing (no reference)."""
    for case in cases:
        learner.call(case)
    learner.finish()
    note = "recorded for the grader, which judges it outside this kernel"
    return _Recorded(exercise, [CaseResult(c.name, True, note) for c in cases], tolerance=tolerance, notes=[note])


def _delegated(exercise: str, cases: Sequence[Case], what: str, tolerance: str) -> CheckResult:
    detail = f"handed the work to {what}"
    return CheckResult(exercise, [CaseResult(c.name, False, detail, kind="delegated") for c in cases],
                       diagnosis=f"{delegation.HINT} ({detail})", tolerance=tolerance)


def _judge(case, call: Call, reference_fn, outputs, compare, rtol, atol, check_dtype, arg_names) -> CaseResult:
    """One case's outcome, from the learner's call (live or recorded)."""
    if call.delegated:
        return CaseResult(case.name, False, f"handed the work to {call.delegated}", kind="delegated")
    if call.error_type == InputChanged.__name__:  # a runner's kept(...) saw the caller's objects change
        names = changed_names(call.error)
        return CaseResult(case.name, False, f"changed in place: {', '.join(names)}", kind="mutated", wrong=names)
    if call.error:
        kind = "not_attempted" if call.error_type == "NotImplementedError" else "raised"
        return CaseResult(case.name, False, f"raised {call.error}", kind=kind, wrong=(call.error_type,))
    got, problem = as_outputs(call.value, outputs)
    if problem:
        return CaseResult(case.name, False, problem, kind="returned")
    if call.mutated:
        args = tuple(arg_names[i] if i < len(arg_names) else f"argument {i}" for i in call.mutated)
        return CaseResult(case.name, False, f"changed in place: {', '.join(args)}", kind="mutated", wrong=args,
                          got=got)
    expected, _ = as_outputs(reference_fn(*case.make_args()), outputs)
    found = [(k, *difference(k, got[k], expected[k], rtol, atol, check_dtype)) for k in compare]
    found = [(k, kind, msg) for k, kind, msg in found if kind]
    if not found:
        return CaseResult(case.name, True, got=got)
    kind = min((kind for _, kind, _ in found), key=KINDS.index)
    more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
    return CaseResult(case.name, False, "; ".join(msg for _, _, msg in found[:3]) + more, kind=kind,
                      wrong=tuple(k for k, _, _ in found), got=got)

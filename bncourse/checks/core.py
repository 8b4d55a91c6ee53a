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

import html
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from bncourse.checks import delegation, replay
from bncourse.checks.calls import Call, safe_call

# Captured once at import, so a learner's cell that later replaces numpy's functions cannot
# change how the checker compares arrays. Every notebook's setup cell imports bncourse.checks
# before the learner's first cell runs; the grader re-judges with genuine numpy regardless.
_asarray = np.asarray
_isclose = np.isclose
_isfinite = np.isfinite
_abs = np.abs
_argmax = np.argmax
_unravel_index = np.unravel_index
_errstate = np.errstate
_ndarray = np.ndarray

__all__ = ["Case", "CaseResult", "CheckResult", "Mistake", "Symptom", "check_function", "compare_arrays",
           "combine", "safe_call", "KINDS"]

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


# ---------------------------------------------------------------------------------------------
# Comparing arrays: '' or one sentence, with the kind of difference
# ---------------------------------------------------------------------------------------------


def _difference(name: str, got: Any, expected: Any, rtol: float, atol: float, check_dtype: bool) -> tuple[str, str]:
    """('', '') when ``got`` matches ``expected``; else (kind, sentence)."""
    if got is None:
        return "shape", f"{name} is None (did the function forget to return it?)"
    if type(got) is not _ndarray:
        return "shape", f"{name} should be a numpy array, got {type(got).__name__}"
    exp = _asarray(expected)
    if got.shape != exp.shape:
        return "shape", f"{name} has shape {got.shape}, expected {exp.shape}"
    if check_dtype and got.dtype != exp.dtype:
        return "dtype", f"{name} has dtype {got.dtype}, expected {exp.dtype} (keep the input's dtype)"
    if got.dtype.kind not in "fciub":
        return "dtype", f"{name} has non-numeric dtype {got.dtype}"
    g, e = got.astype(np.float64), exp.astype(np.float64)
    if not _isfinite(g).all() and _isfinite(e).all():
        return "values", f"{name} contains NaN or inf"
    with _errstate(all="ignore"):
        close = _isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return "", ""
    err = _abs(g - e)
    err[close] = 0
    idx = _unravel_index(int(_argmax(err)), err.shape) if err.ndim else ()
    return "values", (
        f"{name}: {int((~close).sum())} of {close.size} values differ; largest difference {float(err[idx]):.3g} "
        f"at index {tuple(int(i) for i in idx)} (expected {float(e[idx]):.6g}, got {float(g[idx]):.6g})"
    )


def compare_arrays(name: str, got: Any, expected: Any, rtol: float, atol: float, check_dtype: bool = True) -> str:
    """'' when ``got`` matches ``expected``; otherwise one sentence saying what differs."""
    return _difference(name, got, expected, rtol, atol, check_dtype)[1]


def _as_outputs(value: Any, names: Sequence[str]) -> tuple[dict[str, Any], str]:
    """Split a return value into named outputs; the second item is an error sentence or ''."""
    if len(names) == 1:
        return {names[0]: value}, ""
    if value is None:
        return {}, f"the function returned None; it should return {len(names)} values ({', '.join(names)})"
    if type(value) not in (tuple, list):
        return {}, f"the function should return a tuple ({', '.join(names)}), got {type(value).__name__}"
    if len(value) != len(names):
        return {}, f"the function returned {len(value)} values, expected {len(names)} ({', '.join(names)})"
    return dict(zip(names, value)), ""


# ---------------------------------------------------------------------------------------------
# The generic check
# ---------------------------------------------------------------------------------------------


def check_function(
    exercise: str,
    learner_fn: Callable,
    reference_fn: Callable,
    cases: Sequence[Case],
    mistakes: Sequence[Explanation] = (),
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
        mistakes: ``Mistake`` and ``Symptom`` explanations, tried in this order.
        arg_names, in_place: names of the positional arguments, and for some of them the
            (name, hint) of the mistake "changed in place" (default: a generic sentence).
        forbidden: more names of the course's implementations the learner may not call (the
            exercise's own name and the reference's are always forbidden).
        forbid_torch: which of torch's own layers the learner may not call: "normalization" (a
            numpy exercise: batch, layer, group, instance norm), "batch_norm" or "" (none).
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
        result.diagnosis = diagnose(result.cases, cases, mistakes, reference_fn, outputs, compare, rtol, atol,
                                    in_place or {}, explain_error)
    return result


def _delegated(exercise: str, cases: Sequence[Case], what: str, tolerance: str) -> CheckResult:
    detail = f"handed the work to {what}"
    return CheckResult(exercise, [CaseResult(c.name, False, detail, kind="delegated") for c in cases],
                       diagnosis=f"{delegation.HINT} ({detail})", tolerance=tolerance)


def _judge(case, call: Call, reference_fn, outputs, compare, rtol, atol, check_dtype, arg_names) -> CaseResult:
    """One case's outcome, from the learner's call (live or recorded)."""
    if call.delegated:
        return CaseResult(case.name, False, f"handed the work to {call.delegated}", kind="delegated")
    if call.error:
        kind = "not_attempted" if call.error_type == "NotImplementedError" else "raised"
        return CaseResult(case.name, False, f"raised {call.error}", kind=kind, wrong=(call.error_type,))
    got, problem = _as_outputs(call.value, outputs)
    if problem:
        return CaseResult(case.name, False, problem, kind="returned")
    if call.mutated:
        args = tuple(arg_names[i] if i < len(arg_names) else f"argument {i}" for i in call.mutated)
        return CaseResult(case.name, False, f"changed in place: {', '.join(args)}", kind="mutated", wrong=args,
                          got=got)
    expected, _ = _as_outputs(reference_fn(*case.make_args()), outputs)
    found = [(k, *_difference(k, got[k], expected[k], rtol, atol, check_dtype)) for k in compare]
    found = [(k, kind, msg) for k, kind, msg in found if kind]
    if not found:
        return CaseResult(case.name, True, got=got)
    kind = min((kind for _, kind, _ in found), key=KINDS.index)
    more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
    return CaseResult(case.name, False, "; ".join(msg for _, _, msg in found[:3]) + more, kind=kind,
                      wrong=tuple(k for k, _, _ in found), got=got)


# ---------------------------------------------------------------------------------------------
# One diagnosis, from the outcomes
# ---------------------------------------------------------------------------------------------


def diagnose(results: Sequence[CaseResult], cases: Sequence[Case], explanations: Sequence[Explanation],
             reference_fn: Callable, outputs: Sequence[str], compare: Sequence[str], rtol: float, atol: float,
             in_place: Mapping[str, tuple[str, str]], explain_error: Callable | None = None) -> str:
    """The likely mistake behind the failed cases, decided from their kinds and the learner's outputs."""
    failed = [(r, c) for r, c in zip(results, cases) if not r.passed]
    kinds = {r.kind for r, _ in failed}
    first = {k: next(r for r, _ in failed if r.kind == k) for k in kinds}
    if "delegated" in kinds:
        return f"{delegation.HINT} ({first['delegated'].detail})"
    if "not_attempted" in kinds:
        return "not attempted yet: the function still raises NotImplementedError"
    if "raised" in kinds:
        raised = first["raised"]
        known = explain_error(raised.wrong[0], raised.detail) if explain_error else ""
        return known or f"the function {raised.detail.split(' (at')[0]}"
    if "returned" in kinds:
        return first["returned"].detail
    if "mutated" in kinds:
        args = first["mutated"].wrong
        named = [in_place[a] for a in args if a in in_place]
        if named:
            return f"{named[0][0]}: {named[0][1]} (changed: {', '.join(args)})"
        return f"the input array modified in place ({', '.join(args)}): {_MUTATION_HINT}"
    if kinds == {"dtype"}:
        # Right values in the wrong dtype: no value mistake may be blamed (some match within tolerance),
        # only a symptom the check names for it.
        symptoms = [ex for ex in explanations if isinstance(ex, Symptom)]
        named = _explain(failed, symptoms, outputs, compare, rtol, atol)
        return named or f"wrong output dtype: {first['dtype'].detail.split('; ')[0]}; a float32 input must give float32 outputs"
    memo: dict = {}
    explained = _explain(failed, explanations, outputs, compare, rtol, atol, reference_fn, memo)
    if explained:
        return explained
    if len(compare) > 1:  # no single mistake explains every output: try each output on its own
        parts = [f"[{k}] {m}" for k in compare
                 if (m := _explain([(r, c) for r, c in failed if k in r.wrong], explanations, outputs, [k], rtol, atol,
                                   reference_fn, memo))]
        if parts:
            return "more than one mistake: " + "; ".join(parts)
    if "shape" in kinds:
        return f"wrong output shape: {first['shape'].detail}"
    return "the values differ from the reference (see the cases below)"


def _explain(failed, explanations, outputs, compare, rtol, atol, reference_fn=None, memo: dict | None = None) -> str:
    """The first explanation that fits every failed case (on ``compare``).

    A mistake fits a case when it reproduces the learner's outputs and itself gets wrong every
    output the learner got wrong (a mistake that changes nothing there explains nothing).
    """
    if not failed:
        return ""
    memo = {} if memo is None else memo
    for ex in explanations:
        if isinstance(ex, Symptom):
            fits = all(_symptom(ex, r.got) for r, _ in failed)
        else:
            keys = [k for k in (ex.only or compare) if k in compare]
            fits = bool(keys) and all(
                set(keys) & set(r.wrong)
                and _reproduces(ex, c, r.got, outputs, keys, rtol, atol, memo)
                and (reference_fn is None
                     or all(_changes(ex, c, outputs, k, reference_fn, memo) for k in r.wrong if k in keys))
                for r, c in failed)
        if fits and isinstance(ex, Symptom) and ex.describe is not None:
            return _symptom(ex, failed[0][0].got, ex.describe) or ex.name
        if fits:
            return f"{ex.name}: {ex.hint}" if ex.hint else ex.name
    return ""


def _symptom(symptom: Symptom, got: Mapping[str, Any], read: Callable | None = None) -> Any:
    """``symptom.test(got)`` (or ``read(got)``); False when it cannot be read off these outputs."""
    try:
        with warnings.catch_warnings(), _errstate(all="ignore"):
            warnings.simplefilter("ignore")
            return (read or (lambda g: bool(symptom.test(g))))(got)
    except Exception:  # noqa: BLE001 - a symptom that cannot be read off these outputs does not fit
        return False


def _outputs_of(fn: Callable, case: Case, outputs, memo: dict) -> dict | None:
    """``fn``'s outputs on ``case`` (None if it raised or returned the wrong structure), computed once."""
    key = (id(fn), case.name)
    if key not in memo:
        call = safe_call(fn, case.make_args())
        mine, problem = ({}, "error") if call.error else _as_outputs(call.value, outputs)
        memo[key] = None if problem else mine
    return memo[key]


def _same(key, a, b, rtol, atol) -> bool:
    return (a is None and b is None) or not _difference(key, a, b, rtol, atol, False)[0]


def _reproduces(mistake: Mistake, case: Case, got: Mapping, outputs, keys, rtol, atol, memo) -> bool:
    mine = _outputs_of(mistake.fn, case, outputs, memo)
    return mine is not None and all(k in got and k in mine and _same(k, got[k], mine[k], rtol * 10, atol * 10)
                                    for k in keys)


def _changes(mistake: Mistake, case: Case, outputs, key: str, reference_fn: Callable, memo: dict) -> bool:
    """Does ``mistake`` itself get output ``key`` wrong? (Only then may it explain a wrong ``key``.)"""
    mine = _outputs_of(mistake.fn, case, outputs, memo)
    right = _outputs_of(reference_fn, case, outputs, memo)
    return mine is not None and right is not None and not _same(key, mine[key], right[key], 1e-6, 1e-9)


def combine(exercise: str, *results: CheckResult) -> CheckResult:
    """Join several results into one (e.g. float64 and float32 cases)."""
    failed = [r for r in results if not r.passed]
    return CheckResult(
        exercise,
        [c for r in results for c in r.cases],
        diagnosis=failed[0].diagnosis if failed else "",
        tolerance=results[0].tolerance if results else "",
        notes=list(dict.fromkeys(n for r in results for n in r.notes)),
    )

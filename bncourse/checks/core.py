"""The autograder's engine: run a learner's function on seeded cases and say why it failed.

A check is ``check_function(...)``: it calls the learner's function on several cases, compares
what comes back with the reference, and when a case fails it asks each known ``Mistake`` whether
it reproduces the learner's output. The result is a ``CheckResult``: it renders as HTML in
JupyterLab, as text elsewhere, and ``result.assert_passed()`` raises ``AssertionError`` with the
diagnosis for nbgrader test cells. The checker never lets the learner's exception, warning or
odd return value escape as a traceback from inside it; a passing check writes nothing to stderr.

    result = check_function(
        "standardize", learner_fn, reference_fn,
        cases=[Case("N=5, D=2", lambda: (rng.normal(size=(5, 2)),))],
        mistakes=[Mistake("divided by the variance", "use the standard deviation", buggy_fn)],
    )
"""

from __future__ import annotations

import html
import io
import os
import sys
import tempfile
import traceback
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bncourse.checks import replay

# Captured once at import, so a learner's cell that later replaces numpy's functions cannot
# change how the checker compares arrays.
_asarray = np.asarray
_isclose = np.isclose
_isfinite = np.isfinite
_abs = np.abs
_argmax = np.argmax
_unravel_index = np.unravel_index
_errstate = np.errstate
_ndarray = np.ndarray
_array_equal = np.array_equal
_copy = np.copy

Outputs = Mapping[str, Any]


@dataclass(frozen=True)
class Case:
    """One seeded input: ``make_args()`` returns fresh positional arguments each call."""

    name: str
    make_args: Callable[[], tuple]


@dataclass(frozen=True)
class Mistake:
    """A known wrong implementation, with the name and hint the learner will read."""

    name: str
    hint: str
    fn: Callable[..., Any]


@dataclass
class CaseResult:
    """How the learner's function did on one case."""

    name: str
    passed: bool
    detail: str = ""


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
        color = "#1a7f37" if self.passed else "#cf222e"
        rows = "".join(
            "<tr><td style='text-align:left'>{}</td><td style='color:{}'>{}</td>"
            "<td style='text-align:left'>{}</td></tr>".format(
                html.escape(c.name),
                "#1a7f37" if c.passed else "#cf222e",
                "pass" if c.passed else "fail",
                html.escape(c.detail) if not c.passed else "",
            )
            for c in self.cases
        )
        diagnosis = (
            f"<p><b>Likely mistake:</b> {html.escape(self.diagnosis)}</p>" if self.diagnosis and not self.passed else ""
        )
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


def _show(result: "CheckResult") -> None:
    """Display ``result`` when running inside IPython/Jupyter; do nothing elsewhere."""
    try:
        from IPython import get_ipython
        from IPython.display import display
    except ImportError:
        return
    if get_ipython() is not None:
        display(result)


# ---------------------------------------------------------------------------------------------
# Calling the learner's function safely
# ---------------------------------------------------------------------------------------------


@dataclass
class Call:
    """What happened when a function was called: its return value or the error it raised."""

    value: Any = None
    error: str = ""
    warnings: list[str] = field(default_factory=list)
    mutated: list[int] = field(default_factory=list)  # positions of array arguments changed in place


def _learner_frame(tb) -> str:
    """The last traceback line that is not inside bncourse, as ``line N: code``."""
    frames = [f for f in traceback.extract_tb(tb) if "bncourse" not in (f.filename or "")]
    if not frames:
        return ""
    f = frames[-1]
    where = f"line {f.lineno}" if f.lineno else ""
    return f" (at {where}: {f.line.strip()})" if f.line else (f" (at {where})" if where else "")


class _quiet_stderr:
    """Divert stderr (Python's and file descriptor 2) while the learner's code runs.

    nbgrader scores a test cell 0 when anything reaches stderr; a warning the learner's code (or
    torch's C++ side) prints is reported as a note instead. ``getvalue()`` gives what was written.
    """

    def __enter__(self):
        self._buf = io.StringIO()
        self._old = sys.stderr
        sys.stderr = self._buf
        self._fd_saved = self._tmp = None
        try:
            sys.__stderr__ and sys.__stderr__.flush()
            self._tmp = tempfile.TemporaryFile()
            self._fd_saved = os.dup(2)
            os.dup2(self._tmp.fileno(), 2)
        except (OSError, ValueError, AttributeError):  # no usable fd 2 (some embedded interpreters)
            self._fd_saved = None
        return self

    def __exit__(self, *exc):
        sys.stderr = self._old
        if self._fd_saved is not None:
            os.dup2(self._fd_saved, 2)
            os.close(self._fd_saved)
        if self._tmp is not None:
            self._tmp.seek(0)
            self._buf.write(self._tmp.read().decode("utf-8", "replace"))
            self._tmp.close()
        return False

    def getvalue(self) -> str:
        return self._buf.getvalue()


def safe_call(fn: Callable, args: tuple) -> Call:
    """Call ``fn(*args)``, catching exceptions and warnings and noticing in-place changes."""
    before = [(i, _copy(a)) for i, a in enumerate(args) if type(a) is _ndarray]
    call = Call()
    with warnings.catch_warnings(record=True) as caught, _errstate(all="ignore"), _quiet_stderr() as err:
        warnings.simplefilter("always")
        try:
            call.value = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - KeyboardInterrupt/SystemExit must not kill grading either
            if isinstance(exc, (KeyboardInterrupt, replay.NotReplayable)):
                raise
            call.error = f"{type(exc).__name__}: {exc}{_learner_frame(exc.__traceback__)}"
    call.warnings = [f"{w.category.__name__}: {w.message}" for w in caught]
    printed = err.getvalue().strip()
    if printed:
        call.warnings.append(f"the function wrote to stderr: {printed[:300]}")
    for i, old in before:
        new = args[i]
        if type(new) is _ndarray and (new.shape != old.shape or not _array_equal(new, old, equal_nan=True)):
            call.mutated.append(i)
    return call


def compare_arrays(name: str, got: Any, expected: Any, rtol: float, atol: float, check_dtype: bool = True) -> str:
    """'' when ``got`` matches ``expected``; otherwise one sentence saying what differs."""
    if got is None:
        return f"{name} is None (did the function forget to return it?)"
    if type(got) is not _ndarray:
        return f"{name} should be a numpy array, got {type(got).__name__}"
    exp = _asarray(expected)
    if got.shape != exp.shape:
        return f"{name} has shape {got.shape}, expected {exp.shape}"
    if check_dtype and got.dtype != exp.dtype:
        return f"{name} has dtype {got.dtype}, expected {exp.dtype} (keep the input's dtype)"
    if got.dtype.kind not in "fciub":
        return f"{name} has non-numeric dtype {got.dtype}"
    g = got.astype(np.float64)
    e = exp.astype(np.float64)
    if not _isfinite(g).all() and _isfinite(e).all():
        return f"{name} contains NaN or inf"
    with _errstate(all="ignore"):
        close = _isclose(g, e, rtol=rtol, atol=atol, equal_nan=True)
    if close.all():
        return ""
    err = _abs(g - e)
    err[close] = 0
    idx = _unravel_index(int(_argmax(err)), err.shape) if err.ndim else ()
    n_bad = int((~close).sum())
    return (
        f"{name}: {n_bad} of {close.size} values differ; largest difference {float(err[idx]):.3g} "
        f"at index {tuple(int(i) for i in idx)} (expected {float(e[idx]):.6g}, got {float(g[idx]):.6g})"
    )


# ---------------------------------------------------------------------------------------------
# The generic check
# ---------------------------------------------------------------------------------------------


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


def _matches(outputs: dict, mistake_outputs: dict, rtol: float, atol: float) -> bool:
    return all(
        k in outputs and not compare_arrays(k, outputs[k], mistake_outputs[k], rtol, atol, check_dtype=False)
        for k in mistake_outputs
    )


def check_function(
    exercise: str,
    learner_fn: Callable,
    reference_fn: Callable,
    cases: Sequence[Case],
    mistakes: Sequence[Mistake] = (),
    *,
    outputs: Sequence[str] = ("out",),
    compare: Sequence[str] | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-6,
    check_dtype: bool = True,
    mutation_hint: str = "the function changed its input array in place; work on a copy or build a new array",
    learner: Any = None,
) -> CheckResult:
    """Run ``learner_fn`` and ``reference_fn`` on every case and diagnose the failures.

    Args:
        outputs: names of the values the function returns (one name: a single value).
        compare: which of those to compare (default: all); e.g. leave a cache out.
        rtol, atol: the tolerance of ``np.isclose``, compared in float64.
        learner: the learner's own object when ``learner_fn`` is a wrapper around it (e.g.
            ``lambda x: Fn.apply(x)``): lets the grader re-judge the cell from receipts
            (``bncourse.checks.replay``) instead of trusting the learner's kernel.
    """
    compare = list(compare or outputs)
    tolerance = f"rtol={rtol:g}, atol={atol:g}"
    if not callable(learner_fn) or _replayed_not_callable(exercise, learner_fn):
        return CheckResult(
            exercise,
            [CaseResult("setup", False, f"expected a function, got {type(learner_fn).__name__}")],
            diagnosis="pass the function itself (no parentheses after its name)",
            tolerance=tolerance,
        )
    results: list[CaseResult] = []
    failed_outputs: list[tuple[Case, dict]] = []
    structural: list[str] = []
    notes: list[str] = []
    calls = _Learner(exercise, learner_fn, learner)
    for case in cases:
        call = calls.call(case)
        notes.extend(w for w in call.warnings if w not in notes)
        if call.error:
            if "NotImplementedError" in call.error:
                structural.append("not attempted yet: the function still raises NotImplementedError")
            else:
                structural.append(f"the function raised {call.error.split(' (at')[0]}")
            results.append(CaseResult(case.name, False, f"raised {call.error}"))
            continue
        got, problem = _as_outputs(call.value, outputs)
        if problem:
            structural.append(problem)
            results.append(CaseResult(case.name, False, problem))
            continue
        expected, _ = _as_outputs(reference_fn(*case.make_args()), outputs)
        problems = [p for k in compare if (p := compare_arrays(k, got[k], expected[k], rtol, atol, check_dtype))]
        if call.mutated:
            problems.append(mutation_hint)
            structural.append(mutation_hint)
        results.append(CaseResult(case.name, not problems, "; ".join(problems)))
        if problems and not call.mutated:
            failed_outputs.append((case, {k: got[k] for k in compare}))
            shape_msgs = [p for p in problems if "has shape" in p or "is None" in p or "should be a numpy" in p]
            dtype_msgs = [p for p in problems if "has dtype" in p]
            structural.extend(shape_msgs or dtype_msgs)

    calls.finish()
    diagnosis = ""
    if not all(r.passed for r in results):
        diagnosis = _diagnose(failed_outputs, mistakes, compare, outputs, rtol, atol) or (
            structural[0] if structural else "the values differ from the reference (see the cases below)"
        )
    return CheckResult(exercise, results, diagnosis=diagnosis, tolerance=tolerance, notes=notes)


class _Learner:
    """Calls the learner's function for ``check_function``: records receipts while grading,
    and during the grader's replay (``bncourse.checks.replay``) answers from them instead."""

    def __init__(self, exercise: str, fn: Callable, owner: Any = None):
        self.exercise = exercise
        self.fn = fn
        self.owner = fn if owner is None else owner
        self.replaying = type(fn) is replay.Replayer or type(owner) is replay.Replayer
        self.recording = not self.replaying and replay.recording()
        self.calls: list[dict] = []
        self.entry = None
        self.index = 0
        if self.replaying:
            sess = replay.session()
            if sess is None:
                raise replay.NotReplayable("a replayed function outside a replay session")
            self.entry = sess.next_entry(exercise)
            if self.entry.get("not_callable"):
                raise replay.Tampered("the receipt says the learner's object was not callable")
            if str(self.entry.get("origin", "")).split(".")[0] == "bncourse":
                raise replay.Tampered("the function checked was bncourse's own code, not the learner's")

    def call(self, case: Case) -> Call:
        args = case.make_args()
        if self.replaying:
            return self._replayed(case, args)
        fingerprint = replay.digest(args) if self.recording else ""
        call = safe_call(self.fn, args)
        if self.recording:
            self.calls.append({
                "digest": fingerprint,
                "value": None if call.error else replay.encode(call.value),
                "error": call.error[:2000],
                "mutated": list(call.mutated),
            })
        return call

    def _replayed(self, case: Case, args: tuple) -> Call:
        calls = self.entry.get("calls") or []
        if self.index >= len(calls):
            raise replay.Tampered(f"'{self.exercise}': fewer recorded calls than cases")
        rec = calls[self.index]
        self.index += 1
        if rec.get("digest") != replay.digest(args):
            if replay.digest(case.make_args()) != replay.digest(args):
                raise replay.NotReplayable(f"case '{case.name}' of '{self.exercise}' is not deterministic")
            raise replay.Tampered(f"'{self.exercise}', case '{case.name}': recorded for other inputs")
        error = str(rec.get("error") or "")
        value = None if error else replay.decode(rec.get("value"))
        mutated = [int(i) for i in rec.get("mutated") or []]
        return Call(value=value, error=error, mutated=mutated)

    def finish(self) -> None:
        if self.recording:
            try:
                origin = str(getattr(self.owner, "__module__", "") or "")
            except Exception:  # noqa: BLE001 - a learner object may raise on attribute access
                origin = ""
            replay.publish({"exercise": self.exercise, "calls": self.calls, "origin": origin})
        elif self.replaying and self.index != len(self.entry.get("calls") or []):
            raise replay.Tampered(f"'{self.exercise}': more recorded calls than cases")


def _replayed_not_callable(exercise: str, fn: Any) -> bool:
    """While grading, a non-callable 'function' is receipted too, so the replay agrees."""
    if not callable(fn) and replay.recording():
        replay.publish({"exercise": exercise, "not_callable": True})
    return False


def _diagnose(failed, mistakes, compare, outputs, rtol, atol) -> str:
    """The first known mistake that reproduces the learner's output on every failed case."""
    if not failed:
        return ""
    for mistake in mistakes:
        ok = True
        for case, got in failed:
            call = safe_call(mistake.fn, case.make_args())
            if call.error:
                ok = False
                break
            mine, problem = _as_outputs(call.value, outputs)
            if problem or not _matches(got, {k: mine[k] for k in compare if k in mine}, rtol * 10, atol * 10):
                ok = False
                break
        if ok:
            return f"{mistake.name}: {mistake.hint}" if mistake.hint else mistake.name
    return ""


def combine(exercise: str, *results: CheckResult) -> CheckResult:
    """Join several results into one (e.g. visible cases and a property check)."""
    cases = [c for r in results for c in r.cases]
    failed = [r for r in results if not r.passed]
    notes = [n for r in results for n in r.notes]
    return CheckResult(
        exercise,
        cases,
        diagnosis=failed[0].diagnosis if failed else "",
        tolerance=results[0].tolerance if results else "",
        notes=notes,
    )

"""One diagnosis per check, decided from the failed cases' kinds and the learner's recorded outputs.

Order: delegation, not attempted, an error (explained when the check knows the error), a wrong
return structure, an input changed in place, a dtype-only difference; then the first ``Symptom``
or ``Mistake`` (in the check's order) that fits every failed case; then one explanation per
output; then a shape problem; else "the values differ". Mistakes run in the checker's process,
so the grader's re-judging reaches the same diagnosis from the receipts alone.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bncourse.checks import delegation
from bncourse.checks.calls import safe_call
from bncourse.checks.compare import as_outputs, difference
from bncourse.checks.results import Case, CaseResult, Explanation, Mistake, Symptom

__all__ = ["diagnose"]

_MUTATION_HINT = "the function changed its input array in place; work on a copy or build a new array"
_errstate = np.errstate


def diagnose(results: Sequence[CaseResult], cases: Sequence[Case], explanations: Sequence[Explanation],
             reference_fn: Callable, outputs: Sequence[str], compare: Sequence[str], rtol: float, atol: float,
             in_place: Mapping[str, tuple[str, str]], explain_error: Callable | None = None,
             found: list | None = None) -> str:
    """The likely mistake behind the failed cases, decided from their kinds and the learner's outputs.

    ``found``, when given, receives the explanations (``Mistake``/``Symptom``) the diagnosis names.
    """
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
        named = _explain(failed, symptoms, outputs, compare, rtol, atol, found=found)
        return named or f"wrong output dtype: {first['dtype'].detail.split('; ')[0]}; a float32 input must give float32 outputs"
    memo: dict = {}
    explained = _explain(failed, explanations, outputs, compare, rtol, atol, reference_fn, memo, found)
    if explained:
        return explained
    if len(compare) > 1:  # no single mistake explains every output: try each output on its own
        parts = [f"[{k}] {m}" for k in compare
                 if (m := _explain([(r, c) for r, c in failed if k in r.wrong], explanations, outputs, [k], rtol, atol,
                                   reference_fn, memo, found))]
        if parts:
            return "more than one mistake: " + "; ".join(parts)
    if "shape" in kinds:
        return f"wrong output shape: {first['shape'].detail}"
    return "the values differ from the reference (see the cases below)"


def _explain(failed, explanations, outputs, compare, rtol, atol, reference_fn=None, memo: dict | None = None,
             found: list | None = None) -> str:
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
        if fits and found is not None:
            found.append(ex)
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
        mine, problem = ({}, "error") if call.error else as_outputs(call.value, outputs)
        memo[key] = None if problem else mine
    return memo[key]


def _same(key, a, b, rtol, atol) -> bool:
    return (a is None and b is None) or not difference(key, a, b, rtol, atol, False)[0]


def _reproduces(mistake: Mistake, case: Case, got: Mapping, outputs, keys, rtol, atol, memo) -> bool:
    mine = _outputs_of(mistake.fn, case, outputs, memo)
    return mine is not None and all(k in got and k in mine and _same(k, got[k], mine[k], rtol * 10, atol * 10)
                                    for k in keys)


def _changes(mistake: Mistake, case: Case, outputs, key: str, reference_fn: Callable, memo: dict) -> bool:
    """Does ``mistake`` itself get output ``key`` wrong? (Only then may it explain a wrong ``key``.)"""
    mine = _outputs_of(mistake.fn, case, outputs, memo)
    right = _outputs_of(reference_fn, case, outputs, memo)
    return mine is not None and right is not None and not _same(key, mine[key], right[key], 1e-6, 1e-9)

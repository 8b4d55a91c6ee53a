"""Comparing a learner's arrays with the reference's: equal, or the kind of difference and one sentence.

numpy's functions are captured once at import, so a learner's cell that later replaces them cannot
change how the checker compares arrays. Every notebook's setup cell imports ``bncourse.checks``
before the learner's first cell runs; the grader re-judges with genuine numpy regardless.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

__all__ = ["difference", "compare_arrays", "as_outputs"]

_asarray = np.asarray
_isclose = np.isclose
_isfinite = np.isfinite
_abs = np.abs
_argmax = np.argmax
_unravel_index = np.unravel_index
_errstate = np.errstate
_ndarray = np.ndarray
_float64 = np.float64


def difference(name: str, got: Any, expected: Any, rtol: float, atol: float, check_dtype: bool) -> tuple[str, str]:
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
    g, e = got.astype(_float64), exp.astype(_float64)
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
    return difference(name, got, expected, rtol, atol, check_dtype)[1]


def as_outputs(value: Any, names: Sequence[str]) -> tuple[dict[str, Any], str]:
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


def explain_shapes(contract: str, per: str = "row"):
    """An ``explain_error`` for a broadcast error: the shapes that met and the contract's (the catalogue reads them).

    ``per``: what one statistic belongs to, "row" (layer/group norm) or "feature" (batch norm).
    In a solution-free build (no catalogue) the error stays as numpy said it."""
    def explain(error_type: str, text: str) -> str:
        try:
            from bncourse.checks.catalogue.shared import explain_broadcast
        except Exception:  # noqa: BLE001 - a grading kernel's stub of the catalogue
            return ""
        return explain_broadcast(contract, per)(error_type, text)
    return explain

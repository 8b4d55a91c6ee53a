"""The low-precision cases of notebook 8's forward check: float32 and bfloat16 inputs on the ranks.

- float32: x, weight, bias and the running statistics in float32; y and the running statistics compared to
  float32's precision, what was all-reduced asked to be float64 (``reduced_in_float64``) and y in x's dtype.
- bfloat16: a rank with more than 256 rows; the row count in the cache must be exact. bfloat16 holds whole
  numbers exactly only up to 256, so a count built in x's dtype reads 257 rows as 256 (``count_minus_rows``).
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.core import Case, Symptom, check_function
from bncourse.checks.sync_batchnorm import (_assemble_forward, _finish, _forward_case, _forward_on_rank,
                                            _forward_rank_args, _hidden, _reference_forward, _Runner)

__all__ = ["check_float32", "check_bfloat16_count", "FLOAT32_OUTPUTS", "Y_DTYPE", "LOW_PRECISION_COUNT"]


FLOAT32_OUTPUTS = ("y", "running_mean", "running_var", "reduced_in_float64", "y_in_x_dtype")
_LOW = ("float32", "float16", "bfloat16")


def _float32_case(hidden: bool) -> Case:
    """Float32 x, weight, bias and running statistics on 2 ranks with uneven slices."""
    seed, sizes, C = (_hidden("forward", 9), (5, 3), 3) if hidden else (4, (3, 6), 3)
    base = _forward_case(seed, sizes, C)

    def make():
        x, sizes_, w, b, rm, rv, momentum, eps = base.make_args()
        f = np.float32
        return x.astype(f), sizes_, w.astype(f), b.astype(f), rm.astype(f), rv.astype(f), momentum, eps

    return Case(base.name + ", float32 (reduced in float64)", make)


def _assemble_float32(ranks):
    low = any(d in _LOW for r in ranks for d in r["log"]["dtypes"])
    y, rm, rv = _assemble_forward(ranks)[:3]
    same = all(r.get("y_dtype", r.get("x_dtype")) == r.get("x_dtype") for r in ranks)
    return y, rm, rv, np.array([0.0 if low else 1.0]), np.array([1.0 if same else 0.0])


def _reference_float32(x, sizes, w, b, rm, rv, momentum, eps):
    f64 = [np.asarray(a, np.float64) for a in (x, w, b, rm, rv)]
    y, rms, rvs = _reference_forward(f64[0], sizes, *f64[1:], momentum, eps)[:3]
    return y, rms, rvs, np.array([1.0]), np.array([1.0])


Y_DTYPE = Symptom("y returned in another dtype than x (float64 for a float32 input)",
                  "the contract keeps y in x's dtype: after computing in float64, cast back with y.to(x.dtype)",
                  lambda got: float(np.asarray(got["y_in_x_dtype"]).ravel()[0]) == 0.0, id="output-dtype")


def check_float32(fn, hidden: bool):
    runner32 = _Runner(fn, _forward_on_rank, _assemble_float32, _forward_rank_args)
    result32 = check_function("sync_batch_norm_forward", runner32 if callable(fn) else fn, _reference_float32,
                              [_float32_case(hidden)], (Y_DTYPE,), outputs=FLOAT32_OUTPUTS, rtol=1e-3, atol=1e-4,
                              check_dtype=False, forbid_torch="")
    return _finish(result32, runner32, "forward")


def _bfloat16_case(hidden: bool) -> Case:
    """bfloat16 x, weight, bias and running statistics on 2 ranks, one with more than 256 rows."""
    seed, sizes, C = (_hidden("forward", 10), (5, 259), 3) if hidden else (5, (257, 3), 2)
    base = _forward_case(seed, sizes, C)
    return Case(base.name + ", bfloat16 (the row count exact)", lambda: base.make_args() + ("bfloat16",))


def _assemble_count(ranks):
    rows = sum(r["rows"] for r in ranks)
    return np.array([r["count"] - rows for r in ranks], dtype=np.float64)


def _reference_bfloat16_count(x, sizes, *rest):
    return np.zeros(len(sizes))


LOW_PRECISION_COUNT = Symptom(
    "the row count built in x's dtype: bfloat16 holds whole numbers exactly only up to 256 (257 rows count as 256)",
    "build the count from the integer x.shape[0] in float64, torch.tensor([x.shape[0]], dtype=torch.float64), "
    "never in x's dtype (x.new_tensor([n]) or torch.full_like(x[0], n) are bfloat16 for a bfloat16 x)",
    lambda got: bool(np.any(np.asarray(got["count_minus_rows"]) != 0)), id="count-in-low-precision")


def check_bfloat16_count(fn, hidden: bool):
    """The cache's count on every rank minus the true number of rows (all ranks' together): zero."""
    runner = _Runner(fn, _forward_on_rank, _assemble_count, _forward_rank_args)
    result = check_function("sync_batch_norm_forward", runner if callable(fn) else fn, _reference_bfloat16_count,
                            [_bfloat16_case(hidden)], (LOW_PRECISION_COUNT,), outputs=("count_minus_rows",),
                            rtol=0.0, atol=0.5, check_dtype=False, forbid_torch="")
    return _finish(result, runner, "forward")

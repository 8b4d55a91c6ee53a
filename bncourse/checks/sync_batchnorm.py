"""Checks for synchronized batch norm (notebook "Batch norm across devices").

- ``check_sync_batchnorm_forward(fn)``: ``fn(x, weight, bias, running_mean, running_var, momentum,
  eps) -> (y, cache)`` on each rank, x (M, C) the rank's rows; global statistics from one
  ``all_reduce``; running statistics updated in place; ``cache`` a ``SyncBNCache``
  (x_hat, invstd, weight, count).
- ``check_sync_batchnorm_backward(fn)``: ``fn(dy, cache) -> (dx, dweight, dbias)`` on each rank.

Each case starts a real gloo process group (``bncourse.distributed.run_distributed``), gives every
rank its slice of one float64 batch (uneven slices too) and calls the learner's function there. The
function ``check_function`` sees is a wrapper that takes and returns plain numpy arrays (the ranks'
outputs concatenated or stacked), so the grader can re-judge the test cell from receipts. The
reference is one process running batch norm on the concatenated batch: outputs, running statistics
and gradients must agree on every rank to about 1e-10.

The low-precision cases (float32, bfloat16) are in ``sync_precision``. Known mistakes are simulated
in numpy, one rank at a time; an all-reduce in float32 is seen in the
workers (the dtype of what was reduced). ``hidden=True`` runs other seeds, shapes and rank counts.

The contract, on every rank: ``y`` (M, C); ``running_mean``, ``running_var`` (C,) updated in place;
``cache.x_hat`` (M, C); ``cache.invstd`` (C,) or (1, C) (keepdim=True); ``cache.count`` the global N,
a number or a one-element tensor. ``x``, ``weight`` and ``bias`` (forward), ``dy`` and every tensor of
the cache (backward) unchanged: a worker compares them before and after and the check reports a
change as an in-place change of that argument. Visible cases: uneven slices, momentum 0.3, eps 1e-2;
a float32 case asks y in x's dtype (float32, ``Y_DTYPE``). A backward's dweight or dbias of another
size than (C,) is refused on the rank (``explain_backward_shape`` names it).
"""

from __future__ import annotations

import builtins

import numpy as np

from bncourse.checks import catalogue
from bncourse.checks.calls import InputChanged, snapshot, unchanged
from bncourse.checks.core import Case, check_function, combine
from bncourse.checks.inputs import hidden_case_seed

RTOL, ATOL = 1e-9, 1e-10
TIMEOUT = 90.0


# ---------------------------------------------------------------------------------------------
# Cases
# ---------------------------------------------------------------------------------------------


def _slices(sizes) -> list[slice]:
    ends = np.cumsum(np.asarray(sizes, dtype=np.int64))
    return [slice(int(e - s), int(e)) for s, e in zip(np.asarray(sizes), ends)]


def _batch(seed: int, sizes, C: int) -> np.ndarray:
    """(N, C) float64; each rank's slice has its own offset, so per-rank statistics differ."""
    rng = np.random.default_rng(seed)
    x = rng.normal(rng.uniform(-2, 2, size=C), rng.uniform(0.5, 2.5, size=C), size=(int(np.sum(sizes)), C))
    for r, sl in enumerate(_slices(sizes)):
        x[sl] += rng.uniform(-2, 2, size=C) * (r + 1) / len(sizes)
    return x


def _forward_case(seed, sizes, C, momentum=0.1, eps=1e-5):
    def make():
        rng = np.random.default_rng(seed + 1000)
        x = _batch(seed, sizes, C)
        return (x, np.asarray(sizes, dtype=np.int64), rng.uniform(0.5, 1.5, C), rng.uniform(-1, 1, C),
                rng.uniform(-1, 1, C), rng.uniform(0.5, 2.0, C), float(momentum), float(eps))

    name = f"{len(sizes)} ranks with {' + '.join(str(s) for s in sizes)} rows, C={C}"
    extra = [] if momentum == 0.1 else [f"momentum={momentum:g}"]
    extra += [] if eps == 1e-5 else [f"eps={eps:g}"]
    return Case(name + (", " + ", ".join(extra) if extra else ""), make)


def _backward_case(seed, sizes, C, eps=1e-5):
    def make():
        rng = np.random.default_rng(seed + 2000)
        x = _batch(seed, sizes, C)
        return (x, np.asarray(sizes, dtype=np.int64), rng.uniform(0.5, 1.5, C), rng.normal(size=x.shape), float(eps))

    return Case(f"{len(sizes)} ranks with {' + '.join(str(s) for s in sizes)} rows, C={C}", make)


# ---------------------------------------------------------------------------------------------
# Running the learner's function on the ranks (the worker side runs in each process)
# ---------------------------------------------------------------------------------------------


def _watch_collectives(log: dict):
    """Count all_reduce calls and note the dtypes reduced, in this worker only."""
    import torch.distributed as dist

    original = dist.all_reduce

    def all_reduce(tensor, *args, **kwargs):
        log["calls"] += 1
        log["dtypes"].append(str(getattr(tensor, "dtype", type(tensor).__name__)).replace("torch.", ""))
        return original(tensor, *args, **kwargs)

    dist.all_reduce = all_reduce
    return original


def _switch_off_reference() -> None:
    """In this worker, the course's reference pair refuses to run: the learner's code must do the work."""
    from bncourse import nn_sync

    def refuse(*args, **kwargs):
        raise RuntimeError("the check runs your own code: the course's bncourse.nn_sync reference is switched off here")

    for name in ("sync_batch_norm_forward", "sync_batch_norm_backward"):
        getattr(nn_sync, name).__code__ = refuse.__code__


def _enforce_rule() -> None:
    """In this rank, before the learner's function runs: torch's own batch norm raises (notebook 8's rule,
    ``bncourse.grading.libraries``; a rank is a process of its own, so the kernel's blocks are not here)."""
    from bncourse.kernel_blocks import install

    install(("normalization",))


def _numpy(value, what: str) -> np.ndarray:
    import torch

    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.float() if value.dtype == torch.bfloat16 else value).numpy()  # numpy has no bfloat16
    raise TypeError(f"{what} should be a torch tensor, got {type(value).__name__}")


def _only_in_a_rank() -> None:
    """A rank worker installs notebook 8's rule for good in its process: never outside a rank's process group."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("a rank worker runs only in a process of run_distributed's group")


def _forward_rank_args(x, sizes, w, b, rm, rv, momentum, eps, dtype: str = "") -> list[tuple]:
    """Each rank's arguments: its own rows of x only (a rank handed the whole batch could normalize over it
    without any collective: red team 7's R4), the shared parameters and running statistics."""
    return [(x[sl], w, b, rm, rv, momentum, eps, dtype) for sl in _slices(sizes)]


def _forward_on_rank(rank, world_size, fn, x, w, b, rm, rv, momentum, eps, dtype: str = ""):
    """x: this rank's rows. ``dtype``: the tensors handed over in another dtype than the arrays' ("bfloat16":
    numpy has none)."""
    import torch

    _only_in_a_rank()

    _switch_off_reference()
    _enforce_rule()
    log = {"calls": 0, "dtypes": []}
    _watch_collectives(log)
    running_mean, running_var = torch.tensor(rm), torch.tensor(rv)
    given = {"x": torch.tensor(x), "weight": torch.tensor(w), "bias": torch.tensor(b)}  # the running stats may change
    if dtype:
        given = {k: v.to(getattr(torch, dtype)) for k, v in given.items()}
        running_mean, running_var = running_mean.to(getattr(torch, dtype)), running_var.to(getattr(torch, dtype))
    before = {k: snapshot(v) for k, v in given.items()}
    out = fn(*given.values(), running_mean, running_var, momentum, eps)
    changed = [k for k, v in given.items() if not unchanged(before[k], v)]
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise TypeError(f"the forward should return (y, cache), got {type(out).__name__}")
    y, cache = out
    if not isinstance(cache, (tuple, list)) or len(cache) != 4:
        raise TypeError(f"cache should be SyncBNCache(x_hat, invstd, weight, count), got {type(cache).__name__}")
    x_hat, invstd, _, count = cache
    count = float(count.item() if isinstance(count, torch.Tensor) else count)
    invstd = _numpy(invstd, "cache.invstd")
    if invstd.size == len(w) and invstd.ndim > 1:  # (1, C) from keepdim=True: the same numbers, allowed
        invstd = invstd.reshape(len(w))
    return {"y": _numpy(y, "y"), "running_mean": _numpy(running_mean, "running_mean"),
            "running_var": _numpy(running_var, "running_var"), "x_hat": _numpy(x_hat, "cache.x_hat"),
            "invstd": invstd, "count": count, "rows": int(len(x)), "log": log, "changed": changed,
            "y_dtype": str(getattr(y, "dtype", "")).replace("torch.", ""), "x_dtype": str(given["x"].dtype).replace("torch.", "")}


def _backward_rank_args(x, sizes, w, dy, eps) -> list[tuple]:
    """Each rank's arguments: the forward's cache of its own rows (x_hat from the whole batch's statistics,
    computed here in numpy: the course's sync forward is not needed, so the grading kernel holds none)
    and its own rows of dy; no rank sees another's rows (red team 7's R4)."""
    mean, var = x.mean(0), x.var(0)
    invstd = 1.0 / np.sqrt(var + eps)
    return [((x[sl] - mean) * invstd, invstd, w, float(len(x)), dy[sl]) for sl in _slices(sizes)]


def _backward_on_rank(rank, world_size, fn, x_hat, invstd, w, count, dy):
    """x_hat, dy: this rank's rows; invstd, w: (C,); count: the global N."""
    import torch

    _only_in_a_rank()

    from bncourse.nn_sync import SyncBNCache

    cache = SyncBNCache(torch.tensor(x_hat), torch.tensor(invstd), torch.tensor(w), count)
    _switch_off_reference()
    _enforce_rule()
    log = {"calls": 0, "dtypes": []}
    _watch_collectives(log)
    given = {"dy": torch.tensor(dy), "cache": cache}
    before = {k: snapshot(v) for k, v in given.items()}
    out = fn(*given.values())
    changed = [k for k, v in given.items() if not unchanged(before[k], v)]
    if not isinstance(out, (tuple, list)) or len(out) != 3:
        raise TypeError(f"the backward should return (dx, dweight, dbias), got {type(out).__name__}")
    dx, dw, db = out
    got = {"dx": _numpy(dx, "dx"), "dweight": _numpy(dw, "dweight"), "dbias": _numpy(db, "dbias")}
    for name, want in (("dx", dy.shape), ("dweight", (len(w),)), ("dbias", (len(w),))):
        if got[name].size != int(np.prod(want)):  # a (1, C) from keepdim=True is the same numbers
            raise ValueError(f"{name} has shape {tuple(got[name].shape)} on this rank, expected {want}")
        got[name] = got[name].reshape(want)
    return {**got, "log": log, "changed": changed}


def _on_ranks(worker, rank_args: list[tuple]) -> list[dict]:
    """Run ``worker(rank, world_size, *rank_args[rank])`` on one gloo process per rank; a rank's error comes
    back as one line."""
    from bncourse.distributed import WorkerError, run_distributed

    try:
        return run_distributed(worker, len(rank_args), rank_args=rank_args, backend="gloo", timeout=TIMEOUT,
                               show_output=False)
    except WorkerError as err:
        text = f"on rank {err.rank}: {err.summary}"
        cls = getattr(builtins, err.exc_type, None) if err.exc_type else None
        if isinstance(cls, type) and issubclass(cls, Exception):
            try:
                exc = cls(text)
            except Exception:  # noqa: BLE001 - an exception type that wants other arguments
                exc = RuntimeError(text)
        else:
            exc = RuntimeError(text)
        raise exc from None


class _Runner:
    """The numpy-in, numpy-out function check_function calls; remembers what the ranks reduced."""

    def __init__(self, fn, worker, assemble, rank_args):
        self.fn, self.worker, self.assemble, self.rank_args = fn, worker, assemble, rank_args
        self.logs: list[dict] = []

    def __call__(self, x, sizes, *rest):
        ranks = _on_ranks(self.worker, [(self.fn, *a) for a in self.rank_args(x, sizes, *rest)])
        self.logs.extend(r["log"] for r in ranks)
        changed = sorted({name for r in ranks for name in r.get("changed", ())})
        if changed:  # reported as an in-place change of those arguments (kind "mutated")
            raise InputChanged(changed)
        return self.assemble(ranks)


def _assemble_forward(ranks):
    return (np.concatenate([r["y"] for r in ranks]), np.stack([r["running_mean"] for r in ranks]),
            np.stack([r["running_var"] for r in ranks]), np.concatenate([r["x_hat"] for r in ranks]),
            np.stack([r["invstd"] for r in ranks]), np.array([r["count"] for r in ranks], dtype=np.float64))


def _assemble_backward(ranks):
    return (np.concatenate([r["dx"] for r in ranks]), np.stack([r["dweight"] for r in ranks]),
            np.stack([r["dbias"] for r in ranks]))


# ---------------------------------------------------------------------------------------------
def _reference_forward(x, sizes, w, b, rm, rv, momentum, eps):
    """Every rank's forward outputs, simulated in numpy (the catalogue holds the simulation)."""
    from bncourse.checks.catalogue import sync_batchnorm as simulated

    return simulated.reference_forward(x, sizes, w, b, rm, rv, momentum, eps)


def _reference_backward(x, sizes, w, dy, eps):
    """Every rank's backward outputs, simulated in numpy."""
    from bncourse.checks.catalogue import sync_batchnorm as simulated

    return simulated.reference_backward(x, sizes, w, dy, eps)


_FLOAT32 = ("all-reduced in float32: float32 keeps about 7 digits, so the global sums (and everything after them) "
            "are off by about 1e-7. Reduce a float64 buffer (.double() before dist.all_reduce) and cast back "
            "to x's dtype afterwards")


def _finish(result, runner: _Runner, what: str):
    """Name an all-reduce in float32 (seen in the workers) and remark on the number of all_reduce calls."""
    if not runner.logs:  # replayed from receipts: the verdict is what counts
        return result
    low = sorted({d for log in runner.logs for d in log["dtypes"] if d in ("float32", "float16", "bfloat16")})
    if not result.passed and low:
        result.diagnosis = _FLOAT32.replace("float32", low[0])
    calls = sorted({log["calls"] for log in runner.logs})
    if calls and calls != [1] and calls != [0]:
        note = (f"each rank called dist.all_reduce {' or '.join(map(str, calls))} times per {what}; one call on a "
                f"concatenated buffer does the same work with one round of messages")
        if note not in result.notes:
            result.notes.append(note)
    return result


def _check(exercise, fn, runner, reference, cases, mistakes, outputs, compare=None, explain_error=None):
    """``check_function`` on the wrapper that runs ``fn`` on the ranks (the grader answers it from receipts).

    torch is allowed (the ranks run torch on purpose); the course's own names stay forbidden.
    """
    return check_function(exercise, runner if callable(fn) else fn, reference, cases, mistakes, outputs=outputs,
                          compare=compare, rtol=RTOL, atol=ATOL, forbid_torch="", explain_error=explain_error)


def explain_backward_shape(error_type: str, text: str) -> str:
    """A dweight or dbias of one value per row (summed over dim 1), named by the catalogue entry that makes it."""
    import re

    found = re.search(r"(dweight|dbias) has shape \((\d+),?\) on this rank, expected \((\d+),\)", text)
    if error_type != "ValueError" or not found:
        return ""
    what = f"{found.group(1)} has shape ({found.group(2)},) on a rank, expected one value per channel ({found.group(3)},)"
    entry = next((m for m in catalogue.mistakes("sync_batch_norm_backward") if m.id == "dparams-wrong-axes"), None)
    return f"{entry.name}: {entry.hint} ({what})" if entry else what


def _hidden(which: str, i: int) -> int:
    """Hidden case ``i``'s seed (below 2**31: the case makers add offsets to it)."""
    return hidden_case_seed(f"sync_batch_norm_{which}", f"hidden case {i}") >> 1


def _forward_cases(hidden: bool) -> list[Case]:
    return (
        [_forward_case(_hidden("forward", i), *a, **kw) for i, (a, kw) in
         enumerate([(((7, 2), 3), {}), (((2, 3, 9, 4), 2), dict(momentum=0.05, eps=1e-3)), (((6, 6), 5), {})])]
        if hidden else
        [_forward_case(1, (3, 5), 4), _forward_case(2, (4, 4), 3, momentum=0.3),
         _forward_case(3, (2, 6, 3), 2, eps=1e-2)]
    )


def check_sync_batchnorm_forward(fn, hidden: bool = False):
    """Check the learner's ``fn(x, weight, bias, running_mean, running_var, momentum, eps) -> (y, cache)``.

    Float64 cases compare every output to about 1e-10; one float32 case (x, weight, bias and the running
    statistics in float32) compares y and the running statistics to float32's precision and asks that
    what was all-reduced was float64, as the contract says (``reduced_in_float64``)."""
    cases = _forward_cases(hidden)
    runner = _Runner(fn, _forward_on_rank, _assemble_forward, _forward_rank_args)
    result = _check("sync_batch_norm_forward", fn, runner, _reference_forward, cases,
                    catalogue.lazy("sync_batch_norm_forward"),
                    outputs=("y", "running_mean", "running_var", "cache.x_hat", "cache.invstd", "cache.count"))
    result = _finish(result, runner, "forward")
    from bncourse.checks.sync_precision import check_bfloat16_count, check_float32

    tolerance = result.tolerance
    result = combine("sync_batch_norm_forward", result, check_float32(fn, hidden), check_bfloat16_count(fn, hidden))
    result.tolerance = f"float64: {tolerance}; float32: rtol=1e-3, atol=1e-4; bfloat16: the row count exact"
    return result


def _backward_cases(hidden: bool) -> list[Case]:
    return (
        [_backward_case(_hidden("backward", i), *a, **kw) for i, (a, kw) in
         enumerate([(((7, 2), 3), {}), (((2, 3, 9, 4), 2), dict(eps=1e-3)), (((6, 6), 5), {})])]
        if hidden else
        [_backward_case(11, (3, 5), 4), _backward_case(12, (4, 4), 3), _backward_case(13, (2, 6, 3), 2, eps=1e-2)]
    )


def check_sync_batchnorm_backward(fn, hidden: bool = False):
    """Check the learner's ``fn(dy, cache) -> (dx, dweight, dbias)``; dweight, dbias: this rank's own sums."""
    cases = _backward_cases(hidden)
    runner = _Runner(fn, _backward_on_rank, _assemble_backward, _backward_rank_args)
    result = _check("sync_batch_norm_backward", fn, runner, _reference_backward, cases,
                    catalogue.lazy("sync_batch_norm_backward"),
                    outputs=("dx", "dweight", "dbias"), explain_error=explain_backward_shape)
    return _finish(result, runner, "backward")

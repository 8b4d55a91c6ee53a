"""The catalogue's entries for notebook 8: batch norm synchronized across ranks, forward and backward.

Every rank's outputs are simulated in numpy, in one process: the right computation
(``reference_forward``, ``reference_backward``) and each mistake as a change to it (which
statistics a rank normalizes with, which sums its backward uses, which count it divides by).
"""

from __future__ import annotations

import numpy as np

from bncourse.checks.catalogue.shared import affine, blend, dx_from, inv_std, mistake
from bncourse.checks.core import Mistake
from bncourse.checks.sync_batchnorm import _slices



def _simulate_forward(x, sizes, w, b, rm, rv, momentum, eps, stats, slip="", local_count=False, cache="",
                      running=True, count_of=None):
    """Every rank's outputs when rank r normalizes with ``stats(xs, r)`` = (mean, var, run_mean, run_var),
    with one shared slip (``catalogue.shared``: on inv_std, affine or the running update)."""
    xs = [x[sl] for sl in _slices(sizes)]
    ys, rms, rvs, xhs, invs = [], [], [], [], []
    for r, xr in enumerate(xs):
        mean, var, run_mean, run_var = stats(xs, r)
        inv = inv_std(var, eps, slip)
        xh = (xr - mean) * inv
        ys.append(affine(xh, w, b, slip))
        xhs.append({"x": xr, "xmu": xr - mean}.get(cache, xh))
        invs.append({"std": 1 / inv, "var": np.asarray(var, np.float64) + 0 * inv}.get(cache, inv))
        rms.append(blend(rm, run_mean, momentum, slip) if running else np.asarray(rm, np.float64))
        rvs.append(blend(rv, run_var, momentum, slip) if running else np.asarray(rv, np.float64))
    N = float(np.sum(sizes))
    counts = np.asarray(sizes, dtype=np.float64) if local_count else np.full(len(xs), N)
    if count_of is not None:
        counts = np.array([count_of(xs, r) for r in range(len(xs))], dtype=np.float64)
    return np.concatenate(ys), np.stack(rms), np.stack(rvs), np.concatenate(xhs), np.stack(invs), counts


def _global_stats(xs, r):
    x = np.concatenate(xs)
    N = len(x)
    var = x.var(0)
    return x.mean(0), var, x.mean(0), var * N / (N - 1)


def _local_stats(xs, r):
    n = len(xs[r])
    return xs[r].mean(0), xs[r].var(0), xs[r].mean(0), xs[r].var(0) * n / (n - 1)


def _reference_forward(x, sizes, w, b, rm, rv, momentum, eps):
    return _simulate_forward(x, sizes, w, b, rm, rv, momentum, eps, _global_stats)


def _variant(stats, **kw):
    return lambda x, sizes, w, b, rm, rv, momentum, eps: _simulate_forward(x, sizes, w, b, rm, rv, momentum, eps,
                                                                            stats, **kw)


def _means_averaged(xs, r):
    N = sum(len(a) for a in xs)
    mean = np.mean([a.mean(0) for a in xs], axis=0)
    var = np.mean([(a * a).mean(0) for a in xs], axis=0) - mean ** 2
    return mean, var, mean, var * N / (N - 1)


def _variances_averaged(xs, r):
    mean, _, _, _ = _global_stats(xs, r)
    N = sum(len(a) for a in xs)
    var = np.mean([a.var(0) for a in xs], axis=0)
    return mean, var, mean, var * N / (N - 1)


def _variances_pooled(xs, r):
    mean, _, _, _ = _global_stats(xs, r)
    N = sum(len(a) for a in xs)
    var = sum(len(a) * a.var(0) for a in xs) / N
    return mean, var, mean, var * N / (N - 1)


def _local_count(xs, r):
    x = np.concatenate(xs)
    n = len(xs[r])
    mean = x.sum(0) / n
    var = (x * x).sum(0) / n - mean ** 2
    return mean, var, mean, var * n / (n - 1)


def _local_count_running(xs, r):
    mean, var, _, _ = _global_stats(xs, r)
    n = len(xs[r])
    return mean, var, mean, var * n / (n - 1)


def _running_var_precedence(xs, r):
    """var * N / N - 1 (operator precedence: the - 1 outside the division) in the running variance."""
    mean, var, _, _ = _global_stats(xs, r)
    N = sum(len(x) for x in xs)
    return mean, var, mean, var * N / N - 1


def _biased_running(xs, r):
    mean, var, _, _ = _global_stats(xs, r)
    return mean, var, mean, var


def _unbiased_normalize(xs, r):
    mean, _, _, unbiased = _global_stats(xs, r)
    return mean, unbiased, mean, unbiased


def _running_from_local(xs, r):
    mean, var, _, _ = _global_stats(xs, r)
    _, _, lm, lv = _local_stats(xs, r)
    return mean, var, lm, lv


def _uncentred(xs, r):
    """The global variance taken as sum_sq / N, the mean of the squares, without subtracting mean**2."""
    x = np.concatenate(xs)
    N = len(x)
    var = (x * x).mean(0)
    return x.mean(0), var, x.mean(0), var * N / (N - 1)


def _equal_slices(xs, r):
    """N taken as this rank's rows times the world size (every slice assumed as long as this one)."""
    x = np.concatenate(xs)
    n = len(xs[r]) * len(xs)
    mean = x.sum(0) / n
    var = (x * x).sum(0) / n - mean ** 2
    return mean, var, mean, var * n / (n - 1)


def _forward_mistakes() -> list[Mistake]:
    combine = ("all-reduce the sum, the sum of squares and the count in one buffer, then mean = sum / N and "
               "var = sum_sq / N - mean**2 with the global N")
    return [
        Mistake("cache.count holds this rank's row count",
                "the backward divides the all-reduced sums by cache.count: store the global N (the all-reduced "
                "count), not x.shape[0]", _variant(_global_stats, local_count=True)),
        Mistake("no all_reduce: each rank used only its own slice (plain batch norm)",
                "sum x, sum x**2 and the count over the ranks with dist.all_reduce before computing the statistics",
                _variant(_local_stats, local_count=True)),
        Mistake("the ranks' means averaged (every rank weighted the same, whatever its batch size)",
                "when ranks hold different numbers of rows, averaging their means is wrong: " + combine,
                _variant(_means_averaged)),
        Mistake("the ranks' variances averaged instead of combining sums",
                "a variance about each rank's own mean misses how far the ranks' means lie apart: " + combine,
                _variant(_variances_averaged)),
        Mistake("the ranks' variances weighted by their counts, without the spread of the ranks' means",
                "sum_r n_r var_r / N leaves out sum_r n_r (mean_r - mean)**2 / N: " + combine,
                _variant(_variances_pooled)),
        Mistake("divided the global sums by the local count",
                "after the all_reduce, divide by the global N (the all-reduced count), not x.shape[0]",
                _variant(_local_count, local_count=True)),
        Mistake("local count in the unbiased running variance",
                "running_var gets var * N / (N - 1) with N the global count, not this rank's",
                _variant(_local_count_running)),
        Mistake("running_var's correction written var * N / N - 1 (operator precedence: the parentheses missing)",
                "var * n / n - 1 is var - 1: write var * n / (n - 1), with n the global count",
                _variant(_running_var_precedence)),
        Mistake("running_var updated with the biased variance",
                "PyTorch stores the unbiased variance var * N / (N - 1) in running_var (and normalizes with the biased one)",
                _variant(_biased_running)),
        Mistake("unbiased variance used to normalize",
                "normalize with the biased variance (divide by N); only running_var gets the N / (N - 1) correction",
                _variant(_unbiased_normalize)),
        Mistake("global variance taken as sum_sq / N without subtracting mean**2 (the mean of x**2)",
                "sum_sq / N is the mean of the squares; the variance is that minus the squared mean: "
                "var = sum_sq / N - mean**2 (the same for running_var before the N / (N - 1) correction)",
                _variant(_uncentred), id="variance-uncentred"),
        Mistake("running statistics from this rank's slice only",
                "update running_mean and running_var with the global mean and variance, so every rank keeps the same",
                _variant(_running_from_local)),
        mistake("momentum-flipped", _variant(_global_stats, slip="momentum-flipped"),
                hint="PyTorch: running = (1 - momentum) * running + momentum * batch statistic"),
        mistake("eps-outside-sqrt", _variant(_global_stats, slip="eps-outside-sqrt"), hint="use 1 / sqrt(var + eps)"),
        *(mistake(slip, _variant(_global_stats, slip=slip))
          for slip in ("momentum-hard-coded", "eps-missing", "eps-hard-coded", "divided-by-variance",
                       "gamma-beta-swapped", "sqrt-of-std")),
        Mistake("running statistics not updated in place",
                "update the caller's buffers themselves: running_mean.mul_(1 - momentum).add_(momentum * mean) "
                "(running_mean = ... only rebinds your local name; the caller's tensor stays as it was)",
                _variant(_global_stats, running=False), id="running-not-updated"),
        Mistake("the global count taken as this rank's rows times the world size (slices assumed equal)",
                "ranks may hold different numbers of rows: all-reduce the count with the sums and divide by it",
                _variant(_equal_slices, count_of=lambda xs, r: len(xs[r]) * len(xs)), id="local-count"),
        Mistake("cache.invstd holds the standard deviation",
                "the backward multiplies by cache.invstd = 1 / sqrt(var + eps): store that, not sqrt(var + eps)",
                _variant(_global_stats, cache="std"), id="cache-wrong-quantity"),
        Mistake("cache.x_hat holds x - mean (not divided by the standard deviation)",
                "the backward needs the normalized input: cache.x_hat = (x - mean) * invstd",
                _variant(_global_stats, cache="xmu"), id="cache-wrong-quantity"),
        Mistake("cache.invstd holds the variance",
                "the backward multiplies by cache.invstd = 1 / sqrt(var + eps): store that, not var",
                _variant(_global_stats, cache="var"), id="cache-wrong-quantity"),
        *(mistake(slip, _variant(_global_stats, slip=slip))
          for slip in ("gamma-and-beta-not-applied", "gamma-not-applied-only-beta-added",
                       "beta-not-added-only-gamma-applied", "beta-scaled-by-gamma", "not-divided-by-std")),
        Mistake("cache.x_hat holds the input x",
                "the backward needs the normalized input: cache.x_hat = (x - mean) * invstd",
                _variant(_global_stats, cache="x"), id="cache-wrong-quantity"),
    ]


def _backward_parts(x, sizes, w, dy, eps):
    N = float(np.sum(sizes))
    mean, var = x.mean(0), x.var(0)
    inv = 1.0 / np.sqrt(var + eps)
    xh = (x - mean) * inv
    return N, inv, xh, [sl for sl in _slices(sizes)]


def _simulate_backward(x, sizes, w, dy, eps, kind="right", params="own"):
    """Every rank's (dx, dweight, dbias) with one mistake ``kind``; ``params="as-used"``: dweight and dbias
    are the sums dx used (a sum all-reduced in place and then returned is the global one)."""
    N, inv, xh, sls = _backward_parts(x, sizes, w, dy, eps)
    S, T = dy.sum(0), (dy * xh).sum(0)
    R = len(sls)
    dxs, dws, dbs = [], [], []
    for sl in sls:
        n = float(sl.stop - sl.start)
        s_r, t_r = dy[sl].sum(0), (dy[sl] * xh[sl]).sum(0)
        s, t, count, scale = S, T, N, w * inv
        if kind == "local sums":
            s, t = s_r, t_r
        elif kind == "local sums, local count":
            s, t, count = s_r, t_r, n
        elif kind == "local count":
            count = n
        elif kind == "only sum(dy) reduced":
            t = t_r
        elif kind == "only sum(dy * x_hat) reduced":
            s = s_r
        elif kind == "only sum(dy) reduced, the other over the local count":
            t = t_r * count / n
        elif kind == "count minus one":
            count = N - 1
        elif kind == "no invstd":
            scale = w
        elif kind == "std instead of invstd":
            scale = w / inv
        elif kind == "averaged sums":
            s, t = S / R, T / R
        elif kind == "averaged sums, local count":
            s, t, count = S / R, T / R, n
        elif kind == "averaged sums as means":
            s, t, count = S / R, T / R, 1.0
        elif kind == "no weight":
            scale = inv
        elif kind == "weight twice":
            scale = w * w * inv
        elif kind == "invstd squared":
            scale = w * inv * inv
        elif kind == "mean of the ranks' means":
            s = sum(dy[o].sum(0) / (o.stop - o.start) for o in sls) / R * count
            t = sum((dy[o] * xh[o]).sum(0) / (o.stop - o.start) for o in sls) / R * count
        sign = 1.0 if kind == "sign-error-variance-path" else -1.0
        dx = scale * (dy[sl] - (0 if kind == "mean-path-missing" else s / count)
                      + (0 if kind == "variance-path-missing" else sign * xh[sl] * t / count))
        if kind == "mean-and-variance-paths-missing":
            dx = dx_from(w * dy[sl], xh[sl], inv, 0, kind)
        dw, db = t_r, s_r
        if params == "as-used":
            dw, db = (t * n / count if kind.endswith("local count") else t), s
        if kind == "parameter grads reduced":
            dw, db = T, S
        elif kind == "parameter grads averaged":
            dw, db = T / R, S / R
        elif kind == "swapped":
            dw, db = s_r, t_r
        elif kind == "dweight from dy only":
            dw = s_r * xh[sl].mean(0)
        elif kind == "dparams over dim 1":  # refused on the rank, as the check's workers refuse it
            raise ValueError(f"dweight has shape ({int(n)},) on this rank, expected ({len(w)},)")
        dxs.append(dx)
        dws.append(dw)
        dbs.append(db)
    return np.concatenate(dxs), np.stack(dws), np.stack(dbs)


def _reference_backward(x, sizes, w, dy, eps):
    return _simulate_backward(x, sizes, w, dy, eps)


def _backward_variant(kind, params="own"):
    return lambda x, sizes, w, dy, eps: _simulate_backward(x, sizes, w, dy, eps, kind, params)


_AVERAGED_SUMS = "sums-averaged-over-the-ranks-reduceop"  # one id (one hint) for the three forms


def _backward_mistakes() -> list[Mistake]:
    reduce = ("all-reduce torch.cat([dy.sum(0), (dy * x_hat).sum(0)]) and divide by the global count N "
              "(cache.count)")
    return [
        Mistake("backward all_reduce forgotten (each rank used its own sums)",
                "dx depends on every rank's dy through the mean and the variance: " + reduce,
                _backward_variant("local sums")),
        Mistake("no all_reduce and the local count: plain batch norm's backward on each slice",
                "the forward normalized with global statistics, so the backward needs global sums: " + reduce,
                _backward_variant("local sums, local count")),
        Mistake("divided the global sums by the local count",
                "after the all_reduce divide by cache.count (all ranks' rows), not dy.shape[0]",
                _backward_variant("local count")),
        Mistake("only one of the two sums all-reduced (sum(dy * x_hat) stayed local)",
                "dx needs both sums over the whole batch: " + reduce, _backward_variant("only sum(dy) reduced"),
                id="one-sum-reduced"),
        Mistake("only one of the two sums all-reduced (sum(dy) stayed local)",
                "dx needs both sums over the whole batch: " + reduce, _backward_variant("only sum(dy * x_hat) reduced"),
                id="one-sum-reduced"),
        Mistake("only one of the two sums all-reduced (sum(dy * x_hat) stayed local, over the local count)",
                "dx needs both sums over the whole batch, divided by the global N: " + reduce,
                _backward_variant("only sum(dy) reduced, the other over the local count"), id="one-sum-reduced"),
        *(Mistake(f"only one of the two sums all-reduced ({which} stayed local), and the all-reduced sum returned as "
                  f"{param}", "dx needs both sums over the whole batch: " + reduce + f"; {param} is this rank's own sum "
                  "(all_reduce works in place: reduce a copy)", _backward_variant(kind, "as-used"), id="one-sum-reduced")
          for kind, which, param in (("only sum(dy) reduced", "sum(dy * x_hat)", "dbias"),
                                     ("only sum(dy * x_hat) reduced", "sum(dy)", "dweight"))),
        Mistake("dweight and dbias summed over dim 1 (the channels) instead of dim 0 (the rows)",
                "weight and bias have one entry per channel, shared by the rows: dweight = (dy * x_hat).sum(0), "
                "dbias = dy.sum(0), both of shape (C,)", _backward_variant("dparams over dim 1"), id="dparams-wrong-axes"),
        Mistake("sums divided by N - 1 instead of N",
                "the forward's mean and biased variance divide by N, so the backward's sums do too: "
                "dx = weight * invstd * (dy - sum(dy) / N - x_hat * sum(dy * x_hat) / N)",
                _backward_variant("count minus one"), id="divisor-minus-one"),
        Mistake("invstd left out of dx",
                "x_hat = (x - mean) * invstd, so dx carries the factor invstd: "
                "dx = weight * invstd * (dy - sum(dy) / N - x_hat * sum(dy * x_hat) / N)",
                _backward_variant("no invstd"), id="inv-std-missing"),
        Mistake("dx multiplied by the standard deviation instead of invstd",
                "cache.invstd is already 1 / sqrt(var + eps): multiply by it, do not divide",
                _backward_variant("std instead of invstd"), id="std-instead-of-inv-std"),
        Mistake("sums averaged over the ranks (ReduceOp.AVG or / world_size)",
                "the formula needs the sums over the whole batch: all_reduce with SUM, then divide by N only",
                _backward_variant("averaged sums"), id=_AVERAGED_SUMS),
        Mistake("sums averaged over the ranks (divided by world_size) and then by the local count",
                "sum / world_size / dy.shape[0] is only the global mean when every rank holds as many rows; "
                "all_reduce with SUM, then divide by the global count N (cache.count)",
                _backward_variant("averaged sums, local count"), id=_AVERAGED_SUMS),
        Mistake("sums divided by world_size and used as the means (never divided by the global count N)",
                "sum / world_size is the mean of the ranks' sums, not the mean over the batch: all_reduce with SUM, "
                "then divide by the global count N (cache.count): mean(dy) = sum(dy) / N",
                _backward_variant("averaged sums as means"), id=_AVERAGED_SUMS),
        Mistake("dweight and dbias all-reduced",
                "return this rank's own sums for dweight and dbias: DistributedDataParallel averages parameter "
                "gradients over the ranks itself, so an all_reduce here counts them world_size times over",
                _backward_variant("parameter grads reduced")),
        Mistake("dweight and dbias all-reduced and averaged over the ranks (divided by world_size)",
                "return this rank's own sums for dweight and dbias: DistributedDataParallel averages parameter "
                "gradients over the ranks itself; all-reducing and dividing by world_size here hands every rank the "
                "mean of the ranks' sums instead of its own", _backward_variant("parameter grads averaged"),
                id="dweight-dbias-all-reduced"),
        mistake("mean-and-variance-paths-missing", _backward_variant("mean-and-variance-paths-missing"),
                name="dx missing the terms that flow through the mean and the variance",
                hint="dx = weight * invstd * (dy - sum(dy) / N - x_hat * sum(dy * x_hat) / N)"),
        Mistake("weight (gamma) left out of dx", "dx is multiplied by weight * invstd", _backward_variant("no weight")),
        Mistake("weight (gamma) applied twice in dx",
                "the weight enters dx once: either g = weight * dy in the sums and no weight in front, or sums of dy "
                "and weight * invstd in front", _backward_variant("weight twice"), id="gamma-applied-twice"),
        Mistake("dweight and dbias swapped", "dweight = sum(dy * x_hat), dbias = sum(dy)", _backward_variant("swapped")),
        *(mistake(slip, _backward_variant(slip),
                  hint="dx = weight * invstd * (dy - sum(dy) / N - x_hat * sum(dy * x_hat) / N), both sums all-reduced")
          for slip in ("mean-path-missing", "variance-path-missing", "sign-error-variance-path")),
        mistake("inv-std-squared", _backward_variant("invstd squared"), name="dx multiplied by invstd twice",
                hint="dx = weight * invstd * (dy - sum(dy) / N - x_hat * sum(dy * x_hat) / N): one factor invstd"),
        Mistake("each rank's sums turned into means, then averaged over the ranks (divided by world_size)",
                "ranks hold different numbers of rows: all-reduce the SUMS and divide by the global count N "
                "(cache.count), not by each rank's count and then world_size", _backward_variant("mean of the ranks' means"),
                id="averaged-over-ranks"),
        Mistake("dweight computed as sum(dy) * mean(x_hat) (x_hat pulled out of the sum)",
                "dweight = (dy * x_hat).sum(0): the product is summed, row by row", _backward_variant("dweight from dy only"),
                id="dgamma-from-x"),
    ]


reference_forward = _reference_forward
reference_backward = _reference_backward
ENTRIES = {"sync_batch_norm_forward": _forward_mistakes, "sync_batch_norm_backward": _backward_mistakes}

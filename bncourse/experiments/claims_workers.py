"""Running the claims' experiments across worker processes, one torch thread each.

The experiments are small models (an MLP, a small CNN) that run fastest on one CPU thread, so the
machine's cores are best used by running several experiments at once, one per core, rather than one
experiment on all of them. ``run_in_workers`` does that for ``claims.run_claims(workers=N)``:

    rows = run_in_workers(claims, seeds=None, workers=2, size=RunSize.FULL)

Jobs. The claims whose experiments live in one module (``"module:function"``) form one job: a module
may share runs between its experiments (a cache, e.g. ``inside`` runs once for ``init-insensitive`` and
``stable-gradients``), and one job keeps them in one process. Jobs start largest first (their
expected seconds, ``EXPECTED_SECONDS``, measured in the full CPU-size run) on whichever worker is free.

Determinism. Every experiment seeds its own runs from its seeds, and a job runs whole in one process,
so each verdict and value is the same for any number of workers at the same torch thread count (a test
compares 1 and 2 workers; ``bncourse claims`` uses one thread per experiment unless ``$BNCOURSE_THREADS``).
Only the wall times differ.

A worker that dies (killed, out of memory) loses its job's claims: they come back ``untested`` with
the reason; the other jobs keep their verdicts.
"""

from __future__ import annotations

import contextlib
import io
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Callable, Sequence

from bncourse.run_size import RunSize

THREADS_ENV = "BNCOURSE_THREADS"

# CPU seconds each experiment module took in the full CPU-size run (docs/claims-run.json, 2026-12-07, one
# torch thread; batches scaled to its 5 epochs): only the order in which jobs start depends on them.
EXPECTED_SECONDS = {
    "depth": 217, "inside": 210, "architecture": 198, "generalization": 138, "ics_why": 128, "batches": 210,
    "layer": 108, "learning_rates": 79, "sensitivity": 57, "optimization": 53, "overhead": 47, "misstatements": 16,
    "invariance": 1,
}


def default_workers() -> int:
    """One worker per CPU core (``os.cpu_count()``), at least 1."""
    return max(1, os.cpu_count() or 1)


def jobs(claims: Sequence) -> list[list[str]]:
    """The claims' ids grouped into jobs (claims sharing an experiment module run together), largest first.

    claims: ``claims_catalogue.Claim``s. Returns lists of ids, each in the table's order.
    """
    parent: dict[str, str] = {}

    def find(m: str) -> str:
        while parent.setdefault(m, m) != m:
            m = parent[m]
        return m

    for claim in claims:
        modules = [check.path.partition(":")[0] for check in claim.checks] or [f"untested:{claim.id}"]
        for m in modules[1:]:
            parent[find(m)] = find(modules[0])
    groups: dict[str, list] = {}
    for claim in claims:
        first = claim.checks[0].path.partition(":")[0] if claim.checks else f"untested:{claim.id}"
        groups.setdefault(find(first), []).append(claim)

    def cost(group) -> float:
        modules = {check.path.partition(":")[0] for c in group for check in c.checks}
        return sum(EXPECTED_SECONDS.get(m, 60) for m in modules)

    return [[c.id for c in g] for g in sorted(groups.values(), key=cost, reverse=True)]


def _job(ids: list[str], seeds, size: RunSize, threads: int) -> tuple[list, dict, float]:
    """In a worker: run the claims ``ids`` at ``size`` on ``threads`` torch threads.

    Returns (rows, {what: (full, cpu)} scaled down for the CPU, CPU seconds of this job).
    """
    os.environ[THREADS_ENV] = str(threads)
    import torch

    from bncourse import runtime
    from bncourse.experiments.claims_catalogue import get_claim
    from bncourse.experiments.claims_verdicts import decide_claims
    from bncourse.run_size import use_size

    torch.set_num_threads(threads)
    c0 = time.process_time()
    # The experiments' notes (the CPU scale-down) go to the parent, which prints each once.
    with use_size(size), contextlib.redirect_stdout(io.StringIO()):
        rows = decide_claims([get_claim(i) for i in ids], seeds=seeds, progress=False)
    return rows, runtime.cpu_scaled(), time.process_time() - c0


def run_in_workers(claims: Sequence, seeds=None, workers: int = 2, size: RunSize | None = None,
                   progress: bool = False, on_result: Callable | None = None,
                   threads: int | None = None) -> list:
    """Decide ``claims`` in ``workers`` processes; the rows come back in the order of ``claims``.

    size: the run size the workers use (default: the one in force here). threads: torch threads per
    worker (default: $BNCOURSE_THREADS, else 1: the small models run fastest on one thread, and the same
    count as a one-process run gives the same numbers; torch's sums depend on the thread count). progress: a tqdm bar over the
    claims. on_result: called with each row when its job finishes.
    """
    import multiprocessing

    from bncourse import runtime
    from bncourse.experiments.claims_verdicts import ClaimRow
    from bncourse.experiments.verdicts import UNTESTED
    from bncourse.run_size import current_size

    size = current_size() if size is None else size
    threads = threads or int(os.environ.get(THREADS_ENV, "").strip() or 1)
    todo = jobs(claims)
    by_id = {c.id: c for c in claims}
    done: dict[str, object] = {}
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(claims), desc=f"claims ({workers} workers)", unit="claim")
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_job, ids, seeds, size, threads): ids for ids in todo}
            for future in as_completed(futures):
                ids = futures[future]
                try:
                    rows, scaled, _ = future.result()
                except Exception as err:  # a worker that died loses its job's claims, not the others'
                    rows, scaled = [ClaimRow(id=i, claim=by_id[i].claim, sources=by_id[i].sources,
                                             notebook=by_id[i].notebook, verdict=UNTESTED, effect=None, spread=None,
                                             seeds=0, kind=by_id[i].kind, literature=by_id[i].literature,
                                             literature_verdict=by_id[i].literature_verdict, data=by_id[i].data,
                                             reason=f"its worker process failed: {type(err).__name__}: {err}")
                                    for i in ids], {}
                for what, (full, cpu) in scaled.items():
                    runtime._announce_cpu_size(what, full, cpu)
                for row in rows:
                    done[row.id] = row
                    if on_result is not None:
                        on_result(row)
                if bar is not None:
                    bar.update(len(rows))
    finally:
        if bar is not None:
            bar.close()
    return [done[c.id] for c in claims]

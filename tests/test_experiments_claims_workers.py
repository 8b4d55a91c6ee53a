"""Running the claims in worker processes: the same rows as one process, jobs that keep shared runs together."""

from __future__ import annotations

import pytest

from bncourse.experiments import claims, claims_catalogue
from bncourse.experiments.claims_workers import jobs


def test_do_claims_sharing_an_experiment_module_land_in_one_job():
    groups = jobs(claims_catalogue.CLAIMS)
    where = {i: n for n, ids in enumerate(groups) for i in ids}
    assert sorted(where) == sorted(claims_catalogue.CLAIM_IDS)  # every claim exactly once
    assert where["init-insensitive"] == where["stable-gradients"]  # inside.py runs once for both
    assert where["faster-convergence"] == where["higher-learning-rates"]
    assert where["regularizes"] == where["noise-like-dropout"]  # generalization's shared runs
    assert where["deeper-networks"] != where["init-insensitive"]


def test_do_the_largest_jobs_start_first():
    first = jobs(claims_catalogue.CLAIMS)[0]
    assert first == ["deeper-networks"]


@pytest.mark.slow
def test_do_two_workers_give_the_same_rows_as_one(monkeypatch):
    import torch

    monkeypatch.setenv("BNCOURSE_FAST", "1")
    ids = ["scale-invariance", "output-mean0-std1", "dropout-rate"]  # three modules: three jobs
    strip = lambda rows: [{k: v for k, v in r.to_dict().items() if k not in ("seconds", "cpu_seconds")}  # noqa: E731
                          for r in rows]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as every worker: torch's sums depend on the thread count
    try:
        one = claims.run_claims(only=ids, workers=1)
    finally:
        torch.set_num_threads(threads)
    seen = []
    two = claims.run_claims(only=ids, workers=2, on_result=lambda row: seen.append(row.id))
    assert [r.id for r in two] == [c.id for c in claims_catalogue.CLAIMS if c.id in ids]  # the table's order
    assert sorted(seen) == sorted(ids)
    assert strip(two) == strip(one)

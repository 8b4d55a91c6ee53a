"""run_distributed starts real torch.distributed process groups (gloo) and reports workers' failures."""

from __future__ import annotations

import os
import threading
import time

import pytest
import torch
import torch.distributed as dist

from bncourse.distributed import WorkerError, run_distributed


def _sum_of_ranks(rank, world_size, offset):
    t = torch.tensor([float(rank + offset)])
    dist.all_reduce(t)
    print(f"rank {rank} of {dist.get_world_size()}")
    return {"rank": rank, "sum": t.item(), "pid": os.getpid()}


def test_does_every_rank_run_in_its_own_process_and_return_its_value(capsys):
    out = run_distributed(_sum_of_ranks, 3, args=(10,), backend="gloo")
    assert [r["rank"] for r in out] == [0, 1, 2]
    assert [r["sum"] for r in out] == [33.0, 33.0, 33.0]
    assert len({r["pid"] for r in out} | {os.getpid()}) == 4
    printed = capsys.readouterr()
    assert "[rank 2] rank 2 of 3" in printed.out and printed.err == ""


def test_does_each_rank_get_only_its_own_arguments_with_rank_args():
    out = run_distributed(_sum_of_ranks, 2, rank_args=[(10,), (20,)], backend="gloo", show_output=False)
    assert [r["sum"] for r in out] == [31.0, 31.0]  # 10 + 0 on rank 0, 20 + 1 on rank 1


def _raise_on_rank_1(rank, world_size):
    if rank == 1:
        raise ValueError("the learner's bug")
    dist.barrier()  # rank 0 waits for rank 1, which never comes


def test_does_a_raising_worker_come_back_as_its_rank_and_traceback():
    start = time.monotonic()
    with pytest.raises(WorkerError) as info:
        run_distributed(_raise_on_rank_1, 2, backend="gloo", timeout=60)
    err = info.value
    assert (err.rank, err.reason, err.exc_type) == (1, "raised", "ValueError")
    assert "rank 1 raised ValueError: the learner's bug" in str(err)
    assert "_raise_on_rank_1" in err.remote_traceback
    assert time.monotonic() - start < 30, "rank 0, blocked in its barrier, should have been stopped"


def _die_on_rank_0(rank, world_size):
    if rank == 0:
        os._exit(3)
    dist.barrier()


def _hang_on_rank_1(rank, world_size):
    if rank == 1:
        while True:
            time.sleep(0.05)
    return rank


def test_does_a_worker_that_dies_end_the_run_naming_its_rank():
    with pytest.raises(WorkerError, match=r"rank 0 died \(exited with code 3\)") as info:
        run_distributed(_die_on_rank_0, 2, backend="gloo", timeout=60)
    assert info.value.reason == "died"


def test_does_a_hung_worker_end_the_run_within_the_timeout_naming_its_rank():
    # 30 s, not less: the timeout counts from the start, and on a loaded 2-core machine a rank can
    # still be importing torch after 15 s (CI with four test workers: "rank 0 did not finish within
    # 15 s", still garbage-collecting in torch's import; with one worker per core 3 s was too short).
    start = time.monotonic()
    with pytest.raises(WorkerError, match=r"rank 1 did not finish within 30 s") as info:
        run_distributed(_hang_on_rank_1, 2, backend="gloo", timeout=30)
    assert time.monotonic() - start < 90
    assert info.value.reason == "timed out"
    assert "_hang_on_rank_1" in info.value.remote_traceback, "the hung rank's stack should say where it hung"


def test_do_two_runs_at_the_same_time_keep_their_groups_apart():
    results, errors = {}, []

    def go(offset):
        try:
            results[offset] = [r["sum"] for r in run_distributed(_sum_of_ranks, 2, args=(offset,), backend="gloo",
                                                                 show_output=False)]
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(k,)) for k in (100, 1000)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert results == {100: [201.0, 201.0], 1000: [2001.0, 2001.0]}


def test_is_bad_input_named():
    with pytest.raises(ValueError, match="world_size must be a whole number >= 1, got 0"):
        run_distributed(_sum_of_ranks, 0)
    with pytest.raises(TypeError, match="needs a function to run on each rank, got int"):
        run_distributed(3, 2)
    with pytest.raises(ValueError, match="backend must be 'gloo' or 'nccl', got 'mpi'"):
        run_distributed(_sum_of_ranks, 2, backend="mpi")
    with pytest.raises(ValueError, match=r"rank_args needs one sequence of arguments per rank \(2\), got 1"):
        run_distributed(_sum_of_ranks, 2, rank_args=[(1,)])
    with pytest.raises(ValueError, match="either args .* or rank_args"):
        run_distributed(_sum_of_ranks, 2, args=(1,), rank_args=[(1,), (2,)])


def _fake_gpus(monkeypatch, count, nccl=True):
    """``count`` CUDA GPUs and NCCL's availability, faked where torch reports them."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: count > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(dist, "is_nccl_available", lambda: nccl)


@pytest.mark.parametrize("gpus, nccl, world_size, backend", [
    (0, False, 2, "gloo"), (1, True, 2, "gloo"), (2, True, 2, "nccl"), (1, True, 1, "nccl"), (4, False, 2, "gloo")])
def test_is_nccl_chosen_only_when_every_rank_has_its_own_gpu(monkeypatch, gpus, nccl, world_size, backend):
    from bncourse.distributed_devices import default_backend, device_for

    _fake_gpus(monkeypatch, gpus, nccl)
    assert default_backend(world_size) == backend
    # ... and each rank's tensors go where that backend takes them: NCCL refuses CPU tensors
    expected = [torch.device("cuda", r) if backend == "nccl" else torch.device("cpu") for r in range(world_size)]
    assert [device_for(backend, r) for r in range(world_size)] == expected


def test_does_device_for_refuse_nccl_without_a_gpu(monkeypatch):
    from bncourse.distributed_devices import device_for

    _fake_gpus(monkeypatch, 0, nccl=True)
    with pytest.raises(ValueError, match="NCCL backend needs a CUDA GPU"):
        device_for("nccl", 0)


def test_does_the_module_docstrings_example_travel_to_the_workers_and_run_as_written():
    """Functions defined at run time (as in a notebook cell: not importable by name), with a closure
    over a local value; the example creates its tensor on rank_device(), where the default backend
    needs it (gloo and the CPU here; NCCL and cuda:rank on a machine with a GPU per rank)."""
    import bncourse.distributed as D

    doc = D.__doc__
    example = doc[doc.index("    def work(rank, world_size):"):doc.index("    run_distributed(work")]
    assert "device=rank_device()" in example
    source = "\n".join(line[4:] for line in example.splitlines())
    source += "\ndef scaled(rank, world_size):\n    return work(rank, world_size) * scale\n"
    namespace = {"torch": torch, "dist": dist, "rank_device": D.rank_device, "scale": 7.0}
    exec(source, namespace)  # noqa: S102 - the functions exist only here, as in a kernel
    assert run_distributed(namespace["scaled"], world_size=2) == [21.0, 21.0]

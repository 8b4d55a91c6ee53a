"""Batch norm under data parallelism: DDP on several processes with per-process or synchronized BN.

The notebook "Batch norm across devices" runs these trials through ``run_experiment``:

- ``train_trial(config, seed)``: a small CNN on noisy digits, trained with
  ``DistributedDataParallel`` on ``config.world_size`` gloo processes (``per_rank`` images each),
  or in one process (``world_size=1``) on the whole batch. ``config.norm`` picks the batch norm:
  ``"batch"`` (each process its own statistics), ``"sync"`` (``bncourse.nn_sync.SyncBatchNorm``
  with the given forward/backward pair), ``"torch_sync"`` (``nn.SyncBatchNorm``; CUDA only) or
  ``"ghost"`` (one process, statistics over sub-batches of ``ghost`` images).
  Every rank takes its consecutive share of the same global batch, so with equal shares DDP's
  averaged gradient is the whole batch's gradient: the arms differ only in their statistics.
- ``allreduce_cost(channels)``: time of one all_reduce of a synchronized BN layer's buffer
  (2C + 1 float64 values) on 2 processes, against C.

Run under torchrun as a script (the same training code, env:// rendezvous):

    torchrun --standalone --nproc-per-node 2 -m bncourse.experiments.distributed_bn --steps 40
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, replace
from typing import Any, Callable

import numpy as np

NOISY_DIGITS_SEED = 1234


@dataclass(frozen=True)
class DDPConfig:
    """One arm of the experiment (defaults: the notebook's fast-mode settings)."""

    norm: str = "batch"          # "batch", "sync", "torch_sync" or "ghost"
    world_size: int = 2          # processes; 1 = one process on the whole batch
    per_rank: int = 4            # images per process per step (the global batch is world_size * per_rank)
    ghost: int = 4               # ghost batch size for norm="ghost"
    steps: int = 150             # optimizer steps
    lr: float = 0.05             # SGD, momentum 0.9, the same for every arm (see the notebook)
    widths: tuple = (16, 32)     # SmallCNN stages
    dtype: str = "float64"       # float64: runs that compute the same function end with the same weights
    forward_fn: Callable | None = None   # the synchronized pair for norm="sync" (default: the reference)
    backward_fn: Callable | None = None
    return_params: bool = True   # send rank 0's final parameters back (to compare arms)


# ---------------------------------------------------------------------------------------------
# Data and model
# ---------------------------------------------------------------------------------------------


_NOISY_DIGITS: dict = {}  # cache: one copy per process


def noisy_digits():
    """scikit-learn's digits made harder (clean digits saturate near 98%): every image gets its own
    contrast (x0.4 to x1.6) and brightness (+-1 sd) and pixel noise (sd 0.7), fixed by a seed.

    Returns numpy arrays (X_train (N, 1, 8, 8) float32, y_train, X_test, y_test).
    """
    if "data" not in _NOISY_DIGITS:
        from bncourse.data import load_digits

        d = load_digits()
        rng = np.random.default_rng(NOISY_DIGITS_SEED)
        out = []
        for X, y in ((d.X_train, d.y_train), (d.X_test, d.y_test)):
            X = X.numpy()
            n = len(X)
            X = X * rng.uniform(0.4, 1.6, (n, 1, 1, 1)) + rng.normal(0, 1.0, (n, 1, 1, 1)) + rng.normal(0, 0.7, X.shape)
            out += [X.astype(np.float32), y.numpy()]
        _NOISY_DIGITS["data"] = tuple(out)
    return _NOISY_DIGITS["data"]


def ghost_batch_norm(num_features: int, ghost: int):
    """``nn.BatchNorm2d`` whose training statistics come from consecutive sub-batches of ``ghost`` images.

    One process computes what ``world_size`` processes with per-process batch norm compute when
    each holds ``ghost`` images. The running statistics are updated once per sub-batch.
    """
    import torch
    from torch import nn
    from torch.nn import functional as F

    class GhostBN(nn.BatchNorm2d):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            if not self.training:
                return super().forward(x)
            parts = [F.batch_norm(c, self.running_mean, self.running_var, self.weight, self.bias, True,
                                  self.momentum, self.eps) for c in x.split(ghost)]
            return torch.cat(parts)

    return GhostBN(num_features)


def _model(config: DDPConfig, seed: int):
    import torch
    from torch import nn

    from bncourse.models import SmallCNN

    torch.manual_seed(seed)
    norm = (lambda c: ghost_batch_norm(c, config.ghost)) if config.norm == "ghost" else "batch"
    model = SmallCNN(1, 10, widths=tuple(config.widths), norm=norm)
    if config.norm == "sync":
        from bncourse.nn_sync import convert_sync_batchnorm

        convert_sync_batchnorm(model, config.forward_fn, config.backward_fn)
    elif config.norm == "torch_sync":
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


# ---------------------------------------------------------------------------------------------
# Training on one rank (also the whole run when world_size == 1)
# ---------------------------------------------------------------------------------------------


def train_on_rank(rank: int, world_size: int, config: DDPConfig, seed: int, data: tuple | None = None) -> dict:
    """Train ``config``'s model on this rank's share of every global batch; rank 0 evaluates.

    ``data``: (X_train, y_train, X_test, y_test) numpy arrays (default ``noisy_digits()``).
    Returns (every rank) ``test_acc`` of rank 0's model in eval mode, ``ms_per_step`` (median over
    the steps after the first 5), and with ``return_params`` the flat float64 parameter vector.
    """
    import torch
    import torch.distributed as dist
    from torch.nn import functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from bncourse.distributed_devices import rank_device

    device = rank_device()
    dtype = getattr(torch, config.dtype)
    X_train, y_train, X_test, y_test = data if data is not None else noisy_digits()
    X_train = torch.from_numpy(X_train).to(device, dtype)
    y_train = torch.from_numpy(y_train).to(device)
    model = _model(config, seed).to(device, dtype)
    if world_size > 1:
        model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9)
    gen = torch.Generator().manual_seed(10_000 + seed)  # the same global order on every rank
    B = config.per_rank * world_size
    order = torch.randperm(len(X_train), generator=gen)
    pos, times = 0, []
    model.train()
    for step in range(config.steps):
        if pos + B > len(order):
            order, pos = torch.randperm(len(X_train), generator=gen), 0
        idx = order[pos + rank * config.per_rank: pos + (rank + 1) * config.per_rank].to(device)
        pos += B
        start = time.perf_counter()
        loss = F.cross_entropy(model(X_train[idx]), y_train[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    net = model.module if world_size > 1 else model
    out: dict[str, Any] = {"ms_per_step": 1000 * float(np.median(times[5:] or times))}
    if rank == 0:
        net.eval()
        with torch.no_grad():
            logits = net(torch.from_numpy(X_test).to(device, dtype))
        out["test_acc"] = float((logits.argmax(1).cpu().numpy() == y_test).mean())
        if config.return_params:
            out["params"] = torch.cat([p.detach().double().cpu().flatten() for p in net.parameters()]).numpy()
    if world_size > 1:
        dist.barrier()
    return out


def train_trial(config: DDPConfig, seed: int) -> dict:
    """One training run as a harness trial: ``{"test_acc", "ms_per_step"[, "params"]}`` from rank 0."""
    from bncourse.distributed import run_distributed

    if config.world_size == 1:  # one process: run here, with one thread like the workers
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return train_on_rank(0, 1, config, seed, noisy_digits())
        finally:
            torch.set_num_threads(threads)
    backend = "nccl" if config.norm == "torch_sync" else "gloo"
    return run_distributed(train_on_rank, config.world_size, args=(config, seed, noisy_digits()), backend=backend,
                           timeout=600, show_output=False)[0]


def _train_runs_on_rank(rank: int, world_size: int, runs: list, data: tuple) -> list[dict]:
    """Several training runs one after the other in one process group: ``train_on_rank`` for each."""
    return [train_on_rank(rank, world_size, config, seed, data) for config, seed in runs]


_RUNS: dict = {}  # cache: (config, seed) -> rank 0's result, so several experiments share the runs


def train_all(configs, seeds) -> None:
    """Train every distributed (config, seed) not yet in the cache, so ``cached_run`` finds it there.

    The runs of one world size and backend share one launch of ``run_distributed``: its ranks
    train them one after the other in the same process group (each launch starts ``world_size``
    processes that import torch: seconds, where a fast-mode run trains in a fraction of one). A
    run's result does not depend on the runs before it: each builds its model, optimizer and
    batch order from its own seed (tests/test_experiments_distributed_bn.py compares). Runs in one
    process (``world_size=1``) are left to the experiment, which shows them in its progress bar.
    """
    from bncourse.distributed import run_distributed

    groups: dict[tuple, list] = {}
    for config in dict.fromkeys(configs):
        if config.world_size > 1:
            backend = "nccl" if config.norm == "torch_sync" else "gloo"
            groups.setdefault((config.world_size, backend), []).extend(
                (config, s) for s in seeds if (config, s) not in _RUNS)
    for (world_size, backend), runs in groups.items():
        if not runs:
            continue
        print(f"training {len(runs)} runs on {world_size} {backend} processes, one after the other ...", flush=True)
        start = time.perf_counter()
        results = run_distributed(_train_runs_on_rank, world_size, args=(runs, noisy_digits()), backend=backend,
                                  timeout=600 * len(runs), show_output=False)[0]
        _RUNS.update(zip(runs, results))
        print(f"  done in {time.perf_counter() - start:.0f} s", flush=True)


def cached_run(config: DDPConfig, seed: int) -> dict:
    """``train_trial(config, seed)``, computed once per process and kept in ``_RUNS``."""
    key = (config, seed)
    if key not in _RUNS:
        _RUNS[key] = train_trial(config, seed)
    return _RUNS[key]


def comparison_trial(references: dict) -> Callable[[DDPConfig, int], dict]:
    """A harness trial: the arm's run plus ``diff_<name>``, the largest |difference| between its final
    parameters and those of ``references[name]`` trained on the same seed (cached, so each run happens once)."""

    def trial(config: DDPConfig, seed: int) -> dict:
        run = cached_run(config, seed)
        out = {"test_acc": run["test_acc"], "ms_per_step": run["ms_per_step"]}
        for name, ref in references.items():
            out[f"diff_{name}"] = float(np.abs(run["params"] - cached_run(ref, seed)["params"]).max())
        return out

    return trial


# ---------------------------------------------------------------------------------------------
# The cost of the all-reduce
# ---------------------------------------------------------------------------------------------


def _time_allreduce(rank, world_size, channels, reps):
    import torch
    import torch.distributed as dist

    rows = []
    for C in channels:
        buf = torch.zeros(2 * C + 1, dtype=torch.float64)
        for _ in range(3):
            dist.all_reduce(buf)
        dist.barrier()
        times = []
        for _ in range(reps):
            start = time.perf_counter()
            dist.all_reduce(buf)
            times.append(time.perf_counter() - start)
        rows.append({"channels": C, "bytes": buf.numel() * 8, "us_per_all_reduce": 1e6 * float(np.median(times))})
    return rows


def allreduce_cost(channels=(16, 64, 256, 1024, 4096, 16384, 65536), reps: int = 50, world_size: int = 2) -> list[dict]:
    """Median time of one all_reduce of a synchronized BN buffer (2C + 1 float64) for each C, rank 0's view."""
    from bncourse.distributed import run_distributed

    return run_distributed(_time_allreduce, world_size, args=(tuple(channels), reps), backend="gloo",
                           show_output=False)[0]


def _try_torch_sync_bn_on_cpu(rank, world_size):
    import torch
    from torch import nn

    layer = nn.SyncBatchNorm(4)
    try:
        layer(torch.randn(2, 4, 3, 3))
    except ValueError as err:
        return f"ValueError: {err}"
    return "ran"


def torch_sync_batchnorm_on_cpu() -> str:
    """What ``nn.SyncBatchNorm`` does with CPU tensors in a real 2-process gloo group (its message)."""
    from bncourse.distributed import run_distributed

    return run_distributed(_try_torch_sync_bn_on_cpu, 2, backend="gloo", show_output=False)[0]


def _compare_pairs(rank, world_size, forward_fn, backward_fn, x, dy):
    import torch

    from bncourse.nn_sync import sync_batch_norm_backward, sync_batch_norm_forward

    sl = slice(0, 3) if rank == 0 else slice(3, len(x))
    out = []
    for fwd, bwd in ((forward_fn, backward_fn), (sync_batch_norm_forward, sync_batch_norm_backward)):
        C = x.shape[1]
        y, cache = fwd(torch.tensor(x[sl]), torch.ones(C, dtype=torch.float64), torch.zeros(C, dtype=torch.float64),
                       torch.zeros(C, dtype=torch.float64), torch.ones(C, dtype=torch.float64), 0.1, 1e-5)
        dx = bwd(torch.tensor(dy[sl]), cache)[0]
        out.append(np.concatenate([y.numpy().ravel(), dx.numpy().ravel()]))
    return float(np.abs(out[0] - out[1]).max())


def choose_sync_pair(forward_fn, backward_fn) -> tuple[Callable, Callable, str]:
    """The learner's pair if it agrees with the reference on one 2-rank batch, else the reference.

    Returns (forward, backward, a sentence saying which pair the experiments use).
    """
    from bncourse.distributed import WorkerError, run_distributed
    from bncourse.nn_sync import sync_batch_norm_backward, sync_batch_norm_forward

    rng = np.random.default_rng(0)
    x, dy = rng.normal(1, 2, (9, 3)), rng.normal(size=(9, 3))
    try:
        diff = max(run_distributed(_compare_pairs, 2, args=(forward_fn, backward_fn, x, dy), backend="gloo",
                                   timeout=60, show_output=False))
    except WorkerError as err:
        diff, why = float("inf"), f"it raised on rank {err.rank}"
    else:
        why = f"it differs from the reference by {diff:.2g}"
    if diff <= 1e-9:
        return forward_fn, backward_fn, f"the experiments use YOUR synchronized batch norm (max difference to the reference {diff:.1g})"
    return (sync_batch_norm_forward, sync_batch_norm_backward,
            f"the experiments use the COURSE'S REFERENCE synchronized batch norm: yours does not pass yet ({why})")


# ---------------------------------------------------------------------------------------------
# torchrun
# ---------------------------------------------------------------------------------------------


def main(argv=None) -> None:
    """Entry point under torchrun: train with DDP and synchronized batch norm, print rank 0's result."""
    import os

    from bncourse.distributed_rank import main_under_torchrun

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--norm", default="sync", choices=["batch", "sync", "torch_sync"])
    parser.add_argument("--per-rank", type=int, default=4)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if "RANK" not in os.environ:
        parser.error("start me with torchrun, e.g. torchrun --standalone --nproc-per-node 2 -m "
                     "bncourse.experiments.distributed_bn")
    config = DDPConfig(norm=args.norm, world_size=int(os.environ["WORLD_SIZE"]), per_rank=args.per_rank,
                       steps=args.steps)
    out = main_under_torchrun(train_on_rank, config, args.seed)
    if int(os.environ["RANK"]) == 0:
        print(f"torchrun: {config.world_size} processes x {config.per_rank} images, norm={config.norm}, "
              f"{config.steps} steps: test accuracy {out['test_acc']:.4f}, {out['ms_per_step']:.2f} ms/step")


if __name__ == "__main__":
    main()

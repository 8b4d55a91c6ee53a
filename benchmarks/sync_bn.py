"""Synchronized batch norm on 2 gloo processes: how exact, and what it costs per training step.

1. Exactness: the course's reference (``bncourse.nn_sync``) on 2 processes with uneven slices of
   one float64 batch, forward and backward, against one process running PyTorch's batch norm on
   the concatenated batch; the largest absolute difference over outputs, running statistics and
   gradients (input, weight, bias), for (N, C) and (N, C, H, W) inputs.
2. Cost: DDP training steps of the same SmallCNN on the same data (float32, ``--per-rank`` images
   per process) with per-process ``nn.BatchNorm2d`` and with the reference ``SyncBatchNorm``. Both
   models live in the same 2 processes and their steps are interleaved in blocks, so machine load
   hits both alike; the ratio is the median over blocks of (sync block time / per-process block time).

Run: ``python benchmarks/sync_bn.py``. The last two lines are
``sync_bn_max_abs_diff: <x>`` and ``sync_vs_local_bn_step_time: <x>x``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def _exactness(rank, world_size, x, dy, w, b, sizes):
    import torch

    from bncourse.nn_sync import SyncBatchNorm

    lo = int(np.sum(sizes[:rank]))
    sl = slice(lo, lo + int(sizes[rank]))
    layer = SyncBatchNorm(x.shape[1]).double()
    with torch.no_grad():
        layer.weight.copy_(torch.from_numpy(w))
        layer.bias.copy_(torch.from_numpy(b))
    xr = torch.from_numpy(x[sl]).requires_grad_()
    y = layer(xr)
    y.backward(torch.from_numpy(dy[sl]))
    return {"y": y.detach().numpy(), "dx": xr.grad.numpy(), "dw": layer.weight.grad.numpy(),
            "db": layer.bias.grad.numpy(), "rm": layer.running_mean.numpy(), "rv": layer.running_var.numpy()}


def max_abs_diff(shape, sizes, seed=0) -> float:
    import torch

    from bncourse.distributed import run_distributed

    rng = np.random.default_rng(seed)
    x = rng.normal(1.5, 2.0, size=shape)
    dy = rng.normal(size=shape)
    C = shape[1]
    w, b = rng.uniform(0.5, 1.5, C), rng.uniform(-1, 1, C)
    ranks = run_distributed(_exactness, len(sizes), args=(x, dy, w, b, sizes), backend="gloo", show_output=False)
    bn = torch.nn.BatchNorm2d(C).double() if len(shape) == 4 else torch.nn.BatchNorm1d(C).double()
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(w))
        bn.bias.copy_(torch.from_numpy(b))
    xt = torch.from_numpy(x).requires_grad_()
    y = bn(xt)
    y.backward(torch.from_numpy(dy))
    diffs = []
    lo = 0
    for r, got in zip(sizes, ranks):
        sl = slice(lo, lo + r)
        lo += r
        diffs += [np.abs(got["y"] - y.detach().numpy()[sl]).max(), np.abs(got["dx"] - xt.grad.numpy()[sl]).max(),
                  np.abs(got["rm"] - bn.running_mean.numpy()).max(), np.abs(got["rv"] - bn.running_var.numpy()).max()]
    # parameter gradients: each rank holds its own share; the shares add up to the whole batch's
    diffs += [np.abs(sum(g["dw"] for g in ranks) - bn.weight.grad.numpy()).max(),
              np.abs(sum(g["db"] for g in ranks) - bn.bias.grad.numpy()).max()]
    return float(max(diffs))


def _step_times(rank, world_size, per_rank, blocks, steps_per_block, widths):
    import torch
    from torch.nn import functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from bncourse.experiments.distributed_bn import noisy_digits
    from bncourse.models import SmallCNN
    from bncourse.nn_sync import convert_sync_batchnorm

    X, y, _, _ = noisy_digits()
    X, y = torch.from_numpy(X), torch.from_numpy(y)
    models = {}
    for kind in ("local", "sync"):
        torch.manual_seed(0)
        net = SmallCNN(1, 10, widths=widths)
        if kind == "sync":
            convert_sync_batchnorm(net)
        models[kind] = (DDP(net), None)
        models[kind] = (models[kind][0], torch.optim.SGD(models[kind][0].parameters(), lr=0.05, momentum=0.9))
    g = torch.Generator().manual_seed(1)
    times = {"local": [], "sync": []}
    order = ["local", "sync"]
    for block in range(blocks + 1):  # block 0 warms up
        for kind in (order if block % 2 else order[::-1]):
            model, opt = models[kind]
            start = time.perf_counter()
            for _ in range(steps_per_block):
                idx = torch.randint(0, len(X), (per_rank,), generator=g)
                loss = F.cross_entropy(model(X[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if block:
                times[kind].append((time.perf_counter() - start) / steps_per_block)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-rank", type=int, default=4, help="images per process per step")
    parser.add_argument("--blocks", type=int, default=10)
    parser.add_argument("--steps-per-block", type=int, default=20)
    args = parser.parse_args()

    from bncourse.distributed import run_distributed

    print("exactness: reference synchronized BN on 2 gloo processes vs one process, float64, fwd + bwd")
    worst = 0.0
    for shape, sizes in (((16, 64), (5, 11)), ((8, 16, 8, 8), (3, 5)), ((13, 8, 4, 4), (2, 7, 4))):
        d = max_abs_diff(shape, sizes)
        worst = max(worst, d)
        print(f"  x {shape}, slices {sizes}: max |difference| {d:.3g}")

    times = run_distributed(_step_times, 2, args=(args.per_rank, args.blocks, args.steps_per_block, (16, 32)),
                            backend="gloo", timeout=3600, show_output=False)[0]
    local, sync = np.array(times["local"]), np.array(times["sync"])
    ratio = float(np.median(sync / local))
    print(f"DDP step, SmallCNN(16, 32), 2 processes x {args.per_rank} images, float32, {args.blocks} interleaved "
          f"blocks of {args.steps_per_block} steps:")
    print(f"  per-process BN: {1000 * np.median(local):.2f} ms/step; synchronized BN: {1000 * np.median(sync):.2f} "
          f"ms/step (4 BN layers: 8 extra all_reduce calls per step)")
    print(f"sync_bn_max_abs_diff: {worst:.3g}")
    print(f"sync_vs_local_bn_step_time: {ratio:.2f}x")


if __name__ == "__main__":
    main()

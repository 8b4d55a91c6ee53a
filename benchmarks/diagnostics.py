"""What does leaving ``bncourse.diagnostics`` on cost per training step?

The same model (same seed, same batches) trains with and without ``Diagnostics`` attached, the
repeats interleaved (with, without, without, with, ...) so drifting machine load hits both alike.
The ratio is the median over repeats of (seconds per step with diagnostics) / (seconds per step
without), in CPU time of this process (``time.process_time``, one torch thread), which unlike wall
time does not swing with other jobs on a shared machine; the wall-clock ratio is printed too.

Workloads: the notebook-11 deep tanh MLP (10 hidden layers of 64, batch 64: tiny steps, so the
per-layer bookkeeping shows most) and the course's SmallCNN on digits (a step with real work).

Each is measured recording every step and every 10th step (``Diagnostics(model, every=10)``; the
hooks stay on in between but only count the step). Run: ``python benchmarks/diagnostics.py`` (CPU;
``--device cuda`` on a GPU machine). The last line is ``diagnostics_overhead: <ratio>x ...`` for
the SmallCNN (1.0 = free).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bncourse.data import load_digits
from bncourse.device import configure_cpu_threads, get_device
from bncourse.diagnostics import Diagnostics
from bncourse.experiments.inside import deep_mlp
from bncourse.models import SmallCNN


def run(make_model, X, y, steps: int, with_diagnostics: bool, device, every: int = 1) -> tuple[float, float]:
    torch.manual_seed(0)
    model = make_model().to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator(device="cpu").manual_seed(0)
    batches = [torch.randint(0, len(y), (64,), generator=g).to(device) for _ in range(steps)]
    diag = Diagnostics(model, every=every).attach() if with_diagnostics else None
    t0, w0 = time.process_time(), time.perf_counter()
    for idx in batches:
        loss = F.cross_entropy(model(X[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    if diag is not None:
        diag.report()  # the one transfer to the host is part of the cost
        diag.detach()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return (time.process_time() - t0) / steps, (time.perf_counter() - w0) / steps


def measure(name, make_model, X, y, steps, repeats, device, every: int = 1) -> float:
    run(make_model, X, y, 5, True, device)  # warm-up
    cpu, wall = [], []
    for r in range(repeats):
        order = (True, False) if r % 2 == 0 else (False, True)
        got = {w: run(make_model, X, y, steps, w, device, every) for w in order}
        cpu.append(got[True][0] / got[False][0])
        wall.append(got[True][1] / got[False][1])
    ratio = statistics.median(cpu)
    print(f"{name}, recording every {'step' if every == 1 else f'{every}th step'}: with / without diagnostics per step: {ratio:.2f}x CPU time, "
          f"{statistics.median(wall):.2f}x wall ({repeats} interleaved repeats of {steps} steps)")
    return ratio


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    configure_cpu_threads(1) if args.device in (None, "cpu") else None
    device = get_device(args.device)
    data = load_digits()
    Xi, y = data.X_train.to(device), data.y_train.to(device)
    Xf = Xi.flatten(1)
    mlp = lambda: deep_mlp(64, 10, depth=10, width=64, gain=5 / 3, batch_norm=True)  # noqa: E731
    cnn = lambda: SmallCNN(in_channels=1, num_classes=10, widths=(16, 32), norm="batch")  # noqa: E731
    for every in (1, 10):
        measure("deep tanh MLP (10 x 64)", mlp, Xf, y, args.steps, args.repeats, device, every)
    ratios = [measure("SmallCNN (16, 32)", cnn, Xi, y, args.steps, args.repeats, device, every) for every in (1, 10)]
    print(f"diagnostics_overhead: {ratios[0]:.2f}x recording every step, {ratios[1]:.2f}x every 10th step")


if __name__ == "__main__":
    main()

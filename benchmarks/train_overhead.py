"""Does the course's training loop cost anything over a bare hand-written torch loop, on any device?

Both loops train the same model (same seed) on the same device-resident data (digits), with the
same shuffling and batch size, and with the same device settings: the bare loop takes the course's
``FastPath`` for the device (on CUDA: autocast in bf16, or fp16 with a gradient scaler on GPUs
older than Ampere, and channels_last; plain float32 on mps and cpu), so the two compare like with
like. The course loop is ``bncourse.train.train`` with its defaults (per-step loss and accuracy
recorded, tqdm bar on), the bare loop is forward, cross-entropy, zero_grad, backward, step and
nothing else. Repeats are interleaved (course, bare, bare, course, ...) so that drifting machine
load hits both alike; the ratio is the median, over the repeats, of course steps/s divided by the
steps/s of the bare run next to it.

The clock is ``bncourse.device.device_timer``: on a GPU (cuda, mps) it waits for the device at both
ends, so it measures the device's time rather than the time to queue the work; on the CPU it is
CPU time of this process (``time.process_time``): with one torch thread that is the time the loop
itself costs, and unlike wall-clock time it does not swing with other jobs on a shared machine. The
wall-clock ratio is printed as well.

Run: ``python benchmarks/train_overhead.py`` (the device ``bncourse.device.get_device`` picks;
``--device cpu`` to force one). The last line is ``trainer_vs_bare_loop: <ratio>x`` (>= 0.95 is
the goal) for the headline workload, the course's SmallCNN; the BN-paper MLP (much smaller steps,
so per-step overhead shows more) is printed above it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bncourse.data import DeviceLoader, load_digits
from bncourse.device import configure_cpu_threads, device_timer, fast_path, get_device, set_seed
from bncourse.models import BNPaperMLP, SmallCNN
from bncourse.train import TrainConfig, train


def bare_loop(model, X, y, batch_size, steps, lr, momentum, seed, device, fast=None):
    """The hand-written baseline: shuffle per epoch on the device, index, forward, backward, step.

    ``fast``: the device's ``FastPath`` (autocast, channels_last, a grad scaler for fp16), the same
    one the course loop uses; default ``fast_path(device)``.
    """
    fast = fast or fast_path(device)
    fast.prepare_model(model, device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    scaler = fast.grad_scaler()
    g = torch.Generator(device=device).manual_seed(seed)
    step = 0
    while step < steps:
        order = torch.randperm(len(y), device=device, generator=g)
        for start in range(0, len(y), batch_size):
            if step >= steps:
                break
            idx = order[start:start + batch_size]
            with fast.autocast():
                loss = F.cross_entropy(model(fast.to_input(X[idx])), y[idx])
            opt.zero_grad(set_to_none=True)
            if scaler is None:
                loss.backward()
                opt.step()
            else:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            step += 1


def measure(name, make_model, data, batch_size, steps, repeats, device, lr=0.1, momentum=0.9,
            progress: bool = True) -> float:
    """Print the course loop's and the bare loop's speed on ``device``; return the median paired ratio."""
    X, y = data.X_train.to(device), data.y_train.to(device)
    fast = fast_path(device)
    course, bare, course_wall, bare_wall = [], [], [], []

    def run_course():
        set_seed(0)
        model = make_model()
        loader = DeviceLoader(X, y, batch_size, shuffle=True, device=device, seed=0)
        config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, momentum=momentum, device=str(device),
                             progress=progress, label=f"course {name}")
        t = time.perf_counter()
        with device_timer(device, cpu_clock="process") as timer:
            train(model, loader, None, config)
        course.append(steps / timer.seconds)
        course_wall.append(steps / (time.perf_counter() - t))

    def run_bare():
        set_seed(0)
        model = make_model()
        t = time.perf_counter()
        with device_timer(device, cpu_clock="process") as timer:
            bare_loop(model, X, y, batch_size, steps, lr, momentum, 0, device, fast)
        bare.append(steps / timer.seconds)
        bare_wall.append(steps / (time.perf_counter() - t))

    run_course(), run_bare()  # warm-up (allocator, lazy init, cuDNN's kernel search), not counted
    for record in (course, bare, course_wall, bare_wall):
        record.clear()
    for r in range(repeats):
        first, second = (run_course, run_bare) if r % 2 == 0 else (run_bare, run_course)
        first(), second()
    c, b = statistics.median(course), statistics.median(bare)
    pairs = sorted(x / y for x, y in zip(course, bare))  # each course run against the bare run next to it
    ratio = statistics.median(pairs)
    wall = statistics.median(x / y for x, y in zip(course_wall, bare_wall))
    clock = device_timer(device, cpu_clock="process").clock_name
    print(f"{name}: course loop {c:,.0f} steps per second ({clock}), bare loop {b:,.0f} (medians of {repeats}); "
          f"paired ratios {pairs[0]:.2f}..{pairs[-1]:.2f}, median {ratio:.3f}; wall-clock median ratio {wall:.3f}")
    return ratio


def describe_settings(device) -> str:
    """One line: what both loops run with on ``device``."""
    fast = fast_path(device)
    precision = {None: "float32", torch.bfloat16: "bf16 autocast",
                 torch.float16: "fp16 autocast + grad scaler"}[fast.autocast_dtype]
    layout = ", channels_last" if fast.channels_last else ""
    return f"both loops on {device}: {precision}{layout}"


def run(device, repeats: int = 15, mlp_steps: int = 300, cnn_steps: int = 30, progress: bool = True) -> float:
    """Both workloads on ``device``; returns the headline (SmallCNN) ratio."""
    data = load_digits()
    print(describe_settings(device))
    measure("BN-paper MLP 64-100-100-100-10, batch 60", lambda: BNPaperMLP(64, 10, batch_norm=True), data,
            batch_size=60, steps=mlp_steps, repeats=repeats, device=device, lr=0.5, momentum=0.0, progress=progress)
    return measure("SmallCNN (16, 32, 64) + BN on 8x8 digits, batch 128",
                   lambda: SmallCNN(1, 10, widths=(16, 32, 64)), data,
                   batch_size=128, steps=cnn_steps, repeats=repeats, device=device, progress=progress)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: what get_device() picks)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: the CI setting; 2 threads on a busy 2-core box are erratic)")
    args = parser.parse_args(argv)
    configure_cpu_threads(args.threads)
    device = get_device(args.device)
    ratio = run(device, args.repeats)
    print(f"trainer_vs_bare_loop: {ratio:.3f}x")


if __name__ == "__main__":
    main()

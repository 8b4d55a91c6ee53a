"""Does the course's training loop cost anything over a bare hand-written torch loop?

Both loops train the same model (same seed) on the same device-resident data (digits), with the
same shuffling and batch size; the course loop is ``bncourse.train.train`` with its defaults
(per-step loss and accuracy recorded, tqdm bar on), the bare loop is forward, cross-entropy,
zero_grad, backward, step and nothing else. Repeats are interleaved (course, bare, bare, course,
...) so that drifting machine load hits both alike; the ratio is the median, over the repeats, of course
steps/s divided by the steps/s of the bare run next to it, in CPU time
of this process (``time.process_time``): with one torch thread that is the time the loop itself
costs, and unlike wall-clock time it does not swing with other jobs on a shared machine. The
wall-clock ratio is printed as well.

Run: ``python benchmarks/train_overhead.py`` (CPU; ``--device cuda`` on a GPU machine).
The last line is ``trainer_vs_bare_loop: <ratio>x`` (>= 0.95 is the goal) for the headline
workload, the course's SmallCNN; the BN-paper MLP (much smaller steps, so per-step overhead shows
more) is printed above it.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bncourse.data import DeviceLoader, load_digits
from bncourse.device import configure_cpu_threads, get_device, set_seed
from bncourse.models import BNPaperMLP, SmallCNN
from bncourse.train import TrainConfig, train


def bare_loop(model, X, y, batch_size, steps, lr, momentum, seed, device):
    """The hand-written baseline: shuffle per epoch on the device, index, forward, backward, step."""
    model.to(device).train()
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)
    g = torch.Generator(device=device).manual_seed(seed)
    step = 0
    while step < steps:
        order = torch.randperm(len(y), device=device, generator=g)
        for start in range(0, len(y), batch_size):
            if step >= steps:
                break
            idx = order[start:start + batch_size]
            loss = F.cross_entropy(model(X[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(name, make_model, data, batch_size, steps, repeats, device, lr=0.1, momentum=0.9):
    X, y = data.X_train.to(device), data.y_train.to(device)
    course, bare, course_wall, bare_wall = [], [], [], []

    def run_course():
        set_seed(0)
        model = make_model()
        loader = DeviceLoader(X, y, batch_size, shuffle=True, device=device, seed=0)
        config = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, momentum=momentum, device=str(device),
                             progress=True, label=f"course {name}")
        t, c = time.perf_counter(), time.process_time()
        train(model, loader, None, config)
        course.append(steps / (time.process_time() - c))
        course_wall.append(steps / (time.perf_counter() - t))

    def run_bare():
        set_seed(0)
        model = make_model()
        t, c = time.perf_counter(), time.process_time()
        bare_loop(model, X, y, batch_size, steps, lr, momentum, 0, device)
        bare.append(steps / (time.process_time() - c))
        bare_wall.append(steps / (time.perf_counter() - t))

    run_course(), run_bare()  # warm-up (allocator, lazy init), not counted
    for record in (course, bare, course_wall, bare_wall):
        record.clear()
    for r in range(repeats):
        first, second = (run_course, run_bare) if r % 2 == 0 else (run_bare, run_course)
        first(), second()
    c, b = statistics.median(course), statistics.median(bare)
    pairs = sorted(x / y for x, y in zip(course, bare))  # each course run against the bare run next to it
    ratio = statistics.median(pairs)
    wall = statistics.median(x / y for x, y in zip(course_wall, bare_wall))
    print(f"{name}: course loop {c:,.0f} steps per CPU-second, bare loop {b:,.0f} (medians of {repeats}); "
          f"paired ratios {pairs[0]:.2f}..{pairs[-1]:.2f}, median {ratio:.3f}; wall-clock median ratio {wall:.3f}")
    return ratio


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1: the CI setting; 2 threads on a busy 2-core box are erratic)")
    args = parser.parse_args()
    configure_cpu_threads(args.threads)
    device = get_device(args.device)
    data = load_digits()
    measure("BN-paper MLP 64-100-100-100-10, batch 60", lambda: BNPaperMLP(64, 10, batch_norm=True), data,
            batch_size=60, steps=300, repeats=args.repeats, device=device, lr=0.5, momentum=0.0)
    ratio = measure("SmallCNN (16, 32, 64) + BN on 8x8 digits, batch 128",
                    lambda: SmallCNN(1, 10, widths=(16, 32, 64)), data,
                    batch_size=128, steps=30, repeats=args.repeats, device=device)
    print(f"trainer_vs_bare_loop: {ratio:.3f}x")


if __name__ == "__main__":
    main()

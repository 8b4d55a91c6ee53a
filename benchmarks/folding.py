"""What does folding batch norm into the convolutions buy at inference? SmallResNet, eval mode, this device.

The course's ``SmallResNet`` (ResNet-9 widths (64, 128, 256, 512) by default) on 32x32x3 inputs,
in eval mode, against the same model with every Conv2d -> BatchNorm2d pair folded
(``bncourse.folding.fold_model``), on the device ``bncourse.device.get_device`` picks (cuda, mps,
cpu; ``--device`` to choose). Running statistics are made non-trivial first (a few training-mode
passes on random data), so the fold has something to fold. Forward passes are interleaved
(unfolded, folded, folded, unfolded, ...) and timed with ``bncourse.device.device_timer``: the
device's time on a GPU (it waits for cuda or mps before reading the clock), CPU time of this
process on a CPU; the speedup is the median of the paired ratios. Batch 1 and batch 64 are printed.

Run: ``python benchmarks/folding.py [--device cuda] [--widths 64 128 256 512] [--repeats 20]``. The
last two lines are ``folded_max_abs_diff: <x>`` (float32 outputs on the same batch-1 input) and
``folded_vs_unfolded_inference: <x>x`` (batch 1; higher is better).
"""

from __future__ import annotations

import argparse

import torch

from bncourse.device import configure_cpu_threads, describe_device, get_device
from bncourse.folding import compare_inference_time, count_batchnorms, fold_model
from bncourse.models import SmallResNet


def run(device, widths=(64, 128, 256, 512), repeats: int = 20, batches=(64, 1)) -> dict:
    """Unfolded against folded SmallResNet on ``device``; returns {batch: compare_inference_time's dict}."""
    device = torch.device(device)
    torch.manual_seed(0)
    model = SmallResNet(widths=tuple(widths))
    with torch.no_grad():  # non-trivial running statistics
        model.train()
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    model.eval()
    folded = fold_model(model)
    model, folded = model.to(device), folded.to(device)
    print(f"SmallResNet widths {tuple(widths)} on {describe_device(device)}: {count_batchnorms(model)} batch norms, "
          f"{count_batchnorms(folded)} after folding")
    results = {}
    for batch in batches:
        x = torch.randn(batch, 3, 32, 32, device=device)
        r = compare_inference_time(model, folded, x, repeats=repeats if batch == 1 else max(5, repeats // 4))
        results[batch] = r
        print(f"batch {batch:>3}: unfolded {r['unfolded_ms']:.2f} ms, folded {r['folded_ms']:.2f} ms per forward "
              f"({r['clock']}, medians of {r['repeats']}); speedup {r['speedup']:.3f}x; "
              f"max |diff| {r['max_abs_diff']:.2e}")
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default=None, help="cuda, mps or cpu (default: what get_device() picks)")
    parser.add_argument("--widths", type=int, nargs=4, default=[64, 128, 256, 512])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    args = parser.parse_args(argv)
    configure_cpu_threads(args.threads)
    device = get_device(args.device)
    results = run(device, args.widths, args.repeats)
    print(f"folded_max_abs_diff: {results[1]['max_abs_diff']:.3g}")
    print(f"folded_vs_unfolded_inference: {results[1]['speedup']:.3f}x")


if __name__ == "__main__":
    main()

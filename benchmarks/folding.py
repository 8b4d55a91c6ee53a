"""What does folding batch norm into the convolutions buy at inference? SmallResNet, eval mode, CPU.

The course's ``SmallResNet`` (ResNet-9 widths (64, 128, 256, 512) by default) on 32x32x3 inputs,
in eval mode, against the same model with every Conv2d -> BatchNorm2d pair folded
(``bncourse.folding.fold_model``). Running statistics are made non-trivial first (a few
training-mode passes on random data), so the fold has something to fold. Forward passes are
interleaved (unfolded, folded, folded, unfolded, ...) and timed in CPU time of this process;
the speedup is the median of the paired ratios. Batch 1 and batch 64 are printed.

Run: ``python benchmarks/folding.py [--widths 64 128 256 512] [--repeats 20]``. The last two
lines are ``folded_max_abs_diff: <x>`` (float32 outputs on the same batch-1 input) and
``folded_vs_unfolded_inference: <x>x`` (batch 1; higher is better).
"""

from __future__ import annotations

import argparse

import torch

from bncourse.device import configure_cpu_threads, get_device
from bncourse.folding import compare_inference_time, count_batchnorms, fold_model
from bncourse.models import SmallResNet


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs=4, default=[64, 128, 256, 512])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: steadier on a shared machine)")
    args = parser.parse_args()
    configure_cpu_threads(args.threads)
    get_device("cpu")
    torch.manual_seed(0)
    model = SmallResNet(widths=tuple(args.widths))
    with torch.no_grad():  # non-trivial running statistics
        model.train()
        for _ in range(3):
            model(torch.randn(16, 3, 32, 32) * 2 + 0.5)
    model.eval()
    folded = fold_model(model)
    print(f"SmallResNet widths {tuple(args.widths)}: {count_batchnorms(model)} batch norms, "
          f"{count_batchnorms(folded)} after folding")
    results = {}
    for batch in (64, 1):
        x = torch.randn(batch, 3, 32, 32)
        r = compare_inference_time(model, folded, x, repeats=args.repeats if batch == 1 else max(5, args.repeats // 4))
        results[batch] = r
        print(f"batch {batch:>3}: unfolded {r['unfolded_ms']:.2f} ms, folded {r['folded_ms']:.2f} ms per forward "
              f"(CPU time, medians of {r['repeats']}); speedup {r['speedup']:.3f}x; max |diff| {r['max_abs_diff']:.2e}")
    print(f"folded_max_abs_diff: {results[1]['max_abs_diff']:.3g}")
    print(f"folded_vs_unfolded_inference: {results[1]['speedup']:.3f}x")


if __name__ == "__main__":
    main()

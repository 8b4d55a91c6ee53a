"""The course's GPU check: does the GPU path work on this machine, and how fast is it?

On a machine with a GPU (cuda, or mps on Apple silicon) it

1. prints the device and the precision the course picks for it (bf16 autocast, fp16 with a
   gradient scaler on GPUs older than Ampere, or float32);
2. runs the package's GPU-relevant tests (pytest -k on the device, training, layer, folding and
   distributed test files, when the tests are next to this script);
3. trains notebook 6's ResNet-9 (``bncourse.models.SmallResNet``, widths 64-128-256-512, the
   airbench-style recipe: SGD with Nesterov momentum, one-cycle learning rate, label smoothing 0.2,
   crop + flip augmentation on the device, test-time flip) on CIFAR-10 if it is cached
   (``bncourse.data``; ``$BNCOURSE_DATA``) or else on random data of CIFAR-10's shape (50,000
   training images of 3x32x32: timing only, the accuracy means nothing, and the output says so),
   after a few untimed warm-up steps (cuDNN's kernel search);
4. prints images/s, the median epoch time, the test accuracy and the time to 94% test accuracy
   (real data only), and the folding and training-loop overhead ratios measured on the device
   (``benchmarks/folding.py``, ``benchmarks/train_overhead.py``).

It plans for at most ``--minutes`` (10) in all: the number of epochs is cut (and the output says
so) when the measured speed says 10 would not fit.

On a machine without a GPU it says so and runs a tiny version of every step (no tests, a small
ResNet on a few random images, small timings) to its end in seconds: what CI runs, to keep the
script working. ``--smoke`` forces the tiny version on a GPU machine too.

Run: ``python benchmarks/gpu_check.py [--minutes 10] [--epochs 10] [--smoke] [--skip-tests]``.
The last lines are ``gpu_check_<name>: <value>`` results, one per line.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

from bncourse.data import DataSplit, DataUnavailable, load_cifar10
from bncourse.device import autocast_precision, describe_device, get_device, set_seed
from bncourse.models import SmallResNet
from bncourse.train import TrainConfig, train, warm_up

HERE = Path(__file__).resolve().parent
TEST_FILES = ["test_device.py", "test_train.py", "test_data.py", "test_nn.py", "test_nn_sync.py", "test_renorm.py",
              "test_folding.py", "test_distributed.py", "test_gpu_check.py"]
SMOKE_WIDTHS = (4, 8, 8, 8)  # the tiny version's ResNet
# the tests that run on the real GPU (skipped elsewhere), the training loop's, and the simulated-GPU ones
TEST_SELECTION = "real_gpu or test_train or autocast or fast_path or capability or synchron or timer or fp16 or nccl or device or cached or 257"


def _sibling(name: str):
    """Import benchmarks/<name>.py (the benchmarks folder is not a package)."""
    spec = importlib.util.spec_from_file_location(f"bncourse_benchmark_{name}", HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run_tests(timeout: float) -> str:
    """pytest -k on the GPU-relevant tests; a one-line summary."""
    tests = HERE.parent / "tests"
    files = [str(tests / f) for f in TEST_FILES if (tests / f).exists()]
    if not files:
        return f"skipped: no tests next to this script ({tests} not found)"
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", "-k", TEST_SELECTION, *files]
    env = {**os.environ, "BNCOURSE_FAST": "1"}  # the tests' sizes
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=str(HERE.parent), env=env)
    except subprocess.TimeoutExpired:
        return f"did not finish within {timeout:.0f} s"
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    failed = [line for line in lines if line.startswith("FAILED")]
    summary = lines[-1] if lines else f"pytest exited with {done.returncode} and printed nothing"
    return "\n".join([summary, *failed])


def cifar_or_synthetic(smoke: bool) -> tuple[DataSplit, bool]:
    """(CIFAR-10, True) when it is cached; else random data of its shape and False. Says which."""
    if not smoke:
        try:
            data = load_cifar10()
            print(f"data: {data.note}")
            return data, True
        except DataUnavailable as err:
            print(f"data: CIFAR-10 is not cached ({err.__class__.__name__}); using SYNTHETIC data of CIFAR-10's shape "
                  "(timing only: the accuracy means nothing)")
    n_train, n_test = (64, 32) if smoke else (50_000, 10_000)
    g = torch.Generator().manual_seed(0)
    data = DataSplit("synthetic CIFAR-10 shape", torch.randn(n_train, 3, 32, 32, generator=g),
                     torch.randint(0, 10, (n_train,), generator=g), torch.randn(n_test, 3, 32, 32, generator=g),
                     torch.randint(0, 10, (n_test,), generator=g), [str(i) for i in range(10)],
                     note=f"random images (N, 3, 32, 32), {n_train} train / {n_test} test")
    if smoke:
        print(f"data: SYNTHETIC, {data.note} (the tiny CPU version)")
    return data, False


def resnet_config(epochs: int, batch_size: int = 512) -> TrainConfig:
    """Notebook 6's ResNet-9 recipe (airbench style)."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, lr=0.4, momentum=0.9, nesterov=True, weight_decay=5e-4,
                       schedule="onecycle", warmup=0.2, label_smoothing=0.2, augment=True, eval_flip=True,
                       label="ResNet-9")


def train_resnet(device, smoke: bool, epochs: int, budget_s: float) -> dict:
    """Train the ResNet-9 (tiny in smoke mode); returns its numbers."""
    data, real = cifar_or_synthetic(smoke)
    widths = SMOKE_WIDTHS if smoke else (64, 128, 256, 512)
    batch = 32 if smoke else 512
    set_seed(0)
    model = SmallResNet(3, 10, widths=widths, norm="batch")
    config = resnet_config(epochs, batch)
    config.device, config.progress = str(device), not smoke
    setup = warm_up(model, data.train, data.test, config, steps=1 if smoke else 5)
    # Plan: time a few steps after the warm-up to see whether the asked epochs fit the budget.
    probe_steps = 1 if smoke else 20
    probe = time.perf_counter()
    warm_up(model, data.train, None, config, steps=probe_steps)
    per_step = (time.perf_counter() - probe) / probe_steps
    steps_per_epoch = math.ceil(len(data.y_train) / batch)
    fits = max(1, int(budget_s / (per_step * steps_per_epoch * 1.15)))  # 15%: evaluations
    if fits < epochs:
        print(f"planning: {epochs} epochs would take about {epochs * per_step * steps_per_epoch:.0f} s, more than the "
              f"{budget_s:.0f} s left: training {fits} epochs instead (the one-cycle schedule is shortened to fit)")
        config.epochs = epochs = fits
    print(f"training {widths} ResNet on {describe_device(device)}: {epochs} epoch(s), batch {batch} "
          f"(not counted: cuDNN's set-up and memory allocation, {setup:.1f} s of warm-up steps on a throwaway copy)")
    h = train(model, data.train, data.test, config)
    out = {"images_per_s": h.images_per_s, "epoch_s": statistics.median(h.epoch_seconds), "epochs": len(h.epoch_seconds),
           "test_acc": h.final_test_acc if real else float("nan"), "real_data": real, "time_to_94": float("nan")}
    if real:
        elapsed = 0.0
        for seconds, acc in zip(h.epoch_seconds, h.epoch_test_acc):
            elapsed += seconds
            if acc >= 0.94:
                out["time_to_94"] = elapsed
                break
    return out


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="the whole check's time budget")
    parser.add_argument("--epochs", type=int, default=10, help="ResNet-9 epochs (cut to fit the budget)")
    parser.add_argument("--smoke", action="store_true", help="the tiny version even on a GPU")
    parser.add_argument("--skip-tests", action="store_true", help="do not run the GPU-relevant tests")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    budget = 60 * args.minutes
    device = get_device()
    gpu = device.type in ("cuda", "mps")
    smoke = args.smoke or not gpu
    if not gpu:
        print("gpu_check: NO GPU on this machine (torch sees no CUDA or MPS device): running the tiny CPU version, "
              "which checks that this script and the GPU code paths run, not how fast a GPU is")
    precision = {None: "float32", torch.bfloat16: "bf16 autocast",
                 torch.float16: "fp16 autocast + grad scaler"}[autocast_precision(device)]
    print(f"gpu_check: device {describe_device(device)}; precision {precision}")

    if smoke or args.skip_tests:
        print("tests: skipped" + (" (the tiny version; CI runs them on the CPU)" if smoke else ""))
    else:
        print("tests: " + run_tests(timeout=min(240.0, budget / 3)))

    # The ratios are measured before the long training run, so they always fit the budget.
    if smoke:
        from bncourse.device import configure_cpu_threads

        configure_cpu_threads(1)
    folding = _sibling("folding").run(device, widths=SMOKE_WIDTHS if smoke else (64, 128, 256, 512),
                                      repeats=1 if smoke else 20, batches=(1,) if smoke else (64, 1))
    overhead_module = _sibling("train_overhead")
    print(overhead_module.describe_settings(device))
    if smoke:  # random images of the digits' shape: the tiny version skips importing scikit-learn
        g = torch.Generator().manual_seed(0)
        digits = DataSplit("random 8x8", torch.randn(256, 1, 8, 8, generator=g), torch.randint(0, 10, (256,), generator=g),
                           torch.randn(8, 1, 8, 8), torch.zeros(8, dtype=torch.long), [str(i) for i in range(10)])
    else:
        digits = overhead_module.load_digits()
    overhead = overhead_module.measure("SmallCNN (16, 32, 64) + BN on 8x8 digits, batch 128",
                                       lambda: overhead_module.SmallCNN(1, 10, widths=(16, 32, 64)),
                                       digits, batch_size=128, steps=1 if smoke else 30,
                                       repeats=1 if smoke else 7, device=device, progress=False)
    left = budget - (time.perf_counter() - start) - 20
    resnet = train_resnet(device, smoke, 1 if smoke else args.epochs, max(left, 10.0))

    print(f"gpu_check_device: {describe_device(device)}")
    print(f"gpu_check_precision: {precision}")
    print(f"gpu_check_data: {'CIFAR-10' if resnet['real_data'] else 'synthetic (CIFAR-10 shape)'}")
    print(f"gpu_check_images_per_s: {resnet['images_per_s']:,.0f}")
    print(f"gpu_check_epoch_s: {resnet['epoch_s']:.2f} (median of {resnet['epochs']} epochs)")
    if resnet["real_data"]:
        acc = resnet["test_acc"]
        t94 = resnet["time_to_94"]
        print(f"gpu_check_test_acc: {acc:.4f}")
        print(f"gpu_check_time_to_94: {t94:.1f} s" if t94 == t94 else
              f"gpu_check_time_to_94: not reached in {resnet['epochs']} epochs")
    else:
        print("gpu_check_time_to_94: n/a (synthetic data)")
    print(f"gpu_check_folded_vs_unfolded_batch1: {folding[1]['speedup']:.3f}x")
    print(f"gpu_check_trainer_vs_bare_loop: {overhead:.3f}x")
    total = time.perf_counter() - start
    print(f"gpu_check_seconds: {total:.1f}")
    return {"device": str(device), "smoke": smoke, "resnet": resnet, "folding": folding[1]["speedup"],
            "overhead": overhead, "seconds": total}


if __name__ == "__main__":
    main()

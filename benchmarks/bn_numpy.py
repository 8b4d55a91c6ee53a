"""How fast is the numpy batch norm? Closed-form vs staged backward, and numpy vs torch on CPU.

For float32 (N, D) in (64, 512), (1024, 1024), (8192, 1024), measured side by side in one run on
the same arrays:

* the closed-form backward against the staged backward (``bncourse.reference.batchnorm``);
* the reference forward + closed-form backward against torch on CPU (``F.batch_norm`` in training
  mode + autograd).

Each figure is the median of several repeats after a warm-up; the two sides of a comparison
alternate within each repeat, so a load spike on a shared machine hits both. The last two lines, over the
largest size, are the summary (goals: closed form >= 2.0x faster; reference within 1.5x of torch):

    closed_form_vs_staged_backward: <speedup>x
    reference_vs_torch_fwd_bwd: <time ratio>x     (reference time / torch time; < 1 means faster)

Run: ``python benchmarks/bn_numpy.py``. Nothing is asserted: speed depends on the machine.
"""

from __future__ import annotations

import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from bncourse.reference.batchnorm import batchnorm_backward, batchnorm_backward_staged, batchnorm_forward

SIZES = [(64, 512), (1024, 1024), (8192, 1024)]


def median_times(fns, repeats: int) -> list[float]:
    """Median seconds of each function, run in turn within every repeat (so load spikes hit all alike)."""
    for fn in fns:
        fn()  # warm-up
    times = [[] for _ in fns]
    for _ in range(repeats):
        for fn, ts in zip(fns, times):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
    return [statistics.median(ts) for ts in times]


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"numpy {np.__version__}, torch {torch.__version__}, torch threads {torch.get_num_threads()}, float32")
    print(f"{'N x D':>12} {'staged bwd':>11} {'closed bwd':>11} {'speedup':>8} {'ref fwd+bwd':>12} {'torch fwd+bwd':>14} {'ratio':>6}")
    results = []
    for n, d in SIZES:
        repeats = 50 if n * d < 2e6 else 15
        x = (rng.normal(size=(n, d)) * 2 + 1).astype(np.float32)
        gamma = rng.normal(size=d).astype(np.float32)
        beta = rng.normal(size=d).astype(np.float32)
        dout = rng.normal(size=(n, d)).astype(np.float32)
        _, cache = batchnorm_forward(x, gamma, beta)

        t_staged, t_closed = median_times(
            [lambda: batchnorm_backward_staged(dout, cache), lambda: batchnorm_backward(dout, cache)], repeats
        )

        def ref_fwd_bwd():
            _, c = batchnorm_forward(x, gamma, beta)
            return batchnorm_backward(dout, c)

        xt = torch.from_numpy(x).requires_grad_(True)
        gt = torch.from_numpy(gamma).requires_grad_(True)
        bt = torch.from_numpy(beta).requires_grad_(True)
        doutt = torch.from_numpy(dout)

        def torch_fwd_bwd():
            xt.grad = gt.grad = bt.grad = None
            out = F.batch_norm(xt, None, None, gt, bt, training=True, eps=1e-5)
            out.backward(doutt)

        t_ref, t_torch = median_times([ref_fwd_bwd, torch_fwd_bwd], repeats)
        results.append((t_staged / t_closed, t_ref / t_torch))
        print(f"{n:>6}x{d:<5} {t_staged * 1e3:>9.2f}ms {t_closed * 1e3:>9.2f}ms {t_staged / t_closed:>7.2f}x "
              f"{t_ref * 1e3:>10.2f}ms {t_torch * 1e3:>12.2f}ms {t_ref / t_torch:>5.2f}x")
    speedup, ratio = results[-1]
    print(f"closed_form_vs_staged_backward: {speedup:.2f}x")
    print(f"reference_vs_torch_fwd_bwd: {ratio:.2f}x")


if __name__ == "__main__":
    main()

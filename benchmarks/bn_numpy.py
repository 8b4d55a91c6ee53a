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

Before them, for the largest size, **where the time goes**: each numpy operation of the reference
forward + closed-form backward timed on its own, with the (N, D) arrays it reads and writes, against
one copy of an (N, D) array (pure memory traffic), and torch's fused kernels with one thread and with
all of torch's threads. At this size every operation is bound by memory bandwidth: numpy makes one
pass over memory per operation, on one thread, so the reference's ~22 array passes cannot beat a
fused kernel that makes ~8 (torch: statistics in one pass, the output in another; two in backward).
The ratio to torch with one thread is that pass count ratio; a faster numpy version would need fewer
passes (fusing operations), which plain numpy cannot express without making the code unreadable.

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


def where_the_time_goes(x, gamma, beta, dout, repeats: int) -> None:
    """Each numpy operation of the reference forward + closed-form backward, timed on its own.

    The operations are those of ``batchnorm_forward`` and ``batchnorm_backward`` (validation left out),
    with how many (N, D) arrays each reads (R) and writes (W).
    """
    n, d = x.shape
    eps = np.float32(1e-5)
    _, c = batchnorm_forward(x, gamma, beta)
    dbeta = dout.sum(axis=0)
    dgamma = np.einsum("nd,nd->d", dout, c.x_hat)
    scratch = np.empty_like(x)  # stands for an array the in-place steps write into

    steps = [  # (label, (N, D) arrays read, written, whether the write is to a new array, the operation)
        ("fwd  mu = x.mean(axis=0)", 1, 0, False, lambda: x.mean(axis=0)),
        ("fwd  xmu = x - mu", 1, 1, True, lambda: x - c.mu),
        ("fwd  var = einsum(xmu, xmu) / N", 1, 0, False, lambda: np.einsum("nd,nd->d", c.xmu, c.xmu)),
        ("fwd  x_hat = xmu * inv_std", 1, 1, True, lambda: c.xmu * c.inv_std),
        ("fwd  out = x_hat * gamma", 1, 1, True, lambda: c.x_hat * gamma),
        ("fwd  out += beta", 1, 1, False, lambda: np.add(scratch, beta, out=scratch)),
        ("bwd  dbeta = dout.sum(axis=0)", 1, 0, False, lambda: dout.sum(axis=0)),
        ("bwd  dgamma = einsum(dout, x_hat)", 2, 0, False, lambda: np.einsum("nd,nd->d", dout, c.x_hat)),
        ("bwd  dx = x_hat * (-dgamma / N)", 1, 1, True, lambda: c.x_hat * (-dgamma / n)),
        ("bwd  dx += dout", 2, 1, False, lambda: np.add(scratch, dout, out=scratch)),
        ("bwd  dx -= dbeta / N", 1, 1, False, lambda: np.subtract(scratch, dbeta / n, out=scratch)),
        ("bwd  dx *= gamma * inv_std", 1, 1, False, lambda: np.multiply(scratch, gamma * c.inv_std, out=scratch)),
    ]
    copy = lambda: np.copyto(scratch, x)  # noqa: E731 - one read and one write: the unit of memory traffic
    fresh = lambda: x.copy()  # noqa: E731 - the same, into a new array
    times = median_times([copy, fresh, *(step[-1] for step in steps)], repeats)
    t_copy, t_fresh, t_steps = times[0], times[1], times[2:]

    xt = torch.from_numpy(x).requires_grad_(True)
    gt = torch.from_numpy(gamma).requires_grad_(True)
    bt = torch.from_numpy(beta).requires_grad_(True)
    doutt = torch.from_numpy(dout)

    def torch_fwd_bwd():
        xt.grad = gt.grad = bt.grad = None
        F.batch_norm(xt, None, None, gt, bt, training=True, eps=float(eps)).backward(doutt)

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    (t_torch1,) = median_times([torch_fwd_bwd], repeats)
    torch.set_num_threads(threads)

    mib = x.nbytes / 2**20
    print(f"\nwhere the time goes at {n}x{d} float32 (one (N, D) array = {mib:.0f} MiB; copying one: "
          f"{t_copy * 1e3:.2f} ms = 1 read + 1 write):")
    passes = 0
    for (label, r, w, new, _), t in zip(steps, t_steps):
        passes += r + w
        print(f"  {label:<36} {r}R {w}W{' new' if new else '    '} {t * 1e3:>7.2f} ms  = {t / t_copy:4.2f} copies")
    total = sum(t_steps)
    print(f"  {'reference, all operations':<36} {passes} passes {total * 1e3:>6.2f} ms  = {total / t_copy:4.2f} copies")
    print(f"  {'torch fwd+bwd, 1 thread':<36} ~8 passes {t_torch1 * 1e3:>6.2f} ms  = {t_torch1 / t_copy:4.2f} copies")
    new_arrays = sum(step[3] for step in steps)
    print(f"  a new (N, D) array costs {(t_fresh - t_copy) * 1e3:.2f} ms more than writing into an old one (the OS maps "
          f"and zeroes\n  its pages on first touch); the reference makes {new_arrays} (xmu, x_hat and out, which the "
          f"cache and caller keep, and dx).")
    print(f"  reference / torch with 1 thread: {total / t_torch1:.2f}x. The limit is memory traffic: numpy makes one "
          f"pass per\n  operation on one thread; torch fuses them and spreads them over {threads} threads.")


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
    where_the_time_goes(x, gamma, beta, dout, repeats)
    speedup, ratio = results[-1]
    print(f"closed_form_vs_staged_backward: {speedup:.2f}x")
    print(f"reference_vs_torch_fwd_bwd: {ratio:.2f}x")


if __name__ == "__main__":
    main()

"""The reference synchronized batch norm against one process running batch norm on the whole batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from bncourse.distributed import run_distributed
from bncourse.nn_sync import SyncBatchNorm, convert_sync_batchnorm, sync_batch_norm_backward, sync_batch_norm_forward


def _slices(sizes):
    ends = np.cumsum(sizes)
    return [slice(int(e - s), int(e)) for s, e in zip(sizes, ends)]


def _functional_on_ranks(rank, world_size, x, dy, w, b, sizes):
    """One rank: the reference forward and backward on its slice; numpy back."""
    sl = _slices(sizes)[rank]
    rm, rv = torch.zeros(x.shape[1], dtype=torch.float64), torch.ones(x.shape[1], dtype=torch.float64)
    y, cache = sync_batch_norm_forward(torch.from_numpy(x[sl]), torch.from_numpy(w), torch.from_numpy(b), rm, rv, 0.1, 1e-5)
    dx, dw, db = sync_batch_norm_backward(torch.from_numpy(dy[sl]), cache)
    return {k: v.numpy() for k, v in dict(y=y, dx=dx, dw=dw, db=db, rm=rm, rv=rv).items()}


def _single_process(x, dy, w, b):
    xt = torch.from_numpy(x).requires_grad_()
    wt, bt = torch.from_numpy(w).requires_grad_(), torch.from_numpy(b).requires_grad_()
    rm, rv = torch.zeros(x.shape[1], dtype=torch.float64), torch.ones(x.shape[1], dtype=torch.float64)
    y = F.batch_norm(xt, rm, rv, wt, bt, True, 0.1, 1e-5)
    y.backward(torch.from_numpy(dy))
    return y.detach().numpy(), xt.grad.numpy(), rm.numpy(), rv.numpy()


@pytest.mark.parametrize("sizes", [(3, 5), (2, 7, 4)])
def test_does_the_reference_match_single_process_batch_norm_on_uneven_slices(sizes):
    rng = np.random.default_rng(sum(sizes))
    N, C = sum(sizes), 4
    x = rng.normal(2.0, 3.0, size=(N, C))
    dy, w, b = rng.normal(size=(N, C)), rng.normal(size=C), rng.normal(size=C)
    ranks = run_distributed(_functional_on_ranks, len(sizes), args=(x, dy, w, b, sizes), backend="gloo")
    y, dx, rm, rv = _single_process(x, dy, w, b)
    x_hat = (y - b) / w
    for rank, (sl, got) in enumerate(zip(_slices(sizes), ranks)):
        np.testing.assert_allclose(got["y"], y[sl], rtol=0, atol=1e-10, err_msg=f"y on rank {rank}")
        np.testing.assert_allclose(got["dx"], dx[sl], rtol=0, atol=1e-10, err_msg=f"dx on rank {rank}")
        np.testing.assert_allclose(got["rm"], rm, rtol=0, atol=1e-12, err_msg=f"running_mean on rank {rank}")
        np.testing.assert_allclose(got["rv"], rv, rtol=0, atol=1e-12, err_msg=f"running_var on rank {rank}")
        # parameter gradients: this rank's share; summed over the ranks they are the whole batch's
        np.testing.assert_allclose(got["dw"], (dy[sl] * x_hat[sl]).sum(0), atol=1e-10)
        np.testing.assert_allclose(got["db"], dy[sl].sum(0), atol=1e-10)
    np.testing.assert_allclose(sum(r["db"] for r in ranks), dy.sum(0), atol=1e-10)


def _module_on_ranks(rank, world_size, x, dy, sizes):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.BatchNorm2d(x.shape[1]).double())
    with torch.no_grad():
        model[0].weight.uniform_(0.5, 1.5)
        model[0].bias.uniform_(-1, 1)
    convert_sync_batchnorm(model)
    xr = torch.from_numpy(x[_slices(sizes)[rank]]).requires_grad_()
    y = model(xr)
    y.backward(torch.from_numpy(dy[_slices(sizes)[rank]]))
    bn = model[0]
    return dict(y=y.detach().numpy(), dx=xr.grad.numpy(), dw=bn.weight.grad.numpy(), rm=bn.running_mean.numpy(),
                rv=bn.running_var.numpy(), is_sync=isinstance(bn, SyncBatchNorm))


def test_does_the_converted_module_match_batchnorm2d_on_the_concatenated_batch():
    sizes = (1, 3)
    rng = np.random.default_rng(5)
    x = rng.normal(1.0, 2.0, size=(4, 3, 2, 5))
    dy = rng.normal(size=x.shape)
    ranks = run_distributed(_module_on_ranks, 2, args=(x, dy, sizes), backend="gloo")
    torch.manual_seed(0)
    bn = torch.nn.BatchNorm2d(3).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    xt = torch.from_numpy(x).requires_grad_()
    y = bn(xt)
    y.backward(torch.from_numpy(dy))
    assert all(r["is_sync"] for r in ranks)
    for sl, got in zip(_slices(sizes), ranks):
        np.testing.assert_allclose(got["y"], y.detach().numpy()[sl], atol=1e-10)
        np.testing.assert_allclose(got["dx"], xt.grad.numpy()[sl], atol=1e-10)
        np.testing.assert_allclose(got["rm"], bn.running_mean.numpy(), atol=1e-12)
        np.testing.assert_allclose(got["rv"], bn.running_var.numpy(), atol=1e-12)
    np.testing.assert_allclose(ranks[0]["dw"] + ranks[1]["dw"], bn.weight.grad.numpy(), atol=1e-10)


def test_is_the_module_plain_batch_norm_without_a_process_group():
    torch.manual_seed(1)
    x = torch.randn(6, 3, 4, 4, dtype=torch.float64)
    ours, theirs = SyncBatchNorm(3).double(), torch.nn.BatchNorm2d(3).double()
    torch.testing.assert_close(ours(x), theirs(x))
    torch.testing.assert_close(ours.running_var, theirs.running_var)
    ours.eval(), theirs.eval()
    torch.testing.assert_close(ours(x), theirs(x))
    with pytest.raises(ValueError, match=r"expected input of shape \(N, 3, \*\), got \(6, 4\)"):
        ours(torch.randn(6, 4))


def test_is_a_count_of_257_rows_in_bf16_still_257_and_the_variance_right():
    """bf16 holds integers exactly only up to 256, and its sums of squares cancel: both must not matter."""
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(257, 3, generator=g, dtype=torch.float64) * 0.995 + 3.0).to(torch.bfloat16)
    rm, rv = torch.zeros(3), torch.ones(3)
    y, cache = sync_batch_norm_forward(x, torch.ones(3), torch.zeros(3), rm, rv, momentum=1.0)
    exact = x.double()
    assert cache.count == 257
    torch.testing.assert_close(rv.double(), exact.var(0, unbiased=True), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rm.double(), exact.mean(0), rtol=1e-5, atol=1e-6)
    assert y.dtype == torch.bfloat16
    dx, dw, db = sync_batch_norm_backward(torch.ones_like(y), cache)
    assert dx.dtype == torch.bfloat16 and dw.dtype == db.dtype == torch.float32
    torch.testing.assert_close(db, torch.full((3,), 257.0))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_does_the_module_keep_its_statistics_in_float32_under_autocast(dtype):
    from test_nn import autocast_side_by_side, _cpu_autocast_dtypes

    if dtype not in _cpu_autocast_dtypes():
        pytest.skip(f"CPU autocast does not run {dtype} here")
    autocast_side_by_side(SyncBatchNorm(6), torch.nn.BatchNorm2d(6), dtype, steps=2)


def test_does_notebook_8s_solution_count_257_bf16_rows_as_257():
    """The instructor notebook's forward, on one rank (its all_reduce is then the identity)."""
    import types

    from bncourse.nn_sync import SyncBNCache
    from test_nn import _notebook_solution

    ns = _notebook_solution("08_batchnorm_across_devices/batchnorm_across_devices.ipynb", "sync-forward",
                            {"torch": torch, "dist": types.SimpleNamespace(all_reduce=lambda t: None),
                             "SyncBNCache": SyncBNCache})
    x = (torch.randn(257, 3, generator=torch.Generator().manual_seed(0)) + 3.0).to(torch.bfloat16)
    rm, rv = torch.zeros(3), torch.ones(3)
    _, cache = ns["sync_batch_norm_forward"](x, torch.ones(3), torch.zeros(3), rm, rv, 1.0, 1e-5)
    assert cache.count == 257
    torch.testing.assert_close(rv.double(), x.double().var(0), rtol=1e-5, atol=1e-6)

"""Is batch renorm batch norm at r_max=1, d_max=0, and the inference transform when unclipped?"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bncourse.renorm import BatchRenorm


@pytest.mark.parametrize("shape", [(8, 4), (4, 4, 3, 3)])
def test_is_unclipped_renorm_batch_norm_at_the_start_and_the_running_stats_identical(shape):
    torch.manual_seed(0)
    rn = BatchRenorm(4, r_max=1.0, d_max=0.0).double()
    bn = (nn.BatchNorm1d(4) if len(shape) == 2 else nn.BatchNorm2d(4)).double()
    for _ in range(3):
        x = torch.randn(*shape, dtype=torch.float64) * 3 + 1
        assert (rn(x) - bn(x)).abs().max() < 1e-12
    assert (rn.running_mean - bn.running_mean).abs().max() < 1e-12
    assert (rn.running_var - bn.running_var).abs().max() < 1e-12
    rn.eval(), bn.eval()
    assert (rn(x) - bn(x)).abs().max() < 1e-12


def test_does_unclipped_renorm_train_with_the_running_statistics():
    """With limits that never bind, the training output is the eval transform (before the update)."""
    torch.manual_seed(1)
    rn = BatchRenorm(3, r_max=1e6, d_max=1e6).double()
    with torch.no_grad():
        rn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        rn.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
    x = torch.randn(6, 3, dtype=torch.float64)
    expected = (x - rn.running_mean) / torch.sqrt(rn.running_var + rn.eps)
    assert (rn(x) - expected).abs().max() < 1e-12


def test_do_gradients_not_flow_through_r_and_d():
    torch.manual_seed(2)
    rn = BatchRenorm(3, r_max=1e6, d_max=1e6).double()
    with torch.no_grad():
        rn.running_mean.copy_(torch.tensor([0.5, -1.0, 2.0]))
        rn.running_var.copy_(torch.tensor([2.0, 0.5, 1.5]))
    sigma, mean = torch.sqrt(rn.running_var + rn.eps).clone(), rn.running_mean.clone()
    x = torch.randn(5, 3, dtype=torch.float64, requires_grad=True)
    dout = torch.randn(5, 3, dtype=torch.float64)
    rn(x).backward(dout)
    x2 = x.detach().clone().requires_grad_(True)
    mu, sb = x2.mean(0), torch.sqrt(x2.var(0, unbiased=False) + rn.eps)
    r, d = (sb / sigma).detach(), ((mu - mean) / sigma).detach()
    ((x2 - mu) / sb * r + d).backward(dout)
    assert (x.grad - x2.grad).abs().max() < 1e-12
    x3 = x.detach().clone().requires_grad_(True)
    ((x3 - mean) / sigma).backward(dout)  # what gradients through r and d would give
    assert (x.grad - x3.grad).abs().max() > 1e-3


def test_does_the_warm_up_relax_the_limits_linearly():
    rn = BatchRenorm(2, r_max=3.0, d_max=5.0, warmup_steps=10)
    assert rn.limits() == (1.0, 0.0)
    for _ in range(5):
        rn(torch.randn(4, 2))
    assert rn.limits() == pytest.approx((2.0, 2.5))


def test_does_bad_input_say_what_arrived():
    with pytest.raises(ValueError, match=r"got shape \(4, 3\)"):
        BatchRenorm(2)(torch.randn(4, 3))
    with pytest.raises(ValueError, match="more than 1 value"):
        BatchRenorm(2)(torch.randn(1, 2))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("image", [True, False])
def test_does_renorm_keep_its_statistics_in_float32_under_autocast(dtype, image):
    """At r_max=1, d_max=0 it is batch norm: under autocast it must match nn.BatchNorm's float32 statistics."""
    from test_nn import autocast_side_by_side, _cpu_autocast_dtypes

    if dtype not in _cpu_autocast_dtypes():
        pytest.skip(f"CPU autocast does not run {dtype} here")
    bn = nn.BatchNorm2d(6) if image else nn.BatchNorm1d(6)
    autocast_side_by_side(BatchRenorm(6, r_max=1.0, d_max=0.0), bn, dtype, image=image, steps=2)

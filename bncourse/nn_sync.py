"""Synchronized batch norm: every process normalizes with the statistics of the whole batch.

Under data parallelism each process (rank) sees only its slice of the batch. Plain batch norm
then normalizes with the slice's statistics; synchronized batch norm makes them global with one
``all_reduce`` in the forward pass and one in the backward pass. These are the course's reference
solutions (notebook "Batch norm across devices"); the learner writes the same two functions.

Shapes: x (M, C) on each rank, M_r rows on rank r (the ranks' M may differ), N = sum of M_r.

Forward (one all_reduce of [sum x, sum x^2, M] in float64; the sums are taken in float32 or wider
even when x is half precision under autocast, and M is counted as an integer):
    mean = S / N,  var = Q / N - mean^2 (biased, to normalize),  x_hat = (x - mean) / sqrt(var + eps)
    y = weight * x_hat + bias;  running_var <- (1 - momentum) running_var + momentum var N / (N - 1)
Backward (one all_reduce of [sum dy, sum dy * x_hat] in float64):
    dx = weight / sqrt(var + eps) * (dy - sum dy / N - x_hat * sum(dy * x_hat) / N)
    dweight, dbias: this rank's sums only (sum dy * x_hat, sum dy); DistributedDataParallel
    averages parameter gradients over the ranks itself, as for every other parameter.

Without an initialized process group the functions behave as one process (plain batch norm).
``SyncBatchNorm`` is a drop-in module for ``nn.BatchNorm1d/2d`` (training mode: synchronized;
eval mode: running statistics), and ``convert_sync_batchnorm`` swaps it into a model, like
``torch.nn.SyncBatchNorm.convert_sync_batchnorm`` (which needs CUDA tensors; this one runs on the CPU).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.distributed as dist
from torch import nn
from torch.nn import functional as F


class SyncBNCache(NamedTuple):
    """What the backward pass needs from the forward pass, on one rank.

    x_hat: (M, C) this rank's normalized rows; invstd: (C,) 1 / sqrt(var + eps) of the global
    batch; weight: (C,) gamma; count: N, the number of rows over all ranks (a Python number).
    """

    x_hat: torch.Tensor
    invstd: torch.Tensor
    weight: torch.Tensor
    count: float


def _all_reduce_sum(t: torch.Tensor, group=None) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM, group=group)
    return t


def sync_batch_norm_forward(x, weight, bias, running_mean, running_var, momentum=0.1, eps=1e-5, group=None):
    """Training-mode forward with global statistics; updates the running statistics in place.

    Args:
        x: (M, C) this rank's rows. weight, bias: (C,). running_mean, running_var: (C,) buffers.
        momentum: weight of the new batch in the running averages (PyTorch's convention).
        eps: added to the variance inside the square root.
        group: the process group (default: the whole world).

    Returns:
        (y (M, C), SyncBNCache).
    """
    if x.dim() != 2:
        raise ValueError(f"expected x of shape (M, C), got {tuple(x.shape)}")
    xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x  # bf16 sums lose all but 8 bits
    # The row count is built in float64 from the integer, never in x's dtype: bf16 rounds 257 to 256.
    rows = torch.tensor([x.shape[0]], dtype=torch.float64, device=x.device)
    local = torch.cat([xs.sum(0).to(torch.float64), (xs * xs).sum(0).to(torch.float64), rows])
    total = _all_reduce_sum(local, group)  # one collective for all three sums
    C = x.shape[1]
    count = float(total[2 * C].item())
    if count < 2:
        raise ValueError(f"synchronized batch norm needs at least 2 values per channel over all ranks, got {count:g}")
    mean = total[:C] / count
    var = (total[C:2 * C] / count - mean * mean).clamp_min(0)
    invstd = torch.rsqrt(var + eps)
    x_hat = (xs - mean.to(xs.dtype)) * invstd.to(xs.dtype)
    y = (x_hat * weight + bias).to(x.dtype)
    with torch.no_grad():
        running_mean.mul_(1 - momentum).add_(momentum * mean.to(running_mean.dtype))
        running_var.mul_(1 - momentum).add_(momentum * (var * count / (count - 1)).to(running_var.dtype))
    return y, SyncBNCache(x_hat, invstd.to(xs.dtype), weight, count)


def sync_batch_norm_backward(dy, cache: SyncBNCache, group=None):
    """Backward of ``sync_batch_norm_forward``: (dx (M, C), dweight (C,), dbias (C,)).

    dx needs the sums of dy and of dy * x_hat over the whole batch (one all_reduce); dweight and
    dbias are this rank's own sums (the data-parallel wrapper averages them over the ranks).
    """
    x_hat, invstd, weight, count = cache
    out_dtype = dy.dtype
    dy = dy.to(x_hat.dtype)  # half-precision gradients are summed in x_hat's float32 (or wider)
    sum_dy = dy.sum(0)
    sum_dy_xhat = (dy * x_hat).sum(0)
    C = dy.shape[1]
    total = _all_reduce_sum(torch.cat([sum_dy, sum_dy_xhat]).to(torch.float64), group)
    g_dy = (total[:C] / count).to(dy.dtype)
    g_dy_xhat = (total[C:] / count).to(dy.dtype)
    dx = (weight * invstd) * (dy - g_dy - x_hat * g_dy_xhat)
    return dx.to(out_dtype), sum_dy_xhat.to(weight.dtype), sum_dy.to(weight.dtype)


class SyncBatchNormFunction(torch.autograd.Function):
    """Autograd around a (forward, backward) pair such as the two functions above.

    ``SyncBatchNormFunction.apply(x, weight, bias, running_mean, running_var, momentum, eps,
    forward_fn, backward_fn)``: ``forward_fn`` returns ``(y, cache)``; ``backward_fn(dy, cache)``
    returns ``(dx, dweight, dbias)``. Passing the functions lets the learner's pair run inside the
    same module and the same DistributedDataParallel training as the reference pair.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, momentum, eps, forward_fn, backward_fn):
        y, cache = forward_fn(x, weight.detach(), bias.detach(), running_mean, running_var, momentum, eps)
        ctx.cache = cache
        ctx.backward_fn = backward_fn
        return y

    @staticmethod
    def backward(ctx, dy):
        dx, dweight, dbias = ctx.backward_fn(dy.contiguous(), ctx.cache)
        ctx.cache = None
        return dx, dweight, dbias, None, None, None, None, None, None


class SyncBatchNorm(nn.Module):
    """Batch norm whose training-mode statistics cover the batch of every rank (any N, C, *).

    Args:
        num_features: C. eps, momentum: as ``nn.BatchNorm2d`` (momentum 0.1 weighs the new batch).
        forward_fn, backward_fn: the synchronized pair (default: this module's reference pair).

    Shape: (N, C) or (N, C, *) in and out. Parameters ``weight``, ``bias``; buffers
    ``running_mean``, ``running_var`` (starts at ones), ``num_batches_tracked``.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 forward_fn: Callable | None = None, backward_fn: Callable | None = None):
        super().__init__()
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.forward_fn = forward_fn or sync_batch_norm_forward
        self.backward_fn = backward_fn or sync_batch_norm_backward
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() < 2 or x.shape[1] != self.num_features:
            raise ValueError(f"expected input of shape (N, {self.num_features}, *), got {tuple(x.shape)}")
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        self.num_batches_tracked.add_(1)
        C = self.num_features
        rows = x.transpose(0, 1).reshape(C, -1).t() if x.dim() > 2 else x  # (M, C), M = N * H * W
        y = SyncBatchNormFunction.apply(rows.contiguous(), self.weight, self.bias, self.running_mean,
                                        self.running_var, self.momentum, self.eps, self.forward_fn, self.backward_fn)
        if x.dim() > 2:
            shape = (x.shape[1], x.shape[0], *x.shape[2:])
            y = y.t().reshape(shape).transpose(0, 1)
        return y

    def extra_repr(self) -> str:
        name = getattr(self.forward_fn, "__qualname__", "function")
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, forward={name}"


def convert_sync_batchnorm(model: nn.Module, forward_fn: Callable | None = None,
                           backward_fn: Callable | None = None) -> nn.Module:
    """Replace every ``nn.BatchNorm1d/2d/3d`` in ``model`` by ``SyncBatchNorm`` (weights and statistics kept)."""
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, nn.SyncBatchNorm):
            if child.momentum is None or not child.affine or not child.track_running_stats:
                raise ValueError(f"{name}: only affine batch norm with running statistics and a momentum is supported")
            new = SyncBatchNorm(child.num_features, child.eps, child.momentum, forward_fn, backward_fn)
            new.to(child.weight.device, child.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(child.weight)
                new.bias.copy_(child.bias)
                new.running_mean.copy_(child.running_mean)
                new.running_var.copy_(child.running_var)
                new.num_batches_tracked.copy_(child.num_batches_tracked)
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, forward_fn, backward_fn)
    return model

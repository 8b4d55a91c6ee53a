"""Batch norm on the torch side: the learner's numpy layer inside autograd, and a module in torch ops.

Three reference solutions for the notebook "Batch norm in PyTorch":

- ``BatchNormFunction``: a ``torch.autograd.Function`` whose forward and backward are the numpy
  ``batchnorm_forward`` / ``batchnorm_backward`` of ``bncourse.reference.batchnorm``. Tensors
  travel to float64 numpy on the CPU and come back in the input's dtype and on its device, so the
  function works on any device (slowly off the CPU: every call is a round trip).
- ``BatchNorm1dNumpy``: an ``nn.Module`` over that function, a drop-in for ``nn.BatchNorm1d``
  on (N, D) input: ``weight`` / ``bias`` parameters, ``running_mean`` / ``running_var`` /
  ``num_batches_tracked`` buffers, batch statistics in training mode, running ones in eval mode.
- ``BatchNorm2d``: batch norm of (N, C, H, W) images written in plain torch operations (autograd
  derives the backward), matching ``nn.BatchNorm2d`` on every device, state_dict included.

Conventions are PyTorch's: ``momentum=0.1`` weighs the new batch, the batch is normalized with its
biased variance, ``running_var`` takes the unbiased one, ``eps=1e-5`` inside the square root.
Under autocast (a GPU's bf16 or fp16 fast path) the input arrives in half precision; the
statistics are still computed in float32, as PyTorch's layers do: bf16 keeps 8 bits of mantissa,
so a mean or variance rounded to bf16 is off by up to 0.4% of its size, and the running averages
would collect that error at every step. The output goes back in the input's dtype.

    layer = BatchNorm2d(16).to(device)
    out = layer(x)            # x: (N, 16, H, W); updates running_mean / running_var
    layer.eval(); out = layer(x)   # the fixed affine map from the running statistics
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bncourse.reference.batchnorm import (
    batchnorm_backward,
    batchnorm_forward,
    update_running_stats,
)

__all__ = ["BatchNormFunction", "BatchNorm1dNumpy", "BatchNorm2d", "to_numpy64", "from_numpy_like"]


def to_numpy64(t: torch.Tensor) -> np.ndarray:
    """Any tensor (any device, any float dtype) -> a float64 numpy array on the CPU, detached."""
    return t.detach().cpu().to(torch.float64).numpy()  # to the CPU first: MPS has no float64


def from_numpy_like(a: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """A numpy array -> a tensor with ``like``'s dtype and device."""
    return torch.from_numpy(np.ascontiguousarray(a)).to(dtype=like.dtype).to(device=like.device)


def _at_least_float32(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32 when it is half precision (bf16, fp16); float32 and float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


class BatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm of (N, D) input through the numpy forward and backward.

    ``BatchNormFunction.apply(x, gamma, beta, eps)``: x (N, D), gamma and beta (D,), eps > 0
    -> out (N, D) in x's dtype and device. ``backward`` returns (dx, dgamma, dbeta, None): one
    gradient per forward input, None for the float ``eps``.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5):
        out, cache = batchnorm_forward(to_numpy64(x), to_numpy64(gamma), to_numpy64(beta), eps)
        # The cache holds numpy arrays: ctx.save_for_backward only takes tensors, so keep it on ctx.
        ctx.cache = cache
        return from_numpy_like(out, x)

    @staticmethod
    def backward(ctx, dout: torch.Tensor):
        dx, dgamma, dbeta = batchnorm_backward(to_numpy64(dout), ctx.cache)
        return from_numpy_like(dx, dout), from_numpy_like(dgamma, dout), from_numpy_like(dbeta, dout), None


class _BatchNormBase(nn.Module):
    """Parameters and buffers shared by the two modules, laid out as in ``nn.BatchNorm*``."""

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, device=None, dtype=None):
        super().__init__()
        if num_features < 1:
            raise ValueError(f"expected num_features >= 1, got {num_features}")
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum  # weight of the new batch (PyTorch); None: cumulative average
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))  # gamma
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))  # beta
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        # Buffers: saved in state_dict and moved by .to(device), but not trained by the optimizer.
        self.register_buffer("running_mean", torch.zeros(num_features, **factory))
        self.register_buffer("running_var", torch.ones(num_features, **factory))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long, device=device))

    def _factor(self) -> float:
        """The weight of the new batch in the running averages, as ``nn.BatchNorm*`` computes it."""
        self.num_batches_tracked.add_(1)
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def extra_repr(self) -> str:
        return f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}"


class BatchNorm1dNumpy(_BatchNormBase):
    """``nn.BatchNorm1d`` for (N, D) input, with the numpy forward/backward doing the training pass.

    Training mode: ``BatchNormFunction`` with the batch statistics, then the running statistics
    are updated by the numpy ``update_running_stats`` (outside autograd). Eval mode: the affine map
    ``weight * (x - running_mean) / sqrt(running_var + eps) + bias`` in torch operations.

    Shape: input (N, D) with N >= 2 in training mode; output (N, D).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2:
            raise ValueError(f"expected 2D input (N, D) (got {x.dim()}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected input with {self.num_features} features, got shape {tuple(x.shape)}")
        weight = self.weight if self.affine else torch.ones_like(self.running_mean)
        bias = self.bias if self.affine else torch.zeros_like(self.running_mean)
        if not self.training:  # in float32 at least (half-precision input under autocast), back in x's dtype
            scale = weight / torch.sqrt(self.running_var + self.eps)
            return ((_at_least_float32(x) - self.running_mean) * scale + bias).to(x.dtype)
        out = BatchNormFunction.apply(x, weight, bias, self.eps)
        momentum = self._factor()
        new_mean, new_var = update_running_stats(
            to_numpy64(x), to_numpy64(self.running_mean), to_numpy64(self.running_var), momentum
        )
        with torch.no_grad():
            self.running_mean.copy_(torch.from_numpy(new_mean))
            self.running_var.copy_(torch.from_numpy(new_var))
        return out


class BatchNorm2d(_BatchNormBase):
    """Batch norm of images in torch operations: each channel normalized over N, H and W.

    Training mode: ``out = weight * (x - mean) / sqrt(var + eps) + bias`` with the per-channel
    batch mean and biased variance over dims (0, 2, 3); then, without gradient,
    ``running = (1 - momentum) * running + momentum * batch_stat`` with the unbiased variance
    (divide by N*H*W - 1) for ``running_var``. Eval mode: the same map with the running statistics.

    Args:
        num_features: C, the number of channels.
        eps: added to the variance inside the square root.
        momentum: weight of the new batch in the running averages (None: cumulative average).
        affine: learn ``weight`` (gamma, starts at 1) and ``bias`` (beta, starts at 0).

    Shape: input (N, C, H, W) with N*H*W >= 2 in training mode; output (N, C, H, W).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"expected 4D input (N, C, H, W) (got {x.dim()}D input)")
        if x.shape[1] != self.num_features:
            raise ValueError(f"expected input with {self.num_features} channels, got shape {tuple(x.shape)}")
        in_dtype = x.dtype
        x = _at_least_float32(x)  # statistics in float32 under autocast, as nn.BatchNorm2d computes them
        if self.training:
            count = x.numel() // x.shape[1]
            if count < 2:
                raise ValueError(f"Expected more than 1 value per channel when training, got input of shape {tuple(x.shape)}")
            mean = x.mean(dim=(0, 2, 3))
            var = (x - mean[None, :, None, None]).square().mean(dim=(0, 2, 3))  # biased, two-pass
            with torch.no_grad():
                momentum = self._factor()
                self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), momentum)
                unbiased = var.detach() * (count / (count - 1))
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        else:
            mean, var = self.running_mean, self.running_var
        shape = (1, -1, 1, 1)  # (C,) -> broadcast over N, H, W
        x_hat = (x - mean.reshape(shape)) * torch.rsqrt(var.reshape(shape) + self.eps)
        if self.affine:
            x_hat = x_hat * self.weight.reshape(shape) + self.bias.reshape(shape)
        return x_hat.to(in_dtype)

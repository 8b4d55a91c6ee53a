"""Batch renormalization (Ioffe 2017) as a torch module, for (N, C) and (N, C, H, W) inputs.

Batch norm trains on batch statistics and infers with running averages; when batches are small
or not i.i.d. the two differ and the network learns on numbers it will never see at inference.
Batch renorm keeps the batch normalization but corrects it towards the running statistics:

    sigma_B = sqrt(var_B + eps),  sigma = sqrt(running_var + eps)
    r = clip(sigma_B / sigma, 1 / r_max, r_max)          (no gradient through r)
    d = clip((mu_B - running_mean) / sigma, -d_max, d_max)  (no gradient through d)
    x_hat = (x - mu_B) / sigma_B * r + d,   out = gamma * x_hat + beta

With r = 1 and d = 0 it is batch norm; unclipped it equals the inference transform
(x - running_mean) / sigma exactly, so training uses the running statistics. The paper starts
with r_max = 1, d_max = 0 (plain batch norm) and relaxes them to 3 and 5; ``warmup_steps`` does
that linearly here. The running statistics are updated as in ``nn.BatchNorm`` (momentum weighs
the new batch; running_var gets the unbiased batch variance). Eval mode is batch norm's eval mode.
Half-precision input (autocast on a GPU) is normalized with float32 statistics and returned in
its own dtype, as PyTorch's batch norm does.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["BatchRenorm"]


class BatchRenorm(nn.Module):
    """Batch renormalization over the channel axis 1.

    Args:
        num_features: C.
        eps: inside the square roots (1e-5).
        momentum: weight of the new batch in the running statistics (0.1; the paper used more
            weight on the new batch when batches are small).
        r_max, d_max: the clipping limits once warmed up (3 and 5, the paper's values).
        warmup_steps: training steps over which r_max grows from 1 and d_max from 0 (0: none).

    Shape:
        input (N, C) or (N, C, H, W); output the same.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1,
                 r_max: float = 3.0, d_max: float = 5.0, warmup_steps: int = 0):
        super().__init__()
        if eps <= 0:
            raise ValueError(f"expected eps > 0, got {eps}")
        if r_max < 1 or d_max < 0:
            raise ValueError(f"expected r_max >= 1 and d_max >= 0, got r_max={r_max}, d_max={d_max}")
        self.num_features, self.eps, self.momentum = num_features, eps, momentum
        self.r_max, self.d_max, self.warmup_steps = float(r_max), float(d_max), int(warmup_steps)
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def limits(self) -> tuple[float, float]:
        """(r_max, d_max) at the current step (linear warm-up from (1, 0))."""
        if self.warmup_steps <= 0:
            return self.r_max, self.d_max
        t = min(1.0, float(self.num_batches_tracked) / self.warmup_steps)
        return 1.0 + t * (self.r_max - 1.0), t * self.d_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (2, 4) or x.shape[1] != self.num_features:
            raise ValueError(f"expected input (N, {self.num_features}) or (N, {self.num_features}, H, W), "
                             f"got shape {tuple(x.shape)}")
        in_dtype = x.dtype
        if x.dtype in (torch.float16, torch.bfloat16):
            x = x.float()  # statistics in float32: bf16's 8-bit mantissa would round them by up to 0.4%
        dims = (0,) if x.dim() == 2 else (0, 2, 3)
        shape = (1, -1) if x.dim() == 2 else (1, -1, 1, 1)
        w, b = self.weight.view(shape), self.bias.view(shape)
        if not self.training:
            x_hat = (x - self.running_mean.view(shape)) / torch.sqrt(self.running_var.view(shape) + self.eps)
            return (x_hat * w + b).to(in_dtype)
        count = x.numel() // x.shape[1]
        if count < 2:
            raise ValueError(f"Expected more than 1 value per channel when training, got input of shape {tuple(x.shape)}")
        mu = x.mean(dim=dims)
        var = x.var(dim=dims, unbiased=False)
        sigma_b = torch.sqrt(var + self.eps)
        sigma = torch.sqrt(self.running_var + self.eps)
        r_max, d_max = self.limits()
        with torch.no_grad():
            r = (sigma_b / sigma).clamp(1.0 / r_max, r_max)
            d = ((mu - self.running_mean) / sigma).clamp(-d_max, d_max)
        x_hat = (x - mu.view(shape)) / sigma_b.view(shape) * r.view(shape) + d.view(shape)
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mu.detach())
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * var.detach() * count / (count - 1))
            self.num_batches_tracked.add_(1)
        return (x_hat * w + b).to(in_dtype)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, r_max={self.r_max}, "
                f"d_max={self.d_max}, warmup_steps={self.warmup_steps}")

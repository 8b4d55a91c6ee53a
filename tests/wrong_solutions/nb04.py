"""Wrong (and right) solutions of notebook 4's BatchNorm2d module, written as learners write them: the running
statistics replaced by new tensors each step instead of written into the buffers."""

import numpy as np
import torch
from torch import nn


class _BN2dBase(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def update(self, mean, var_unbiased):
        raise NotImplementedError

    def forward(self, x):
        if self.training:
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3), unbiased=False)
            n = x.numel() // x.shape[1]
            with torch.no_grad():
                self.update(mean.detach(), var.detach() * n / (n - 1))
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return x_hat * self.weight[None, :, None, None] + self.bias[None, :, None, None]


class BN2dAssignsNewBuffers(_BN2dBase):
    def update(self, mean, var_unbiased):
        self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean
        self.running_var = (1 - self.momentum) * self.running_var + self.momentum * var_unbiased


class BN2dAssignsData(_BN2dBase):
    def update(self, mean, var_unbiased):
        self.running_mean.data = (1 - self.momentum) * self.running_mean + self.momentum * mean
        self.running_var.data = (1 - self.momentum) * self.running_var + self.momentum * var_unbiased


class BN2dLerpNotInPlace(_BN2dBase):
    def update(self, mean, var_unbiased):
        self.running_mean = torch.lerp(self.running_mean, mean, self.momentum)
        self.running_var = torch.lerp(self.running_var, var_unbiased, self.momentum)


class BN2dInPlace(_BN2dBase):
    """Right: the buffers written into."""

    def update(self, mean, var_unbiased):
        self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
        self.running_var.lerp_(var_unbiased, self.momentum)


WRONG = [
    ("BatchNorm2d", ["replaced by new tensors"], BN2dAssignsNewBuffers),
    ("BatchNorm2d", ["replaced by new tensors"], BN2dAssignsData),
    ("BatchNorm2d", ["replaced by new tensors"], BN2dLerpNotInPlace),
]
RIGHT = [("BatchNorm2d", BN2dInPlace)]


# a sixth held-out round's miss: BatchNorm1dNumpy's eval mode computed in numpy, outside autograd


class BN1dEvalInNumpy(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        from .right_nb02_04 import FunctionTorchKeepdim

        if self.training:
            with torch.no_grad():
                self.running_mean.lerp_(x.mean(0), self.momentum)
                self.running_var.lerp_(x.var(0, unbiased=True), self.momentum)
            return FunctionTorchKeepdim.apply(x, self.weight, self.bias, self.eps)
        xn, m, v = (t.detach().cpu().numpy() for t in (x, self.running_mean, self.running_var))
        w, b = self.weight.detach().numpy(), self.bias.detach().numpy()
        out = w * (xn - m) / np.sqrt(v + self.eps) + b
        return torch.from_numpy(out).to(x.dtype)


WRONG += [("BatchNorm1dNumpy", ["outside autograd"], BN1dEvalInNumpy)]


from .round7_torch import WRONG as _ROUND7  # noqa: E402 - a seventh held-out round's misses and their neighbours

WRONG += _ROUND7

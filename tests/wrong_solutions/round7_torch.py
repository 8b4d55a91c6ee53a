"""Notebook 4's wrong solutions a seventh held-out round found unnamed (and their neighbours), written as learners
write them: autograd Functions in torch operations, modules over them or in plain torch."""

import torch
from torch import nn


def _function(slip: str):
    """An autograd.Function in torch operations with one slip in its forward or backward."""

    class Fn(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, gamma, beta, eps=1e-5):
            mu = x.mean(0)
            var = x.var(0) if slip == "unbiased" else x.var(0, unbiased=False)
            std = torch.sqrt(var) + eps if slip == "eps-outside" else torch.sqrt(var + eps)
            x_hat = (x - mu) / std
            ctx.save_for_backward(x_hat, gamma, std)
            return gamma * x_hat + beta

        @staticmethod
        def backward(ctx, dout):
            x_hat, gamma, std = ctx.saved_tensors
            n = dout.shape[0]
            dbeta, dgamma = dout.sum(0), (dout * x_hat).sum(0)
            dxhat = dout * gamma
            mean_term = 0 if slip == "no-mean" else dxhat.sum(0)
            var_term = 0 if slip == "no-var" else x_hat * (dxhat * x_hat).sum(0)
            dx = (n * dxhat - mean_term - var_term) / (n * std)
            return (-dx if slip == "negated" else dx), dgamma, dbeta, None

    Fn.__name__ = f"Function_{slip.replace('-', '_')}"
    return Fn


class _BN1dOver(nn.Module):
    """BatchNorm1dNumpy over a given Function (running statistics written in place)."""

    function = None

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * x.mean(0))
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * x.var(0))
            return self.function.apply(x, self.weight, self.bias, self.eps)
        return (x - self.running_mean) / torch.sqrt(self.running_var + self.eps) * self.weight + self.bias


class BN1dNoVarPath(_BN1dOver):
    function = _function("no-var")


class BN1dNoMeanPath(_BN1dOver):
    function = _function("no-mean")


class _BN2d(nn.Module):
    detach = ""
    dims = (0, 2, 3)

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        if self.training:
            mean = x.mean(dim=self.dims)
            var = x.var(dim=self.dims, unbiased=False)
            if "mean" in self.detach:
                mean = mean.detach()
            if "var" in self.detach:
                var = var.detach()
            n = x.numel() / x.shape[1]
            with torch.no_grad():
                self.running_mean.copy_((1 - self.momentum) * self.running_mean + self.momentum * mean)
                self.running_var.copy_((1 - self.momentum) * self.running_var + self.momentum * var * n / (n - 1))
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return self.weight[None, :, None, None] * x_hat + self.bias[None, :, None, None]


class BN2dDetachedStatistics(_BN2d):
    detach = "mean var"


class BN2dDetachedMean(_BN2d):
    detach = "mean"


class BN2dOverDims02(_BN2d):
    dims = (0, 2)


class BN2dOverDims02View(_BN2d):
    dims = (0, 2)

    def forward(self, x):
        mean = x.mean(dim=self.dims, keepdim=True)
        var = x.var(dim=self.dims, keepdim=True, unbiased=False)
        if self.training:
            with torch.no_grad():
                self.running_mean.copy_((1 - self.momentum) * self.running_mean + self.momentum * mean.view(-1))
        return self.weight.view(1, -1, 1, 1) * (x - mean) / torch.sqrt(var + self.eps) + self.bias.view(1, -1, 1, 1)


WRONG = [
    ("BatchNormFunction", ["through the mean"], _function("no-mean")),
    ("BatchNormFunction", ["through the variance"], _function("no-var")),
    ("BatchNormFunction", ["wrong sign"], _function("negated")),
    ("BatchNormFunction", ["eps outside the square root"], _function("eps-outside")),
    ("BatchNormFunction", ["unbiased variance"], _function("unbiased")),
    ("BatchNorm1dNumpy", ["through the variance"], BN1dNoVarPath),
    ("BatchNorm1dNumpy", ["through the mean"], BN1dNoMeanPath),
    ("BatchNorm2d", [".detach()ed"], BN2dDetachedStatistics),
    ("BatchNorm2d", [".detach()ed"], BN2dDetachedMean),
    ("BatchNorm2d", ["wrong dimensions", "wrong axes"], BN2dOverDims02),
    ("BatchNorm2d", ["wrong dimensions", "wrong axes"], BN2dOverDims02View),
]


class FunctionBackwardEpsOutside(torch.autograd.Function):
    """Right forward; the backward recomputes the standard deviation with eps outside the root."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps=1e-5):
        mu, var = x.mean(0), x.var(0, unbiased=False)
        x_hat = (x - mu) / torch.sqrt(var + eps)
        ctx.save_for_backward(x, gamma)
        ctx.eps = eps
        return gamma * x_hat + beta

    @staticmethod
    def backward(ctx, dout):
        x, gamma = ctx.saved_tensors
        n = x.shape[0]
        xmu = x - x.mean(0)
        std = xmu.pow(2).mean(0).sqrt() + ctx.eps
        x_hat = xmu / std
        g = dout * gamma
        dx = (n * g - g.sum(0) - x_hat * (g * x_hat).sum(0)) / (n * std)
        return dx, (dout * x_hat).sum(0), dout.sum(0), None


WRONG += [("BatchNormFunction", ["eps outside the square root"], FunctionBackwardEpsOutside)]


class BN1dEpsInRunningVar(_BN1dOver):
    """A right Function; eps blended into running_var during training, and added again in eval (the heldout7
    attempt named "eps outside the square root" before the catalogue had this entry)."""

    function = _function("")

    def forward(self, x):
        if self.training:
            n = x.shape[0]
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * x.mean(0))
                var = x.var(0, unbiased=False) * n / (n - 1) + self.eps
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var)
            return self.function.apply(x, self.weight, self.bias, self.eps)
        return (x - self.running_mean) / torch.sqrt(self.running_var + self.eps) * self.weight + self.bias


WRONG += [("BatchNorm1dNumpy", ["eps stored in running_var"], BN1dEpsInRunningVar)]


class BN2dEpsInRunningVar(_BN2d):
    """As BN1dEpsInRunningVar, for images (heldout7's attempt was this one: named "eps missing in eval mode")."""

    def forward(self, x):
        if self.training:
            mean, var = x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False)
            n = x.numel() / x.shape[1]
            with torch.no_grad():
                self.running_mean.copy_((1 - self.momentum) * self.running_mean + self.momentum * mean)
                stored = var * n / (n - 1) + self.eps
                self.running_var.copy_((1 - self.momentum) * self.running_var + self.momentum * stored)
        else:
            mean, var = self.running_mean, self.running_var
        x_hat = (x - mean[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + self.eps)
        return self.weight[None, :, None, None] * x_hat + self.bias[None, :, None, None]


WRONG += [("BatchNorm2d", ["eps stored in running_var"], BN2dEpsInRunningVar)]

"""Right solutions of notebooks 2-4 written the other ways learners write them: another axes order,
einsum, float64 accumulation (cast back to the input's dtype), statistics kept with keepdims.

``RIGHT`` is ``(exercise, check_name, solution)``: ``check_name`` is the check's function in
``bncourse.checks.<module>``; the solution is a function, a (forward, backward) pair or a class.
The modules' variants (BatchNorm1d keepdim, BatchNorm2d einsum in float64) are in test_checks_pytorch,
next to the modules they vary.
"""

import numpy as np
import torch

# ------------------------------------------------------------------------------ notebook 2


def forward_transposed_einsum(x, gamma, beta, eps=1e-5):
    """Features as rows (D, N), float64 einsum sums, statistics kept as (D, 1)."""
    xt = x.T.astype(np.float64)
    n = xt.shape[1]
    mean = np.einsum("dn->d", xt)[:, None] / n
    var = np.einsum("dn,dn->d", xt - mean, xt - mean)[:, None] / n
    x_hat = (xt - mean) / np.sqrt(var + eps)
    return (gamma[:, None] * x_hat + beta[:, None]).T.astype(x.dtype), (x_hat.T, mean, var)


def running_einsum_float64_keepdim(x, running_mean, running_var, momentum=0.1):
    x64 = x.astype(np.float64)
    n = x.shape[0]
    mean = np.einsum("nd->d", x64)[None, :] / n  # (1, D)
    var_u = np.einsum("nd,nd->d", x64 - mean, x64 - mean) / (n - 1)
    new_mean = (1 - momentum) * running_mean + momentum * mean[0]
    new_var = (1 - momentum) * running_var + momentum * var_u
    return new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype)


def inference_transposed_einsum(x, gamma, beta, running_mean, running_var, eps=1e-5):
    xt = x.T.astype(np.float64)  # (D, N)
    scale = gamma / np.sqrt(running_var.astype(np.float64) + eps)
    out = np.einsum("dn,d->dn", xt - running_mean[:, None], scale) + beta[:, None]
    return np.ascontiguousarray(out.T).astype(x.dtype)


# ------------------------------------------------------------------------------ notebook 3


def backward_transposed_keepdim(dout, cache):
    """The reference cache, worked on as (D, N) with sums kept as (D, 1)."""
    g = (dout * cache.gamma).T
    xh = cache.x_hat.T
    dx = cache.inv_std[:, None] * (g - g.mean(1, keepdims=True) - xh * (g * xh).mean(1, keepdims=True))
    return dx.T, np.einsum("nd,nd->d", dout, cache.x_hat), np.einsum("nd->d", dout)


def spatial_forward_nhwc_einsum(x, gamma, beta, eps=1e-5):
    """Channels last (N, H, W, C), float64 statistics kept as (1, 1, 1, C), back to (N, C, H, W)."""
    v = np.transpose(x, (0, 2, 3, 1)).astype(np.float64)
    m = v.shape[0] * v.shape[1] * v.shape[2]
    mean = np.einsum("nhwc->c", v).reshape(1, 1, 1, -1) / m
    var = np.einsum("nhwc,nhwc->c", v - mean, v - mean).reshape(1, 1, 1, -1) / m
    inv = 1 / np.sqrt(var + eps)
    x_hat = (v - mean) * inv
    out = np.einsum("nhwc,c->nhwc", x_hat, gamma) + beta
    return np.transpose(out, (0, 3, 1, 2)).astype(x.dtype), (x_hat, inv, gamma)


def spatial_backward_nhwc_einsum(dout, cache):
    x_hat, inv, gamma = cache
    d = np.transpose(dout, (0, 2, 3, 1)).astype(np.float64)
    m = d.shape[0] * d.shape[1] * d.shape[2]
    g = d * gamma
    dx = inv / m * (m * g - np.einsum("nhwc->c", g) - x_hat * np.einsum("nhwc,nhwc->c", g, x_hat))
    return (np.transpose(dx, (0, 3, 1, 2)).astype(dout.dtype), np.einsum("nhwc,nhwc->c", d, x_hat).astype(dout.dtype),
            np.einsum("nhwc->c", d).astype(dout.dtype))


# ------------------------------------------------------------------------------ notebook 4


class FunctionTorchKeepdim(torch.autograd.Function):
    """In torch: float64 inside, statistics kept as (1, D), the backward from what forward saved."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        x64 = x.double()
        mean = x64.mean(0, keepdim=True)
        invstd = torch.rsqrt(((x64 - mean) ** 2).mean(0, keepdim=True) + eps)
        x_hat = (x64 - mean) * invstd
        ctx.save_for_backward(x_hat, invstd, gamma)
        return (x_hat * gamma.double() + beta.double()).to(x.dtype)

    @staticmethod
    def backward(ctx, dout):
        x_hat, invstd, gamma = ctx.saved_tensors
        d = dout.double()
        g = d * gamma.double()
        dx = invstd * (g - g.mean(0, keepdim=True) - x_hat * (g * x_hat).mean(0, keepdim=True))
        return (dx.to(dout.dtype), torch.einsum("nd,nd->d", d, x_hat).to(dout.dtype),
                d.sum(0).to(dout.dtype), None)


RIGHT = [
    ("batchnorm_forward", "forward.check_batchnorm_forward", forward_transposed_einsum),
    ("update_running_stats", "forward.check_update_running_stats", running_einsum_float64_keepdim),
    ("batchnorm_inference", "forward.check_batchnorm_inference", inference_transposed_einsum),
    ("batchnorm_backward", "backward.check_batchnorm_backward", backward_transposed_keepdim),
    ("spatial_batchnorm_forward", "backward.check_spatial_batchnorm_forward", spatial_forward_nhwc_einsum),
    ("spatial_batchnorm_backward", "backward.check_spatial_batchnorm_backward",
     (spatial_forward_nhwc_einsum, spatial_backward_nhwc_einsum)),
    ("BatchNormFunction", "pytorch.check_batchnorm_function", FunctionTorchKeepdim),
]

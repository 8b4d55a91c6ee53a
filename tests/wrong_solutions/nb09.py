"""Wrong (and right) solutions of notebook 9 (layer norm, group norm), written as learners write them."""

import numpy as np


def ln_forward(x, gamma, beta, eps=1e-5):
    mu = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, (x, x_hat, mu, var, gamma, eps)


def ln_backward(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    D = x.shape[1]
    g = dout * gamma
    inv = 1.0 / np.sqrt(var + eps)
    dx = inv / D * (D * g - g.sum(1, keepdims=True) - x_hat * (g * x_hat).sum(1, keepdims=True))
    return dx, (dout * x_hat).sum(0), dout.sum(0)


def ln_fwd_axis0(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return gamma * x_hat + beta, None


def ln_fwd_no_eps(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True)
    return gamma * x_hat + beta, None


def ln_fwd_eps_outside(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + eps)
    return gamma * x_hat + beta, None


def ln_fwd_unbiased(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, ddof=1, keepdims=True) + eps)
    return gamma * x_hat + beta, None


def ln_fwd_swapped(x, gamma, beta, eps=1e-5):
    out, cache = ln_forward(x, beta, gamma, eps)
    return out, cache


def ln_fwd_no_affine(x, gamma, beta, eps=1e-5):
    return (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps), None


def ln_fwd_over_var(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(1, keepdims=True)) / (x.var(1, keepdims=True) + eps) + beta, None


def ln_fwd_fixed_eps(x, gamma, beta, eps=1e-5):
    return ln_forward(x, gamma, beta, 1e-5)


def ln_fwd_one_stat(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean()) / np.sqrt(x.var() + eps) + beta, None


def ln_bwd_no_mean(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    g = dout * gamma
    dx = (g - x_hat * (g * x_hat).mean(1, keepdims=True)) / np.sqrt(var + eps)
    return dx, (dout * x_hat).sum(0), dout.sum(0)


def ln_bwd_no_var(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    g = dout * gamma
    return (g - g.mean(1, keepdims=True)) / np.sqrt(var + eps), (dout * x_hat).sum(0), dout.sum(0)


def ln_bwd_batch_axis(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    N = x.shape[0]
    g = dout * gamma
    bmu, bvar = x.mean(0), x.var(0)
    xh = (x - bmu) / np.sqrt(bvar + eps)
    dx = 1 / np.sqrt(bvar + eps) / N * (N * g - g.sum(0) - xh * (g * xh).sum(0))
    return dx, (dout * x_hat).sum(0), dout.sum(0)


def ln_bwd_no_gamma(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    D = x.shape[1]
    g = dout
    dx = 1 / np.sqrt(var + eps) / D * (D * g - g.sum(1, keepdims=True) - x_hat * (g * x_hat).sum(1, keepdims=True))
    return dx, (dout * x_hat).sum(0), dout.sum(0)


def ln_bwd_dgamma_x(dout, cache):
    dx, _, dbeta = ln_backward(dout, cache)
    return dx, (dout * cache[0]).sum(0), dbeta


def ln_bwd_missing_1_over_d(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    D = x.shape[1]
    g = dout * gamma
    dx = 1 / np.sqrt(var + eps) * (D * g - g.sum(1, keepdims=True) - x_hat * (g * x_hat).sum(1, keepdims=True))
    return dx, (dout * x_hat).sum(0), dout.sum(0)


def ln_bwd_1_over_n(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    N, D = x.shape
    g = dout * gamma
    dx = 1 / np.sqrt(var + eps) / N * (N * g - g.sum(1, keepdims=True) - x_hat * (g * x_hat).sum(1, keepdims=True))
    return dx, (dout * x_hat).sum(0), dout.sum(0)


def ln_bwd_var_sign(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    D = x.shape[1]
    g = dout * gamma
    dx = 1 / np.sqrt(var + eps) / D * (D * g - g.sum(1, keepdims=True) + x_hat * (g * x_hat).sum(1, keepdims=True))
    return dx, (dout * x_hat).sum(0), dout.sum(0)


def ln_bwd_fixed_eps(dout, cache):
    x, x_hat, mu, var, gamma, _ = cache
    return ln_backward(dout, (x, x_hat, mu, var, gamma, 1e-5))


def ln_bwd_float64(dout, cache):
    dx, dg, db = ln_backward(dout.astype(np.float64), cache)
    return dx, dg, db  # float64 gradients: allowed by the contract


def ln_forward_transposed_einsum(x, gamma, beta, eps=1e-5):
    """Right: features as rows (D, N), float64 einsum sums, statistics kept as (1, N), cast back."""
    xt = x.T.astype(np.float64)
    d = xt.shape[0]
    mu = np.einsum("dn->n", xt)[None, :] / d
    var = np.einsum("dn,dn->n", xt - mu, xt - mu)[None, :] / d
    x_hat = (xt - mu) / np.sqrt(var + eps)
    out = np.einsum("dn,d->dn", x_hat, gamma) + beta[:, None]
    return out.T.astype(x.dtype), (x, x_hat.T, mu.T, var.T, gamma, eps)


def ln_bwd_einsum_keepdim(dout, cache):
    """Right: sums by einsum, kept as (N, 1)."""
    x, x_hat, mu, var, gamma, eps = cache
    D = x.shape[1]
    g = np.einsum("nd,d->nd", dout, gamma)
    dx = (D * g - np.einsum("nd->n", g)[:, None] - x_hat * np.einsum("nd,nd->n", g, x_hat)[:, None]) / D
    return dx / np.sqrt(var + eps), np.einsum("nd,nd->d", dout, x_hat), np.einsum("nd->d", dout)


def gn_forward(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    mu = xg.mean(2, keepdims=True)
    var = xg.var(2, keepdims=True)
    x_hat = ((xg - mu) / np.sqrt(var + eps)).reshape(N, C, H, W)
    return x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), (x, x_hat, var, gamma, G, eps)


def gn_backward(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    N, C, H, W = x.shape
    g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, -1)
    xh = x_hat.reshape(N, G, -1)
    M = g.shape[2]
    dx = 1 / np.sqrt(var + eps) / M * (M * g - g.sum(2, keepdims=True) - xh * (g * xh).sum(2, keepdims=True))
    return dx.reshape(x.shape), (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))


def _gn_with(x, gamma, beta, G, eps, stats):
    N, C, H, W = x.shape
    x_hat = stats(x, N, C, H, W, G, eps)
    return x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), None


def gn_fwd_no_eps(x, gamma, beta, G, eps=1e-5):
    def s(x, N, C, H, W, G, eps):
        xg = x.reshape(N, G, -1)
        return ((xg - xg.mean(2, keepdims=True)) / xg.std(2, keepdims=True)).reshape(x.shape)
    return _gn_with(x, gamma, beta, G, eps, s)


def gn_fwd_eps_outside(x, gamma, beta, G, eps=1e-5):
    def s(x, N, C, H, W, G, eps):
        xg = x.reshape(N, G, -1)
        return ((xg - xg.mean(2, keepdims=True)) / (xg.std(2, keepdims=True) + eps)).reshape(x.shape)
    return _gn_with(x, gamma, beta, G, eps, s)


def gn_fwd_g_as_size(x, gamma, beta, G, eps=1e-5):
    """G read as the number of channels per group."""
    N, C, H, W = x.shape
    return gn_forward(x, gamma, beta, C // G, eps)


def gn_fwd_mean_of_channel_vars(x, gamma, beta, G, eps=1e-5):
    def s(x, N, C, H, W, G, eps):
        xg = x.reshape(N, G, C // G, H * W)
        mu = xg.mean((2, 3), keepdims=True)
        var = xg.var(3, keepdims=True).mean(2, keepdims=True)
        return ((xg - mu) / np.sqrt(var + eps)).reshape(x.shape)
    return _gn_with(x, gamma, beta, G, eps, s)


def gn_fwd_batch(x, gamma, beta, G, eps=1e-5):
    def s(x, N, C, H, W, G, eps):
        return (x - x.mean((0, 2, 3), keepdims=True)) / np.sqrt(x.var((0, 2, 3), keepdims=True) + eps)
    return _gn_with(x, gamma, beta, G, eps, s)


def gn_fwd_strided(x, gamma, beta, G, eps=1e-5):
    def s(x, N, C, H, W, G, eps):
        xg = x.reshape(N, C // G, G, H, W)
        return ((xg - xg.mean((1, 3, 4), keepdims=True)) / np.sqrt(xg.var((1, 3, 4), keepdims=True) + eps)).reshape(x.shape)
    return _gn_with(x, gamma, beta, G, eps, s)


def gn_fwd_instance(x, gamma, beta, G, eps=1e-5):
    def s(x, N, C, H, W, G, eps):
        return (x - x.mean((2, 3), keepdims=True)) / np.sqrt(x.var((2, 3), keepdims=True) + eps)
    return _gn_with(x, gamma, beta, G, eps, s)


def gn_fwd_unbiased(x, gamma, beta, G, eps=1e-5):
    def s(x, N, C, H, W, G, eps):
        xg = x.reshape(N, G, -1)
        return ((xg - xg.mean(2, keepdims=True)) / np.sqrt(xg.var(2, ddof=1, keepdims=True) + eps)).reshape(x.shape)
    return _gn_with(x, gamma, beta, G, eps, s)


def gn_fwd_swapped(x, gamma, beta, G, eps=1e-5):
    return gn_forward(x, beta, gamma, G, eps)


def gn_fwd_affine_per_group(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    x_hat = (xg - xg.mean(2, keepdims=True)) / np.sqrt(xg.var(2, keepdims=True) + eps)
    return (x_hat * gamma[:G].reshape(1, G, 1) + beta[:G].reshape(1, G, 1)).reshape(x.shape), None


def gn_bwd_no_mean(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    N, C, H, W = x.shape
    g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, -1)
    xh = x_hat.reshape(N, G, -1)
    dx = (g - xh * (g * xh).mean(2, keepdims=True)) / np.sqrt(var + eps)
    return dx.reshape(x.shape), (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))


def gn_bwd_per_channel(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    N, C, H, W = x.shape
    g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, C, -1)
    xh = x_hat.reshape(N, C, -1)
    M = g.shape[2]
    inv = np.repeat(1 / np.sqrt(var + eps), C // G, axis=1)
    dx = inv / M * (M * g - g.sum(2, keepdims=True) - xh * (g * xh).sum(2, keepdims=True))
    return dx.reshape(x.shape), (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))


def gn_bwd_no_gamma(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    return gn_backward(dout, (x, x_hat, var, np.ones_like(gamma), G, eps))[0], \
        (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))


def gn_bwd_dgamma_x(dout, cache):
    dx, _, db = gn_backward(dout, cache)
    return dx, (dout * cache[0]).sum((0, 2, 3)), db


def gn_bwd_dgamma_per_group(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    dx, dg, db = gn_backward(dout, cache)
    C = x.shape[1]
    return dx, np.repeat(dg.reshape(G, -1).sum(1), C // G), np.repeat(db.reshape(G, -1).sum(1), C // G)


def gn_bwd_missing_1_over_m(dout, cache):
    x, x_hat, var, gamma, G, eps = cache
    N, C, H, W = x.shape
    g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, -1)
    xh = x_hat.reshape(N, G, -1)
    M = g.shape[2]
    dx = 1 / np.sqrt(var + eps) * (M * g - g.sum(2, keepdims=True) - xh * (g * xh).sum(2, keepdims=True))
    return dx.reshape(x.shape), (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))


def _gn_dx(dout, cache, M_of=lambda g, H, W: g.shape[2], sign=-1.0, eps=None):
    x, x_hat, var, gamma, G, cache_eps = cache
    N, C, H, W = x.shape
    g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, -1)
    xh = x_hat.reshape(N, G, -1)
    M = M_of(g, H, W)
    inv = 1 / np.sqrt(var + (cache_eps if eps is None else eps))
    dx = inv / M * (M * g - g.sum(2, keepdims=True) + sign * xh * (g * xh).sum(2, keepdims=True))
    return dx.reshape(x.shape), (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))


def gn_bwd_var_sign(dout, cache):
    return _gn_dx(dout, cache, sign=1.0)


def gn_bwd_over_hw(dout, cache):
    """M taken as one channel's H*W values instead of the group's C/G*H*W."""
    return _gn_dx(dout, cache, M_of=lambda g, H, W: H * W)


def gn_bwd_fixed_eps(dout, cache):
    return _gn_dx(dout, cache, eps=1e-5)


def gn_bwd_float64_einsum(dout, cache):
    """Right: float64 gradients (the contract allows them), sums written with einsum."""
    x, x_hat, var, gamma, G, eps = cache
    N, C, H, W = x.shape
    g = np.einsum("nchw,c->nchw", dout.astype(np.float64), gamma.astype(np.float64)).reshape(N, G, -1)
    xh = x_hat.astype(np.float64).reshape(N, G, -1)
    M = g.shape[2]
    dx = (M * g - np.einsum("ngm->ng", g)[..., None] - xh * np.einsum("ngm,ngm->ng", g, xh)[..., None]) / M
    dx = dx / np.sqrt(var.astype(np.float64) + eps)
    return (dx.reshape(x.shape), np.einsum("nchw,nchw->c", dout.astype(np.float64), x_hat),
            np.einsum("nchw->c", dout.astype(np.float64)))


def gn_forward_keepdim_cache(x, gamma, beta, G, eps=1e-5):
    """Right, with the statistics kept as (N, G, 1, 1, 1)."""
    N, C, H, W = x.shape
    xg = x.reshape(N, G, C // G, H, W)
    mu = np.mean(xg, axis=(2, 3, 4), keepdims=True)
    var = np.mean((xg - mu) ** 2, axis=(2, 3, 4), keepdims=True)
    x_hat = ((xg - mu) / np.sqrt(var + eps)).reshape(N, C, H, W)
    return np.einsum("nchw,c->nchw", x_hat, gamma) + beta[None, :, None, None], (x, x_hat, var.reshape(N, G, 1), gamma, G, eps)


WRONG = [
    ("layernorm_forward", ["batch axis", "wrong axis"], ln_fwd_axis0),
    ("layernorm_forward", ["eps missing"], ln_fwd_no_eps),
    ("layernorm_forward", ["eps outside"], ln_fwd_eps_outside),
    ("layernorm_forward", ["unbiased"], ln_fwd_unbiased),
    ("layernorm_forward", ["gamma and beta swapped"], ln_fwd_swapped),
    ("layernorm_forward", ["not applied"], ln_fwd_no_affine),
    ("layernorm_forward", ["divided by the variance"], ln_fwd_over_var),
    ("layernorm_forward", ["eps argument ignored", "eps hard-coded"], ln_fwd_fixed_eps),
    ("layernorm_forward", ["whole batch"], ln_fwd_one_stat),
    ("layernorm_backward", ["path through the mean"], (ln_forward, ln_bwd_no_mean)),
    ("layernorm_backward", ["path through the variance"], (ln_forward, ln_bwd_no_var)),
    ("layernorm_backward", ["batch axis"], (ln_forward, ln_bwd_batch_axis)),
    ("layernorm_backward", ["not multiplied by gamma"], (ln_forward, ln_bwd_no_gamma)),
    ("layernorm_backward", ["from x instead of x_hat"], (ln_forward, ln_bwd_dgamma_x)),
    ("layernorm_backward", ["1/d", "1/D"], (ln_forward, ln_bwd_missing_1_over_d)),
    ("layernorm_backward", ["divided by n"], (ln_forward, ln_bwd_1_over_n)),
    ("layernorm_backward", ["sign"], (ln_forward, ln_bwd_var_sign)),
    ("layernorm_backward", ["eps hard-coded", "recomputed", "eps=1e-5"], (ln_forward, ln_bwd_fixed_eps)),
    ("groupnorm_forward", ["eps missing"], gn_fwd_no_eps),
    ("groupnorm_forward", ["eps outside"], gn_fwd_eps_outside),
    ("groupnorm_forward", ["channels per group"], gn_fwd_g_as_size),
    ("groupnorm_forward", ["mean of its channels' variances"], gn_fwd_mean_of_channel_vars),
    ("groupnorm_forward", ["batch axis"], gn_fwd_batch),
    ("groupnorm_forward", ["non-adjacent"], gn_fwd_strided),
    ("groupnorm_forward", ["instance norm"], gn_fwd_instance),
    ("groupnorm_forward", ["unbiased"], gn_fwd_unbiased),
    ("groupnorm_forward", ["gamma and beta swapped"], gn_fwd_swapped),
    ("groupnorm_forward", ["per group instead of per channel"], gn_fwd_affine_per_group),
    ("groupnorm_backward", ["path through the group mean"], (gn_forward, gn_bwd_no_mean)),
    ("groupnorm_backward", ["per channel instead of per group"], (gn_forward, gn_bwd_per_channel)),
    ("groupnorm_backward", ["not multiplied by gamma"], (gn_forward, gn_bwd_no_gamma)),
    ("groupnorm_backward", ["from x instead of x_hat"], (gn_forward, gn_bwd_dgamma_x)),
    ("groupnorm_backward", ["summed per group"], (gn_forward, gn_bwd_dgamma_per_group)),
    ("groupnorm_backward", ["1/m", "1/M"], (gn_forward, gn_bwd_missing_1_over_m)),
    ("groupnorm_backward", ["sign"], (gn_forward, gn_bwd_var_sign)),
    ("groupnorm_backward", ["H*W"], (gn_forward, gn_bwd_over_hw)),
    ("groupnorm_backward", ["eps=1e-5", "recomputed"], (gn_forward, gn_bwd_fixed_eps)),
]
RIGHT = [("layernorm_forward", ln_forward_transposed_einsum),
         ("layernorm_backward", (ln_forward_transposed_einsum, ln_bwd_einsum_keepdim)),
         ("layernorm_backward", (ln_forward, ln_bwd_float64)), ("groupnorm_forward", gn_forward_keepdim_cache),
         ("groupnorm_backward", (gn_forward_keepdim_cache, gn_backward)),
         ("groupnorm_backward", (gn_forward, gn_bwd_float64_einsum))]


# issue 21: more slips of layer and group norm, forward and backward
def ln_fwd_no_keepdims(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(1)) / np.sqrt(x.var(1) + eps)
    return gamma * x_hat + beta, None


def ln_fwd_sqrt_std(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(1, keepdims=True)) / np.sqrt(x.std(1, keepdims=True) + eps)
    return gamma * x_hat + beta, None


def ln_fwd_affine_first(x, gamma, beta, eps=1e-5):
    z = gamma * x + beta
    return (z - z.mean(1, keepdims=True)) / np.sqrt(z.var(1, keepdims=True) + eps), None


def _ln_bwd(dx_scale=1.0, swap=False, mean=False, recompute=False):
    def backward(dout, cache):
        x, x_hat, mu, var, gamma, eps = cache
        if recompute:
            x_hat = (x - mu) / np.sqrt(var + 1e-5)
        inv = 1.0 / np.sqrt(var + (1e-5 if recompute else eps))
        D = x.shape[1]
        g = dout * gamma
        dx = inv * dx_scale / D * (D * g - g.sum(1, keepdims=True) - x_hat * (g * x_hat).sum(1, keepdims=True))
        dgamma, dbeta = (dout * x_hat).sum(0), dout.sum(0)
        if mean:
            dgamma, dbeta = dgamma / len(x), dbeta / len(x)
        return (dx, dbeta, dgamma) if swap else (dx, dgamma, dbeta)
    return backward


def ln_bwd_inv_squared(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    D = x.shape[1]
    g = dout * gamma
    dx = (1 / (var + eps)) / D * (D * g - g.sum(1, keepdims=True) - x_hat * (g * x_hat).sum(1, keepdims=True))
    return dx, (dout * x_hat).sum(0), dout.sum(0)


def ln_bwd_mutates_cache(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    dx, dgamma, dbeta = ln_backward(dout, cache)
    x_hat *= 2.0  # scratch space: the caller's cache changes
    return dx, dgamma, dbeta


def gn_fwd_channels_last(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.transpose(0, 2, 3, 1).reshape(N, G, -1)
    x_hat = ((xg - xg.mean(2, keepdims=True)) / np.sqrt(xg.var(2, keepdims=True) + eps))
    x_hat = x_hat.reshape(N, H, W, C).transpose(0, 3, 1, 2)
    return x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), None


def gn_fwd_affine_first(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    z = (x * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1)).reshape(N, G, -1)
    return ((z - z.mean(2, keepdims=True)) / np.sqrt(z.var(2, keepdims=True) + eps)).reshape(x.shape), None


def _gn_fwd_cached(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    inv = 1 / np.sqrt(xg.var(2, keepdims=True) + eps)
    x_hat = ((xg - xg.mean(2, keepdims=True)) * inv).reshape(x.shape)
    return x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), (x_hat, inv, gamma, G)


def _gn_bwd(M_of=lambda C, G, H, W: C // G * H * W, dparams_axes=(0, 2, 3)):
    def backward(dout, cache):
        x_hat, inv, gamma, G = cache
        N, C, H, W = dout.shape
        g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, -1)
        xh = x_hat.reshape(N, G, -1)
        M = M_of(C, G, H, W)
        dx = inv / M * (M * g - g.sum(2, keepdims=True) - xh * (g * xh).sum(2, keepdims=True))
        return dx.reshape(dout.shape), (dout * x_hat).sum(axis=dparams_axes), dout.sum(axis=dparams_axes)
    return backward


WRONG += [
    ("layernorm_forward", ["keepdims=True"], ln_fwd_no_keepdims),
    ("layernorm_forward", ["square root taken of the standard deviation"], ln_fwd_sqrt_std),
    ("layernorm_forward", ["before normalizing"], ln_fwd_affine_first),
    ("layernorm_backward", ["inv_std twice"], (ln_forward, ln_bwd_inv_squared)),
    ("layernorm_backward", ["dgamma and dbeta swapped"], (ln_forward, _ln_bwd(swap=True))),
    ("layernorm_backward", ["averaged over the batch"], (ln_forward, _ln_bwd(mean=True))),
    ("layernorm_backward", ["eps=1e-5"], (ln_forward, _ln_bwd(recompute=True))),
    ("layernorm_backward", ["changed the forward's cache"], (ln_forward, ln_bwd_mutates_cache)),
    ("groupnorm_forward", ["channels last"], gn_fwd_channels_last),
    ("groupnorm_forward", ["before normalizing"], gn_fwd_affine_first),
    ("groupnorm_backward", ["M taken as C/G"], (_gn_fwd_cached, _gn_bwd(M_of=lambda C, G, H, W: C // G))),
    ("groupnorm_backward", ["summed over the batch only"], (_gn_fwd_cached, _gn_bwd(dparams_axes=0))),
]
RIGHT += [("groupnorm_backward", (_gn_fwd_cached, _gn_bwd()))]


# issue 21, held-out set 4's failures and their neighbours
def ln_fwd_uncentred_var(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=1, keepdims=True)
    var = np.mean(x ** 2, axis=1, keepdims=True)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None


def ln_fwd_beta_in_bracket(x, gamma, beta, eps=1e-5):
    x_hat = (x - x.mean(1, keepdims=True)) / np.sqrt(x.var(1, keepdims=True) + eps)
    return gamma * (x_hat + beta), None


def _ln_bwd_from(dx_of):
    def backward(dout, cache):
        x, x_hat, mu, var, gamma, eps = cache
        dx = dx_of(dout, x_hat, 1.0 / np.sqrt(var + eps), gamma, x.shape[1])
        return dx, (dout * x_hat).sum(0), dout.sum(0)
    return backward


def _closed(g, x_hat, D):
    return D * g - g.sum(1, keepdims=True) - x_hat * (g * x_hat).sum(1, keepdims=True)


ln_bwd_no_inv_std = _ln_bwd_from(lambda dout, xh, inv, gamma, D: _closed(dout * gamma, xh, D) / D)
ln_bwd_gamma_at_end = _ln_bwd_from(lambda dout, xh, inv, gamma, D: gamma * inv / D * _closed(dout, xh, D))
ln_bwd_d_minus_1 = _ln_bwd_from(lambda dout, xh, inv, gamma, D: inv / (D - 1) * _closed(dout * gamma, xh, D))
ln_bwd_d_minus_1_everywhere = _ln_bwd_from(lambda dout, xh, inv, gamma, D: inv / (D - 1) * _closed(dout * gamma, xh, D - 1))
ln_bwd_times_std = _ln_bwd_from(lambda dout, xh, inv, gamma, D: 1 / inv / D * _closed(dout * gamma, xh, D))


def ln_bwd_mean_form_gamma_at_end(dout, cache):
    x, x_hat, mu, var, gamma, eps = cache
    inv = 1.0 / np.sqrt(var + eps)
    dx = inv * (dout - dout.mean(1, keepdims=True) - x_hat * (dout * x_hat).mean(1, keepdims=True))
    return dx * gamma, (dout * x_hat).sum(0), dout.sum(0)


def _gn_bwd_from(M_of=lambda C, G, H, W: C // G * H * W, gamma_after=False):
    def backward(dout, cache):
        x, x_hat, var, gamma, G, eps = cache
        N, C, H, W = x.shape
        M = M_of(C, G, H, W)
        g = dout if gamma_after else dout * gamma.reshape(1, C, 1, 1)
        g = g.reshape(N, G, -1)
        xh = x_hat.reshape(N, G, -1)
        dx = 1.0 / np.sqrt(var + eps) / M * (M * g - g.sum(2, keepdims=True) - xh * (g * xh).sum(2, keepdims=True))
        dx = dx.reshape(N, C, H, W)
        if gamma_after:
            dx = dx * gamma.reshape(1, C, 1, 1)
        return dx, (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))
    return backward


def gn_fwd_uncentred_var(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    x_hat = ((xg - xg.mean(2, keepdims=True)) / np.sqrt((xg ** 2).mean(2, keepdims=True) + eps)).reshape(x.shape)
    return x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), None


WRONG += [
    ("layernorm_forward", ["without subtracting the mean"], ln_fwd_uncentred_var),
    ("layernorm_forward", ["beta scaled by gamma"], ln_fwd_beta_in_bracket),
    ("layernorm_backward", ["missing the factor inv_std"], (ln_forward, ln_bwd_no_inv_std)),
    ("layernorm_backward", ["gamma multiplied onto dx at the end"], (ln_forward, ln_bwd_gamma_at_end)),
    ("layernorm_backward", ["gamma multiplied onto dx at the end"], (ln_forward, ln_bwd_mean_form_gamma_at_end)),
    ("layernorm_backward", ["M - 1"], (ln_forward, ln_bwd_d_minus_1)),
    ("layernorm_backward", ["M - 1"], (ln_forward, ln_bwd_d_minus_1_everywhere)),
    ("layernorm_backward", ["multiplied by the standard deviation"], (ln_forward, ln_bwd_times_std)),
    ("groupnorm_forward", ["without subtracting the mean"], gn_fwd_uncentred_var),
    ("groupnorm_backward", ["C*H*W"], (gn_forward, _gn_bwd_from(lambda C, G, H, W: C * H * W))),
    ("groupnorm_backward", ["gamma multiplied onto dx at the end"], (gn_forward, _gn_bwd_from(gamma_after=True))),
    ("groupnorm_backward", ["M - 1"], (gn_forward, _gn_bwd_from(lambda C, G, H, W: C // G * H * W - 1))),
]


def gn_fwd_gamma_per_group_reshape(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    x_hat = (xg - xg.mean(2, keepdims=True)) / np.sqrt(xg.var(2, keepdims=True) + eps)
    return (x_hat * gamma.reshape(1, G, 1) + beta.reshape(1, G, 1)).reshape(x.shape), None


def gn_fwd_gamma_unreshaped(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    x_hat = ((xg - xg.mean(2, keepdims=True)) / np.sqrt(xg.var(2, keepdims=True) + eps)).reshape(x.shape)
    return x_hat * gamma + beta, None


def ln_fwd_no_keepdims_err(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=1), x.var(axis=1)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None


WRONG += [
    ("groupnorm_forward", ["not per group"], gn_fwd_gamma_per_group_reshape),
    ("groupnorm_forward", ["(1, C, 1, 1)"], gn_fwd_gamma_unreshaped),
    ("layernorm_forward", ["keepdims"], ln_fwd_no_keepdims_err),
]


# more neighbours: a step left out or turned, the sums and divisors of the backward
def ln_fwd_not_divided(x, gamma, beta, eps=1e-5):
    return gamma * (x - x.mean(1, keepdims=True)) + beta, None


def ln_fwd_eps_added_after(x, gamma, beta, eps=1e-5):
    return gamma * ((x - x.mean(1, keepdims=True)) / x.std(1, keepdims=True) + eps) + beta, None


def _ln_bwd_variant(dx_of, dparams=lambda dout, x_hat, gamma: ((dout * x_hat).sum(0), dout.sum(0))):
    def backward(dout, cache):
        x, x_hat, mu, var, gamma, eps = cache
        return (dx_of(dout, x, x_hat, var, gamma, eps),) + tuple(dparams(dout, x_hat, gamma))
    return backward


def _ln_dx(dout, x, x_hat, var, gamma, eps, summed=None, outer=None, inv=None):
    D = x.shape[1]
    g = dout * gamma
    s = g if summed is None else summed
    inv = 1.0 / np.sqrt(var + eps) if inv is None else inv
    return inv / D * (D * g - s.sum(1, keepdims=True) - (x_hat if outer is None else outer) * (s * x_hat).sum(1, keepdims=True))


ln_bwd_dparams_not_summed = _ln_bwd_variant(lambda d, x, xh, v, g, e: _ln_dx(d, x, xh, v, g, e), lambda d, xh, g: (d * xh, d))
ln_bwd_sums_of_dout = _ln_bwd_variant(lambda d, x, xh, v, g, e: _ln_dx(d, x, xh, v, g, e, summed=d))
ln_bwd_sqrt_var_no_eps = _ln_bwd_variant(lambda d, x, xh, v, g, e: _ln_dx(d, x, xh, v, g, e, inv=1 / np.sqrt(v)))
ln_bwd_x_for_x_hat = _ln_bwd_variant(lambda d, x, xh, v, g, e: _ln_dx(d, x, xh, v, g, e, outer=x))
ln_bwd_dgamma_times_gamma = _ln_bwd_variant(lambda d, x, xh, v, g, e: _ln_dx(d, x, xh, v, g, e),
                                            lambda d, xh, g: ((d * g * xh).sum(0), d.sum(0)))


def _gn_stats(x, G):
    xg = x.reshape(x.shape[0], G, -1)
    return xg, xg.mean(2, keepdims=True), xg.var(2, keepdims=True)


def _gn_finish(x, x_hat, gamma, beta):
    C = x.shape[1]
    return x_hat.reshape(x.shape) * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), None


def gn_fwd_not_divided(x, gamma, beta, G, eps=1e-5):
    xg, mu, var = _gn_stats(x, G)
    return _gn_finish(x, xg - mu, gamma, beta)


def gn_fwd_per_pixel(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, C // G, H, W)
    return _gn_finish(x, (xg - xg.mean(2, keepdims=True)) / np.sqrt(xg.var(2, keepdims=True) + eps), gamma, beta)


def gn_fwd_every_gth(x, gamma, beta, G, eps=1e-5):
    xg = x.reshape(x.shape[0], -1, G)
    return _gn_finish(x, (xg - xg.mean(1, keepdims=True)) / np.sqrt(xg.var(1, keepdims=True) + eps), gamma, beta)


def gn_fwd_eps_added_after(x, gamma, beta, G, eps=1e-5):
    xg, mu, var = _gn_stats(x, G)
    return _gn_finish(x, (xg - mu) / np.sqrt(var) + eps, gamma, beta)


def _gn_bwd_variant(inv_of=lambda var, eps: 1.0 / np.sqrt(var + eps), outer_x=False):
    def backward(dout, cache):
        x, x_hat, var, gamma, G, eps = cache
        N, C, H, W = x.shape
        g = (dout * gamma.reshape(1, C, 1, 1)).reshape(N, G, -1)
        xh = x_hat.reshape(N, G, -1)
        M = g.shape[2]
        outer = x.reshape(N, G, -1) if outer_x else xh
        dx = inv_of(var, eps) / M * (M * g - g.sum(2, keepdims=True) - outer * (g * xh).sum(2, keepdims=True))
        return dx.reshape(x.shape), (dout * x_hat).sum((0, 2, 3)), dout.sum((0, 2, 3))
    return backward


WRONG += [
    ("layernorm_forward", ["not divided by the standard deviation"], ln_fwd_not_divided),
    ("layernorm_forward", ["eps added to x_hat"], ln_fwd_eps_added_after),
    ("layernorm_backward", ["not summed"], (ln_forward, ln_bwd_dparams_not_summed)),
    ("layernorm_backward", ["gamma only on the direct term"], (ln_forward, ln_bwd_sums_of_dout)),
    ("layernorm_backward", ["without eps"], (ln_forward, ln_bwd_sqrt_var_no_eps)),
    ("layernorm_backward", ["x in place of x_hat"], (ln_forward, ln_bwd_x_for_x_hat)),
    ("layernorm_backward", ["dgamma multiplied by gamma"], (ln_forward, ln_bwd_dgamma_times_gamma)),
    ("groupnorm_forward", ["not divided by the standard deviation"], gn_fwd_not_divided),
    ("groupnorm_forward", ["at each pixel"], gn_fwd_per_pixel),
    ("groupnorm_forward", ["every G-th"], gn_fwd_every_gth),
    ("groupnorm_forward", ["eps added to x_hat"], gn_fwd_eps_added_after),
    ("groupnorm_backward", ["without eps"], (gn_forward, _gn_bwd_variant(inv_of=lambda var, eps: 1 / np.sqrt(var)))),
    ("groupnorm_backward", ["x in place of x_hat"], (gn_forward, _gn_bwd_variant(outer_x=True))),
]


from .nb09_more import WRONG as _MORE  # noqa: E402 - RMS norm, dgamma/dbeta averaged or per group, 1/M twice

WRONG += _MORE


from .round6 import WRONG_BY_NB as _ROUND6  # noqa: E402 - a sixth held-out round's misses

WRONG += _ROUND6.get("9", [])


from .round8 import WRONG_BY_NB as _ROUND8  # noqa: E402 - an eighth held-out round's misses and their neighbours

WRONG += _ROUND8.get("9", [])

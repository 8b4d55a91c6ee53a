"""Do the layer-norm and group-norm checks pass right solutions and name each learner's mistake?

Every wrong solution below is written the way a learner would write it (not by the check's own
mistake functions), and the check must name its mistake.
"""

from __future__ import annotations

import numpy as np
import pytest

from bncourse.checks import catalogue
from bncourse.checks import norm_family as nf
from bncourse.grading import pipeline as grading


# ----------------------------------------------------------------------------- layer norm, learner style

def ln_forward(x, gamma, beta, eps=1e-5):
    mu = np.mean(x, axis=1, keepdims=True)
    var = np.mean((x - mu) ** 2, axis=1, keepdims=True)
    x_hat = (x - mu) / np.sqrt(var + eps)
    return gamma * x_hat + beta, {"x_hat": x_hat, "var": var, "gamma": gamma, "eps": eps}


def ln_backward(dout, cache):
    x_hat, gamma = cache["x_hat"], cache["gamma"]
    D = dout.shape[1]
    dxhat = dout * gamma
    inv = 1 / np.sqrt(cache["var"] + cache["eps"])
    dx = inv / D * (D * dxhat - dxhat.sum(axis=1, keepdims=True) - x_hat * (dxhat * x_hat).sum(axis=1, keepdims=True))
    return dx, (dout * x_hat).sum(axis=0), dout.sum(axis=0)


def ln_batch_axis(x, gamma, beta, eps=1e-5):
    mu, var = x.mean(axis=0), x.var(axis=0)
    return gamma * (x - mu) / np.sqrt(var + eps) + beta, None


def ln_eps_outside(x, gamma, beta, eps=1e-5):
    mu, sd = x.mean(1, keepdims=True), x.std(1, keepdims=True)
    return gamma * (x - mu) / (sd + eps) + beta, None


def ln_no_mean_path(dout, cache):
    x_hat, gamma = cache["x_hat"], cache["gamma"]
    inv = 1 / np.sqrt(cache["var"] + cache["eps"])
    g = dout * gamma
    dx = inv * (g - x_hat * (g * x_hat).mean(axis=1, keepdims=True))
    return dx, (dout * x_hat).sum(0), dout.sum(0)


def ln_no_var_path(dout, cache):
    x_hat, gamma = cache["x_hat"], cache["gamma"]
    inv = 1 / np.sqrt(cache["var"] + cache["eps"])
    g = dout * gamma
    return inv * (g - g.mean(axis=1, keepdims=True)), (dout * x_hat).sum(0), dout.sum(0)


# ----------------------------------------------------------------------------- group norm, learner style

def gn_forward(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, C // G, H, W)
    mean = xg.mean(axis=(2, 3, 4), keepdims=True)
    var = xg.var(axis=(2, 3, 4), keepdims=True)
    x_hat = ((xg - mean) / np.sqrt(var + eps)).reshape(N, C, H, W)
    out = x_hat * gamma[None, :, None, None] + beta[None, :, None, None]
    return out, (x_hat, var, gamma, G, eps)


def gn_backward(dout, cache):
    x_hat, var, gamma, G, eps = cache
    N, C, H, W = dout.shape
    dgamma = (dout * x_hat).sum(axis=(0, 2, 3))
    dbeta = dout.sum(axis=(0, 2, 3))
    g = (dout * gamma[None, :, None, None]).reshape(N, G, -1)
    xh = x_hat.reshape(N, G, -1)
    M = g.shape[2]
    inv = 1 / np.sqrt(var.reshape(N, G, 1) + eps)
    dx = inv / M * (M * g - g.sum(2, keepdims=True) - xh * (g * xh).sum(2, keepdims=True))
    return dx.reshape(N, C, H, W), dgamma, dbeta


def gn_batch_stats(x, gamma, beta, G, eps=1e-5):
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    var = x.var(axis=(0, 2, 3), keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma.reshape(1, -1, 1, 1) + beta.reshape(1, -1, 1, 1), None


def gn_strided(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, C // G, G, H * W).transpose(0, 2, 1, 3)  # groups of every G-th channel
    x_hat = (xg - xg.mean((2, 3), keepdims=True)) / np.sqrt(xg.var((2, 3), keepdims=True) + eps)
    x_hat = x_hat.transpose(0, 2, 1, 3).reshape(N, C, H, W)
    return x_hat * gamma[None, :, None, None] + beta[None, :, None, None], None


def gn_gamma_per_group(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    x_hat = (xg - xg.mean(2, keepdims=True)) / np.sqrt(xg.var(2, keepdims=True) + eps)
    out = x_hat * gamma[:G, None] + beta[:G, None]
    return out.reshape(N, C, H, W), None


def gn_no_transpose_back(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xt = x.transpose(0, 2, 3, 1).reshape(N, H * W, G, C // G)
    m, v = xt.mean(axis=(1, 3), keepdims=True), xt.var(axis=(1, 3), keepdims=True)
    x_hat = ((xt - m) / np.sqrt(v + eps)).reshape(N, C, H, W)
    return gamma.reshape(1, C, 1, 1) * x_hat + beta.reshape(1, C, 1, 1), None


def gn_eps_outside(x, gamma, beta, G, eps=1e-5):
    N, C, H, W = x.shape
    xg = x.reshape(N, G, -1)
    x_hat = ((xg - xg.mean(-1, keepdims=True)) / (xg.std(-1, keepdims=True) + eps)).reshape(x.shape)
    return x_hat * gamma.reshape(1, C, 1, 1) + beta.reshape(1, C, 1, 1), None


def gn_no_mean_path(dout, cache):
    x_hat, var, gamma, G, eps = cache
    N, C, H, W = dout.shape
    g = (dout * gamma[None, :, None, None]).reshape(N, G, -1)
    xh = x_hat.reshape(N, G, -1)
    inv = 1 / np.sqrt(var.reshape(N, G, 1) + eps)
    dx = inv * (g - xh * (g * xh).mean(2, keepdims=True))
    return dx.reshape(dout.shape), (dout * x_hat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))


def gn_no_var_path(dout, cache):
    x_hat, var, gamma, G, eps = cache
    N, C, H, W = dout.shape
    g = (dout * gamma[None, :, None, None]).reshape(N, G, -1)
    inv = 1 / np.sqrt(var.reshape(N, G, 1) + eps)
    dx = inv * (g - g.mean(2, keepdims=True))
    return dx.reshape(dout.shape), (dout * x_hat).sum(axis=(0, 2, 3)), dout.sum(axis=(0, 2, 3))


# ----------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("hidden", [False, True])
def test_do_right_solutions_pass_visible_and_hidden_cases(hidden):
    assert nf.check_layernorm_forward(ln_forward, hidden).passed
    assert nf.check_layernorm_backward(ln_forward, ln_backward, hidden).passed
    assert nf.check_groupnorm_forward(gn_forward, hidden).passed
    assert nf.check_groupnorm_backward(gn_forward, gn_backward, hidden).passed


@pytest.mark.parametrize("wrong, name", [
    (ln_batch_axis, "statistics over the batch axis (batch norm by accident)"),
    (ln_eps_outside, "eps outside the square root"),
])
def test_is_a_wrong_layernorm_forward_named(wrong, name):
    result = nf.check_layernorm_forward(wrong)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


@pytest.mark.parametrize("wrong, name", [
    (ln_no_mean_path, "dx missing the path through the mean"),
    (ln_no_var_path, "dx missing the path through the variance"),
])
def test_is_a_wrong_layernorm_backward_named(wrong, name):
    result = nf.check_layernorm_backward(ln_forward, wrong)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


@pytest.mark.parametrize("wrong, name", [
    (gn_batch_stats, "statistics over the batch axis (batch norm by accident)"),
    (gn_strided, "groups formed from non-adjacent channels"),
    (gn_gamma_per_group, "gamma and beta per group instead of per channel"),
    (gn_no_transpose_back, "the reshape back done without undoing the grouping"),
    (gn_eps_outside, "eps outside the square root"),
])
def test_is_a_wrong_groupnorm_forward_named(wrong, name):
    result = nf.check_groupnorm_forward(wrong)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


@pytest.mark.parametrize("wrong, name", [
    (gn_no_mean_path, "dx missing the path through the group mean"),
    (gn_no_var_path, "dx missing the path through the group variance"),
])
def test_is_a_wrong_groupnorm_backward_named(wrong, name):
    result = nf.check_groupnorm_backward(gn_forward, wrong)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


def test_is_every_named_mistake_a_mistake_the_reference_does_not_make():
    """Each mistake function must fail its own check (else it could never be told apart)."""
    for mistake in catalogue.mistakes("layernorm_forward"):
        assert nf.check_layernorm_forward(mistake.fn).diagnosis.startswith(mistake.name), mistake.name
    for mistake in catalogue.mistakes("groupnorm_forward"):
        assert not nf.check_groupnorm_forward(mistake.fn).passed, mistake.name
        assert nf.check_groupnorm_forward(mistake.fn).diagnosis.startswith(mistake.name), mistake.name
    for mistakes, cases, ref in [(catalogue.mistakes("layernorm_backward"), nf._ln_cases(False, True), nf._ln_ref_backward),
                                 (catalogue.mistakes("groupnorm_backward"), nf._gn_cases(False, True), nf._gn_ref_backward)]:
        for mistake in mistakes:
            result = nf.check_function("backward", mistake.fn, ref, cases, mistakes, outputs=("dx", "dgamma", "dbeta"))
            assert result.diagnosis.startswith(mistake.name), (mistake.name, result.diagnosis)


def test_is_an_untouched_stub_called_not_attempted():
    def stub(x, gamma, beta, G, eps=1e-5):
        raise NotImplementedError

    assert "not attempted" in nf.check_groupnorm_forward(stub).diagnosis
    def backward_stub(dout, cache):
        raise NotImplementedError

    assert "not attempted" in nf.check_groupnorm_backward(gn_forward, backward_stub).diagnosis


GN_CELL = """from bncourse.checks.norm_family import check_groupnorm_backward
check_groupnorm_backward(groupnorm_forward, groupnorm_backward).assert_passed()
check_groupnorm_backward(groupnorm_forward, groupnorm_backward, hidden=True).assert_passed()"""


def _receipts(fwd, bwd, monkeypatch) -> list:
    from bncourse.checks import replay

    published = []
    monkeypatch.setenv(replay.ENV_FORCE, "1")
    monkeypatch.setattr(replay, "publish", lambda entry: published.append(replay.pack(entry)))
    nf.check_groupnorm_backward(fwd, bwd)
    nf.check_groupnorm_backward(fwd, bwd, hidden=True)
    return published


def test_can_the_grader_rejudge_a_backward_cell_outside_the_kernel(monkeypatch):
    verdicts = grading.replay_cells([
        {"id": "right", "source": GN_CELL, "receipts": _receipts(gn_forward, gn_backward, monkeypatch)},
        {"id": "wrong", "source": GN_CELL, "receipts": _receipts(gn_forward, gn_no_var_path, monkeypatch)},
    ])
    assert verdicts["right"] == ["pass", ""]
    assert verdicts["wrong"][0] == "fail"

"""Do the PyTorch checks pass correct layers, and reject each known mistake by its name?

Each mistake is written here the way a learner would write it (not taken from the checks
module), so these tests fail if a check stops recognizing the mistake in a learner's own code.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bncourse.checks.catalogue import pytorch as module_catalogue
from bncourse import nn as course_nn
from bncourse.checks.pytorch import check_batchnorm1d_module, check_batchnorm2d, check_batchnorm_function
from bncourse.reference.batchnorm import batchnorm_backward, batchnorm_forward, update_running_stats

# ---------------------------------------------------------------------------------------------
# (a) autograd.Function: correct alternatives and learner-style mistakes
# ---------------------------------------------------------------------------------------------


class FnRecompute(torch.autograd.Function):
    """Correct too: saves the tensors and reruns the numpy forward in backward to get a cache."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):
        ctx.save_for_backward(x, gamma, beta)
        ctx.eps = eps
        out, _ = batchnorm_forward(x.detach().cpu().numpy(), gamma.detach().cpu().numpy(),
                                   beta.detach().cpu().numpy(), eps)
        return torch.as_tensor(out, dtype=x.dtype, device=x.device)

    @staticmethod
    def backward(ctx, dout):
        x, gamma, beta = ctx.saved_tensors
        _, cache = batchnorm_forward(*(t.detach().cpu().double().numpy() for t in (x, gamma, beta)), ctx.eps)
        grads = batchnorm_backward(dout.cpu().double().numpy(), cache)
        return tuple(torch.as_tensor(g, dtype=dout.dtype) for g in grads) + (None,)


def _fn(forward_body, backward_body):
    return type("LearnerFn", (torch.autograd.Function,), {
        "forward": staticmethod(forward_body), "backward": staticmethod(backward_body)})


def _fwd_ok(ctx, x, gamma, beta, eps):
    out, cache = batchnorm_forward(x.detach().numpy(), gamma.detach().numpy(), beta.detach().numpy(), eps)
    ctx.cache = cache
    return torch.from_numpy(out)


def _bwd_ok(ctx, dout):
    dx, dgamma, dbeta = batchnorm_backward(dout.numpy(), ctx.cache)
    return torch.from_numpy(dx), torch.from_numpy(dgamma), torch.from_numpy(dbeta), None


def _fwd_no_cache(ctx, x, gamma, beta, eps):
    out, cache = batchnorm_forward(x.detach().numpy(), gamma.detach().numpy(), beta.detach().numpy(), eps)
    return torch.from_numpy(out)


def _fwd_save_cache(ctx, x, gamma, beta, eps):
    out, cache = batchnorm_forward(x.detach().numpy(), gamma.detach().numpy(), beta.detach().numpy(), eps)
    ctx.save_for_backward(cache)
    return torch.from_numpy(out)


def _fwd_numpy_out(ctx, x, gamma, beta, eps):
    out, ctx.cache = batchnorm_forward(x.detach().numpy(), gamma.detach().numpy(), beta.detach().numpy(), eps)
    return out


def _fwd_default_eps(ctx, x, gamma, beta, eps):
    out, ctx.cache = batchnorm_forward(x.detach().numpy(), gamma.detach().numpy(), beta.detach().numpy())
    return torch.from_numpy(out)


def _fwd_float64_out(ctx, x, gamma, beta, eps):
    out, ctx.cache = batchnorm_forward(*(t.detach().double().numpy() for t in (x, gamma, beta)), eps)
    return torch.from_numpy(out)


def _fwd_builtin(ctx, x, gamma, beta, eps):
    ctx.save_for_backward(x, gamma, beta)
    return F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)


def _bwd_three(ctx, dout):
    return _bwd_ok(ctx, dout)[:3]


def _bwd_none_first(ctx, dout):
    return (None,) + _bwd_ok(ctx, dout)[:3]


def _bwd_numpy(ctx, dout):
    return batchnorm_backward(dout.numpy(), ctx.cache) + (None,)


def _bwd_swapped(ctx, dout):
    dx, dgamma, dbeta = batchnorm_backward(dout.numpy(), ctx.cache)
    return torch.from_numpy(dx), torch.from_numpy(dbeta), torch.from_numpy(dgamma), None


def _bwd_dx_through_x_hat_only(ctx, dout):
    c = ctx.cache
    _, dgamma, dbeta = batchnorm_backward(dout.numpy(), c)
    dx = dout.numpy() * c.gamma / np.sqrt(c.var + c.eps)
    return torch.from_numpy(dx), torch.from_numpy(dgamma), torch.from_numpy(dbeta), None


def _bwd_not_implemented(ctx, dout):
    raise NotImplementedError()


def _fwd_not_implemented(ctx, x, gamma, beta, eps):
    raise NotImplementedError()


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("Fn", [FnRecompute, "cache-on-ctx"], ids=["recompute-in-backward", "cache-on-ctx"])
def test_does_a_correct_function_pass_silently(Fn, hidden, capfd):
    Fn = _fn(_fwd_ok, _bwd_ok) if Fn == "cache-on-ctx" else Fn
    result = check_batchnorm_function(Fn, hidden=hidden)
    assert result.passed, str(result)
    assert result.assert_passed() is None
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize(
    "forward, backward, name",
    [
        (_fwd_no_cache, _bwd_ok, "forgot to keep the cache for backward"),
        (_fwd_save_cache, _bwd_ok, "save_for_backward only accepts tensors"),
        (_fwd_ok, _bwd_three, "wrong number of gradients"),
        (_fwd_ok, _bwd_numpy, "backward returned numpy arrays"),
        (_fwd_ok, _bwd_none_first, "in the order of forward's inputs"),
        (_fwd_numpy_out, _bwd_ok, "forward returned a numpy array"),
        (_fwd_default_eps, _bwd_ok, "eps not passed on"),
        (_fwd_ok, _bwd_swapped, "dgamma and dbeta swapped"),
        (_fwd_ok, _bwd_dx_through_x_hat_only, "treats the batch mean and variance as constants"),
        (_fwd_builtin, _bwd_ok, "used torch's own batch norm"),
        (course_nn.BatchNormFunction.forward, course_nn.BatchNormFunction.backward, "existing implementation"),
        (_fwd_float64_out, _bwd_ok, "wrong dtype (out has dtype float64, expected float32"),
        (_fwd_not_implemented, _bwd_not_implemented, "not attempted yet"),
    ],
)
def test_is_each_function_mistake_rejected_by_name(forward, backward, name, capfd):
    result = check_batchnorm_function(_fn(forward, backward))
    assert not result.passed
    assert name in result.diagnosis, result.diagnosis
    with pytest.raises(AssertionError, match=re.escape(name.split("'")[0])):
        result.assert_passed()
    assert name.split("'")[0] in result._repr_html_()
    assert capfd.readouterr().err == ""


def test_does_the_gradcheck_row_fail_when_only_the_gradient_is_off():
    """A dx 5% off fails the comparisons, and the gradcheck row fails on its own too."""

    def bwd_slightly_off(ctx, dout):
        dx, dgamma, dbeta, _ = _bwd_ok(ctx, dout)
        return dx * 1.05, dgamma, dbeta, None

    result = check_batchnorm_function(_fn(_fwd_ok, bwd_slightly_off))
    gradcheck_row = next(c for c in result.cases if "gradcheck" in c.name)
    assert not gradcheck_row.passed and gradcheck_row.kind == "raised" and gradcheck_row.wrong == ("GradcheckError",)


def test_is_an_instance_instead_of_the_class_refused_with_a_hint():
    result = check_batchnorm_function(FnRecompute.apply)
    assert not result.passed and "pass the class itself" in result.diagnosis


# ---------------------------------------------------------------------------------------------
# (c) BatchNorm2d modules: a learner-style implementation whose pieces the mistakes override
# ---------------------------------------------------------------------------------------------


class LearnerBN2d(nn.Module):
    """Correct, written the way a learner might: var_mean, explicit formula, reshape with view."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.make_buffers(num_features)

    def make_buffers(self, c):
        self.register_buffer("running_mean", torch.zeros(c))
        self.register_buffer("running_var", torch.ones(c))

    dims = (0, 2, 3)

    def batch_stats(self, x):
        var, mean = torch.var_mean(x, dim=self.dims, unbiased=False)
        return mean, var

    def update(self, mean, var, n):
        with torch.no_grad():
            self.running_mean[:] = (1 - self.momentum) * self.running_mean + self.momentum * mean
            self.running_var[:] = (1 - self.momentum) * self.running_var + self.momentum * var * n / (n - 1)

    def use_batch_stats(self):
        return self.training

    def forward(self, x):
        n = x.numel() // x.shape[1]
        if self.use_batch_stats():
            mean, var = self.batch_stats(x)
            if self.training:
                self.update(mean, var, n)
            if mean.dim() == 1:
                mean, var = mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)
        else:
            mean, var = self.running_mean.view(1, -1, 1, 1), self.running_var.view(1, -1, 1, 1)
        x_hat = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight.view(1, -1, 1, 1) * x_hat + self.bias.view(1, -1, 1, 1)


class LearnerBN2dPermute(nn.Module):
    """Correct too: (N, C, H, W) -> (N*H*W, C) rows, statistics per column, back again."""

    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0))

    def forward(self, x):
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, c)
        if self.training:
            mean, var = rows.mean(0), rows.var(0, unbiased=False)
            with torch.no_grad():
                self.num_batches_tracked += 1
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean)
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * rows.var(0, unbiased=True))
        else:
            mean, var = self.running_mean, self.running_var
        out = (rows - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias
        return out.reshape(n, h, w, c).permute(0, 3, 1, 2)


class PlainAttributes(LearnerBN2d):
    def make_buffers(self, c):
        self.running_mean = torch.zeros(c)
        self.running_var = torch.ones(c)


class ParameterStats(LearnerBN2d):
    def make_buffers(self, c):
        self.running_mean = nn.Parameter(torch.zeros(c), requires_grad=False)
        self.running_var = nn.Parameter(torch.ones(c), requires_grad=False)


class NeverUpdates(LearnerBN2d):
    def update(self, mean, var, n):
        pass


class UpdatesInEval(LearnerBN2d):
    def forward(self, x):
        if not self.training:
            mean, var = self.batch_stats(x)
            self.update(mean, var, x.numel() // x.shape[1])
        return super().forward(x)


class BiasedRunningVar(LearnerBN2d):
    def update(self, mean, var, n):
        super().update(mean, var * (n - 1) / n, n)


class TorchVarDefault(LearnerBN2d):
    """x.var() without unbiased=False (torch divides by n - 1), then the n / (n - 1) of the instructions."""

    def batch_stats(self, x):
        return x.mean(dim=self.dims), x.var(dim=self.dims)


class NoEpsInEval(LearnerBN2d):
    def forward(self, x):
        if self.training:
            return super().forward(x)
        view = (1, -1, 1, 1)
        x_hat = (x - self.running_mean.view(view)) / self.running_var.view(view).sqrt()
        return self.weight.view(view) * x_hat + self.bias.view(view)


class FlippedMomentum(LearnerBN2d):
    def update(self, mean, var, n):
        with torch.no_grad():
            self.running_mean[:] = self.momentum * self.running_mean + (1 - self.momentum) * mean
            self.running_var[:] = self.momentum * self.running_var + (1 - self.momentum) * var * n / (n - 1)


class StdInRunningVar(LearnerBN2d):
    def update(self, mean, var, n):
        with torch.no_grad():
            self.running_mean[:] = (1 - self.momentum) * self.running_mean + self.momentum * mean
            self.running_var[:] = (1 - self.momentum) * self.running_var + self.momentum * (var * n / (n - 1)).sqrt()


class CorrectionWithImages(LearnerBN2d):
    def forward(self, x):
        self.images = x.shape[0]
        return super().forward(x)

    def update(self, mean, var, n):
        super().update(mean, var * (self.images / (self.images - 1)) / (n / (n - 1)), n)


class ColumnDims(LearnerBN2d):
    """Statistics over dims (0, 1, 2): one mean and variance per column W."""

    def batch_stats(self, x):
        return x.mean(dim=(0, 1, 2), keepdim=True), x.var(dim=(0, 1, 2), keepdim=True, unbiased=False)

    def update(self, mean, var, n):
        pass


class InstanceDims(LearnerBN2d):
    """Statistics per image and channel (dims (2, 3)): instance norm, not batch norm."""

    def batch_stats(self, x):
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), keepdim=True, unbiased=False)
        return mean, var

    def update(self, mean, var, n):
        super().update(mean.mean(dim=(0, 2, 3)), var.mean(dim=(0, 2, 3)), n)


class BatchStatsInEval(LearnerBN2d):
    def use_batch_stats(self):
        return True


class IgnoresTraining(LearnerBN2d):
    def forward(self, x):
        mean, var = self.batch_stats(x)
        self.update(mean, var, x.numel() // x.shape[1])
        x_hat = (x - mean.view(1, -1, 1, 1)) / torch.sqrt(var.view(1, -1, 1, 1) + self.eps)
        return self.weight.view(1, -1, 1, 1) * x_hat + self.bias.view(1, -1, 1, 1)


class NotDetached(LearnerBN2d):
    def update(self, mean, var, n):
        self.running_mean = (1 - self.momentum) * self.running_mean + self.momentum * mean
        self.running_var = (1 - self.momentum) * self.running_var + self.momentum * var * n / (n - 1)


class NoReshapeInEval(LearnerBN2d):
    def forward(self, x):
        if self.training:
            return super().forward(x)
        return (x - self.running_mean) / torch.sqrt(self.running_var + self.eps) * self.weight.view(1, -1, 1, 1)


class UsesTorchBatchNorm(nn.BatchNorm2d):
    pass


class WrapsTorchBatchNorm(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.inner = nn.BatchNorm2d(num_features, eps, momentum)
        self.weight, self.bias = self.inner.weight, self.inner.bias
        self.register_buffer("running_mean", self.inner.running_mean)
        self.register_buffer("running_var", self.inner.running_var)

    def forward(self, x):
        return self.inner(x)


class StudentStub(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        raise NotImplementedError()


class LearnerBN2dEinsumFloat64(LearnerBN2dPermute):
    """Correct too: statistics by einsum in float64, kept as (1, C, 1, 1), cast back to the input's dtype."""

    def forward(self, x):
        c = x.shape[1]
        if self.training:
            x64 = x.double()
            m = x.numel() // c
            mean = torch.einsum("nchw->c", x64).reshape(1, c, 1, 1) / m
            var = torch.einsum("nchw,nchw->c", x64 - mean, x64 - mean).reshape(1, c, 1, 1) / m
            with torch.no_grad():
                self.num_batches_tracked += 1
                self.running_mean.lerp_(mean.reshape(c).to(x.dtype), self.momentum)
                self.running_var.lerp_((var.reshape(c) * m / (m - 1)).to(x.dtype), self.momentum)
            mean, var = mean.to(x.dtype), var.to(x.dtype)
        else:
            mean, var = self.running_mean.reshape(1, c, 1, 1), self.running_var.reshape(1, c, 1, 1)
        x_hat = (x - mean) * torch.rsqrt(var + self.eps)
        return torch.einsum("nchw,c->nchw", x_hat, self.weight) + self.bias.reshape(1, c, 1, 1)


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("cls", [LearnerBN2d, LearnerBN2dPermute, LearnerBN2dEinsumFloat64])
def test_does_a_correct_BatchNorm2d_pass_silently(cls, hidden, capfd):
    result = check_batchnorm2d(cls, hidden=hidden, device="cpu")
    assert result.passed, str(result)
    assert "cases passed" in str(result) and "passed" in result._repr_html_()
    assert capfd.readouterr().err == ""


def test_does_the_check_mention_num_batches_tracked_only_when_it_is_missing():
    assert any("num_batches_tracked" in n for n in check_batchnorm2d(LearnerBN2d, device="cpu").notes)
    assert not any("num_batches_tracked" in n for n in check_batchnorm2d(LearnerBN2dPermute, device="cpu").notes)


@pytest.mark.parametrize(
    "cls, name",
    [
        (PlainAttributes, "forgot to register buffers"),
        (ParameterStats, "is an nn.Parameter"),
        (NeverUpdates, "running statistics not updated"),
        (UpdatesInEval, "running statistics updated in eval mode"),
        (BiasedRunningVar, "biased variance in running_var"),
        (FlippedMomentum, "momentum flipped"),
        (NoEpsInEval, "eps missing in eval mode"),
        (TorchVarDefault, "unbiased variance from torch's var default"),
        (InstanceDims, "statistics over the wrong dimensions"),
        (ColumnDims, "statistics over the wrong dimensions"),
        (StdInRunningVar, "running_var updated with the standard deviation"),
        (CorrectionWithImages, "unbiased correction with n = N images"),
        (BatchStatsInEval, "batch statistics used in eval mode"),
        (IgnoresTraining, "ignores self.training"),
        (NotDetached, "track gradients"),
        (NoReshapeInEval, "reshape them to (1, C, 1, 1)"),
        (UsesTorchBatchNorm, "torch's"),
        (WrapsTorchBatchNorm, "torch's"),
        (course_nn.BatchNorm2d, "handed the work to bncourse.nn.BatchNorm2d"),
        (StudentStub, "not attempted yet"),
    ],
)
def test_is_each_BatchNorm2d_mistake_rejected_by_name(cls, name, capfd):
    result = check_batchnorm2d(cls, device="cpu")
    assert not result.passed
    assert name in result.diagnosis, result.diagnosis
    with pytest.raises(AssertionError):
        result.assert_passed()
    assert capfd.readouterr().err == ""


def test_are_the_visible_and_hidden_cases_able_to_catch_a_hard_coded_momentum():
    """Forgetting to pass momentum on is a bug, not a trick: the learner hears it before the hidden tests."""
    class HardCoded(LearnerBN2d):
        def update(self, mean, var, n):
            self.momentum = 0.1
            super().update(mean, var, n)

    visible = check_batchnorm2d(HardCoded, device="cpu")
    assert not visible.passed and "momentum=0.2" in str(visible)
    assert visible.diagnosis.startswith("momentum argument ignored"), visible.diagnosis
    result = check_batchnorm2d(HardCoded, hidden=True, device="cpu")
    assert not result.passed and "momentum=0.3" in str(result)


# ---------------------------------------------------------------------------------------------
# (b) BatchNorm1d over the learner's Function
# ---------------------------------------------------------------------------------------------


class Learner1d(nn.Module):
    """Correct: the Function in training, numpy-free inference in eval, running stats in torch."""

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
                self.running_mean.lerp_(x.mean(0), self.momentum)
                self.running_var.lerp_(x.var(0, unbiased=True), self.momentum)
            return FnRecompute.apply(x, self.weight, self.bias, self.eps)
        return (x - self.running_mean) / torch.sqrt(self.running_var + self.eps) * self.weight + self.bias


class Learner1dIgnoresTraining(Learner1d):
    def forward(self, x):
        self.train()
        return super().forward(x)


class Learner1dNoUpdate(Learner1d):
    def forward(self, x):
        if self.training:
            return FnRecompute.apply(x, self.weight, self.bias, self.eps)
        return super().forward(x)


class Learner1dReplacesBuffers(Learner1d):
    """Replaces the float32 buffers with float64 tensors from numpy: new tensors instead of the buffers changed in
    place (the contract), and the wrong dtype in float32."""

    def forward(self, x):
        if self.training:
            new_mean, new_var = update_running_stats(x.detach().double().numpy(), self.running_mean.double().numpy(),
                                                     self.running_var.double().numpy(), self.momentum)
            self.running_mean, self.running_var = torch.from_numpy(new_mean), torch.from_numpy(new_var)
            return FnRecompute.apply(x, self.weight, self.bias, self.eps)
        return super().forward(x)


class Learner1dKeepdimFloat64(Learner1d):
    """Correct too: a Function in torch (float64 inside, statistics kept as (1, D)); running statistics from
    float64 sums kept as (1, D), lerp_ into the buffers; eval by einsum."""

    def forward(self, x):
        from wrong_solutions.right_nb02_04 import FunctionTorchKeepdim

        if self.training:
            with torch.no_grad():
                x64 = x.double()
                mean = x64.mean(0, keepdim=True)
                var_u = ((x64 - mean) ** 2).sum(0, keepdim=True) / (x.shape[0] - 1)
                self.running_mean.lerp_(mean[0].to(x.dtype), self.momentum)
                self.running_var.lerp_(var_u[0].to(x.dtype), self.momentum)
            return FunctionTorchKeepdim.apply(x, self.weight, self.bias, self.eps)
        inv = torch.rsqrt(self.running_var + self.eps)
        return torch.einsum("nd,d->nd", x - self.running_mean, inv * self.weight) + self.bias


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("cls", [Learner1d, Learner1dKeepdimFloat64])
def test_does_a_correct_BatchNorm1d_module_pass_silently(cls, hidden, capfd):
    result = check_batchnorm1d_module(cls, hidden=hidden)
    assert result.passed, str(result)
    assert capfd.readouterr().err == ""


@pytest.mark.parametrize("cls, name", [(Learner1dIgnoresTraining, "ignores self.training"),
                                       (Learner1dNoUpdate, "running statistics not updated"),
                                       (Learner1dReplacesBuffers, "replaced by new tensors"),
                                       (course_nn.BatchNorm1dNumpy, "handed the work to bncourse.nn.BatchNorm1dNumpy")])
def test_is_each_BatchNorm1d_module_mistake_rejected_by_name(cls, name):
    result = check_batchnorm1d_module(cls)
    assert not result.passed and name in result.diagnosis, result.diagnosis


def test_does_the_check_restore_torch_batch_norm_afterwards():
    check_batchnorm2d(UsesTorchBatchNorm, device="cpu")
    x = torch.randn(4, 2, 3, 3)
    torch.testing.assert_close(nn.BatchNorm2d(2)(x), F.batch_norm(x, None, None, training=True))


# ---------------------------------------------------------------------------------------------
# The grader's replay (bncourse.checks.replay): receipts recorded in the kernel, re-judged outside
# ---------------------------------------------------------------------------------------------


def _receipts_of(monkeypatch, run) -> list:
    """Run checks as during `nbgrader autograde` and collect the receipts they publish."""
    from bncourse.checks import replay

    captured = []
    monkeypatch.setenv(replay.ENV_FORCE, "1")
    monkeypatch.setattr("IPython.display.display", lambda obj, raw=False: captured.append(obj))
    run()
    return [replay.unpack(o[replay.MIME]) for o in captured if replay.MIME in o]


@pytest.mark.parametrize("check, name, cls, passes", [
    ("check_batchnorm_function", "BatchNormFunction", FnRecompute, True),
    ("check_batchnorm_function", "BatchNormFunction", _fn(_fwd_ok, _bwd_swapped), False),
    ("check_batchnorm1d_module", "BatchNorm1dNumpy", Learner1d, True),
    ("check_batchnorm2d", "BatchNorm2d", LearnerBN2dPermute, True),
    ("check_batchnorm2d", "BatchNorm2d", FlippedMomentum, False),
])
def test_does_the_graders_replay_of_the_test_cell_reach_the_kernels_verdict(monkeypatch, check, name, cls, passes):
    """The test cell re-run outside the kernel, with only the receipts of the learner's outputs."""
    from bncourse.checks import pytorch as checks
    from bncourse.checks.replay import replay_cell

    fn = getattr(checks, check)
    entries = _receipts_of(monkeypatch, lambda: (fn(cls), fn(cls, hidden=True)))
    assert entries, "the checks published no receipts while grading"
    source = f"from bncourse.checks.pytorch import {check}\n{check}({name}).assert_passed()\n" \
             f"{check}({name}, hidden=True).assert_passed()\n"
    monkeypatch.delenv("BNCOURSE_RECEIPTS")
    verdict, reason, *_ = replay_cell(source, entries)
    assert verdict == ("pass" if passes else "fail"), reason


def test_does_the_replay_fail_a_cell_whose_check_was_replaced_in_the_kernel(monkeypatch):
    """A learner who redefines the check in the kernel leaves no receipts: the grader fails the cell."""
    from bncourse.checks.replay import replay_cell

    source = "from bncourse.checks.pytorch import check_batchnorm2d\ncheck_batchnorm2d(BatchNorm2d).assert_passed()\n"
    verdict, *_ = replay_cell(source, [])
    assert verdict == "fail"


@pytest.mark.slow
@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("spatial", [False, True], ids=["BatchNorm1d", "BatchNorm2d"])
def test_is_every_module_mistake_named_as_itself(spatial, hidden):
    """Each registered wrong module, handed in as the learner's, gets its own name, visible and hidden."""
    from bncourse.checks import pytorch as P

    check = (lambda cls: P.check_batchnorm2d(cls, hidden=hidden, device="cpu")) if spatial else \
        (lambda cls: P.check_batchnorm1d_module(cls, hidden=hidden))
    for mistake in module_catalogue.module_mistakes(spatial):
        result = check(mistake.cls)
        assert not result.passed and result.diagnosis.startswith(mistake.name), (mistake.name, result.diagnosis)

"""Red team 8's attempts (2026-12-08) on this stop's defences, as the grader judges them.

The reading (``Program.references`` and ``Rule.judge``, as the re-judging applies them) must follow
every binding of a handed-out function: a def or import inside ``if``/``try`` (R1, broken by this
stop's first change to the reading), a module-level line read from a function whose local has the
same name (R3), a walrus statement, ``global`` set by a called function, a ``match`` capture and an
attribute of ``builtins`` (R4); and it must not refuse an honest notebook for a comparison cell
(``np.testing.assert_allclose(...)``, ``torch.testing.assert_close(...)``: R2, also broken by it).
Notebook 4's BatchNorm2d under ``torch.utils.checkpoint(use_reentrant=True)`` or through a Function
with a backward written by hand (R5) has no second derivative: refused, and named as the notebook's
contract says.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bncourse.checks.delegation import Rule
from bncourse.grading.sources import Program

SETUP3 = "import numpy as np\nfrom bncourse.reference.batchnorm import batchnorm_forward, BatchNormCache\n"
CALL = "def batchnorm_backward(dout, cache):\n    return {f}(cache.xmu, 1, 0)\n"
NB3_RULE = Rule.of({"batchnorm_forward", "batchnorm_backward"})
HIDDEN_BINDINGS = {
    "a def inside if True": "if True:\n    def batchnorm_backward(dout, cache):\n"
                            "        return batchnorm_forward(cache.xmu, 1, 0)\n",
    "an import inside try": "try:\n    from bncourse.reference.batchnorm import batchnorm_forward as _g\n"
                            "except ImportError:\n    pass\n" + CALL.format(f="_g"),
    "a local shadowing a module-level line": "_g = batchnorm_forward\ndef batchnorm_backward(dout, cache):\n"
                                             "    batchnorm_forward = _g\n    return batchnorm_forward(cache.xmu, 1, 0)\n",
    "a walrus statement": "(_g := batchnorm_forward)\n" + CALL.format(f="_g"),
    "global set by a called function": "def _bind():\n    global _g\n    _g = batchnorm_forward\n_bind()\n"
                                       + CALL.format(f="_g"),
    "a match capture": "match batchnorm_forward:\n    case _g:\n        pass\n" + CALL.format(f="_g"),
    "an attribute of builtins": "import builtins\nbuiltins.bn_given = batchnorm_forward\n" + CALL.format(f="bn_given"),
    "setattr on builtins": "import builtins\nsetattr(builtins, 'bn_given', batchnorm_forward)\n"
                           + CALL.format(f="bn_given"),
}


@pytest.mark.parametrize("binding", HIDDEN_BINDINGS)
def test_is_the_handed_out_forward_bound_by_each_statement_refused(binding):
    verdict = NB3_RULE.judge(Program([SETUP3, HIDDEN_BINDINGS[binding]]).references(["batchnorm_backward"]))
    assert verdict.endswith(".batchnorm_forward") or verdict.startswith("code the grader cannot read"), verdict


HONEST3 = ("def batchnorm_backward(dout, cache):\n    N = dout.shape[0]\n    dbeta = np.sum(dout, axis=0)\n"
           "    dgamma = np.sum(dout * cache.x_hat, axis=0)\n"
           "    return (cache.gamma * cache.inv_std / N) * (N * dout - dbeta - cache.x_hat * dgamma), dgamma, dbeta\n")
COMPARISON3 = ("_, cache_s = batchnorm_forward(np.ones((4, 3)), np.ones(3), np.zeros(3))\n"
               "np.testing.assert_allclose(batchnorm_backward(np.ones((4, 3)), cache_s)[0], 0)\n")
HONEST4 = ("import torch\nfrom torch import nn\nclass BatchNorm2d(nn.Module):\n    def __init__(self, c):\n"
           "        super().__init__()\n        self.weight = nn.Parameter(torch.ones(c))\n")
COMPARISON4 = "x = torch.randn(2, 3, 4, 4)\ntorch.testing.assert_close(BatchNorm2d(3)(x), nn.BatchNorm2d(3)(x))\n"


def test_does_a_comparison_cell_beside_an_honest_backward_stay_clear():
    assert NB3_RULE.judge(Program([SETUP3, HONEST3, COMPARISON3]).references(["batchnorm_backward"])) == ""


def test_does_a_comparison_cell_beside_an_honest_batchnorm2d_stay_clear():
    rule = Rule.of({"batchnorm_forward", "batchnorm_backward", "update_running_stats"}, "batch_norm")
    assert rule.judge(Program([HONEST4, COMPARISON4]).references(["BatchNorm2d"])) == ""


class _Layer(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def normalize(self, x, w, b):
        s = (1, -1, 1, 1)
        m, v = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
        return (x - m) / torch.sqrt(v + self.eps) * w.view(s) + b.view(s)

    def forward(self, x):
        s = (1, -1, 1, 1)
        if not self.training:
            return ((x - self.running_mean.view(s)) / torch.sqrt(self.running_var.view(s) + self.eps)
                    * self.weight.view(s) + self.bias.view(s))
        n = x.numel() // x.shape[1]
        with torch.no_grad():
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * x.mean((0, 2, 3)))
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * x.var((0, 2, 3), unbiased=False) * n / (n - 1))
        return self.train_forward(x)

    def train_forward(self, x):
        return self.normalize(x, self.weight, self.bias)


class _Checkpointed(_Layer):
    def train_forward(self, x):
        from torch.utils.checkpoint import checkpoint

        return checkpoint(self.normalize, x, self.weight, self.bias, use_reentrant=True)


class _HandWritten(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, w, b, eps):
        m, v = x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), unbiased=False, keepdim=True)
        invstd = torch.rsqrt(v + eps)
        x_hat = (x - m) * invstd
        ctx.save_for_backward(x_hat, invstd, w)
        return x_hat * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)

    @staticmethod
    def backward(ctx, dy):
        x_hat, invstd, w = ctx.saved_tensors
        n = dy.numel() // dy.shape[1]
        db, dw = dy.sum((0, 2, 3)), (dy * x_hat).sum((0, 2, 3))
        dx = (w.view(1, -1, 1, 1) * invstd / n) * (n * dy - db.view(1, -1, 1, 1) - x_hat * dw.view(1, -1, 1, 1))
        return dx, dw, db, None


class _ThroughHandWritten(_Layer):
    def train_forward(self, x):
        return _HandWritten.apply(x, self.weight, self.bias, self.eps)


def test_does_a_layer_autograd_traces_pass():
    from bncourse.checks.pytorch import check_batchnorm2d

    assert check_batchnorm2d(_Layer, hidden=True, device="cpu").passed


@pytest.mark.parametrize("cls", [_Checkpointed, _ThroughHandWritten], ids=["reentrant checkpoint", "hand-written"])
def test_is_a_layer_without_a_second_derivative_named_as_the_contract_says(cls):
    from bncourse.checks.pytorch import check_batchnorm2d

    result = check_batchnorm2d(cls, hidden=True, device="cpu")
    assert not result.passed and ("autograd cannot differentiate it again" in result.diagnosis
                                  or "backward written by hand" in result.diagnosis), result.diagnosis

"""Red team 6's attempts on this stop's defences, as the grader judges them.

R1: the handed-out ``batchnorm_forward`` (notebook 3) or the numpy reference (notebook 4's BatchNorm2d)
fetched through another spelling of ``sys.modules`` or through ``gc``, then called in a worker thread
(where the kernel's watch does not look): the grader's reading of the source must call it code it
cannot read, which scores 0 (``Rule.judge`` is what the re-judging applies to ``Program.references``).
R2: a correct ``fold_model`` returned as TorchScript must pass; a frozen one is named.
"""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from bncourse.checks import delegation
from bncourse.checks.folding import check_fold_model
from bncourse.grading.sources import Program

GIVEN = ["from bncourse.reference.batchnorm import batchnorm_forward, BatchNormCache"]
RULE = delegation.Rule.of({"batchnorm_backward", "batchnorm_forward"}, "normalization")
ROUTES = {
    "os.sys.modules": "import os\ndef batchnorm_backward(d, c):\n"
                      "    return os.sys.modules['bncourse.reference.batchnorm'].batchnorm_forward",
    "torch.sys.modules": "import torch\ndef batchnorm_backward(d, c):\n"
                         "    return torch.sys.modules['bncourse.reference.batchnorm'].batchnorm_forward",
    "from sys import modules": "from sys import modules as M\ndef batchnorm_backward(d, c):\n"
                               "    return M['bncourse.reference.batchnorm'].batchnorm_forward",
    "the cache's own module": "import os\ndef batchnorm_backward(d, c):\n"
                              "    m = os.sys.modules[type(c).__module__]\n    return m.batchnorm_forward",
    "gc.get_objects": "import gc\ndef batchnorm_backward(d, c):\n"
                      "    return [o for o in gc.get_objects() if getattr(o, '__name__', '') == 'batchnorm_' + 'forward'][0]",
    "a worker thread": "import os\nfrom concurrent.futures import ThreadPoolExecutor\n_POOL = ThreadPoolExecutor(1)\n"
                       "def batchnorm_backward(d, c):\n    mod = os.sys.modules['bncourse.reference.' + 'batchnorm']\n"
                       "    return _POOL.submit(lambda: getattr(mod, 'batchnorm_' + 'forward')).result()",
}
HONEST = ("import numpy as np\ndef batchnorm_backward(dout, cache):\n    N = dout.shape[0]\n"
          "    dbeta = dout.sum(axis=0)\n    dgamma = (dout * cache.x_hat).sum(axis=0)\n"
          "    dx = cache.gamma * cache.inv_std / N * (N * dout - dbeta - cache.x_hat * dgamma)\n"
          "    return dx, dgamma, dbeta")


@pytest.mark.parametrize("route", ROUTES)
def test_does_a_hand_over_through_the_interpreters_registries_earn_nothing(route):
    verdict = RULE.judge(Program([ROUTES[route]], GIVEN).references(["batchnorm_backward"]))
    assert verdict.startswith("code the grader cannot read"), (route, verdict)


def test_does_an_honest_backward_stay_clear_of_that_rule():
    assert RULE.judge(Program([HONEST], GIVEN).references(["batchnorm_backward"])) == ""


def _fold(layer, bn):
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
        folded = copy.deepcopy(layer)
        folded.weight = nn.Parameter(layer.weight * scale.reshape(-1, *[1] * (layer.weight.dim() - 1)))
        folded.bias = nn.Parameter(scale * (bias - bn.running_mean) + bn.bias)
    return folded


def _fold_model(model):
    folded = copy.deepcopy(model).eval()
    for block in folded.modules():
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    block[i], block[i + 1] = _fold(block[i], block[i + 1]), nn.Identity()
    return folded


def test_does_a_correct_fold_returned_as_torchscript_pass():
    result = check_fold_model(lambda model: torch.jit.script(_fold_model(model)))
    assert result.passed, str(result)


def test_is_a_frozen_torchscript_fold_told_to_return_the_module_itself():
    result = check_fold_model(lambda model: torch.jit.freeze(torch.jit.script(_fold_model(model))))
    assert not result.passed
    assert "no Conv2d or Linear layer could be read" in str(result)

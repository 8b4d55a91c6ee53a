"""Is an exercise handed to the course's own implementation caught, in the kernel and from the source?

The kernel side: ``check_function`` watches the calls the learner's function makes. The grader
side: ``bncourse.grading.sources`` reads the submission, and ``delegation.Rule`` judges what it
found; the grader's re-judging (``replay``) uses only that reading and the receipts.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest

from bncourse.checks import delegation, replay
from bncourse.checks.backward import check_spatial_batchnorm_backward, check_spatial_batchnorm_forward
from bncourse.checks.figure1 import check_sigmoid_input_percentiles
from bncourse.checks.forward import check_batchnorm_forward
from bncourse.checks.normalize import check_standardize
from bncourse.grading.sources import Program
from bncourse.reference import batchnorm as refbn
from bncourse.reference import normalize as refnorm


def _standardize_own(X_train, X_test):
    m, s = X_train.mean(0), X_train.std(0)
    return (X_train - m) / s, (X_test - m) / s


def _wrapper(X_train, X_test):
    return refnorm.standardize(X_train, X_test)


def _through_importlib(X_train, X_test):
    return importlib.import_module("bncourse.reference.normalize").standardize(X_train, X_test)


def _through_exec(X_train, X_test):
    space = {}
    exec("from bncourse.reference.normalize import standardize as s", space)  # noqa: S102
    return space["s"](X_train, X_test)


@pytest.mark.parametrize("fn", [refnorm.standardize, _wrapper, _through_importlib, _through_exec],
                         ids=["the-reference-itself", "wrapper", "importlib", "exec"])
def test_does_the_kernel_check_give_zero_to_a_function_that_calls_the_reference(fn):
    result = check_standardize(fn)
    assert not result.passed
    assert {c.kind for c in result.cases} == {"delegated"}
    assert result.diagnosis.startswith(delegation.HINT) and "bncourse.reference.normalize.standardize" in result.diagnosis


def test_does_a_numpy_forward_that_calls_torchs_batch_norm_get_zero():
    def via_torch(x, gamma, beta, eps=1e-5):
        import torch
        import torch.nn.functional as F

        out = F.batch_norm(torch.from_numpy(np.ascontiguousarray(x)), None, None, torch.from_numpy(gamma),
                           torch.from_numpy(beta), training=True, eps=eps)
        return out.numpy(), None

    result = check_batchnorm_forward(via_torch)
    assert not result.passed and {c.kind for c in result.cases} == {"delegated"}, str(result)


def test_does_reusing_a_building_block_with_another_name_stay_allowed():
    """Notebook 3 hands out the (N, D) forward; the spatial forward may build on it."""
    def spatial_forward(x, gamma, beta, eps=1e-5):
        n, c, h, w = x.shape
        out, cache = refbn.batchnorm_forward(x.transpose(0, 2, 3, 1).reshape(-1, c), gamma, beta, eps)
        return out.reshape(n, h, w, c).transpose(0, 3, 1, 2), (cache, x.shape)

    assert check_spatial_batchnorm_forward(spatial_forward).passed


def test_does_chaining_the_courses_spatial_pair_count_as_delegation():
    result = check_spatial_batchnorm_backward(refbn.spatial_batchnorm_forward, refbn.spatial_batchnorm_backward)
    assert not result.passed and {c.kind for c in result.cases} == {"delegated"}


def test_does_the_percentile_exercise_forbid_the_plotting_helper_it_is_checked_against():
    from bncourse.plots import percentile_bands

    assert not check_sigmoid_input_percentiles(lambda r: percentile_bands(r)).passed
    assert check_sigmoid_input_percentiles(lambda r: np.percentile(r, [15, 50, 85], axis=1).T).passed


# ---------------------------------------------------------------------------------------------
# The grader's reading of the source
# ---------------------------------------------------------------------------------------------

RULE = delegation.Rule.of({"standardize"})
SETUP = "import numpy as np\nfrom bncourse.runtime import pick\n"


@pytest.mark.parametrize("learner", [
    "from bncourse.reference.normalize import standardize as s\ndef standardize(a, b):\n    return s(a, b)\n",
    "import bncourse.reference.normalize as r\ndef standardize(a, b):\n    return r.standardize(a, b)\n",
    "def standardize(a, b):\n    import bncourse\n    return bncourse.reference.normalize.standardize(a, b)\n",
    "import importlib\ndef standardize(a, b):\n    return importlib.import_module('bncourse.reference.normalize').standardize(a, b)\n",
    "def standardize(a, b):\n    m = __import__('bncourse.reference.normalize', fromlist=['x'])\n    return m.standardize(a, b)\n",
    "exec('from bncourse.reference.normalize import standardize as s')\ndef standardize(a, b):\n    return s(a, b)\n",
    "def helper(a, b):\n    from bncourse.reference import normalize\n    return normalize.standardize(a, b)\n"
    "def standardize(a, b):\n    return helper(a, b)\n",
    "from bncourse.reference.normalize import *\n",
    "import bncourse.reference.normalize as r\nstandardize = r.standardize\n",
    "import bncourse.reference.normalize as r\ndef standardize(a, b):\n    return getattr(r, 'standard' + 'ize')(a, b)\n",
    "def standardize(a, b):\n    return eval(''.join(['s', 'td']))(a, b)\n",
], ids=["from-import", "module-attribute", "import-inside", "importlib", "__import__", "exec-constant",
        "through-a-helper", "star-import", "assigned", "computed-getattr", "computed-eval"])
def test_does_the_graders_reading_find_each_way_of_reaching_the_reference(learner):
    refs = Program([SETUP, learner]).references({"standardize"})
    assert RULE.judge(refs), refs


def test_does_an_honest_solution_read_clean_even_next_to_the_handouts():
    learner = ("def standardize(a, b):\n    m, s = np.mean(a, 0), a.std(0)\n    return (a - m) / s, (b - m) / s\n"
               "def scratch():\n    from bncourse.reference.normalize import standardize\n    return standardize\n")
    refs = Program([SETUP, learner], ["from bncourse.reference.normalize import min_max_scale"]).references(
        {"standardize"})
    assert RULE.judge(refs) == "", refs


def test_does_a_subclass_of_the_courses_module_read_as_delegation():
    learner = "from bncourse.nn import BatchNorm2d as B\nclass BatchNorm2d(B):\n    pass\n"
    refs = Program([learner]).references({"BatchNorm2d"})
    assert delegation.Rule.of({"BatchNorm2d"}, "batch_norm").judge(refs) == "bncourse.nn.BatchNorm2d"


def test_does_torchs_batch_norm_in_a_torch_module_read_as_delegation_but_nn_module_not():
    learner = ("import torch.nn.functional as F\nfrom torch import nn\nclass BatchNorm2d(nn.Module):\n"
               "    def forward(self, x):\n        return F.batch_norm(x, None, None, training=True)\n")
    rule = delegation.Rule.of({"BatchNorm2d"}, "batch_norm")
    assert rule.judge(Program([learner]).references({"BatchNorm2d"})) == "torch.nn.functional.batch_norm"
    honest = "from torch import nn\nclass BatchNorm2d(nn.Module):\n    def forward(self, x):\n        return x\n"
    assert rule.judge(Program([honest]).references({"BatchNorm2d"})) == ""


def test_does_the_replay_judge_delegation_from_the_source_not_from_the_kernels_receipts(monkeypatch):
    """A kernel made to record the reference's outputs as the learner's (a clean receipt) still scores 0."""
    monkeypatch.setenv(replay.ENV_FORCE, "1")
    published = []
    monkeypatch.setattr(replay, "publish", lambda entry: published.append(replay.pack(entry)))
    monkeypatch.setattr(delegation.Watch, "__enter__", lambda self: self)  # the kernel's watch, switched off
    cell = "from bncourse.checks.normalize import check_standardize\ncheck_standardize(standardize).assert_passed()\n"
    exec(cell, {"standardize": _wrapper})  # noqa: S102 - the kernel: passes, receipts recorded
    entries = [replay.unpack(b) for b in published]
    assert replay.replay_cell(cell, entries, []) == ("pass", "")  # without the source reading: fooled
    verdict, reason = replay.replay_cell(cell, entries, ["bncourse.reference.normalize.standardize"])
    assert verdict == "delegated" and "bncourse.reference.normalize.standardize" in reason


def test_does_reading_a_functions_own_locals_stay_honest():
    """`debug = dict(locals())` inside an honest function is no hand-over (red team, 2026-12-07: refused as
    'handed to the course's own implementation'); locals() at module level, which can bind names, still counts."""
    from bncourse.grading.sources import Program

    honest = ("import numpy as np\n"
              "def standardize(X_train, X_test):\n"
              "    mean, std = X_train.mean(0), X_train.std(0)\n"
              "    debug = dict(locals())\n"
              "    return (X_train - mean) / std, (X_test - mean) / std\n")
    assert not any(r.startswith("<dynamic") for r in Program([honest]).references(["standardize"]))
    sneaky = honest.replace("    debug = dict(locals())\n", "") + "locals()['helper'] = 1\n"
    sneaky = sneaky.replace("return (X_train", "return helper, (X_train")
    assert any(r.startswith("<dynamic") for r in Program([sneaky]).references(["standardize"]))

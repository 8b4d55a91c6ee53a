"""Red team 7's attempts (2026-12-08), as the grader judges them.

R1: the handed-out ``batchnorm_forward`` (notebook 3's finite differences) or the numpy reference
(notebook 4's BatchNorm2d) reached by routes the grader's reading did not follow: a function's
``__globals__``, a traceback's ``tb_frame.f_globals``, ``import __main__``, a dict the cell fills at
module level (``_GIVEN.update(...)``), and the release's stub kept while ``__main__.name = cheat``
rebinds the name the test cell calls. Each must be code the grader cannot read, or a forbidden
name (``Rule.judge`` on ``Program.references``, as the re-judging applies it). Notebook 4's layer is
refused by value too (``test_attacks_redteam5.py``). R4 (a rank handed the whole batch) is in
``test_checks_sync_batchnorm.py``; R2 and R3 (the check's kernel-side observers rebound or evaded in
notebooks 8 and 10) are open: docs/instructors.md, section 1b.
"""

from __future__ import annotations

import pytest

from bncourse.checks import delegation
from bncourse.grading.sources import Program

GIVEN = ["from bncourse.reference.batchnorm import batchnorm_forward, BatchNormCache"]
RULE = delegation.Rule.of({"batchnorm_backward", "batchnorm_forward"}, "normalization")
CALL = "\ndef batchnorm_backward(d, c):\n    return _given('batchnorm_' + 'forward', d)\n"
ROUTES = {
    "a function's __globals__": "def _given(name, *args):\n    return _given.__globals__[name](*args)\n",
    "a traceback's frame": "def _given(name, *args):\n    try:\n        raise KeyError(name)\n"
                           "    except KeyError as exc:\n        space = exc.__traceback__.tb_frame.f_globals\n"
                           "    return space[name](*args)\n",
    "import __main__": "def _given(name, *args):\n    import __main__\n    return __main__.batchnorm_forward(*args)\n",
    "a dict filled at module level": "import sys\n_GIVEN = {}\n_GIVEN.update(batchnorm_forward=batchnorm_forward)\n"
                                     "def _given(name, *args):\n    sys.setprofile(None)\n    return _GIVEN[name](*args)\n",
    "an item set at module level": "_GIVEN = {}\n_GIVEN['f'] = batchnorm_forward\n"
                                   "def _given(name, *args):\n    return _GIVEN['f'](*args)\n",
}
STUB = "def batchnorm_backward(dout, cache):\n    raise NotImplementedError\n"
SHADOW = (STUB + "def _cheat(dout, cache):\n    return batchnorm_forward(dout, cache.gamma, cache.gamma, 1e-5)\n"
          "import __main__\n__main__.batchnorm_backward = _cheat\n")
SHADOW_ALIAS = (STUB + "def _cheat(dout, cache):\n    return batchnorm_forward(dout, cache.gamma, cache.gamma, 1e-5)\n"
                "import __main__ as here\nhere.batchnorm_backward = _cheat\n")
HONEST = ("import numpy as np\nSHAPES = {}\nSHAPES.update(n=0)\n"
          "def batchnorm_backward(dout, cache):\n    N = dout.shape[0]\n"
          "    dbeta = dout.sum(axis=0)\n    dgamma = (dout * cache.x_hat).sum(axis=0)\n"
          "    dx = cache.gamma * cache.inv_std / N * (N * dout - dbeta - cache.x_hat * dgamma)\n"
          "    return dx, dgamma, dbeta")


def _verdict(source: str) -> str:
    return RULE.judge(Program([source], GIVEN).references(["batchnorm_backward"]))


@pytest.mark.parametrize("route", ROUTES)
def test_is_the_handed_out_forward_reached_by_each_route_refused(route):
    verdict = _verdict(ROUTES[route] + CALL)
    assert verdict.startswith("code the grader cannot read") or verdict.endswith(".batchnorm_forward"), verdict


@pytest.mark.parametrize("source", [SHADOW, SHADOW_ALIAS], ids=["__main__", "__main__ as an alias"])
def test_does_the_reading_follow_the_function_a_stub_was_rebound_to(source):
    """The test cell calls ``batchnorm_backward``; the kernel runs ``_cheat``: the reading must read it."""
    assert _verdict(source) != ""


def test_does_an_honest_backward_beside_a_dict_filled_at_module_level_stay_clear():
    assert _verdict(HONEST) == ""

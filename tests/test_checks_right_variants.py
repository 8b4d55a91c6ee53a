"""Does every exercise of notebooks 2-4 and 7-10 pass its right solutions written another way?

Other axes order, einsum, float64 accumulation and statistics kept with keepdims: the contracts
allow them, so no check may refuse them. The variants live in ``tests/wrong_solutions/``
(``right_nb02_04``, and each notebook's ``RIGHT`` list for 7-10; notebook 8's start process groups
and run in test_checks_sync_batchnorm); notebook 4's module variants are in test_checks_pytorch.
"""

from __future__ import annotations

import importlib

import pytest

from bncourse.checks import catalogue
from wrong_solutions import nb07, nb08, nb09, nb10, right_nb02_04

NOTEBOOKS_2_TO_4 = ["batchnorm_forward", "update_running_stats", "batchnorm_inference", "batchnorm_backward",
                    "spatial_batchnorm_forward", "spatial_batchnorm_backward", "BatchNormFunction",
                    "BatchNorm1dNumpy", "BatchNorm2d"]


def _run(check_name: str, solution):
    module, name = check_name.split(".")
    check = getattr(importlib.import_module(f"bncourse.checks.{module}"), name)
    kwargs = {"device": "cpu"} if name == "check_batchnorm2d" else {}
    return check(*solution, **kwargs) if isinstance(solution, tuple) else check(solution, **kwargs)


@pytest.mark.parametrize("exercise, check_name, solution", right_nb02_04.RIGHT, ids=[r[0] for r in right_nb02_04.RIGHT])
def test_does_a_right_variant_of_notebooks_2_to_4_pass(exercise, check_name, solution):
    result = _run(check_name, solution)
    assert result.passed, str(result)


def test_has_every_exercise_of_notebooks_2_to_4_and_7_to_10_a_right_variant():
    from test_checks_pytorch import Learner1dKeepdimFloat64, LearnerBN2dEinsumFloat64  # noqa: F401 (they exist)

    covered = {r[0] for r in right_nb02_04.RIGHT} | {r[0] for m in (nb07, nb08, nb09, nb10) for r in m.RIGHT}
    covered |= {"BatchNorm1dNumpy", "BatchNorm2d"}  # the module variants sit next to the modules they vary
    newer = [e for e in catalogue.exercises() if catalogue._WHERE[e] in
             ("what_bn_does", "sync_batchnorm", "norm_family", "folding")]
    missing = [e for e in NOTEBOOKS_2_TO_4 + newer if e not in covered]
    assert not missing, missing

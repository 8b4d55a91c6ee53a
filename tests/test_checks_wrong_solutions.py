"""Do the checks of notebooks 2, 3, 7, 9 and 10 reject every learner-style wrong solution, name its mistake,
and pass every right variant (einsum, float64 inside, keepdim statistics, an FX-based fold)?

The solutions live in ``tests/wrong_solutions/`` (notebook 8's too: its checks start process
groups, so they are measured by ``python -m tests.wrong_solutions.measure`` rather than here).
"""

from __future__ import annotations

import pytest

from wrong_solutions import measure, nb02_03, nb07, nb09, nb10

WRONG = [w for module in (nb02_03, nb07, nb09, nb10) for w in module.WRONG]
RIGHT = [r for module in (nb02_03, nb07, nb09, nb10) for r in module.RIGHT]


def _id(fn) -> str:
    return (fn[1] if isinstance(fn, tuple) else fn).__name__


@pytest.mark.parametrize("exercise, words, fn", WRONG, ids=[_id(fn) for _, _, fn in WRONG])
def test_is_a_learner_style_wrong_solution_rejected_and_named(exercise, words, fn):
    result = measure.check(exercise, fn)
    assert not result.passed, f"{exercise}: {_id(fn)} passed"
    assert measure.named(result, words), f"{exercise}: {_id(fn)} not named by {words}: {result.diagnosis}"


@pytest.mark.parametrize("exercise, fn", RIGHT, ids=[_id(fn) for _, fn in RIGHT])
def test_does_a_right_variant_pass(exercise, fn):
    result = measure.check(exercise, fn)
    assert result.passed, result.message

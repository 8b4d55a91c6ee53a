"""A few claim checks at their fast sizes: do the verdicts come out as the mathematics says?

The demonstrations here are one computation each (no seeds, no spread)."""

from __future__ import annotations

import pytest

from bncourse.experiments.invariance import scale_invariance
from bncourse.experiments.misstatements import dropout_rate, shuffled_labels

pytestmark = pytest.mark.slow


def test_is_scale_invariance_a_demonstration_held_with_batch_norm_and_not_without():
    demo = scale_invariance()
    assert demo.kind == "demonstration" and demo.verdict == "held" and demo.seeds == []
    assert demo.facts["output relative change, no norm"] > 1.0


def test_does_shuffling_labels_leave_batch_norm_untouched_but_change_the_gradients():
    demo = shuffled_labels()
    assert demo.kind == "demonstration" and demo.verdict == "contradicted"  # the claim "batch norm is supervised"
    assert demo.facts["max change of the first layer's weight gradient"] > 0


def test_is_the_dropout_rate_the_same_with_batch_norm():
    demo = dropout_rate()
    assert demo.verdict == "contradicted"
    assert abs(demo.facts["fraction dropped, with batch norm"] - 0.5) < 0.02


def test_is_eval_mode_determinism_a_demonstration_and_training_mode_not_deterministic():
    from bncourse.experiments.layer import eval_determinism

    demo = eval_determinism()
    assert demo.kind == "demonstration" and demo.verdict == "held"
    assert demo.facts["largest std of a class probability over 5 sets of batch-mates, training mode"] > 1e-3

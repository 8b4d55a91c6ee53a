"""A few claim experiments at their fast sizes: do the verdicts come out as the mathematics says?

Each experiment here is a demonstration whose answer does not depend on training luck."""

from __future__ import annotations

import pytest

from bncourse.experiments.invariance import scale_invariance
from bncourse.experiments.misstatements import dropout_rate, shuffled_labels

pytestmark = pytest.mark.slow


def test_is_scale_invariance_held_with_batch_norm_and_not_without():
    r = scale_invariance(seeds=[0, 1, 2], progress=False)
    assert r.verdict == "held"
    assert min(r.values("no norm", "output_rel_change")) > 1.0


def test_does_shuffling_labels_leave_batch_norm_untouched_but_change_the_gradients():
    r = shuffled_labels(seeds=[0, 1, 2], progress=False)
    assert r.verdict == "contradicted"  # the claim "batch norm is supervised"
    assert min(r.values("shuffled labels", "weight_gradient_change")) > 0


def test_is_the_dropout_rate_the_same_with_batch_norm():
    r = dropout_rate(seeds=[0, 1, 2], progress=False)
    assert r.verdict == "contradicted"
    assert all(abs(v - 0.5) < 0.02 for v in r.values("with batch norm", "dropped_fraction"))

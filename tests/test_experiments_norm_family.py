"""Do the norm-family experiments' parts do what they claim (data, masked batch norm, tables)?

The experiments themselves run in notebook 9 (under nbval in fast mode); these are the parts.
"""

from __future__ import annotations

import pytest
import torch

from bncourse.experiments import norm_family as E
from bncourse.experiments.harness import ExperimentResult, Better


def test_are_padded_sequences_zero_after_their_length():
    X, lengths, y = E.make_sequences(50, seed=0, T=12)
    assert X.shape == (50, 12, 4) and lengths.min() >= 4 and lengths.max() <= 12
    for i in range(50):
        assert torch.all(X[i, lengths[i]:] == 0) and torch.all(X[i, :lengths[i]] != 0)
    assert set(y.tolist()) == {0, 1}


def test_does_masked_batch_norm_ignore_the_padding():
    torch.manual_seed(0)
    h = torch.randn(4, 6, 3) * 2 + 1
    mask = torch.tensor([[1] * 6, [1] * 3 + [0] * 3, [1] * 2 + [0] * 4, [1] * 5 + [0]], dtype=torch.bool)
    bn = E.MaskedBatchNorm(3)
    out = bn(h, mask)
    valid = h[mask]
    expected = (valid - valid.mean(0)) / torch.sqrt(valid.var(0, unbiased=False) + 1e-5)
    assert torch.allclose(out[mask], expected, atol=1e-6)
    h2 = h.clone()
    h2[~mask] = 1e3  # whatever sits in the padding changes nothing
    assert torch.allclose(E.MaskedBatchNorm(3)(h2, mask)[mask], out[mask], atol=1e-6)
    assert torch.allclose(bn.running_mean, 0.1 * valid.mean(0), atol=1e-6)


@pytest.mark.parametrize("norm", ["bn_padded", "bn_masked", "ln", "none"])
def test_does_the_sequence_net_give_two_logits_per_sequence(norm):
    X, lengths, _ = E.make_sequences(8, seed=1)
    mask = torch.arange(X.shape[1])[None, :] < lengths[:, None]
    assert E.SequenceNet(norm)(X, mask).shape == (8, 2)


def test_is_an_unknown_sequence_norm_refused():
    with pytest.raises(ValueError, match="got 'batch'"):
        E.SequenceNet("batch")


def test_are_harder_digits_the_digits_shapes_but_different_pixels():
    from bncourse.data import load_digits

    plain, hard = load_digits(), E.harder_digits()
    assert hard.X_train.shape == plain.X_train.shape and torch.equal(hard.y_test, plain.y_test)
    assert (hard.X_train - plain.X_train).abs().mean() > 0.3


def test_does_the_accuracy_table_group_arms_by_norm_and_batch_size():
    metrics = {f"{n}@{b}": [{"test_acc": 0.5 + 0.01 * b}] * 3 for n in ("batch", "group") for b in (2, 32)}
    result = ExperimentResult("t", "", list(metrics), [0, 1, 2], metrics, {a: [{}] * 3 for a in metrics},
                              [Better("test_acc", "batch@32", "batch@2")], 0.0)
    table = E.accuracy_table(result)
    assert set(table) == {"batch", "group"} and table["group"][32].mean == pytest.approx(0.82)

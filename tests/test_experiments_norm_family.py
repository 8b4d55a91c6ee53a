"""Do the norm-family experiments' parts do what they claim (data, masked batch norm, fair small batches)?

The experiments themselves run in notebook 9 (under nbval in fast mode); these are the parts, and
one tiny small-batch run (a few seconds).
"""

from __future__ import annotations

import pytest
import torch

from bncourse.experiments import norm_family as E
from bncourse.experiments import small_batches as S


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


# --- small batches (bncourse.experiments.small_batches) ----------------------------------------


@pytest.fixture(scope="module")
def decoy_test_run():
    """A tiny fixed-step run on a task whose test split is the validation images labelled with what
    the barely trained network (the grid's smallest rate, batch norm, batch 32, the tuning seed)
    predicts: on that test split the smallest rate scores near 100%, so a rate chosen on the test
    split would be the smallest one, and one chosen on the validation split the one that learns."""
    from bncourse.experiments.common import Task, fit

    t = S.small_batch_task(n_train=200)
    tiny, tuning_seed = S.lr_grid(32, factors=(1e-4, 1.0))[0], 1000
    torch.manual_seed(tuning_seed)
    barely = S._build("batch")()
    fit(barely, t, steps=40, lr=tiny, batch_size=32, seed=tuning_seed)
    with torch.no_grad():
        decoy = barely.eval()(t.X_val).argmax(1)
    task = Task(t.X_train, t.y_train, t.X_val, t.y_val, t.X_val.clone(), decoy, t.note)
    run = S.run_small_batches(task, variant="fixed steps", batch_sizes=(8, 32), norms=("batch", "group"),
                              steps=40, lr_factors=(1e-4, 1.0), seeds=[0], tuning_seed=tuning_seed, max_extensions=0,
                              progress=False)
    return task, run


def test_does_tuning_pick_the_rate_on_the_validation_split_not_the_test_split(decoy_test_run):
    from bncourse.experiments.common import fit

    task, run = decoy_test_run
    choice = next(c for c in run.tuning if (c.norm, c.batch_size) == ("batch", 32))
    assert choice.lr == choice.grid[max(range(len(choice.grid)), key=lambda i: choice.val_acc[i])]
    test_acc = []
    for lr in choice.grid:  # what the test split would have preferred, same tuning seed
        torch.manual_seed(run.tuning_seed)
        test_acc.append(fit(S._build("batch")(), task, steps=40, lr=lr, batch_size=32, seed=run.tuning_seed).test_acc)
    assert test_acc[0] > 0.9 > test_acc[1], test_acc  # the decoy works: the test split prefers the smallest rate
    assert choice.lr == max(choice.grid), choice
    assert choice.at_edge and choice.limit == "0 extensions"  # the edge is reported with what stopped the search


def test_does_the_fixed_step_variant_give_every_batch_size_the_same_steps(decoy_test_run):
    _, run = decoy_test_run
    assert run.steps == {8: 40, 32: 40} and {c.steps for c in run.tuning} == {40}
    for arm in run.result.arms:
        assert all(a["steps_run"] == {8: 40, 32: 40} for a in run.result.artifacts[arm])


def test_does_the_fixed_epoch_variant_give_every_batch_size_the_same_examples():
    steps = S.steps_per_batch("fixed epochs", (2, 8, 32, 128), n_train=256, epochs=2)
    assert steps == {2: 256, 8: 64, 32: 16, 128: 4}
    assert S.steps_per_batch("fixed steps", (2, 128), n_train=256, steps=30) == {2: 30, 128: 30}
    with pytest.raises(ValueError, match="got 'fixed time'"):
        S.steps_per_batch("fixed time", (2,), n_train=10)


def test_does_the_result_carry_the_chosen_rates_and_the_grid(decoy_test_run):
    _, run = decoy_test_run
    lrs = run.lrs()
    assert set(lrs) == {"batch", "group"} and all(set(row) == {8, 32} for row in lrs.values())
    for c in run.tuning:
        assert c.grid == S.lr_grid(c.batch_size, factors=(1e-4, 1.0)) and len(c.val_acc) == 2
        assert lrs[c.norm][c.batch_size] == c.lr and c.lr in c.grid
    table = run.accuracy_table()
    assert table["group"][32].values == (run.result.values("group", "test_acc@32")[0],)
    assert [o.verdict for o in run.result.outcomes] and "tuned learning rates" in str(run)


def test_is_a_tuning_seed_that_is_also_a_verdict_seed_refused():
    with pytest.raises(ValueError, match="tuning seed 1 must not be a verdict seed"):
        S.run_small_batches(S.small_batch_task(n_train=50), seeds=[0, 1], tuning_seed=1, progress=False)


def test_does_tuning_extend_the_grid_until_the_best_rate_is_inside_it():
    import math

    calls = []

    def score(lr):  # a synthetic validation accuracy, best at lr = 0.002
        calls.append(lr)
        return -(math.log10(lr) - math.log10(0.002)) ** 2

    tried, best, limit = S.tune_until_interior(score, (0.03, 0.1, 0.3))
    assert list(tried) == [0.00111, 0.00333, 0.01, 0.03, 0.1, 0.3]  # three steps of 3 down from the low edge
    assert sorted(calls) == list(tried) and tried[0.01] == score(0.01)  # each rate scored once, recorded
    assert best == 0.00333 and limit is None
    choice = S.LRChoice("batch", 2, 10, tuple(tried), tuple(tried.values()), best, limit)
    assert not choice.at_edge


def test_does_tuning_stop_at_a_stated_limit_and_say_so():
    rising = lambda lr: lr  # noqa: E731  (the larger the better: the optimum is never inside)
    tried, best, limit = S.tune_until_interior(rising, (0.1, 0.3))
    assert list(tried) == [0.1, 0.3, 0.9] and best == 0.9 and limit == "upper bound 1"
    assert S.LRChoice("group", 32, 10, tuple(tried), tuple(tried.values()), best, limit).at_edge
    tried, best, limit = S.tune_until_interior(lambda lr: -lr, (0.1, 0.3), max_extensions=2)
    assert list(tried) == [0.0111, 0.0333, 0.1, 0.3] and limit == "2 extensions"
    with pytest.raises(ValueError, match="got an empty grid"):
        S.tune_until_interior(rising, ())


def test_does_the_small_batch_run_record_every_rate_its_search_tried():
    run = S.run_small_batches(S.small_batch_task(n_train=100), variant="fixed steps", batch_sizes=(8, 32),
                              steps=10, lr_factors=(1 / 3, 1.0), seeds=[0], max_extensions=2, progress=False)
    for c in run.tuning:
        assert set(S.lr_grid(c.batch_size, factors=(1 / 3, 1.0))) <= set(c.grid) and list(c.grid) == sorted(c.grid)
        assert len(c.val_acc) == len(c.grid) and c.lr in c.grid
        assert c.at_edge == (c.limit is not None), c  # an edge only when a limit stopped the search

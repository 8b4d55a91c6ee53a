"""Santurkar et al.'s measurements (internal covariate shift, noisy batch norm, smoothness) measure what they say."""

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bncourse.experiments import CONTRADICTED, HELD, INCONCLUSIVE, VERDICTS, run_experiment
from bncourse.experiments import deep_mlp as M
from bncourse.experiments import optimization as O
from bncourse.experiments import step_measures as S
from bncourse.reference.what_bn_does import gradient_change, noisy_batchnorm_forward


def small_model(norm="batch", depth=3, width=8, seed=0):
    torch.manual_seed(seed)
    return M.DeepMLP(5, 3, M.Setup(norm=norm, depth=depth, width=width))


def batch(seed=0, n=16):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 5, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_does_layer_gradient_change_match_moving_the_layers_below_by_hand(norm):
    """Layer i's gradient after an SGD step of blocks 0..i-1 only, recomputed on a deep copy."""
    model, (x, y), lr = small_model(norm), batch(), 0.3
    got = S.layer_gradient_change(model, x, y, lr)
    assert [r["layer"] for r in got] == [1, 2, 3]
    for row in got:
        i = row["layer"]
        moved = copy.deepcopy(model)
        F.cross_entropy(moved(x), y).backward()
        with torch.no_grad():
            for name, p in moved.named_parameters():
                if moved.block_of[name] < i:
                    p -= lr * p.grad
        moved.zero_grad()
        F.cross_entropy(moved(x), y).backward()
        want_after = moved.linears[i].weight.grad.double().numpy()
        np.testing.assert_allclose(row["g_after"], want_after, rtol=1e-4, atol=1e-7)
        assert (row["relative_change"], row["cosine"]) == pytest.approx(gradient_change(row["g_before"], want_after))


def test_is_the_gradient_unchanged_when_the_layers_below_do_not_move():
    model, (x, y) = small_model(), batch()
    for row in S.layer_gradient_change(model, x, y, lr=0.0):
        assert row["relative_change"] == pytest.approx(0.0, abs=1e-6) and row["cosine"] == pytest.approx(1.0)


def test_do_the_measurements_leave_the_running_statistics_alone():
    model, (x, y) = small_model(), batch()
    before = {k: v.clone() for k, v in model.named_buffers()}
    S.layer_gradient_change(model, x, y, lr=0.5)
    S.along_gradient(model, x, y, lr=0.5)
    S._input_stats(model, x)
    for k, v in model.named_buffers():
        assert torch.equal(v, before[k]), k


def test_does_along_gradient_give_the_loss_at_each_step_size():
    model, (x, y), lr = small_model("none"), batch(1), 0.2
    got = S.along_gradient(model, x, y, lr, multipliers=(0.5, 2.0))
    ref = copy.deepcopy(model)
    F.cross_entropy(ref(x), y).backward()
    grads = {k: p.grad.clone() for k, p in ref.named_parameters()}
    for c, loss in zip((0.0, 0.5, 2.0), got["losses"]):
        m = copy.deepcopy(model)
        with torch.no_grad():
            for k, p in m.named_parameters():
                p -= c * lr * grads[k]
            want = float(F.cross_entropy(m(x), y))
        assert loss == pytest.approx(want, rel=1e-5)
    assert got["beta"] > 0 and np.all(got["grad_change"] > 0)


def test_is_noisy_batch_norm_the_reference_in_training_and_plain_batch_norm_in_eval():
    torch.manual_seed(0)
    layer = M.NoisyBatchNorm1d(4)
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
        layer.bias.normal_()
    layer.resample(torch.Generator().manual_seed(3))
    scale, shift = layer.noise_scale.numpy().copy(), layer.noise_shift.numpy().copy()
    assert np.all((scale >= 0.5) & (scale <= 1.5)) and np.all(np.abs(shift) <= 0.5) and np.ptp(scale) > 0
    x = torch.randn(32, 4, dtype=torch.float64) * 3 + 1
    layer.double()
    want = noisy_batchnorm_forward(x.numpy(), layer.weight.detach().numpy(), layer.bias.detach().numpy(), scale, shift)
    np.testing.assert_allclose(layer(x).detach().numpy(), want, rtol=1e-10, atol=1e-12)
    layer.eval()
    plain = torch.nn.functional.batch_norm(x, layer.running_mean, layer.running_var, layer.weight, layer.bias)
    torch.testing.assert_close(layer(x), plain)


def test_does_resampling_change_the_noise_each_step():
    layer = M.NoisyBatchNorm1d(6)
    g = torch.Generator().manual_seed(0)
    layer.resample(g)
    first = layer.noise_scale.clone()
    layer.resample(g)
    assert not torch.equal(first, layer.noise_scale)


def test_is_input_drift_zero_for_a_steady_input_and_relative_to_its_spread():
    steady = [[(np.zeros(3), np.ones(3))]] * 4
    assert S.input_drift(steady) == 0.0
    moving = [[(np.zeros(3), np.full(3, 2.0))], [(np.full(3, 1.0), np.full(3, 3.0))]]
    assert S.input_drift(moving) == pytest.approx((1.0 + 1.0) / 2.0)


def test_do_the_probe_statistics_match_the_reference_drift_of_the_activations():
    """input_drift over two measurements equals the notebook exercise's input_drift of the activations."""
    from bncourse.reference.what_bn_does import input_drift as drift_of_activations

    model, (x, y) = small_model("none"), batch(2, n=64)
    h0 = [h.detach().double().numpy() for h in model(x, collect=True)[1]]
    s0 = S._input_stats(model, x)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.3)
    h1 = [h.detach().double().numpy() for h in model(x, collect=True)[1]]
    s1 = S._input_stats(model, x)
    want = np.mean([drift_of_activations(a, b) for a, b in zip(h0, h1)])
    assert S.input_drift([s0, s1]) == pytest.approx(want, rel=1e-5)


def test_does_deep_mlp_refuse_an_unknown_norm_and_name_it():
    with pytest.raises(ValueError, match="'layer'"):
        M.DeepMLP(5, 3, M.Setup(norm="layer"))


# ---------------------------------------------------------------------------------------------
# The ics-is-why rule on synthetic numbers
# ---------------------------------------------------------------------------------------------


def kept_fraction_trial(kept, drift_noisy=1.0, benefit=0.1, noise=0.002):
    """plain 0.8, batch norm 0.8 + benefit, noisy keeps ``kept`` of it; seeded noise."""
    def trial(arm, seed):
        rng = np.random.default_rng([seed, len(arm)])
        base = {"plain": 0.8, "batch norm": 0.8 + benefit, "noisy batch norm": 0.8 + kept * benefit}[arm]
        drift = {"plain": 0.3, "batch norm": 0.02, "noisy batch norm": drift_noisy}[arm]
        return {"train_acc_auc": base + noise * rng.normal(), "input_drift": drift + 0.01 * rng.normal()}
    return trial


@pytest.mark.parametrize("kept, drift_noisy, benefit, verdict", [
    (0.0, 1.0, 0.1, HELD),            # the noise takes the benefit away: the claim's prediction
    (1.0, 1.0, 0.1, CONTRADICTED),    # noisy batch norm keeps all of it
    (0.5, 1.0, 0.1, INCONCLUSIVE),    # half of it
    (1.0, 0.1, 0.1, INCONCLUSIVE),    # the noise did not make the inputs drift more than plain's
    (1.0, 1.0, 0.0, INCONCLUSIVE),    # batch norm had no benefit to explain
], ids=["loses-benefit", "keeps-benefit", "half", "no-extra-drift", "no-benefit"])
def test_does_the_ics_is_why_rule_decide_as_written(kept, drift_noisy, benefit, verdict):
    main = O.NoiseKeepsBenefit()
    rules = [O.Requires(r) for r in main.preconditions()] + [main]
    arms = {a: a for a in ("plain", "batch norm", "noisy batch norm")}
    r = run_experiment("synthetic", kept_fraction_trial(kept, drift_noisy, benefit), arms, rules,
                       seeds=range(5), progress=False)
    assert r.verdict == verdict, str(r)
    if verdict != INCONCLUSIVE:
        assert r.outcomes[-1].effect == pytest.approx(kept, abs=0.1)


# ---------------------------------------------------------------------------------------------
# The three experiments end to end (tiny sizes)
# ---------------------------------------------------------------------------------------------


def test_do_the_three_experiments_run_on_three_seeds_and_share_their_runs(monkeypatch):
    monkeypatch.setattr(O, "_sizes", lambda **over: {"steps": 12, "every": 6, "depth": 3, "width": 16, **over})
    O.clear_runs()
    try:
        ics = O.internal_covariate_shift(seeds=[0, 1, 2], progress=False)
        noisy = O.noisy_batchnorm(seeds=[0, 1, 2], progress=False)
        smooth = O.smoothness(seeds=[0, 1, 2], progress=False)
        for r, metrics in ((ics, {"grad_change", "grad_cosine", "input_drift_eval", "input_drift", "test_acc"}),
                           (noisy, {"train_acc_auc", "input_drift", "test_acc"}),
                           (smooth, {"loss_range", "grad_shift", "beta", "test_acc"})):
            assert r.verdict in VERDICTS and r.seeds == [0, 1, 2]
            assert set(r.metric_names()) == metrics
            assert all(np.isfinite(r.values(a, m)).all() for a in r.arms for m in metrics)
        # the plain and batch norm runs are the same runs in all three experiments
        assert ics.artifacts["plain"][1]["train_loss_curve"].tolist() == \
            smooth.artifacts["plain"][1]["train_loss_curve"].tolist()
        assert O._run.cache_info().hits >= 9
        curve = ics.artifacts["batch norm"][0]["grad_change_curve"]
        assert curve.shape == (2, 3)  # 2 measurements (steps 0 and 6) x 3 layers with layers below
        assert smooth.artifacts["plain"][0]["losses_along"].shape == (3, 5)
    finally:
        O.clear_runs()


def test_do_different_seeds_give_different_runs_and_one_seed_the_same():
    setup = M.Setup(norm="batch", depth=2, width=8, steps=4, every=2)
    O.clear_runs()
    try:
        a, b = O.train_and_measure(setup, 0), O.train_and_measure(setup, 1)
        O.clear_runs()
        a2 = O.train_and_measure(setup, 0)
    finally:
        O.clear_runs()
    assert a["grad_change"] != b["grad_change"]
    assert a["grad_change"] == a2["grad_change"] and np.array_equal(a["train_loss_curve"], a2["train_loss_curve"])

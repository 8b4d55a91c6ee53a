"""bncourse.diagnostics: hooks on any model, numbers on hand-built tensors, no effect on training, clean detach."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bncourse.diagnostics import Diagnostics, dead_fraction, saturated_fraction, update_to_data_ratio


def _train(model, steps=4, diagnostics=False, seed=0, **kw):
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(32, 10, generator=g), torch.randint(0, 3, (32,), generator=g)
    diag = Diagnostics(model, **kw).attach() if diagnostics else None
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            model(x)  # an evaluation pass between steps is not a step
    report = diag.report() if diag else None
    if diag:
        diag.detach()
    return report


def _mlp(bn=True):
    torch.manual_seed(1)
    layers = [nn.Linear(10, 16)] + ([nn.BatchNorm1d(16)] if bn else []) + [nn.Tanh(), nn.Linear(16, 16), nn.ReLU(),
                                                                         nn.Linear(16, 8), nn.Sigmoid(), nn.Linear(8, 3)]
    return nn.Sequential(*layers)


def test_does_saturated_fraction_count_values_near_the_limits_on_a_hand_built_tensor():
    h = torch.tensor([[0.99, -0.98, 0.5, 0.0], [0.96, -0.999, 0.1, 0.97]])
    assert saturated_fraction(h, "tanh") == pytest.approx(3 / 8)
    s = torch.tensor([[0.99, 0.001, 0.5, 0.98]])  # |2s - 1|: 0.98, 0.998, 0, 0.96
    assert saturated_fraction(s, "sigmoid") == pytest.approx(2 / 4)


def test_does_dead_fraction_count_units_never_active_over_the_batch():
    h = torch.tensor([[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    assert dead_fraction(h) == pytest.approx(2 / 4)  # columns 0 and 3 never fire
    assert saturated_fraction(h, "relu") == pytest.approx(2 / 4)
    img = torch.zeros(2, 1, 2, 2)
    img[0, 0, 0, 0] = 1.0
    assert dead_fraction(img) == pytest.approx(3 / 4)


def test_is_the_update_ratio_the_std_of_the_update_over_the_std_of_the_old_data():
    before = torch.tensor([1.0, 2.0, 3.0, 4.0])  # std (ddof=1) 1.2910
    after = before + torch.tensor([0.01, -0.01, 0.01, -0.01])
    expected = torch.tensor([0.01, -0.01, 0.01, -0.01]).std() / before.std()
    assert update_to_data_ratio(before, after) == pytest.approx(float(expected))
    assert update_to_data_ratio(before.numpy(), after.numpy()) == pytest.approx(float(expected), rel=1e-6)


def test_does_the_report_hold_every_layer_and_parameter_as_arrays():
    r = _train(_mlp(), steps=5, diagnostics=True, histograms_at=(0, 4))
    assert r.steps == 5
    kinds = [t.kind for t in r.activation_layers()]
    assert kinds == ["tanh", "relu", "sigmoid"]
    tanh = r.activation_layers()[0]
    assert tanh.act_std.shape == (5,) and tanh.grad_std.shape == (5,) and np.all(tanh.grad_std > 0)
    assert np.all((0 <= tanh.saturated) & (tanh.saturated <= 1))
    assert np.isnan(r.layers["0"].saturated).all()  # a Linear has no saturation
    w = r.params["0.weight"]
    assert w.update_to_data.shape == (5,) and np.all(np.isfinite(w.log10_update_to_data))
    assert [p.name for p in r.weights()] == ["0.weight", "3.weight", "5.weight", "7.weight"]
    assert {s.step for s in r.snapshots} == {0, 4}
    assert all(s.gradients is not None and s.activations.ndim == 1 for s in r.snapshots)


def test_do_the_recorded_numbers_match_the_measurements_made_by_hand():
    model = _mlp(bn=False)
    seen = {}
    def keep(module, args, out):  # returns None: the output is left alone
        seen.setdefault("tanh", out.detach().clone())

    model[1].register_forward_hook(keep)
    before = model[0].weight.detach().clone()
    r = _train(model, steps=1, diagnostics=True)
    tanh = r.layers["1"]
    assert tanh.act_std[0] == pytest.approx(float(seen["tanh"].std()), rel=1e-5)
    assert tanh.saturated[0] == pytest.approx(saturated_fraction(seen["tanh"], "tanh"))
    ratio = r.params["0.weight"].update_to_data[0]
    assert ratio == pytest.approx(update_to_data_ratio(before, model[0].weight.detach()), rel=1e-4)


def test_are_parameters_after_training_bit_for_bit_identical_with_and_without_diagnostics():
    a, b = _mlp(), _mlp()
    _train(a, steps=6, diagnostics=False)
    _train(b, steps=6, diagnostics=True, histograms_at=(0, 3))
    for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(pa, pb), name


def test_does_leaving_the_block_remove_every_hook():
    model = _mlp()
    def count():
        mods = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
        params = sum(len(getattr(p, "_post_accumulate_grad_hooks", None) or {}) for p in model.parameters())
        return mods + params

    assert count() == 0
    with Diagnostics(model) as diag:
        assert count() == diag.num_hooks > 0
        model(torch.randn(4, 10)).sum().backward()
    assert count() == 0 and not diag.attached
    out = model(torch.randn(4, 10))  # nothing recorded any more
    out.sum().backward()
    assert diag.report().steps == 1


def test_do_the_hooks_work_on_a_model_the_course_did_not_define():
    torchvision = pytest.importorskip("torchvision")
    model = torchvision.models.resnet18(weights=None, num_classes=5)
    with Diagnostics(model) as diag:
        model(torch.randn(2, 3, 32, 32)).sum().backward()
    r = diag.report()
    relus = [t.name for t in r.activation_layers()]
    assert "relu" in relus and "layer1.0.relu#2" in relus  # a ReLU module called twice per block
    assert all(len(t.grad_std) == 1 for t in r.activation_layers())
    assert len(r.params) == len(list(model.parameters()))


def test_does_it_record_float32_statistics_of_a_bfloat16_forward_under_autocast():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 2))
    x = torch.randn(32, 8)
    with Diagnostics(model) as diag:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        out.float().sum().backward()
    tanh = diag.report().layers["1"]
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        h = model[1](model[0](x)).float()
    assert tanh.act_std[0] == pytest.approx(float(h.std()), rel=1e-3)  # bf16 values, float32 statistics
    assert np.isfinite(tanh.grad_std).all()


def test_does_every_record_only_every_kth_step():
    r = _train(_mlp(), steps=7, diagnostics=True, every=3)
    assert list(r.layers["2"].steps) == [0, 3, 6]
    assert list(r.params["0.weight"].update_steps) == [0, 3, 6]


def test_does_it_refuse_what_is_not_a_module():
    with pytest.raises(TypeError, match="nn.Module"):
        Diagnostics(lambda x: x)


def test_do_the_plots_draw_histograms_with_saturation_in_the_legend_and_the_guide_line():
    import matplotlib.pyplot as plt

    from bncourse.diagnostics_plots import compare_reports, plot_histograms, plot_update_ratios

    r = _train(_mlp(), steps=3, diagnostics=True)
    ax = plot_histograms(r, "activations", 0)
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("saturated" in t for t in labels) and any("dead" in t for t in labels)
    assert "look for" in ax.get_title()
    ax = plot_update_ratios(r)
    assert any(line.get_label() == "1e-3 guide" and line.get_ydata()[0] == -3 for line in ax.get_lines())
    fig = compare_reports({"a": r, "b": r}, "gradients")
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="histograms were kept at steps"):
        plot_histograms(r, "activations", step=2)
    plt.close("all")


# --------------------------------------------------------------------------------------------------
# The notebook-11 experiment (bncourse.experiments.inside), on a tiny synthetic task
# --------------------------------------------------------------------------------------------------


def test_does_the_init_gain_decide_saturation_without_batch_norm_and_not_with_it():
    from bncourse.experiments.inside import deep_mlp, saturated_at_init

    x = torch.randn(128, 64, generator=torch.Generator().manual_seed(0))
    sat = {}
    for bn in (False, True):
        for gain in (None, 5 / 3, 3.0):
            torch.manual_seed(0)
            model = deep_mlp(64, 10, gain=gain, batch_norm=bn)
            with Diagnostics(model) as diag:
                model(x).sum().backward()
            sat[bn, gain] = saturated_at_init(diag.report())
    assert sat[False, None] < sat[False, 5 / 3] < sat[False, 3.0]
    assert sat[False, 3.0] > 0.3
    assert max(sat[True, g] for g in (None, 5 / 3, 3.0)) < 0.06  # standardized pre-activations: ~3.7% beyond ±2.09


def test_do_the_two_claims_come_from_one_run_with_their_own_rules(monkeypatch):
    from bncourse.experiments import inside
    from bncourse.experiments.common import Task

    g = torch.Generator().manual_seed(0)

    def task(seed):
        X = torch.randn(300, 64, generator=g)
        y = (X[:, :2].argmax(1))  # two classes a few steps learn, so every arm passes the must-learn guard
        return Task(X[:200], y[:200], X[200:250], y[200:250], X[250:], y[250:], "synthetic")

    calls = []
    monkeypatch.setattr(inside, "_task", task)
    monkeypatch.setattr(inside, "steps", lambda: 40)
    monkeypatch.setattr(inside, "learning_rates", lambda: (0.1,))
    real_trial = inside.inside_trial
    monkeypatch.setattr(inside, "inside_trial", lambda c, s: calls.append(s) or real_trial(c, s))
    inside._run.cache_clear()
    sg = inside.stable_gradients(seeds=[0, 1, 2], progress=False)
    ii = inside.init_insensitive(seeds=[0, 1, 2], progress=False)
    inside._run.cache_clear()
    assert len(calls) == 6  # 3 seeds x 2 arms, once for both claims
    assert (sg.name, ii.name) == ("stable-gradients", "init-insensitive")
    assert [o.rule.split(":")[0] for o in sg.outcomes] == ["worst_grad_layer_spread", "worst_update_ratio_spread"]
    assert [o.rule.split(":")[0] for o in ii.outcomes] == ["acc_range_over_inits"]
    assert sg.verdict in ("held", "contradicted", "inconclusive") and ii.verdict in ("held", "contradicted", "inconclusive")
    runs = sg.artifacts["batch norm"][0]["runs"]
    assert set(runs) == set(inside.INITS) and runs["gain 3"].report.snapshots_at(0)

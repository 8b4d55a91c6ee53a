"""Notebook 7's checks pass the reference, name each known mistake, and can be re-judged from receipts."""

import numpy as np
import pytest

from bncourse.checks.catalogue import gradient_change as GC
from bncourse.checks.catalogue import what_bn_does as WC
from bncourse.checks import what_bn_does as W
from bncourse.reference import what_bn_does as ref
from bncourse.reference.batchnorm import batchnorm_forward


def written_by_a_learner(fn):
    """The reference's code, defined again outside the package, as a learner who got it right submits it.

    (Passing the reference itself is a hand-over to the course's implementation, which scores 0.)
    """
    import inspect
    import textwrap

    namespace = {"np": np, "batchnorm_forward": batchnorm_forward}
    exec(textwrap.dedent(inspect.getsource(fn)), namespace)  # noqa: S102 - the course's own source
    return namespace[fn.__name__]


def test_is_the_reference_itself_refused_as_a_hand_over():
    for result in (W.check_gradient_change(ref.gradient_change), W.check_input_drift(ref.input_drift),
                   W.check_noisy_batchnorm_forward(ref.noisy_batchnorm_forward)):
        assert not result.passed and "handed the work to bncourse.reference.what_bn_does" in str(result)


# --------------------------------------------------------------------------------------------
# The reference itself
# --------------------------------------------------------------------------------------------


def test_does_the_gradient_change_reference_agree_with_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)), rng.normal(size=(5, 7))
    rel, cos = ref.gradient_change(a, b)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    assert np.isclose(rel, float(torch.linalg.vector_norm(tb - ta) / torch.linalg.vector_norm(ta)))
    assert np.isclose(cos, float(torch.nn.functional.cosine_similarity(ta.flatten(), tb.flatten(), dim=0)))


def test_is_an_unchanged_gradient_zero_change_and_cosine_one():
    g = np.arange(1.0, 7.0).reshape(2, 3)
    assert ref.gradient_change(g, g.copy()) == pytest.approx((0.0, 1.0))
    assert ref.gradient_change(g, -g) == pytest.approx((2.0, -1.0))


def test_does_gradient_change_refuse_mismatched_or_zero_gradients_and_say_what_arrived():
    with pytest.raises(ValueError, match=r"\(2, 3\) and \(3, 2\)"):
        ref.gradient_change(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(ValueError, match="all zeros"):
        ref.gradient_change(np.zeros(3), np.ones(3))


def test_does_the_noisy_forward_agree_with_torch_batchnorm_then_noise():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(1)
    x, gamma, beta = rng.normal(size=(16, 4)) * 3 + 1, rng.normal(size=4), rng.normal(size=4)
    scale, shift = rng.uniform(0.5, 1.5, size=4), rng.normal(size=4)
    got = ref.noisy_batchnorm_forward(x, gamma, beta, scale, shift)
    bn = torch.nn.functional.batch_norm(torch.from_numpy(x), None, None, torch.from_numpy(gamma),
                                        torch.from_numpy(beta), training=True, eps=1e-5)
    want = (torch.from_numpy(scale) * bn + torch.from_numpy(shift)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_does_the_noisy_forward_name_a_wrongly_shaped_noise():
    x = np.ones((4, 3)) + np.arange(12).reshape(4, 3)
    with pytest.raises(ValueError, match=r"scale of shape \(3,\).*got shape \(4,\)"):
        ref.noisy_batchnorm_forward(x, np.ones(3), np.zeros(3), np.ones(4), np.zeros(3))


def test_does_the_noisy_forward_keep_float32():
    x = np.random.default_rng(2).normal(size=(8, 3)).astype(np.float32)
    out = ref.noisy_batchnorm_forward(x, np.ones(3), np.zeros(3), np.full(3, 2.0), np.ones(3))
    assert out.dtype == np.float32


# --------------------------------------------------------------------------------------------
# The checks: the reference passes, every mistake is named
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hidden", [False, True])
def test_does_the_reference_pass_both_checks(hidden):
    assert W.check_gradient_change(written_by_a_learner(ref.gradient_change), hidden=hidden).passed
    assert W.check_noisy_batchnorm_forward(written_by_a_learner(ref.noisy_batchnorm_forward), hidden=hidden).passed


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("mistake", GC.gradient_mistakes(), ids=lambda m: m.name)
def test_is_each_gradient_change_mistake_named(mistake, hidden):
    result = W.check_gradient_change(mistake.fn, hidden=hidden)
    assert not result.passed and result.diagnosis.startswith(mistake.name), result.diagnosis


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("mistake", WC.noisy_mistakes(), ids=lambda m: m.name)
def test_is_each_noisy_batchnorm_mistake_named(mistake, hidden):
    result = W.check_noisy_batchnorm_forward(mistake.fn, hidden=hidden)
    assert not result.passed and result.diagnosis.startswith(mistake.name), result.diagnosis


def test_are_there_at_least_five_distinct_mistakes_named_in_each_exercise():
    for mistakes in (WC.drift_mistakes(), GC.gradient_mistakes(), WC.noisy_mistakes()):
        names = [m.name for m in mistakes]
        assert len(set(names)) == len(names) >= 5


# --------------------------------------------------------------------------------------------
# Learner-style solutions, written the way a learner would (not built from the mistake list)
# --------------------------------------------------------------------------------------------


def learner_gradient_change_good(g_before, g_after):
    diff = np.linalg.norm(g_after - g_before)
    cos = np.sum(g_before * g_after) / (np.linalg.norm(g_before) * np.linalg.norm(g_after))
    return diff / np.linalg.norm(g_before), cos


def learner_cosine_is_dot(g_before, g_after):
    return np.linalg.norm(g_after - g_before) / np.linalg.norm(g_before), np.sum(g_before * g_after)


def learner_rows(g_before, g_after):
    rel = np.linalg.norm(g_after - g_before, axis=1) / np.linalg.norm(g_before, axis=1)
    cos = np.sum(g_before * g_after, axis=1) / (np.linalg.norm(g_before, axis=1) * np.linalg.norm(g_after, axis=1))
    return np.mean(rel), np.mean(cos)


def learner_after_norm(g_before, g_after):
    a, b = g_before.flatten(), g_after.flatten()
    return np.linalg.norm(b - a) / np.linalg.norm(b), a @ b / np.linalg.norm(a) / np.linalg.norm(b)


def learner_spectral(g_before, g_after):
    n = lambda m: np.linalg.norm(m, ord=2)  # noqa: E731 - "the 2-norm", as a learner reads it
    return n(g_after - g_before) / n(g_before), np.sum(g_before * g_after) / (n(g_before) * n(g_after))


@pytest.mark.parametrize("fn, name", [
    (learner_cosine_is_dot, "cosine not normalized"),
    (learner_rows, "norms per row"),
    (learner_after_norm, "relative change divided by the wrong norm"),
    (learner_spectral, "matrix 2-norm"),
], ids=["dot", "rows", "after-norm", "spectral"])
def test_is_a_learner_style_gradient_change_mistake_named(fn, name):
    result = W.check_gradient_change(fn)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


def test_does_a_learner_style_correct_gradient_change_pass_with_numpy_floats_or_python_floats():
    assert W.check_gradient_change(learner_gradient_change_good).passed
    assert W.check_gradient_change(lambda a, b: tuple(float(v) for v in learner_gradient_change_good(a, b))).passed
    assert W.check_gradient_change(lambda a, b: list(learner_gradient_change_good(a, b))).passed


def learner_noisy_good(x, gamma, beta, scale, shift, eps=1e-5):
    mean = x.mean(axis=0)
    var = x.var(axis=0)
    x_hat = (x - mean) / np.sqrt(var + eps)
    return scale * (gamma * x_hat + beta) + shift


def learner_noise_first(x, gamma, beta, scale, shift, eps=1e-5):
    x = x * scale + shift
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return gamma * x_hat + beta


def learner_noise_added(x, gamma, beta, scale, shift, eps=1e-5):
    x_hat = (x - x.mean(0)) / np.sqrt(x.var(0) + eps)
    return gamma * x_hat + beta + scale + shift


def learner_wrong_axis(x, gamma, beta, scale, shift, eps=1e-5):
    mean = x.mean(axis=1, keepdims=True)
    var = x.var(axis=1, keepdims=True)
    return scale * (gamma * (x - mean) / np.sqrt(var + eps) + beta) + shift


@pytest.mark.parametrize("fn, name", [
    (learner_noise_first, "noise injected before normalizing"),
    (learner_noise_added, "noise scale added instead of multiplied"),
    (learner_wrong_axis, "statistics over the wrong axis"),
], ids=["noise-first", "added", "axis"])
def test_is_a_learner_style_noisy_mistake_named(fn, name):
    result = W.check_noisy_batchnorm_forward(fn)
    assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


def test_does_a_learner_style_correct_noisy_forward_pass():
    assert W.check_noisy_batchnorm_forward(learner_noisy_good).passed
    assert W.check_noisy_batchnorm_forward(learner_noisy_good, hidden=True).passed


@pytest.mark.parametrize("check", [W.check_gradient_change, W.check_noisy_batchnorm_forward])
def test_does_an_unattempted_exercise_fail_with_a_plain_message(check):
    def blank(*args):
        raise NotImplementedError()

    result = check(blank)
    assert not result.passed and "not attempted" in result.diagnosis
    with pytest.raises(AssertionError):
        result.assert_passed()


def test_is_a_non_function_reported_rather_than_raised():
    result = W.check_gradient_change(None)
    assert not result.passed and "function" in result.diagnosis


def test_is_a_single_number_instead_of_two_reported():
    result = W.check_gradient_change(lambda a, b: 0.5)
    assert not result.passed and "tuple" in result.diagnosis, result.diagnosis


# --------------------------------------------------------------------------------------------
# Re-judged from receipts, outside the learner's kernel
# --------------------------------------------------------------------------------------------


def _receipts_of(source: str, namespace: dict, monkeypatch) -> list[dict]:
    """Run a test cell with receipts on and collect what it published."""
    from bncourse.checks import replay

    published: list[dict] = []
    monkeypatch.setenv(replay.ENV_FORCE, "1")
    monkeypatch.setattr(replay, "publish", lambda entry: published.append(entry))
    try:
        exec(compile(source, "<test cell>", "exec"), namespace)  # noqa: S102 - our own test cell
    except AssertionError:
        pass
    return published


@pytest.mark.parametrize("fn, verdict", [(learner_gradient_change_good, "pass"), (learner_rows, "fail")])
def test_does_the_replay_reach_the_kernels_verdict_for_gradient_change(fn, verdict, monkeypatch):
    from bncourse.checks import replay

    source = ("from bncourse.checks.what_bn_does import check_gradient_change\n"
              "check_gradient_change(gradient_change).assert_passed()\n"
              "check_gradient_change(gradient_change, hidden=True).assert_passed()\n")
    entries = _receipts_of(source, {"gradient_change": fn}, monkeypatch)
    monkeypatch.delenv(replay.ENV_FORCE)
    got, reason, *_ = replay.replay_cell(source, entries)
    assert got == verdict, reason


def test_does_the_replay_reach_the_kernels_verdict_for_noisy_batchnorm(monkeypatch):
    from bncourse.checks import replay

    source = ("from bncourse.checks.what_bn_does import check_noisy_batchnorm_forward\n"
              "check_noisy_batchnorm_forward(noisy_batchnorm_forward).assert_passed()\n")
    for fn, verdict in ((learner_noisy_good, "pass"), (learner_noise_added, "fail")):
        entries = _receipts_of(source, {"noisy_batchnorm_forward": fn}, monkeypatch)
        got, reason, *_ = replay.replay_cell(source, entries)
        assert got == verdict, reason


# --------------------------------------------------------------------------------------------
# input_drift
# --------------------------------------------------------------------------------------------


def test_is_the_drift_zero_for_the_same_distribution_in_another_order():
    h = np.random.default_rng(0).normal(size=(50, 4)) * [1, 2, 3, 4]
    assert ref.input_drift(h, h[::-1].copy()) == pytest.approx(0.0, abs=1e-12)
    assert ref.input_drift(h, h + 1.0) == pytest.approx(1.0 / h.std(0).mean())
    assert ref.input_drift(h, 2 * h) == pytest.approx((np.abs(h.mean(0)).mean() + h.std(0).mean()) / h.std(0).mean())


def test_does_input_drift_refuse_mismatched_or_constant_inputs_and_say_what_arrived():
    with pytest.raises(ValueError, match=r"\(4, 3\) and \(3, 4\)"):
        ref.input_drift(np.ones((4, 3)), np.ones((3, 4)))
    with pytest.raises(ValueError, match="no spread"):
        ref.input_drift(np.ones((4, 3)), np.ones((4, 3)))


def test_does_the_experiments_input_drift_agree_with_the_reference():
    from bncourse.experiments.step_measures import input_drift as drift_of_stats

    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(64, 6)) * 2 + 1, rng.normal(size=(64, 6)) * 3
    stats = [[(a.mean(0), a.std(0))], [(b.mean(0), b.std(0))]]
    assert drift_of_stats(stats) == pytest.approx(ref.input_drift(a, b))


@pytest.mark.parametrize("hidden", [False, True])
def test_does_the_reference_pass_the_input_drift_check(hidden):
    assert W.check_input_drift(written_by_a_learner(ref.input_drift), hidden=hidden).passed


@pytest.mark.parametrize("hidden", [False, True])
@pytest.mark.parametrize("mistake", WC.drift_mistakes(), ids=lambda m: m.name)
def test_is_each_input_drift_mistake_named(mistake, hidden):
    result = W.check_input_drift(mistake.fn, hidden=hidden)
    assert not result.passed and result.diagnosis.startswith(mistake.name), result.diagnosis


def learner_drift_good(h_before, h_after):
    mean_change = np.abs(h_after.mean(axis=0) - h_before.mean(axis=0))
    std_change = np.abs(h_after.std(axis=0) - h_before.std(axis=0))
    return (mean_change.mean() + std_change.mean()) / h_before.std(axis=0).mean()


def learner_drift_elementwise(h_before, h_after):
    return np.abs(h_after - h_before).mean() / h_before.std(axis=0).mean()


def learner_drift_signed(h_before, h_after):
    change = (h_after.mean(0) - h_before.mean(0)).mean() + (h_after.std(0) - h_before.std(0)).mean()
    return change / h_before.std(0).mean()


def test_does_a_learner_style_input_drift_pass_and_its_mistakes_get_named():
    assert W.check_input_drift(learner_drift_good).passed
    assert W.check_input_drift(learner_drift_good, hidden=True).passed
    for fn, name in ((learner_drift_elementwise, "activations compared, not distributions"),
                     (learner_drift_signed, "signed changes")):
        result = W.check_input_drift(fn)
        assert not result.passed and result.diagnosis.startswith(name), result.diagnosis


def test_does_the_replay_reach_the_kernels_verdict_for_input_drift(monkeypatch):
    from bncourse.checks import replay

    source = ("from bncourse.checks.what_bn_does import check_input_drift\n"
              "check_input_drift(input_drift).assert_passed()\n")
    for fn, verdict in ((learner_drift_good, "pass"), (learner_drift_signed, "fail")):
        entries = _receipts_of(source, {"input_drift": fn}, monkeypatch)
        got, reason, *_ = replay.replay_cell(source, entries)
        assert got == verdict, reason

"""The experiment harness: does its decision rule, fixed before the run, tell effect from noise?"""

import json

import numpy as np
import pytest

from bncourse.experiments import (
    CONTRADICTED, HELD, INCONCLUSIVE, AtLeast, AtMost, Better, Similar, default_seeds, run_experiment)


def synthetic(effect: float, noise: float):
    """A trial whose 'treatment' arm scores ``effect`` above 'control', plus seeded noise."""
    def trial(config, seed):
        rng = np.random.default_rng([seed, config["arm"]])
        return {"acc": 0.5 + config["shift"] * effect + noise * rng.normal()}
    return trial


ARMS = {"control": {"arm": 0, "shift": 0.0}, "treatment": {"arm": 1, "shift": 1.0}}
RULE = Better("acc", "treatment", "control")


def test_is_a_clear_effect_held():
    r = run_experiment("clear", synthetic(0.2, 0.01), ARMS, [RULE], seeds=range(5), progress=False)
    assert r.verdict == HELD
    assert r.outcomes[0].effect == pytest.approx(0.2, abs=0.03)


def test_is_pure_noise_inconclusive():
    r = run_experiment("noise", synthetic(0.0, 0.05), ARMS, [RULE], seeds=range(5), progress=False)
    assert r.verdict == INCONCLUSIVE


def test_is_a_reversed_effect_contradicted():
    r = run_experiment("reversed", synthetic(-0.2, 0.01), ARMS, [RULE], seeds=range(5), progress=False)
    assert r.verdict == CONTRADICTED


def test_does_an_effect_smaller_than_twice_its_spread_stay_inconclusive():
    # paired differences 0.05, -0.01, 0.05: mean 0.03, spread 0.035, so 2 spreads = 0.07 > 0.03
    table = {"control": [0.50, 0.50, 0.50], "treatment": [0.55, 0.49, 0.55]}
    r = run_experiment("small", lambda arm, seed: {"acc": table[arm][seed]}, {a: a for a in table}, [RULE],
                       seeds=range(3), progress=False)
    assert r.outcomes[0].effect == pytest.approx(0.03)
    assert r.verdict == INCONCLUSIVE


def test_does_lower_is_better_flip_the_direction():
    rule = Better("acc", "treatment", "control", higher_is_better=False)
    r = run_experiment("lower", synthetic(0.2, 0.01), ARMS, [rule], seeds=range(3), progress=False)
    assert r.verdict == CONTRADICTED


def test_does_a_floor_keep_a_tiny_but_consistent_effect_inconclusive():
    rule = Better("acc", "treatment", "control", floor=0.05)
    r = run_experiment("floor", synthetic(0.01, 0.0), ARMS, [rule], seeds=range(3), progress=False)
    assert r.verdict == INCONCLUSIVE


def test_are_similar_arms_held_similar_and_distant_ones_contradicted():
    same = run_experiment("same", synthetic(0.0, 0.001), ARMS, [Similar("acc", "treatment", "control", 0.02)],
                          seeds=range(3), progress=False)
    far = run_experiment("far", synthetic(0.3, 0.001), ARMS, [Similar("acc", "treatment", "control", 0.02)],
                         seeds=range(3), progress=False)
    assert (same.verdict, far.verdict) == (HELD, CONTRADICTED)


def test_do_thresholds_decide_both_ways():
    r = run_experiment("one arm", synthetic(0.0, 0.001), ARMS, [AtLeast("acc", "control", 0.4)],
                       seeds=range(3), progress=False)
    assert r.verdict == HELD
    r = run_experiment("one arm", synthetic(0.0, 0.001), ARMS, [AtMost("acc", "control", 0.4)],
                       seeds=range(3), progress=False)
    assert r.verdict == CONTRADICTED


def test_is_a_claim_with_one_reversed_comparison_contradicted():
    rules = [RULE, Better("acc", "control", "treatment")]
    r = run_experiment("mixed", synthetic(0.2, 0.01), ARMS, rules, seeds=range(3), progress=False)
    assert [o.verdict for o in r.outcomes] == [HELD, CONTRADICTED]
    assert r.verdict == CONTRADICTED


def test_does_bncourse_seed_shift_every_seed(monkeypatch):
    monkeypatch.setenv("BNCOURSE_FAST", "1")
    monkeypatch.setenv("BNCOURSE_SEED", "100")
    assert default_seeds() == [100, 101, 102]
    monkeypatch.setenv("BNCOURSE_FAST", "0")
    assert default_seeds() == [100, 101, 102, 103, 104]


def test_is_a_non_number_seed_named_in_the_error(monkeypatch):
    monkeypatch.setenv("BNCOURSE_SEED", "abc")
    with pytest.raises(ValueError, match="'abc'"):
        default_seeds()


def test_does_an_experiment_refuse_to_run_without_a_rule():
    with pytest.raises(ValueError, match="no decision rule"):
        run_experiment("norule", synthetic(0.1, 0.0), ARMS, [], seeds=range(3), progress=False)


def test_does_the_result_render_as_html_text_and_json_with_the_rule_and_the_spread():
    r = run_experiment("render", synthetic(0.2, 0.01), ARMS, [RULE], seeds=range(3), claim="treatment helps",
                       progress=False)
    page = r._repr_html_()
    assert "held" in page and "Decision rule" in page and "±" in page
    text = str(r)
    assert "HELD" in text and "treatment helps" in text and "seeds" in text
    data = json.loads(json.dumps(r.to_dict()))
    assert data["verdict"] == HELD and len(data["metrics"]["treatment"]) == 3
    assert data["summary"]["treatment"]["acc"]["std"] > 0


def test_are_non_numeric_trial_outputs_kept_as_artifacts():
    def trial(config, seed):
        return {"acc": float(seed), "curve": [1.0, 2.0]}
    r = run_experiment("art", trial, {"a": {}, "b": {}}, [Better("acc", "a", "b")], seeds=range(3), progress=False)
    assert r.artifacts["a"][0]["curve"] == [1.0, 2.0]
    assert "curve" not in r.metric_names()

"""The claims table and `bncourse claims`: every claim id, each with an experiment, verdicts as data."""

from __future__ import annotations

import importlib.util
import json

import pytest

from bncourse import cli
from bncourse.experiments import claims, claims_catalogue, claims_verdicts
from bncourse.experiments.verdicts import VERDICTS

# The ids of the course's claims list (every claim the five explainer texts make), in its order.
SHARED_IDS = [
    "ics-reduced", "ics-is-why", "faster-convergence", "higher-learning-rates", "regularizes", "noise-like-dropout",
    "init-insensitive", "deeper-networks", "stable-gradients", "scale-invariance", "hyperparameter-robust",
    "output-mean0-std1", "bounded-activations", "inference-consistent", "needs-batch-gt-1", "small-batches-unstable",
    "overhead", "sequences-hard", "before-after-activation", "cnn-per-channel", "not-supervised", "dropout-rate",
    "standardized-is-normal", "nlp-standard",
]
CHEAP = ["dropout-rate", "standardized-is-normal", "nlp-standard"]


def _module_present(path: str) -> bool:
    return importlib.util.find_spec(f"{claims_verdicts.PACKAGE}.{path.partition(':')[0]}") is not None


def test_does_the_table_hold_every_claim_id_exactly_once_in_order():
    assert list(claims_catalogue.CLAIM_IDS) == SHARED_IDS


def test_does_every_claim_have_an_experiment_or_a_reason():
    for c in claims_catalogue.CLAIMS:
        assert c.checks or c.untested, f"{c.id} has neither an experiment nor a reason it is untested"
        assert c.sources and c.notebook and c.claim, f"{c.id} lacks sources, notebook or claim text"


def test_does_every_claim_declare_its_kind_and_the_literatures_finding():
    for c in claims_catalogue.CLAIMS:
        assert c.kind in (claims_catalogue.EXPERIMENT_KIND, claims_catalogue.DEMONSTRATION_KIND,
                          claims_catalogue.BOTH_KINDS), c.id
        assert c.literature and c.literature_verdict in ("held", "contradicted", "mixed"), c.id


def test_does_a_trained_experiment_without_a_learning_guard_come_out_invalid(monkeypatch):
    from bncourse.experiments import Better, run_experiment

    def unguarded(seeds=None, progress=False):
        return run_experiment("unguarded", lambda cfg, s: {"acc": cfg + 0.01 * s}, {"a": 0.9, "b": 0.5},
                              [Better("acc", "a", "b")], seeds=[0, 1, 2], progress=False)
    fake = claims_catalogue.Claim("x", "a claim", "000", "nowhere", (claims_catalogue.Check("fake:unguarded"),))
    monkeypatch.setattr(claims, "CLAIMS", (fake,))
    monkeypatch.setattr(claims, "CLAIM_IDS", ("x",))
    monkeypatch.setattr(claims_verdicts, "resolve", lambda path: unguarded)
    [row] = claims.run_claims()
    assert row.verdict == "invalid" and "no must_learn guard" in row.guard


@pytest.mark.parametrize("claim", claims_catalogue.CLAIMS, ids=lambda c: c.id)
def test_does_each_experiment_path_resolve_to_a_function(claim):
    for check in claim.checks:
        if not _module_present(check.path):
            pytest.skip(f"{check.path}: module not in this checkout yet")
        func = claims_verdicts.resolve(check.path)
        assert callable(func)


def test_does_an_unknown_claim_id_name_the_valid_ones():
    with pytest.raises(KeyError, match="scale-invariance"):
        claims.run_claims(only=["batchnorm-is-magic"])


def test_does_a_missing_experiment_module_make_the_claim_untested_with_the_reason(monkeypatch):
    fake = claims_catalogue.Claim("x", "a claim", "000", "nowhere", (claims_catalogue.Check("no_such_module:f"),))
    monkeypatch.setattr(claims, "CLAIMS", (fake,))
    monkeypatch.setattr(claims, "CLAIM_IDS", ("x",))
    [row] = claims.run_claims()
    assert row.verdict == "untested" and "no_such_module" in row.reason


def test_does_claims_json_give_the_documented_keys_for_the_chosen_ids(capsys):
    assert cli.main(["claims", "--fast", "--json", "--only", *CHEAP]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in rows] == sorted(CHEAP, key=claims_catalogue.CLAIM_IDS.index)  # in the table's order
    for r in rows:
        assert {"id", "claim", "sources", "kind", "verdict", "effect", "spread", "seeds", "notebook", "literature",
                "literature_verdict", "agrees", "values"} <= set(r)
        assert r["verdict"] in VERDICTS and r["values"]
        if r["kind"] == "experiment":
            assert r["seeds"] >= 3 and isinstance(r["effect"], float) and isinstance(r["spread"], float)
            assert all("std" in v for v in r["values"])
        else:  # a demonstration: facts, no seeds, no spread
            assert r["seeds"] == 0 and r["spread"] is None and all("fact" in v for v in r["values"])
    verdicts = {r["id"]: (r["kind"], r["verdict"], r["agrees"]) for r in rows}
    # a standardized exponential feature keeps its skewness (algebra, shown on one sample); nn.Transformer holds layer
    # norms and no batch norm (a count); Dropout(0.5) drops half the units with batch norm before it too
    assert verdicts == {"standardized-is-normal": ("demonstration", "contradicted", "yes"),
                        "nlp-standard": ("demonstration", "contradicted", "yes"),
                        "dropout-rate": ("demonstration", "contradicted", "yes")}


def test_does_the_text_table_show_kind_verdict_effect_seeds_and_notebook(monkeypatch, capsys):
    from bncourse.experiments import layer
    from bncourse.experiments.harness import run_experiment
    from bncourse.experiments.rules import AtMost

    def bounded_activations(seeds=None, progress=False):  # a stand-in experiment: the table is under test
        return run_experiment("bounded-activations", lambda config, seed: {"max_abs_normalized": 9.0 + seed},
                              {"eval mode": {}}, [AtMost("max_abs_normalized", "eval mode", 7.9)], seeds=seeds,
                              progress=False, trained=False)

    monkeypatch.setattr(layer, "bounded_activations", bounded_activations)
    assert cli.main(["claims", "--fast", "--workers", "1", "--only", "bounded-activations", "dropout-rate"]) == 0
    out = capsys.readouterr().out
    for word in ("bounded-activations", "contradicted", "±", "experiment", "demonstration",
                 "7 What batch norm really", "deciding rule", "CPU time"):
        assert word in out, f"{word!r} missing from the table:\n{out}"


def test_does_the_cli_refuse_an_unknown_id_with_exit_code_2(capsys):
    assert cli.main(["claims", "--only", "no-such-claim"]) == 2
    assert "no-such-claim" in capsys.readouterr().err


def test_does_claims_json_keep_a_cpu_scale_down_note_out_of_the_json(monkeypatch, capsys):
    # A full-size run without a GPU: an experiment that scales itself down prints a note; the JSON stays parseable.
    from bncourse import runtime

    monkeypatch.delenv("BNCOURSE_FAST", raising=False)
    monkeypatch.setenv("BNCOURSE_DEVICE", "cpu")
    monkeypatch.setattr(runtime, "_SCALED", {})
    real = claims.run_claims

    def run_scaled_down(**kwargs):
        runtime.pick(fast=1, full=3, cpu=2, what="steps per run (a test)")
        return real(**kwargs)

    monkeypatch.setattr(claims, "run_claims", run_scaled_down)
    assert cli.main(["claims", "--json", "--only", "nlp-standard"]) == 0
    out = capsys.readouterr()
    assert [r["id"] for r in json.loads(out.out)] == ["nlp-standard"]
    assert "steps per run (a test) = 2 (full run: 3)" in out.err

"""Is docs/claims.md what the recorded reference run renders, and does the rendering show what a reader needs?"""

from __future__ import annotations

import json
from pathlib import Path

from bncourse.experiments import claims_catalogue
from bncourse.experiments.claims_doc import render_markdown, source_titles

DOCS = Path(__file__).resolve().parents[1] / "docs"


def test_is_docs_claims_md_the_rendering_of_the_recorded_run():
    record = json.loads((DOCS / "claims-run.json").read_text())
    assert (DOCS / "claims.md").read_text() == render_markdown(record), (
        "docs/claims.md differs from its recorded run: run `python -m bncourse.experiments.claims_doc` "
        "(or record a new run with `bncourse claims --record docs/claims-run.json`)")


def test_does_the_recorded_run_hold_every_claim_with_its_kind_and_the_literature():
    record = json.loads((DOCS / "claims-run.json").read_text())
    assert [r["id"] for r in record["rows"]] == list(claims_catalogue.CLAIM_IDS)
    assert record["mode"].startswith("full") and record["date"] and record["machine"] and record["wall_seconds"] > 0
    for r in record["rows"]:
        assert r["kind"] and r["literature"] and r["agrees"] in ("yes", "no", "-")


def test_does_a_demonstration_row_show_facts_without_a_spread_and_an_experiment_row_each_arm():
    row_demo = {"id": "nlp-standard", "claim": "c", "sources": "000 003", "kind": "demonstration",
                "verdict": "contradicted", "seeds": 0, "notebook": "7", "literature": "Ba 2016",
                "literature_verdict": "contradicted", "agrees": "yes", "rule": "r",
                "values": [{"fact": "layer-norm layers", "value": 25}]}
    row_exp = dict(row_demo, id="regularizes", kind="experiment", seeds=5, sources="all",
                   values=[{"metric": "gap", "arm": "batch norm", "mean": 0.1, "std": 0.02, "n": 5}])
    md = render_markdown({"date": "d", "machine": "m", "mode": "full", "wall_seconds": 1, "cpu_seconds": 1,
                          "rows": [row_demo, row_exp]})
    demo_line = next(line for line in md.splitlines() if line.startswith("| `nlp-standard`"))
    exp_line = next(line for line in md.splitlines() if line.startswith("| `regularizes`"))
    assert "layer-norm layers: 25" in demo_line and "±" not in demo_line
    assert "batch norm: 0.100 ± 0.020 (gap)" in exp_line and "all five explainers" in exp_line
    assert "Code360" in source_titles("004") and "(implied)" in source_titles("000 (001)")


def test_is_docs_claims_seeds_md_the_rendering_of_its_recorded_runs():
    from bncourse.experiments.claims_seeds import render_markdown as render_seeds

    data = json.loads((DOCS / "claims-seeds.json").read_text())
    assert (DOCS / "claims-seeds.md").read_text() == render_seeds(data), (
        "docs/claims-seeds.md differs from docs/claims-seeds.json: run "
        "`python -m bncourse.experiments.claims_seeds docs/claims-seeds.json`")
    assert {r["seed_base"] for r in data["runs"]} >= {0, 1000}


def test_does_the_seed_comparison_call_held_against_contradicted_a_flip_and_the_rest_moves():
    from bncourse.experiments.claims_seeds import FLIPPED, MOVED, SAME, change, flips

    assert change("held", "contradicted") == FLIPPED and change("contradicted", "held") == FLIPPED
    assert change("held", "inconclusive") == MOVED and change("censored", "contradicted") == MOVED
    assert change("held", "held") == SAME
    run = lambda name, base, verdict, mode="fast": {  # noqa: E731
        "name": name, "seed_base": base, "mode": mode, "rows": [{"id": "x", "verdict": verdict}]}
    assert flips([run("a", 0, "held"), run("b", 1000, "contradicted")]) == ["x: held (a) vs contradicted (b)"]
    assert flips([run("a", 0, "held"), run("b", 1000, "inconclusive")]) == []
    assert flips([run("a", 0, "held"), run("b", 0, "contradicted", mode="full")]) == []  # another size, same seeds

"""Do the claims' verdicts survive other seeds? Recorded runs of ``bncourse claims``, compared claim by claim.

The rule, written before the rerun (issue 22): a verdict **flips** when one run says ``held`` and
another, at the same size with other seeds, says ``contradicted``. Every other change (to or from
``inconclusive``, ``invalid``, ``censored`` or ``untested``) is a **move**: reported, not a failure.
A flip means the experiment cannot tell the claim from its reverse at that number of seeds: the fix
is a better experiment (more seeds, a larger effect), never a rule changed after the fact.

    python -m bncourse.experiments.claims_seeds docs/claims-seeds.json NAME=RUN.json ...   # collect
    python -m bncourse.experiments.claims_seeds docs/claims-seeds.json                     # render

Collecting keeps, per run, its name, size, date, times and each claim's verdict, effect, spread and
seed count (``docs/claims-seeds.json``); rendering writes ``docs/claims-seeds.md`` beside it. A test
keeps the two equal. The seeds of a run are ``BNCOURSE_SEED`` + 0, 1, ... (``harness.default_seeds``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bncourse.experiments.seed_summary import format_number
from bncourse.experiments.verdicts import CONTRADICTED, HELD

SAME, MOVED, FLIPPED = "same", "moved", "FLIPPED"


def change(a: str, b: str) -> str:
    """``same``, ``moved`` or ``FLIPPED`` (held against contradicted) between two verdicts of one claim."""
    if a == b:
        return SAME
    return FLIPPED if {a, b} == {HELD, CONTRADICTED} else MOVED


def condense(name: str, record: dict, seed_base: int) -> dict:
    """What the comparison keeps of one recorded run."""
    return {"name": name, "seed_base": seed_base, "mode": record.get("mode", "?"), "date": record.get("date", "?"),
            "wall_seconds": record.get("wall_seconds"), "cpu_seconds": record.get("cpu_seconds"),
            "machine": record.get("machine", "?"), "commit": record.get("commit", ""),
            "rows": [{"id": r["id"], "kind": r.get("kind", ""), "verdict": r["verdict"], "effect": r.get("effect"),
                      "spread": r.get("spread"), "seeds": r.get("seeds", 0), "cpu_seconds": r.get("cpu_seconds")}
                     for r in record["rows"]]}


def comparisons(runs: list[dict]) -> list[tuple[int, int]]:
    """Pairs of runs (indices) at the same size with different seeds: the ones the rule judges."""
    return [(i, j) for i in range(len(runs)) for j in range(i + 1, len(runs))
            if runs[i]["mode"] == runs[j]["mode"] and runs[i]["seed_base"] != runs[j]["seed_base"]]


def flips(runs: list[dict]) -> list[str]:
    """Every claim whose verdict flips between two runs of the same size with other seeds."""
    out = []
    for i, j in comparisons(runs):
        b = {r["id"]: r["verdict"] for r in runs[j]["rows"]}
        out += [f"{r['id']}: {r['verdict']} ({runs[i]['name']}) vs {b[r['id']]} ({runs[j]['name']})"
                for r in runs[i]["rows"] if r["id"] in b and change(r["verdict"], b[r["id"]]) == FLIPPED]
    return out


def _effect(r: dict) -> str:
    e, s = r.get("effect"), r.get("spread")
    if e is None or (isinstance(e, float) and math.isnan(e)) or r.get("kind") == "demonstration":
        return ""
    return f" ({format_number(e)} ± {format_number(s)})" if s is not None else f" ({format_number(e)})"


def render_markdown(data: dict) -> str:
    runs = data["runs"]
    pairs = comparisons(runs)
    lines = [
        "# Do the verdicts survive other seeds?",
        "",
        "Written by `python -m bncourse.experiments.claims_seeds docs/claims-seeds.json` from the recorded runs "
        "in `docs/claims-seeds.json`; a test keeps this file equal to the rendering. Do not edit by hand.",
        "",
        "The rule, fixed before the rerun: a verdict *flips* when one run says held and another run of the same "
        "size, with other seeds, says contradicted. Any other change (to or from inconclusive, invalid, censored) "
        "is a *move*: allowed, and listed. A run's seeds are `BNCOURSE_SEED` + 0, 1, ...",
        "",
        "Runs:",
        "",
    ]
    for r in runs:
        lines.append(f"- **{r['name']}**: {r['mode']} size, seeds from {r['seed_base']}, {r['date']}, "
                     f"{format_number(r['wall_seconds'] or math.nan)} s wall, "
                     f"{format_number(r['cpu_seconds'] or math.nan)} s CPU"
                     + (f", commit {r['commit'][:10]}" if r.get("commit") else "") + f"; {r['machine']}")
    lines += ["", "| claim | " + " | ".join(r["name"] for r in runs) + " | " +
              " | ".join(f"{runs[i]['name']} vs {runs[j]['name']}" for i, j in pairs) + " |",
              "|---|" + "---|" * (len(runs) + len(pairs))]
    by_run = [{r["id"]: r for r in run["rows"]} for run in runs]
    ids = [r["id"] for r in runs[0]["rows"]]
    counts = {(i, j): {SAME: 0, MOVED: 0, FLIPPED: 0} for i, j in pairs}
    for cid in ids:
        cells = [f"{b[cid]['verdict']}{_effect(b[cid])}" if cid in b else "-" for b in by_run]
        ch = []
        for i, j in pairs:
            if cid in by_run[i] and cid in by_run[j]:
                c = change(by_run[i][cid]["verdict"], by_run[j][cid]["verdict"])
                counts[(i, j)][c] += 1
                ch.append(f"**{c}**" if c != SAME else c)
            else:
                ch.append("-")
        lines.append(f"| `{cid}` | " + " | ".join(cells + ch) + " |")
    lines += ["", "Effect ± spread: the deciding comparison's effect and its seed-to-seed spread, as in "
              "`docs/claims.md`.", ""]
    for (i, j), n in counts.items():
        lines.append(f"- {runs[i]['name']} vs {runs[j]['name']}: {n[SAME]} same, {n[MOVED]} moved, "
                     f"{n[FLIPPED]} flipped between held and contradicted")
    found = flips(runs)
    lines += ["", "Flips: " + ("; ".join(found) if found else "none."), ""]
    return "\n".join(lines)


def collect(out: str | Path, named_runs: list[tuple[str, str | Path, int]]) -> Path:
    """Write ``out`` (JSON) from ``(name, recorded run, seed base)`` triples, and the Markdown beside it."""
    runs = [condense(name, json.loads(Path(path).read_text()), base) for name, path, base in named_runs]
    out = Path(out)
    out.write_text(json.dumps({"runs": runs}, indent=1) + "\n")
    return render_file(out)


def render_file(data: str | Path = "docs/claims-seeds.json") -> Path:
    data = Path(data)
    md = data.with_suffix(".md")
    md.write_text(render_markdown(json.loads(data.read_text())))
    return md


if __name__ == "__main__":  # python -m bncourse.experiments.claims_seeds OUT.json [NAME=RUN.json@SEED ...]
    import sys

    out, *specs = sys.argv[1:]
    if specs:
        triples = []
        for spec in specs:
            name, _, rest = spec.partition("=")
            path, _, seed = rest.rpartition("@")
            triples.append((name, path, int(seed)))
        print(collect(out, triples))
    else:
        print(render_file(out))

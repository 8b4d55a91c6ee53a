"""``docs/claims.md``: the claims table rendered from a recorded run of ``bncourse claims``.

A recorded run is a JSON file (``docs/claims-run.json``, written by ``bncourse claims --record``):
``{"date", "machine", "mode", "wall_seconds", "cpu_seconds", "command", "rows": [ClaimRow.to_dict(), ...]}``.
``render_markdown(record)`` turns it into the table: id, claim, sources (by explainer title), kind,
verdict, each arm's measured value (mean ± std over seeds, with the metric as its unit) or a
demonstration's facts (no spread), seeds, what the literature found, whether the course agrees, and
the notebook. A test keeps ``docs/claims.md`` equal to ``render_markdown`` of the recorded run.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bncourse.experiments.seed_summary import format_number

# The five explainer texts, by title (the course's copies are numbered 000-004).
EXPLAINERS = {
    "000": "\"What is Batch Normalization?\" (a computer-vision blog)",
    "001": "\"Batch Normalization\" (SNS College of Technology lecture notes, unit 2)",
    "002": "\"Batch normalization\" (a web-publishing site's article)",
    "003": "\"What is Batch Normalization?\" (a deep-learning tutorial)",
    "004": "\"Batch Normalization - Introduction\" (Code360 by Coding Ninjas)",
}


def source_titles(sources: str) -> str:
    """'000 002 (001)' -> the explainers' titles ('all' -> all five); implied ones marked."""
    if sources.strip() == "all":
        return "all five explainers"
    parts = []
    for tok in sources.replace("(", " (").split():
        implied = tok.startswith("(")
        num = tok.strip("()")
        title = EXPLAINERS.get(num, num)
        parts.append(f"{title} (implied)" if implied else title)
    return "; ".join(parts)


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _value_text(v: dict) -> str:
    if "fact" in v:
        val = v["value"]
        val = format_number(val) if isinstance(val, float) else str(val)
        return f"{v['fact']}: {val}"
    mean, std = v.get("mean"), v.get("std")
    mean_t = "nan" if mean is None or (isinstance(mean, float) and math.isnan(mean)) else format_number(mean)
    std_t = "nan" if std is None else format_number(std)
    return f"{v['arm']}: {mean_t} ± {std_t} ({v['metric']})"


def render_markdown(record: dict) -> str:
    """The claims table as Markdown, from a recorded run (see the module docstring)."""
    rows = record["rows"]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["verdict"]] = counts.get(r["verdict"], 0) + 1
    lines = [
        "# The claims about batch norm, put to experiments",
        "",
        "Written by `bncourse claims --record docs/claims-run.json` and rendered from that recorded run "
        "(`python -m bncourse.experiments.claims_doc`); a test keeps this file equal to the rendering. "
        "Do not edit by hand.",
        "",
        f"- Run: {record.get('mode', '?')} size, {record.get('date', '?')}, on {record.get('machine', '?')}",
        *([f"- Code: commit {record['commit']}"] if record.get("commit") else []),
        f"- Time: {format_number(record.get('wall_seconds', math.nan))} s wall, "
        f"{format_number(record.get('cpu_seconds', math.nan))} s CPU; "
        f"command: `{record.get('command', 'bncourse claims')}`",
        "- Verdicts: " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())) + f" ({len(rows)} claims)",
        *([f"- Scaled down for the CPU (no GPU): " + "; ".join(f"{k} = {v['cpu']} (full: {v['full']})"
                                                              for k, v in record["cpu_sizes"].items())]
          if record.get("cpu_sizes") else []),
        "",
        "Kinds: an *experiment* trains (or samples) over seeds and decides by a rule fixed before the run, "
        "weighing the effect against its seed-to-seed spread; a *demonstration* is one computation (algebra, an "
        "API fact, a count, a construction) and has no spread. A verdict is *invalid* when an arm that had to "
        "learn did not (or diverged), and *censored* when a learning rate chosen on validation data stayed at "
        "the edge of its grid. Values: mean ± std over the seeds, with the metric they measure.",
        "",
        "| id | claim | sources | kind | verdict | measured (each arm) | seeds | literature | agrees | notebook |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        values = "<br>".join(_cell(_value_text(v)) for v in r.get("values", [])) or "-"
        verdict = f"**{r['verdict']}**"
        if r.get("guard"):
            verdict += f" ({_cell(r['guard'])})"
        seeds = str(r["seeds"]) if r.get("seeds") else "-"
        lit = r.get("literature", "")
        if r.get("literature_verdict"):
            lit += f" (implies: {r['literature_verdict']})"
        lines.append("| " + " | ".join([
            f"`{r['id']}`", _cell(r["claim"]), _cell(source_titles(r["sources"])), r.get("kind", "experiment"),
            verdict, values, seeds, _cell(lit), r.get("agrees", "-"), _cell(r["notebook"])]) + " |")
    lines.append("")
    lines.append("Deciding rules, as fixed before the run:")
    lines.append("")
    for r in rows:
        lines.append(f"- `{r['id']}`: " + _cell(r.get("rule") or r.get("reason") or "-"))
    lines.append("")
    if any(r.get("data") for r in rows):
        lines.append("Data, per claim (and why that data set):")
        lines.append("")
        for r in rows:
            lines.append(f"- `{r['id']}`: " + _cell(r.get("data") or "-"))
        lines.append("")
    return "\n".join(lines)


def render_file(run: str | Path = "docs/claims-run.json", out: str | Path = "docs/claims.md") -> Path:
    """Render the recorded run ``run`` into ``out``; returns ``out``."""
    record = json.loads(Path(run).read_text())
    out = Path(out)
    out.write_text(render_markdown(record))
    return out


if __name__ == "__main__":  # python -m bncourse.experiments.claims_doc [run.json] [claims.md]
    import sys

    print(render_file(*sys.argv[1:3]))

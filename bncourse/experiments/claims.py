"""Running the claims table: decide every claim (or some) and print the verdicts as a table.

    from bncourse.experiments.claims import run_claims
    rows = run_claims(only=["scale-invariance"])     # [ClaimRow(...)], each with a verdict
    print(format_table(rows))

``bncourse claims [--fast] [--only ID ...] [--json] [--record FILE]`` is this, on the command line.

Where the parts live: the table (``CLAIMS``, ``Claim``, ``Check``, ``get_claim``) in
``claims_catalogue``; deciding one claim from its experiments (``ClaimRow``, ``resolve``) in
``claims_verdicts``; running them across processes in ``claims_workers``; ``docs/claims.md`` from a
recorded run in ``claims_doc``. The table's and the verdicts' names can still be imported from here.

A row names what the literature found (``literature``) and the verdict that finding implies
(``literature_verdict``), and says whether the course agrees (``agrees``).
"""

from __future__ import annotations

from typing import Callable

# The table and deciding a claim, importable from here as well as from their own modules.
from bncourse.experiments.claims_catalogue import (  # noqa: F401
    BOTH_KINDS, CHECKS, CLAIM_IDS, CLAIMS, DATA, DEMONSTRATION_KIND, EXPERIMENT_KIND, KIND, LITERATURE, NB5, NB6, NB7,
    Check, Claim, get_claim)
from bncourse.experiments.claims_verdicts import PACKAGE, ClaimRow, decide_claims, resolve  # noqa: F401
from bncourse.experiments.seed_summary import format_number
from bncourse.experiments.verdicts import UNTESTED, VERDICTS


def run_claims(only: list[str] | None = None, seeds=None, progress: bool = False,
               on_result: Callable[[ClaimRow], None] | None = None, workers: int = 1) -> list[ClaimRow]:
    """Run the experiments behind ``only`` (default: every claim) and decide each claim.

    An experiment that decides several claims runs once. A claim whose experiment module is not
    installed comes back ``untested`` with the import error as the reason. ``on_result`` is called
    with each row as soon as it is decided. ``workers`` > 1: the experiments run in that many
    processes, one torch thread each (``claims_workers``; the same verdicts and values as one).
    """
    if only:
        unknown = [i for i in only if i not in CLAIM_IDS]
        if unknown:
            raise KeyError(f"unknown claim id(s) {', '.join(map(repr, unknown))}; the ids are: {', '.join(CLAIM_IDS)}")
    wanted = [c for c in CLAIMS if not only or c.id in only]
    if workers > 1:
        from bncourse.experiments.claims_workers import jobs, run_in_workers

        if len(jobs(wanted)) > 1:
            return run_in_workers(wanted, seeds=seeds, workers=workers, progress=progress, on_result=on_result)
    return decide_claims(wanted, seeds=seeds, progress=progress, on_result=on_result)


# ---------------------------------------------------------------------------------------------
# Rendering
# ---------------------------------------------------------------------------------------------


def _effect_text(row: ClaimRow) -> str:
    if row.effect is None or row.kind == DEMONSTRATION_KIND:
        return "-"
    if row.spread is None:
        return format_number(row.effect)
    return f"{format_number(row.effect)} ± {format_number(row.spread)}"


def format_table(rows: list[ClaimRow], width: int = 60) -> str:
    """The claims table as text: id, claim, sources, verdict, effect ± spread, seeds, notebook section."""
    import textwrap

    head = ("id", "claim", "sources", "kind", "verdict", "effect ± spread", "seeds", "notebook")
    body = [(r.id, r.claim, r.sources, r.kind, r.verdict, _effect_text(r), str(r.seeds), r.notebook) for r in rows]
    wrapped = [[textwrap.wrap(cell, width) or [""] if i == 1 else textwrap.wrap(cell, 28) or [""]
                for i, cell in enumerate(line)] for line in body]
    widths = [max([len(head[i])] + [len(part) for w in wrapped for part in w[i]]) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(widths[i]) for i, c in enumerate(cells)).rstrip()  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths])]
    for w, r in zip(wrapped, rows):
        for k in range(max(len(c) for c in w)):
            lines.append(fmt([c[k] if k < len(c) else "" for c in w]))
        detail = r.rule if r.verdict != UNTESTED else f"untested: {r.reason}"
        if r.guard:
            detail = f"{r.guard}; {detail}"
        if detail:
            for part in textwrap.wrap(f"deciding rule: {detail}", sum(widths[1:4]) + 4):
                lines.append(fmt(["", part]))
    counts = {v: sum(r.verdict == v for r in rows) for v in VERDICTS}
    lines.append("")
    lines.append(", ".join(f"{n} {v}" for v, n in counts.items()) + f" ({len(rows)} claims)")
    return "\n".join(lines)

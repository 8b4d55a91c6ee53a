"""Near-copies, for the instructor: solution cells that resemble the course's source or another student's.

``similarity_report(course_dir, assignment)`` reads every submission of the assignment (never
changing it) and compares each solution cell with

- every module of the ``bncourse`` package, whole, and every function and class in it (the
  references and known mistakes a learner could paste; read here, outside any sandbox), and
- the same cell (same ``grade_id``) of every other student,

after normalizing the code the way copies are disguised: comments and docstrings dropped, local
names and string contents replaced by placeholders, attribute names (``.mean``, ``.sum``) and
numbers kept. The score is the share of the cell's 4-token sequences found in the other code
(1.0: every one of them), counting only what the learner wrote: sequences the released student
notebook already holds (provided signatures and docstrings, its other code cells, code in its text)
are left out first, so the course's own code is no false alarm. Pairs above ``threshold`` are written, highest first, to
``grading_reports/<assignment>-similarity.csv``: a list to review, never an automatic zero (a
one-line answer can only be written a few ways, so short cells are left out).
"""

from __future__ import annotations

import csv
import importlib
import inspect
import io
import keyword
import pkgutil
import tokenize
from dataclasses import dataclass
from pathlib import Path

import nbformat

__all__ = ["Match", "fingerprint", "released_code", "similarity", "similarity_report", "write_similarity_report"]

K = 4
MODULE_PREFIX = "reference:module "  # a whole module is compared both ways (an honest cell is a small part of it)
MIN_GRAMS = 12          # cells shorter than this (in 4-token sequences) are not compared
THRESHOLD = 0.6
# Not compared: code a learner has no reason to copy an answer from. The checks are compared: their
# known mistakes are near-solutions.
_SKIP_PACKAGES = ("bncourse.grading", "bncourse.cli", "bncourse.experiments")


@dataclass(frozen=True)
class Match:
    """One suspicious pair: ``student``'s cell ``grade_id`` against ``other`` (a student or ``reference:...``)."""

    assignment: str
    grade_id: str
    student: str
    other: str
    score: float
    grams: int


def _tokens(source: str) -> list[str]:
    out, after_dot = [], False
    try:
        for tok in tokenize.generate_tokens(io.StringIO(source).readline):
            if tok.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT,
                            tokenize.ENCODING, tokenize.ENDMARKER):
                continue
            if tok.type == tokenize.STRING:
                out.append("S")
            elif tok.type == tokenize.NAME:
                out.append(tok.string if keyword.iskeyword(tok.string) or after_dot else "ID")
            else:
                out.append(tok.string)
            after_dot = tok.string == "."
    except (tokenize.TokenError, IndentationError, SyntaxError):
        pass
    return out


def fingerprint(source: str) -> frozenset:
    """The set of normalized 4-token sequences of ``source``."""
    lines = [line for line in source.split("\n") if "BEGIN SOLUTION" not in line and "END SOLUTION" not in line]
    tokens = _tokens("\n".join(lines))
    return frozenset(tuple(tokens[i:i + K]) for i in range(len(tokens) - K + 1))


def similarity(mine: frozenset, other: frozenset) -> float:
    """Share of ``mine``'s sequences that also occur in ``other`` (0 when ``mine`` is empty)."""
    return len(mine & other) / len(mine) if mine else 0.0


def _package_sources() -> dict[str, frozenset]:
    """``reference:<module>.<name>`` -> fingerprint, for every function and class in bncourse."""
    import bncourse

    found: dict[str, frozenset] = {}
    for info in pkgutil.walk_packages(bncourse.__path__, "bncourse."):
        if info.name.startswith(_SKIP_PACKAGES):
            continue
        try:
            module = importlib.import_module(info.name)
        except Exception:  # noqa: BLE001 - a module that cannot be imported here has nothing to compare
            continue
        try:  # the whole module too: a cell that pastes all of it is a copy of no single function
            found[f"{MODULE_PREFIX}{info.name}"] = fingerprint(inspect.getsource(module))
        except (OSError, TypeError):
            pass
        for name, obj in vars(module).items():
            if (inspect.isfunction(obj) or inspect.isclass(obj)) and getattr(obj, "__module__", "") == info.name:
                try:
                    found[f"reference:{info.name}.{name}"] = fingerprint(inspect.getsource(obj))
                except (OSError, TypeError):
                    continue
    return found


def _score(cell: frozenset, reference: frozenset, name: str) -> float:
    if name.startswith(MODULE_PREFIX):  # all of the module in the cell, and the cell mostly that module
        return min(similarity(cell, reference), similarity(reference, cell))
    return similarity(cell, reference)


def _solution_cells(folder: Path) -> dict[str, str]:
    """grade_id -> source of each solution cell of the notebooks in ``folder`` (unreadable ones skipped)."""
    cells: dict[str, str] = {}
    for path in sorted(folder.glob("*.ipynb")):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:  # noqa: BLE001 - a corrupt notebook is reported by the grader, not here
            continue
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.get("cell_type") == "code" and meta.get("solution") and meta.get("grade_id"):
                cells[f"{path.stem}:{meta['grade_id']}"] = cell.source
    return cells


def released_code(folder: Path) -> frozenset:
    """Every 4-token sequence of code the released student notebooks in ``folder`` already hold: code
    cells (stubs included) and code in the text (fenced blocks and inline spans)."""
    import re

    found: set = set()
    for path in sorted(folder.glob("*.ipynb")):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:  # noqa: BLE001 - an unreadable release provides nothing
            continue
        for cell in nb.cells:
            if cell.get("cell_type") == "code":
                found |= fingerprint(cell.source)
            else:
                for snippet in re.findall(r"```[a-z]*\n(.*?)```", cell.source, re.S) + re.findall(r"`([^`\n]+)`", cell.source):
                    found |= fingerprint(snippet)
    return frozenset(found)


def similarity_report(course_dir, assignment: str, threshold: float = THRESHOLD) -> list[Match]:
    """Every (student cell, other code) pair scoring at least ``threshold``, highest first."""
    course_dir = Path(course_dir)
    submitted = course_dir / "submitted"
    students = sorted(p.name for p in submitted.iterdir() if (p / assignment).is_dir()) if submitted.is_dir() else []
    provided = released_code(course_dir / "release" / assignment)
    prints = {}
    for student in students:
        for gid, src in _solution_cells(submitted / student / assignment).items():
            # Only what the learner wrote: sequences the released notebook already holds (a provided
            # signature, lines of other code cells, code in the text) are the course's own code.
            fp = fingerprint(src) - provided
            if len(fp) >= MIN_GRAMS:
                prints[(student, gid)] = fp
    references = _package_sources() if prints else {}
    matches = []
    for (student, gid), fp in prints.items():
        best = max(((_score(fp, ref, name), name.replace(MODULE_PREFIX, "reference:")) for name, ref in references.items()),
                   default=(0.0, ""))
        if best[0] >= threshold:
            matches.append(Match(assignment, gid, student, best[1], round(best[0], 3), len(fp)))
        for (other, other_gid), other_fp in prints.items():
            if other_gid == gid and other > student:
                score = min(similarity(fp, other_fp), similarity(other_fp, fp))
                if score >= threshold:
                    matches.append(Match(assignment, gid, student, other, round(score, 3), len(fp)))
    return sorted(matches, key=lambda m: (-m.score, m.grade_id, m.student, m.other))


def write_similarity_report(course_dir, assignment: str, threshold: float = THRESHOLD) -> Path:
    """Write ``grading_reports/<assignment>-similarity.csv`` in the course folder; return its path."""
    matches = similarity_report(course_dir, assignment, threshold)
    path = Path(course_dir) / "grading_reports" / f"{assignment}-similarity.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["assignment", "cell", "student", "similar_to", "score", "sequences"])
        for m in matches:
            w.writerow([m.assignment, m.grade_id, m.student, m.other, f"{m.score:.3f}", m.grams])
    return path

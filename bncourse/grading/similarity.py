"""Near-copies, for the instructor: solution cells that resemble the course's source or another student's.

``similarity_report(course_dir, assignment)`` reads every submission of the assignment (never
changing it) and compares each code cell the learner could write (solution cells, cells they added,
unlocked cells they changed), whole and each function or class in it on its own (so a paste padded
with junk functions stands out), with

- every module of the ``bncourse`` package, whole, and every function and class in it (the
  references and known mistakes a learner could paste; read here, outside any sandbox), and
- the same cell (same ``grade_id``) of every other student,

after normalizing the code the way copies are disguised: comments and docstrings dropped, local
names and string contents replaced by placeholders, attribute names (``.mean``, ``.sum``) and
numbers kept; IPython's ``%magic`` and ``!shell`` prefixes are read past (``%time x = f()`` is the
code ``x = f()``, a ``%%capture`` cell its body). The score is the share of the cell's 4-token
sequences found in the other code (1.0: every one of them), counting only what the learner wrote:
sequences the released student notebook already holds (provided signatures and docstrings, its
other code cells, code in its text) are left out first, so the course's own code is no false alarm.
A whole module of the course counts when most of it is in the cell (``MODULE_SHARE`` of a module of
at least ``MODULE_MIN_GRAMS`` sequences), however much else the cell holds.

A pair is listed when its score is at least ``threshold`` AND at least ``MIN_SHARED`` sequences are
shared: a short honest function shares a few sequences with some course function by chance (the
measured rule: the instructor's own short solutions share 9 to 19 with their best match, every
reference function of the 27 graded exercises pasted whole shares 28 or more;
``tests/test_grading_similarity.py`` keeps both true). Pairs are written, highest first, to
``grading_reports/<assignment>-similarity.csv``: a list to review, never an automatic zero and never
a point. A learner's cell the reader cannot read as Python is listed too (``UNREADABLE``, score 0),
never skipped in silence.

Besides notebook cells it reads every ``.py`` file of the submission folder (a module shipped beside
the notebook and imported from it: ``<file>:file``) and every other notebook in it, subfolders
included, and compares them the same way. Each cell or file whose code is hidden from reading
(marshalled bytecode run by ``types.FunctionType``, decoded blobs, ``exec`` of computed code:
``bncourse.grading.opaque``) is listed too, with what was found (``OPAQUE``, score 0).
"""

from __future__ import annotations

import ast
import csv
import functools
import importlib
import inspect
import io
import keyword
import pkgutil
import tokenize
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import nbformat

from bncourse.grading.opaque import opaque_code

__all__ = ["OPAQUE", "Match", "code_view", "fingerprint", "parts", "released_code", "similarity", "similarity_report",
           "write_similarity_report"]

K = 4
MODULE_PREFIX = "reference:module "  # a whole module is compared both ways (an honest cell is a small part of it)
MIN_GRAMS = 12          # cells (and functions) shorter than this (in 4-token sequences) are not compared
MIN_SHARED = 20         # a pair is listed only with at least this many shared sequences (see above)
MODULE_MIN_GRAMS = 60   # a module this large found mostly in one cell is a pasted module
MODULE_SHARE = 0.8
THRESHOLD = 0.6
PARTS_LISTED = 5        # at most this many functions or classes of one cell listed on their own
UNREADABLE = "<not readable as Python"  # ``other`` of a row for a cell the reader could not read
OPAQUE = "<opaque code"  # ``other`` of a row for a cell or file that hides code from reading (what was found)
SIDE_FILE_BYTES = 2_000_000  # a .py file beside the notebook larger than this is read up to it
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
    part: str = ""  # "" for the whole cell, else the function or class in it ("def batchnorm_forward")


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


def code_view(source: str) -> str:
    """``source`` as the code it runs: solution markers dropped, a ``%%magic`` line dropped (its
    body is the code), a ``%magic``/``!shell`` prefix dropped from its line (``%time x = f()``: ``x = f()``)."""
    lines = []
    for line in source.split("\n"):
        stripped = line.lstrip()
        if "BEGIN SOLUTION" in line or "END SOLUTION" in line or stripped.startswith("%%"):
            continue
        if stripped.startswith(("%", "!")):
            rest = stripped.lstrip("%!").split(None, 1)
            line = line[:len(line) - len(stripped)] + (rest[1] if len(rest) > 1 else "pass")
        lines.append(line)
    return "\n".join(lines)


def fingerprint(source: str) -> frozenset:
    """The set of normalized 4-token sequences of ``source`` (read as ``code_view`` shows it)."""
    tokens = _tokens(code_view(source))
    return frozenset(tuple(tokens[i:i + K]) for i in range(len(tokens) - K + 1))


def parts(source: str) -> tuple[dict[str, str], str]:
    """({"def name" / "class name": its source} for each top-level function and class, why the cell
    cannot be read as Python or "")."""
    code = code_view(source)
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        return {}, f"{exc.msg} (line {exc.lineno})"
    lines = code.split("\n")
    found = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            kind = "class" if isinstance(node, ast.ClassDef) else "def"
            first = min([node.lineno] + [d.lineno for d in node.decorator_list])
            found[f"{kind} {node.name}"] = "\n".join(lines[first - 1:node.end_lineno])
    return found, ""


def similarity(mine: frozenset, other: frozenset) -> float:
    """Share of ``mine``'s sequences that also occur in ``other`` (0 when ``mine`` is empty)."""
    return len(mine & other) / len(mine) if mine else 0.0


@functools.lru_cache(maxsize=1)
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


def _score(cell: frozenset, reference: frozenset, name: str, provided: frozenset = frozenset()) -> float:
    if name.startswith(MODULE_PREFIX):  # all of the module in the cell, and the cell mostly that module
        both = min(similarity(cell, reference), similarity(reference, cell))
        theirs = reference - provided  # the module's own code (what the release already shows left out)
        if len(theirs) >= MODULE_MIN_GRAMS and similarity(theirs, cell) >= MODULE_SHARE:
            return max(both, similarity(theirs, cell))  # most of a large module, whatever pads it
        return both
    return similarity(cell, reference)


def _learner_cells(folder: Path) -> dict[str, str]:
    """``<notebook>:<grade_id>`` (or ``<notebook>:cell <n>`` for a cell with no grade id, e.g. one the
    learner added) -> source, for every code cell of the notebooks in ``folder`` (unreadable
    notebooks skipped: the grader reports them). Cells the release holds unchanged add nothing: the
    released code is left out of every fingerprint."""
    cells: dict[str, str] = {}
    for path in sorted(p for p in folder.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts):
        try:
            nb = nbformat.read(path, as_version=4)
        except Exception:  # noqa: BLE001 - a corrupt notebook is reported by the grader, not here
            continue
        name = path.relative_to(folder).with_suffix("").as_posix()
        for n, cell in enumerate(nb.cells, 1):
            if cell.get("cell_type") != "code":
                continue
            gid = cell.get("metadata", {}).get("nbgrader", {}).get("grade_id")
            cells[f"{name}:{gid or f'cell {n}'}"] = cell.source
    for path in sorted(p for p in folder.rglob("*.py") if p.is_file() and not p.is_symlink()):
        try:  # a module beside the notebook, imported from it, is code the learner handed in
            with path.open("rb") as f:
                text = f.read(SIDE_FILE_BYTES).decode("utf-8", "replace")
            cells[f"{path.relative_to(folder).as_posix()}:file"] = text
        except OSError:
            continue
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
    """Every (student cell or part of it, other code) pair scoring at least ``threshold`` with at
    least ``MIN_SHARED`` shared sequences, highest first; then every cell not readable as Python."""
    course_dir = Path(course_dir)
    submitted = course_dir / "submitted"
    students = sorted(p.name for p in submitted.iterdir() if (p / assignment).is_dir()) if submitted.is_dir() else []
    provided = released_code(course_dir / "release" / assignment)
    prints: dict[tuple[str, str], dict[str, frozenset]] = {}  # (student, cell) -> part ("" whole) -> fingerprint
    matches = []
    for student in students:
        for gid, src in _learner_cells(submitted / student / assignment).items():
            # Only what the learner wrote: sequences the released notebook already holds (a provided
            # signature, lines of other code cells, code in the text) are the course's own code.
            fp = fingerprint(src) - provided
            if not fp:
                continue  # the released cell as it was (or empty): nothing of the learner's to read
            units, problem = parts(src)
            if problem:
                matches.append(Match(assignment, gid, student, f"{UNREADABLE}: {problem}>", 0.0, len(fp)))
            hidden = opaque_code(src)
            if hidden:
                matches.append(Match(assignment, gid, student, f"{OPAQUE}: {', '.join(hidden)}>", 0.0, len(fp)))
            found = {"": fp} if len(fp) >= MIN_GRAMS else {}
            for label, code in units.items():
                part = fingerprint(code) - provided
                if len(part) >= MIN_GRAMS and part != fp:
                    found[label] = part
            if found:
                prints[(student, gid)] = found
    references = _package_sources() if prints else {}
    index: dict[tuple, list[str]] = {}  # sequence -> the course's code holding it
    for name, ref in references.items():
        for gram in ref:
            index.setdefault(gram, []).append(name)
    for (student, gid), found in prints.items():
        rows = []
        for part, fp in found.items():
            shared = Counter(name for gram in fp for name in index.get(gram, ()))
            best = max(((_score(fp, references[name], name, provided), name.replace(MODULE_PREFIX, "reference:"))
                        for name, n in shared.items() if n >= MIN_SHARED), default=(0.0, ""))
            if best[0] >= threshold:
                rows.append(Match(assignment, gid, student, best[1], round(best[0], 3), len(fp), part))
        whole = [m for m in rows if not m.part]  # a part repeating the whole cell's match (or lying in the
        named = tuple(m.other for m in whole) + tuple(m.other + "." for m in whole)  # module it names) adds nothing
        rows = [m for m in rows if m.part and not m.other.startswith(named)]
        matches += whole + sorted(rows, key=lambda m: -m.score)[:PARTS_LISTED]
        for (other, other_gid), other_found in prints.items():
            if other_gid != gid or other <= student:
                continue
            score, part = max(((min(similarity(a, b), similarity(b, a)), label)
                               for label, a in found.items() for b in other_found.values()
                               if len(a & b) >= MIN_SHARED), default=(0.0, ""))
            if score >= threshold:
                matches.append(Match(assignment, gid, student, other, round(score, 3), len(found.get(part, ())), part))
    return sorted(matches, key=lambda m: (-m.score, m.grade_id, m.student, m.other, m.part))


def write_similarity_report(course_dir, assignment: str, threshold: float = THRESHOLD) -> Path:
    """Write ``grading_reports/<assignment>-similarity.csv`` in the course folder; return its path."""
    matches = similarity_report(course_dir, assignment, threshold)
    path = Path(course_dir) / "grading_reports" / f"{assignment}-similarity.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["assignment", "cell", "student", "similar_to", "score", "sequences", "part"])
        for m in matches:
            w.writerow([m.assignment, m.grade_id, m.student, m.other, f"{m.score:.3f}", m.grams, m.part])
    return path

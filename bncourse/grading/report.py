"""The class report after grading: scores per student and cell, the named mistakes the class made, near-copies, lateness.

``class_report(course_dir, assignment)`` reads (never writes) the course's gradebook, its
``autograded/`` notebooks and its ``submitted/`` folders, and returns a ``ClassReport``:

- ``cells``: one ``CellScore`` per (student, graded cell), every student of the gradebook, a
  student who submitted nothing included with 0;
- ``overridden()``: the cells whose manual score (set in the formgrader) differs from the grader's
  verdict, flagged in the text, the CSV (``manual_differs``) and the page: a script a submission
  smuggled into the formgrader could set one (``bncourse.grading.review_safe`` removes such script);
- ``mistakes``: per exercise, how many students made each named mistake. The mistake is the one
  the checks name (a ``Mistake`` or ``Symptom`` of ``bncourse.checks``, whose names are the stable
  ids ``bncourse.hints.mistake_id`` slugs), read from the graded test cell's error output in the
  autograded notebook, i.e. from the verdict the grader kept; a failure no known mistake explains
  is counted under a kind (``not attempted``, ``raised an error``, ``handed to the course's
  implementation``, ``timed out``, ``rejected by the grader's re-run``, ``unnamed (values differ)``);
- ``similar``: the near-copies of ``bncourse.grading.similarity`` (code of the released student
  notebook left out, so the course's own code raises no alarm);
- ``lateness``: per student the submission time, the due date, seconds late and the penalty; and,
  when the collect found its files written later than the student's side claimed
  (``bncourse.grading.exchange``), the claimed time (the submission is counted when it was written).

``write_class_report(report, folder)`` writes ``<assignment>-cells.csv`` (one row per student and
cell), ``<assignment>-mistakes.csv`` and ``<assignment>-report.html`` (tables and one bar chart
per exercise, PNGs embedded) and returns their paths.

    report = class_report("notebooks", "02_batchnorm_forward")
    report.mistake_counts()["batchnorm_forward"]   # {"unbiased variance used to normalize": 1, ...}
"""

from __future__ import annotations

import base64
import csv
import html
import importlib
import io
import pkgutil
import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

__all__ = ["CellScore", "Lateness", "ClassReport", "known_mistakes", "mistakes_in", "class_report",
           "write_class_report", "main"]

# What a failure is counted as when no named mistake explains it (first match wins).
# Every failed test cell carries the grader's own verdict (GradingVerificationError), so what the
# verdict says comes before that marker.
_KINDS = (
    ("timed out", ("CellTimeoutError", "timed out")),
    ("not attempted", ("not attempted yet", "NotImplementedError")),
    ("handed to the course's implementation", ("handed to the course's", "handed the work to", "GradingRefusedError")),
    ("raised an error", ("raised ",)),
    ("rejected by the grader's re-run", ("GradingVerificationError",)),
)
UNNAMED = "unnamed (values differ)"


@dataclass(frozen=True)
class CellScore:
    """One student's score on one graded cell; ``mistakes``: what its failed check named (empty: passed)."""

    student: str
    notebook: str
    cell: str
    score: float
    max_score: float
    mistakes: tuple[str, ...] = ()
    submitted: bool = True
    auto_score: float | None = None    # the grader's verdict times the points (None: not autograded)
    manual_score: float | None = None  # set in the formgrader (None: none); ``score`` is it when set

    @property
    def overridden(self) -> bool:
        """A manual score that differs from the grader's verdict (a reason to look: who set it, and why)."""
        return (self.manual_score is not None and self.auto_score is not None
                and abs(self.manual_score - self.auto_score) > 1e-9)


@dataclass(frozen=True)
class Lateness:
    """When a student submitted, against the due date (times in UTC, ``None``: unknown or no due date)."""

    student: str
    timestamp: datetime | None
    duedate: datetime | None
    seconds_late: float
    penalty: float
    claimed: str = ""  # the time the student's side claimed, when the collect counted a later one


@dataclass
class ClassReport:
    """``class_report``'s result: see the module docstring."""

    assignment: str
    students: list[str]
    names: dict[str, str]
    cells: list[CellScore]
    lateness: list[Lateness]
    similar: list = field(default_factory=list)  # bncourse.grading.similarity.Match rows

    def totals(self) -> dict[str, tuple[float, float]]:
        """student -> (score, max score) over the graded cells, before any late penalty."""
        out: dict[str, tuple[float, float]] = {}
        for c in self.cells:
            s, m = out.get(c.student, (0.0, 0.0))
            out[c.student] = (s + c.score, m + c.max_score)
        return out

    def mistake_counts(self) -> dict[str, Counter]:
        """exercise (the test cell's grade id without ``_tests``) -> Counter(mistake -> students)."""
        out: dict[str, Counter] = {}
        for c in self.cells:
            if c.max_score <= 0:
                continue
            counts = out.setdefault(_exercise(c.cell), Counter())
            counts.update(set(c.mistakes))
        return out

    def overridden(self) -> list[CellScore]:
        """The graded cells whose manual score differs from the grader's verdict."""
        return [c for c in self.cells if c.overridden]

    def __str__(self) -> str:
        totals = self.totals()
        w = max([7] + [len(s) for s in self.students])
        lines = [f"{self.assignment}: {len(self.students)} students", f"{'student':<{w}}  score"]
        late = {x.student: x for x in self.lateness}
        for s in self.students:
            got, of = totals.get(s, (0.0, 0.0))
            note = "" if s in {c.student for c in self.cells if c.submitted} else "  (no submission)"
            if s in late and late[s].seconds_late > 0:
                note += f"  late by {_duration(late[s].seconds_late)}"
            if s in late and late[s].claimed:
                note += f"  (claimed {late[s].claimed}; counted when its files were written)"
            lines.append(f"{s:<{w}}  {got:5.1f} / {of:g}{note}")
        for exercise, counts in self.mistake_counts().items():
            named = ", ".join(f"{m} ({n})" for m, n in counts.most_common())
            lines.append(f"{exercise}: {named or 'no mistakes'}")
        lines.append(f"near-copies to review: {len(self.similar)}")
        for c in self.overridden():
            lines.append(f"MANUAL SCORE differs from the grader's verdict: {c.student} {c.cell}: "
                         f"grader {c.auto_score:g}, manual {c.manual_score:g} (of {c.max_score:g})")
        return "\n".join(lines)


def _exercise(grade_id: str) -> str:
    return grade_id[:-len("_tests")] if grade_id.endswith("_tests") else grade_id


def _duration(seconds: float) -> str:
    hours = seconds / 3600
    if seconds < 3600:
        return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"
    return f"{hours / 24:.1f} days" if hours >= 48 else f"{hours:.1f} h"


_KNOWN: list[str] | None = None


def known_mistakes() -> list[str]:
    """The names of every ``Mistake`` and ``Symptom`` of ``bncourse.checks``, longest first."""
    global _KNOWN
    if _KNOWN is None:
        import bncourse.checks as checks
        from bncourse.checks.results import Mistake, Symptom

        names: set[str] = set()
        for info in pkgutil.walk_packages(checks.__path__, "bncourse.checks."):
            try:
                module = importlib.import_module(info.name)
            except Exception:  # noqa: BLE001 - a module that cannot load here names no mistakes
                continue
            for value in vars(module).values():
                items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
                names.update(x.name for x in items if isinstance(x, (Mistake, Symptom)))
        _KNOWN = sorted(names, key=lambda n: (-len(n), n))
    return _KNOWN


def mistakes_in(outputs: list) -> tuple[str, ...]:
    """The mistakes a graded test cell's outputs name: known mistake names in the verdict's diagnosis
    (longest first, no overlaps), else the kind of failure; ``()`` when the cell has no error."""
    errors = [o for o in outputs if o.get("output_type") == "error"]
    if not errors:
        return ()
    text = "\n".join(f"{o.get('ename', '')}: {o.get('evalue', '')}" for o in errors)
    # The diagnosis is the first line of a check's message ("ex: FAILED (k/n cases). <diagnosis>"),
    # or the grader's reason after it; the per-case lines below it only describe differences.
    heads = " ".join(line for line in text.splitlines() if not line.startswith("  "))
    found: list[str] = []
    rest = heads
    for name in known_mistakes():
        if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", rest):
            found.append(name)
            rest = rest.replace(name, " ")
    if found:
        return tuple(sorted(found))
    for kind, markers in _KINDS:
        if any(m in text for m in markers):
            return (kind,)
    return (UNNAMED,)


def _autograded_cells(course_dir: Path, student: str, assignment: str) -> dict[tuple[str, str], tuple[str, ...]]:
    """(notebook, grade id) -> mistakes, for every graded code cell of the student's autograded notebooks."""
    import nbformat

    out = {}
    for path in sorted((course_dir / "autograded" / student / assignment).glob("*.ipynb")):
        try:
            nb = nbformat.read(str(path), as_version=4)
        except Exception:  # noqa: BLE001 - grading reported it; the scores come from the gradebook anyway
            continue
        for cell in nb.cells:
            meta = cell.get("metadata", {}).get("nbgrader", {})
            if cell.get("cell_type") == "code" and meta.get("grade") and meta.get("grade_id"):
                out[(path.stem, meta["grade_id"])] = mistakes_in(cell.get("outputs", []))
    return out


def class_report(course_dir, assignment: str, similarity: bool = True) -> ClassReport:
    """Read the graded assignment (gradebook, autograded notebooks, submissions) into a ``ClassReport``."""
    from nbgrader.api import Gradebook, MissingEntry

    from bncourse.grading.exchange import collected_times
    from bncourse.grading.gradebook import check_gradebook, masked
    from bncourse.grading.pipeline import db_url_of

    course_dir = Path(course_dir).resolve()
    db_url = db_url_of(course_dir)
    check_gradebook(db_url, course_dir=course_dir)
    cells: list[CellScore] = []
    lateness: list[Lateness] = []
    backdated = collected_times(course_dir, assignment)
    with Gradebook(db_url) as gb:
        try:
            source = gb.find_assignment(assignment)
        except MissingEntry:
            raise ValueError(f"assignment {assignment!r} is not in the gradebook {masked(db_url)}") from None
        graded_cells = [(nb.name, c.name, float(c.max_score)) for nb in source.notebooks for c in nb.grade_cells]
        students = sorted(s.id for s in gb.students)
        names = {s.id: " ".join(x for x in (s.first_name, s.last_name) if x) for s in gb.students}
        for student in students:
            try:
                sub = gb.find_submission(assignment, student)
            except MissingEntry:
                cells += [CellScore(student, nb, cell, 0.0, top, (), False) for nb, cell, top in graded_cells]
                continue
            seen = _autograded_cells(course_dir, student, assignment)
            grades = {(g.notebook.name, g.name): g for nb in sub.notebooks for g in nb.grades}
            for nb, cell, top in graded_cells:
                g = grades.get((nb, cell))
                score = float(g.score) if g is not None else 0.0
                named = seen.get((nb, cell), ())
                if not named and score < top and (nb, cell) not in seen:
                    named = ("submission not graded",)
                auto, manual = _float(getattr(g, "auto_score", None)), _float(getattr(g, "manual_score", None))
                cells.append(CellScore(student, nb, cell, score, top, named if score < top else (), True, auto, manual))
            lateness.append(Lateness(student, sub.timestamp, sub.duedate, float(sub.total_seconds_late or 0.0),
                                     float(sub.late_submission_penalty or 0.0),
                                     backdated.get(student, {}).get("claimed", "")))
    similar = []
    if similarity:
        from bncourse.grading.similarity import similarity_report

        similar = similarity_report(course_dir, assignment)
    return ClassReport(assignment, students, names, cells, lateness, similar)


def _float(value) -> float | None:
    return None if value is None else float(value)


def _bar_chart(exercise: str, counts: Counter, students: int) -> str:
    """A horizontal bar chart of ``counts`` as a base64 PNG."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    items = counts.most_common()[::-1]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(items) + 1.2))
    named = set(known_mistakes())  # a mistake the checks name in red, a kind of failure in grey
    ax.barh([m for m, _ in items], [n for _, n in items],
            color=["#cf222e" if m in named else "#8c959f" for m, _ in items])
    ax.set_xlabel(f"students (of the {students} who submitted)")
    ax.set_xlim(0, max(students, 1))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(f"{exercise}: named mistakes")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _html(report: ClassReport) -> str:
    e = html.escape
    totals = report.totals()
    cell_ids = list(dict.fromkeys(c.cell for c in report.cells))
    by = {(c.student, c.cell): c for c in report.cells}
    late = {x.student: x for x in report.lateness}
    head = "".join(f"<th>{e(c)}</th>" for c in cell_ids)
    rows = []
    for s in report.students:
        tds = []
        for cid in cell_ids:
            c = by.get((s, cid))
            if c is None:
                tds.append("<td></td>")
                continue
            title = e("; ".join(c.mistakes))
            colour = "#1a7f37" if c.score >= c.max_score else "#cf222e"
            tds.append(f"<td style='color:{colour}' title='{title}'>{c.score:g} / {c.max_score:g}</td>")
        got, of = totals.get(s, (0.0, 0.0))
        lt = late.get(s)
        when = ("no submission" if lt is None else
                f"{lt.timestamp:%Y-%m-%d %H:%M} UTC" if lt.timestamp else "time unknown")
        lateness = "" if lt is None or lt.seconds_late <= 0 else f"late by {_duration(lt.seconds_late)}"
        if lt is not None and lt.penalty:
            lateness += f" (penalty {lt.penalty:g})"
        if lt is not None and lt.claimed:
            lateness += f" claimed {lt.claimed}, but its files were written later: counted then"
        rows.append(f"<tr><td>{e(s)}</td><td>{e(report.names.get(s, ''))}</td>{''.join(tds)}"
                    f"<td><b>{got:g} / {of:g}</b></td><td>{e(when)}</td><td>{e(lateness)}</td></tr>")
    sections = []
    n_students = len({c.student for c in report.cells if c.submitted})  # the charts count those who submitted
    for exercise, counts in report.mistake_counts().items():
        if not counts:
            sections.append(f"<h3>{e(exercise)}</h3><p>Every student passed.</p>")
            continue
        table = "".join(f"<tr><td>{e(m)}</td><td>{n}</td></tr>" for m, n in counts.most_common())
        alt = e(f"{exercise}: " + ", ".join(f"{m}: {n} students" for m, n in counts.most_common()))
        sections.append(f"<h3>{e(exercise)}</h3><table><tr><th>mistake</th><th>students</th></tr>{table}</table>"
                        f"<img alt='{alt}' src='data:image/png;base64,{_bar_chart(exercise, counts, n_students)}'>")
    similar = "".join(f"<tr><td>{e(m.grade_id + (f' ({m.part})' if getattr(m, 'part', '') else ''))}</td>"
                      f"<td>{e(m.student)}</td><td>{e(m.other)}</td>"
                      f"<td>{m.score:.2f}</td></tr>" for m in report.similar)
    similar_html = (f"<table><tr><th>cell</th><th>student</th><th>similar to</th><th>score</th></tr>{similar}</table>"
                    if report.similar else "<p>No near-copies above the threshold.</p>")
    overridden = "".join(f"<tr><td>{e(c.student)}</td><td>{e(c.cell)}</td><td>{c.auto_score:g}</td>"
                         f"<td>{c.manual_score:g}</td><td>{c.max_score:g}</td></tr>" for c in report.overridden())
    overridden_html = ("<h2>Manual scores that differ from the grader's verdict</h2><p>Set in the formgrader; "
                       "check who set each and why.</p><table><tr><th>student</th><th>cell</th><th>grader</th>"
                       f"<th>manual</th><th>of</th></tr>{overridden}</table>" if overridden else "")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}")
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{e(report.assignment)}: class report"
            f"</title><style>{style}</style></head><body><h1>{e(report.assignment)}: class report</h1>"
            f"<h2>Scores</h2><p>Per graded cell (hover a red score for the mistake), the total before late "
            f"penalties, and when it was submitted.</p><table><tr><th>student</th><th>name</th>{head}<th>total</th>"
            f"<th>submitted</th><th>lateness</th></tr>{''.join(rows)}</table>{overridden_html}"
            f"<h2>Which mistakes did the class make?</h2><p>Per exercise, how many students' submissions made each "
            f"mistake the checks name (a failure no named mistake explains is counted by its kind).</p>"
            f"{''.join(sections)}<h2>Near-copies to review</h2><p>Solution cells that resemble the course's code or "
            f"another student's (code the released notebook provides left out); a reason to read both, not a "
            f"verdict.</p>{similar_html}</body></html>")


def write_class_report(report: ClassReport, folder) -> list[Path]:
    """Write the per-cell CSV, the mistakes CSV and the HTML page into ``folder``; return their paths."""
    from bncourse.hints import mistake_id

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    cells_csv = folder / f"{report.assignment}-cells.csv"
    with cells_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "notebook", "cell", "score", "max_score", "submitted", "mistakes", "mistake_ids",
                    "auto_score", "manual_score", "manual_differs"])
        for c in sorted(report.cells, key=lambda c: (c.student, c.notebook, c.cell)):
            w.writerow([c.student, c.notebook, c.cell, f"{c.score:g}", f"{c.max_score:g}", int(c.submitted),
                        "; ".join(c.mistakes), "; ".join(mistake_id(m) for m in c.mistakes),
                        "" if c.auto_score is None else f"{c.auto_score:g}",
                        "" if c.manual_score is None else f"{c.manual_score:g}", int(c.overridden)])
    mistakes_csv = folder / f"{report.assignment}-mistakes.csv"
    with mistakes_csv.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["exercise", "mistake", "mistake_id", "students"])
        for exercise, counts in report.mistake_counts().items():
            for m, n in counts.most_common():
                w.writerow([exercise, m, mistake_id(m), n])
    page = folder / f"{report.assignment}-report.html"
    page.write_text(_html(report))
    return [cells_csv, mistakes_csv, page]


def main(assignment: str, course=".") -> int:
    """CLI glue for ``bncourse report ASSIGNMENT [--course DIR]``: 0 written, 2 nothing to report on."""
    import sys

    from bncourse.grading.parallel import REPORT_DIR

    try:
        report = class_report(course, assignment)
    except ValueError as exc:
        print(f"bncourse report: {exc}", file=sys.stderr)
        return 2
    if not report.students:
        print(f"bncourse report: the gradebook holds no students for {assignment}; grade first "
              f"(`bncourse grade {assignment}`)", file=sys.stderr)
        return 2
    paths = write_class_report(report, Path(course).resolve() / REPORT_DIR)
    print(report)
    print("written: " + ", ".join(str(p) for p in paths))
    return 0

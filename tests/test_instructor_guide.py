"""Does docs/instructors.md work as typed? Every shell block runs, in order, against a temporary course.

One temporary course (a copy of notebooks/), one assignment (02_batchnorm_forward), a roster of four:
Ada and Bob submit through the exchange in the guide's one-machine rehearsal (Ada the solution, Bob the
notebook as released), Cy through a Canvas zip (late, with the unbiased-variance mistake, as a
re-submission `-1`), Dee not at all. Blocks marked `<!-- not run: reason -->` are skipped; there are few.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from conftest import REPO

GUIDE = REPO / "docs" / "instructors.md"
ASSIGNMENT, NOTEBOOK = "02_batchnorm_forward", "batchnorm_forward"
GENERATED = ("release", "submitted", "autograded", "feedback", "gradebook.db", ".nbgrader.log", ".ipynb_checkpoints",
             "grading_reports", "downloaded", "__pycache__", "grades.csv", "roster.csv")
NOISE = ("cheating attempt", "not recognized by", "Alternative text is missing", "Permissions for exchange directory",
         "Creating exchange directory", "Traceback (most recent call last)", "NOT GRADED")
MAX_NOT_RUN = 6


def guide_blocks() -> list[tuple[str, str | None]]:
    """(shell code, reason it is not run or None) for every ```bash block of the guide, in order."""
    lines = GUIDE.read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        start = re.match(r"^(\s*)```bash\s*$", lines[i])
        if not start:
            i += 1
            continue
        indent, body, j = start.group(1), [], i + 1
        while not re.match(rf"^{indent}```\s*$", lines[j]):
            body.append(lines[j][len(indent):])
            j += 1
        before = [ln.strip() for ln in lines[:i] if ln.strip()]
        reason = re.match(r"<!-- not run: (.+) -->", before[-1]) if before else None
        blocks.append(("\n".join(body), reason.group(1) if reason else None))
        i = j + 1
    return blocks


def test_are_the_guides_not_run_blocks_few_and_explained():
    blocks = guide_blocks()
    skipped = [reason for _, reason in blocks if reason is not None]
    assert len(blocks) >= 12 and len(skipped) <= MAX_NOT_RUN, skipped
    assert all(len(reason) > 15 for reason in skipped)


def test_does_the_guide_list_every_assignment_and_only_real_ones():
    text = GUIDE.read_text()
    listed = set(re.findall(r"`(\d\d_[a-z0-9_]+)`", text))
    real = {p.name for p in (REPO / "notebooks" / "source").iterdir() if p.is_dir()}
    assert listed <= real, listed - real
    assert {f"{n:02d}" for n in range(1, 11)} <= {name[:2] for name in listed}


def test_does_the_guide_use_nbgrader_09s_commands():
    text = GUIDE.read_text()
    assert "nbgrader formgrader" not in text.replace("no `nbgrader formgrader`", "")
    assert "fetch_assignment bncourse" not in text and "--allow-root" in text
    assert "nbgrader fetch_assignment 02_batchnorm_forward --course bncourse" in text


def _canvas_zip(course: Path, dest: Path) -> None:
    """The zip Canvas gives for the assignment: Cy's late re-submission, with the unbiased-variance mistake."""
    source = nbformat.read(course / "source" / ASSIGNMENT / f"{NOTEBOOK}.ipynb", as_version=4)
    for cell in source.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == NOTEBOOK:
            assert "var = (xmu**2).mean(axis=0)" in cell.source
            cell.source = cell.source.replace("var = (xmu**2).mean(axis=0)", "var = x.var(axis=0, ddof=1)")
    dest.parent.mkdir(parents=True)
    with zipfile.ZipFile(dest, "w") as z:
        z.writestr(f"youngcy_late_1003_88123_{NOTEBOOK}-1.ipynb", nbformat.writes(source))


@pytest.mark.slow
def test_does_every_shell_block_of_the_instructor_guide_run_as_typed(tmp_path):
    course, home = tmp_path / "notebooks", tmp_path / "home"
    shutil.copytree(REPO / "notebooks", course, ignore=shutil.ignore_patterns(*GENERATED))
    home.mkdir()
    _canvas_zip(course, home / "Downloads" / "submissions.zip")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BNCOURSE_EXCHANGE", "JUPYTER_"))}
    env.update(HOME=str(home), PATH=os.path.dirname(sys.executable) + os.pathsep + env.get("PATH", ""),
               BNCOURSE_CELL_TIMEOUT="120")

    outputs = []
    for code, reason in guide_blocks():
        if reason is not None:
            continue
        run = subprocess.run(["bash", "-euo", "pipefail", "-c", code], cwd=course, env=env, capture_output=True,
                             text=True, timeout=900)
        outputs.append(run.stdout + run.stderr)
        assert run.returncode == 0, f"guide block failed ({run.returncode}):\n{code}\n--- output:\n{outputs[-1][-4000:]}"
        noise = [line for line in outputs[-1].splitlines() if any(n in line for n in NOISE)]
        assert not noise, f"guide block:\n{code}\nprinted:\n" + "\n".join(noise)

    reports = course / "grading_reports"
    with open(reports / f"{ASSIGNMENT}.csv") as f:
        graded = {r["student"]: (r["status"], float(r["score"])) for r in csv.DictReader(f)}
    assert graded == {"ada": ("graded", 8.0), "bob": ("graded", 0.0), "cy": ("graded", 5.0)}

    # nbgrader's grades.csv: names, sorted by name, the student who submitted nothing with 0, Cy late and zeroed
    with open(course / "grades.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["last_name"] for r in rows] == ["Babbage", "Lovelace", "Young", "Zuse"]
    by_id = {r["student_id"]: r for r in rows}
    assert by_id["dee"]["score"] == "0.0" and by_id["dee"]["timestamp"] == ""
    assert by_id["cy"]["raw_score"] == "5.0" and by_id["cy"]["score"] == "0.0"
    assert by_id["cy"]["timestamp"].startswith("2035-01-31 17:00:01") and by_id["ada"]["duedate"].startswith("2035")

    with open(reports / f"{ASSIGNMENT}-canvas.csv") as f:
        canvas = list(csv.reader(f))
    assert canvas[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "02 Batch norm forward (4711)"]
    assert canvas[1][0].strip() == "Points Possible" and canvas[1][-1] == "8"
    assert [(r[0], r[1], r[-1]) for r in canvas[2:]] == [
        ("Babbage, Bob", "1002", "0"), ("Lovelace, Ada", "1001", "8"), ("Young, Cy", "1003", "0"),
        ("Zuse, Dee", "1004", "0")]
    with open(reports / f"{ASSIGNMENT}-moodle.csv") as f:
        moodle = list(csv.reader(f))
    assert moodle[0][:4] == ["First name", "Last name", "ID number", "Email address"] and moodle[2][-1] == "8"

    # the class report: the named mistake, per exercise, in the CSV and the page
    with open(reports / f"{ASSIGNMENT}-mistakes.csv") as f:
        mistakes = {(r["exercise"], r["mistake"]): int(r["students"]) for r in csv.DictReader(f)}
    assert mistakes[("batchnorm_forward", "unbiased variance used to normalize")] == 1
    assert mistakes[("batchnorm_forward", "not attempted")] == 1
    page = (reports / f"{ASSIGNMENT}-report.html").read_text()
    assert "unbiased variance used to normalize" in page and "<img alt=" in page and "no submission" in page

    # one machine, no cross-talk: each pretend student fetched only their own feedback
    for student in ("ada", "bob"):
        fetched = list((tmp_path / "rehearsal" / student / ASSIGNMENT / "feedback").rglob("*.html"))
        assert len(fetched) == 1, (student, fetched)
    doctor = next(out for out in outputs if "course notebooks" in out)  # `bncourse doctor --course .`
    assert f"in {course / 'source'}: " in doctor and "4 student(s)" in doctor

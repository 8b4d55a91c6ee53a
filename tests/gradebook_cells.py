"""What the grading tests compare: one assignment's cells as the course gradebook holds them."""

from __future__ import annotations

from pathlib import Path


def gradebook_cells(course: Path, assignment: str, comments: bool = False) -> dict:
    """{(student, notebook, cell): (auto_score, needs_manual_grade)}, plus each cell's auto comment
    under (student, notebook, cell, "comment") when ``comments``."""
    from nbgrader.api import Gradebook

    from bncourse import grading

    out = {}
    with Gradebook(grading.db_url_of(course)) as gb:
        for sub in gb.assignment_submissions(assignment):
            for nb in sub.notebooks:
                for g in nb.grades:
                    out[(sub.student.id, nb.name, g.name)] = (g.auto_score, g.needs_manual_grade)
                for c in nb.comments if comments else ():
                    out[(sub.student.id, nb.name, c.name, "comment")] = c.auto_comment
    return out

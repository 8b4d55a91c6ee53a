"""``HideHiddenTests``: feedback that shows neither hidden test code nor hidden cases' values."""

from __future__ import annotations

import re
from typing import Sequence

from nbformat.v4 import new_markdown_cell, new_output
from nbgrader import utils as nbutils
from nbgrader.preprocessors import NbGraderPreprocessor
from traitlets import List, Unicode

from bncourse.grading.verify import REFUSED_ENAME, pop_receipts

__all__ = ["HIDDEN_MESSAGE", "LEFT_OUT_MESSAGE", "HideHiddenTests"]

HIDDEN_MESSAGE = "a hidden test did not pass (hidden tests' code and values are not shown)"
LEFT_OUT_MESSAGE = ("**Not seen by the grader:** {files}. These files were beside your notebook but are not part of "
                    "the assignment, so the grader did not give them to your notebook: put your code in the notebook.")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _hidden_ranges(source: str, begin: str, end: str) -> list[tuple[int, int]]:
    ranges, start = [], None
    for n, line in enumerate(source.split("\n"), start=1):
        if begin in line and start is None:
            start = n
        elif end in line and start is not None:
            ranges.append((start, n))
            start = None
    if start is not None:
        ranges.append((start, 10**9))
    return ranges


def _failing_line(traceback: Sequence[str]) -> int | None:
    """The line of the test cell an IPython traceback points at (None if it cannot tell)."""
    for entry in traceback:
        text = _ANSI.sub("", entry)
        m = re.search(r"(?:Cell In\s*\[\d*\]|Input In \[\d*\]|<ipython-input-[^>]*>),\s*line (\d+)", text)
        if m:
            return int(m.group(1))
    return None


class HideHiddenTests(NbGraderPreprocessor):
    """For feedback: graded cells with hidden tests lose the hidden code and anything it printed.

    The hidden region of the source becomes one comment line; outputs are dropped except errors,
    which keep their message only when they come from a visible line (else a generic sentence),
    and never a traceback (it quotes the code around the failing line). Files the grader left out
    of the kernel's working copy (``bncourse.grading.execute.LEFT_OUT_FILES``) are named at the top.
    """

    begin = Unicode("BEGIN HIDDEN TESTS").tag(config=True)
    end = Unicode("END HIDDEN TESTS").tag(config=True)
    # nbconvert's exporters configure this for every NbConvertBase: declared, it is no "unknown option" warning.
    display_data_priority = List(['text/html', 'application/pdf', 'text/latex', 'image/svg+xml', 'image/png',
                                  'image/jpeg', 'text/plain']).tag(config=True)

    def preprocess(self, nb, resources):
        nb, resources = super().preprocess(nb, resources)
        left_out = nb.metadata.get("bncourse_left_out_files")  # bncourse.grading.execute.LEFT_OUT_FILES
        if isinstance(left_out, list) and left_out:  # the learner hears which files the grader left out
            files = ", ".join(f"`{f}`" for f in map(str, left_out[:20])) + (" ..." if len(left_out) > 20 else "")
            nb.cells.insert(0, new_markdown_cell(LEFT_OUT_MESSAGE.format(files=files)))
        return nb, resources

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code":
            pop_receipts(cell)
        if not (nbutils.is_grade(cell) and self.begin in cell.source):
            return cell, resources
        ranges = _hidden_ranges(cell.source, self.begin, self.end)
        outputs = []
        for o in cell.get("outputs", []):
            if o.output_type != "error":
                continue
            line = _failing_line(o.get("traceback", []))
            # The grader's verdict names the test cell's line only for a failed check's own message
            # (bncourse.grading.verify): shown when that line is a visible test.
            visible = o.ename in (REFUSED_ENAME, "SubmissionTimeLimit") or (line is not None and not any(a <= line <= b for a, b in ranges))
            if o.ename == "CellTimeoutError":
                evalue = "the cell did not finish before the time limit"
            elif visible:
                evalue = o.evalue
            else:
                evalue = HIDDEN_MESSAGE
            ename = o.ename if visible or o.ename == "CellTimeoutError" else "AssertionError"
            outputs.append(new_output(
                "error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"]))
        cell.outputs = outputs
        lines, kept, inside = cell.source.split("\n"), [], False
        for line in lines:
            if self.begin in line:
                inside = True
                kept.append("# (hidden tests run here when your work is graded)")
            elif self.end in line:
                inside = False
            elif not inside:
                kept.append(line)
        cell.source = "\n".join(kept)
        return cell, resources

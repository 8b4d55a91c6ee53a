"""Does every notebook tell the learner how long it takes and where to get help?"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from bncourse.hints.texts import EXERCISES

SOURCE = Path(__file__).resolve().parents[1] / "notebooks" / "source"
NOTEBOOKS = sorted(SOURCE.glob("*/*.ipynb"))


def test_are_all_eleven_notebooks_here():
    assert [p.parent.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(1, 12)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.parent.name for p in NOTEBOOKS])
def test_does_the_first_cell_give_the_time_on_a_cpu_and_on_a_gpu(path):
    first = nbformat.read(str(path), as_version=4).cells[0]
    assert first.cell_type == "markdown"
    time = " ".join(next(p for p in first.source.split("\n\n") if p.startswith("**Time.**")).split())
    assert re.search(r"about [\d.]+ (seconds|minutes) on a 2-core CPU", time), time
    assert "on a GPU: not measured" in time and "fast mode" in time


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.parent.name for p in NOTEBOOKS])
def test_does_the_last_cell_say_where_to_get_help_with_this_notebooks_exercises(path):
    last = nbformat.read(str(path), as_version=4).cells[-1]
    assert last.cell_type == "markdown" and last.source.startswith("## Where to get help")
    text = " ".join(last.source.split())
    mine = [e.function for e in EXERCISES.values() if e.notebook == path.parent.name]
    assert mine and all(f"`{ex}`" in last.source for ex in mine)
    called = re.findall(r'(?:hint|solution)\("([^"]+)"\)', last.source)
    assert called and set(called) <= set(mine)
    for what in ("forum", "which exercise", "check's table", "what you tried"):
        assert what in text, what

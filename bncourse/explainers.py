"""The five explainer texts the course answers, by number and title, for every learner-facing output.

The claims table (``bncourse.experiments.claims_catalogue``) names the explainers that make each claim by
their file numbers ("000" to "004", from /work/shared/explainers/). A learner cannot know which
text "004" is; ``explainer_title("004")`` and ``name_sources("000 002 (001)")`` say it in words.

    explainer_title("004")           # 'Code360 (Coding Ninjas), "Batch Normalization - Introduction"'
    name_sources("000 003 (001)")    # '... , ... and (implied) ...'
"""

from __future__ import annotations

import re

__all__ = ["EXPLAINERS", "explainer_title", "name_sources"]

# number -> title, from each text's first lines (site or author, then its heading).
EXPLAINERS: dict[str, str] = {
    "000": 'a computer-vision blog post, "What is Batch Normalization?" (batch norm in CNN training)',
    "001": 'SNS College of Technology lecture notes, "Unit 2: Batch Normalization"',
    "002": 'a blog post, "Batch normalization" (March 2025)',
    "003": 'a glossary article, "What is Batch Normalization?" (with "Batch normalization equations")',
    "004": 'Code360 (Coding Ninjas), "Batch Normalization - Introduction"',
}
SHORT: dict[str, str] = {  # for narrow tables
    "000": "CV blog",
    "001": "SNS College notes",
    "002": "2025 blog post",
    "003": "glossary article",
    "004": "Code360",
}


def explainer_title(number: str | int, short: bool = False) -> str:
    """``"004"`` (or ``4``) -> the explainer's title; ``short=True``: a few words for a table column.

    Raises ``KeyError`` naming what arrived for a number the course does not have.
    """
    key = f"{int(number):03d}" if str(number).strip().isdigit() else str(number).strip()
    table = SHORT if short else EXPLAINERS
    if key not in table:
        raise KeyError(f"no explainer numbered {number!r}; the course has {', '.join(EXPLAINERS)}")
    return table[key]


def name_sources(sources: str, short: bool = True) -> str:
    """A claims row's sources ("000 002 (001)", "all") in words; numbers in parentheses are implied."""
    text = sources.strip()
    if text.lower() == "all":
        return "all five explainers"
    named, implied = [], []
    for token in re.findall(r"\(?\d{3}\)?", text):
        number = token.strip("()")
        (implied if token.startswith("(") else named).append(explainer_title(number, short=short))
    words = ", ".join(named)
    if implied:
        words += (", and implied by " if words else "implied by ") + ", ".join(implied)
    return words or text

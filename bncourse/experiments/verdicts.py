"""The words a claim's test can end in, and how several comparisons combine into one.

A verdict is a string, one of ``VERDICTS``:

- ``held``: every comparison's effect cleared its threshold in the claim's direction;
- ``contradicted``: a comparison's effect cleared it in the other direction;
- ``inconclusive``: neither, within the seed-to-seed noise;
- ``untested``: no experiment answers the claim here;
- ``invalid``: a guard failed (an arm did not learn or diverged), so no verdict can be given;
- ``censored``: a learning-rate search's best value stayed at the edge of its grid.

A result's ``kind`` is one of ``KINDS``: an *experiment* (over seeds, with a spread) or a
*demonstration* (one computation, no spread). ``combine(["held", "inconclusive"])`` gives
``"inconclusive"``.
"""

from __future__ import annotations

from typing import Sequence

HELD, CONTRADICTED, INCONCLUSIVE, UNTESTED = "held", "contradicted", "inconclusive", "untested"
INVALID, CENSORED = "invalid", "censored"
VERDICTS = (HELD, CONTRADICTED, INCONCLUSIVE, UNTESTED, INVALID, CENSORED)
EXPERIMENT, DEMONSTRATION = "experiment", "demonstration"
KINDS = (EXPERIMENT, DEMONSTRATION)
_COLOR = {HELD: "#1a7f37", CONTRADICTED: "#cf222e", INCONCLUSIVE: "#9a6700", UNTESTED: "#57606a",
          INVALID: "#8250df", CENSORED: "#bc4c00"}


def combine(verdicts: Sequence[str]) -> str:
    """A claim made of several comparisons: contradicted if any is, held if all are, else inconclusive."""
    if not verdicts:
        return UNTESTED
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if all(v == HELD for v in verdicts):
        return HELD
    return INCONCLUSIVE

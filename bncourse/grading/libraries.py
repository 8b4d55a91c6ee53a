"""Which libraries a graded solution may use, per assignment, as the grading sandbox enforces it.

The numpy notebooks' exercises are to be written with numpy: their grading kernels run in a
sandbox where torch, scikit-learn and SciPy are absent (their folders in site-packages are
replaced by a package whose import raises ``ImportError``), so no normalization of theirs can
stand in for the learner's code, whatever name reaches it. The torch notebooks need torch in the
kernel; there the rule is written in the notebook and the grader reports (never scores) calls of
torch's own normalization that it reads in the code: see the threat model in docs/instructors.md.

``LIBRARY_RULES``: assignment -> (allowed libraries, the sentence the notebook states).
``blocked_for(assignment)``: the top-level packages its grading kernels cannot import.
"""

from __future__ import annotations

NUMPY_ONLY = ("numpy", "matplotlib", "the Python standard library")
NUMPY_BLOCKED = ("torch", "torchvision", "functorch", "sklearn", "scipy")

LIBRARY_RULES: dict[str, dict] = {
    "01_why_normalize": {"allowed": NUMPY_ONLY, "blocked": NUMPY_BLOCKED},
    "02_batchnorm_forward": {"allowed": NUMPY_ONLY, "blocked": NUMPY_BLOCKED},
    "03_batchnorm_backward": {"allowed": NUMPY_ONLY, "blocked": NUMPY_BLOCKED},
    "07_what_batchnorm_does": {"allowed": NUMPY_ONLY, "blocked": NUMPY_BLOCKED},
}


def blocked_for(assignment: str, rules: dict | None = None) -> tuple[str, ...]:
    """Top-level packages absent from ``assignment``'s grading kernels (none for an unknown one)."""
    rule = (LIBRARY_RULES if rules is None else rules).get(assignment) or {}
    return tuple(rule.get("blocked", ()))

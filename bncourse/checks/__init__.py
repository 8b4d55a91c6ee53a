"""Autograder checks, one module per notebook; ``core`` holds the engine they share."""

from bncourse.checks.core import Case, CaseResult, CheckResult, Mistake, check_function

__all__ = ["Case", "CaseResult", "CheckResult", "Mistake", "check_function"]

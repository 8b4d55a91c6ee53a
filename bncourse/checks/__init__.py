"""Autograder checks, one module per notebook; ``core`` holds the engine they share.

    normalize   notebook 1   standardize, min_max_scale
    forward     notebook 2   batchnorm_forward, update_running_stats, batchnorm_inference
    backward    notebook 3   the (N, D) backward (staged, closed form), spatial forward and backward
    pytorch     notebook 4   the autograd.Function, BatchNorm1d and BatchNorm2d modules
    figure1     notebook 5   the sigmoid input's percentiles
    recompute   notebook 6   re-estimating batch norm's running statistics

The engine: ``core`` (cases, verdicts, diagnosis), ``calls`` (calling learner code safely),
``delegation`` (the course's own implementations are off limits), ``replay`` (receipts: the grader
re-judges every check outside the learner's kernel), ``inputs`` (seeded arrays); for torch,
``torch_guard`` and ``stepping`` (a module stepped through training and eval next to torch's).
Importing this package captures numpy's comparison functions before any learner code runs; it
does not import torch.
"""

from bncourse.checks.core import Case, CaseResult, CheckResult, Mistake, Symptom, check_function

__all__ = ["Case", "CaseResult", "CheckResult", "Mistake", "Symptom", "check_function"]

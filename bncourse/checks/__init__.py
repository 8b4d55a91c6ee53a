"""Autograder checks, one module per notebook; ``core`` holds the engine they share.

    normalize   notebook 1   standardize, min_max_scale
    forward     notebook 2   batchnorm_forward, update_running_stats, batchnorm_inference
    backward    notebook 3   the (N, D) backward (staged, closed form), spatial forward and backward
    pytorch     notebook 4   the autograd.Function, BatchNorm1d and BatchNorm2d modules
    figure1     notebook 5   the sigmoid input's percentiles
    recompute   notebook 6   re-estimating batch norm's running statistics
    what_bn_does    notebook 7   input_drift, gradient_change, noisy_batchnorm_forward
    sync_batchnorm  notebook 8   batch norm synchronized across ranks, forward and backward
    norm_family     notebook 9   layer norm and group norm, forward and backward
    folding         notebook 10  fold_batchnorm, fold_model

The known mistakes live in one place, the catalogue (``bncourse.checks.catalogue``: one module per
notebook of small wrong implementations, each with a stable ``id``); a check asks for its
exercise's entries (``catalogue.lazy(exercise)``) only when it diagnoses a failure, so the checks
import and make their cases without it.

The engine: ``core`` (cases, verdicts, diagnosis), ``calls`` (calling learner code safely),
``delegation`` (the course's own implementations are off limits), ``replay`` (receipts: the grader
re-judges every check outside the learner's kernel), ``inputs`` (seeded arrays; hidden cases drawn
from ``hidden_seed()``); for torch,
``torch_guard`` and ``stepping`` (a module stepped through training and eval next to torch's).
Importing this package captures numpy's comparison functions before any learner code runs; it
does not import torch.
"""

from bncourse.checks.core import Case, CaseResult, CheckResult, Mistake, Symptom, check_function
from bncourse.checks.results import CheckFailed

__all__ = ["Case", "CaseResult", "CheckResult", "CheckFailed", "Mistake", "Symptom", "check_function"]

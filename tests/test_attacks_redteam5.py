"""Does red team 5's way to points without solving (2026-12-08) earn nothing, graded as the grader does?

Each attack is the submission's code as the red team wrote it, run in the course's source notebook
in place of the instructor's solution: the test cell runs in a "kernel" that only records (its
watch on the course's code switched off, as a kernel the learner tampered with would be), and the
grader's re-judging (``replay.replay_cell``) decides from the receipts and its own reading of the
source (``bncourse.grading.sources``), as ``VerifyChecks`` does. F1 (finite differences in two
passes) is in ``test_attacks_finite_differences.py``, F3 (float32 fairness) in
``test_checks_hidden_seed.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat

from bncourse.checks import delegation, replay
from bncourse.grading import seeds, sources

SOURCE = Path(__file__).resolve().parents[1] / "notebooks" / "source"


def _solution(cell_source: str) -> str:
    return "\n".join(line for line in cell_source.splitlines() if "### BEGIN SOLUTION" not in line
                     and "### END SOLUTION" not in line)


def notebook(path: str, replaced: dict[str, str]):
    """The source notebook with the solutions of ``replaced`` (grade id -> code) replaced."""
    nb = nbformat.read(SOURCE / path, as_version=4)
    for cell in nb.cells:
        gid = cell.metadata.get("nbgrader", {}).get("grade_id")
        if gid in replaced:
            cell.source = replaced[gid]
    return nb


def _cell(nb, grade_id: str):
    return next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def run_up_to(nb, grade_ids: list[str]) -> dict:
    """A namespace after the setup cells (code before the first solution cell) and the solution cells
    ``grade_ids`` (magics left out)."""
    ns: dict = {}
    first = next(i for i, c in enumerate(nb.cells) if c.metadata.get("nbgrader", {}).get("solution"))
    code = [c.source for c in nb.cells[:first] if c.cell_type == "code"] + [_solution(_cell(nb, g).source)
                                                                          for g in grade_ids]
    for source in code:
        exec("\n".join(line for line in source.splitlines() if not line.startswith("%")), ns)  # noqa: S102
    return ns


def graded(nb, test_grade_id: str, ns: dict, monkeypatch) -> tuple:
    """The grader's verdict on test cell ``test_grade_id``: recorded in a kernel whose watch is off,
    re-judged from the receipts and the grader's reading of ``nb``'s source (verdict, reason)."""
    cell = _cell(nb, test_grade_id).source
    with monkeypatch.context() as m:
        m.setenv(replay.ENV_FORCE, "1")
        published = []
        m.setattr(replay, "publish", lambda entry: published.append(replay.pack(entry)))
        m.setattr(delegation.Watch, "__enter__", lambda self: self)
        try:
            exec(cell, dict(ns))  # noqa: S102 - the kernel: records its receipts (and judges live here)
        except Exception:  # noqa: BLE001 - the kernel's verdict does not count: the grader's does
            pass
    program = sources.Program(*sources.learner_and_instructor_sources(nb))
    references = sorted(program.references(replay.free_names(cell)))
    return replay.replay_cell(cell, [replay.unpack(b) for b in published], references)[:2]


# F2: notebook 4's exercise 3 ("BatchNorm2d in torch operations only ... autograd derives the backward")
# as exercise 2's module, i.e. the numpy reference forward, backward and running-statistics update the
# notebook hands out for exercise 1, on the (N*H*W, C) rows.
NB4_BN2D = '''
class BatchNorm2d(BatchNorm1dNumpy):
    """Exercise 2's module (the given numpy reference underneath) applied to the rows of (N*H*W, C)."""

    def forward(self, x):
        N, C, H, W = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, C)
        return super().forward(rows).reshape(N, H, W, C).permute(0, 3, 1, 2)
'''
NB4 = "04_batchnorm_pytorch/batchnorm_pytorch.ipynb"


def test_does_batchnorm2d_through_the_handed_out_numpy_reference_earn_nothing(monkeypatch):
    from bncourse.checks.pytorch import check_batchnorm2d

    nb = notebook(NB4, {"batchnorm2d": NB4_BN2D})
    ns = run_up_to(nb, ["batchnorm_function", "batchnorm1d_module", "batchnorm2d"])
    live = check_batchnorm2d(ns["BatchNorm2d"], hidden=True)
    assert not live.passed and "bncourse.reference.batchnorm" in live.diagnosis, live.diagnosis
    verdict, reason = graded(nb, "batchnorm2d_tests", ns, monkeypatch)
    assert verdict == "delegated" and reason.startswith("bncourse.reference.batchnorm."), (verdict, reason)


# F2 by value: the same layer through numpy code the reading cannot tie to the handed-out names (here
# pasted; a route the reading does not know is the same to the grader). Autograd differentiates a layer
# of torch operations twice; a numpy round trip inside a Function it cannot differentiate at all.
NB4_BN2D_PASTED_NUMPY = '''
import numpy as np


def _forward_rows(x, g, b, eps):
    mu = x.mean(0)
    std = np.sqrt(x.var(0) + eps)
    xhat = (x - mu) / std
    return xhat * g + b, (xhat, g, std)


def _backward_rows(d, cache):
    xhat, g, std = cache
    dxhat = d * g
    dx = (len(d) * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0)) / (len(d) * std)
    return dx, (d * xhat).sum(0), d.sum(0)


class _Rows(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, g, b, eps):
        out, ctx.cache = _forward_rows(*(t.detach().double().numpy() for t in (x, g, b)), eps)
        return torch.from_numpy(out).to(x.dtype)

    @staticmethod
    def backward(ctx, d):
        return tuple(torch.from_numpy(a).to(d.dtype) for a in _backward_rows(d.detach().double().numpy(),
                                                                          ctx.cache)) + (None,)


class BatchNorm2d(nn.Module):
    def __init__(self, num_features, eps=1e-5, momentum=0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, x):
        shape = (1, -1, 1, 1)
        if not self.training:
            return ((x - self.running_mean.view(shape)) / torch.sqrt(self.running_var.view(shape) + self.eps)
                    * self.weight.view(shape) + self.bias.view(shape))
        N, C, H, W = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(-1, C)
        with torch.no_grad():
            n = rows.shape[0]
            self.running_mean.mul_(1 - self.momentum).add_(self.momentum * rows.mean(0))
            self.running_var.mul_(1 - self.momentum).add_(self.momentum * rows.var(0, unbiased=False) * n / (n - 1))
        out = _Rows.apply(rows, self.weight, self.bias, self.eps)
        return out.reshape(N, H, W, C).permute(0, 3, 1, 2)
'''


def test_does_batchnorm2d_through_numpy_code_of_ones_own_earn_nothing(monkeypatch):
    from bncourse.checks.pytorch import check_batchnorm2d

    nb = notebook(NB4, {"batchnorm2d": NB4_BN2D_PASTED_NUMPY})
    ns = run_up_to(nb, ["batchnorm_function", "batchnorm1d_module", "batchnorm2d"])
    live = check_batchnorm2d(ns["BatchNorm2d"], hidden=True)
    assert not live.passed and "autograd cannot differentiate it again" in live.diagnosis, live.diagnosis
    assert graded(nb, "batchnorm2d_tests", ns, monkeypatch)[0] == "fail"


def test_does_the_handed_out_reference_route_fail_by_value_where_the_reading_is_blind(monkeypatch):
    """F2's layer, re-judged with the reading's references left out (a route it does not know)."""
    nb = notebook(NB4, {"batchnorm2d": NB4_BN2D})
    ns = run_up_to(nb, ["batchnorm_function", "batchnorm1d_module", "batchnorm2d"])
    monkeypatch.setattr(sources.Program, "references", lambda self, names: set())
    assert graded(nb, "batchnorm2d_tests", ns, monkeypatch)[0] == "fail"


def test_does_the_instructors_batchnorm2d_still_pass_as_graded(monkeypatch):
    nb = notebook(NB4, {})
    ns = run_up_to(nb, ["batchnorm_function", "batchnorm1d_module", "batchnorm2d"])
    assert graded(nb, "batchnorm2d_tests", ns, monkeypatch) == ("pass", "")


# F4: notebook 10's fold_model with nothing folded: each batch norm replaced by the affine map it
# computes in eval mode, measured by running it on zeros and ones; the convs untouched.
NB10_AFFINE = '''
import copy
import torch
from torch import nn


class _Measured(nn.Module):
    def __init__(self, scale, shift):
        super().__init__()
        self.register_buffer("scale", scale)
        self.register_buffer("shift", shift)

    def forward(self, x):
        return x * self.scale + self.shift


def fold_model(model):
    out = copy.deepcopy(model).eval()
    for block in out.modules():
        if isinstance(block, nn.Sequential):
            for i in range(len(block) - 1):
                if isinstance(block[i], nn.Conv2d) and isinstance(block[i + 1], nn.BatchNorm2d):
                    bn = block[i + 1]
                    with torch.no_grad():
                        zero = torch.zeros(1, bn.num_features, 1, 1, dtype=bn.running_mean.dtype)
                        shift = bn(zero)
                        scale = bn(zero + 1) - shift
                    block[i + 1] = _Measured(scale, shift)
    return out
'''
NB10 = "10_folding/folding.ipynb"


def test_does_a_fold_model_that_replaces_each_batch_norm_by_its_affine_map_earn_nothing(monkeypatch):
    from bncourse.checks.folding import check_fold_model

    nb = notebook(NB10, {"fold_model": NB10_AFFINE})
    ns = run_up_to(nb, ["fold_model"])
    live = check_fold_model(ns["fold_model"], hidden=True)
    assert not live.passed and live.diagnosis.startswith("the batch norm was not folded into the convolution: its "
                                                         "weights are unchanged"), live.diagnosis
    verdict, reason = graded(nb, "fold_model_tests", ns, monkeypatch)
    assert verdict == "fail", (verdict, reason)


def test_does_the_instructors_fold_model_still_pass_as_graded(monkeypatch):
    nb = notebook(NB10, {})
    ns = run_up_to(nb, ["fold_batchnorm", "fold_model"])
    assert graded(nb, "fold_model_tests", ns, monkeypatch) == ("pass", "")


# The hidden-case seed: the kernel can read its working copy of the notebook, cells' metadata.execution
# included (nbgrader's ClearOutput keeps it), so that key must change the seed as every other one does.
def test_does_data_stored_in_a_cells_execution_metadata_change_the_hidden_seed():
    nb = nbformat.read(SOURCE / NB10, as_version=4)
    again = copy.deepcopy(nb)
    stored = copy.deepcopy(nb)
    stored.cells[0].metadata["execution"] = {"iopub.status.busy": "answers: 0.125 0.5 -1.75"}
    assert seeds.submission_digest(nb) == seeds.submission_digest(again)  # reproducible: --hidden-seed N
    assert seeds.submission_digest(stored) != seeds.submission_digest(nb)

"""Checks for notebook 6, "CNNs on the GPU": re-estimating batch norm's running statistics.

``check_recompute_bn_statistics(fn)``: ``fn(model, batches)`` re-estimates every batch-norm
layer's running mean and variance from ``batches`` (input tensors) as an equal-weight average,
leaving the weights, the layers' momenta and the model's mode as they were. ``hidden=True`` runs
other seeds and models. The reference is the package's ``bncourse.train.recompute_bn_statistics``,
which the learner's function may not call.

The learner's function takes a model, which cannot travel to the grader; so each case runs it
on a model the case builds from its seed, and records what the verdict needs as arrays (the
running statistics, the mode and momenta before and after, the weights). The grader re-judges
from those.
"""

from __future__ import annotations

import numpy as np

from bncourse.checks import catalogue
from bncourse.checks.calls import kept
from bncourse.checks.core import Case, CheckResult, Symptom, check_function
from bncourse.checks.inputs import hidden_case_seed

__all__ = ["check_recompute_bn_statistics"]

OUTPUTS = ("running statistics", "mode after", "momenta after", "weights", "mode before", "momenta before",
           "weights before")
COMPARED = OUTPUTS[:4]


def _bn_layers(model):
    import torch

    return [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]


def _build(seed: int, cnn: bool, start_training: bool, n_batches: int, momentum: float):
    """(model with stale statistics, list of input batches) for a case."""
    import torch

    from bncourse.models import BNPaperMLP, SmallCNN

    g = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    if cnn:
        model = SmallCNN(1, 4, widths=(4, 6))
        batches = [torch.randn(8, 1, 8, 8, generator=g) * 2 + 1 for _ in range(int(n_batches))]
    else:
        model = BNPaperMLP(12, 3, batch_norm=True, hidden=5, depth=2)
        batches = [torch.randn(6, 12, generator=g) * 3 - 1 for _ in range(int(n_batches))]
    for m in _bn_layers(model):  # stale statistics, as after training on other data
        m.running_mean.uniform_(5, 6, generator=g)
        m.running_var.uniform_(7, 9, generator=g)
        m.num_batches_tracked.fill_(100)
        m.weight.data.uniform_(0.5, 1.5, generator=g)
        m.bias.data.uniform_(-0.5, 0.5, generator=g)
        m.momentum = float(momentum)
    model.train(bool(start_training))
    return model, batches


def _momenta(model) -> np.ndarray:
    return np.array([np.nan if m.momentum is None else float(m.momentum) for m in _bn_layers(model)])


def _weights(model) -> np.ndarray:
    return np.concatenate([v.detach().double().reshape(-1).numpy() for k, v in model.state_dict().items()
                           if "running" not in k and "num_batches" not in k])


def _runner(fn):
    """(seed, cnn, start_training, n_batches, momentum) -> the recorded arrays of ``OUTPUTS``."""
    def run(seed, cnn, start_training, n_batches, momentum):
        model, batches = _build(seed, cnn, start_training, n_batches, momentum)
        mode_before, momenta_before, weights_before = np.array([float(model.training)]), _momenta(model), _weights(model)
        with kept(batches=batches):  # the model's statistics change by design; the data may not
            fn(model, batches)
        stats = np.concatenate([t.detach().double().reshape(-1).numpy() for m in _bn_layers(model)
                                for t in (m.running_mean, m.running_var)])
        return (stats, np.array([float(model.training)]), _momenta(model), _weights(model),
                mode_before, momenta_before, weights_before)
    return run


def _reference(model, batches):
    from bncourse.train import recompute_bn_statistics

    recompute_bn_statistics(model, batches)


def _not_put_back(got) -> list[str]:
    """What the function changed that it should have left (or put back) as it was."""
    problems = []
    if got["mode after"][0] != got["mode before"][0]:
        problems.append(f"the model was left in {'training' if got['mode after'][0] else 'eval'} mode; "
                        "restore the mode it had")
    if not np.array_equal(got["momenta after"], got["momenta before"], equal_nan=True):
        problems.append("the layers' momentum was not restored afterwards")
    return problems


_SYMPTOMS = [
    Symptom("mode or momentum not put back", "", lambda got: bool(_not_put_back(got)),
            describe=lambda got: "; and ".join(_not_put_back(got))),
    Symptom("weights changed", "only the running statistics may change (no optimizer step)",
            lambda got: not np.array_equal(got["weights"], got["weights before"])),
]


def check_recompute_bn_statistics(fn, hidden: bool = False, rtol: float = 1e-4, atol: float = 1e-5) -> CheckResult:
    """Check ``fn(model, batches)``: equal-weight running statistics, weights, momenta and mode kept."""
    cases = (
        [Case(name, lambda a=(hidden_case_seed("recompute_bn_statistics", name), *options): a)
         for name, *options in (("MLP with BatchNorm1d, 5 batches, starts in train mode", False, True, 5, 0.1),
                                ("CNN with BatchNorm2d, 2 batches, starts in eval mode", True, False, 2, 0.1),
                                ("CNN, 1 batch, starts in train mode", True, True, 1, 0.1))]
        if hidden else
        [Case("CNN with BatchNorm2d, 3 batches, starts in eval mode", lambda: (1, True, False, 3, 0.1)),
         Case("MLP with BatchNorm1d, 4 batches, starts in train mode, momentum 0.2", lambda: (2, False, True, 4, 0.2))]
    )
    runner = fn if not callable(fn) else _runner(fn)
    return check_function("recompute_bn_statistics", runner, _runner(_reference), cases, lambda: catalogue.mistakes("recompute_bn_statistics") + _SYMPTOMS,
                          outputs=OUTPUTS, compare=COMPARED, rtol=rtol, atol=atol, check_dtype=False,
                          forbid_torch="")

"""The catalogue's entries for notebook 6: re-estimating batch norm's running statistics."""

from __future__ import annotations

from bncourse.checks.core import Mistake
from bncourse.checks.recompute import _bn_layers, _runner

def _passes(model, batches, momentum="cumulative", reset=True, training=True):
    """Run the batches through ``model`` with the layers' momentum set as asked; restore nothing."""
    import torch

    for m in _bn_layers(model):
        if reset:
            m.reset_running_stats()
        if momentum != "unchanged":
            m.momentum = None if momentum == "cumulative" else momentum
    model.train(training)
    with torch.no_grad():
        for x in batches:
            model(x)


def _then_restore(passes):
    """``passes(model, batches)``, then the mode and momenta put back as they were."""
    def fn(model, batches):
        was, momenta = model.training, [m.momentum for m in _bn_layers(model)]
        passes(model, batches)
        for m, momentum in zip(_bn_layers(model), momenta):
            m.momentum = momentum
        model.train(was)
    return fn


MISTAKES = [
    Mistake("statistics not reset first",
            "call reset_running_stats() on each batch-norm layer before the passes, or the stale values stay "
            "in the average", _runner(_then_restore(lambda m, b: _passes(m, b, reset=False))),
            only=("running statistics",)),
    Mistake("exponential average (momentum left as it was)",
            "set each layer's momentum to None during the passes (cumulative average: every batch weighs the same)",
            _runner(_then_restore(lambda m, b: _passes(m, b, momentum="unchanged"))), only=("running statistics",)),
    Mistake("only the last batch counted",
            "momentum=1 keeps only the last batch: use momentum=None for an equal-weight average over all batches",
            _runner(_then_restore(lambda m, b: _passes(m, b, momentum=1.0))), only=("running statistics",)),
    Mistake("the passes ran in eval mode",
            "running statistics are only updated in training mode: call model.train() before the passes",
            _runner(_then_restore(lambda m, b: _passes(m, b, reset=False, training=False))), only=("running statistics",)),
    Mistake("neither reset nor an equal-weight average",
            "the passes only nudged the stale statistics (momentum 0.1): call reset_running_stats() on each "
            "batch-norm layer, and set its momentum to None during the passes so every batch weighs the same",
            _runner(_then_restore(lambda m, b: _passes(m, b, momentum="unchanged", reset=False))),
            only=("running statistics",)),
]


ENTRIES = {"recompute_bn_statistics": MISTAKES}

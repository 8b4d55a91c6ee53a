"""Notebook 6's non-i.i.d. lab: training batches that hold only 1, 2 or 10 classes.

Batch norm assumes each batch is a fair sample of the data. ``non_iid_batches(data, ...)`` trains a
``SmallCNN`` with batch norm, with layer norm (no batch statistics) and without normalization, each
on batches drawn with 1, 2 and 10 classes per batch (``data.ClassPairLoader``; 10 classes is the
i.i.d.-like control), with Adam at one learning rate for all (the setting under test is the batch
composition). Per (normalization, classes per batch), measured on the test set:

- ``eval_acc_k``: eval mode (running statistics for batch norm);
- ``train_mode_acc_k``: training mode on test batches with the *same* number of classes per batch
  (batch norm then uses each batch's own statistics, as in training; for layer norm and no norm it
  equals eval mode, and is measured all the same);
- ``reestimated_acc_k``: eval mode after re-estimating batch norm's running statistics from
  shuffled training batches (``train.recompute_bn_statistics``; weights unchanged).

Rule, fixed here: held if (1) with one class per batch batch norm's eval-mode accuracy falls further
below its 10-class accuracy than layer norm's does (by more than 2 points beyond the noise), and
(2) re-estimating the statistics then gains batch norm more than 2 points; contradicted if either
reverses; inconclusive otherwise. The two-class comparison is shown, not decided on.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import AtLeast, Better, MustLearn

KS = (1, 2, 10)
ARMS = {"batch norm": {"norm": "batch"}, "layer norm": {"norm": "layer"}, "no norm": {"norm": "none"}}


@torch.no_grad()
def _acc_eval(model, X, y) -> float:
    model.eval()
    out = torch.cat([model(X[i:i + 500]).argmax(1) for i in range(0, len(y), 500)])
    return (out == y).float().mean().item()


@torch.no_grad()
def _acc_train_mode(model, loader) -> float:
    m = copy.deepcopy(model).train()  # training-mode passes update running statistics: on a copy
    hits = n = 0
    for xb, yb in loader:
        hits += (m(xb).argmax(1) == yb).sum().item()
        n += len(yb)
    return hits / n


def _train(data, norm: str, k: int, epochs: int, widths, batch: int, lr: float, seed: int):
    """A ``SmallCNN`` with ``norm`` trained with Adam on batches of ``k`` classes (seeded)."""
    from bncourse.data import ClassPairLoader
    from bncourse.models import SmallCNN

    steps = epochs * max(1, len(data.y_train) // batch)
    torch.manual_seed(seed)
    model = SmallCNN(data.image_shape[0], data.num_classes, widths=widths, norm=norm).to(data.X_train.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = ClassPairLoader(data.X_train, data.y_train, batch_size=batch, classes_per_batch=k,
                             batches_per_epoch=steps, seed=seed)
    model.train()
    for xb, yb in loader:
        loss = F.cross_entropy(model(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model


def trained_one_class_model(data, epochs: int, widths=(8, 16, 32), batch: int = 64, lr: float = 2e-3, seed: int = 0):
    """The batch-norm CNN of ``non_iid_batches`` trained on one-class batches, for ``seed``."""
    from bncourse.device import get_device

    return _train(data.to(get_device(announce=False)), "batch", 1, epochs, widths, batch, lr, seed)


def non_iid_batches(data, epochs: int, widths=(8, 16, 32), batch: int = 64, lr: float = 2e-3, seeds=None,
                    progress: bool = True) -> ExperimentResult:
    """The lab on ``data`` (a ``DataSplit`` of images): 1, 2, 10 classes per batch; BN / LN / none."""
    from bncourse.data import ClassPairLoader, DeviceLoader
    from bncourse.train import recompute_bn_statistics

    from bncourse.device import get_device

    data = data.to(get_device(announce=False))  # the whole lab on the training device
    X, y, Xt, yt = data.X_train, data.y_train, data.X_test, data.y_test
    steps = epochs * max(1, len(y) // batch)

    def trial(config, seed):
        out = {}
        for k in KS:
            model = _train(data, config["norm"], k, epochs, widths, batch, lr, seed)
            out[f"eval_acc_{k}"] = _acc_eval(model, Xt, yt)
            matching = ClassPairLoader(Xt, yt, batch_size=batch, classes_per_batch=k,
                                       batches_per_epoch=max(1, 2 * len(yt) // batch), seed=seed + 1)
            out[f"train_mode_acc_{k}"] = _acc_train_mode(model, matching)
            if config["norm"] == "batch":
                shuffled = DeviceLoader(X, y, batch_size=batch, seed=seed + 2)
                recompute_bn_statistics(model, (xb for xb, _ in shuffled))
            out[f"reestimated_acc_{k}"] = _acc_eval(model, Xt, yt)
        for k in KS[:-1]:
            out[f"eval_drop_{k}"] = out[f"eval_acc_{KS[-1]}"] - out[f"eval_acc_{k}"]
            out[f"reestimate_gain_{k}"] = out[f"reestimated_acc_{k}"] - out[f"eval_acc_{k}"]
        return out

    rules = [Better("eval_drop_1", "batch norm", "layer norm", floor=0.02),
             AtLeast("reestimate_gain_1", "batch norm", 0.02)]
    return run_experiment(
        "non-iid-batches", trial, ARMS, rules, seeds=seeds, progress=progress,
        must_learn=MustLearn("eval_acc_10", chance=0.1, margin=0.1),  # every arm learns from 10-class batches
        claim=(f"batches of one class break batch norm's eval mode (its accuracy falls further below the 10-class "
               f"run's than layer norm's does) and re-estimating the running statistics repairs part of it "
               f"(SmallCNN {widths}, Adam lr {lr}, {steps} steps of {batch}, {len(yt)} test images)"))

"""Notebook 6's experiments on a CNN: batch norm or not, before or after the ReLU, and the train/eval lab.

- ``cnn_variants(data, ...)``: ``SmallCNN`` without normalization, with batch norm before the ReLU
  and with batch norm after it, every network He-initialized (``common.he_init``: at PyTorch's
  default init the six-layer CNN without normalization stays at chance) and, with ``lrs``, each at
  its own learning rate chosen on a validation split (the last 15% of the training images, a
  tuning seed that is not a verdict seed); the verdict seeds then train on the whole training set
  at the chosen rate. Returns three results decided on the same runs: batch norm against none,
  before against after, and the training throughput. Every arm must learn (else: invalid). The
  chosen rates are ``result.values(arm, "lr")``; the trained models
  ``result.artifacts[arm][i]["model"]``.
- ``train_mode_lab(models, data, ...)``: the trained batch-norm CNNs (one per seed) evaluated in eval
  mode, in training mode with test batches of several sizes (the forgotten ``model.eval()``), and in
  eval mode after re-estimating the running statistics from shuffled training batches.
"""

from __future__ import annotations

import copy

import torch

from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import Better, Differs

VARIANTS = {
    "none": dict(norm="none"),
    "BN before ReLU": dict(norm="batch", bn_position="before"),
    "BN after ReLU": dict(norm="batch", bn_position="after"),
}


def _val_split(data, fraction: float = 0.15):
    """(train part, validation part) of ``data``'s training set: the last ``fraction`` is validation."""
    n = len(data.y_train)
    cut = n - max(1, int(round(fraction * n)))
    return (data.X_train[:cut], data.y_train[:cut]), (data.X_train[cut:], data.y_train[cut:])


def cnn_variants(data, epochs: int, widths, batch: int, lr: float = 0.05, augment: bool = False,
                 schedule: str = "constant", lrs=None, tune_epochs: int | None = None, seeds=None,
                 progress: bool = True) -> dict[str, ExperimentResult]:
    """Train the three variants for every seed; {"bn_vs_none", "placement", "throughput"} results.

    ``lrs``: learning rates to choose from per arm, on the validation split (None: ``lr`` for all),
    each tuning run ``tune_epochs`` long (default ``epochs``). A chosen rate at the edge of ``lrs``
    censors the verdict.
    """
    from bncourse.experiments.common import he_init
    from bncourse.experiments.harness import default_seeds
    from bncourse.experiments.rules import MustLearn
    from bncourse.models import SmallCNN
    from bncourse.train import TrainConfig, train

    def run(kw, seed, rate, train_data, test_data, n_epochs=epochs):
        torch.manual_seed(seed)
        model = he_init(SmallCNN(data.image_shape[0], data.num_classes, widths=widths, **kw))
        config = TrainConfig(epochs=n_epochs, batch_size=batch, lr=rate, momentum=0.9, augment=augment, seed=seed,
                             schedule=schedule, progress=False, label=str(kw))
        return model, train(model, train_data, test_data, config)

    seed_list = list(seeds) if seeds is not None else default_seeds()
    chosen, censored = {}, {}
    for arm, kw in VARIANTS.items():
        if not lrs:
            chosen[arm], censored[arm] = lr, ""
            continue
        fit_part, val_part = _val_split(data)
        scores = {r: run(kw, 1000 + seed_list[0], r, fit_part, val_part, tune_epochs or epochs)[1].final_test_acc
                  for r in lrs}
        best = max(scores, key=lambda r: (scores[r], -r))
        chosen[arm] = best
        edge = best in (min(lrs), max(lrs)) and len(lrs) > 1
        censored[arm] = f"best rate {best:g} is at the edge of {list(lrs)}" if edge else ""

    def trial(kw, seed):
        arm = next(a for a, v in VARIANTS.items() if v == kw)
        model, h = run(kw, seed, chosen[arm], data.train, data.test)
        return {"final_test_acc": h.final_test_acc, "images_per_s": h.images_per_s, "history": h, "model": model,
                "lr": chosen[arm], "censored": censored[arm]}

    noise = max(0.01, 3 / len(data.y_test))
    how = (f"each at its own SGD rate of {list(lrs)} chosen on a validation split" if lrs else f"SGD lr {lr}")
    base = run_experiment(
        "bn-vs-none", trial, VARIANTS, [Better("final_test_acc", "BN before ReLU", "none", floor=noise)],
        seeds=seed_list, progress=progress, must_learn=MustLearn("final_test_acc", chance=1 / data.num_classes,
                                                                 margin=0.1),
        claim=(f"batch norm beats no normalization (He init, {how}, momentum 0.9, {epochs} epochs)"))

    def again(name, claim, rules):
        return ExperimentResult(name, claim, base.arms, base.seeds, base.metrics, base.artifacts, rules, base.seconds,
                                must_learn=base.must_learn)

    return {
        "bn_vs_none": base,
        "placement": again("bn-placement", "batch norm before the ReLU and after it differ in test accuracy "
                                           f"(by more than {noise:.1%}, noise included)",
                           [Differs("final_test_acc", "BN before ReLU", "BN after ReLU", margin=noise)]),
        "throughput": again("bn-throughput", "batch norm lowers the training throughput (images/s) on this device",
                            [Better("images_per_s", "none", "BN before ReLU", floor=0.0)]),
    }


def train_mode_lab(models: list, data, batch_sizes=(500, 8, 1), n_test: int | None = None, batch: int = 64,
                   seeds=None, progress: bool = True) -> ExperimentResult:
    """Eval mode against training mode on test batches of ``batch_sizes``, and after re-estimating.

    ``models[i]`` is the trained batch-norm network of the i-th seed (each is copied, never changed).
    Rules: training mode with test batches of 8 and of 1 scores lower than eval mode (more than one
    point, noise included).
    """
    from bncourse.data import DeviceLoader
    from bncourse.models import norm_layers
    from bncourse.train import evaluate, recompute_bn_statistics

    seeds = list(seeds) if seeds is not None else list(range(len(models)))
    by_seed = dict(zip(seeds, models))
    n = min(n_test or len(data.y_test), len(data.y_test))
    X, y = data.X_test[:n], data.y_test[:n]

    def trial(config, seed):
        model = copy.deepcopy(by_seed[seed])
        if config["mode"] == "eval":
            return {"test_acc": evaluate(model, (X, y))[1], "running_mean_change": 0.0}
        if config["mode"] == "reestimated":
            shuffled = DeviceLoader(data.X_train, data.y_train, batch_size=batch, seed=seed + 2,
                                    device=next(model.parameters()).device)
            recompute_bn_statistics(model, (xb for xb, _ in shuffled))
            return {"test_acc": evaluate(model, (X, y))[1], "running_mean_change": 0.0}
        before = norm_layers(model)[0].running_mean.clone()
        model.train()  # the mistake: no model.eval()
        bs, dev = config["batch"], next(model.parameters()).device
        Xd, yd = X.to(dev), y.to(dev)
        with torch.no_grad():
            hits = sum((model(Xd[i:i + bs]).argmax(1) == yd[i:i + bs]).sum().item() for i in range(0, n, bs))
        return {"test_acc": hits / n,
                "running_mean_change": (norm_layers(model)[0].running_mean - before).abs().max().item()}

    arms = {"eval mode": {"mode": "eval"}}
    arms.update({f"training mode, batches of {b}": {"mode": "train", "batch": b} for b in batch_sizes})
    arms["eval mode, statistics re-estimated"] = {"mode": "reestimated"}
    noise = max(0.01, 3 / n)
    rules = [Better("test_acc", "eval mode", f"training mode, batches of {b}", floor=noise)
             for b in batch_sizes if b <= 8]
    return run_experiment(
        "train-eval-lab", trial, arms, rules, seeds=seeds, progress=progress, trained=False,
        claim=(f"forgetting model.eval() costs accuracy when the test batches are small (8, 1): eval mode beats "
               f"training mode by more than {noise:.1%} ({n} test images)"))

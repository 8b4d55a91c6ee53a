"""The explainers' misstatements, and sequences: demonstrations (one computation, no spread) and
one trained experiment.

Each function tests the claim *as the explainer states it*; a misstatement that the computation
refutes comes out ``contradicted``. ``shuffled_labels``, ``padding_in_sequences``, ``dropout_rate``
and ``transformer_norms`` are *demonstrations* (a construction, an API fact, a count: they cannot
come out otherwise and are shown without a spread), and so is ``skew_survives_standardization``
(algebra: an affine map keeps a distribution's shape); ``trained_sequences`` trains (notebook 9's experiment, the same call and sizes).

- ``shuffled_labels()`` (``not-supervised``: "batch norm is a supervised learning method"): the same
  network and the same batches, once with the true labels and once with shuffled labels, each
  through a training-mode forward pass, the loss and the backward pass: the batch-norm layers'
  outputs and running statistics are compared. They are identical: batch norm's statistics never
  see a label (the *weights* a network learns do depend on labels, through the loss, with or
  without batch norm).
- ``skew_survives_standardization()`` (``standardized-is-normal``): a skewed feature (exponential)
  standardized, and passed through ``nn.BatchNorm1d``: its skewness and its distance from a normal
  distribution (Kolmogorov-Smirnov) stay what they were; standardizing changes location and scale,
  not shape.
- ``padding_in_sequences()`` (``sequences-hard``): sequences of different lengths padded with zeros
  to a common length. Batch norm over (N, C, L) counts the padding in its statistics, so the outputs
  at a sequence's *real* positions change when the batch is padded further; layer norm normalizes
  each position over its features and is unaffected.
- ``dropout_rate()`` (``dropout-rate``: batch norm "reduces the dropout rate"): the fraction of units
  a dropout layer zeroes, with and without a batch-norm layer before it.
- ``transformer_norms()`` (``nlp-standard``): the normalization layers inside PyTorch's own
  ``nn.Transformer`` (the architecture of machine translation since 2017): counted.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bncourse.experiments.common import harder_digits, mlp
from bncourse.experiments.demonstration import Demonstration, demonstrate
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.rules import MustLearn
from bncourse.runtime import pick


# ---------------------------------------------------------------------------------------------
# Labels
# ---------------------------------------------------------------------------------------------


def labels_trial(config: dict, seed: int) -> dict:
    task = harder_digits(seed)
    torch.manual_seed(seed)
    model = mlp(task.num_features, task.num_classes, 64, 3, "relu", norm="batch")
    bns = [m for m in model if isinstance(m, nn.BatchNorm1d)]
    outs: list[torch.Tensor] = []
    hooks = [m.register_forward_hook(lambda mod, inp, out: outs.append(out.detach().flatten())) for m in bns]
    g = torch.Generator().manual_seed(seed)
    y = task.y_train
    if config["labels"] == "shuffled":
        y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(seed + 99))]
    order = torch.randperm(len(y), generator=g)
    model.train()
    for start in range(0, pick(fast=640, full=len(y)), 64):
        idx = order[start:start + 64]
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(task.X_train[idx]), y[idx]).backward()  # labels used by the loss only
    for h in hooks:
        h.remove()
    stats = torch.cat([torch.cat([m.running_mean, m.running_var]) for m in bns])
    first_grad = next(model.parameters()).grad.flatten()
    return {"bn_outputs": torch.cat(outs).double().numpy(), "bn_running_stats": stats.double().numpy(),
            "weight_grad": first_grad.double().numpy()}


def shuffled_labels(seeds=None, progress: bool = True) -> Demonstration:
    """A demonstration: batch-norm outputs and running statistics with true against shuffled labels.

    Same weights, same batches, one training-mode pass of the loss and its backward per batch (no
    weight update: what is shown is what the layer computes from its inputs, which is the claim).
    """
    def compute():
        ref, cur = labels_trial({"labels": "true"}, 0), labels_trial({"labels": "shuffled"}, 0)
        return {"max change of batch-norm outputs": float(np.abs(cur["bn_outputs"] - ref["bn_outputs"]).max()),
                "max change of running statistics": float(np.abs(cur["bn_running_stats"]
                                                                 - ref["bn_running_stats"]).max()),
                "max change of the first layer's weight gradient": float(np.abs(cur["weight_grad"]
                                                                                - ref["weight_grad"]).max())}

    return demonstrate(
        "shuffled-labels", claim="batch norm is a supervised learning method",
        compute=compute,
        claim_holds=lambda f: f["max change of batch-norm outputs"] > 1e-6 or f["max change of running statistics"] > 1e-6,
        expectation=("batch norm's outputs or running statistics change when the labels are shuffled (same weights, "
                     "same batches; the weight gradients, through the loss, do change)"))


# ---------------------------------------------------------------------------------------------
# Skew
# ---------------------------------------------------------------------------------------------


def _skew(x: np.ndarray) -> float:
    z = (x - x.mean()) / x.std()
    return float(np.mean(z ** 3))


def _ks_normal(x: np.ndarray) -> float:
    """Kolmogorov-Smirnov distance between the standardized sample and N(0, 1)."""
    from math import erf, sqrt

    z = np.sort((x - x.mean()) / x.std())
    cdf = np.array([0.5 * (1 + erf(v / sqrt(2))) for v in z])
    n = len(z)
    return float(max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n)))


def skew_trial(config: dict, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    n = pick(fast=2000, full=20000)
    x = rng.standard_normal(n) if config["feature"] == "normal" else rng.exponential(size=n)
    standardized = (x - x.mean()) / x.std()
    bn = nn.BatchNorm1d(1).double().train()
    with torch.no_grad():
        through_bn = bn(torch.from_numpy(x)[:, None]).numpy().ravel()
    return {"skewness_before": _skew(x), "skewness_after": _skew(standardized),
            "skewness_after_batchnorm": _skew(through_bn), "ks_distance_to_normal": _ks_normal(standardized),
            "mean_after": float(standardized.mean()), "std_after": float(standardized.std())}


def skew_survives_standardization(seeds=None, progress: bool = True) -> Demonstration:
    """A demonstration: a skewed feature stays skewed after standardization (and after batch norm).

    Algebra, shown on one sample: standardizing is an affine map ``(x - mean) / std``, which moves and
    rescales a distribution and keeps its shape (skewness, kurtosis). One sample of 20,000 (2,000 in
    fast mode) from an exponential and from a normal distribution, standardized and passed through
    ``nn.BatchNorm1d``: the skewness and the Kolmogorov-Smirnov distance to N(0, 1). ``seeds`` and
    ``progress`` are accepted for the claims runner and unused: nothing here is sampled over seeds.
    """
    def compute():
        exp, normal = skew_trial({"feature": "exponential"}, 0), skew_trial({"feature": "normal"}, 0)
        return {"skewness of the exponential feature, before": exp["skewness_before"],
                "skewness of the exponential feature, standardized": exp["skewness_after"],
                "skewness of the exponential feature, through nn.BatchNorm1d": exp["skewness_after_batchnorm"],
                "skewness of the normal feature, standardized": normal["skewness_after"],
                "KS distance to N(0, 1), exponential standardized": exp["ks_distance_to_normal"],
                "KS distance to N(0, 1), normal standardized": normal["ks_distance_to_normal"],
                "mean, std of the exponential standardized": f"{exp['mean_after']:.3g}, {exp['std_after']:.3g}"}

    return demonstrate(
        "skew-survives-standardization",
        claim="after standardization a feature is normally distributed",
        compute=compute,
        claim_holds=lambda f: (abs(f["skewness of the exponential feature, standardized"]) < 0.5
                               and f["KS distance to N(0, 1), exponential standardized"] < 0.05),
        expectation=("a standardized exponential feature has the skewness of a normal one (|skewness| < 0.5) and "
                     "lies within a Kolmogorov-Smirnov distance of 0.05 of N(0, 1)"))


# ---------------------------------------------------------------------------------------------
# Padding
# ---------------------------------------------------------------------------------------------


def padding_trial(config: dict, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    N, C = 16, 32
    lengths = torch.randint(5, 21, (N,), generator=g)
    tokens = [torch.randn(C, int(n), generator=g) + 0.5 for n in lengths]

    def batch(L):
        x = torch.zeros(N, C, L)
        for i, t in enumerate(tokens):
            x[i, :, :t.shape[1]] = t
        return x

    torch.manual_seed(seed)
    layer = nn.BatchNorm1d(C) if config["norm"] == "batch" else nn.LayerNorm(C)
    layer.train()

    def run(x):
        with torch.no_grad():
            return layer(x) if config["norm"] == "batch" else layer(x.transpose(1, 2)).transpose(1, 2)

    short, long = run(batch(int(lengths.max()))), run(batch(3 * int(lengths.max())))
    real = torch.cat([(short[i, :, :n] - long[i, :, :n]).flatten() for i, n in enumerate(lengths)])
    ref = torch.cat([short[i, :, :n].flatten() for i, n in enumerate(lengths)])
    return {"output_change_from_padding": (real.norm() / ref.norm()).item()}


def padding_in_sequences(seeds=None, progress: bool = True) -> Demonstration:
    """A demonstration: how much a sequence's real positions change when its batch is padded to 3x the length.

    A construction (an untrained layer): batch norm's statistics count the padding, layer norm's do
    not. It shows the mechanism; whether it makes batch norm *hard to use* on sequences is the
    trained experiment ``trained_sequences``.
    """
    def compute():
        return {"relative change, batch norm": padding_trial({"norm": "batch"}, 0)["output_change_from_padding"],
                "relative change, layer norm": padding_trial({"norm": "layer"}, 0)["output_change_from_padding"]}

    return demonstrate(
        "padding-in-sequences", claim="padding a batch of sequences changes batch norm's outputs at the real positions",
        compute=compute,
        claim_holds=lambda f: f["relative change, batch norm"] > 0.01 > f["relative change, layer norm"],
        expectation=("padding 16 sequences (lengths 5-20, 32 features) to 3x the longest length changes batch norm's "
                     "outputs at the real positions by more than 1% and layer norm's by less"))


def trained_sequences(seeds=None, progress: bool = True) -> ExperimentResult:
    """Claim ``sequences-hard`` trained: notebook 9's padded-sequence experiment, the same call and sizes.

    ``norm_family.run_sequences``: a per-time-step network with batch norm whose statistics count the
    padding, batch norm with a mask, and layer norm, trained with Adam; its rule (fixed there) asks
    whether the padded batch norm opens a train/eval gap that a mask or layer norm closes. Every arm
    must learn (eval accuracy above chance 0.5 + 0.1: the task is binary).
    """
    from bncourse.experiments.norm_family import run_sequences

    result = run_sequences(n_train=pick(fast=500, full=2000, grading=300), steps=pick(fast=100, full=300, grading=60),
                           seeds=seeds, progress=progress)
    result.must_learn = MustLearn("eval_acc", chance=0.5, margin=0.1)
    return result


# ---------------------------------------------------------------------------------------------
# Dropout rate
# ---------------------------------------------------------------------------------------------


def dropout_trial(config: dict, seed: int) -> dict:
    task = harder_digits(seed)
    torch.manual_seed(seed)
    layers = [nn.Linear(task.num_features, 256)]
    if config["bn"]:
        layers.append(nn.BatchNorm1d(256))
    drop = nn.Dropout(0.5)
    layers += [nn.Tanh(), drop, nn.Linear(256, 10)]  # tanh: no exact zeros before the dropout
    model = nn.Sequential(*layers).train()
    seen = {}
    drop.register_forward_hook(lambda m, i, o: seen.update(inp=i[0].detach(), out=o.detach()))
    with torch.no_grad():
        model(task.X_train[:512])
    nonzero = seen["inp"] != 0
    return {"dropped_fraction": ((seen["out"] == 0) & nonzero).sum().item() / nonzero.sum().item()}


def dropout_rate(seeds=None, progress: bool = True) -> Demonstration:
    """A demonstration: the fraction of units Dropout(0.5) zeroes, with and without batch norm before it.

    Explainer 003 itself says the rate p is a hyperparameter that batch norm does not change; the
    demonstration shows the reading "batch norm lowers the rate" is not what the layers compute.
    """
    def compute():
        return {"fraction dropped, without batch norm": dropout_trial({"bn": False}, 0)["dropped_fraction"],
                "fraction dropped, with batch norm": dropout_trial({"bn": True}, 0)["dropped_fraction"]}

    return demonstrate(
        "dropout-rate", claim="batch norm reduces the dropout rate", compute=compute,
        claim_holds=lambda f: f["fraction dropped, with batch norm"] < f["fraction dropped, without batch norm"] - 0.01,
        expectation=("with a batch-norm layer before Dropout(p=0.5) the fraction of units zeroed is lower, by more "
                     "than 0.01, than without (training mode, 512 examples x 256 units)"))


# ---------------------------------------------------------------------------------------------
# NLP
# ---------------------------------------------------------------------------------------------


def transformer_trial(config: dict, seed: int) -> dict:
    torch.manual_seed(seed)
    model = nn.Transformer(d_model=64, nhead=4, num_encoder_layers=6, num_decoder_layers=6, dim_feedforward=128,
                           batch_first=True)
    return {"layers_in_nn_Transformer": sum(isinstance(m, config["kind"]) for m in model.modules())}


def transformer_norms(seeds=None, progress: bool = True) -> Demonstration:
    """A count: batch-norm and layer-norm layers inside ``torch.nn.Transformer`` (6 + 6 layers)."""
    def compute():
        return {"batch-norm layers": transformer_trial({"kind": nn.modules.batchnorm._BatchNorm}, 0)[
                    "layers_in_nn_Transformer"],
                "layer-norm layers": transformer_trial({"kind": nn.LayerNorm}, 0)["layers_in_nn_Transformer"]}

    return demonstrate(
        "transformer-norms", claim="batch norm is a standard tool in NLP and machine translation", compute=compute,
        claim_holds=lambda f: f["batch-norm layers"] > f["layer-norm layers"],
        expectation=("PyTorch's nn.Transformer (the machine-translation architecture) holds more batch-norm than "
                     "layer-norm layers"))

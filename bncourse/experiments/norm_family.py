"""Experiments for "Beyond batch norm": padded sequences and batch renorm.

Each ``run_*`` function runs a trial over seeds and arms through ``bncourse.experiments.harness``
with its decision rule written down before the run, and returns the ``ExperimentResult``.

* small batches: in ``bncourse.experiments.small_batches`` (each arm at its own tuned learning
  rate, with a fixed-epoch and a fixed-step budget).
* ``run_sequences``: variable-length sequences padded to a common length; a per-time-step MLP
  with batch norm whose statistics include the padding, batch norm with a mask, or layer norm
  per time step. The train/eval gap: accuracy in training mode on padded batches (what the
  network saw while training) minus accuracy in eval mode on the same test sequences without
  padding (each length bucket on its own, as a deployed model would see them).
* ``run_renorm``: batch norm against batch renormalization (``bncourse.renorm.BatchRenorm``)
  with small batches and with non-i.i.d. batches (two classes per batch).

The models are tiny, so the runs use one torch thread (``small_batches.one_torch_thread``).
"""

from __future__ import annotations

import copy
from dataclasses import replace
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bncourse.data import ClassPairLoader, DataSplit, load_digits
from bncourse.experiments.experiment_result import ExperimentResult
from bncourse.experiments.harness import run_experiment
from bncourse.experiments.rules import AtMost, Better
from bncourse.experiments.small_batches import one_torch_thread
from bncourse.models import SmallCNN
from bncourse.renorm import BatchRenorm
from bncourse.train import TrainConfig, evaluate, train

__all__ = [
    "harder_digits",
    "make_sequences", "MaskedBatchNorm", "SequenceNet", "sequence_trial", "run_sequences",
    "renorm_trial", "run_renorm",
]


# ---------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------


def harder_digits(noise: float = 0.5, shift: int = 1, seed: int = 0) -> DataSplit:
    """scikit-learn digits (N, 1, 8, 8), each image shifted by up to ``shift`` pixels and with
    Gaussian noise of std ``noise`` added (in units of the standardized pixels). Offline, seeded;
    the same corruption for every arm."""
    data = load_digits(seed=0)
    g = torch.Generator().manual_seed(seed)

    def corrupt(X: torch.Tensor) -> torch.Tensor:
        out = torch.empty_like(X)
        dx = torch.randint(-shift, shift + 1, (len(X),), generator=g)
        dy = torch.randint(-shift, shift + 1, (len(X),), generator=g)
        for i in range(len(X)):
            out[i] = torch.roll(X[i], shifts=(int(dy[i]), int(dx[i])), dims=(1, 2))
        return out + noise * torch.randn(X.shape, generator=g)

    return replace(data, name="harder digits", X_train=corrupt(data.X_train), X_test=corrupt(data.X_test),
                   note=f"scikit-learn digits, shifted up to {shift} px and with noise std {noise} (offline)")


# ---------------------------------------------------------------------------------------------
# The CNN of the renorm experiment
# ---------------------------------------------------------------------------------------------


def _cnn(norm, seed: int, widths=(16, 32)) -> nn.Module:
    torch.manual_seed(seed)
    return SmallCNN(in_channels=1, num_classes=10, widths=widths, norm=norm)


# ---------------------------------------------------------------------------------------------
# Sequences
# ---------------------------------------------------------------------------------------------


def make_sequences(n: int, seed: int, T: int = 24, d: int = 4, min_len: int = 4) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A synthetic sequence task: X (n, T, d) zero-padded after each sequence's length, lengths (n,), y (n,).

    Each time step is d features on a large offset and scale (so normalization matters); the
    label says whether feature 0 exceeds feature 1 on average over the sequence's valid steps.
    """
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(min_len, T + 1, (n,), generator=g)
    X = torch.randn(n, T, d, generator=g) * 3.0 + 5.0
    mask = torch.arange(T)[None, :] < lengths[:, None]
    X = X * mask[:, :, None]
    y = ((X[:, :, 0] - X[:, :, 1]).sum(1) > 0).long()
    return X, lengths, y


class MaskedBatchNorm(nn.Module):
    """Batch norm over (N, T, H) whose statistics use only the valid (unpadded) time steps.

    ``forward(h, mask)``: h (N, T, H), mask (N, T) bool. Running statistics as in nn.BatchNorm1d
    (momentum 0.1 on the new batch, unbiased running_var); padded positions are normalized too
    (they are masked out downstream) but never enter a statistic.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1):
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.training:
            valid = h[mask]  # (number of valid steps, H)
            mean, var = valid.mean(0), valid.var(0, unbiased=False)
            k = valid.shape[0]
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach() * k / max(k - 1, 1), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        return (h - mean) / torch.sqrt(var + self.eps) * self.weight + self.bias


class SequenceNet(nn.Module):
    """Per-time-step MLP (d -> H -> H, each Linear -> norm -> ReLU), masked mean over time, Linear -> 2.

    norm: "bn_padded" (nn.BatchNorm1d over every position, padding included), "bn_masked"
    (``MaskedBatchNorm``), "ln" (nn.LayerNorm(H) per time step) or "none".
    Shape: forward(X (N, T, d), mask (N, T)) -> logits (N, 2).
    """

    def __init__(self, norm: str, d: int = 4, hidden: int = 32):
        super().__init__()
        if norm not in ("bn_padded", "bn_masked", "ln", "none"):
            raise ValueError(f"norm must be 'bn_padded', 'bn_masked', 'ln' or 'none', got {norm!r}")
        self.norm = norm
        self.linears = nn.ModuleList([nn.Linear(d, hidden), nn.Linear(hidden, hidden)])
        make = {"bn_padded": lambda: nn.BatchNorm1d(hidden), "bn_masked": lambda: MaskedBatchNorm(hidden),
                "ln": lambda: nn.LayerNorm(hidden), "none": nn.Identity}[norm]
        self.norms = nn.ModuleList([make(), make()])
        self.head = nn.Linear(hidden, 2)

    def forward(self, X: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = X
        for linear, norm in zip(self.linears, self.norms):
            h = linear(h)
            if self.norm == "bn_padded":
                h = norm(h.reshape(-1, h.shape[-1])).reshape(h.shape)
            elif self.norm == "bn_masked":
                h = norm(h, mask)
            else:
                h = norm(h)
            h = torch.relu(h)
        m = mask[:, :, None].to(h.dtype)
        return self.head((h * m).sum(1) / m.sum(1).clamp_min(1))


def _seq_acc(model: SequenceNet, X, lengths, y, train_mode: bool, padded: bool, batch_size: int) -> float:
    model = copy.deepcopy(model)  # a train-mode pass would update the running statistics
    model.train(train_mode)
    T = X.shape[1]
    correct = 0
    with torch.no_grad():
        if padded:
            for i in range(0, len(y), batch_size):
                xb, lb, yb = X[i:i + batch_size], lengths[i:i + batch_size], y[i:i + batch_size]
                if len(yb) < 2:
                    continue
                mask = torch.arange(T)[None, :] < lb[:, None]
                correct += (model(xb, mask).argmax(1) == yb).sum().item()
            return correct / (len(y) // batch_size * batch_size + (len(y) % batch_size if len(y) % batch_size >= 2 else 0))
        for L in torch.unique(lengths).tolist():  # each length bucket alone: no padding at all
            idx = lengths == L
            xb = X[idx][:, :L]
            mask = torch.ones(xb.shape[:2], dtype=torch.bool)
            correct += (model(xb, mask).argmax(1) == y[idx]).sum().item()
    return correct / len(y)


def sequence_trial(config: dict, seed: int) -> dict:
    """config: norm, n_train, steps, batch_size, lr -> train-mode and eval-mode accuracy and their gap."""
    X, lengths, y = make_sequences(config["n_train"], seed=1000 + seed)
    Xt, lt, yt = make_sequences(config.get("n_test", 1000), seed=5000 + seed)
    torch.manual_seed(seed)
    model = SequenceNet(config["norm"])
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    g = torch.Generator().manual_seed(seed)
    T, b = X.shape[1], config["batch_size"]
    model.train()
    for _ in range(config["steps"]):
        idx = torch.randint(0, len(y), (b,), generator=g)
        mask = torch.arange(T)[None, :] < lengths[idx][:, None]
        loss = F.cross_entropy(model(X[idx], mask), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    train_mode = _seq_acc(model, Xt, lt, yt, train_mode=True, padded=True, batch_size=b)
    eval_unpadded = _seq_acc(model, Xt, lt, yt, train_mode=False, padded=False, batch_size=b)
    eval_padded = _seq_acc(model, Xt, lt, yt, train_mode=False, padded=True, batch_size=b)
    return {"train_mode_acc": train_mode, "eval_acc": eval_unpadded, "eval_acc_padded": eval_padded,
            "gap": train_mode - eval_unpadded}


def run_sequences(n_train: int = 2000, steps: int = 300, batch_size: int = 32, lr: float = 3e-3,
                  norms: Sequence[str] = ("bn_padded", "bn_masked", "ln"), seeds=None,
                  progress: bool = True) -> ExperimentResult:
    """The train/eval gap of each normalization on padded sequences.

    Decision rule, fixed before the run: batch norm with the padding in its statistics has a
    larger gap than with a mask, and than layer norm, each by more than 2 spreads and 2 points;
    the masked batch norm's gap is at most 2 points.
    """
    arms = {n: {"norm": n, "n_train": n_train, "steps": steps, "batch_size": batch_size, "lr": lr} for n in norms}
    rules = [Better("gap", "bn_masked", "bn_padded", higher_is_better=False, floor=0.02),
             Better("gap", "ln", "bn_padded", higher_is_better=False, floor=0.02),
             AtMost("gap", "bn_masked", 0.02)]
    with one_torch_thread():
        return run_experiment("padded-sequences", sequence_trial, arms, rules, seeds=seeds, progress=progress,
                              claim="padding inside batch norm's statistics opens a train/eval gap; a mask or layer norm closes it")


# ---------------------------------------------------------------------------------------------
# Batch renormalization
# ---------------------------------------------------------------------------------------------


def renorm_trial(config: dict, seed: int) -> dict:
    """config: data, norm ("batch" or "renorm"), batch_size, steps, lr, non_iid -> {"test_acc"}."""
    data: DataSplit = config["data"]
    steps = int(config["steps"])
    norm = "batch" if config["norm"] == "batch" else (lambda c: BatchRenorm(c, warmup_steps=max(1, steps // 5)))
    model = _cnn(norm, seed)
    b = int(config["batch_size"])
    loader = (ClassPairLoader(data.X_train, data.y_train, batch_size=b, classes_per_batch=2, seed=seed)
              if config["non_iid"] else data.train)
    cfg = TrainConfig(steps=steps, batch_size=b, lr=config["lr"], momentum=0.9, seed=seed, progress=False,
                      track_train_acc=False, device="cpu")
    train(model, loader, None, cfg)
    _, acc = evaluate(model, data.test, device="cpu")
    return {"test_acc": acc}


def run_renorm(data: DataSplit, small_batch: int = 4, small_steps: int = 300, non_iid_batch: int = 32,
               non_iid_steps: int = 150, lr_small: float = 0.01, lr_non_iid: float = 0.05, seeds=None,
               progress: bool = True) -> ExperimentResult:
    """Batch norm against batch renorm, with small batches and with two-class batches.

    Decision rule, fixed before the run (Ioffe 2017's claim): renorm's test accuracy beats batch
    norm's in each setting by more than 2 spreads of the paired difference and 1 point.
    """
    arms = {}
    for norm in ("batch", "renorm"):
        arms[f"{norm}, B={small_batch}"] = {"data": data, "norm": norm, "batch_size": small_batch,
                                            "steps": small_steps, "lr": lr_small, "non_iid": False}
        arms[f"{norm}, 2 classes/batch"] = {"data": data, "norm": norm, "batch_size": non_iid_batch,
                                            "steps": non_iid_steps, "lr": lr_non_iid, "non_iid": True}
    rules = [Better("test_acc", f"renorm, B={small_batch}", f"batch, B={small_batch}", floor=0.01),
             Better("test_acc", "renorm, 2 classes/batch", "batch, 2 classes/batch", floor=0.01)]
    with one_torch_thread():
        return run_experiment("batch-renorm", renorm_trial, arms, rules, seeds=seeds, progress=progress,
                              claim="batch renorm beats batch norm with small or non-i.i.d. batches (Ioffe 2017)")

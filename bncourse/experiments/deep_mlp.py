"""The deep ReLU MLP of the optimization experiments, with plain or noisy batch norm, on digits.

``DeepMLP(in_features, num_classes, Setup(norm=...))``: in -> [Linear -> norm -> ReLU] x depth ->
Linear, He-initialized; ``norm`` is "none", "batch" (``nn.BatchNorm1d``) or "noisy"
(``NoisyBatchNorm1d``: batch norm followed by a random per-step, per-unit scale and shift).
``_fresh(norm, seed, lr)`` gives a seeded one on digits with a plain-SGD stepper. Used by
``bncourse.experiments.optimization``; measured with ``bncourse.experiments.step_measures``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass


NORMS = ("none", "batch", "noisy")


@dataclass(frozen=True)
class Setup:
    """One training run's settings (the same for every arm of an experiment)."""

    norm: str = "none"  # "none", "batch" (nn.BatchNorm1d before each ReLU) or "noisy" (batch norm + noise)
    depth: int = 6  # hidden layers: Linear -> [norm] -> ReLU, then a Linear output layer
    width: int = 100  # units per hidden layer
    lr: float = 0.1  # plain SGD, no momentum, the same for every arm
    batch_size: int = 64  # B
    steps: int = 300  # SGD steps
    every: int = 10  # measure every this many steps
    noise_scale: tuple[float, float] = (0.5, 1.5)  # noisy: scale ~ U(lo, hi) per unit, per step
    noise_shift: float = 0.5  # noisy: shift ~ U(-a, a) per unit, per step
    probe: int = 256  # training examples in the fixed probe batch (input drift)




# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _digits():
    """Digits as flat float32 tensors: X_train (N, 64), y_train, X_test, y_test (standardized)."""
    from bncourse.data import load_digits

    d = load_digits()
    return (d.X_train.flatten(1), d.y_train, d.X_test.flatten(1), d.y_test)


@functools.lru_cache(maxsize=1)
def _torch_modules():
    import torch
    from torch import nn

    class NoisyBatchNorm1d(nn.BatchNorm1d):
        """``nn.BatchNorm1d`` followed, in training mode, by this step's per-unit scale and shift.

        ``resample(generator)`` draws a new scale ~ U(lo, hi) and shift ~ U(-a, a) for every unit;
        call it once per training step. In eval mode there is no noise. Shape: (N, D) -> (N, D).
        """

        def __init__(self, num_features: int, scale=(0.5, 1.5), shift: float = 0.5):
            super().__init__(num_features)
            self.scale_range, self.shift_range = tuple(scale), float(shift)
            self.register_buffer("noise_scale", torch.ones(num_features))
            self.register_buffer("noise_shift", torch.zeros(num_features))

        def resample(self, generator) -> None:
            lo, hi = self.scale_range
            d = self.num_features
            self.noise_scale.copy_(lo + (hi - lo) * torch.rand(d, generator=generator))
            self.noise_shift.copy_(self.shift_range * (2 * torch.rand(d, generator=generator) - 1))

        def forward(self, x):
            out = super().forward(x)
            return out * self.noise_scale + self.noise_shift if self.training else out

    class DeepMLP(nn.Module):
        """in -> [Linear -> norm -> ReLU] x depth -> Linear -> classes, He-initialized.

        ``forward(x, collect=True)`` also returns the input of every Linear after the first
        (what each layer sees from the layers below). ``block_of[name]`` gives each parameter's
        block (0 = the first hidden layer, ``depth`` = the output layer).

        Shape: x (N, D) -> logits (N, C).
        """

        def __init__(self, in_features: int, num_classes: int, setup: Setup):
            super().__init__()
            if setup.norm not in NORMS:
                raise ValueError(f"norm must be one of {NORMS}, got {setup.norm!r}")
            self.linears = nn.ModuleList()
            self.norms = nn.ModuleList()
            d = in_features
            for _ in range(setup.depth):
                self.linears.append(nn.Linear(d, setup.width))
                if setup.norm == "batch":
                    self.norms.append(nn.BatchNorm1d(setup.width))
                elif setup.norm == "noisy":
                    self.norms.append(NoisyBatchNorm1d(setup.width, setup.noise_scale, setup.noise_shift))
                else:
                    self.norms.append(nn.Identity())
                d = setup.width
            self.linears.append(nn.Linear(d, num_classes))
            for lin in self.linears:
                nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
                nn.init.zeros_(lin.bias)
            self.block_of = {name: int(name.split(".")[1]) for name, _ in self.named_parameters()}

        def forward(self, x, collect: bool = False):
            inputs = []
            for lin, norm in zip(self.linears[:-1], self.norms):
                x = torch.relu(norm(lin(x)))
                inputs.append(x)
            out = self.linears[-1](x)
            return (out, inputs) if collect else out

        def resample_noise(self, generator) -> None:
            for m in self.norms:
                if isinstance(m, NoisyBatchNorm1d):
                    m.resample(generator)

    return NoisyBatchNorm1d, DeepMLP


def NoisyBatchNorm1d(num_features: int, scale=(0.5, 1.5), shift: float = 0.5):  # noqa: N802 - a module
    """Batch norm + a per-step, per-unit random scale and shift (see ``_torch_modules``)."""
    return _torch_modules()[0](num_features, scale, shift)


def DeepMLP(in_features: int, num_classes: int, setup: Setup):  # noqa: N802 - a module
    """The experiments' deep ReLU MLP (see ``_torch_modules``)."""
    return _torch_modules()[1](in_features, num_classes, setup)


def _fresh(norm: str, seed: int, lr: float):
    """A seeded MLP on digits with its data and noise generators, and an SGD stepper."""
    import torch
    import torch.nn.functional as F

    from bncourse.device import configure_cpu_threads, set_seed

    configure_cpu_threads()
    X, y, _, _ = _digits()
    set_seed(seed)
    model = DeepMLP(X.shape[1], int(y.max()) + 1, Setup(norm=norm, lr=lr))
    gen = torch.Generator().manual_seed(10_000 + seed)
    noise_gen = torch.Generator().manual_seed(20_000 + seed)
    model.train()

    def next_batch():
        idx = torch.randint(len(y), (Setup.batch_size,), generator=gen)
        model.resample_noise(noise_gen)
        return X[idx], y[idx]

    def sgd_steps(n: int) -> None:
        for _ in range(n):
            xb, yb = next_batch()
            grads = torch.autograd.grad(F.cross_entropy(model(xb), yb), list(model.parameters()))
            with torch.no_grad():
                for p, g in zip(model.parameters(), grads):
                    p -= lr * g

    return model, X, next_batch, sgd_steps

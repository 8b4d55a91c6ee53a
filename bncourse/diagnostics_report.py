"""What ``bncourse.diagnostics`` recorded, as plain data: per layer, per parameter, histogram samples.

``Diagnostics.report()`` returns a ``DiagnosticsReport``: ``layers`` (name -> ``LayerTrace``),
``params`` (name -> ``ParamTrace``), ``snapshots`` (``Snapshot`` samples for histograms). Every
series is a numpy array with one entry per recorded step, next to the array of those steps.
``_Gatherer`` moves the statistics, kept as tensors on the model's device during training, to
numpy in one transfer per device.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

KINDS = ("tanh", "sigmoid", "relu")


# ---------------------------------------------------------------------------------------------


@dataclass
class LayerTrace:
    """One layer's output over the recorded steps. Arrays have shape (S,), one entry per step.

    ``saturated`` is NaN for layers that are not tanh, sigmoid or ReLU. Gradient arrays have their
    own steps (a layer whose output needs no gradient has none).
    """

    name: str
    module_type: str
    kind: str | None
    steps: np.ndarray
    act_mean: np.ndarray
    act_std: np.ndarray
    saturated: np.ndarray
    grad_steps: np.ndarray
    grad_mean: np.ndarray
    grad_std: np.ndarray


@dataclass
class ParamTrace:
    """One parameter over the recorded steps: its gradient, and the size of each update.

    ``grad_to_data``: std(grad) / std(data) per step (Karpathy's gradient-to-data ratio).
    ``update_to_data``: std(update) / std(data before the update), per step that had one.
    """

    name: str
    shape: tuple[int, ...]
    steps: np.ndarray
    grad_mean: np.ndarray
    grad_std: np.ndarray
    grad_to_data: np.ndarray
    update_steps: np.ndarray
    update_to_data: np.ndarray

    @property
    def is_weight(self) -> bool:
        """True for matrices and kernels (2 or more dimensions), the ones Karpathy plots."""
        return len(self.shape) >= 2

    @property
    def log10_update_to_data(self) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log10(self.update_to_data)


@dataclass
class Snapshot:
    """A sample of one layer's activations and output gradients at one step, for histograms."""

    layer: str
    kind: str | None
    step: int
    activations: np.ndarray  # (M,) values, at most ``max_values`` of them
    gradients: np.ndarray | None  # (M,) or None when the output needed no gradient
    saturated: float  # over the whole batch, not only the sample (NaN when kind is None)


@dataclass
class DiagnosticsReport:
    """Everything recorded, as numpy arrays: per layer, per parameter, and histogram samples."""

    layers: dict[str, LayerTrace]
    params: dict[str, ParamTrace]
    snapshots: list[Snapshot] = field(default_factory=list)
    steps: int = 0

    def activation_layers(self, kinds: Sequence[str] = KINDS) -> list[LayerTrace]:
        """The nonlinearities (tanh, sigmoid, ReLU), in the order the forward pass met them."""
        return [t for t in self.layers.values() if t.kind in kinds]

    def weights(self) -> list[ParamTrace]:
        """Parameters with 2 or more dimensions (weights, kernels), in the model's order."""
        return [p for p in self.params.values() if p.is_weight]

    def snapshots_at(self, step: int, kinds: Sequence[str] | None = KINDS) -> list[Snapshot]:
        return [s for s in self.snapshots if s.step == step and (kinds is None or s.kind in kinds)]

    def __repr__(self) -> str:
        return (f"DiagnosticsReport({self.steps} steps, {len(self.layers)} layers, {len(self.params)} parameters, "
                f"{len(self.snapshots)} histogram snapshots)")


class _Gatherer:
    """Collects tensors from anywhere, moves them to the CPU in one go, hands out numpy arrays."""

    def __init__(self):
        self._tensors: list[torch.Tensor] = []
        self._arrays: list[np.ndarray] | None = None

    def add(self, t: torch.Tensor):
        i = len(self._tensors)
        self._tensors.append(t.reshape(-1).float())
        return lambda: self._arrays[i]

    def rows(self, rows: list[tuple[int, torch.Tensor]], width: int):
        steps = np.array([s for s, _ in rows], dtype=np.int64)
        if not rows:
            return steps, (lambda: np.empty((0, width)))
        get = self.add(torch.stack([t for _, t in rows]))
        return steps, (lambda: get().reshape(len(rows), width))

    def fetch(self) -> None:
        if not self._tensors:
            self._arrays = []
            return
        by_device: dict[torch.device, list[int]] = {}
        for i, t in enumerate(self._tensors):
            by_device.setdefault(t.device, []).append(i)
        self._arrays = [None] * len(self._tensors)  # type: ignore[list-item]
        for idx in by_device.values():
            flat = torch.cat([self._tensors[i] for i in idx]).cpu().numpy().astype(np.float64)
            offset = 0
            for i in idx:
                n = self._tensors[i].numel()
                self._arrays[i] = flat[offset:offset + n]
                offset += n

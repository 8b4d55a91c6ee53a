"""The course's networks: the BN paper's MLP, a small CNN and a small ResNet.

- ``BNPaperMLP``: Ioffe & Szegedy's MNIST network (section 4.1): three fully connected hidden
  layers of 100 sigmoid units, batch norm optional before each nonlinearity, small Gaussian
  initialization. ``forward_with_preact`` also returns the input of one last-hidden-layer sigmoid
  (what the paper's Figure 1(b, c) plots).
- ``SmallCNN`` and ``SmallResNet``: image classifiers for (N, C, H, W) inputs of any size (8x8
  digits, 28x28 FashionMNIST, 32x32 CIFAR-10). Normalization is an option, ``norm=``:

      "batch"  nn.BatchNorm2d (PyTorch's)
      "none"   no normalization
      "layer"  layer norm over (C, H, W) (GroupNorm with one group: no batch statistics at all)
      "group"  GroupNorm with 8 groups (or fewer when C is small)
      callable ``C -> nn.Module``, e.g. the learner's own ``BatchNorm2d`` class

  and ``bn_position="before"`` (conv -> norm -> ReLU, the paper's choice) or ``"after"``
  (conv -> ReLU -> norm).
"""

from __future__ import annotations

from typing import Callable, Union

import torch
from torch import nn

Norm = Union[str, Callable[[int], nn.Module]]
NORMS = ("batch", "none", "layer", "group")


def make_norm(norm: Norm, num_channels: int) -> nn.Module:
    """A normalization layer for (N, C, H, W) activations with C = ``num_channels``.

    ``norm`` is one of "batch", "none", "layer", "group" or a factory ``C -> nn.Module``.
    """
    if callable(norm):
        return norm(num_channels)
    if norm == "batch":
        return nn.BatchNorm2d(num_channels)
    if norm == "none":
        return nn.Identity()
    if norm == "layer":
        return nn.GroupNorm(1, num_channels)
    if norm == "group":
        groups = next(g for g in (8, 4, 2, 1) if num_channels % g == 0)
        return nn.GroupNorm(groups, num_channels)
    raise ValueError(f"norm must be one of {NORMS} or a callable C -> nn.Module, got {norm!r}")


def _check_position(bn_position: str) -> None:
    if bn_position not in ("before", "after"):
        raise ValueError(f"bn_position must be 'before' or 'after' (the activation), got {bn_position!r}")


def _uses_norm(norm: Norm) -> bool:
    return callable(norm) or norm != "none"


class BNPaperMLP(nn.Module):
    """Ioffe & Szegedy's MNIST MLP: in -> 100 -> 100 -> 100 -> classes, sigmoid units.

    Each hidden layer is ``Linear -> [BatchNorm1d] -> Sigmoid``: batch norm, when on, normalizes
    the sigmoid's input, as in the paper. Weights start as N(0, init_std^2), biases at zero.

    Args:
        in_features: D, the flattened input size (784 for MNIST, 64 for 8x8 digits).
        num_classes: size of the output (logits; the loss applies the softmax).
        batch_norm: insert ``nn.BatchNorm1d`` before each sigmoid.
        hidden: units per hidden layer (100 in the paper).
        depth: number of hidden layers (3 in the paper).
        init_std: standard deviation of the Gaussian initialization of every Linear weight;
            ``None`` keeps PyTorch's default (uniform, scaled by fan-in).

    Shape:
        input (N, D) or images (N, C, H, W) with C*H*W = D (flattened); output (N, num_classes).
    """

    def __init__(
        self,
        in_features: int = 784,
        num_classes: int = 10,
        batch_norm: bool = False,
        hidden: int = 100,
        depth: int = 3,
        init_std: float | None = 0.1,
    ):
        super().__init__()
        self.in_features = in_features
        self.batch_norm = batch_norm
        self.linears = nn.ModuleList()
        self.norms = nn.ModuleList()
        width = in_features
        for _ in range(depth):
            self.linears.append(nn.Linear(width, hidden))
            self.norms.append(nn.BatchNorm1d(hidden) if batch_norm else nn.Identity())
            width = hidden
        self.head = nn.Linear(width, num_classes)
        if init_std is not None:
            for layer in [*self.linears, self.head]:
                nn.init.normal_(layer.weight, 0.0, init_std)
                nn.init.zeros_(layer.bias)

    def forward_with_preact(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits (N, classes), the last hidden layer's sigmoid inputs (N, hidden))."""
        h = x.flatten(1)
        if h.shape[1] != self.in_features:
            raise ValueError(f"expected inputs with {self.in_features} features, got shape {tuple(x.shape)}")
        preact = h
        for linear, norm in zip(self.linears, self.norms):
            preact = norm(linear(h))
            h = torch.sigmoid(preact)
        return self.head(h), preact

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_preact(x)[0]


class ConvBlock(nn.Sequential):
    """conv3x3 -> norm -> ReLU (``bn_position="before"``) or conv3x3 -> ReLU -> norm ("after").

    The convolution has no bias when a normalization follows it directly (its shift would be
    removed by the normalization's mean subtraction; beta takes over that role).
    """

    def __init__(self, c_in: int, c_out: int, norm: Norm = "batch", bn_position: str = "before"):
        _check_position(bn_position)
        bias = not (_uses_norm(norm) and bn_position == "before")
        conv = nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=bias)
        layers = [conv, make_norm(norm, c_out), nn.ReLU(inplace=True)]
        if bn_position == "after":
            layers = [conv, nn.ReLU(inplace=True), make_norm(norm, c_out)]
        super().__init__(*layers)


class SmallCNN(nn.Module):
    """A VGG-like CNN: [ConvBlock, ConvBlock, MaxPool2d(2)] per stage, global average pool, Linear.

    Args:
        in_channels: C of the input images (1 for digits and FashionMNIST, 3 for CIFAR-10).
        num_classes: number of logits.
        widths: channels of each stage; each stage halves H and W.
        norm: see the module docstring ("batch", "none", "layer", "group" or a factory).
        bn_position: "before" or "after" the ReLU.

    Shape:
        input (N, C, H, W) with H, W >= 2**len(widths) (8x8 works with three stages);
        output (N, num_classes).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        widths: tuple[int, ...] = (32, 64, 128),
        norm: Norm = "batch",
        bn_position: str = "before",
    ):
        super().__init__()
        stages = []
        c = in_channels
        for w in widths:
            stages += [ConvBlock(c, w, norm, bn_position), ConvBlock(w, w, norm, bn_position), nn.MaxPool2d(2)]
            c = w
        self.features = nn.Sequential(*stages)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class Residual(nn.Module):
    """x + block(x), with two ConvBlocks in the block (the ResNet-9 / airbench pattern)."""

    def __init__(self, channels: int, norm: Norm = "batch", bn_position: str = "before"):
        super().__init__()
        self.block = nn.Sequential(
            ConvBlock(channels, channels, norm, bn_position), ConvBlock(channels, channels, norm, bn_position)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class SmallResNet(nn.Module):
    """A ResNet-9-like network (the DAWNBench / airbench family for CIFAR-10).

    stem ConvBlock(C -> widths[0]); then per stage: ConvBlock -> MaxPool2d(2) [-> Residual on the
    stages listed in ``residual``]; then global max pool, Linear, and a fixed logit scale.

    The defaults, widths (64, 128, 256, 512) with residual blocks on stages 1 and 3, are the
    ResNet-9 of Page's DAWNBench entry (~94% CIFAR-10 in 24 epochs); smaller widths make it fast on
    a CPU.

    Args:
        in_channels, num_classes, norm, bn_position: as in ``SmallCNN``.
        widths: channels of the stem and of each of the three stages.
        residual: indices (into the three stages) that get a residual block.
        logit_scale: multiplies the logits (0.125 in ResNet-9; keeps the initial loss sane).

    Shape:
        input (N, C, H, W) with H, W >= 8; output (N, num_classes).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        norm: Norm = "batch",
        bn_position: str = "before",
        residual: tuple[int, ...] = (0, 2),
        logit_scale: float = 0.125,
    ):
        super().__init__()
        if len(widths) != 4:
            raise ValueError(f"widths needs 4 numbers (stem and three stages), got {widths}")
        layers: list[nn.Module] = [ConvBlock(in_channels, widths[0], norm, bn_position)]
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers += [ConvBlock(c_in, c_out, norm, bn_position), nn.MaxPool2d(2)]
            if i in residual:
                layers.append(Residual(c_out, norm, bn_position))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.fc = nn.Linear(widths[-1], num_classes, bias=False)
        self.logit_scale = logit_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1)) * self.logit_scale


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def norm_layers(model: nn.Module) -> list[nn.Module]:
    """The model's batch-norm layers (PyTorch's ``_BatchNorm`` subclasses and any module with
    ``running_mean`` and ``running_var`` buffers, like a learner's own BatchNorm2d)."""
    return [
        m for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) or (hasattr(m, "running_mean") and hasattr(m, "running_var"))
    ]

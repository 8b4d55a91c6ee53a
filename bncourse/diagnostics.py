"""Looking inside a network while it trains: per-layer activation and gradient statistics.

``Diagnostics(model)`` hooks into any ``nn.Module`` (the course's models, a learner's own CNN,
torchvision's ``resnet18``) and records, per layer and per training step, what Karpathy's
"makemore part 3" and CS231n's "babysitting the learning process" look at:

- each leaf module's output (activation): mean, std and the saturated fraction (tanh and sigmoid:
  share of values near their limits, |tanh| > 0.97; ReLU: share of units never active over the
  batch, "dead");
- the gradient of the loss with respect to that output: mean and std;
- each parameter's gradient: mean, std and the gradient-to-data ratio std(grad) / std(data);
- each parameter's update-to-data ratio, std(after - before) / std(before), over training
  (Karpathy plots its log10 and looks for about -3: updates of a thousandth of the weights).

    with Diagnostics(model) as diag:          # hooks on; every hook removed on leaving the block
        for step in range(steps):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
    report = diag.report()                    # a DiagnosticsReport: numpy arrays per layer and parameter

A *step* is one forward pass of ``model`` with gradients enabled (evaluation under
``torch.no_grad()`` is not recorded). The update of a parameter is measured between its gradient
arriving (after ``backward``) and the next training forward pass (or ``report()``), so any
optimizer works and none needs to be passed. Statistics stay tensors on the model's device during
training (no host synchronisation per step); ``report()`` moves them to numpy once (the result types live in ``bncourse.diagnostics_report``). The hooks only
read: the parameters after N steps are identical, bit for bit, with and without diagnostics.

Activations computed by functions (``F.relu(x)`` inside a ``forward``) are not modules, so they are
not seen: the output of the module before them is.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from bncourse.diagnostics_report import KINDS, DiagnosticsReport, LayerTrace, ParamTrace, Snapshot, _Gatherer

__all__ = ["Diagnostics", "DiagnosticsReport", "LayerTrace", "ParamTrace", "Snapshot", "SATURATION",
           "saturated_fraction", "dead_fraction", "update_to_data_ratio", "activation_kind"]

SATURATION = 0.97  # |tanh| above this counts as saturated (Karpathy); sigmoid: |2 sigmoid - 1| above it


# ---------------------------------------------------------------------------------------------
# The measurements, on one tensor
# ---------------------------------------------------------------------------------------------


def _saturated(h: torch.Tensor, kind: str, threshold: float = SATURATION) -> torch.Tensor:
    """The saturated fraction as a 0-d float tensor on h's device (no host sync).

    sign(max(|h| - threshold, 0)) is 1 exactly where |h| > threshold: the same count as the
    comparison, in cheaper operations than a boolean mask on the CPU.
    """
    h = h.detach()
    if kind == "tanh":
        return (h.abs() - threshold).clamp_(min=0).sign_().float().mean()
    if kind == "sigmoid":
        return ((2 * h - 1).abs_() - threshold).clamp_(min=0).sign_().float().mean()
    if kind == "relu":
        return _dead(h)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


def _dead(h: torch.Tensor) -> torch.Tensor:
    """Share of units (every position but the batch axis) with no positive value over the batch."""
    h = h.detach()
    if h.ndim < 2:
        raise ValueError(f"expected h of shape (N, ...) with a batch axis, got shape {tuple(h.shape)}")
    return (h.flatten(1).amax(0) <= 0).float().mean()


def _std_mean(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(std with ddof=1, mean) of all of t as 0-d float tensors, from one sum and one dot product.

    Several times faster than ``torch.std_mean`` on the CPU. The sum of squares loses relative
    precision of about 1e-7 * (mean / std)^2 in float32: 1e-5 for a layer whose mean is ten
    times its std, enough for a diagnostic.
    """
    f = t.detach().reshape(-1).float()
    n = f.numel()
    if n < 2:
        return f.sum() * math.nan, f.sum()
    # torch.dot is several times faster than (f * f).sum() on the CPU, but autocast would run it in
    # bf16/fp16 inside an autocast region (forward hooks run there); elementwise ops stay float32.
    s, s2 = f.sum(), ((f * f).sum() if torch.is_autocast_enabled(f.device.type) else torch.dot(f, f))
    var = (s2 - s * s / n) / (n - 1)
    return var.clamp_(min=0).sqrt_(), s / n


def _ratio(before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
    """std(after - before) / std(before) as a 0-d tensor (inf when the data is constant)."""
    return (after - before).float().std() / before.float().std()


def _as_tensor(x) -> torch.Tensor:
    return x if isinstance(x, torch.Tensor) else torch.as_tensor(np.asarray(x))


def saturated_fraction(h, kind: str, threshold: float = SATURATION) -> float:
    """Share of a layer's activations that sit near the limits of its nonlinearity.

    h: the activations, the layer's *output* (N, ...) (tensor or array). kind:
    - ``"tanh"``: share of values with |h| > threshold (0.97: the slope there is below 0.06);
    - ``"sigmoid"``: the same test on 2h - 1 (sigmoid(x) = (tanh(x/2) + 1) / 2), i.e. h within
      0.015 of 0 or 1;
    - ``"relu"``: share of *units* (every position but the batch axis 0) not active (h > 0) for any
      example of the batch: dead units, whose gradient is zero for the whole batch.
    """
    return float(_saturated(_as_tensor(h), kind, threshold))


def dead_fraction(h) -> float:
    """Share of ReLU units never active over the batch: h (N, ...) -> float in [0, 1]."""
    return float(_dead(_as_tensor(h)))


def update_to_data_ratio(before, after) -> float:
    """How large one optimizer step was relative to the parameter: std(after - before) / std(before).

    before, after: the same parameter before and after the step (any shape). Karpathy plots its
    log10 and looks for about -3 (1e-3): much smaller and the layer barely learns, much larger and
    it is thrown around.
    """
    return float(_ratio(_as_tensor(before), _as_tensor(after)))


def activation_kind(module: nn.Module) -> str | None:
    """"tanh", "sigmoid" or "relu" for those nonlinearities (ReLU6 counts as ReLU); None otherwise."""
    if isinstance(module, nn.Tanh):
        return "tanh"
    if isinstance(module, nn.Sigmoid):
        return "sigmoid"
    if isinstance(module, (nn.ReLU, nn.ReLU6)):
        return "relu"
    return None


# ---------------------------------------------------------------------------------------------
# The hooks
# ---------------------------------------------------------------------------------------------


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


def _sample(t: torch.Tensor, max_values: int) -> torch.Tensor:
    flat = t.detach().reshape(-1)
    if flat.numel() > max_values:
        stride = math.ceil(flat.numel() / max_values)
        flat = flat[::stride]
    return flat.float().clone()


class Diagnostics:
    """Forward, backward and gradient hooks on ``model`` that record per-layer statistics per step.

    Args:
        model: any ``nn.Module``; every leaf module (one without children) is a layer, named as
            ``model.named_modules()`` names it (a module called twice in one forward, like
            torchvision's ``relu`` in a residual block, gives ``name``, ``name#2``).
        every: record every ``every``-th step (1: all of them).
        histograms_at: the steps at which samples of activations and gradients are kept.
        max_values: at most this many values per layer per snapshot.
        layers: only the leaf modules whose names are listed, or whose type is one of the listed
            types (default: all).
        threshold: the saturation threshold of tanh and sigmoid.

    Use as a context manager (``with Diagnostics(model) as diag:``) or ``attach()`` / ``detach()``;
    ``report()`` gives the results.
    """

    def __init__(self, model: nn.Module, *, every: int = 1, histograms_at: Iterable[int] = (0,),
                 max_values: int = 20_000, layers: Sequence | None = None, threshold: float = SATURATION):
        if not isinstance(model, nn.Module):
            raise TypeError(f"Diagnostics needs an nn.Module, got {type(model).__name__}")
        if int(every) < 1:
            raise ValueError(f"every must be 1 or more, got {every!r}")
        self.model = model
        self.every = int(every)
        self.histograms_at = frozenset(int(s) for s in histograms_at)
        self.max_values = int(max_values)
        self.threshold = float(threshold)
        self._layer_filter = layers
        self._handles: list = []
        self._step = -1
        self._recording = False
        self._calls: dict[str, int] = {}
        self._types: dict[str, tuple[str, str | None]] = {}  # layer -> (module type, kind)
        self._act: dict[str, list[tuple[int, torch.Tensor]]] = {}
        self._grad: dict[str, list[tuple[int, torch.Tensor]]] = {}
        self._pstats: list[tuple[int, tuple[str, ...], torch.Tensor]] = []  # (step, names, (P, 4) stats)
        self._pending: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}  # name -> (param, grad, copy)
        self._pending_step = -1
        self._segments: dict = {}  # (names, device) -> (segment index, counts)
        self._snap: list[dict] = []
        self._params: dict[str, nn.Parameter] = {}

    # -- attaching ------------------------------------------------------------------------------

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    @property
    def num_hooks(self) -> int:
        """How many hooks this object holds on the model and its parameters now."""
        return len(self._handles)

    def _wanted(self, name: str, module: nn.Module) -> bool:
        if self._layer_filter is None:
            return True
        return any(name == f if isinstance(f, str) else isinstance(module, f) for f in self._layer_filter)

    def attach(self) -> "Diagnostics":
        if self.attached:
            raise RuntimeError("these diagnostics are already attached; detach() them first")
        self._handles.append(self.model.register_forward_pre_hook(self._on_model_forward))
        for name, module in self.model.named_modules():
            if any(True for _ in module.children()) or not self._wanted(name, module):
                continue
            self._handles.append(module.register_forward_hook(self._layer_hook(name or type(module).__name__)))
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                self._params[name] = p
                self._handles.append(p.register_post_accumulate_grad_hook(self._param_hook(name)))
        return self

    def detach(self) -> None:
        """Remove every hook (the pending update, if any, is measured first)."""
        self._finish_updates()
        for h in self._handles:
            h.remove()
        self._handles.clear()

    def __enter__(self) -> "Diagnostics":
        return self.attach()

    def __exit__(self, *exc) -> None:
        self.detach()

    # -- hooks ----------------------------------------------------------------------------------

    def _on_model_forward(self, module, args) -> None:
        if not torch.is_grad_enabled():
            return
        self._finish_updates()
        self._step += 1
        self._recording = self._step % self.every == 0
        self._calls.clear()

    def _layer_hook(self, name: str):
        def hook(module, args, out) -> None:
            if not self._recording or not torch.is_grad_enabled():
                return
            h = _first_tensor(out)
            if h is None or not h.is_floating_point() or h.numel() == 0:
                return
            n = self._calls.get(name, 0) + 1
            self._calls[name] = n
            key = name if n == 1 else f"{name}#{n}"
            kind = activation_kind(module)
            step = self._step
            with torch.no_grad():
                d = h.detach()
                std, mean = _std_mean(d)
                if kind and (kind != "relu" or d.ndim >= 2):
                    sat = _saturated(d, kind, self.threshold)
                    self._act.setdefault(key, []).append((step, torch.stack([mean, std, sat])))
                else:
                    kind = None
                    sat = mean * math.nan if step in self.histograms_at else None
                    self._act.setdefault(key, []).append((step, torch.stack([mean, std])))
                self._types.setdefault(key, (type(module).__name__, kind))
                snap = None
                if step in self.histograms_at:
                    snap = dict(layer=key, kind=kind, step=step, activations=_sample(d, self.max_values),
                                gradients=None, saturated=sat)
                    self._snap.append(snap)
            if h.requires_grad:
                h.register_hook(self._grad_hook(key, step, snap))
        return hook

    def _grad_hook(self, key: str, step: int, snap: dict | None):
        def hook(g: torch.Tensor) -> None:
            with torch.no_grad():
                std, mean = _std_mean(g)
                self._grad.setdefault(key, []).append((step, torch.stack([mean, std])))
                if snap is not None:
                    snap["gradients"] = _sample(g.detach(), self.max_values)
        return hook

    def _param_hook(self, name: str):
        def hook(p: torch.Tensor) -> None:
            if not self._recording or p.grad is None:
                return
            # Two copies now (the gradient may be zeroed in place, the data is about to change);
            # the statistics of all parameters are computed together in _finish_updates.
            with torch.no_grad():
                self._pending[name] = (p, p.grad.detach().reshape(-1).float().clone(),
                                       p.detach().reshape(-1).float().clone())
                self._pending_step = self._step
        return hook

    def _finish_updates(self) -> None:
        """Gradient, gradient-to-data and update-to-data statistics of every parameter whose
        gradient arrived since the last training forward, in a few operations per device."""
        if not self._pending:
            return
        by_device: dict[torch.device, list[str]] = {}
        for name, (p, _, _) in self._pending.items():
            by_device.setdefault(p.device, []).append(name)
        with torch.no_grad():
            for device, names in by_device.items():
                key = (tuple(names), device)
                if key not in self._segments:
                    counts = torch.tensor([self._pending[n][1].numel() for n in names], device=device)
                    seg = torch.repeat_interleave(torch.arange(len(names), device=device), counts)
                    self._segments[key] = (seg, counts.float())
                seg, counts = self._segments[key]
                grads = torch.cat([self._pending[n][1] for n in names])
                before = torch.cat([self._pending[n][2] for n in names])
                after = torch.cat([self._pending[n][0].detach().reshape(-1).float() for n in names])
                g_std, g_mean = _segment_std_mean(grads, seg, counts)
                d_std, _ = _segment_std_mean(before, seg, counts)
                u_std, _ = _segment_std_mean(after - before, seg, counts)
                self._pstats.append((self._pending_step, key[0], torch.stack([g_mean, g_std, g_std / d_std,
                                                                              u_std / d_std], 1)))
        self._pending.clear()

    # -- results --------------------------------------------------------------------------------

    def report(self) -> DiagnosticsReport:
        """All statistics so far as numpy arrays (one transfer from the device for everything).

        Call it after the optimizer step: an update not yet made would be measured as zero.
        """
        self._finish_updates()
        to_np = _Gatherer()
        layers = {}
        for key, rows in self._act.items():
            mtype, kind = self._types[key]
            steps, vals = to_np.rows(rows, 3 if kind else 2)
            if not kind:
                vals = (lambda v: lambda: np.column_stack([v(), np.full(len(v()), np.nan)]))(vals)
            gsteps, gvals = to_np.rows(self._grad.get(key, []), 2)
            layers[key] = (mtype, kind, steps, vals, gsteps, gvals)
        params = {}
        rows: dict[str, list[tuple[int, torch.Tensor]]] = {}
        for step, names, stats in self._pstats:
            for i, name in enumerate(names):
                rows.setdefault(name, []).append((step, stats[i]))
        for name, p in self._params.items():
            steps, vals = to_np.rows(rows.get(name, []), 4)
            params[name] = (tuple(p.shape), steps, vals)
        snaps = [dict(s, activations=to_np.add(s["activations"]),
                      gradients=None if s["gradients"] is None else to_np.add(s["gradients"]),
                      saturated=to_np.add(s["saturated"])) for s in self._snap]
        to_np.fetch()
        out_layers = {
            k: LayerTrace(k, mtype, kind, steps, v()[:, 0], v()[:, 1], v()[:, 2], gs, gv()[:, 0], gv()[:, 1])
            for k, (mtype, kind, steps, v, gs, gv) in layers.items()}
        out_params = {
            n: ParamTrace(n, shape, steps, v()[:, 0], v()[:, 1], v()[:, 2], steps.copy(), v()[:, 3])
            for n, (shape, steps, v) in params.items()}
        out_snaps = [Snapshot(s["layer"], s["kind"], s["step"], s["activations"](),
                              None if s["gradients"] is None else s["gradients"](), float(s["saturated"]()[0]))
                     for s in snaps]
        return DiagnosticsReport(out_layers, out_params, out_snaps, self._step + 1)


def _segment_std_mean(x: torch.Tensor, seg: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-segment (std with ddof=1, mean) of a flat tensor: x (M,), seg (M,) segment ids, counts (P,)."""
    mean = torch.zeros_like(counts).index_add_(0, seg, x) / counts
    centred = x - mean[seg]
    var = torch.zeros_like(counts).index_add_(0, seg, centred * centred) / (counts - 1)
    return var.sqrt(), mean

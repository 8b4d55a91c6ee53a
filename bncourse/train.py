"""The course's training loop: one config dataclass, one ``train`` function, one ``History``.

    from bncourse.train import TrainConfig, train
    config = TrainConfig(steps=600, batch_size=60, lr=0.5, momentum=0.0, eval_every=50)
    history = train(model, data.train, data.test, config)   # (X, y) tuples or DeviceLoaders
    history.test_acc[-1], history.images_per_s

What it does, in one place:
- device (cuda, then mps, then cpu; printed once), seed, and the GPU fast path (autocast in bf16, or
  fp16 with a gradient scaler on GPUs older than Ampere, and channels_last, on CUDA only, from
  ``bncourse.device``); timings wait for the device (``bncourse.device.synchronize``: cuda and mps);
- data given as (X, y) tensors is copied to the device once per process and reused by later
  ``train()`` calls (``bncourse.data.to_device_cached``);
- per-step loss and batch accuracy kept on the device and fetched once per epoch (no per-step
  host sync: the loop is as fast as a bare one, see ``benchmarks/train_overhead.py``);
- evaluation always in eval mode under ``torch.no_grad()``, and the model's previous mode restored;
- ``tqdm.auto`` progress bars; sizes left at their defaults follow fast mode (``runtime.pick``).
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from bncourse.data import DeviceLoader
from bncourse.device import describe_device, fast_path, get_device, synchronize
from bncourse.runtime import pick


@dataclass
class TrainConfig:
    """How to train. Every field has a default; sizes follow fast mode where it matters."""

    epochs: int = field(default_factory=lambda: pick(fast=1, full=10))  # passes over the training set
    steps: int | None = None  # total optimizer steps; when set it overrides ``epochs``
    batch_size: int = 128  # B, examples per step (the BN paper's MLP used 60)
    lr: float = 0.1  # peak learning rate
    momentum: float = 0.9  # SGD momentum (0 = plain SGD, as in the BN paper's MNIST run)
    nesterov: bool = False  # Nesterov momentum (SGD only, needs momentum > 0)
    weight_decay: float = 0.0  # L2 penalty added by the optimizer
    optimizer: str = "sgd"  # "sgd" or "adam"
    schedule: str = "constant"  # "constant", "linear" (decay to 0) or "onecycle" (warm up, then decay)
    warmup: float = 0.2  # fraction of steps spent warming up ("onecycle" only)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (airbench uses 0.2)
    augment: bool = False  # random crop (padding 4) + horizontal flip, on the device
    eval_every: int = 0  # evaluate on the test set every this many steps (0: at the end of each epoch)
    eval_batch_size: int = 1000  # batch size for evaluation (eval mode: does not change the result)
    eval_flip: bool = False  # test-time augmentation: average the logits of each image and its mirror
    seed: int = 0  # seeds the data order and augmentation (seed the model yourself before building it)
    device: str | None = None  # None: cuda, then mps, then cpu
    gpu_fast_path: bool = True  # autocast (bf16, or fp16 + grad scaler before Ampere) + channels_last, CUDA only
    track_train_acc: bool = True  # record each batch's training accuracy (logits kept until the epoch ends)
    progress: bool = True  # show a tqdm.auto progress bar
    label: str = ""  # a name for plots and the progress bar
    record: Callable[[nn.Module], Any] | None = None  # called at each evaluation (eval mode, no grad);
    # its results go to History.records, e.g. lambda m: m.forward_with_preact(x_fixed)[1][:, 0]


@dataclass
class History:
    """What happened during training; the plotting helpers take it.

    Per step (1-based): ``steps``, ``train_loss``, ``train_acc`` (batch accuracy in training
    mode). Per evaluation: ``eval_steps``, ``test_loss``, ``test_acc``, ``records``. Per epoch:
    ``epoch_train_loss``, ``epoch_train_acc`` (means over the epoch's steps), ``epoch_test_loss``,
    ``epoch_test_acc``. Timing: ``train_seconds`` (evaluation excluded), ``epoch_seconds`` (the same,
    per epoch), ``images_per_s``.
    """

    label: str = ""
    device: str = ""
    steps: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)
    records: list[Any] = field(default_factory=list)
    epoch_train_loss: list[float] = field(default_factory=list)
    epoch_train_acc: list[float] = field(default_factory=list)
    epoch_test_loss: list[float] = field(default_factory=list)
    epoch_test_acc: list[float] = field(default_factory=list)
    train_seconds: float = 0.0
    epoch_seconds: list[float] = field(default_factory=list)
    images_seen: int = 0
    config: dict = field(default_factory=dict)

    @property
    def images_per_s(self) -> float:
        """Training throughput: images per second of training time (evaluation excluded)."""
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else float("nan")

    @property
    def final_test_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else float("nan")

    @property
    def best_test_acc(self) -> float:
        return max(self.test_acc) if self.test_acc else float("nan")

    @property
    def diverged(self) -> bool:
        """True when the training loss became NaN or infinite."""
        return any(not math.isfinite(v) for v in self.train_loss)

    def __repr__(self) -> str:
        return (f"History({self.label!r}: {len(self.steps)} steps, final test acc {self.final_test_acc:.4f}, "
                f"{self.images_per_s:,.0f} images/s on {self.device})")


def to_device(t: torch.Tensor, device) -> torch.Tensor:
    """``t`` on ``device``; asynchronous only where that is safe to read at once.

    A copy from the host to a GPU may run asynchronously (``non_blocking=True``): the GPU's stream
    orders it before any kernel that reads it. A copy *to the host* may not: a non-blocking
    device-to-host copy returns before the data has arrived, and the CPU would read it early.
    """
    device = torch.device(device)
    if t.device == device:
        return t
    return t.to(device, non_blocking=(t.device.type == "cpu" and device.type != "cpu"))


def _as_loader(data, batch_size: int, shuffle: bool, augment: bool, device, seed: int):
    if data is None or isinstance(data, DeviceLoader) or not isinstance(data, (tuple, list)):
        return data  # None, a DeviceLoader, or any iterable of (X, y) batches (e.g. a DataLoader)
    X, y = data
    return DeviceLoader(X, y, batch_size, shuffle=shuffle, augment=augment, device=device, seed=seed)


def evaluate(model: nn.Module, data, batch_size: int = 1000, device=None, fast=None,
             flip: bool = False) -> tuple[float, float]:
    """(mean cross-entropy loss, accuracy) of ``model`` on ``data`` in eval mode.

    ``data`` is an (X, y) tuple, a ``DeviceLoader`` or an iterable of batches. The model is put in
    eval mode for the evaluation and returned to the mode it was in. ``flip=True`` is test-time
    augmentation for images (N, C, H, W): the logits of each image and of its mirror image are averaged.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    fast = fast if fast is not None else fast_path(device, enabled=False)
    loader = _as_loader(data, batch_size, False, False, device, 0)
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    n = 0
    try:
        with torch.no_grad():
            for xb, yb in loader:
                xb, yb = to_device(xb, device), to_device(yb, device)
                with fast.autocast():
                    logits = model(fast.to_input(xb)).float()
                    if flip:
                        logits = (logits + model(fast.to_input(xb.flip(3))).float()) / 2
                loss_sum += F.cross_entropy(logits, yb, reduction="sum")
                correct += (logits.argmax(1) == yb).sum()
                n += len(yb)
    finally:
        model.train(was_training)
    return (loss_sum / max(n, 1)).item(), correct.item() / max(n, 1)


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov, weight_decay=config.weight_decay)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {config.optimizer!r}")


def _lr_factor(schedule: str, total: int, warmup: float) -> Callable[[int], float]:
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "linear":
        return lambda step: max(0.0, 1.0 - step / total)
    if schedule == "onecycle":
        w = max(1, int(warmup * total))
        return lambda step: (step + 1) / w if step < w else max(0.0, (total - step) / max(1, total - w))
    raise ValueError(f"schedule must be 'constant', 'linear' or 'onecycle', got {schedule!r}")


def train(model: nn.Module, train_data, test_data=None, config: TrainConfig | None = None) -> History:
    """Train ``model`` with cross-entropy and return its ``History``.

    Args:
        model: any ``nn.Module`` mapping a batch of inputs to logits (N, classes).
        train_data: an (X, y) tuple of tensors (wrapped in a shuffling ``DeviceLoader`` with
            ``config.batch_size`` and ``config.augment``), a ``DeviceLoader``, or any iterable
            of (X, y) batches.
        test_data: the same kinds, or None (no evaluation).
        config: a ``TrainConfig`` (default: ``TrainConfig()``).

    The model is moved to the device and left there, in training mode.
    """
    config = config or TrainConfig()
    device = get_device(config.device)
    fast = fast_path(device, enabled=config.gpu_fast_path)
    fast.prepare_model(model, device)
    train_loader = _as_loader(train_data, config.batch_size, True, config.augment, device, config.seed)
    test_loader = _as_loader(test_data, config.eval_batch_size, False, False, device, 0)
    per_epoch = len(train_loader)
    total = config.steps if config.steps is not None else config.epochs * per_epoch
    epochs = math.ceil(total / per_epoch)
    optimizer = _optimizer(model, config)
    scaler = fast.grad_scaler()  # fp16 autocast only: scales the loss so small gradients survive float16
    factor = _lr_factor(config.schedule, total, config.warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor) if config.schedule != "constant" else None

    cfg = asdict(config)
    cfg["record"] = None if config.record is None else getattr(config.record, "__name__", "callable")
    history = History(label=config.label, device=describe_device(device), config=cfg)

    def run_eval(step: int) -> None:
        if test_loader is None:
            return
        loss, acc = evaluate(model, test_loader, device=device, fast=fast, flip=config.eval_flip)
        history.eval_steps.append(step)
        history.test_loss.append(loss)
        history.test_acc.append(acc)
        if config.record is not None:
            was_training = model.training
            model.eval()
            try:
                with torch.no_grad():
                    history.records.append(config.record(model))
            finally:
                model.train(was_training)

    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=config.label or "training", disable=not config.progress, leave=False)
    if config.eval_every:
        run_eval(0)
    step = 0
    model.train()
    def sync() -> None:  # the clock may only be read once the device has done the queued work
        synchronize(device)

    try:
        for _ in range(epochs):
            losses, outputs, sizes = [], [], []
            seconds_before = history.train_seconds
            sync()
            t0 = time.perf_counter()
            for xb, yb in train_loader:
                if step >= total:
                    break
                xb, yb = to_device(xb, device), to_device(yb, device)
                with fast.autocast():
                    logits = model(fast.to_input(xb))
                    loss = F.cross_entropy(logits, yb, label_smoothing=config.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                if scaler is None:
                    loss.backward()
                    optimizer.step()
                else:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)  # skips the step when a gradient overflowed float16
                    scaler.update()
                if scheduler is not None:
                    scheduler.step()
                step += 1
                losses.append(loss.detach())
                if config.track_train_acc:
                    outputs.append((logits.detach(), yb))  # accuracy computed once per epoch, batched
                sizes.append(len(yb))
                bar.update(1)
                if config.eval_every and step % config.eval_every == 0:
                    sync()
                    history.train_seconds += time.perf_counter() - t0
                    run_eval(step)
                    t0 = time.perf_counter()
            sync()
            history.train_seconds += time.perf_counter() - t0
            history.epoch_seconds.append(history.train_seconds - seconds_before)
            history.images_seen += sum(sizes)
            if not losses:
                break
            step_losses = torch.stack(losses).float().tolist()
            start = len(history.steps) + 1
            history.steps.extend(range(start, start + len(step_losses)))
            history.train_loss.extend(step_losses)
            history.epoch_train_loss.append(sum(step_losses) / len(step_losses))
            if config.track_train_acc:
                hits = (torch.cat([o.argmax(1) for o, _ in outputs]) == torch.cat([t for _, t in outputs])).float()
                corrects = [float(c) for c in torch.stack([h.sum() for h in hits.split(sizes)]).tolist()]
                history.train_acc.extend(c / n for c, n in zip(corrects, sizes))
                history.epoch_train_acc.append(sum(corrects) / sum(sizes))
                del outputs
            last_step_unevaluated = step >= total and step % config.eval_every != 0 if config.eval_every else True
            if last_step_unevaluated:  # each epoch's end (eval_every=0), or a final step off the grid
                run_eval(step)
            if test_loader is not None and history.test_acc:
                history.epoch_test_loss.append(history.test_loss[-1])
                history.epoch_test_acc.append(history.test_acc[-1])
                bar.set_postfix(loss=f"{step_losses[-1]:.3f}", test_acc=f"{history.test_acc[-1]:.3f}")
            if not math.isfinite(step_losses[-1]):
                break  # diverged: further steps only produce NaN
    finally:
        bar.close()
    return history


def warm_up(model: nn.Module, train_data, test_data=None, config: TrainConfig | None = None,
            steps: int = 3) -> float:
    """Run ``steps`` training steps (and one evaluation) on a throwaway copy of ``model``; its seconds.

    The first steps on a GPU pay one-off costs that are not training: cuDNN's search for the
    fastest convolution kernels for each new input shape (``cudnn.benchmark``), memory allocation,
    kernel loading. Call this before a timed ``train(model, ...)`` with the same data and config
    so that the timing measures training alone. ``model`` itself, the data and the random state
    are left as they were.
    """
    config = config or TrainConfig()
    cpu_state = torch.get_rng_state()
    gpu_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    loaders = [d for d in (train_data, test_data) if isinstance(d, DeviceLoader)]
    loader_states = [d.generator.get_state() for d in loaders]
    start = time.perf_counter()
    try:
        throwaway = copy.deepcopy(model)
        cfg = copy.copy(config)
        cfg.steps, cfg.progress, cfg.eval_every, cfg.record = steps, False, 0, None
        train(throwaway, train_data, test_data, cfg)
        synchronize(next(throwaway.parameters()).device)
    finally:
        torch.set_rng_state(cpu_state)
        for loader, state in zip(loaders, loader_states):
            loader.generator.set_state(state)
        if gpu_states is not None:
            torch.cuda.set_rng_state_all(gpu_states)
    return time.perf_counter() - start


def recompute_bn_statistics(model: nn.Module, batches) -> nn.Module:
    """Re-estimate every batch-norm layer's running statistics from ``batches``; returns ``model``.

    Each layer's ``running_mean``/``running_var`` are reset (``reset_running_stats``) and its
    ``momentum`` set to ``None`` (PyTorch's cumulative average: every batch weighs the same) while
    the batches (input tensors (N, ...), or (X, y) pairs) go through the model in training mode
    without gradients. Momenta and the model's mode are restored afterwards; weights are untouched.
    """
    from bncourse.models import norm_layers

    layers = [m for m in norm_layers(model) if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in layers]
    was_training = model.training
    device = next(model.parameters()).device
    try:
        for m in layers:
            m.reset_running_stats()
            m.momentum = None
        model.train()
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device))
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        model.train(was_training)
    return model

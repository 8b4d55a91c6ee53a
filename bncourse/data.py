"""Data sets for the course, and a loader that keeps them on the device.

- ``load_digits()``: scikit-learn's 8x8 handwritten digits (1797 images, shipped inside
  scikit-learn, no download): the offline default.
- ``load_mnist``, ``load_fashion_mnist``, ``load_cifar10``: the real data sets through
  torchvision's own dataset classes, from a cache directory (argument ``root``, else the
  environment variable ``BNCOURSE_DATA``, else ``~/.cache/bncourse/data``). When a data set is
  neither cached nor downloadable they raise ``DataUnavailable`` naming the directory.
- ``load_cifar10_or_digits()``: CIFAR-10 when it is available, else digits, and the returned
  ``DataSplit.note`` (printed, too) says which and why: never a silent substitution.
- ``DeviceLoader``: batches from tensors that live on the device (GPU memory holds all of CIFAR-10
  easily), shuffled and augmented there (random crop with padding, horizontal flip), so no
  worker processes and no host-to-device copy per step.
- ``to_device_cached(X, device)``: the device copy of a data set's tensor, made once per process
  and reused (keyed by the tensor, its version, the device and the dtype), so the many
  ``train()`` calls of one notebook do not copy CIFAR-10 (737 MB) to the GPU again each time.

Every data set comes as a ``DataSplit``: images X of shape (N, C, H, W), float32, normalized
with the training set's per-channel mean and std; labels y of shape (N,), int64.
"""

from __future__ import annotations

import gzip
import os
import shutil
import weakref
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

DATA_ENV = "BNCOURSE_DATA"


class DataUnavailable(RuntimeError):
    """A data set is neither in the cache directory nor downloadable."""


@dataclass
class DataSplit:
    """A data set as tensors: X_train (N, C, H, W) float32, y_train (N,) int64, and the test set.

    ``note`` says where the data came from (and, after a substitution, why).
    """

    name: str
    X_train: torch.Tensor
    y_train: torch.Tensor
    X_test: torch.Tensor
    y_test: torch.Tensor
    classes: list[str]
    note: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        return tuple(self.X_train.shape[1:])

    @property
    def num_features(self) -> int:
        """C * H * W: the input size of an MLP on flattened images."""
        return int(np.prod(self.image_shape))

    @property
    def train(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X_train, self.y_train

    @property
    def test(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.X_test, self.y_test

    def to(self, device) -> "DataSplit":
        """The same split with every tensor on ``device``."""
        return replace(self, **{k: getattr(self, k).to(device) for k in ("X_train", "y_train", "X_test", "y_test")})

    def subset(self, n_train: int | None = None, n_test: int | None = None, seed: int = 0) -> "DataSplit":
        """A random subset (seeded): ``n_train`` training and ``n_test`` test examples (None: all)."""
        g = torch.Generator().manual_seed(seed)

        def take(X, y, n):
            if n is None or n >= len(y):
                return X, y
            idx = torch.randperm(len(y), generator=g)[:n].to(y.device)
            return X[idx], y[idx]

        X_train, y_train = take(self.X_train, self.y_train, n_train)
        X_test, y_test = take(self.X_test, self.y_test, n_test)
        note = self.note + (f" (subset: {len(y_train)} train, {len(y_test)} test)" if (n_train or n_test) else "")
        return replace(self, X_train=X_train, y_train=y_train, X_test=X_test, y_test=y_test, note=note)

    def __repr__(self) -> str:
        return (f"DataSplit({self.name!r}: train {tuple(self.X_train.shape)}, test {tuple(self.X_test.shape)}, "
                f"{self.num_classes} classes)")


def _normalize(X_train: torch.Tensor, X_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel standardization with the training set's statistics, (N, C, H, W) float32."""
    mean = X_train.mean(dim=(0, 2, 3), keepdim=True)
    std = X_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-8)
    return (X_train - mean) / std, (X_test - mean) / std


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The cache directory: ``root``, else $BNCOURSE_DATA, else ~/.cache/bncourse/data."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "bncourse" / "data"


# ---------------------------------------------------------------------------------------------
# scikit-learn digits: the offline default
# ---------------------------------------------------------------------------------------------


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> DataSplit:
    """scikit-learn's digits as images (N, 1, 8, 8), standardized, split by class (stratified).

    1797 images in total; with ``test_fraction=0.2``: 1437 train, 360 test. Offline.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    X = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # pixel values 0..16
    y = torch.tensor(bunch.target, dtype=torch.int64)
    rng = np.random.default_rng(seed)
    test_idx = []
    for c in range(10):
        idx = np.flatnonzero(bunch.target == c)
        test_idx.extend(rng.choice(idx, size=int(round(test_fraction * len(idx))), replace=False))
    is_test = np.zeros(len(y), dtype=bool)
    is_test[test_idx] = True
    train_i, test_i = torch.from_numpy(np.flatnonzero(~is_test)), torch.from_numpy(np.flatnonzero(is_test))
    X_train, X_test = _normalize(X[train_i], X[test_i])
    return DataSplit("digits", X_train, y[train_i], X_test, y[test_i], [str(i) for i in range(10)],
                     note="scikit-learn digits (8x8, offline)")


# ---------------------------------------------------------------------------------------------
# torchvision data sets
# ---------------------------------------------------------------------------------------------


def _unavailable(name: str, root: Path, download: bool, err: BaseException) -> DataUnavailable:
    how = ("downloading failed" if download else "download=False")
    return DataUnavailable(
        f"{name} is not in the cache directory {root} and {how} ({type(err).__name__}: {err}). "
        f"Put the torchvision files there (or set {DATA_ENV} to where they are), or call with "
        f"download=True on a machine with internet access."
    )


def _gunzip_raw(raw: Path) -> None:
    """Unpack ``*-ubyte.gz`` files next to themselves (torchvision reads the unpacked ones)."""
    if not raw.is_dir():
        return
    for gz in raw.glob("*-ubyte.gz"):
        target = gz.with_suffix("")
        if not target.exists():
            with gzip.open(gz, "rb") as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)


def _load_mnist_like(cls_name: str, root, download: bool) -> DataSplit:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    root = data_root(root)
    _gunzip_raw(root / cls_name / "raw")
    try:
        train = cls(str(root), train=True, download=download)
        test = cls(str(root), train=False, download=download)
    except Exception as err:  # RuntimeError "Dataset not found", URLError, ... (no internet)
        raise _unavailable(cls_name, root, download, err) from err
    X_train = train.data.unsqueeze(1).float() / 255.0  # (N, 28, 28) uint8 -> (N, 1, 28, 28)
    X_test = test.data.unsqueeze(1).float() / 255.0
    X_train, X_test = _normalize(X_train, X_test)
    return DataSplit(cls_name, X_train, train.targets.long(), X_test, test.targets.long(), list(train.classes),
                     note=f"{cls_name} from {root}")


def load_mnist(root=None, download: bool = False) -> DataSplit:
    """MNIST through ``torchvision.datasets.MNIST`` from ``root``: images (N, 1, 28, 28).

    Raises ``DataUnavailable`` (naming the directory) when it is not there and cannot be fetched.
    """
    return _load_mnist_like("MNIST", root, download)


def load_fashion_mnist(root=None, download: bool = False) -> DataSplit:
    """FashionMNIST through ``torchvision.datasets.FashionMNIST``: images (N, 1, 28, 28).

    The raw idx files may be gzipped (``*-ubyte.gz``, as distributed) or unpacked, in
    ``<root>/FashionMNIST/raw/``. Raises ``DataUnavailable`` naming the directory when missing.
    """
    return _load_mnist_like("FashionMNIST", root, download)


def load_cifar10(root=None, download: bool = False) -> DataSplit:
    """CIFAR-10 through ``torchvision.datasets.CIFAR10``: images (N, 3, 32, 32).

    Expects torchvision's layout, ``<root>/cifar-10-batches-py/`` (the python pickle batches; their
    md5 sums are checked by torchvision). Raises ``DataUnavailable`` naming the directory.
    """
    from torchvision.datasets import CIFAR10

    root = data_root(root)
    try:
        train = CIFAR10(str(root), train=True, download=download)
        test = CIFAR10(str(root), train=False, download=download)
    except Exception as err:
        raise _unavailable("CIFAR-10", root, download, err) from err

    def as_tensor(ds):
        X = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).float() / 255.0  # HWC -> CHW
        return X, torch.tensor(ds.targets, dtype=torch.int64)

    (X_train, y_train), (X_test, y_test) = as_tensor(train), as_tensor(test)
    X_train, X_test = _normalize(X_train, X_test)
    return DataSplit("CIFAR-10", X_train, y_train, X_test, y_test, list(train.classes), note=f"CIFAR-10 from {root}")


def load_cifar10_or_digits(root=None, download: bool = False, verbose: bool = True) -> DataSplit:
    """CIFAR-10 if it can be loaded, else scikit-learn digits; ``.note`` says which and why.

    The note is printed (``verbose=True``), so a notebook's output never hides the substitution.
    """
    try:
        data = load_cifar10(root, download)
    except DataUnavailable as err:
        data = load_digits()
        data.note = f"USING DIGITS INSTEAD OF CIFAR-10: {err}"
    if verbose:
        print(f"data: {data.note}")
    return data


# ---------------------------------------------------------------------------------------------
# The device-resident loader
# ---------------------------------------------------------------------------------------------

# (id of the source tensor, its version, device, dtype) -> (weak reference to the source, device copy).
# An entry goes when its source tensor is freed; an in-place change of the source (a new version)
# makes a new copy. Tensors already on the device are returned as they are and never cached.
_DEVICE_COPIES: dict[tuple, tuple] = {}


def _forget(key: tuple) -> None:
    _DEVICE_COPIES.pop(key, None)


def to_device_cached(X: torch.Tensor, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``X.to(device, dtype)``, copied once per process and then reused while ``X`` lives unchanged.

    X: a data set's tensor (N, ...) on any device. Returns X itself when it already has that device
    and dtype. Copies of other tensors are dropped as soon as their source tensor is freed, and
    older copies of the same source (before an in-place change) when a new one is made.
    """
    device = torch.device(device)
    dtype = dtype or X.dtype
    if X.device == device and X.dtype == dtype:
        return X
    key = (id(X), X._version, str(device), dtype)
    hit = _DEVICE_COPIES.get(key)
    if hit is not None and hit[0]() is X:
        return hit[1]
    for old in [k for k, (ref, _) in _DEVICE_COPIES.items() if k[0] == id(X) and k[2:] == key[2:]]:
        _DEVICE_COPIES.pop(old, None)  # an older version of this tensor on this device
    copy = X.to(device=device, dtype=dtype)
    _DEVICE_COPIES[key] = (weakref.ref(X, lambda _ref, key=key: _forget(key)), copy)
    return copy



def random_crop_flip(x: torch.Tensor, padding: int = 4, flip: bool = True, generator=None) -> torch.Tensor:
    """Each image shifted by a random crop of its zero-padded self, and mirrored with p=1/2.

    x: (N, C, H, W) on any device; the random numbers come from ``generator`` (on x's device).
    Returns a new (N, C, H, W) tensor; ``padding=0`` and ``flip=False`` return x unchanged.
    """
    N, C, H, W = x.shape
    if padding > 0:
        padded = F.pad(x, (padding, padding, padding, padding))
        dy = torch.randint(0, 2 * padding + 1, (N,), device=x.device, generator=generator)
        dx = torch.randint(0, 2 * padding + 1, (N,), device=x.device, generator=generator)
        rows = (dy[:, None] + torch.arange(H, device=x.device))[:, None, :, None]  # (N, 1, H, 1)
        cols = (dx[:, None] + torch.arange(W, device=x.device))[:, None, None, :]  # (N, 1, 1, W)
        n = torch.arange(N, device=x.device)[:, None, None, None]
        c = torch.arange(C, device=x.device)[None, :, None, None]
        x = padded[n, c, rows, cols]
    if flip:
        mirror = torch.rand(N, device=x.device, generator=generator) < 0.5
        x = torch.where(mirror[:, None, None, None], x.flip(3), x)
    return x


class DeviceLoader:
    """Mini-batches (X[idx], y[idx]) from tensors kept on ``device``; shuffles and augments there.

    Args:
        X: inputs (N, ...) (images (N, C, H, W) for augmentation); y: labels (N,).
        batch_size: B; the last batch is smaller unless ``drop_last``.
        shuffle: a new random order every epoch (seeded by ``seed``).
        augment: random crop with ``padding`` and horizontal flip, on images only.
        device: where to keep the data (default: where X already is).

    Iterating gives one epoch; ``len(loader)`` is the number of batches per epoch.
    """

    def __init__(self, X, y, batch_size: int = 128, shuffle: bool = True, augment: bool = False,
                 padding: int = 4, flip: bool = True, drop_last: bool = False, device=None, seed: int = 0):
        if len(X) != len(y):
            raise ValueError(f"X and y need the same length, got {len(X)} and {len(y)}")
        if augment and X.dim() != 4:
            raise ValueError(f"augmentation needs images (N, C, H, W), got X of shape {tuple(X.shape)}")
        device = torch.device(device) if device is not None else X.device
        self.X, self.y = to_device_cached(X, device), to_device_cached(y, device)  # copied once per process
        self.batch_size, self.shuffle, self.augment = int(batch_size), shuffle, augment
        self.padding, self.flip, self.drop_last = padding, flip, drop_last
        self.device = device
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.y)
        order = torch.randperm(n, device=self.device, generator=self.generator) if self.shuffle else None
        stop = n - n % self.batch_size if self.drop_last else n
        for start in range(0, stop, self.batch_size):
            if order is None:
                xb, yb = self.X[start:start + self.batch_size], self.y[start:start + self.batch_size]
            else:
                idx = order[start:start + self.batch_size]
                xb, yb = self.X[idx], self.y[idx]
            if self.augment:
                xb = random_crop_flip(xb, self.padding, self.flip, self.generator)
            yield xb, yb


class ClassPairLoader:
    """Non-i.i.d. mini-batches: each batch holds examples of only ``classes_per_batch`` classes.

    The train/eval mismatch lab uses it: batch norm's batch statistics then carry information about
    which classes are in the batch, and its running averages describe no batch the model saw.

    Args:
        X, y: inputs (N, ...) and labels (N,) on the device where batches should be made.
        batch_size: B, split evenly over the classes of the batch.
        classes_per_batch: how many distinct classes each batch holds (2 in the lab).
        batches_per_epoch: default len(y) // batch_size, so an epoch sees about N examples.
    """

    def __init__(self, X, y, batch_size: int = 64, classes_per_batch: int = 2, batches_per_epoch: int | None = None,
                 seed: int = 0):
        self.X, self.y = X, y
        self.batch_size, self.k = int(batch_size), int(classes_per_batch)
        self.classes = torch.unique(y)
        if self.k > len(self.classes):
            raise ValueError(f"classes_per_batch={self.k} but y has only {len(self.classes)} classes")
        self.by_class = [torch.nonzero(y == c).flatten() for c in self.classes]
        self.batches_per_epoch = batches_per_epoch or max(1, len(y) // self.batch_size)
        self.generator = torch.Generator(device=y.device).manual_seed(seed)
        self.device = y.device

    def __len__(self) -> int:
        return self.batches_per_epoch

    def __iter__(self):
        g, dev = self.generator, self.device
        per = [self.batch_size // self.k + (1 if i < self.batch_size % self.k else 0) for i in range(self.k)]
        for _ in range(self.batches_per_epoch):
            chosen = torch.randperm(len(self.classes), device=dev, generator=g)[: self.k].tolist()
            idx = torch.cat([
                self.by_class[c][torch.randint(0, len(self.by_class[c]), (n,), device=dev, generator=g)]
                for c, n in zip(chosen, per)
            ])
            yield self.X[idx], self.y[idx]

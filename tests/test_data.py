"""Data sets through torchvision's real loading code (on small files in the native formats),
the no-silent-substitution rule, and the device-resident loader."""

import gzip
import hashlib
import pickle
import struct

import numpy as np
import pytest
import torch

from bncourse import data as D


def _write_idx(path, array, gz):
    """An idx-ubyte file as distributed by (Fashion)MNIST: big-endian magic, dims, uint8 data."""
    array = np.asarray(array, dtype=np.uint8)
    magic = 0x0800 | array.ndim
    payload = struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes()
    if gz:
        with gzip.open(str(path) + ".gz", "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)


def _fake_fashion_mnist(root, n_train=20, n_test=10, gz=False):
    raw = root / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)), gz)
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, gz)


@pytest.mark.parametrize("gz", [False, True])
def test_does_fashion_mnist_load_from_raw_idx_files_gzipped_or_not(tmp_path, gz):
    _fake_fashion_mnist(tmp_path, gz=gz)
    d = D.load_fashion_mnist(tmp_path)
    assert d.X_train.shape == (20, 1, 28, 28) and d.X_test.shape == (10, 1, 28, 28)
    assert d.X_train.dtype == torch.float32 and d.y_train.dtype == torch.int64
    assert d.y_train.tolist() == [i % 10 for i in range(20)]
    assert d.classes[0] == "T-shirt/top"
    assert abs(d.X_train.mean().item()) < 1e-5  # normalized with the training statistics


def _fake_cifar10(root, monkeypatch, n=6):
    """CIFAR-10's python pickle batches, with torchvision's md5 list pointed at these files."""
    from torchvision.datasets import CIFAR10

    base = root / CIFAR10.base_folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    md5 = {}

    def dump(name, obj):
        (base / name).write_bytes(pickle.dumps(obj))
        md5[name] = hashlib.md5((base / name).read_bytes()).hexdigest()

    for name, _ in CIFAR10.train_list + CIFAR10.test_list:
        dump(name, {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": list(range(n))})
    dump(CIFAR10.meta["filename"], {CIFAR10.meta["key"]: ["airplane", "automobile", "bird", "cat", "deer",
                                                            "dog", "frog", "horse", "ship", "truck"]})
    monkeypatch.setattr(CIFAR10, "train_list", [[k, md5[k]] for k, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[k, md5[k]] for k, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5[CIFAR10.meta["filename"]]})


def test_does_cifar10_load_through_torchvision_from_pickle_batches(tmp_path, monkeypatch):
    _fake_cifar10(tmp_path, monkeypatch)
    d = D.load_cifar10(tmp_path)
    assert d.X_train.shape == (30, 3, 32, 32) and d.X_test.shape == (6, 3, 32, 32)
    assert d.classes[-1] == "truck" and d.num_classes == 10
    torch.testing.assert_close(d.X_train.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)


def test_does_a_corrupted_cifar_file_fail_torchvisions_md5_check(tmp_path, monkeypatch):
    _fake_cifar10(tmp_path, monkeypatch)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").write_bytes(b"not a pickle")
    with pytest.raises(D.DataUnavailable, match="cache directory"):
        D.load_cifar10(tmp_path)


def test_does_missing_data_raise_an_error_naming_the_directory(tmp_path):
    with pytest.raises(D.DataUnavailable) as err:
        D.load_cifar10(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(err.value)
    with pytest.raises(D.DataUnavailable, match="BNCOURSE_DATA"):
        D.load_fashion_mnist(tmp_path)


def test_is_the_cache_dir_taken_from_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path))
    assert D.data_root() == tmp_path
    assert D.data_root("/elsewhere") == D.Path("/elsewhere")


def test_does_the_digits_fallback_say_it_is_not_cifar(tmp_path, capsys):
    d = D.load_cifar10_or_digits(tmp_path)
    assert d.name == "digits" and "INSTEAD OF CIFAR-10" in d.note
    assert "INSTEAD OF CIFAR-10" in capsys.readouterr().out


def test_does_the_fallback_use_cifar_when_it_is_there(tmp_path, monkeypatch):
    _fake_cifar10(tmp_path, monkeypatch)
    assert D.load_cifar10_or_digits(tmp_path, verbose=False).name == "CIFAR-10"


def test_are_digits_8x8_images_split_by_class():
    d = D.load_digits()
    assert d.X_train.shape[1:] == (1, 8, 8) and len(d.y_train) + len(d.y_test) == 1797
    assert set(d.y_test.tolist()) == set(range(10))
    assert abs(d.X_train.mean().item()) < 1e-5 and abs(d.X_train.std().item() - 1) < 1e-3


def test_does_the_loader_visit_every_example_once_per_epoch_in_a_new_order():
    X = torch.arange(10.0)[:, None]
    y = torch.arange(10)
    loader = D.DeviceLoader(X, y, batch_size=4, shuffle=True, seed=0)
    assert len(loader) == 3
    epoch1 = torch.cat([yb for _, yb in loader])
    epoch2 = torch.cat([yb for _, yb in loader])
    assert sorted(epoch1.tolist()) == list(range(10)) and not torch.equal(epoch1, epoch2)
    for xb, yb in loader:
        assert torch.equal(xb[:, 0].long(), yb)  # images stay with their labels
    assert len(D.DeviceLoader(X, y, batch_size=4, drop_last=True)) == 2


def test_does_augmentation_shift_and_flip_images_within_the_padding():
    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 36.0).reshape(2, 1, 6, 6) + 1
    out = D.random_crop_flip(x, padding=2, flip=True, generator=g)
    assert out.shape == x.shape
    for i in range(2):
        # every kept pixel comes from the same image (or the zero padding)
        assert set(out[i].unique().tolist()) <= set(x[i].unique().tolist()) | {0.0}
    same = D.random_crop_flip(x, padding=0, flip=False, generator=g)
    assert torch.equal(same, x)
    flipped = [D.random_crop_flip(x, padding=0, flip=True, generator=g) for _ in range(8)]
    assert any(torch.equal(f[0], x[0].flip(2)) for f in flipped)


def test_does_augmentation_refuse_non_images():
    with pytest.raises(ValueError, match="images"):
        D.DeviceLoader(torch.zeros(4, 3), torch.zeros(4), augment=True)


def test_does_the_class_pair_loader_give_batches_of_exactly_two_classes():
    y = torch.arange(100) % 10
    X = y.float()[:, None]
    loader = D.ClassPairLoader(X, y, batch_size=16, classes_per_batch=2, seed=0)
    assert len(loader) == 6
    seen = set()
    for xb, yb in loader:
        assert len(yb) == 16 and len(set(yb.tolist())) == 2
        assert torch.equal(xb[:, 0].long(), yb)
        seen |= set(yb.tolist())
    assert len(seen) > 2  # different pairs in different batches
    with pytest.raises(ValueError, match="only 10 classes"):
        D.ClassPairLoader(X, y, classes_per_batch=11)


def test_is_a_data_set_copied_to_the_device_once_and_then_reused():
    """The meta device stands in for a GPU: a real copy to another device, no memory used."""
    import gc

    from bncourse import data as D

    X = torch.randn(50, 3)
    first = D.to_device_cached(X, "meta")
    assert first.device.type == "meta" and D.to_device_cached(X, "meta") is first
    assert D.to_device_cached(X, "meta", torch.float16) is not first  # keyed by dtype too
    assert D.to_device_cached(X, "cpu") is X  # already there: no copy, no cache entry
    X.add_(1)  # changed in place: a fresh copy
    assert D.to_device_cached(X, "meta") is not first
    n = len(D._DEVICE_COPIES)
    del X
    gc.collect()
    assert len(D._DEVICE_COPIES) < n  # freed with its source


def test_do_two_loaders_over_one_data_set_share_its_device_copy(monkeypatch):
    from bncourse import data as D

    X, y = torch.randn(20, 1, 4, 4), torch.arange(20)
    copies = []
    real = D.to_device_cached
    monkeypatch.setattr(D, "to_device_cached", lambda t, device, dtype=None: copies.append(t) or real(t, device, dtype))
    D.DeviceLoader(X, y, 4), D.DeviceLoader(X, y, 4)
    assert copies == [X, y, X, y]  # every loader asks the cache; on a GPU only the first copies

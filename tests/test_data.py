"""Datasets: the three sources, the stratified split and every bad-input error."""

import gzip
import shutil

import numpy as np
import pytest
import torch
from conftest import write_idx

from trainables.data import DataConfig, DataError, load_splits, read_idx


def test_idx_single_split_is_stratified_and_deterministic(idx_dir):
    a = load_splits(DataConfig("mnist-idx", str(idx_dir)))
    b = load_splits(DataConfig("mnist-idx", str(idx_dir)))
    assert len(a.train) == 180 and len(a.val) == 20
    assert torch.equal(a.val.labels.bincount(), torch.full((10,), 2))
    assert torch.equal(a.val.images, b.val.images) and a.fingerprint == b.fingerprint
    assert a.train.images.shape == (180, 1, 28, 28) and a.train.images.dtype == torch.float32
    assert a.train.images.min() >= -1 and a.train.images.max() <= 1


def test_idx_uncompressed_and_train_test_pair(tmp_path):
    rng = np.random.default_rng(1)
    for prefix, n in (("train", 50), ("t10k", 30)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)),
                  0x803, compress=False)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10, 0x801,
                  compress=False)
    s = load_splits(DataConfig("mnist-idx", str(tmp_path)))
    assert (len(s.train), len(s.val)) == (50, 30)


def test_offline_mnist(mnist_dir):
    s = load_splits(DataConfig("mnist-idx", str(mnist_dir)))
    assert (len(s.train), len(s.val)) == (9000, 1000)
    counts = torch.bincount(torch.cat([s.train.labels, s.val.labels]))
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_digits_resized():
    s = load_splits(DataConfig("digits"))
    assert len(s.train) + len(s.val) == 1797
    img = s.train.images[0, 0]
    assert img.shape == (28, 28) and (img[:4] == -1).all()  # MNIST-like empty border


# ----------------------------------------------------------------------------- bad input


def _expect(cfg_dir, match):
    with pytest.raises(DataError, match=match) as e:
        load_splits(DataConfig("mnist-idx", str(cfg_dir)))
    assert "\n" not in str(e.value)


def test_missing_directory(tmp_path):
    _expect(tmp_path / "nope", "does not exist.*--data-dir")


def test_empty_directory(tmp_path):
    _expect(tmp_path, "no MNIST IDX files")


def test_missing_labels(idx_dir):
    (idx_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    _expect(idx_dir, "no matching t10k-labels")


def test_truncated_gzip(idx_dir):
    p = idx_dir / "t10k-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:500])
    _expect(idx_dir, "cannot read")


def test_truncated_payload(idx_dir):
    p = idx_dir / "t10k-images-idx3-ubyte.gz"
    with gzip.open(p) as f:
        raw = f.read()
    with gzip.open(p, "wb") as f:
        f.write(raw[:-100])
    _expect(idx_dir, "truncated")


def test_wrong_magic(idx_dir):
    shutil.copy(idx_dir / "t10k-labels-idx1-ubyte.gz", idx_dir / "t10k-images-idx3-ubyte.gz")
    _expect(idx_dir, "magic number 0x00000801, expected 0x00000803")


def test_count_mismatch(idx_dir):
    write_idx(idx_dir / "t10k-labels-idx1-ubyte.gz", np.arange(150) % 10, 0x801)
    _expect(idx_dir, "200 images but .* 150 labels")


def test_not_gzip(idx_dir):
    (idx_dir / "t10k-images-idx3-ubyte.gz").write_bytes(b"plain text, not gzip")
    _expect(idx_dir, "cannot read")


def test_unknown_dataset():
    with pytest.raises(DataError, match="unknown dataset 'cifar'"):
        DataConfig("cifar")


def test_mnist_download_failure_names_the_option(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*a, **k):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(DataError, match="could not download MNIST.*--data-dir"):
        load_splits(DataConfig("mnist", str(tmp_path)))


def test_read_idx_roundtrip(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    write_idx(tmp_path / "x.gz", arr, 0x803)
    assert np.array_equal(read_idx(tmp_path / "x.gz", 0x803), arr)

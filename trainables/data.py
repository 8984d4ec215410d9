"""Digit datasets as in-memory tensors: images (N, 1, 28, 28) float32 in [-1, 1], labels int64.

Three sources (``DataConfig.dataset``):
- ``mnist``: torchvision's MNIST (60k train / 10k test), downloaded into ``data_dir`` on first
  use under a file lock, so concurrent trials do not race.
- ``mnist-idx``: MNIST-format IDX files (``*-images-idx3-ubyte[.gz]``, ``*-labels-idx1-ubyte[.gz]``)
  read from ``data_dir``; this is how the offline 10k test split is used. With a single split a
  deterministic stratified train/validation split is made.
- ``digits``: scikit-learn's bundled 1,797 real 8×8 digits resized to 28×28; always available.

The whole dataset lives in one tensor, so batches are index gathers with no per-item Python work.
Bad input raises ``DataError`` with a one-line message that says what to fix.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

DATASETS = ("mnist", "mnist-idx", "digits")
NUM_CLASSES = 10  # the digits 0..9, the class labels of every dataset here
DIGITS = range(NUM_CLASSES)
DATA_DIR_ENV = "STUDY_DATA_DIR"
DATASET_ENV = "STUDY_DATASET"
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801


class DataError(ValueError):
    """Unusable dataset input; the message is one line naming the input and the fix."""


@dataclass(frozen=True)
class DataConfig:
    dataset: Literal["mnist", "mnist-idx", "digits"] = "mnist"
    data_dir: str = "data"  # where MNIST is downloaded to, or where IDX files are read from
    val_fraction: float = 0.1  # held out per class when the source has a single split
    split_seed: int = 0  # seed of that split; fixed so every trial sees the same split

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise DataError(f"unknown dataset {self.dataset!r}: "
                            f"choose one of {', '.join(DATASETS)}")
        if not 0 < self.val_fraction < 1:
            raise DataError(f"val_fraction={self.val_fraction} must be in (0, 1)")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class Digits:
    images: torch.Tensor  # (N, 1, 28, 28) float32 in [-1, 1]
    labels: torch.Tensor  # (N,) int64 in 0..9

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Splits:
    train: Digits
    val: Digits
    description: str  # e.g. "mnist-idx t10k (9000 train / 1000 val, stratified)"
    fingerprint: str  # content hash of both splits, used to cache per-dataset artefacts


def load_splits(cfg: DataConfig) -> Splits:
    """The train and validation splits of `cfg.dataset`."""
    if cfg.dataset == "mnist":
        (tr_x, tr_y), (va_x, va_y) = _torchvision_mnist(Path(cfg.data_dir))
        desc = "mnist (torchvision train / test)"
    elif cfg.dataset == "mnist-idx":
        (tr_x, tr_y), (va_x, va_y), desc = _idx_splits(Path(cfg.data_dir), cfg)
    else:
        (tr_x, tr_y), (va_x, va_y) = _stratified_split(*_sklearn_digits(), cfg)
        desc = "digits (scikit-learn, 8×8 resized to 28×28)"
    h = hashlib.sha256()
    for a in (tr_x, tr_y, va_x, va_y):
        h.update(a.tobytes())
    desc += f" ({len(tr_y)} train / {len(va_y)} val)"
    return Splits(_to_digits(tr_x, tr_y), _to_digits(va_x, va_y), desc, h.hexdigest()[:16])


def _to_digits(images: np.ndarray, labels: np.ndarray) -> Digits:
    x = torch.from_numpy(images.astype(np.float32)).unsqueeze(1) / 127.5 - 1.0
    return Digits(x, torch.from_numpy(labels.astype(np.int64)))


def _stratified_split(images, labels, cfg: DataConfig):
    rng = np.random.default_rng(cfg.split_seed)
    val_idx = []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        val_idx.append(idx[: max(1, round(len(idx) * cfg.val_fraction))])
    val = np.zeros(len(labels), dtype=bool)
    val[np.concatenate(val_idx)] = True
    return (images[~val], labels[~val]), (images[val], labels[val])


# ----------------------------------------------------------------------------- IDX files


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An IDX array (gzip or raw) whose magic number must equal `magic`."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # BadGzipFile is an OSError; truncated gzip is EOFError
        raise DataError(f"cannot read {path}: {e or 'truncated file'}") from None
    if len(raw) < 8 or struct.unpack(">I", raw[:4])[0] != magic:
        found = f"{struct.unpack('>I', raw[:4])[0]:#010x}" if len(raw) >= 4 else "none"
        raise DataError(f"{path} has magic number {found}, expected {magic:#010x}: "
                        f"not an MNIST {'images' if magic == _IMAGES_MAGIC else 'labels'} file")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(dims)):
        raise DataError(f"{path} is truncated: header says {dims}, found {len(body)} bytes of data")
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


def _find_idx(data_dir: Path) -> dict[str, tuple[Path, Path]]:
    """{prefix: (images file, labels file)} for every IDX pair in data_dir, e.g. 't10k'."""
    if not data_dir.is_dir():
        raise DataError(f"data directory {data_dir} does not exist: pass --data-dir "
                        f"(or set {DATA_DIR_ENV}) to a folder with MNIST IDX files")
    pairs = {}
    for images in sorted(data_dir.glob("*-images-idx3-ubyte*")):
        prefix = images.name.split("-images-idx3-ubyte")[0]
        labels = [p for p in data_dir.glob(f"{prefix}-labels-idx1-ubyte*")]
        if not labels:
            raise DataError(f"{images} has no matching {prefix}-labels-idx1-ubyte[.gz] beside it")
        pairs[prefix] = (images, sorted(labels)[0])
    if not pairs:
        raise DataError(f"no MNIST IDX files (*-images-idx3-ubyte[.gz]) in {data_dir}: pass "
                        f"--data-dir (or set {DATA_DIR_ENV}) to a folder that has them")
    return pairs


def _read_pair(images_path: Path, labels_path: Path):
    images = read_idx(images_path, _IMAGES_MAGIC)
    labels = read_idx(labels_path, _LABELS_MAGIC)
    if len(images) != len(labels):
        raise DataError(f"{images_path.name} has {len(images)} images but {labels_path.name} "
                        f"has {len(labels)} labels")
    if images.shape[1:] != (28, 28):
        raise DataError(f"{images_path} holds {images.shape[1:]} images; 28×28 are required")
    if labels.max(initial=0) > 9:
        raise DataError(f"{labels_path} holds label {labels.max()}; digits 0-9 are required")
    return images, labels


def _idx_splits(data_dir: Path, cfg: DataConfig):
    pairs = _find_idx(data_dir)
    if "train" in pairs and "t10k" in pairs:
        return _read_pair(*pairs["train"]), _read_pair(*pairs["t10k"]), "mnist-idx train / t10k"
    prefix = "train" if "train" in pairs else sorted(pairs)[0]
    train, val = _stratified_split(*_read_pair(*pairs[prefix]), cfg)
    return train, val, f"mnist-idx {prefix} (stratified {1 - cfg.val_fraction:.0%} / " \
                       f"{cfg.val_fraction:.0%} split)"


# ----------------------------------------------------------------------------- other sources


def _torchvision_mnist(root: Path):
    from filelock import FileLock
    from torchvision.datasets import MNIST

    root.mkdir(parents=True, exist_ok=True)
    try:
        with FileLock(str(root / ".mnist.lock")):
            splits = [MNIST(str(root), train=train, download=True) for train in (True, False)]
    except (RuntimeError, OSError) as e:
        raise DataError(
            f"could not download MNIST into {root} ({type(e).__name__}); without internet use "
            f"--dataset mnist-idx with --data-dir (or {DATA_DIR_ENV}) pointing at IDX files"
        ) from None
    return [(ds.data.numpy(), ds.targets.numpy()) for ds in splits]


def _sklearn_digits():
    """scikit-learn's 8×8 digits (0..16) as 28×28 uint8, the digit scaled into a centred 20×20
    box as in MNIST."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy(d.images).float().unsqueeze(1) / 16.0  # (N, 1, 8, 8) in [0, 1]
    x = F.pad(F.interpolate(x, size=(20, 20), mode="bilinear", align_corners=False), (4,) * 4)
    return (x.squeeze(1).clamp(0, 1) * 255).round().to(torch.uint8).numpy(), d.target


def default_data_dir() -> str:
    """$STUDY_DATA_DIR, else ./data."""
    return os.environ.get(DATA_DIR_ENV) or "data"


def default_dataset() -> str:
    """$STUDY_DATASET; else mnist-idx when $STUDY_DATA_DIR is set (IDX files); else mnist."""
    offline = os.environ.get(DATA_DIR_ENV)
    return os.environ.get(DATASET_ENV) or ("mnist-idx" if offline else "mnist")

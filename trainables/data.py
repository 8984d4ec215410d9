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
import math
import os
import stat
import struct
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from trainables.errors import squeeze

DATASETS = ("mnist", "mnist-idx", "digits")
NUM_CLASSES = 10  # the digits 0..9, the class labels of every dataset here
DIGITS = range(NUM_CLASSES)
DATA_DIR_ENV = "STUDY_DATA_DIR"
DATASET_ENV = "STUDY_DATASET"
_IMAGES_MAGIC, _LABELS_MAGIC = 0x00000803, 0x00000801
# Most items an IDX file may hold (MNIST has 60,000 + 10,000, EMNIST-byclass 814,255): a header
# claiming more is corrupt or hostile, and the bound caps a read at 784 MB of images
MAX_IDX_ITEMS = 1_000_000


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


def read_idx(path: Path, magic: int, item_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """An IDX array (gzip or raw) whose magic number must equal `magic` and, when given, whose
    items have `item_shape` (e.g. (28, 28) for MNIST images, () for labels).

    Hostile files end in a one-line DataError, never a hang or a huge allocation: only regular
    files are opened (a FIFO or device is refused before any read), the header is checked
    (shape, at most MAX_IDX_ITEMS items) before the body is read, a raw file's size must be
    what the header promises, and a gzip stream is read to at most one byte past it (a gzip
    bomb stops there)."""
    try:
        with _open_regular(path) as raw:
            size = os.fstat(raw.fileno()).st_size
            f = gzip.GzipFile(fileobj=raw, mode="rb") if path.suffix == ".gz" else raw
            dims, header = _read_header(f, path, magic, item_shape)
            expected = math.prod(dims)
            if f is raw and size != header + expected:
                raise DataError(_damaged(path, f"the header promises {dims} = {expected} bytes "
                                               f"of data, the file holds {size - header}"))
            body = _read_at_most(f, expected + 1)  # one byte more: a longer stream is detected
    except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
        why = squeeze(e) or type(e).__name__  # a truncated gzip's EOFError has no message
        raise DataError(_damaged(path, f"cannot read it ({why})")) from None
    if len(body) != expected:
        found = f"only {len(body)}" if len(body) < expected else "more"
        what = "truncated" if len(body) < expected else "longer than its header says"
        raise DataError(_damaged(path, f"{what}: the header promises {dims} = {expected} bytes "
                                       f"of data, found {found}"))
    return np.frombuffer(body, dtype=np.uint8).reshape(dims)


_CHUNK = 1 << 20


def _read_at_most(f, n: int) -> bytearray:
    """Up to `n` bytes of `f`, in 1 MiB chunks: memory grows with what the stream holds, not
    with what its header claims (a file's ``read(n)`` allocates all `n` bytes first, so a 1 KB
    gzip whose header claims a million images would cost 784 MB before it is found short)."""
    out = bytearray()
    while len(out) < n and (chunk := f.read(min(_CHUNK, n - len(out)))):
        out += chunk
    return out


def _open_regular(path: Path):
    """`path` opened for binary reading if it is a regular file (after symlinks), else a
    DataError. O_NONBLOCK: opening a FIFO must not wait for a writer; fstat on the open file
    leaves no window for a swap between the check and the read."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    kind = os.fstat(fd).st_mode
    if not stat.S_ISREG(kind):
        os.close(fd)
        what = ("a FIFO" if stat.S_ISFIFO(kind) else "a directory" if stat.S_ISDIR(kind)
                else "a device" if stat.S_ISCHR(kind) or stat.S_ISBLK(kind) else "a socket")
        raise DataError(f"{path} is {what}, not a regular file: point --data-dir (or "
                        f"{DATA_DIR_ENV}) at a folder of MNIST IDX files")
    return os.fdopen(fd, "rb")


def _read_header(f, path: Path, magic: int, item_shape) -> tuple[tuple[int, ...], int]:
    """(dims, header bytes) of an IDX stream, validated before any data is read."""
    head = f.read(4)
    kind = "images" if magic == _IMAGES_MAGIC else "labels"
    if len(head) < 4 or struct.unpack(">I", head)[0] != magic:
        found = f"{struct.unpack('>I', head)[0]:#010x}" if len(head) == 4 else "none"
        raise DataError(f"{path} has magic number {found}, expected {magic:#010x}: not an "
                        f"MNIST {kind} file; replace it with one")
    ndim = magic & 0xFF  # the magic's last byte is the number of dimensions
    raw_dims = f.read(4 * ndim)
    if len(raw_dims) < 4 * ndim:
        raise DataError(_damaged(path, "truncated inside its header"))
    dims = struct.unpack(f">{ndim}I", raw_dims)
    if item_shape is not None and dims[1:] != tuple(item_shape):
        shape = "×".join(map(str, item_shape)) or "scalar"
        raise DataError(_damaged(path, f"the header says {kind} of shape {dims[1:]}; "
                                       f"MNIST {kind} are {shape}"))
    if not 1 <= dims[0] <= MAX_IDX_ITEMS or math.prod(dims) > MAX_IDX_ITEMS * 28 * 28:
        raise DataError(_damaged(path, f"the header claims {dims[0]} {kind} ({dims}); this "
                                       f"reader takes 1 to {MAX_IDX_ITEMS}"))
    return dims, 4 + 4 * ndim


def _damaged(path: Path, what: str) -> str:
    return f"{path} is not a usable MNIST IDX file: {what}; replace it with an intact copy"


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
    images = read_idx(images_path, _IMAGES_MAGIC, item_shape=(28, 28))
    labels = read_idx(labels_path, _LABELS_MAGIC, item_shape=())
    if len(images) != len(labels):
        raise DataError(f"{images_path.name} has {len(images)} images but {labels_path.name} "
                        f"has {len(labels)} labels: use the labels file of the same split")
    if labels.max(initial=0) >= NUM_CLASSES:
        raise DataError(f"{labels_path} holds label {labels.max()}; digits 0-9 are required: "
                        f"replace it with an MNIST labels file")
    return images, labels


def _idx_splits(data_dir: Path, cfg: DataConfig):
    pairs = _find_idx(data_dir)
    if "train" in pairs and "t10k" in pairs:
        return _read_pair(*pairs["train"]), _read_pair(*pairs["t10k"]), "mnist-idx train / t10k"
    prefix = "train" if "train" in pairs else sorted(pairs)[0]
    train, val = _stratified_split(*_read_pair(*pairs[prefix]), cfg)
    if len(train[1]) == 0:  # e.g. one image per digit: all of it goes to validation
        raise DataError(f"{pairs[prefix][0]} holds {len(val[1])} images, too few to split into "
                        f"training and validation: use a larger IDX file")
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

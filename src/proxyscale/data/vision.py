"""Image-classification data for the vision ladder: scikit-learn digits and CIFAR-10.

Both loaders return a :class:`VisionData` of numpy arrays in (N, C, H, W) float32 layout,
normalised per channel with statistics of the *training* split only, so test inputs never
leak into preprocessing.

- ``digits``: scikit-learn's embedded ``load_digits()`` (1,797 images, 8x8, 1 channel,
  10 classes). It needs no files, which makes it the default for tests and demos. The
  train/test split is a permutation drawn from a caller-supplied ``np.random.Generator``.
- ``cifar10``: the *binary* distribution (``data_batch_1.bin`` ... ``data_batch_5.bin``,
  ``test_batch.bin``); each record is one label byte followed by 3,072 pixel bytes in
  channel-major (C, H, W) order. Read directly with numpy: no torchvision at run time.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

import numpy as np

from ..errors import DataError

CIFAR_RECORD = 1 + 3 * 32 * 32
CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_FILE = "test_batch.bin"


@dataclass(frozen=True)
class VisionData:
    """A classification data set: images (N, C, H, W) float32 and int64 labels."""

    name: str
    x_train: np.ndarray  # (N, C, H, W)
    y_train: np.ndarray  # (N,)
    x_test: np.ndarray  # (N_test, C, H, W)
    y_test: np.ndarray  # (N_test,)
    n_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def flat(self) -> "VisionData":
        """The same data with each image flattened to a vector (for MLPs)."""
        return VisionData(self.name, self.x_train.reshape(self.n_train, -1),
                          self.y_train, self.x_test.reshape(len(self.x_test), -1),
                          self.y_test, self.n_classes)


@dataclass(frozen=True)
class VisionDataConfig:
    """Which data set to load. ``root`` is the CIFAR-10 binary directory (unused for digits);
    ``n_train`` is the digits training-split size (the rest is the test split)."""

    name: Literal["digits", "cifar10"] = "digits"
    root: Optional[str] = None
    n_train: int = 1000


def normalize_channels(x_train: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Standardise each channel with the training split's mean and standard deviation."""
    axes = (0, 2, 3)
    mean = x_train.mean(axis=axes, keepdims=True)
    std = x_train.std(axis=axes, keepdims=True)
    std = np.where(std > 0, std, 1.0)  # a constant channel stays constant instead of NaN
    return ((x_train - mean) / std).astype(np.float32), ((x_test - mean) / std).astype(np.float32)


def load_digits_data(rng: np.random.Generator, n_train: int = 1000) -> VisionData:
    """scikit-learn digits as (N, 1, 8, 8), split into ``n_train`` / rest by a permutation
    drawn from ``rng``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.float64)[:, None, :, :] / 16.0  # (1797, 1, 8, 8), pixels in [0, 1]
    labels = d.target.astype(np.int64)
    n = len(labels)
    if not 0 < n_train < n:
        raise DataError(f"digits has {n} images; n_train={n_train} must be between 1 and {n - 1}")
    order = rng.permutation(n)
    tr, te = order[:n_train], order[n_train:]
    x_tr, x_te = normalize_channels(images[tr], images[te])
    return VisionData("digits", x_tr, labels[tr], x_te, labels[te], 10)


def read_cifar_bin(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read one CIFAR-10 binary file: (N, 3, 32, 32) uint8 images and (N,) int64 labels."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: CIFAR-10 file is missing; download the *binary* version "
                        "(cifar-10-binary.tar.gz) and pass the directory holding the .bin files")
    raw = np.fromfile(p, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise DataError(f"{p}: {raw.size} bytes is not a whole number of {CIFAR_RECORD}-byte records; "
                        "the file is truncated or not CIFAR-10 binary — download it again")
    rec = raw.reshape(-1, CIFAR_RECORD)
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise DataError(f"{p}: label byte {int(labels.max())} > 9; this is not a CIFAR-10 binary file "
                        "(CIFAR-100 has a second label byte)")
    return rec[:, 1:].reshape(-1, 3, 32, 32), labels


def load_cifar10(root: str | Path, train_files: tuple[str, ...] = CIFAR_TRAIN_FILES,
                 test_file: str = CIFAR_TEST_FILE) -> VisionData:
    """CIFAR-10 from its binary distribution in ``root``, normalised per channel."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory; pass the folder with data_batch_1.bin ... test_batch.bin")
    parts = [read_cifar_bin(root / f) for f in train_files]
    x_tr = np.concatenate([p[0] for p in parts]).astype(np.float64) / 255.0
    y_tr = np.concatenate([p[1] for p in parts])
    x_te, y_te = read_cifar_bin(root / test_file)
    x_tr, x_te = normalize_channels(x_tr, x_te.astype(np.float64) / 255.0)
    return VisionData("cifar10", x_tr, y_tr, x_te, y_te, 10)


def load_vision(cfg: VisionDataConfig, rng: np.random.Generator) -> VisionData:
    """Load the data set named by ``cfg`` (``rng`` draws the digits split)."""
    if cfg.name == "digits":
        return load_digits_data(rng, cfg.n_train)
    if cfg.root is None:
        raise DataError("cifar10 needs `root`: the directory holding the CIFAR-10 binary .bin files")
    return load_cifar10(cfg.root)

"""Image data for the masked-MLP pruning baseline, as ``rnn_models.mlp.FixedInputs``.

``digits`` gives scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download);
``mnist`` reads MNIST from the four IDX files (LeCun et al.) for users who have them, and
``read_idx`` reads any IDX file. Pixels are scaled to [0, 1].
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from rnn_models.mlp import FixedInputs

IDX_TYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
"""IDX type codes and the big-endian numpy dtypes they stand for."""

MNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""The standard MNIST file names (each may also end in ``.gz``)."""


def read_idx(path: str | Path) -> np.ndarray:
    """The array stored in the IDX file ``path`` (gzip-compressed when it ends in ``.gz``):
    two zero bytes, a type code (``IDX_TYPES``), the number of dimensions, each dimension
    as a big-endian uint32, then the data in C order."""
    path = Path(path)
    raw = (gzip.open if path.suffix == ".gz" else open)(path, "rb").read()
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES:
        raise ValueError(f"{path} is not an IDX file: it must start with two zero bytes and a type code "
                         f"in {sorted(hex(t) for t in IDX_TYPES)}")
    dims = raw[3]
    header = 4 + 4 * dims
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=dims, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(f"{path} holds {len(raw)} bytes, but its header {shape} of {dtype} needs {expected}")
    return np.frombuffer(raw, dtype, offset=header).reshape(shape)


def _find(directory: Path, name: str) -> Path:
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{directory} must hold {name} or {name}.gz (the MNIST IDX files)")


def _images(images: np.ndarray, labels: np.ndarray, what: str) -> FixedInputs:
    if images.ndim < 2 or labels.shape != (images.shape[0],):
        raise ValueError(f"{what}: images must be (n, ...) and labels (n,), got {images.shape} and {labels.shape}")
    flat = images.reshape(len(images), -1).astype(np.float32)
    return FixedInputs.from_arrays(flat / max(float(flat.max()), 1.0), labels.astype(np.int64), classes=10)


def mnist(directory: str | Path) -> tuple[FixedInputs, FixedInputs]:
    """MNIST's train and test sets from the IDX files in ``directory`` (``MNIST_FILES``),
    pixels scaled to [0, 1], 784 features, 10 classes."""
    directory = Path(directory)
    sets = []
    for split in ("train", "test"):
        images, labels = (read_idx(_find(directory, name)) for name in MNIST_FILES[split])
        sets.append(_images(images, labels, split))
    return sets[0], sets[1]


def digits(test_fraction: float = 0.25, seed: int = 0) -> tuple[FixedInputs, FixedInputs]:
    """scikit-learn's 8x8 digits, split at random (stratified by class, ``seed``) into train
    and ``test_fraction`` test; 64 features in [0, 1], 10 classes."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    bunch = load_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.data / 16.0, bunch.target, test_size=test_fraction, random_state=seed, stratify=bunch.target)
    return FixedInputs.from_arrays(x_train, y_train, 10), FixedInputs.from_arrays(x_test, y_test, 10)

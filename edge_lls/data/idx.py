"""IDX files (MNIST, Fashion-MNIST), raw or gzip.

Header: 4-byte magic (0x00, 0x00, dtype code, number of dims), then one big-endian uint32
per dim, then the data. Only uint8 data (dtype code 0x08) is used by these datasets.
"""
from __future__ import annotations

import math
import struct
from pathlib import Path

import numpy as np

from edge_lls.errors import DataError
from edge_lls.data.checks import Shape3, check_labels, require_native_shape
from edge_lls.data.files import read_bytes, require_dir
from edge_lls.data.source import Source, index_names
from edge_lls.data.split import Split
from edge_lls.data.stores import ArrayStore

IMAGES_MAGIC = 0x00000803  # uint8, 3 dims (N,H,W)
LABELS_MAGIC = 0x00000801  # uint8, 1 dim (N,)
_KIND = {IMAGES_MAGIC: "uint8 images, 3 dims", LABELS_MAGIC: "uint8 labels, 1 dim"}

MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def read_idx(path: Path, magic: int) -> np.ndarray:
    """The file's array with the header's dims, uint8 (a read-only view of the file bytes)."""
    data = read_bytes(path)
    if len(data) < 4:
        raise DataError(f"{path}: not an IDX file: {len(data)} bytes, shorter than the 4-byte magic")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise DataError(f"{path}: wrong IDX magic 0x{found:08X}, expected 0x{magic:08X} ({_KIND[magic]})")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header: expected {header} bytes, file has {len(data)}")
    dims = struct.unpack(f">{ndim}I", data[4:header])
    expected = header + math.prod(dims)
    if len(data) != expected:
        problem = "truncated IDX file" if len(data) < expected else "IDX file longer than its header says"
        raise DataError(f"{path}: {problem}: header dims {dims} need {expected} bytes, file has {len(data)}")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(folder: Path, split: str, kind: str) -> Path | None:
    """e.g. split 't10k', kind 'images' -> t10k-images-idx3-ubyte[.gz] (or the '.idx3' spelling)."""
    rank = "3" if kind == "images" else "1"
    for stem in (f"{split}-{kind}-idx{rank}-ubyte", f"{split}-{kind}.idx{rank}-ubyte"):
        for name in (stem, stem + ".gz"):
            if (folder / name).is_file():
                return folder / name
    return None


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """-> pixels (N,H,W,1) uint8, labels (N,) int64."""
    images = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if images.shape[0] != labels.shape[0]:
        raise DataError(f"{labels_path}: {labels.shape[0]} labels but {images_path.name} has {images.shape[0]} images")
    return images[..., None], labels.astype(np.int64)


def read_idx_dataset(path: Path, input_shape: Shape3 | None, *, num_classes: int | None = None,
                     class_names: tuple[str, ...] | None = None) -> Source:
    """A folder with train-/t10k- image and label files. With only one pair present it is the
    training data and the registry holds out a test part. num_classes None: max label + 1."""
    require_dir(path, "IDX dataset folder")
    pairs = {}
    for split in ("train", "t10k"):
        images, labels = _find(path, split, "images"), _find(path, split, "labels")
        if (images is None) != (labels is None):
            missing = f"{split}-{'labels-idx1' if labels is None else 'images-idx3'}-ubyte[.gz]"
            raise DataError(f"{path}: {missing} not found next to {(images or labels).name}")
        if images is not None:
            pairs[split] = (images, labels)
    if not pairs:
        raise DataError(f"{path}: no IDX files: expected train-images-idx3-ubyte[.gz] + train-labels-idx1-ubyte[.gz] "
                        f"and/or t10k-images-idx3-ubyte[.gz] + t10k-labels-idx1-ubyte[.gz]")
    arrays = {split: _read_pair(*files) for split, files in pairs.items()}
    shapes = {pixels.shape[1:] for pixels, _ in arrays.values()}
    if len(shapes) > 1:
        raise DataError(f"{path}: train and t10k images differ in size: {sorted(shapes)}")
    if num_classes is None:
        num_classes = max(int(labels.max(initial=0)) for _, labels in arrays.values()) + 1
    for split, (_, labels) in arrays.items():
        check_labels(labels, num_classes, str(pairs[split][1]))
    native = shapes.pop()
    shape = require_native_shape(input_shape, native, str(path))
    splits = {s: Split(ArrayStore(pixels, 255.0), labels) for s, (pixels, labels) in arrays.items()}
    train = splits.pop("train", None)
    test = splits.pop("t10k", None)
    if train is None:  # only the t10k pair (e.g. the MNIST test set alone): it becomes the training data
        train, test = test, None
    return Source(train=train, test=test, num_classes=num_classes,
                  class_names=class_names or index_names(num_classes), input_shape=shape,
                  where=str(path))

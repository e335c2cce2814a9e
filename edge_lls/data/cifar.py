"""CIFAR-10 / CIFAR-100 binary versions.

CIFAR-10 record: 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B: CHW, 32x32).
CIFAR-100 record: coarse label byte + fine label byte + 3072 pixel bytes; we use the fine label.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from edge_lls.errors import DataError
from edge_lls.data.checks import Shape3, check_labels, require_native_shape
from edge_lls.data.files import is_gzip, one_line, require_dir
from edge_lls.data.source import Source, index_names
from edge_lls.data.split import Split
from edge_lls.data.stores import ArrayStore

NATIVE_SHAPE = (32, 32, 3)
PIXEL_BYTES = 32 * 32 * 3
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer",
                   "dog", "frog", "horse", "ship", "truck")


def _read_records(files: list[Path], label_offset: int, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """-> pixels (N,32,32,3) uint8 HWC, labels (N,) int64. Allocates the pixel array once and
    fills it file by file, so peak memory is the dataset plus one file."""
    record = label_offset + 1 + PIXEL_BYTES
    counts = []
    for f in files:
        if is_gzip(f):
            raise DataError(f"{f}: gzip-compressed; extract the CIFAR binary .tar.gz so the .bin files are raw")
        try:
            size = f.stat().st_size
        except OSError as e:
            raise DataError(f"{f}: cannot read ({one_line(e)})") from None
        if size == 0 or size % record:
            raise DataError(f"{f}: {size} bytes is not a whole number of {record}-byte CIFAR records")
        counts.append(size // record)
    pixels = np.empty((sum(counts), *NATIVE_SHAPE), dtype=np.uint8)
    labels = np.empty(sum(counts), dtype=np.int64)
    start = 0
    for f, count in zip(files, counts):
        try:
            data = np.fromfile(f, dtype=np.uint8)
        except OSError as e:
            raise DataError(f"{f}: cannot read ({one_line(e)})") from None
        if data.size != count * record:
            raise DataError(f"{f}: changed while being read ({data.size} bytes, expected {count * record})")
        rows = data.reshape(count, record)
        file_labels = rows[:, label_offset].astype(np.int64)
        check_labels(file_labels, num_classes, str(f))
        labels[start:start + count] = file_labels
        # CHW planes -> HWC, written straight into the preallocated array.
        pixels[start:start + count] = rows[:, label_offset + 1:].reshape(count, 3, 32, 32).transpose(0, 2, 3, 1)
        start += count
    return pixels, labels


def _locate(path: Path, subfolder: str, marker: str) -> Path:
    require_dir(path, "CIFAR folder")
    if not (path / marker).exists() and (path / subfolder).is_dir():
        return path / subfolder
    return path


def _class_names(folder: Path, filename: str, num_classes: int, default: tuple[str, ...]) -> tuple[str, ...]:
    names_file = folder / filename
    if names_file.is_file():
        try:
            names = tuple(line.strip() for line in names_file.read_text().splitlines() if line.strip())
        except (OSError, UnicodeDecodeError) as e:
            raise DataError(f"{names_file}: cannot read class names ({one_line(e)})") from None
        if len(names) == num_classes:
            return names
    return default


def _split(files: list[Path], label_offset: int, num_classes: int) -> Split:
    pixels, labels = _read_records(files, label_offset, num_classes)
    return Split(ArrayStore(pixels, 255.0), labels)


def read_cifar10(path: Path, input_shape: Shape3 | None) -> Source:
    folder = _locate(path, "cifar-10-batches-bin", "data_batch_1.bin")
    batches = {int(m.group(1)): f for f in folder.glob("data_batch_*.bin")
               if (m := re.fullmatch(r"data_batch_(\d+)\.bin", f.name))}
    if not batches:
        raise DataError(f"{folder}: data_batch_1.bin not found (CIFAR-10 binary version)")
    for k in range(1, max(batches) + 1):
        if k not in batches:
            raise DataError(f"{folder / f'data_batch_{k}.bin'}: not found (data_batch_1..{max(batches)} must all be present)")
    shape = require_native_shape(input_shape, NATIVE_SHAPE, str(folder))
    train = _split([batches[k] for k in sorted(batches)], 0, 10)
    test_file = folder / "test_batch.bin"
    test = _split([test_file], 0, 10) if test_file.exists() else None
    return Source(train=train, test=test, num_classes=10,
                  class_names=_class_names(folder, "batches.meta.txt", 10, CIFAR10_CLASSES),
                  input_shape=shape, where=str(folder))


def read_cifar100(path: Path, input_shape: Shape3 | None) -> Source:
    folder = _locate(path, "cifar-100-binary", "train.bin")
    train_file = folder / "train.bin"
    if not train_file.exists():
        raise DataError(f"{train_file}: not found (CIFAR-100 binary version)")
    shape = require_native_shape(input_shape, NATIVE_SHAPE, str(folder))
    train = _split([train_file], 1, 100)
    test_file = folder / "test.bin"
    test = _split([test_file], 1, 100) if test_file.exists() else None
    return Source(train=train, test=test, num_classes=100,
                  class_names=_class_names(folder, "fine_label_names.txt", 100, index_names(100)),
                  input_shape=shape, where=str(folder))

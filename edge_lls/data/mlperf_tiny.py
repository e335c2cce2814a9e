"""MLPerf Tiny / EEMBC EnergyRunner performance datasets (vww01, ic01).

A folder of raw images, one `*.bin` per sample (uint8, H*W*C bytes, HWC, RGB for 3 channels),
and `y_labels.csv` in the same folder with one row per sample and no header:

    input file name, total number of classes, class number
"""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edge_lls.errors import DataError
from edge_lls.data.checks import Shape3, fmt_shape
from edge_lls.data.files import one_line, require_dir
from edge_lls.data.source import Source, index_names
from edge_lls.data.split import Split
from edge_lls.data.stores import ArrayStore

LABELS_FILE = "y_labels.csv"


def _parse_int(text: str, field: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise DataError(f"{where}: {field} {text!r} is not an integer") from None


def read_label_rows(csv_path: Path) -> list[tuple[str, int, int]]:
    """-> (file name, num_classes, label) per data row. Blank lines and surrounding whitespace
    are ignored; every other malformed row is an error naming its line."""
    try:
        text = csv_path.read_text()
    except FileNotFoundError:
        raise DataError(f"{csv_path}: not found (an MLPerf Tiny folder needs {LABELS_FILE})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{csv_path}: cannot read ({one_line(e)})") from None
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{csv_path} line {line_no}"
        fields = [f.strip() for f in line.split(",")]
        if len(fields) != 3 or not fields[0]:
            raise DataError(f"{where}: expected 'file name, number of classes, label', got {line.strip()!r}")
        num_classes = _parse_int(fields[1], "number of classes", where)
        label = _parse_int(fields[2], "label", where)
        if num_classes < 1:
            raise DataError(f"{where}: number of classes {num_classes} must be >= 1")
        if not 0 <= label < num_classes:
            raise DataError(f"{where}: label {label} for {fields[0]} is outside [0, {num_classes})")
        rows.append((fields[0], num_classes, label))
    if not rows:
        raise DataError(f"{csv_path}: no rows")
    return rows


def _infer_shape(byte_count: int, where: str) -> Shape3:
    """Square RGB (vww01 96x96x3, ic01 32x32x3), else square grayscale."""
    for channels in (3, 1):
        side = math.isqrt(byte_count // channels)
        if side * side * channels == byte_count and side > 0:
            return side, side, channels
    raise DataError(f"{where}: cannot infer the image shape from {byte_count} bytes; pass input_shape (H, W, C)")


def _check_rows_match_files(path: Path, names: list[str]) -> None:
    """One row per .bin: a duplicate would weigh a sample twice, an unlisted file has no label."""
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise DataError(f"{path / LABELS_FILE}: {name} is listed more than once")
        seen.add(name)
    unlisted = sorted(f.name for f in path.glob("*.bin") if f.name not in seen)
    if unlisted:
        more = f" and {len(unlisted) - 1} more" if len(unlisted) > 1 else ""
        raise DataError(f"{path / unlisted[0]}: has no row in {LABELS_FILE}{more}")


def read_mlperf_tiny(path: Path, input_shape: Shape3 | None) -> Source:
    require_dir(path, "MLPerf Tiny dataset folder")
    csv_path = path / LABELS_FILE
    rows = read_label_rows(csv_path)
    class_counts = {n for _, n, _ in rows}
    if len(class_counts) > 1:
        raise DataError(f"{csv_path}: rows disagree on the number of classes: {sorted(class_counts)}")
    num_classes = class_counts.pop()
    _check_rows_match_files(path, [name for name, _, _ in rows])
    sizes = []
    for name, _, _ in rows:
        f = path / name
        if not f.is_file():
            raise DataError(f"{f}: listed in {LABELS_FILE} but not found")
        sizes.append(f.stat().st_size)
    shape = input_shape or _infer_shape(sizes[0], str(path / rows[0][0]))
    expected = math.prod(shape)
    for (name, _, _), size in zip(rows, sizes):
        if size != expected:
            raise DataError(f"{path / name}: {size} bytes, expected {expected} for a {fmt_shape(shape)} uint8 image")
    pixels = np.empty((len(rows), *shape), dtype=np.uint8)  # (N,H,W,C), the files are already HWC
    for i, (name, _, _) in enumerate(rows):
        try:
            pixels[i] = np.fromfile(path / name, dtype=np.uint8).reshape(shape)
        except (OSError, ValueError) as e:
            raise DataError(f"{path / name}: cannot read ({one_line(e)})") from None
    labels = np.array([label for _, _, label in rows], dtype=np.int64)
    return Source(train=Split(ArrayStore(pixels, 255.0), labels), test=None, num_classes=num_classes,
                  class_names=index_names(num_classes), input_shape=shape, where=str(path),
                  grouped_by_class=True)

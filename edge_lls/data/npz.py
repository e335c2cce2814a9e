"""NumPy .npz arrays: x (N,H,W,C) or (N,H,W), y (N,); optional x_test, y_test and class_names.

Integer pixels must be 0..255 and are scaled by 1/255; float pixels are taken as already in
[0,1]. Loaded with allow_pickle=False: an object array is refused, never unpickled.
"""
from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from edge_lls.errors import DataError
from edge_lls.data.checks import Shape3, check_labels, require_native_shape
from edge_lls.data.files import one_line, require_file
from edge_lls.data.source import Source, index_names
from edge_lls.data.split import Split
from edge_lls.data.stores import ArrayStore


def _get(archive: np.lib.npyio.NpzFile, key: str, where: str) -> np.ndarray:
    try:
        return archive[key]
    except ValueError as e:  # object arrays need pickle, which we never allow
        raise DataError(f"{where}: array '{key}' cannot be loaded without pickle ({one_line(e)})") from None
    except (OSError, zipfile.BadZipFile, EOFError) as e:
        raise DataError(f"{where}: array '{key}' is corrupt ({one_line(e)})") from None


def _pixels(x: np.ndarray, key: str, where: str) -> tuple[np.ndarray, float]:
    """-> (N,H,W,C) pixels as stored for the batch loader, and the divisor to [0,1]."""
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or min(x.shape) == 0:
        raise DataError(f"{where}: '{key}' must be (N,H,W,C) or (N,H,W) with every dim >= 1, got shape {x.shape}")
    if x.dtype.kind in "ui":
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{where}: integer '{key}' values must be 0..255, found {x.min()}..{x.max()}")
        return x.astype(np.uint8, copy=False), 255.0
    if x.dtype.kind == "f":
        if not np.all(np.isfinite(x)):
            raise DataError(f"{where}: '{key}' contains NaN or infinite values")
        return x.astype(np.float32, copy=False), 1.0
    raise DataError(f"{where}: '{key}' has dtype {x.dtype}; expected integer or float pixels")


def _labels(y: np.ndarray, count: int, key: str, where: str) -> np.ndarray:
    if y.ndim != 1 or y.shape[0] != count:
        raise DataError(f"{where}: '{key}' must be ({count},) to match the images, got shape {y.shape}")
    if y.dtype.kind not in "ui":
        if y.dtype.kind != "f" or not np.all(np.mod(y, 1) == 0):
            raise DataError(f"{where}: '{key}' must hold integer class labels, got dtype {y.dtype}")
    return y.astype(np.int64)


def read_npz(path: Path, input_shape: Shape3 | None) -> Source:
    require_file(path, "NPZ file")
    where = str(path)
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
        raise DataError(f"{where}: not a readable .npz archive ({one_line(e)})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{where}: a single .npy array, expected an .npz archive with 'x' and 'y'")
    with archive:
        keys = set(archive.files)
        for key in ("x", "y"):
            if key not in keys:
                raise DataError(f"{where}: missing array '{key}' (found: {', '.join(sorted(keys)) or 'none'})")
        if ("x_test" in keys) != ("y_test" in keys):
            raise DataError(f"{where}: 'x_test' and 'y_test' must both be present or both absent")
        parts = {}
        for xk, yk in (("x", "y"), ("x_test", "y_test")):
            if xk in keys:
                pixels, divisor = _pixels(_get(archive, xk, where), xk, where)
                parts[xk] = (pixels, divisor, _labels(_get(archive, yk, where), pixels.shape[0], yk, where))
        names = _get(archive, "class_names", where) if "class_names" in keys else None
    if names is not None and (names.ndim != 1 or names.dtype.kind != "U"):
        raise DataError(f"{where}: 'class_names' must be a 1-D string array, got {names.dtype} {names.shape}")
    num_classes = len(names) if names is not None else max(int(y.max()) for _, _, y in parts.values()) + 1
    for xk, yk in (("x", "y"), ("x_test", "y_test")):
        if xk in parts:
            check_labels(parts[xk][2], num_classes, f"{where} '{yk}'")
    native = parts["x"][0].shape[1:]
    if "x_test" in parts and parts["x_test"][0].shape[1:] != native:
        raise DataError(f"{where}: 'x_test' images are {parts['x_test'][0].shape[1:]}, 'x' images are {native}")
    shape = require_native_shape(input_shape, native, where)
    splits = {k: Split(ArrayStore(p, d), y) for k, (p, d, y) in parts.items()}
    return Source(train=splits["x"], test=splits.get("x_test"), num_classes=num_classes,
                  class_names=tuple(str(n) for n in names) if names is not None else index_names(num_classes),
                  input_shape=shape, where=where)

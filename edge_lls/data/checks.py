"""Validation of labels and shapes shared by the readers and the registry."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_lls.errors import ConfigError, DataError

Shape3 = tuple[int, int, int]  # (H, W, C)


def check_labels(labels: np.ndarray, num_classes: int, where: str) -> None:
    """labels (N,) integer. Names the first label outside [0, num_classes) and its row."""
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        i = int(np.argmax(bad))
        raise DataError(f"{where}: label {int(labels[i])} at index {i} is outside [0, {num_classes})")


def parse_input_shape(input_shape: Sequence[int] | None) -> Shape3 | None:
    """(H,W,C) with C in {1,3} (the decoders produce grayscale or RGB), or None."""
    if input_shape is None:
        return None
    try:
        dims = tuple(int(d) for d in input_shape)
        if any(d != v for d, v in zip(dims, input_shape)):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(f"input_shape must be (H, W, C) integers, got {input_shape!r}") from None
    if len(dims) != 3 or dims[0] < 1 or dims[1] < 1 or dims[2] not in (1, 3):
        raise ConfigError(f"input_shape must be (H, W, C) with H, W >= 1 and C 1 or 3, got {input_shape!r}")
    return dims  # type: ignore[return-value]


def require_native_shape(requested: Shape3 | None, native: Shape3, where: str) -> Shape3:
    """Fixed-size datasets are not resized: a different requested shape is a data/model mismatch."""
    if requested is not None and tuple(requested) != tuple(native):
        raise DataError(
            f"{where}: images are {native[0]}x{native[1]}x{native[2]} (H x W x C) "
            f"but input_shape asks for {requested[0]}x{requested[1]}x{requested[2]}"
        )
    return native


def fmt_shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)

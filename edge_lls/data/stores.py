"""Where a split's pixels live. A store hands out one batch at a time as float32 in [0,1];
nothing here ever materialises the whole dataset as float."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edge_lls.data.images import decode_image


class ArrayStore:
    """All pixels in memory in their raw dtype (uint8 for every image format we read).

    pixels (N,H,W,C) uint8 or float32; divisor maps raw values to [0,1]
    (255 for bytes, 16 for sklearn digits, 1 for float arrays already in [0,1]).
    """

    def __init__(self, pixels: np.ndarray, divisor: float):
        if pixels.ndim != 4:
            raise ValueError(f"ArrayStore needs (N,H,W,C) pixels, got shape {pixels.shape}")
        self._pixels = pixels
        self._divisor = float(divisor)

    def __len__(self) -> int:
        return self._pixels.shape[0]

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self._pixels.shape[1:])  # type: ignore[return-value]

    def load(self, indices: np.ndarray) -> np.ndarray:
        """indices (B,) int64 -> (B,H,W,C) float32 in [0,1], a fresh array the caller may modify."""
        # Division (not multiplication by 1/255) so 255 maps exactly to 1.0.
        return np.divide(self._pixels[indices], self._divisor, dtype=np.float32)


class FileStore:
    """One image file per sample, decoded only when its batch is requested."""

    def __init__(self, paths: Sequence[str], image_shape: tuple[int, int, int]):
        self._paths = list(paths)
        self._shape = tuple(image_shape)

    def __len__(self) -> int:
        return len(self._paths)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self._shape  # type: ignore[return-value]

    def load(self, indices: np.ndarray) -> np.ndarray:
        """indices (B,) int64 -> (B,H,W,C) float32 in [0,1]."""
        height, width, channels = self._shape
        raw = np.empty((len(indices), height, width, channels), dtype=np.uint8)
        for row, index in enumerate(indices):
            raw[row] = decode_image(self._paths[index], height, width, channels)
        return np.divide(raw, 255.0, dtype=np.float32)

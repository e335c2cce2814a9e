"""Image decoding with Pillow: one image file -> (H,W,C) uint8, RGB or grayscale."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
from PIL import Image

from edge_lls.errors import DataError
from edge_lls.data.files import one_line

# Pillow reports a bad file through many exception types (SyntaxError for a broken PNG chunk,
# struct.error for a short header, OSError for truncation, ...); all of them mean "bad input".
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError,
                  TypeError, Image.DecompressionBombError)

# Modes with a single intensity channel: such folders default to C=1.
_GRAY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "La"})


def probe_image(path: Path) -> tuple[int, int, int]:
    """(H, W, C) from the header only (no pixel decode); C is 1 for grayscale modes, else 3."""
    try:
        with Image.open(path) as img:
            width, height = img.size
            channels = 1 if img.mode in _GRAY_MODES else 3
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: unreadable image ({one_line(e)})") from None
    return height, width, channels


def decode_image(path: Path | str, height: int, width: int, channels: int) -> np.ndarray:
    """(H,W,C) uint8. Resized with bilinear filtering when the file's size differs."""
    try:
        with Image.open(path) as img:
            img = img.convert("RGB" if channels == 3 else "L")
            if img.size != (width, height):
                img = img.resize((width, height), Image.BILINEAR)
            pixels = np.asarray(img, dtype=np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: unreadable image ({one_line(e)})") from None
    return pixels.reshape(height, width, channels)

"""Per-batch transforms: per-channel normalisation and train-time crop/flip augmentation.

Both act on a (B,H,W,C) float32 batch already scaled to [0,1]. Augmentation runs first, on
[0,1] pixels, so its zero padding is black (as in the usual RandomCrop-then-Normalize order).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from edge_lls.errors import ConfigError

AUGMENT_KEYS = ("crop_padding", "hflip")


@dataclass(frozen=True)
class Normalizer:
    mean: np.ndarray  # (C,) float32
    std: np.ndarray   # (C,) float32, > 0

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """x (B,H,W,C) float32, normalised in place and returned."""
        x -= self.mean
        x /= self.std
        return x

    def as_tuples(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return tuple(float(v) for v in self.mean), tuple(float(v) for v in self.std)


def normalizer_from_values(mean: Iterable[float], std: Iterable[float], channels: int) -> Normalizer:
    """Explicit (mean, std): one value per channel, or a single value for all channels."""
    try:
        mean_arr = np.asarray(tuple(mean), dtype=np.float64).reshape(-1)
        std_arr = np.asarray(tuple(std), dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"normalize must be (mean_tuple, std_tuple) of numbers, got ({mean!r}, {std!r})") from None
    for label, arr in (("mean", mean_arr), ("std", std_arr)):
        if arr.size == 1:
            arr = np.repeat(arr, channels)
        if arr.size != channels:
            raise ConfigError(f"normalize {label} has {arr.size} values, the images have {channels} channels")
        if label == "mean":
            mean_arr = arr
        else:
            std_arr = arr
    if not np.all(np.isfinite(mean_arr)) or not np.all(np.isfinite(std_arr)) or np.any(std_arr <= 0):
        raise ConfigError(f"normalize needs finite means and positive stds, got mean={tuple(mean_arr)} std={tuple(std_arr)}")
    return Normalizer(mean_arr.astype(np.float32), std_arr.astype(np.float32))


def normalizer_from_stats(sums: np.ndarray, squares: np.ndarray, count: int) -> Normalizer:
    """sums, squares (C,) float64 accumulated over count pixels per channel."""
    mean = sums / count
    # float64 and values in [0,1]: E[x^2]-E[x]^2 loses at most ~1e-12 to cancellation.
    var = np.maximum(squares / count - mean * mean, 0.0)
    std = np.sqrt(var)
    # A constant channel carries no information; std 1 leaves it centred instead of dividing by 0.
    std[std < 1e-8] = 1.0
    return Normalizer(mean.astype(np.float32), std.astype(np.float32))


class CropFlip:
    """Random crop with zero padding and random horizontal flip, one draw per sample.

    The crop and the flip are one gather through index arrays: no per-pixel Python loop.
    """

    def __init__(self, padding: int, hflip: bool):
        self.padding = padding
        self.hflip = hflip
        self._padded: np.ndarray | None = None  # (B_max, H+2p, W+2p, C) float32, border stays 0

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """x (B,H,W,C) float32 -> new (B,H,W,C) float32."""
        batch, height, width, channels = x.shape
        p = self.padding
        padded = self._scratch(batch, height + 2 * p, width + 2 * p, channels)
        padded[:, p:p + height, p:p + width] = x
        top = rng.integers(0, 2 * p + 1, size=batch)
        left = rng.integers(0, 2 * p + 1, size=batch)
        columns = np.broadcast_to(np.arange(width), (batch, width))
        if self.hflip:
            flip = rng.random(batch) < 0.5
            columns = np.where(flip[:, None], np.arange(width - 1, -1, -1), columns)
        rows = top[:, None] + np.arange(height)  # (B,H)
        cols = left[:, None] + columns            # (B,W)
        return padded[np.arange(batch)[:, None, None], rows[:, :, None], cols[:, None, :]]

    def _scratch(self, batch: int, height: int, width: int, channels: int) -> np.ndarray:
        buf = self._padded
        if buf is None or buf.shape[0] < batch or buf.shape[1:] != (height, width, channels):
            buf = np.zeros((batch, height, width, channels), dtype=np.float32)
            self._padded = buf
        return buf[:batch]


def parse_augment(augment: Mapping | None) -> CropFlip | None:
    """{"crop_padding": int >= 0, "hflip": bool} -> CropFlip, or None when it does nothing."""
    if augment is None:
        return None
    if not isinstance(augment, Mapping):
        raise ConfigError(f"augment must be a mapping with keys {', '.join(AUGMENT_KEYS)}, got {augment!r}")
    unknown = sorted(set(augment) - set(AUGMENT_KEYS))
    if unknown:
        raise ConfigError(f"unknown augment option(s) {', '.join(map(str, unknown))}; valid: {', '.join(AUGMENT_KEYS)}")
    padding = augment.get("crop_padding", 0)
    hflip = augment.get("hflip", False)
    if isinstance(padding, bool) or not isinstance(padding, (int, np.integer)) or padding < 0:
        raise ConfigError(f"augment crop_padding must be an integer >= 0, got {padding!r}")
    if not isinstance(hflip, (bool, np.bool_)):
        raise ConfigError(f"augment hflip must be true or false, got {hflip!r}")
    if padding == 0 and not hflip:
        return None
    return CropFlip(int(padding), bool(hflip))

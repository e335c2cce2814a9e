"""Hold out the last fraction of a dataset that ships without separate test files.

No shuffle before splitting, so the split is the same on every machine and every run.
"""
from __future__ import annotations

import math

import numpy as np

from edge_lls.errors import ConfigError, DataError


def check_fraction(val_split: object) -> float:
    try:
        fraction = float(val_split)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"val_split must be a number strictly between 0 and 1, got {val_split!r}") from None
    if isinstance(val_split, bool) or not (0.0 < fraction < 1.0):
        raise ConfigError(f"val_split must be strictly between 0 and 1, got {val_split!r}")
    return fraction


def _held_out(count: int, fraction: float) -> int:
    return math.floor(count * fraction + 0.5)


def last_fraction(count: int, fraction: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(train positions, test positions): the first ones train, the last round(count*fraction) test."""
    n_test = _held_out(count, fraction)
    if n_test < 1 or n_test > count - 1:
        raise DataError(f"{where}: {count} images are too few to hold out val_split={fraction} for testing")
    return np.arange(count - n_test, dtype=np.int64), np.arange(count - n_test, count, dtype=np.int64)


def last_fraction_per_class(labels: np.ndarray, fraction: float, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Like last_fraction but within each class, for sources stored class by class (image
    folders, label-sorted lists), where the last fraction overall would be the last classes only.
    labels (N,) int64 -> positions sorted ascending."""
    train_parts, test_parts = [], []
    for cls in np.unique(labels):
        members = np.flatnonzero(labels == cls)
        n_test = min(_held_out(len(members), fraction), len(members))
        train_parts.append(members[:len(members) - n_test])
        test_parts.append(members[len(members) - n_test:])
    train = np.sort(np.concatenate(train_parts)) if train_parts else np.empty(0, np.int64)
    test = np.sort(np.concatenate(test_parts)) if test_parts else np.empty(0, np.int64)
    if len(train) == 0 or len(test) == 0:
        raise DataError(f"{where}: {len(labels)} images are too few to hold out val_split={fraction} for testing")
    return train.astype(np.int64), test.astype(np.int64)

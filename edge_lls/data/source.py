"""What a reader hands to the registry: splits as found on disk, before hold-out,
normalisation and augmentation."""
from __future__ import annotations

from dataclasses import dataclass

from edge_lls.data.split import Split


@dataclass(frozen=True)
class Source:
    train: Split
    test: Split | None  # None: no separate test files, the registry holds out part of train
    num_classes: int
    class_names: tuple[str, ...]
    input_shape: tuple[int, int, int]  # (H, W, C)
    where: str  # the file or folder read, for messages
    # True when samples are stored grouped by class, so the hold-out is taken per class.
    grouped_by_class: bool = False


def index_names(num_classes: int) -> tuple[str, ...]:
    return tuple(str(i) for i in range(num_classes))

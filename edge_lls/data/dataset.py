"""The object every consumer of data receives."""
from __future__ import annotations

from dataclasses import dataclass

from edge_lls.data.split import Split


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, int, int]  # (H, W, C) of every batch image
    class_names: tuple[str, ...]
    # (mean per channel, std per channel) applied to both splits after [0,1] scaling, or None.
    normalization: tuple[tuple[float, ...], tuple[float, ...]] | None = None
    # True when `test` is the held-out last val_split fraction of the training files.
    test_is_holdout: bool = False

    def describe(self) -> str:
        """One line for logs: name, sizes, shape, classes."""
        test_kind = "held out" if self.test_is_holdout else "test"
        h, w, c = self.input_shape
        return (f"{self.name}: {len(self.train)} train / {len(self.test)} {test_kind}, "
                f"{h}x{w}x{c}, {self.num_classes} classes")

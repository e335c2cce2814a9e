"""A Split is a view (an index list) over a store; it streams batches and never holds
more than one float batch at a time."""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from edge_lls.errors import ConfigError
from edge_lls.data.stores import ArrayStore, FileStore
from edge_lls.data.transforms import CropFlip, Normalizer

Store = ArrayStore | FileStore

# Separates the augmentation random stream from the shuffle stream for the same (seed, epoch).
_AUGMENT_STREAM = 0xA4_6E


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


class Split:
    def __init__(self, store: Store, labels: np.ndarray, indices: np.ndarray | None = None, *,
                 normalizer: Normalizer | None = None, augmenter: CropFlip | None = None,
                 seed: int = 0):
        self._store = store
        self._labels = labels  # (len(store),) int64, one per stored image
        self._indices = np.arange(len(store), dtype=np.int64) if indices is None else indices  # (N,) int64 into the store
        self.normalizer = normalizer
        self.augmenter = augmenter
        self.seed = seed  # used by batches() when no seed is given

    # --- views -------------------------------------------------------------------------
    def subset(self, positions: np.ndarray) -> Split:
        """The samples at positions (K,) of this split, sharing its storage (no pixel copy)."""
        return Split(self._store, self._labels, self._indices[positions], normalizer=self.normalizer,
                     augmenter=self.augmenter, seed=self.seed)

    def configured(self, *, normalizer: Normalizer | None, augmenter: CropFlip | None, seed: int) -> Split:
        return Split(self._store, self._labels, self._indices, normalizer=normalizer,
                     augmenter=augmenter, seed=seed)

    # --- facts -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._indices)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self._store.image_shape

    @property
    def labels(self) -> np.ndarray:
        """(N,) int64, in split order."""
        return self._labels[self._indices]

    def num_batches(self, batch_size: int, *, drop_last: bool = False) -> int:
        batch_size = _check_count(batch_size, "batch_size", 1)
        return len(self) // batch_size if drop_last else -(-len(self) // batch_size)

    # --- streaming ---------------------------------------------------------------------
    def batch_order(self, *, shuffle: bool, seed: int | None = None, epoch: int = 0) -> np.ndarray:
        """(N,) int64 positions in this split, in the order an epoch visits them."""
        if not shuffle:
            return np.arange(len(self), dtype=np.int64)
        seed = self.seed if seed is None else _check_count(seed, "seed", 0)
        epoch = _check_count(epoch, "epoch", 0)
        # A pure function of (seed, epoch): a resumed run replays the same order.
        return np.random.default_rng((seed, epoch)).permutation(len(self))

    def batches(self, batch_size: int, *, shuffle: bool = False, seed: int | None = None,
                epoch: int = 0, drop_last: bool = False,
                start_batch: int = 0) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yields (x (B,H,W,C) float32, y (B,) int64) batches.

        Deterministic in (seed, epoch, batch_size): shuffle order from (seed, epoch),
        augmentation from (seed, epoch, batch index). start_batch=k skips the first k batches
        without loading them, so a run resumed mid-epoch sees exactly the batches it missed.
        Each yielded array is new; callers may keep or modify it.
        """
        n_batches = self.num_batches(batch_size, drop_last=drop_last)
        start_batch = _check_count(start_batch, "start_batch", 0)
        if start_batch > n_batches:
            raise ConfigError(f"start_batch {start_batch} is past the end of the epoch ({n_batches} batches)")
        seed = self.seed if seed is None else _check_count(seed, "seed", 0)
        epoch = _check_count(epoch, "epoch", 0)
        order = self.batch_order(shuffle=shuffle, seed=seed, epoch=epoch)
        # Validation happens above, eagerly; the generator below only loads.
        return self._stream(order, batch_size, n_batches, start_batch, seed, epoch)

    def _stream(self, order: np.ndarray, batch_size: int, n_batches: int, start_batch: int,
                seed: int, epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for b in range(start_batch, n_batches):
            stored = self._indices[order[b * batch_size:(b + 1) * batch_size]]
            yield self._load(stored, augment_key=(seed, epoch, b)), self._labels[stored]

    def _load(self, stored: np.ndarray, augment_key: tuple[int, int, int] | None) -> np.ndarray:
        x = self._store.load(stored)  # (B,H,W,C) float32 in [0,1]
        if self.augmenter is not None and augment_key is not None:
            x = self.augmenter(x, np.random.default_rng((*augment_key, _AUGMENT_STREAM)))
        if self.normalizer is not None:
            x = self.normalizer(x)
        return x

    def arrays(self, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """The whole split in order, without augmentation: x (N,H,W,C) float32, y (N,) int64.
        For small sets only: this is the one call that holds every image as float."""
        x = np.empty((len(self), *self.input_shape), dtype=np.float32)
        for start in range(0, len(self), chunk):
            x[start:start + chunk] = self._load(self._indices[start:start + chunk], augment_key=None)
        return x, self.labels

    def raw_batches(self, chunk: int = 1024) -> Iterator[np.ndarray]:
        """(B,H,W,C) float32 in [0,1], in order, without normalisation or augmentation
        (used to compute dataset statistics in one streaming pass)."""
        for start in range(0, len(self), chunk):
            yield self._store.load(self._indices[start:start + chunk])

    def __repr__(self) -> str:
        return f"Split({len(self)} images of {'x'.join(map(str, self.input_shape))})"

"""load_dataset: name -> reader, then hold-out, normalisation and augmentation."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from numbers import Real
from pathlib import Path

import numpy as np

from edge_lls.errors import ConfigError
from edge_lls.data.checks import Shape3, parse_input_shape
from edge_lls.data.cifar import read_cifar10, read_cifar100
from edge_lls.data.dataset import Dataset
from edge_lls.data.digits import read_digits
from edge_lls.data.folder import read_image_folder
from edge_lls.data.holdout import check_fraction, last_fraction, last_fraction_per_class
from edge_lls.data.idx import FASHION_MNIST_CLASSES, MNIST_CLASSES, read_idx_dataset
from edge_lls.data.mlperf_tiny import read_mlperf_tiny
from edge_lls.data.npz import read_npz
from edge_lls.data.source import Source
from edge_lls.data.split import Split
from edge_lls.data.transforms import Normalizer, normalizer_from_stats, normalizer_from_values, parse_augment
from edge_lls.data.vww_coco import read_vww_coco

Reader = Callable[[Path, Shape3 | None], Source]

READERS: dict[str, Reader] = {
    "mnist": partial(read_idx_dataset, num_classes=10, class_names=MNIST_CLASSES),
    "fashion-mnist": partial(read_idx_dataset, num_classes=10, class_names=FASHION_MNIST_CLASSES),
    "idx": read_idx_dataset,
    "cifar10": read_cifar10,
    "cifar100": read_cifar100,
    "folder": read_image_folder,
    "vww-coco": read_vww_coco,
    "mlperf-tiny": read_mlperf_tiny,
    "npz": read_npz,
    "digits": read_digits,
}
DATASET_NAMES = tuple(READERS)
NEEDS_NO_PATH = frozenset({"digits"})


def _canonical_name(name: str) -> str:
    key = str(name).strip().lower().replace("_", "-")
    if key not in READERS:
        raise ConfigError(f"unknown dataset {name!r}; valid: {', '.join(DATASET_NAMES)}")
    return key


def _channel_stats(train: Split) -> Normalizer:
    """Per-channel mean/std of the [0,1] training pixels, one streaming pass, float64 sums."""
    channels = train.input_shape[2]
    sums = np.zeros(channels)
    squares = np.zeros(channels)
    count = 0
    for x in train.raw_batches():  # (B,H,W,C) float32
        flat = x.reshape(-1, channels).astype(np.float64)
        sums += flat.sum(axis=0)
        squares += np.einsum("ij,ij->j", flat, flat)
        count += flat.shape[0]
    return normalizer_from_stats(sums, squares, count)


def _normalizer(normalize: object, train: Split) -> Normalizer | None:
    if normalize is None:
        return None
    if isinstance(normalize, str):
        if normalize != "dataset":
            raise ConfigError(f"normalize must be 'dataset' or (mean_tuple, std_tuple), got {normalize!r}")
        return _channel_stats(train)
    if isinstance(normalize, Sequence) and len(normalize) == 2:
        mean, std = normalize
        mean = (mean,) if isinstance(mean, Real) else mean
        std = (std,) if isinstance(std, Real) else std
        return normalizer_from_values(mean, std, train.input_shape[2])
    raise ConfigError(f"normalize must be 'dataset' or (mean_tuple, std_tuple), got {normalize!r}")


def _check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def load_dataset(name: str, path: str | Path | None = None, *,
                 input_shape: Sequence[int] | None = None, val_split: float = 0.2, seed: int = 0,
                 normalize: str | tuple[Sequence[float], Sequence[float]] | None = None,
                 augment: Mapping[str, object] | None = None) -> Dataset:
    """Read a dataset and prepare its train and test splits.

    name: one of DATASET_NAMES. path: its file or folder (not needed for "digits").
    input_shape (H, W, C): required size; images are resized to it for "folder" and "vww-coco",
    other formats have a fixed size and a mismatch is a DataError.
    val_split: when the data has no separate test files, the LAST fraction becomes the test
    split (per class for class-grouped sources: image folders, MLPerf Tiny), with no shuffle.
    seed: default seed of both splits' batches(). normalize: None (pixels in [0,1]),
    (mean, std) per channel, or "dataset" (computed from the training split).
    augment: {"crop_padding": int, "hflip": bool}, training split only.
    """
    key = _canonical_name(name)
    shape = parse_input_shape(input_shape)
    fraction = check_fraction(val_split)
    seed = _check_seed(seed)
    augmenter = parse_augment(augment)
    if path is None and key not in NEEDS_NO_PATH:
        raise ConfigError(f"dataset {key!r} needs a path to its file or folder")
    source = READERS[key](Path(path) if path is not None else None, shape)  # type: ignore[arg-type]

    train, test, holdout = source.train, source.test, source.test is None
    if holdout:
        if source.grouped_by_class:
            train_pos, test_pos = last_fraction_per_class(train.labels, fraction, source.where)
        else:
            train_pos, test_pos = last_fraction(len(train), fraction, source.where)
        train, test = train.subset(train_pos), train.subset(test_pos)
    normalizer = _normalizer(normalize, train)
    return Dataset(
        name=key,
        train=train.configured(normalizer=normalizer, augmenter=augmenter, seed=seed),
        test=test.configured(normalizer=normalizer, augmenter=None, seed=seed),
        num_classes=source.num_classes,
        input_shape=source.input_shape,
        class_names=source.class_names,
        normalization=normalizer.as_tuples() if normalizer else None,
        test_is_holdout=holdout,
    )

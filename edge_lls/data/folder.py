"""Image folders: one subfolder per class (sorted names give the class index).

    root/cat/*.png, root/dog/*.jpg            one set; the registry holds out a test part
    root/train/<class>/..., root/val/<class>/...  (or test/)  separate splits

PNG, JPEG and BMP are decoded lazily, one batch at a time, resized to input_shape.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_lls.errors import DataError
from edge_lls.data.checks import Shape3
from edge_lls.data.files import one_line, require_dir
from edge_lls.data.images import probe_image
from edge_lls.data.source import Source
from edge_lls.data.split import Split
from edge_lls.data.stores import FileStore

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp"})


def _visible_dirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"{folder}: cannot list ({one_line(e)})") from None


def _image_files(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES)
    except OSError as e:
        raise DataError(f"{folder}: cannot list ({one_line(e)})") from None


def _list_samples(root: Path, class_index: dict[str, int]) -> tuple[list[str], np.ndarray, Path | None]:
    """-> file paths, labels (N,) int64 grouped by class, first image. Every file's header is
    checked here so a non-image fails at load time, not mid-epoch."""
    paths: list[str] = []
    labels: list[int] = []
    for class_dir in _visible_dirs(root):
        if class_dir.name not in class_index:
            raise DataError(f"{class_dir}: class folder not present in the training folder "
                            f"(classes: {', '.join(class_index)})")
        for f in _image_files(class_dir):
            probe_image(f)
            paths.append(str(f))
            labels.append(class_index[class_dir.name])
    if not paths:
        raise DataError(f"{root}: no .png/.jpg/.jpeg/.bmp images in its class subfolders")
    return paths, np.asarray(labels, dtype=np.int64), Path(paths[0])


def read_image_folder(path: Path, input_shape: Shape3 | None) -> Source:
    """input_shape None: the first image's size, C=1 if it is grayscale else 3."""
    require_dir(path, "image folder")
    train_root, test_root = path, None
    if (path / "train").is_dir():
        train_root = path / "train"
        test_root = next((path / n for n in ("val", "test") if (path / n).is_dir()), None)
    class_dirs = _visible_dirs(train_root)
    if not class_dirs:
        raise DataError(f"{train_root}: no class subfolders (expected one folder of images per class)")
    class_names = tuple(d.name for d in class_dirs)
    class_index = {name: i for i, name in enumerate(class_names)}
    train_paths, train_labels, first = _list_samples(train_root, class_index)
    shape = input_shape or probe_image(first)
    train = Split(FileStore(train_paths, shape), train_labels)
    test = None
    if test_root is not None:
        test_paths, test_labels, _ = _list_samples(test_root, class_index)
        test = Split(FileStore(test_paths, shape), test_labels)
    return Source(train=train, test=test, num_classes=len(class_names), class_names=class_names,
                  input_shape=shape, where=str(path), grouped_by_class=True)

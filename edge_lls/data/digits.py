"""scikit-learn's bundled handwritten digits: 1797 images, 8x8x1, values 0..16, 10 classes.
Ships inside scikit-learn, so the quick start needs no download."""
from __future__ import annotations

import numpy as np

from edge_lls.data.checks import Shape3, require_native_shape
from edge_lls.data.source import Source, index_names
from edge_lls.data.split import Split
from edge_lls.data.stores import ArrayStore

NATIVE_SHAPE = (8, 8, 1)


def read_digits(path: object, input_shape: Shape3 | None) -> Source:
    from sklearn.datasets import load_digits  # imported here: sklearn takes ~1 s to import

    shape = require_native_shape(input_shape, NATIVE_SHAPE, "digits")
    bunch = load_digits()
    pixels = bunch.images.astype(np.uint8).reshape(-1, *NATIVE_SHAPE)  # (1797,8,8,1), 0..16
    labels = bunch.target.astype(np.int64)
    return Source(train=Split(ArrayStore(pixels, 16.0), labels), test=None, num_classes=10,
                  class_names=index_names(10), input_shape=shape, where="digits (scikit-learn)")

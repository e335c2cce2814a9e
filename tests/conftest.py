from pathlib import Path

import numpy as np
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
MNIST_DIR = SHARED / "data" / "mnist"
VWW_DIR = SHARED / "models" / "vww"
SAMPLES_DIR = SHARED / "data" / "vww_samples"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def traced_peak(fn) -> int:
    """Peak bytes Python and NumPy (and Numba's runtime) allocate while fn() runs, by
    tracemalloc. fn's result is dropped: measure a step, not what it returns."""
    import tracemalloc
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()

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

"""Shared fixtures, the `../shared` data policy and the fixed-order GEMM sessions.

`../shared` (real MNIST, the VWW models and sample images) lies beside a checkout of the
project's own, not inside a user's clone. A test that reads it says so, with
`require_shared(path)` in its body or `@pytest.mark.shared(path, ...)`: when the folder
is absent it is skipped with a reason naming the folder, except under CI (`CI=true`),
where a missing folder fails the test, so a data test never skips silently there.
(EDGE_LLS_SHARED points the tests at another copy, or at nothing to try the policy.)

Tests marked `fixed_order` compare two code paths whose float32 GEMMs are split
differently (fp16 storage against fp32, many tasks against one call). They agree bit for
bit only when every sgemm sums in one fixed order, so they run in a child session under
EDGE_LLS_SGEMM=reference (kernels/blas.py), started by tests/test_fixed_order.py; the
main session deselects them (they are counted there, not skipped).
"""
import os
from pathlib import Path

import numpy as np
import pytest

SHARED = Path(os.environ.get("EDGE_LLS_SHARED", Path(__file__).resolve().parents[1].parent / "shared"))
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


IN_CI = os.environ.get("CI", "").lower() == "true"
FIXED_ORDER_SESSION = os.environ.get("EDGE_LLS_SGEMM") == "reference"


def require_shared(path: Path) -> Path:
    """path, when it exists; otherwise skip (a user's clone) or fail (CI) naming it."""
    path = Path(path)
    if not path.exists():
        message = f"needs {path}, which is absent (../shared is not beside this checkout)"
        if IN_CI:
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return path


def shared_mnist_test_set() -> tuple:
    """The real MNIST test set of ../shared: images (10000, 28, 28) uint8, labels (10000,)."""
    from edge_lls.data.idx import read_idx

    require_shared(MNIST_DIR)
    return (read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", 0x803),
            read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", 0x801))


def write_mnist_folder(folder: Path, train: tuple, test: tuple) -> Path:
    """An `--dataset mnist` folder of IDX files from (images, labels) for each split:
    ../shared holds only the t10k files, so tests split them into their own train/test."""
    import struct

    folder.mkdir(parents=True, exist_ok=True)
    for split, (images, labels) in (("train", train), ("t10k", test)):
        for kind, array, magic in (("images-idx3", images, 0x803), ("labels-idx1", labels, 0x801)):
            dims = b"".join(struct.pack(">I", d) for d in array.shape)
            (folder / f"{split}-{kind}-ubyte").write_bytes(struct.pack(">I", magic) + dims +
                                                          np.ascontiguousarray(array, np.uint8).tobytes())
    return folder


# ------------------------------------------------------------------ C compilers for the firmware tests
FIRMWARE = Path(__file__).resolve().parents[1] / "firmware_bridge" / "firmware"
C_STRICT = ["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"]
C_SANITIZE = ["-g", "-fsanitize=address,undefined", "-fno-sanitize-recover=all"]


def require_tools(*names: str, install: str = "`make toolchain` installs the Arm toolchain and QEMU") -> None:
    """Every named program on PATH; otherwise skip (a user's machine) or fail (CI installs them)."""
    import shutil
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        message = f"needs {', '.join(missing)} ({install})"
        if IN_CI:
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)


def _compiler(name: str, install: str) -> str:
    import shutil
    require_tools(name, install=install)
    return shutil.which(name)


@pytest.fixture(scope="session")
def gcc() -> str:
    return _compiler("gcc", "apt install gcc")


@pytest.fixture(scope="session")
def arm_gcc() -> str:
    return _compiler("arm-none-eabi-gcc", "make toolchain: apt install gcc-arm-none-eabi libnewlib-arm-none-eabi")


def pytest_runtest_setup(item):
    for mark in item.iter_markers("shared"):
        for path in mark.args:
            require_shared(path)


def pytest_collection_modifyitems(config, items):
    keep, drop = [], []
    for item in items:
        (keep if (item.get_closest_marker("fixed_order") is not None) == FIXED_ORDER_SESSION else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep

"""TensorFlow Lite Micro as a peer on the host: the `tflite-micro` package's interpreter runs
TFLM's reference kernels, the inference reference a microcontroller is held to.

    tflm_interpreter(model, arena_size)   an interpreter (every tensor kept, preserve_all=True)
    tflm_min_arena(model)                 TFLM's smallest arena for the model, by bisection

TFLM has no arena getter: allocation either fits the arena it is given or fails, and how
much it needs depends only on the model and the TFLM build, so the smallest size that
allocates is found by bisecting `arena_size` (each try allocates, none runs). A test
dependency (pinned in pyproject.toml); importing this module without it is a clear error.
"""
from __future__ import annotations

import contextlib
import os

from .errors import ConfigError

try:
    from tflite_micro import runtime as _runtime
except ImportError:            # the package is a test / peer dependency, not a runtime one
    _runtime = None


def _require():
    if _runtime is None:
        raise ConfigError("TFLite Micro is not installed: pip install 'edge-lls[test]' (package tflite-micro)")
    return _runtime


@contextlib.contextmanager
def _quiet_stderr():
    """TFLM prints every failed allocation on the C stderr; a bisection fails on purpose."""
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def tflm_interpreter(model: bytes, arena_size: int, preserve_all: bool = True):
    """A TFLM interpreter for the .tflite bytes with an arena of arena_size bytes;
    preserve_all keeps every tensor readable after invoke (GetTensor), at the cost of a
    larger arena."""
    runtime = _require()
    config = runtime.InterpreterConfig.kPreserveAllTensors if preserve_all else \
        runtime.InterpreterConfig.kAllocationRecording
    return runtime.Interpreter.from_bytes(bytes(model), arena_size=int(arena_size), intrepreter_config=config)


def _allocates(model: bytes, arena_size: int) -> bool:
    try:
        with _quiet_stderr():
            tflm_interpreter(model, arena_size, preserve_all=False)
        return True
    except RuntimeError:
        return False


def tflm_min_arena(model: bytes, upper: int = 64 << 20) -> int:
    """The smallest arena (bytes) in which TFLM allocates the model (preserve_all=False,
    TFLM's normal planning). Raises ConfigError when not even `upper` bytes suffice."""
    hi = 1024
    while not _allocates(model, hi):
        if hi >= upper:
            raise ConfigError(f"TFLite Micro cannot allocate this model in {upper:,} bytes")
        hi = min(hi * 2, upper)
    lo = hi // 2 if hi > 1024 else 0          # lo fails (or is 0), hi allocates
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _allocates(model, mid) else (mid, hi)
    return hi

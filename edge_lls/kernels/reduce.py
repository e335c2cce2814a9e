"""Deterministic column reductions over (M, C) float32 matrices.

Rows are split into a fixed number of slices (independent of the thread count), each
slice is summed in float64 by one thread, and the slices are added in order: the same
inputs give the same bits whatever `numba.get_num_threads()` is.
"""
import numpy as np
from numba import njit, prange

SLICES = 16

_PARTIALS: dict[tuple[int, type], np.ndarray] = {}


def slice_partials(channels: int, dtype=np.float64) -> np.ndarray:
    """(2, SLICES, channels) per-slice sums for the reductions here and in norm.py,
    allocated on first use per channel count and reused by every later call (a step
    allocates none). Kernels zero the rows they sum into; calls never overlap (the
    runtime runs one kernel at a time)."""
    key = (channels, np.dtype(dtype).type)
    part = _PARTIALS.get(key)
    if part is None:
        part = _PARTIALS[key] = np.zeros((2, SLICES, channels), dtype)
    return part


@njit(parallel=True, cache=True)
def _column_sums(x2d, out, partial):
    M, C = x2d.shape
    for s in prange(SLICES):
        lo, hi = s * M // SLICES, (s + 1) * M // SLICES
        acc = partial[s]
        acc[:] = 0.0
        for m in range(lo, hi):
            for c in range(C):
                acc[c] += x2d[m, c]
    for c in range(C):
        t = 0.0
        for s in range(SLICES):
            t += partial[s, c]
        out[c] = t


def column_sums(x2d, out):
    """out[c] = sum_m x2d[m, c].   x2d (M, C) float32 -> out (C,) float32."""
    _column_sums(x2d, out, slice_partials(x2d.shape[1])[0])
    return out


@njit(parallel=True, cache=True)
def row_norms(x2d, out):
    """out[n] = sqrt(sum_d x2d[n, d]^2), summed in float64 in order (no float64 copy of
    x2d, which NumPy's einsum(..., dtype=float64) makes).  x2d (N, D) float32 -> out (N,)."""
    N, D = x2d.shape
    for n in prange(N):
        s = 0.0
        for d in range(D):
            v = np.float64(x2d[n, d])
            s += v * v
        out[n] = np.sqrt(s)

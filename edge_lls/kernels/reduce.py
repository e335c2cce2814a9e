"""Deterministic column reductions over (M, C) float32 matrices.

Rows are split into a fixed number of slices (independent of the thread count), each
slice is summed in float64 by one thread, and the slices are added in order: the same
inputs give the same bits whatever `numba.get_num_threads()` is.
"""
import numpy as np
from numba import njit, prange

SLICES = 16


@njit(parallel=True, cache=True)
def column_sums(x2d, out):
    """out[c] = sum_m x2d[m, c].   x2d (M, C) float32 -> out (C,) float32."""
    M, C = x2d.shape
    partial = np.zeros((SLICES, C), np.float64)
    for s in prange(SLICES):
        lo, hi = s * M // SLICES, (s + 1) * M // SLICES
        acc = partial[s]
        for m in range(lo, hi):
            for c in range(C):
                acc[c] += x2d[m, c]
    for c in range(C):
        t = 0.0
        for s in range(SLICES):
            t += partial[s, c]
        out[c] = t


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

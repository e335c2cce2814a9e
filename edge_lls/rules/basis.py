"""The fixed LLS basis and the NHWC <-> channel-major permutation of pooled vectors."""
from __future__ import annotations

from functools import lru_cache

import numpy as np

F_MIN, F_MAX = 50.0, 512.0


@lru_cache(maxsize=64)
def lls_basis(rows: int, dim: int, waveform: str = "square") -> np.ndarray:
    """B (rows, dim) float32, channel-major columns:  B[k, t] = sin(f_k * t),
    f_k = 50 + k (512 - 50) / (rows - 1), computed in float64 then rounded to float32.
    waveform 'square' takes sign(B); 'cosine' (a sine, historically named) keeps it."""
    if waveform not in ("square", "cosine", "sine"):
        raise ValueError(f"waveform must be 'square' or 'cosine', got {waveform!r}")
    k = np.arange(rows, dtype=np.float64)
    freqs = F_MIN + k * (F_MAX - F_MIN) / (rows - 1) if rows > 1 else np.full(1, F_MIN)  # as the spec writes it
    basis = np.sin(freqs[:, None] * np.arange(dim, dtype=np.float64)[None, :])
    if waveform == "square":
        basis = np.sign(basis)
    out = basis.astype(np.float32)
    out.setflags(write=False)
    return out


def nhwc_to_channel_major(pooled_shape) -> np.ndarray:
    """perm such that v_cm[perm[j]] = v_nhwc[j] for one sample's pooled tensor.

    pooled_shape: (p, q, C) for conv outputs, (F,) for dense outputs (identity).
    A basis with channel-major columns B_cm becomes B_nhwc = B_cm[:, perm].
    """
    if len(pooled_shape) == 1:
        return np.arange(pooled_shape[0])
    p, q, c = pooled_shape
    i, j, ch = np.meshgrid(np.arange(p), np.arange(q), np.arange(c), indexing="ij")
    return (ch * p * q + i * q + j).reshape(-1)


def _column_windows(f: int, dim: int):
    """Adaptive pooling windows of dim outputs over f columns: [lo, hi) each, as arrays."""
    i = np.arange(dim)
    return (i * f) // dim, -((-(i + 1) * f) // dim)


def pool_columns(matrix: np.ndarray, dim: int) -> np.ndarray:
    """Adaptive average pooling along columns (PyTorch adaptive_avg_pool1d): (K, F) -> (K, dim).
    Window sums come from one float64 prefix sum (no Python loop over columns: LocalLosses
    pools its learned basis every step)."""
    k, f = matrix.shape
    if f == dim:
        return np.array(matrix, np.float32)
    lo, hi = _column_windows(f, dim)
    prefix = np.zeros((k, f + 1), np.float64)
    np.cumsum(matrix, axis=1, dtype=np.float64, out=prefix[:, 1:])
    return ((prefix[:, hi] - prefix[:, lo]) / (hi - lo)).astype(np.float32)


def pool_columns_grad(dpooled: np.ndarray, f: int) -> np.ndarray:
    """The gradient of pool_columns: (K, dim) -> (K, F), each window's share spread evenly
    over its columns (a difference array, then one prefix sum)."""
    k, dim = dpooled.shape
    if f == dim:
        return np.array(dpooled, np.float32)
    lo, hi = _column_windows(f, dim)
    share = dpooled.astype(np.float64) / (hi - lo)
    diff = np.zeros((f + 1, k), np.float64)               # transposed: add.at accumulates rows
    np.add.at(diff, lo, share.T)
    np.subtract.at(diff, hi, share.T)
    return np.cumsum(diff[:f], axis=0).T.astype(np.float32)

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


def pool_columns(matrix: np.ndarray, dim: int) -> np.ndarray:
    """Adaptive average pooling along columns (PyTorch adaptive_avg_pool1d): (K, F) -> (K, dim)."""
    k, f = matrix.shape
    out = np.empty((k, dim), np.float64)
    for i in range(dim):
        lo, hi = (i * f) // dim, -((-(i + 1) * f) // dim)
        out[:, i] = matrix[:, lo:hi].mean(axis=1)
    return out.astype(np.float32)


def pool_columns_grad(dpooled: np.ndarray, f: int) -> np.ndarray:
    k, dim = dpooled.shape
    out = np.zeros((k, f), np.float64)
    for i in range(dim):
        lo, hi = (i * f) // dim, -((-(i + 1) * f) // dim)
        out[:, lo:hi] += dpooled[:, i:i + 1] / (hi - lo)
    return out.astype(np.float32)

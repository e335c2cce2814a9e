"""Batch norm folded into the layer before it: the one place a trained model's units become
single affine ops, for every deployed form (int8 PTQ, fp16 inference, export)."""
from __future__ import annotations

import numpy as np


def fold_batchnorm(op, bn) -> tuple[np.ndarray, np.ndarray]:
    """Weights and bias of op (Conv2d or Dense) followed by bn in evaluation mode, as one
    affine op.

    w' = w * g,  b' = (b - running_mean) * g + beta,  g = gamma / sqrt(running_var + eps),
    scaling output channel c (axis 0 of OHWI and of (out, in)).  float64, returned float32.
    """
    w = op.w.value.astype(np.float64)
    b = op.b.value.astype(np.float64) if op.b is not None else np.zeros(w.shape[0])
    g = bn.gamma.value.astype(np.float64) / np.sqrt(bn.running_var.astype(np.float64) + bn.eps)
    w_folded = w * g.reshape((-1,) + (1,) * (w.ndim - 1))
    b_folded = (b - bn.running_mean.astype(np.float64)) * g + bn.beta.value.astype(np.float64)
    return w_folded.astype(np.float32), b_folded.astype(np.float32)


def unit_affine(op, bn) -> tuple[np.ndarray, np.ndarray]:
    """(weights, bias) float32 of a unit: folded when it has a batch norm, else its own
    (a zero bias when it has none)."""
    if bn is not None:
        return fold_batchnorm(op, bn)
    w = op.w.value.astype(np.float32)
    b = op.b.value.astype(np.float32) if op.b is not None else np.zeros(w.shape[0], np.float32)
    return w, b

"""LLS: the block's pooled output synchronised with a fixed periodic basis (../docs)."""
from __future__ import annotations

import numpy as np

from .heads import ProjectionHead


def lls_loss(y, labels, *, num_classes, pool, waveform="square", temperature=0.5,
             modulation=None, modulation_kind=None, label_smoothing=0.0):
    """LLS local loss of a block output and its gradient.

    y: block output, NHWC (N, H, W, C) or (N, F). pool: pooled size p (p x p for conv
    outputs). modulation: the LLS-M vector (K,) or LLS-MxM matrix (R, K), with
    modulation_kind 'm' or 'mxm'; for reduced LLS-MxM (R < K) the basis has R rows.
    Returns (loss: float, dy: same shape as y) -- the mean cross-entropy and dL/dy, equal
    to the reference's channel-major computation.
    """
    y = np.ascontiguousarray(y, dtype=np.float32)
    labels = np.asarray(labels)
    rows = num_classes
    if modulation_kind == "mxm":
        rows = np.asarray(modulation).shape[0]
    head = ProjectionHead("lls", y.shape[1:], pool, num_classes, basis_kind="lls", waveform=waveform,
                          modulation_kind=modulation_kind, reduced_rows=rows,
                          temperature=temperature, label_smoothing=label_smoothing)
    if modulation is not None:
        head.modulation.value[...] = modulation
    views = {b.name: np.empty(b.shape, b.dtype) for b in head.buffers(y.shape[0])}
    dy = np.empty_like(y)
    loss = head(y, labels, views, dy)
    return loss, dy

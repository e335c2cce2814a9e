"""Softmax cross-entropy with temperature and label smoothing (PyTorch semantics)."""
from __future__ import annotations

import numpy as np


def softmax_cross_entropy(logits, labels, *, temperature=1.0, label_smoothing=0.0, dlogits=None):
    """Mean cross-entropy of logits/T against labels; returns (loss, dlogits).

    logits (N, K) float32, labels (N,) int. dlogits (N, K) is written if given:
    d loss / d logits = (softmax(logits/T) - target) / (N * T), where target puts
    1 - eps + eps/K on the label and eps/K elsewhere.
    """
    n, k = logits.shape
    z = logits.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    target = np.full((n, k), label_smoothing / k)
    target[np.arange(n), labels] += 1.0 - label_smoothing
    loss = float(-(target * log_p).sum() / n)
    grad = (np.exp(log_p) - target) / (n * temperature)
    if dlogits is None:
        dlogits = grad.astype(np.float32)
    else:
        dlogits[...] = grad
    return loss, dlogits

"""Reference fully connected layer: x (N, F), w (O, F)."""
import numpy as np


def dense(x, w, b):
    y = x.astype(np.float64) @ w.T.astype(np.float64)
    return (y + b if b is not None else y).astype(np.float32)


def dense_grad(x, dy, w):
    """Returns (dw, db, dx)."""
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    return ((dy64.T @ x64).astype(np.float32), dy64.sum(0).astype(np.float32),
            (dy64 @ w.astype(np.float64)).astype(np.float32))

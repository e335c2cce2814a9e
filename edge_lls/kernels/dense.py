"""Fully connected layer, float32, on BLAS sgemm (no im2col needed).

    x (N, F) · w (O, F) is (out, in), as PyTorch and TFLite's FULLY_CONNECTED store it.
"""
import numpy as np

from .reduce import column_sums


def dense_f32(x, w, b, out):
    """out (N, O) = x @ w.T + b."""
    np.matmul(x, w.T, out=out)
    if b is not None:
        out += b
    return out


def dense_grad_weight_f32(x, dy, dw, db):
    """dw (O, F) = dy.T @ x;  db (O,) = column sums of dy (db may be None)."""
    np.matmul(dy.T, x, out=dw)
    if db is not None:
        column_sums(dy, db)


def dense_grad_input_f32(dy, w, dx):
    """dx (N, F) = dy @ w.  Only backpropagation across layers needs this."""
    np.matmul(dy, w, out=dx)
    return dx

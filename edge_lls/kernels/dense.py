"""Fully connected layer, float32, on BLAS sgemm (no im2col needed).

    x (N, F) · w (O, F) is (out, in), as PyTorch and TFLite's FULLY_CONNECTED store it.

x and out may be float16 storage (mixed precision, kernels/half.py): BLAS multiplies
float32 only, so a float16 x is widened into scratch and a float16 out is computed in
scratch and rounded once. Such calls need dense_scratch_floats(...) floats of scratch.
"""
import numpy as np

from .half import HALF
from .reduce import column_sums


def dense_scratch_floats(n: int, fin: int, fout: int, half: bool) -> int:
    """float32 scratch the dense kernels need: x (N, F) and out (N, O) when stored in half."""
    return n * (fin + fout) if half else 0


def _widened(x, scratch):
    """x (N, F) as float32: itself, or widened from float16 into the scratch's head."""
    if x.dtype != HALF:
        return x
    x32 = scratch[:x.size].reshape(x.shape)
    np.copyto(x32, x)
    return x32


def dense_f32(x, w, b, out, scratch=None):
    """out (N, O) = x @ w.T + b."""
    x32 = _widened(x, scratch)
    out32 = out if out.dtype != HALF else scratch[x.size:x.size + out.size].reshape(out.shape)
    np.matmul(x32, w.T, out=out32)
    if b is not None:
        out32 += b
    if out32 is not out:
        np.copyto(out, out32, casting="same_kind")        # rounded to nearest even float16
    return out


def dense_grad_weight_f32(x, dy, dw, db, scratch=None):
    """dw (O, F) = dy.T @ x;  db (O,) = column sums of dy (db may be None). dy float32."""
    np.matmul(dy.T, _widened(x, scratch), out=dw)
    if db is not None:
        column_sums(dy, db)


def dense_grad_input_f32(dy, w, dx):
    """dx (N, F) = dy @ w.  Only backpropagation across layers needs this."""
    np.matmul(dy, w, out=dx)
    return dx

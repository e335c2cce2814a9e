"""Single-precision GEMM callable from inside Numba kernels.

SciPy's Cython BLAS exports the Fortran `sgemm` (column-major, every argument by
pointer). The helpers below give it row-major meaning, so a Numba thread can build a
cache-resident im2col slice and multiply it on the spot: no hand-off between Numba's
and OpenBLAS's thread pools, and beta = 1 accumulates into the destination without a
temporary. Each calling thread passes its own slot of ArgSlots for the by-pointer
arguments. The BLAS these calls reach must run single-threaded: they are already
inside a parallel loop (runtime.set_threads pins it).

Row-major X (r x c) is column-major X^T with leading dimension = X.strides[0] / 4, so
    C = A B^T  <=>  C^T = B A^T    etc.  (derivations next to each helper)
"""
from __future__ import annotations

import llvmlite.binding as llvm
import numba
import numpy as np
from numba import njit, types
from numba.extending import get_cython_function_address

# Called through a named symbol rather than a ctypes pointer: kernels that hold a ctypes
# pointer cannot be cached by Numba, a named external function can (the symbol is
# registered again at every import, before any cached kernel is loaded).
llvm.add_symbol("el_sgemm_f77", get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
_sgemm = types.ExternalFunction("el_sgemm_f77", types.void(*([types.voidptr] * 13)))

_N, _T = 78, 84  # 'N', 'T'

# Every parallel GEMM of a step runs inside Numba's pool (this module's sgemm, one call
# per thread), so both BLAS libraries run single-threaded: SciPy's, which these calls
# reach, and NumPy's, left with the small products (LLS heads, dense layers). A second
# pool of BLAS workers spinning next to Numba's was measured to cost 25-40 % of a step.
from threadpoolctl import ThreadpoolController  # noqa: E402

ThreadpoolController().limit(limits=1, user_api="blas")


class ArgSlots:
    """By-pointer argument storage for sgemm, one slot per Numba thread."""

    def __init__(self, slots: int | None = None):
        n = slots or numba.config.NUMBA_NUM_THREADS
        self.ints = np.zeros((n, 6), np.int32)
        self.floats = np.zeros((n, 2), np.float32)
        self.chars = np.zeros((n, 2), np.uint8)


SLOTS = ArgSlots()


@njit(inline="always", cache=True)
def _ld(a):
    return a.strides[0] // 4


@njit(cache=True)
def _call(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, ints, floats, chars):
    chars[0] = ta
    chars[1] = tb
    ints[0] = m
    ints[1] = n
    ints[2] = k
    ints[3] = lda
    ints[4] = ldb
    ints[5] = ldc
    floats[0] = alpha
    floats[1] = beta
    _sgemm(chars[0:].ctypes, chars[1:].ctypes, ints[0:].ctypes, ints[1:].ctypes, ints[2:].ctypes,
           floats[0:].ctypes, a.ctypes, ints[3:].ctypes, b.ctypes, ints[4:].ctypes,
           floats[1:].ctypes, c.ctypes, ints[5:].ctypes)


@njit(cache=True)
def gemm_abt(a, b, c, beta, ints, floats, chars):
    """c (m, n) = a (m, k) @ b (n, k).T  [+ c if beta = 1].   C^T = B A^T: sgemm('T','N')."""
    m, k = a.shape
    n = b.shape[0]
    _call(_T, _N, n, m, k, 1.0, b, _ld(b), a, _ld(a), beta, c, _ld(c), ints, floats, chars)


@njit(cache=True)
def gemm_atb(a, b, c, beta, ints, floats, chars):
    """c (m, n) = a (r, m).T @ b (r, n)  [+ c if beta = 1].   C^T = B^T A: sgemm('N','T')."""
    r, m = a.shape
    n = b.shape[1]
    _call(_N, _T, n, m, r, 1.0, b, _ld(b), a, _ld(a), beta, c, _ld(c), ints, floats, chars)


@njit(cache=True)
def gemm_ab(a, b, c, beta, ints, floats, chars):
    """c (m, n) = a (m, k) @ b (k, n)  [+ c if beta = 1].   C^T = B^T A^T: sgemm('N','N')."""
    m, k = a.shape
    n = b.shape[1]
    _call(_N, _N, n, m, k, 1.0, b, _ld(b), a, _ld(a), beta, c, _ld(c), ints, floats, chars)

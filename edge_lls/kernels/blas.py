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
from numba import cfunc, njit, types
from numba.extending import get_cython_function_address

# Called through a named symbol rather than a ctypes pointer: kernels that hold a ctypes
# pointer cannot be cached by Numba, a named external function can (the symbol is
# registered again at every import, before any cached kernel is loaded).
_sgemm = types.ExternalFunction("el_sgemm_f77", types.void(*([types.voidptr] * 13)))

# EDGE_LLS_SGEMM=reference binds the same symbol to reference_sgemm below instead: one
# fixed summation order for every call, whatever the CPU, the BLAS build or the shapes a
# caller splits its work into. Tests use it where two code paths must agree bit for bit
# by construction (tests/fixed_order.py); cached kernels stay valid, since they call the
# symbol by name. Never for speed: it is a plain triple loop.
GEMM_ENV = "EDGE_LLS_SGEMM"

_N, _T = 78, 84  # 'N', 'T'

_p8, _p32, _pf = types.CPointer(types.uint8), types.CPointer(types.int32), types.CPointer(types.float32)


@cfunc(types.void(_p8, _p8, _p32, _p32, _p32, _pf, _pf, _p32, _pf, _p32, _pf, _pf, _p32), cache=True)
def reference_sgemm(transa, transb, m_, n_, k_, alpha_, a, lda_, b, ldb_, beta_, c, ldc_):
    """Fortran sgemm, column-major: C (m, n) = alpha op(A) (m, k) op(B) (k, n) + beta C.
    Each element is one float32 sum over l = 0 .. k-1 in order, scaled once."""
    m, n, k, lda, ldb, ldc = m_[0], n_[0], k_[0], lda_[0], ldb_[0], ldc_[0]
    alpha, beta = alpha_[0], beta_[0]
    a_t, b_t = transa[0] == _T, transb[0] == _T
    for j in range(n):
        for i in range(m):
            acc = np.float32(0.0)
            for l in range(k):
                av = a[l + i * lda] if a_t else a[i + l * lda]
                bv = b[j + l * ldb] if b_t else b[l + j * ldb]
                acc += av * bv
            out = alpha * acc
            if beta != 0:
                out += beta * c[i + j * ldc]
            c[i + j * ldc] = out


def _bind_sgemm() -> str:
    """Register the sgemm symbol the kernels call; returns which one it is."""
    import os
    choice = os.environ.get(GEMM_ENV, "blas")
    if choice == "reference":
        llvm.add_symbol("el_sgemm_f77", reference_sgemm.address)
    elif choice == "blas":
        llvm.add_symbol("el_sgemm_f77", get_cython_function_address("scipy.linalg.cython_blas", "sgemm"))
    else:
        raise ValueError(f"{GEMM_ENV}={choice!r}: expected 'blas' or 'reference'")
    return choice


SGEMM = _bind_sgemm()

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

"""Runs the tests marked `fixed_order` in a child pytest session under
EDGE_LLS_SGEMM=reference, where every sgemm the kernels call sums in one fixed order
(kernels/blas.reference_sgemm). Those tests compare two code paths that split their GEMMs
differently; with an optimized BLAS the summation order, and so the last bits, depends on
the CPU, the BLAS kernel chosen for it and the shapes of each call (seen: an AVX-512
kernel agreed bit for bit, OpenBLAS's Haswell kernel did not). With one order they must
agree exactly on any machine, and a difference is a real difference in what is computed.
"""
import ctypes
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edge_lls.kernels import blas

TESTS = Path(__file__).resolve().parent


def _ptr(array, ctype):
    return array.ctypes.data_as(ctypes.POINTER(ctype))


@pytest.mark.parametrize("transa,transb", [("N", "N"), ("N", "T"), ("T", "N"), ("T", "T")])
@pytest.mark.parametrize("beta", [0.0, 1.0])
def test_reference_sgemm_is_fortran_sgemm(transa, transb, beta, rng):
    # The child session's premise: the reference binding computes what sgemm computes,
    # column-major, for every transposition (float64 product; float32 sums of k = 5 terms
    # are within 5 u of it, relative to the sum of magnitudes).
    m, n, k = 7, 9, 5
    a = np.asfortranarray(rng.standard_normal((m, k) if transa == "N" else (k, m)), np.float32)
    b = np.asfortranarray(rng.standard_normal((k, n) if transb == "N" else (n, k)), np.float32)
    c = np.asfortranarray(rng.standard_normal((m, n)), np.float32)
    op_a = a if transa == "N" else a.T
    op_b = b if transb == "N" else b.T
    want = op_a.astype(np.float64) @ op_b.astype(np.float64) + beta * c
    bound = 5 * 2.0 ** -24 * (np.abs(op_a) @ np.abs(op_b) + beta * np.abs(c))
    chars = np.frombuffer((transa + transb).encode(), np.uint8).copy()
    ints = np.array([m, n, k, a.shape[0], b.shape[0], m], np.int32)
    floats = np.array([1.0, beta], np.float32)
    got = c.copy(order="F")
    blas.reference_sgemm.ctypes(_ptr(chars[0:], ctypes.c_uint8), _ptr(chars[1:], ctypes.c_uint8),
                                _ptr(ints[0:], ctypes.c_int32), _ptr(ints[1:], ctypes.c_int32),
                                _ptr(ints[2:], ctypes.c_int32), _ptr(floats[0:], ctypes.c_float),
                                _ptr(a, ctypes.c_float), _ptr(ints[3:], ctypes.c_int32),
                                _ptr(b, ctypes.c_float), _ptr(ints[4:], ctypes.c_int32),
                                _ptr(floats[1:], ctypes.c_float), _ptr(got, ctypes.c_float),
                                _ptr(ints[5:], ctypes.c_int32))
    assert np.all(np.abs(got - want) <= bound)


def test_fixed_order_tests_pass_under_the_reference_sgemm(request):
    markexpr = request.config.getoption("markexpr") or ""
    selection = "fixed_order" + (f" and ({markexpr})" if markexpr else "")
    env = dict(os.environ, EDGE_LLS_SGEMM="reference")
    child = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", selection,
                            str(TESTS)], env=env, capture_output=True, text=True, timeout=1800)
    tail = child.stdout[-6000:] + child.stderr[-2000:]
    assert child.returncode == 0, tail
    passed = re.search(r"(\d+) passed", child.stdout)
    assert passed and int(passed.group(1)) > 0, tail
    assert not re.search(r"\d+ (failed|error|skipped)", child.stdout), tail

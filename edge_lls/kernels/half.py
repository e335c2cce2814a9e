"""float16 *storage* for float32 kernels: load a half, compute in float32, store a half.

Numba has no float16 type on the CPU, so a float16 array reaches a kernel as its bit
pattern, a uint16 view (`bits(a)`). Two LLVM conversions do the rest (`vcvtph2ps` /
`vcvtps2ph` with F16C, `fcvt` on AArch64), rounding to nearest even exactly as NumPy's
astype(float16) does:

    ld(v)       element -> float32   (uint16 bits are widened; float32 passes through)
    st(a, v)    float32 value -> the element type of array a (rounded to half for uint16)
    widen_into(dst, src)   a 1-D run of elements -> float32 dst

A kernel written with ld/st is compiled once per storage type, and its float32 build is
the same machine code as before. Values are rounded to float32 before float16, so a
kernel's float16 output equals its float32 output rounded to half:
    kernel(bits(x16)) == kernel(x16.astype(float32)).astype(float16)
which is what the tests check (tests/test_fp16_storage.py).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

HALF = np.float16


def bits(a: np.ndarray) -> np.ndarray:
    """The array a kernel takes: a float16 array's uint16 view, any other array as is."""
    return a.view(np.uint16) if a.dtype == HALF else a


@intrinsic
def half_to_f32(typingctx, h):
    """uint16 bit pattern of a float16 -> float32 (exact)."""
    if h != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic
def f32_to_half(typingctx, v):
    """float32 -> uint16 bit pattern of the nearest float16 (ties to even; inf beyond 65504)."""
    if v != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


def ld(v):
    """An element as float32 (Python stand-in; kernels get the overload)."""
    return np.float32(np.uint16(v).view(HALF)) if isinstance(v, np.uint16) else v


def st(a, v):
    """v as an element of array a (Python stand-in; kernels get the overload)."""
    return np.float16(np.float32(v)).view(np.uint16) if a.dtype == np.uint16 else v


@overload(ld)
def _ld(v):
    if v == types.uint16:
        return lambda v: half_to_f32(v)
    if isinstance(v, types.Float):
        return lambda v: v
    return None


@overload(st)
def _st(a, v):
    if isinstance(a, types.Array) and a.dtype == types.uint16:
        return lambda a, v: f32_to_half(np.float32(v))
    if isinstance(a, types.Array):
        return lambda a, v: v
    return None


def widen_into(dst, src):
    """dst[:] = src as float32, for 1-D float32 dst and float32 or uint16 src (stand-in)."""
    dst[:] = src.view(HALF) if src.dtype == np.uint16 else src


@overload(widen_into)
def _widen_into(dst, src):
    if isinstance(src, types.Array) and src.dtype == types.uint16:
        def widen(dst, src):
            for i in range(src.shape[0]):
                dst[i] = half_to_f32(src[i])
        return widen

    def copy(dst, src):             # float32: one slice copy (vector moves)
        dst[:] = src
    return copy


__all__ = ["HALF", "bits", "ld", "st", "widen_into", "half_to_f32", "f32_to_half"]

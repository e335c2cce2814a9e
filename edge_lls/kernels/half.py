"""float16 *storage* for float32 kernels: load a half, compute in float32, store a half.

Numba has no float16 type on the CPU, so a float16 array reaches a kernel as its bit
pattern, a uint16 view (`bits(a)`). Two conversions do the rest, rounding to nearest even
exactly as NumPy's astype(float16) does: LLVM's half <-> float instructions where the
target has them (F16C `vcvtph2ps` / `vcvtps2ph` on x86-64, `fcvt` on AArch64), and an
integer version of the same conversions elsewhere (x86-64 without F16C, or a Numba
target pinned with NUMBA_CPU_NAME=generic): there LLVM would call compiler-rt's
__extendhfsf2, which Numba's JIT cannot resolve (the process aborts).

    ld(v)       element -> float32   (uint16 bits are widened; float32 passes through)
    st(a, v)    float32 value -> the element type of array a (rounded to half for uint16)
    widen_into(dst, src)   a 1-D run of elements -> float32 dst
    acc_row / store_row    where an output row accumulates (itself, or a float32 row
                           rounded once into a float16 output)

A kernel written with ld/st is compiled once per storage type, and its float32 build is
the same machine code as before. Values are rounded to float32 before float16, so a
kernel's float16 output equals its float32 output rounded to half:
    kernel(bits(x16)) == kernel(x16.astype(float32)).astype(float16)
which is what the tests check (tests/test_fp16_storage_conv.py, _norm_pool.py).
"""
from __future__ import annotations

import platform

import llvmlite.binding as llvm
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import config
from numba.extending import intrinsic, overload

HALF = np.float16


def _target_converts_half() -> bool:
    """Does the machine code Numba generates here have half <-> float instructions?"""
    arch = platform.machine().lower()
    if arch in ("aarch64", "arm64"):
        return True                          # every ARMv8 core: fcvt
    if arch not in ("x86_64", "amd64"):
        return False
    if config.CPU_NAME:                      # a pinned target: only what it names
        return "+f16c" in (config.CPU_FEATURES or "")
    return bool(llvm.get_host_cpu_features().get("f16c"))


NATIVE_HALF = _target_converts_half()


def bits(a: np.ndarray) -> np.ndarray:
    """The array a kernel takes: a float16 array's uint16 view, any other array as is."""
    return a.view(np.uint16) if a.dtype == HALF else a


@intrinsic
def _half_to_f32_native(typingctx, h):
    """uint16 bit pattern of a float16 -> float32 (exact)."""
    if h != types.uint16:
        return None

    def codegen(context, builder, signature, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
    return types.float32(types.uint16), codegen


@intrinsic
def _f32_to_half_native(typingctx, v):
    """float32 -> uint16 bit pattern of the nearest float16 (ties to even; inf from 65520)."""
    if v != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
    return types.uint16(types.float32), codegen


@intrinsic
def _f32_as_bits(typingctx, v):
    """float32 -> its IEEE bit pattern as int64 (a bitcast, any target)."""
    if v != types.float32:
        return None

    def codegen(context, builder, signature, args):
        return builder.zext(builder.bitcast(args[0], ir.IntType(32)), ir.IntType(64))
    return types.int64(types.float32), codegen


@intrinsic
def _bits_as_f32(typingctx, u):
    """The low 32 bits of an int64 as a float32 (a bitcast, any target)."""
    if u != types.int64:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(builder.trunc(args[0], ir.IntType(32)), ir.FloatType())
    return types.float32(types.int64), codegen


_TWO_POW_M24 = np.float32(2.0 ** -24)       # a half subnormal's unit
_TWO_POW_24 = np.float32(2.0 ** 24)


@njit(inline="always")
def _half_to_f32_soft(h):
    u = np.int64(h)
    sign = (u & 0x8000) << 16
    exp = (u >> 10) & 0x1F
    mant = u & 0x3FF
    if exp == 0:                             # zero or subnormal: mant * 2^-24, exact in float32
        f = np.float32(mant) * _TWO_POW_M24
        return -f if sign else f
    if exp == 31:                            # inf, NaN (payload kept)
        return _bits_as_f32(sign | 0x7F800000 | (mant << 13))
    return _bits_as_f32(sign | ((exp + 112) << 23) | (mant << 13))


@njit(inline="always")
def _f32_to_half_soft(f):
    x = _f32_as_bits(f)
    sign = (x >> 16) & 0x8000
    a = x & 0x7FFFFFFF
    if a >= 0x7F800000:                      # inf, or NaN: top payload bits, never zero (NumPy's)
        if a == 0x7F800000:
            return np.uint16(sign | 0x7C00)
        m = (a & 0x7FFFFF) >> 13
        return np.uint16(sign | 0x7C00 | (m if m != 0 else 1))
    if a >= 0x477FF000:                      # >= 65520 rounds past 65504: inf
        return np.uint16(sign | 0x7C00)
    if a < 0x38800000:                       # below 2^-14: a subnormal (or zero) half, nearest
        m = np.rint(_bits_as_f32(a) * _TWO_POW_24)   # even on the 2^-24 grid (exact scaling;
        return np.uint16(sign | np.int64(m))          # 1024 is the smallest normal, 0x400)
    # Normal: drop 13 mantissa bits, nearest even; a carry moves into the exponent.
    a = a + 0xFFF + ((a >> 13) & 1)
    return np.uint16(sign | ((a - 0x38000000) >> 13))


# What the kernels call: the instructions where the target has them, the integer version
# elsewhere (bit-identical: tests/test_fp16_storage_conv.py runs both).
half_to_f32 = _half_to_f32_native if NATIVE_HALF else _half_to_f32_soft
f32_to_half = _f32_to_half_native if NATIVE_HALF else _f32_to_half_soft


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


def acc_row(out_row, spare):
    """Where a kernel accumulates output row out_row (C,): the row itself for float32
    storage; for float16 the float32 spare row (at least C long), rounded once by
    store_row -- accumulating in half would round after every term, and a half running
    max would change which tap wins (Python stand-in; kernels get the overload)."""
    return spare if out_row.dtype == np.uint16 else out_row


@overload(acc_row)
def _acc_row(out_row, spare):
    if out_row.dtype == types.uint16:
        return lambda out_row, spare: spare
    return lambda out_row, spare: out_row


def store_row(out_row, acc):
    """Nothing when acc is out_row itself (float32); else acc[:C] rounded into the
    float16 row (Python stand-in; kernels get the overload)."""
    if out_row.dtype == np.uint16:
        out_row[:] = acc[:len(out_row)].astype(HALF).view(np.uint16)


@overload(store_row)
def _store_row(out_row, acc):
    if out_row.dtype == types.uint16:
        def round_into(out_row, acc):
            for c in range(out_row.shape[0]):
                out_row[c] = f32_to_half(acc[c])
        return round_into
    return lambda out_row, acc: None


# Unused float32s (256 bytes) after each thread's row, and one spare row before the
# first: every thread writes its row for every output pixel, so no other hot data (the
# other thread's row, or a small heap object such as a refcount both threads update)
# may share its cache line or that line's 128-byte prefetch pair. With 128 bytes the
# float16-output max pool of a (64,32,32,128) tensor ran 1.25-1.5x slower in most
# processes on 2 threads (it depends on where malloc puts the buffer); 256 measured clean.
_ROW_GAP = 64
_THREAD_ROWS: dict[int, np.ndarray] = {}      # channels -> rows, allocated once
_NO_ROWS = np.zeros((config.NUMBA_NUM_THREADS, 0), np.float32)


def thread_rows(out: np.ndarray) -> np.ndarray:
    """The spare rows acc_row hands a kernel writing output out (..., C): (pool threads,
    C + gap) float32, one per thread (a kernel indexes it by its thread), for a float16
    out; (pool threads, 0) for a float32 out, which is its own accumulator. Allocated on
    first use per channel count, then reused: steps allocate nothing."""
    if out.dtype != HALF and out.dtype != np.uint16:
        return _NO_ROWS
    channels = out.shape[-1]
    rows = _THREAD_ROWS.get(channels)
    if rows is None:
        rows = np.empty((config.NUMBA_NUM_THREADS + 1, channels + _ROW_GAP), np.float32)[1:]
        _THREAD_ROWS[channels] = rows
    return rows


__all__ = ["HALF", "NATIVE_HALF", "bits", "thread_rows", "ld", "st", "widen_into", "acc_row", "store_row",
           "half_to_f32", "f32_to_half"]

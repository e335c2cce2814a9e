"""The program runner: a run of prepared fast-path layers in one compiled call."""
from __future__ import annotations

from numba import njit

from .gemm_f32 import conv_gemm_f32, depthwise3x3_f32, pointwise_gemm_f32
from .literal import avg_pool2d_s8, fully_connected_s8, max_pool2d_s8, s8_to_f32, softmax_s8

# Each layer is one row of an int64 table: its kind, indices into three typed lists of flat
# arrays (float32, int8, int64; index 0 of each list is an empty array, "none") and its
# integer parameters.  Calling the kernels from here costs no Python dispatch and no
# unboxing of their arguments (a list crosses into Numba as one pointer).

PROGRAM_WIDTH = 40
FLOATS, BYTES, LONGS, INTS = 1, 9, 13, 17  # first column of each group in a row
KIND_DEPTHWISE_3X3, KIND_CONV_GEMM, KIND_POINTWISE = 1, 2, 3
KIND_AVERAGE_POOL, KIND_MAX_POOL, KIND_FULLY_CONNECTED, KIND_SOFTMAX = 4, 5, 6, 7


@njit(cache=True)
def run_program(program, start, stop, f32, i8, i64, slot_ints, slot_floats, slot_chars):
    """Run rows start..stop-1 of ``program`` (see the layout above)."""
    for i in range(start, stop):
        row = program[i]
        kind = row[0]
        p = row[INTS:]
        if kind == KIND_DEPTHWISE_3X3:
            batches, in_h, in_w, channels, out_h, out_w = p[0], p[1], p[2], p[3], p[4], p[5]
            x = i8[row[BYTES]].reshape((batches, in_h, in_w, channels))
            out = i8[row[BYTES + 1]].reshape((batches, out_h, out_w, channels))
            chunk = p[14]
            depthwise3x3_f32(x, f32[row[FLOATS]], i64[row[LONGS]], f32[row[FLOATS + 1]].reshape((9, chunk)),
                             f32[row[FLOATS + 2]].reshape((2, chunk)), i64[row[LONGS + 1]].reshape((6, chunk)),
                             p[12] != 0, p[13], f32[row[FLOATS + 3]], out, f32[row[FLOATS + 4]], p[6], p[7], p[8], p[9],
                             p[10], p[11], p[15])
        elif kind == KIND_CONV_GEMM:
            batches, in_h, in_w, in_c, out_h, out_w, out_c = p[0], p[1], p[2], p[3], p[4], p[5], p[6]
            kernel_h, kernel_w, tile_rows = p[7], p[8], p[17]
            taps = kernel_h * kernel_w * in_c
            x = i8[row[BYTES]].reshape((batches, in_h, in_w, in_c))
            out = i8[row[BYTES + 1]].reshape((batches, out_h, out_w, out_c))
            conv_gemm_f32(x, f32[row[FLOATS]], f32[row[FLOATS + 1]].reshape((taps, tile_rows * out_w)),
                          f32[row[FLOATS + 2]].reshape((taps, out_c)), f32[row[FLOATS + 3]].reshape((tile_rows * out_w,
                                                                                                    out_c)),
                          f32[row[FLOATS + 4]].reshape((2, out_c)), i64[row[LONGS]].reshape((6, out_c)), p[18] != 0,
                          p[19], out, f32[row[FLOATS + 5]], kernel_h, kernel_w, p[9], p[10], p[11], p[12], p[13], p[14],
                          p[15], p[16], tile_rows, p[20], slot_ints, slot_floats, slot_chars)
        elif kind == KIND_POINTWISE:
            pixels, in_c, out_c, tile = p[0], p[1], p[2], p[3]
            source = f32[row[FLOATS]]
            if p[6] != 0:  # no float32 mirror from the producer: convert the int8 input here
                s8_to_f32(i8[row[BYTES + 1]], source)
            pointwise_gemm_f32(source.reshape((pixels, in_c)), f32[row[FLOATS + 1]].reshape((in_c, out_c)),
                               f32[row[FLOATS + 2]].reshape((tile, out_c)), f32[row[FLOATS + 3]].reshape((2, out_c)),
                               i64[row[LONGS]].reshape((6, out_c)), p[4] != 0, p[5],
                               i8[row[BYTES]].reshape((pixels, out_c)), f32[row[FLOATS + 4]], tile, slot_ints,
                               slot_floats, slot_chars)
        elif kind == KIND_AVERAGE_POOL or kind == KIND_MAX_POOL:
            batches, in_h, in_w, channels, out_h, out_w = p[0], p[1], p[2], p[3], p[4], p[5]
            x = i8[row[BYTES]].reshape((batches, in_h, in_w, channels))
            out = i8[row[BYTES + 1]].reshape((batches, out_h, out_w, channels))
            if kind == KIND_AVERAGE_POOL:
                avg_pool2d_s8(x, out, p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13])
            else:
                max_pool2d_s8(x, out, p[6], p[7], p[8], p[9], p[10], p[11], p[12], p[13])
        elif kind == KIND_FULLY_CONNECTED:
            batches, depth, out_c = p[0], p[1], p[2]
            fully_connected_s8(i8[row[BYTES]].reshape((batches, depth)), i8[row[BYTES + 1]].reshape((out_c, depth)),
                               i64[row[LONGS]], i8[row[BYTES + 2]].reshape((batches, out_c)), p[3], p[4],
                               i64[row[LONGS + 1]], i64[row[LONGS + 2]], p[5], p[6], p[7] != 0)
        elif kind == KIND_SOFTMAX:
            rows, depth = p[0], p[1]
            softmax_s8(i8[row[BYTES]].reshape((rows, depth)), i8[row[BYTES + 1]].reshape((rows, depth)), p[2], p[3],
                       p[4])

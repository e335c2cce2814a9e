"""int8 convolution as an exact float32 GEMM, and its requantization passes: the fast path
of the program runner (exactness bound: __init__.py)."""
from __future__ import annotations

import numpy as np
from numba import njit, uintp

from edge_lls.kernels import blas
from edge_lls.kernels.fixedpoint import (
    has_left_shift,
    requantize_value,
    requantize_value_right,
)

# Largest K (taps per output) for which float32 accumulation of raw int8 products is exact.
FLOAT32_EXACT_MAX_TAPS = 1024

# In the fast-path kernels below, computed indices that are known to be non-negative are cast
# to uintp: Numba then skips its negative-index wrap-around, which otherwise blocks
# vectorisation (and slicing inside hot loops costs an atomic refcount per view).

@njit(cache=True)
def im2col_s8_f32(x, cols, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top, pad_left, dilation_h,
                  dilation_w, pad_value):
    """Patches of one image.  x (H,W,Cin) int8 -> cols (OH*OW, KH*KW*Cin) float32, taps in OHWI
    order; taps outside the image take pad_value (the input zero point, i.e. real 0)."""
    in_h, in_w, in_c = x.shape
    x_flat = x.reshape(in_h * in_w * in_c)
    run = kernel_w * in_c  # one kernel row of an undilated window is contiguous in x
    fill = np.float32(pad_value)
    for row in range(cols.shape[0]):
        oy = row // out_w
        ox = row - oy * out_w
        x0 = ox * stride_w - pad_left
        row_inside = dilation_w == 1 and x0 >= 0 and x0 + kernel_w <= in_w
        for ky in range(kernel_h):
            iy = oy * stride_h - pad_top + ky * dilation_h
            col = ky * run
            if iy < 0 or iy >= in_h:
                for j in range(run):
                    cols[row, uintp(col + j)] = fill
            elif row_inside:
                start = (iy * in_w + x0) * in_c
                for j in range(run):
                    cols[row, uintp(col + j)] = np.float32(x_flat[uintp(start + j)])
            else:
                for kx in range(kernel_w):
                    ix = x0 + kx * dilation_w
                    inside = 0 <= ix < in_w
                    for ci in range(in_c):
                        value = np.float32(x[iy, ix, ci]) if inside else fill
                        cols[row, uintp(col + kx * in_c + ci)] = value


@njit(cache=True)
def depthwise_rows_s8(x, weights_tiled, bias_tiled, table_tiled, out, out_f32, stride_h, stride_w, pad_top,
                      pad_left, dilation_h, dilation_w, input_zero_point, output_zero_point, act_min, act_max):
    """Multiplier-1 DEPTHWISE_CONV_2D computed one output row at a time.

    x (N,H,W,C) int8; out (N,OH,OW,C) int8.  Per-channel constants are pre-tiled along the
    output row so that every inner loop runs over OW*C contiguous values:
    weights_tiled (KH,KW,OW*C) int16, bias_tiled (OW*C,) int32, table_tiled (5,OW*C) int64
    (fixedpoint.requantize_tables).  out_f32 (N*OH*OW, C) float32 receives a copy, or is (0,0).
    Same arithmetic as depthwise_conv2d_s8: taps outside the image are skipped.
    """
    batches, in_h, in_w, channels = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    kernel_h, kernel_w = weights_tiled.shape[0], weights_tiled.shape[1]
    row_len = out_w * channels
    # |x - zp| <= 255 and |w| <= 128: each product fits int16 (<= 32640), so the multiply runs on
    # 16-bit lanes; the sum of taps is accumulated in int32.
    zero_point16 = np.int16(input_zero_point)
    x_flat = x.reshape(batches * in_h * in_w * channels)
    out_flat = out.reshape(batches * out_h * row_len)
    mirror_flat = out_f32.reshape(out_f32.shape[0] * out_f32.shape[1])
    write_mirror = out_f32.shape[0] == batches * out_h * out_w
    left_shifts = has_left_shift(table_tiled)
    acc = np.empty(row_len, np.int32)
    for n in range(batches):
        for oy in range(out_h):
            for j in range(row_len):
                acc[j] = bias_tiled[j]
            for ky in range(kernel_h):
                iy = oy * stride_h - pad_top + ky * dilation_h
                if iy < 0 or iy >= in_h:
                    continue
                row_start = ((n * in_h + iy) * in_w) * channels
                for kx in range(kernel_w):
                    offset = kx * dilation_w - pad_left  # input column = output column * stride + offset
                    first_ox = max(0, (-offset + stride_w - 1) // stride_w)
                    last_ox = min(out_w, (in_w - offset + stride_w - 1) // stride_w)
                    if stride_w == 1:  # the whole valid span is one contiguous run
                        source_start = row_start + offset * channels  # >= 0 for every j >= first
                        for j in range(first_ox * channels, last_ox * channels):
                            centered = np.int16(np.int16(x_flat[uintp(source_start + j)]) - zero_point16)
                            acc[uintp(j)] += np.int16(centered * weights_tiled[ky, kx, uintp(j)])
                    else:
                        for ox in range(first_ox, last_ox):
                            source_start = row_start + (ox * stride_w + offset) * channels
                            target = ox * channels
                            for c in range(channels):
                                centered = np.int16(np.int16(x_flat[uintp(source_start + c)]) - zero_point16)
                                acc[uintp(target + c)] += np.int16(centered * weights_tiled[ky, kx, uintp(target + c)])
            out_start = (n * out_h + oy) * row_len
            _requantize_span(acc, table_tiled, left_shifts, output_zero_point, act_min, act_max, out_flat,
                             mirror_flat, out_start, write_mirror)


@njit(cache=True)
def _requantize_span(acc, table, left_shifts, output_zero_point, act_min, act_max, out_flat, mirror_flat, start,
                     write_mirror):
    """acc (L,) int32 with a per-position table (5, L) -> out_flat[start:start+L] int8, and the
    same values as float32 into mirror_flat when write_mirror.  Two loops so that the common
    no-left-shift case stays branch-free."""
    if left_shifts:
        for j in range(acc.shape[0]):
            value = requantize_value(np.int64(acc[j]), table[0, j], table[1, j], table[2, j], table[3, j],
                                     table[4, j]) + output_zero_point
            out_flat[uintp(start + j)] = min(max(value, act_min), act_max)
    else:
        for j in range(acc.shape[0]):
            value = requantize_value_right(np.int64(acc[j]), table[0, j], table[2, j], table[3, j],
                                           table[4, j]) + output_zero_point
            out_flat[uintp(start + j)] = min(max(value, act_min), act_max)
    if write_mirror:
        for j in range(acc.shape[0]):
            mirror_flat[uintp(start + j)] = np.float32(out_flat[uintp(start + j)])


@njit(cache=True)
def requantize_gemm(acc, bias, table, output_zero_point, act_min, act_max, out, out_f32):
    """Exact float32 accumulators -> int8.  acc (P,C) float32 holding integers below 2^24;
    bias (C,) int32 with the input zero point folded in; table from fixedpoint.requantize_tables;
    out (P,C) int8; out_f32 (P,C) float32 copy of out for a following GEMM, or (0,0) to skip."""
    rows, channels = acc.shape
    write_mirror = out_f32.shape[0] == rows
    left_shifts = has_left_shift(table)
    out_flat = out.reshape(out.size)
    mirror_flat = out_f32.reshape(out_f32.size)
    for p in range(rows):
        start = p * channels
        if left_shifts:
            for c in range(channels):
                total = np.int64(acc[p, c]) + bias[c]
                value = requantize_value(total, table[0, c], table[1, c], table[2, c], table[3, c], table[4, c])
                out_flat[uintp(start + c)] = min(max(value + output_zero_point, act_min), act_max)
        else:
            for c in range(channels):
                # acc + bias_eff is TFLite's int32 accumulator; the loader's bound keeps it in int32
                total = np.int32(acc[p, c]) + bias[c]
                value = requantize_value_right(total, table[0, c], table[2, c], table[3, c], table[4, c])
                out_flat[uintp(start + c)] = min(max(value + output_zero_point, act_min), act_max)
        if write_mirror:
            for c in range(channels):
                mirror_flat[uintp(start + c)] = np.float32(out_flat[uintp(start + c)])


# ----------------------------------------------------------------------------------------
# Fast path, second generation: clamp-first requantization, padded float32 inputs, BLAS from
# inside the kernels (edge_lls.kernels.blas), one compiled call per layer
# ----------------------------------------------------------------------------------------
#
# Requantization tables come from fixedpoint.clamp_first_tables, laid out per position of the
# span being requantized (per channel for GEMM outputs, tiled along the output row for the
# depthwise kernel):
#   bounds (2, L) float32   accumulator clamp [lo, hi] (exact integers)
#   longs  (6, L) int64     multiplier, total shift, folded offset (bias * m + rounding offset),
#                           bias * m, offset for P >= 0, offset difference for P < 0 (the last
#                           three only when ``signed``)
# The clamp makes the output clamp unnecessary and every result fits int8 (see fixedpoint).

@njit(cache=True)
def _requantize_block(acc, rows, width, bounds, longs, signed, zero_point, out_flat, mirror_flat, start,
                      write_mirror):
    """acc (>= rows*width,) float32 exact accumulators, row-major (rows, width), tables of
    length width -> out_flat[start : start + rows*width] int8 (and float32 into mirror_flat).
    The int32 casts let LLVM multiply with vpmuldq (32 x 32 -> 64 bits)."""
    for r in range(rows):
        row = r * width
        base = start + row
        if signed:
            for c in range(width):
                a = min(max(acc[uintp(row + c)], bounds[0, c]), bounds[1, c])
                product = np.int64(np.int32(a)) * np.int64(np.int32(longs[0, c])) + longs[3, c]
                offset = longs[4, c] + (longs[5, c] & (product >> 63))
                out_flat[uintp(base + c)] = ((product + offset) >> longs[1, c]) + zero_point
        else:
            for c in range(width):
                a = min(max(acc[uintp(row + c)], bounds[0, c]), bounds[1, c])
                product = np.int64(np.int32(a)) * np.int64(np.int32(longs[0, c]))
                out_flat[uintp(base + c)] = ((product + longs[2, c]) >> longs[1, c]) + zero_point
        if write_mirror:
            for c in range(width):
                mirror_flat[uintp(base + c)] = np.float32(out_flat[uintp(base + c)])


@njit(cache=True)
def _convert_strided(x_flat, src, step, out_flat, dst, count):
    """out_flat[dst + i] = x_flat[src + i * step] as float32, i < count.  A separate function:
    inlined into the fill loop nest LLVM leaves this loop scalar (measured 1.6x slower)."""
    for i in range(count):
        out_flat[uintp(dst + i)] = np.float32(x_flat[uintp(src + step * i)])


@njit(cache=True)
def _fill_value(out_flat, dst, count, value):
    for i in range(count):
        out_flat[uintp(dst + i)] = value


@njit(cache=True)
def fill_padded_f32(x_flat, start, in_h, in_w, channels, xp_flat, pad_top, pad_left, stride, padded_h, planes_w,
                    planar, pad_value):
    """One NHWC int8 image (x_flat[start:]) -> float32 buffer xp_flat holding the padded image:
    raw codes inside, pad_value (the input zero point) on the border, which is rewritten every
    time (the buffer is shared scratch).  Column u = ix + pad_left goes to plane u % stride at
    position u // stride, so a strided window reads contiguous runs.  Layouts:
    planar=False (padded_h, stride, planes_w, C), channels innermost (depthwise);
    planar=True (padded_h, C, stride, planes_w), one row per channel (im2col of a GEMM conv).
    Rows and columns beyond the buffer are not read by any window and are dropped."""
    padded_w = stride * planes_w
    row_size = padded_w * channels
    fill = np.float32(pad_value)
    for y in range(padded_h):
        iy = y - pad_top
        if iy < 0 or iy >= in_h:
            _fill_value(xp_flat, y * row_size, row_size, fill)
            continue
        src_row = start + iy * in_w * channels
        if stride == 1 and not planar:
            pad_left = min(pad_left, padded_w)
            count = max(0, min(in_w, padded_w - pad_left))
            dst = y * row_size
            _fill_value(xp_flat, dst, pad_left * channels, fill)
            for j in range(count * channels):
                xp_flat[uintp(dst + pad_left * channels + j)] = np.float32(x_flat[uintp(src_row + j)])
            tail = pad_left + count
            _fill_value(xp_flat, dst + tail * channels, (padded_w - tail) * channels, fill)
            continue
        for p in range(stride):
            first = (p - pad_left) % stride  # first input column ix with (ix + pad_left) % stride == p
            q0 = (first + pad_left) // stride
            count = max(0, min((in_w - first + stride - 1) // stride, planes_w - q0)) if first < in_w else 0
            q0 = min(q0, planes_w)
            src = src_row + first * channels
            step = stride * channels
            if planar:
                for c in range(channels):
                    dst = ((y * channels + c) * stride + p) * planes_w
                    _fill_value(xp_flat, dst, q0, fill)
                    _convert_strided(x_flat, src + c, step, xp_flat, dst + q0, count)
                    _fill_value(xp_flat, dst + q0 + count, planes_w - q0 - count, fill)
            else:
                dst = (y * stride + p) * planes_w * channels
                _fill_value(xp_flat, dst, q0 * channels, fill)
                for i in range(count):
                    for c in range(channels):
                        xp_flat[uintp(dst + (q0 + i) * channels + c)] = np.float32(x_flat[uintp(src + i * step + c)])
                _fill_value(xp_flat, dst + (q0 + count) * channels, (planes_w - q0 - count) * channels, fill)


@njit(cache=True, fastmath={'contract'})
def depthwise3x3_f32(x, xp, taps, weights, bounds, longs, signed, zero_point, acc, out, mirror, pad_top, pad_left,
                     stride_h, stride_w, padded_h, planes_w, pad_value):
    """Multiplier-1 3x3 DEPTHWISE_CONV_2D (any stride and dilation) of int8 NHWC x into int8 NHWC
    out (and float32 (pixels, C) mirror when it is not empty).

    The input is first written as float32 raw codes into xp (border = pad_value, the input zero
    point; columns split by stride: see fill_padded_f32); the zero point is folded into the bias
    of the tables, so padded taps cancel exactly as TFLite's skipped ones.  Each output row is
    then computed in chunks of ``chunk`` values (a multiple of C) with all nine taps in the loop
    body: taps (9,) offsets of each tap from the row start in xp; weights (9, chunk) float32,
    bounds/longs (2|6, chunk) tables tiled to the chunk; acc (chunk,) scratch.  Exact: products
    and sums are integers below 2^24, so the fused multiply-adds round nothing."""
    batches, in_h, in_w, channels = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    row_len = out_w * channels
    chunk = weights.shape[1]
    x_flat = x.reshape(x.size)
    xp_flat = xp.reshape(xp.size)
    out_flat = out.reshape(out.size)
    mirror_flat = mirror.reshape(mirror.size)
    write_mirror = mirror.size == out.size
    plane_row = stride_w * planes_w * channels  # one padded input row
    w0, w1, w2, w3, w4, w5, w6, w7, w8 = (weights[0], weights[1], weights[2], weights[3], weights[4], weights[5],
                                          weights[6], weights[7], weights[8])
    for n in range(batches):
        fill_padded_f32(x_flat, n * in_h * in_w * channels, in_h, in_w, channels, xp_flat, pad_top, pad_left,
                        stride_w, padded_h, planes_w, False, pad_value)
        for oy in range(out_h):
            for j0 in range(0, row_len, chunk):
                b = oy * stride_h * plane_row + j0
                o0, o1, o2 = b + taps[0], b + taps[1], b + taps[2]
                o3, o4, o5 = b + taps[3], b + taps[4], b + taps[5]
                o6, o7, o8 = b + taps[6], b + taps[7], b + taps[8]
                count = min(chunk, row_len - j0)
                for j in range(count):
                    acc[j] = (xp_flat[uintp(o0 + j)] * w0[j] + xp_flat[uintp(o1 + j)] * w1[j]
                              + xp_flat[uintp(o2 + j)] * w2[j] + xp_flat[uintp(o3 + j)] * w3[j]
                              + xp_flat[uintp(o4 + j)] * w4[j] + xp_flat[uintp(o5 + j)] * w5[j]
                              + xp_flat[uintp(o6 + j)] * w6[j] + xp_flat[uintp(o7 + j)] * w7[j]
                              + xp_flat[uintp(o8 + j)] * w8[j])
                _requantize_block(acc, 1, count, bounds, longs, signed, zero_point, out_flat, mirror_flat,
                                  (n * out_h + oy) * row_len + j0, write_mirror)


@njit(cache=True)
def conv_gemm_f32(x, xp, cols_t, weights, acc, bounds, longs, signed, zero_point, out, mirror, kernel_h, kernel_w,
                  stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w, padded_h, planes_w, tile_rows,
                  pad_value, slot_ints, slot_floats, slot_chars):
    """CONV_2D as an exact float32 GEMM with everything in one call: the int8 image goes into a
    padded planar float32 buffer xp (fill_padded_f32, planar), then per tile of tile_rows
    output rows the transposed patch matrix cols_t (K, tile pixels) is gathered with one
    contiguous copy per tap and output row, multiplied by weights (K, Cout) (sgemm from inside
    the kernel), and requantized while the tile is in cache.  K = KH*KW*Cin in OHWI order; the
    zero point is folded into the bias of the tables."""
    batches, in_h, in_w, in_c = x.shape
    out_h, out_w, out_c = out.shape[1], out.shape[2], out.shape[3]
    x_flat = x.reshape(x.size)
    xp_flat = xp.reshape(xp.size)
    out_flat = out.reshape(out.size)
    mirror_flat = mirror.reshape(mirror.size)
    acc_flat = acc.reshape(acc.size)
    write_mirror = mirror.size == out.size
    plane = stride_w * planes_w  # one channel of one padded row
    for n in range(batches):
        fill_padded_f32(x_flat, n * in_h * in_w * in_c, in_h, in_w, in_c, xp_flat, pad_top, pad_left, stride_w,
                        padded_h, planes_w, True, pad_value)
        for oy0 in range(0, out_h, tile_rows):
            rows = min(tile_rows, out_h - oy0)
            pixels = rows * out_w
            for ky in range(kernel_h):
                for kx in range(kernel_w):
                    u = kx * dilation_w
                    column = (u % stride_w) * planes_w + u // stride_w
                    for ci in range(in_c):
                        t = (ky * kernel_w + kx) * in_c + ci
                        for r in range(rows):
                            y = (oy0 + r) * stride_h + ky * dilation_h
                            src = (y * in_c + ci) * plane + column
                            dst = r * out_w
                            for ox in range(out_w):
                                cols_t[t, uintp(dst + ox)] = xp_flat[uintp(src + ox)]
            tile = acc[:pixels]
            blas.gemm_atb(cols_t[:, :pixels], weights, tile, 0.0, slot_ints, slot_floats, slot_chars)
            _requantize_block(acc_flat, pixels, out_c, bounds, longs, signed, zero_point, out_flat, mirror_flat,
                              (n * out_h + oy0) * out_w * out_c, write_mirror)


@njit(cache=True)
def pointwise_gemm_f32(source, weights, acc, bounds, longs, signed, zero_point, out, mirror, tile_pixels, slot_ints,
                       slot_floats, slot_chars):
    """1x1 stride-1 CONV_2D: source (pixels, Cin) float32 raw int8 codes (the producer's mirror),
    weights (Cin, Cout) float32 -> out (pixels, Cout) int8 (and float32 mirror when not empty),
    per tile of tile_pixels rows: sgemm, then requantization while the tile is in cache."""
    pixels = source.shape[0]
    out_c = weights.shape[1]
    out_flat = out.reshape(out.size)
    mirror_flat = mirror.reshape(mirror.size)
    acc_flat = acc.reshape(acc.size)
    write_mirror = mirror.size == out.size
    for p0 in range(0, pixels, tile_pixels):
        count = min(tile_pixels, pixels - p0)
        blas.gemm_ab(source[p0:p0 + count], weights, acc[:count], 0.0, slot_ints, slot_floats, slot_chars)
        _requantize_block(acc_flat, count, out_c, bounds, longs, signed, zero_point, out_flat, mirror_flat, p0 * out_c,
                          write_mirror)

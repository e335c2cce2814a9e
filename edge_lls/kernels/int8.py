"""TFLite-exact int8 kernels (Numba). Each has a plain-NumPy twin in edge_lls/kernels/ref/int8.py.

Conventions shared by every kernel:
  * activations are NHWC int8, weights keep TFLite layout (conv OHWI, depthwise 1HW(C*mult),
    fully connected (out, in)), weights are symmetric (zero point 0), biases are int32;
  * accumulation is int32: acc = bias + sum(w * (x - input_zero_point)), then per output
    channel acc -> MultiplyByQuantizedMultiplier(acc, multiplier[c], shift[c]) + output_zero_point,
    clamped to [act_min, act_max] (the fused RELU/RELU6 range in the int8 domain);
    FULLY_CONNECTED alone rounds once instead of twice, as LiteRT's reference kernel does;
  * results are written into a preallocated ``out`` array; nothing is returned.

Why int32 accumulation cannot overflow.  |x - zp| <= 255 and |w| <= 128, so one product is
at most 255 * 128 = 32640 < 2^15.  A sum of K products is below K * 2^15, which stays under
2^30 for K <= 2^15 = 32768 taps (KH*KW*Cin; VWW's largest is 256), leaving 2^30 of headroom
for the bias.  The graph loader (edge_lls/graph.py) checks K * 32640 + max|bias| < 2^31 for
every layer and refuses the model otherwise, so the bound is enforced, not assumed.  Pool
and mean sums are at most window * 255 (or H*W * 255), far below 2^31 for any image size.

The fast-path kernels at the end serve the graph's default path.  Convolutions run there as a
float32 matrix product (BLAS).  That is exact integer arithmetic, not an approximation: the inputs
are raw int8 codes (|x| <= 128, the zero point is folded into the bias and padding carries the
zero point) and weights |w| <= 128, so every partial sum of K <= 1024 products is an integer of
magnitude <= 1024 * 2^14 = 2^24, and float32 represents every integer up to 2^24 exactly, in
any summation order (fused multiply-adds included: they round nothing either).  The loader uses
that path only when K <= 1024.  Two generations:
  * conv_gemm_f32, pointwise_gemm_f32, depthwise3x3_f32 (used whenever
    fixedpoint.clamp_first_tables applies: every multiplier below 1): each layer is one compiled
    call (sgemm is called from inside, edge_lls.kernels.blas), requantization clamps the
    accumulator first so that it needs no output clamp, and run_program runs a whole run of
    such layers (plus pooling, fully connected and softmax) in one call;
  * im2col_s8_f32, requantize_gemm, depthwise_rows_s8: separate passes, for the rest.
"""
from __future__ import annotations

import numpy as np
from numba import njit, uintp

from edge_lls.kernels import blas
from edge_lls.kernels.fixedpoint import (
    exp_on_negative_values_q5_26,
    has_left_shift,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_single_rounding,
    reciprocal_q12,
    requantize_tables,
    requantize_value,
    requantize_value_right,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)

# Largest K (taps per output) for which float32 accumulation of raw int8 products is exact.
FLOAT32_EXACT_MAX_TAPS = 1024


@njit(cache=True)
def requantize_into(acc, table, output_zero_point, act_min, act_max, out_flat, start):
    """acc (C,) int32 -> out_flat[start:start+C] int8 through the per-channel table of
    fixedpoint.requantize_tables, the output zero point and the clamp.  Writing through a flat
    array and an offset avoids creating a view per pixel (an atomic refcount each)."""
    for c in range(acc.shape[0]):
        value = requantize_value(np.int64(acc[c]), table[0, c], table[1, c], table[2, c], table[3, c],
                                 table[4, c]) + output_zero_point
        out_flat[uintp(start + c)] = min(max(value, act_min), act_max)


@njit(cache=True)
def conv2d_s8(x, weights, bias, out, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
              input_zero_point, output_zero_point, multipliers, shifts, act_min, act_max):
    """CONV_2D.  x (N,H,W,Cin) int8; weights (Cout,KH,KW,Cin) int8; bias (Cout,) int32;
    multipliers/shifts (Cout,) int32; out (N,OH,OW,Cout) int8."""
    batches, in_h, in_w, in_c = x.shape
    out_c, kernel_h, kernel_w, _ = weights.shape
    out_h, out_w = out.shape[1], out.shape[2]
    acc = np.empty(out_c, np.int32)
    table = requantize_tables(multipliers, shifts)
    out_flat = out.reshape(out.size)
    for n in range(batches):
        for oy in range(out_h):
            for ox in range(out_w):
                for co in range(out_c):
                    total = np.int32(bias[co])
                    for ky in range(kernel_h):
                        iy = oy * stride_h - pad_top + ky * dilation_h
                        if iy < 0 or iy >= in_h:
                            continue
                        for kx in range(kernel_w):
                            ix = ox * stride_w - pad_left + kx * dilation_w
                            if ix < 0 or ix >= in_w:
                                continue
                            for ci in range(in_c):
                                total += np.int32((np.int32(x[n, iy, ix, ci]) - input_zero_point)
                                                  * np.int32(weights[co, ky, kx, ci]))
                    acc[co] = total
                requantize_into(acc, table, output_zero_point, act_min, act_max, out_flat,
                                ((n * out_h + oy) * out_w + ox) * out_c)


@njit(cache=True)
def _depthwise_accumulate(x_flat, in_h, in_w, in_c, weights, bias, acc, n, oy, ox, stride_h, stride_w, pad_top,
                          pad_left, dilation_h, dilation_w, depth_multiplier, input_zero_point):
    """acc (C*mult,) int32 <- bias + taps of one output pixel; channel loop innermost.
    x_flat is the NHWC input flattened; indices are cast to uintp once proven in range."""
    kernel_h, kernel_w = weights.shape[1], weights.shape[2]
    zero_point = np.int32(input_zero_point)
    for c in range(acc.shape[0]):
        acc[c] = bias[c]
    for ky in range(kernel_h):
        iy = oy * stride_h - pad_top + ky * dilation_h
        if iy < 0 or iy >= in_h:
            continue
        for kx in range(kernel_w):
            ix = ox * stride_w - pad_left + kx * dilation_w
            if ix < 0 or ix >= in_w:
                continue
            start = ((n * in_h + iy) * in_w + ix) * in_c
            if depth_multiplier == 1:
                for c in range(in_c):
                    acc[c] += (np.int32(x_flat[uintp(start + c)]) - zero_point) * np.int32(weights[0, ky, kx, c])
            else:
                for ic in range(in_c):
                    centered = np.int32(x_flat[uintp(start + ic)]) - zero_point
                    for m in range(depth_multiplier):
                        oc = uintp(ic * depth_multiplier + m)
                        acc[oc] += centered * np.int32(weights[0, ky, kx, oc])


@njit(cache=True)
def depthwise_conv2d_s8(x, weights, bias, out, stride_h, stride_w, pad_top, pad_left, dilation_h,
                        dilation_w, depth_multiplier, input_zero_point, output_zero_point, multipliers,
                        shifts, act_min, act_max):
    """DEPTHWISE_CONV_2D.  x (N,H,W,C) int8; weights (1,KH,KW,C*mult) int8, output channel
    c*mult+m reads input channel c; bias/multipliers/shifts (C*mult,) int32; out (N,OH,OW,C*mult)."""
    depthwise_conv2d_s8_mirrored(x, weights, bias, out, np.zeros((0, 0), np.float32), stride_h, stride_w,
                                 pad_top, pad_left, dilation_h, dilation_w, depth_multiplier, input_zero_point,
                                 output_zero_point, multipliers, shifts, act_min, act_max)


@njit(cache=True)
def depthwise_conv2d_s8_mirrored(x, weights, bias, out, out_f32, stride_h, stride_w, pad_top, pad_left,
                                 dilation_h, dilation_w, depth_multiplier, input_zero_point, output_zero_point,
                                 multipliers, shifts, act_min, act_max):
    """depthwise_conv2d_s8 that also writes out as float32 into out_f32 (N*OH*OW, C*mult) for a
    following GEMM convolution; a (0,0) out_f32 skips the copy."""
    batches, out_h, out_w, out_c = out.shape
    _, in_h, in_w, in_c = x.shape
    x_flat = x.reshape(batches * in_h * in_w * in_c)
    acc = np.empty(out_c, np.int32)
    table = requantize_tables(multipliers, shifts)
    out_flat = out.reshape(out.size)
    mirror_flat = out_f32.reshape(out_f32.size)
    write_mirror = out_f32.shape[0] == batches * out_h * out_w
    pixel = 0
    for n in range(batches):
        for oy in range(out_h):
            for ox in range(out_w):
                _depthwise_accumulate(x_flat, in_h, in_w, in_c, weights, bias, acc, n, oy, ox, stride_h, stride_w,
                                      pad_top, pad_left, dilation_h, dilation_w, depth_multiplier, input_zero_point)
                start = pixel * out_c
                requantize_into(acc, table, output_zero_point, act_min, act_max, out_flat, start)
                if write_mirror:
                    for c in range(out_c):
                        mirror_flat[uintp(start + c)] = np.float32(out_flat[uintp(start + c)])
                pixel += 1


@njit(cache=True)
def fully_connected_s8(x, weights, bias, out, input_zero_point, output_zero_point, multipliers, shifts,
                       act_min, act_max):
    """FULLY_CONNECTED.  x (B,In) int8; weights (Out,In) int8; bias (Out,) int32;
    multipliers/shifts (Out,) int32 (a per-tensor scale repeated); out (B,Out) int8.
    Requantization rounds once (LiteRT's reference kernel does; see
    fixedpoint.multiply_by_quantized_multiplier_single_rounding), unlike the convolutions."""
    batches, depth = x.shape
    out_c = weights.shape[0]
    for b in range(batches):
        for o in range(out_c):
            total = np.int32(bias[o])
            for d in range(depth):
                total += np.int32((np.int32(x[b, d]) - input_zero_point) * np.int32(weights[o, d]))
            value = multiply_by_quantized_multiplier_single_rounding(np.int64(total), np.int64(multipliers[o]),
                                                                     np.int64(shifts[o]))
            out[b, o] = min(max(value + output_zero_point, act_min), act_max)


@njit(cache=True)
def _truncating_div(numerator, denominator):
    """C++ integer division (toward zero) for a positive denominator."""
    if numerator >= 0:
        return numerator // denominator
    return -((-numerator) // denominator)


@njit(cache=True)
def avg_pool2d_s8(x, out, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, act_min, act_max):
    """AVERAGE_POOL_2D (input and output share scale and zero point).  x (N,H,W,C) int8 ->
    out (N,OH,OW,C) int8; the window is clipped to the image and the sum is divided by the number
    of valid taps, rounding half away from zero."""
    batches, in_h, in_w, channels = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    acc = np.empty(channels, np.int32)
    for n in range(batches):
        for oy in range(out_h):
            for ox in range(out_w):
                y0 = oy * stride_h - pad_top
                x0 = ox * stride_w - pad_left
                for c in range(channels):
                    acc[c] = 0
                count = 0
                for iy in range(max(y0, 0), min(y0 + filter_h, in_h)):
                    for ix in range(max(x0, 0), min(x0 + filter_w, in_w)):
                        count += 1
                        for c in range(channels):
                            acc[c] += x[n, iy, ix, c]
                half = count // 2
                for c in range(channels):
                    total = np.int64(acc[c])
                    mean = _truncating_div(total + half, count) if total > 0 else _truncating_div(total - half, count)
                    out[n, oy, ox, c] = min(max(mean, act_min), act_max)


@njit(cache=True)
def max_pool2d_s8(x, out, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, act_min, act_max):
    """MAX_POOL_2D.  x (N,H,W,C) int8 -> out (N,OH,OW,C) int8; window clipped to the image."""
    batches, in_h, in_w, channels = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    best = np.empty(channels, np.int32)
    for n in range(batches):
        for oy in range(out_h):
            for ox in range(out_w):
                y0 = oy * stride_h - pad_top
                x0 = ox * stride_w - pad_left
                best[:] = -128
                for iy in range(max(y0, 0), min(y0 + filter_h, in_h)):
                    for ix in range(max(x0, 0), min(x0 + filter_w, in_w)):
                        for c in range(channels):
                            best[c] = max(best[c], np.int32(x[n, iy, ix, c]))
                for c in range(channels):
                    out[n, oy, ox, c] = min(max(best[c], act_min), act_max)


@njit(cache=True)
def mean_s8(x, out, input_zero_point, output_zero_point, multiplier, shift):
    """MEAN over the middle axis.  x (Outer,R,Inner) int8 -> out (Outer,Inner) int8.
    multiplier/shift already include the 1/R factor (fixedpoint.mean_multiplier)."""
    outer, count, inner = x.shape
    acc = np.empty(inner, np.int32)
    for o in range(outer):
        for i in range(inner):
            acc[i] = 0
        for r in range(count):
            for i in range(inner):
                acc[i] += x[o, r, i]
        for i in range(inner):
            centered = np.int64(acc[i]) - np.int64(input_zero_point) * count
            value = multiply_by_quantized_multiplier(centered, multiplier, shift) + output_zero_point
            out[o, i] = min(max(value, -128), 127)


@njit(cache=True)
def add_s8(x1, x2, out, input1_zero_point, input2_zero_point, output_zero_point, left_shift,
           multiplier1, shift1, multiplier2, shift2, output_multiplier, output_shift, act_min, act_max):
    """ADD, element-wise on flat arrays.  x1, x2, out (L,) int8.  Both inputs are lifted by
    2^left_shift, rescaled to a common scale, summed, rescaled to the output (all shifts <= 0)."""
    for i in range(out.shape[0]):
        lifted1 = wrap_int32((np.int64(x1[i]) - input1_zero_point) * (1 << left_shift))
        lifted2 = wrap_int32((np.int64(x2[i]) - input2_zero_point) * (1 << left_shift))
        scaled1 = multiply_by_quantized_multiplier(lifted1, multiplier1, shift1)
        scaled2 = multiply_by_quantized_multiplier(lifted2, multiplier2, shift2)
        value = multiply_by_quantized_multiplier(wrap_int32(scaled1 + scaled2), output_multiplier,
                                                 output_shift) + output_zero_point
        out[i] = min(max(value, act_min), act_max)


@njit(cache=True)
def softmax_s8(x, out, input_multiplier, input_left_shift, diff_min):
    """SOFTMAX over the last axis.  x (Rows,Depth) int8 -> out (Rows,Depth) int8 with output
    scale 1/256 and zero point -128 (TFLite requires those).  gemmlowp fixed point throughout:
    differences to the row max in Q5.26, exp in Q0.31, sum in Q12.19, reciprocal in Q0.31."""
    rows, depth = x.shape
    for r in range(rows):
        row_max = -128
        for c in range(depth):
            row_max = max(row_max, np.int64(x[r, c]))
        sum_of_exps = np.int64(0)
        for c in range(depth):
            diff = np.int64(x[r, c]) - row_max
            if diff >= diff_min:
                rescaled = saturating_rounding_doubling_high_mul(diff * (1 << input_left_shift), input_multiplier)
                sum_of_exps = wrap_int32(sum_of_exps + rounding_divide_by_pot(exp_on_negative_values_q5_26(rescaled), 12))
        scale, bits_over_unit = reciprocal_q12(sum_of_exps)
        exponent = bits_over_unit + 31 - 8
        for c in range(depth):
            diff = np.int64(x[r, c]) - row_max
            if diff >= diff_min:
                rescaled = saturating_rounding_doubling_high_mul(diff * (1 << input_left_shift), input_multiplier)
                probability = rounding_divide_by_pot(
                    saturating_rounding_doubling_high_mul(scale, exp_on_negative_values_q5_26(rescaled)), exponent)
                out[r, c] = min(max(probability - 128, -128), 127)
            else:
                out[r, c] = -128


@njit(cache=True)
def pad_s8(x, out, pad_before, pad_value):
    """PAD of a 4-D tensor.  x (A,B,C,D) int8 -> out (A+pa,B+pb,C+pc,D+pd) int8; pad_before (4,)
    int; padding takes pad_value (the output zero point: real 0)."""
    out[...] = pad_value
    a0, b0, c0, d0 = pad_before[0], pad_before[1], pad_before[2], pad_before[3]
    dim_a, dim_b, dim_c, dim_d = x.shape
    for a in range(dim_a):
        for b in range(dim_b):
            for c in range(dim_c):
                for d in range(dim_d):
                    out[a + a0, b + b0, c + c0, d + d0] = x[a, b, c, d]


@njit(cache=True)
def quantize_f32_to_s8(x, out, scale, zero_point):
    """QUANTIZE float32 -> int8 on flat arrays: round(x / scale) (float32 divide, ties away from
    zero) + zero_point, clamped."""
    scale32 = np.float32(scale)
    for i in range(x.shape[0]):
        ratio = np.float64(np.float32(x[i]) / scale32)  # the divide is float32; +0.5 below is exact in float64
        if ratio != ratio:  # NaN: TFLite's static_cast is undefined; pin it to the zero point
            out[i] = zero_point
            continue
        magnitude = np.floor(abs(ratio) + 0.5)
        rounded = magnitude if ratio >= 0 else -magnitude
        value = min(max(rounded + zero_point, -128.0), 127.0)
        out[i] = np.int8(value)


@njit(cache=True)
def requantize_s8(x, out, input_zero_point, output_zero_point, multiplier, shift):
    """QUANTIZE int8 -> int8 on flat arrays: (x - zp_in) rescaled to the output scale."""
    for i in range(x.shape[0]):
        value = multiply_by_quantized_multiplier(np.int64(x[i]) - input_zero_point, multiplier, shift)
        out[i] = min(max(value + output_zero_point, -128), 127)


@njit(cache=True)
def dequantize_s8(x, out, scale, zero_point):
    """DEQUANTIZE int8 -> float32 on flat arrays: scale * (x - zero_point), one float32 rounding."""
    scale32 = np.float32(scale)
    for i in range(x.shape[0]):
        out[i] = scale32 * np.float32(np.int32(x[i]) - zero_point)


@njit(cache=True)
def s8_to_f32(x, out):
    """int8 codes -> the same integers as float32 (exact).  x (L,) int8, out (L,) float32."""
    for i in range(x.shape[0]):
        out[i] = np.float32(x[i])


# ----------------------------------------------------------------------------------------
# Fast-path helpers: convolution as an exact float32 GEMM (see the module docstring)
# ----------------------------------------------------------------------------------------

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


# ----------------------------------------------------------------------------------------
# Program runner: a run of prepared fast-path layers in one compiled call
# ----------------------------------------------------------------------------------------
#
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
                               i64[row[LONGS + 1]], i64[row[LONGS + 2]], p[5], p[6])
        elif kind == KIND_SOFTMAX:
            rows, depth = p[0], p[1]
            softmax_s8(i8[row[BYTES]].reshape((rows, depth)), i8[row[BYTES + 1]].reshape((rows, depth)), p[2], p[3],
                       p[4])

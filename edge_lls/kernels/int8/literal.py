"""int8 kernels written as TFLite's reference kernels compute them, one loop nest per op:
int32 accumulation, requantization per output channel, clamp (conventions: __init__.py)."""
from __future__ import annotations

import numpy as np
from numba import njit, uintp

from edge_lls.kernels.fixedpoint import (
    INT8_MAX,
    INT8_MIN,
    exp_on_negative_values_q5_26,
    multiply_by_quantized_multiplier,
    multiply_by_quantized_multiplier_single_rounding,
    reciprocal_q12,
    requantize_tables,
    requantize_value,
    rounding_divide_by_pot,
    saturating_rounding_doubling_high_mul,
    wrap_int32,
)

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
                       act_min, act_max, single_rounding=True):
    """FULLY_CONNECTED.  x (B,In) int8; weights (Out,In) int8; bias (Out,) int32;
    multipliers/shifts (Out,) int32 (a per-tensor scale repeated); out (B,Out) int8.
    single_rounding: requantization rounds once, as LiteRT's reference kernel does
    (fixedpoint.multiply_by_quantized_multiplier_single_rounding); False: twice, as the
    convolutions do and as TFLite Micro's reference and CMSIS-NN kernels do for this op
    too (fixedpoint.multiply_by_quantized_multiplier)."""
    batches, depth = x.shape
    out_c = weights.shape[0]
    for b in range(batches):
        for o in range(out_c):
            total = np.int32(bias[o])
            for d in range(depth):
                total += np.int32((np.int32(x[b, d]) - input_zero_point) * np.int32(weights[o, d]))
            if single_rounding:
                value = multiply_by_quantized_multiplier_single_rounding(np.int64(total), np.int64(multipliers[o]),
                                                                         np.int64(shifts[o]))
            else:
                value = multiply_by_quantized_multiplier(np.int64(total), np.int64(multipliers[o]), np.int64(shifts[o]))
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


@njit(cache=True)
def leaky_relu_s8(x, out, input_zero_point, output_zero_point, multiplier_identity, shift_identity,
                  multiplier_alpha, shift_alpha):
    """TFLite's reference int8 LEAKY_RELU on flat arrays: v = x - zp_in; v >= 0 is rescaled by
    s_in/s_out, v < 0 by alpha*s_in/s_out (each MultiplyByQuantizedMultiplier), + zp_out, clamp."""
    for i in range(x.shape[0]):
        v = np.int64(x[i]) - input_zero_point
        if v >= 0:
            r = multiply_by_quantized_multiplier(v, multiplier_identity, shift_identity)
        else:
            r = multiply_by_quantized_multiplier(v, multiplier_alpha, shift_alpha)
        out[i] = min(max(r + output_zero_point, INT8_MIN), INT8_MAX)

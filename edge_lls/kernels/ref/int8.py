"""Plain-NumPy reference twins of edge_lls/kernels/int8/.

Same signatures, same results bit for bit, written the obvious vectorised way (int64 arrays,
explicit padding, einsum) so that a bug in one implementation is unlikely to hide in the other.
"""
from __future__ import annotations

import numpy as np

from edge_lls.kernels.fixedpoint import (
    INT8_MAX,
    INT8_MIN,
    exp_on_negative_values_q5_26_array,
    multiply_by_quantized_multiplier_array,
    multiply_by_quantized_multiplier_single_rounding_array,
    reciprocal_q12_array,
    rounding_divide_by_pot_array,
    saturating_rounding_doubling_high_mul_array,
    wrap_int32_array,
)


def _requantize(acc, multipliers, shifts, output_zero_point, act_min, act_max) -> np.ndarray:
    """acc (..., C) int64 -> int8 via per-channel multiplier/shift (broadcast on the last axis)."""
    value = multiply_by_quantized_multiplier_array(acc, np.asarray(multipliers, np.int64),
                                                   np.asarray(shifts, np.int64)) + output_zero_point
    return np.clip(value, act_min, act_max).astype(np.int8)


def _padded_centered(x, pad_top, pad_left, extra_h, extra_w, input_zero_point) -> np.ndarray:
    """(x - zp) as int64, zero-padded (real 0) by pad_top/left and extra_h/w at the far sides."""
    centered = x.astype(np.int64) - input_zero_point
    return np.pad(centered, ((0, 0), (pad_top, extra_h), (pad_left, extra_w), (0, 0)))


def _windows(padded, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w):
    """(N, OH, OW, KH, KW, C) view of every receptive field of a padded NHWC tensor."""
    rows = (np.arange(out_h) * stride_h)[:, None] + np.arange(kernel_h) * dilation_h  # (OH, KH)
    cols = (np.arange(out_w) * stride_w)[:, None] + np.arange(kernel_w) * dilation_w  # (OW, KW)
    return padded[:, rows[:, None, :, None], cols[None, :, None, :], :]


def _far_padding(in_size, out_size, kernel, stride, dilation, pad_before):
    needed = (out_size - 1) * stride + (kernel - 1) * dilation + 1 - in_size - pad_before
    return max(needed, 0)


def conv2d_s8(x, weights, bias, out, stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w,
              input_zero_point, output_zero_point, multipliers, shifts, act_min, act_max):
    _, in_h, in_w, _ = x.shape
    _, kernel_h, kernel_w, _ = weights.shape
    out_h, out_w = out.shape[1], out.shape[2]
    padded = _padded_centered(x, pad_top, pad_left,
                              _far_padding(in_h, out_h, kernel_h, stride_h, dilation_h, pad_top),
                              _far_padding(in_w, out_w, kernel_w, stride_w, dilation_w, pad_left),
                              input_zero_point)
    windows = _windows(padded, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w)
    acc = np.einsum("nyxhwc,ohwc->nyxo", windows, weights.astype(np.int64)) + bias.astype(np.int64)
    out[...] = _requantize(acc, multipliers, shifts, output_zero_point, act_min, act_max)


def depthwise_conv2d_s8(x, weights, bias, out, stride_h, stride_w, pad_top, pad_left, dilation_h,
                        dilation_w, depth_multiplier, input_zero_point, output_zero_point, multipliers,
                        shifts, act_min, act_max):
    _, in_h, in_w, _ = x.shape
    _, kernel_h, kernel_w, _ = weights.shape
    out_h, out_w = out.shape[1], out.shape[2]
    padded = _padded_centered(x, pad_top, pad_left,
                              _far_padding(in_h, out_h, kernel_h, stride_h, dilation_h, pad_top),
                              _far_padding(in_w, out_w, kernel_w, stride_w, dilation_w, pad_left),
                              input_zero_point)
    repeated = np.repeat(padded, depth_multiplier, axis=3)  # input channel c feeds c*mult .. c*mult+mult-1
    windows = _windows(repeated, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w, dilation_h, dilation_w)
    acc = np.einsum("nyxhwc,hwc->nyxc", windows, weights[0].astype(np.int64)) + bias.astype(np.int64)
    out[...] = _requantize(acc, multipliers, shifts, output_zero_point, act_min, act_max)


def fully_connected_s8(x, weights, bias, out, input_zero_point, output_zero_point, multipliers, shifts,
                       act_min, act_max, single_rounding=True):
    acc = (x.astype(np.int64) - input_zero_point) @ weights.astype(np.int64).T + bias.astype(np.int64)
    requantize = multiply_by_quantized_multiplier_single_rounding_array if single_rounding \
        else multiply_by_quantized_multiplier_array
    value = requantize(acc, np.asarray(multipliers, np.int64), np.asarray(shifts, np.int64))
    out[...] = np.clip(value + output_zero_point, act_min, act_max).astype(np.int8)


def _pool_windows(x, out, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, fill):
    """Windows of x padded with ``fill`` and a same-shaped validity mask."""
    _, in_h, in_w, _ = x.shape
    out_h, out_w = out.shape[1], out.shape[2]
    extra_h = _far_padding(in_h, out_h, filter_h, stride_h, 1, pad_top)
    extra_w = _far_padding(in_w, out_w, filter_w, stride_w, 1, pad_left)
    pads = ((0, 0), (pad_top, extra_h), (pad_left, extra_w), (0, 0))
    padded = np.pad(x.astype(np.int64), pads, constant_values=fill)
    valid = np.pad(np.ones(x.shape, bool), pads, constant_values=False)
    window = (out_h, out_w, filter_h, filter_w, stride_h, stride_w, 1, 1)
    return _windows(padded, *window), _windows(valid, *window)


def avg_pool2d_s8(x, out, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, act_min, act_max):
    values, valid = _pool_windows(x, out, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, 0)
    total = values.sum(axis=(3, 4))
    count = valid.sum(axis=(3, 4))
    half = count // 2
    magnitude = (np.abs(total) + half) // count  # |total| rounded half up, then the sign restored
    mean = np.where(total > 0, magnitude, -magnitude)
    out[...] = np.clip(mean, act_min, act_max).astype(np.int8)


def max_pool2d_s8(x, out, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, act_min, act_max):
    values, _ = _pool_windows(x, out, filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, -128)
    out[...] = np.clip(values.max(axis=(3, 4)), act_min, act_max).astype(np.int8)


def mean_s8(x, out, input_zero_point, output_zero_point, multiplier, shift):
    count = x.shape[1]
    centered = x.astype(np.int64).sum(axis=1) - input_zero_point * count
    value = multiply_by_quantized_multiplier_array(centered, multiplier, shift) + output_zero_point
    out[...] = np.clip(value, -128, 127).astype(np.int8)


def add_s8(x1, x2, out, input1_zero_point, input2_zero_point, output_zero_point, left_shift,
           multiplier1, shift1, multiplier2, shift2, output_multiplier, output_shift, act_min, act_max):
    lifted1 = wrap_int32_array((x1.astype(np.int64) - input1_zero_point) << left_shift)
    lifted2 = wrap_int32_array((x2.astype(np.int64) - input2_zero_point) << left_shift)
    total = wrap_int32_array(multiply_by_quantized_multiplier_array(lifted1, multiplier1, shift1)
                             + multiply_by_quantized_multiplier_array(lifted2, multiplier2, shift2))
    value = multiply_by_quantized_multiplier_array(total, output_multiplier, output_shift) + output_zero_point
    out[...] = np.clip(value, act_min, act_max).astype(np.int8)


def softmax_s8(x, out, input_multiplier, input_left_shift, diff_min):
    diff = x.astype(np.int64) - x.astype(np.int64).max(axis=1, keepdims=True)
    used = diff >= diff_min
    rescaled = saturating_rounding_doubling_high_mul_array(np.where(used, diff, 0) << input_left_shift,
                                                           input_multiplier)
    exps = exp_on_negative_values_q5_26_array(rescaled)
    sums = np.where(used, rounding_divide_by_pot_array(exps, 12), 0).sum(axis=1, keepdims=True)
    scale, bits_over_unit = reciprocal_q12_array(sums)
    probability = rounding_divide_by_pot_array(saturating_rounding_doubling_high_mul_array(scale, exps),
                                               bits_over_unit + 31 - 8)
    out[...] = np.where(used, np.clip(probability - 128, -128, 127), -128).astype(np.int8)


def pad_s8(x, out, pad_before, pad_value):
    after = [o - i - b for o, i, b in zip(out.shape, x.shape, pad_before)]
    out[...] = np.pad(x, list(zip(pad_before, after)), constant_values=pad_value)


def quantize_f32_to_s8(x, out, scale, zero_point):
    ratio = (x.astype(np.float32) / np.float32(scale)).astype(np.float64)
    rounded = np.sign(ratio) * np.floor(np.abs(ratio) + 0.5)
    rounded = np.where(np.isnan(ratio), 0.0, rounded)
    out[...] = np.clip(rounded + zero_point, -128, 127).astype(np.int8)


def requantize_s8(x, out, input_zero_point, output_zero_point, multiplier, shift):
    value = multiply_by_quantized_multiplier_array(x.astype(np.int64) - input_zero_point, multiplier, shift)
    out[...] = np.clip(value + output_zero_point, -128, 127).astype(np.int8)


def dequantize_s8(x, out, scale, zero_point):
    out[...] = np.float32(scale) * (x.astype(np.int32) - zero_point).astype(np.float32)


def leaky_relu_s8(x, out, input_zero_point, output_zero_point, multiplier_identity, shift_identity,
                            multiplier_alpha, shift_alpha):
    """NumPy twin of leaky_relu_s8."""
    v = x.astype(np.int64) - input_zero_point
    identity = multiply_by_quantized_multiplier_array(v, multiplier_identity, shift_identity)
    negative = multiply_by_quantized_multiplier_array(v, multiplier_alpha, shift_alpha)
    out[...] = np.clip(np.where(v >= 0, identity, negative) + output_zero_point, INT8_MIN, INT8_MAX)

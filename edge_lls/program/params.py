"""Prepared parameters: one small record per int8 operator, filled once when a program is
prepared (interpreter.prepare validates the op and computes them) and read by every
kernel that runs it: the TFLite-literal kernels, the fused float32-GEMM fast path, and
(next) the C export and the firmware. The way TFLite Micro fills OpDataConv in Prepare
for both its reference and its CMSIS-NN kernels.

Field names and meanings are CMSIS-NN's (arm_nnfunctions.h), so a record maps field for
field onto cmsis_nn_conv_params / cmsis_nn_dw_conv_params / cmsis_nn_fc_params,
cmsis_nn_per_channel_quant_params and the cmsis_nn_dims of input, filter and output:

    input_offset    -input zero point (added to every input value before the product)
    output_offset   output zero point (added after requantization)
    multiplier      (C,) int32 Q31 fixed-point multipliers, one per output channel
    shift           (C,) int32 exponents (> 0: left shift), TFLite's convention
    activation      (min, max) clamp in the int8 domain (the fused RELU / RELU6 range)
    *_dims          (n, h, w, c) as cmsis_nn_dims; a fully connected filter is
                    (n = input depth, c = output channels), as CMSIS-NN names it
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Dims:
    """cmsis_nn_dims: batches, height, width, channels."""
    n: int
    h: int
    w: int
    c: int


@dataclass(frozen=True)
class QuantParams:
    """cmsis_nn_per_channel_quant_params."""
    multiplier: np.ndarray      # (C,) int32
    shift: np.ndarray           # (C,) int32


@dataclass(frozen=True)
class ConvParams:
    """CONV_2D as arm_convolve_s8 takes it. filter_dims (Cout, KH, KW, Cin), OHWI."""
    input_offset: int
    output_offset: int
    stride: tuple[int, int]             # (h, w)
    padding: tuple[int, int]            # (top, left): TFLite's SAME puts the odd pixel after
    dilation: tuple[int, int]           # (h, w)
    activation: tuple[int, int]         # (min, max)
    quant: QuantParams
    input_dims: Dims
    filter_dims: Dims
    output_dims: Dims
    bias: np.ndarray                    # (Cout,) int32

    @property
    def taps(self) -> int:
        """Products summed per output: KH * KW * Cin."""
        return self.filter_dims.h * self.filter_dims.w * self.filter_dims.c


@dataclass(frozen=True)
class DepthwiseConvParams:
    """DEPTHWISE_CONV_2D as arm_depthwise_conv_s8 takes it. filter_dims (1, KH, KW, C*ch_mult)."""
    input_offset: int
    output_offset: int
    ch_mult: int
    stride: tuple[int, int]
    padding: tuple[int, int]
    dilation: tuple[int, int]
    activation: tuple[int, int]
    quant: QuantParams
    input_dims: Dims
    filter_dims: Dims
    output_dims: Dims
    bias: np.ndarray                    # (C*ch_mult,) int32


@dataclass(frozen=True)
class FullyConnectedParams:
    """FULLY_CONNECTED as arm_fully_connected_s8 takes it. Weights (out, in)."""
    input_offset: int
    filter_offset: int                  # 0: symmetric weights
    output_offset: int
    activation: tuple[int, int]
    quant: QuantParams                  # per output channel (all equal for per-tensor weights)
    input_dims: Dims                    # (batches, 1, 1, depth)
    filter_dims: Dims                   # (depth, 1, 1, out channels)
    output_dims: Dims                   # (batches, 1, 1, out channels)
    bias: np.ndarray                    # (out,) int32
    single_rounding: bool = True        # LiteRT rounds this op's requantization once;
    #                                     TFLM and CMSIS-NN twice, as for convolutions


def quant_params(multipliers, shifts) -> QuantParams:
    return QuantParams(np.ascontiguousarray(multipliers, np.int32), np.ascontiguousarray(shifts, np.int32))


def nhwc(shape) -> Dims:
    n, h, w, c = (int(d) for d in shape)
    return Dims(n, h, w, c)


@dataclass(frozen=True)
class PoolParams:
    """AVERAGE_POOL_2D / MAX_POOL_2D as arm_avgpool_s8 / arm_max_pool_s8 take them
    (cmsis_nn_pool_params + dims). Input and output share one quantization."""
    stride: tuple[int, int]
    padding: tuple[int, int]            # (top, left)
    filter: tuple[int, int]             # (h, w)
    activation: tuple[int, int]
    input_dims: Dims
    output_dims: Dims


@dataclass(frozen=True)
class SoftmaxParams:
    """SOFTMAX as arm_softmax_s8 takes it: rows of ``depth`` values, output scale 1/256,
    zero point -128."""
    rows: int
    depth: int
    input_multiplier: int               # Q31, beta * input scale with the 5 integer bits
    input_left_shift: int
    diff_min: int                       # differences below this give exp = 0


@dataclass(frozen=True)
class PadParams:
    """PAD of an int8 NHWC tensor (lifted to rank 4) with the real value 0."""
    pad_value: int                      # the output zero point
    before: tuple[int, int, int, int]
    after: tuple[int, int, int, int]
    input_dims: Dims
    output_dims: Dims


@dataclass(frozen=True)
class LeakyReluParams:
    """LEAKY_RELU int8: x >= zp_in scales by the identity multiplier, below it by alpha's."""
    size: int
    input_zero_point: int
    output_zero_point: int
    identity_multiplier: int
    identity_shift: int
    alpha_multiplier: int
    alpha_shift: int


@dataclass(frozen=True)
class ReshapeParams:
    """RESHAPE: the output is the input's bytes (an alias in every arena)."""
    size: int

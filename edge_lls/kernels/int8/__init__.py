"""TFLite-exact int8 kernels (Numba), by variant. Each has a plain-NumPy twin in
edge_lls/kernels/ref/int8.py.

    literal.py    one loop nest per op, as TFLite's reference kernels compute it
    gemm_f32.py   convolution as an exact float32 GEMM and its requantization passes
    program.py    run_program: a run of prepared fast-path layers in one compiled call

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
for the bias.  The interpreter (edge_lls/program/interpreter.py) checks K * 32640 + max|bias| < 2^31 for
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

from .literal import (  # noqa: F401
    _depthwise_accumulate,
    _truncating_div,
    add_s8,
    avg_pool2d_s8,
    conv2d_s8,
    depthwise_conv2d_s8,
    depthwise_conv2d_s8_mirrored,
    dequantize_s8,
    fully_connected_s8,
    leaky_relu_s8,
    max_pool2d_s8,
    mean_s8,
    pad_s8,
    quantize_f32_to_s8,
    requantize_into,
    requantize_s8,
    s8_to_f32,
    softmax_s8,
)
from .gemm_f32 import (  # noqa: F401
    FLOAT32_EXACT_MAX_TAPS,
    _convert_strided,
    _fill_value,
    _requantize_block,
    _requantize_span,
    conv_gemm_f32,
    depthwise3x3_f32,
    depthwise_rows_s8,
    fill_padded_f32,
    im2col_s8_f32,
    pointwise_gemm_f32,
    requantize_gemm,
)
from .program import (  # noqa: F401
    BYTES,
    FLOATS,
    INTS,
    KIND_AVERAGE_POOL,
    KIND_CONV_GEMM,
    KIND_DEPTHWISE_3X3,
    KIND_FULLY_CONNECTED,
    KIND_MAX_POOL,
    KIND_POINTWISE,
    KIND_SOFTMAX,
    LONGS,
    PROGRAM_WIDTH,
    run_program,
)

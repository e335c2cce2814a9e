/*
 * el_kernels.h - the int8 kernels of the firmware, plain reference versions.
 *
 * Each computes what the Python runtime computes in TFLite Micro rounding mode
 * (prepare(..., requantize="tflm"): edge_lls/kernels/int8/literal.py), bit for bit, which is
 * what TFLite Micro's reference kernels and CMSIS-NN compute: int32 accumulation, then per
 * output channel el_multiply_by_quantized_multiplier (two roundings, el_fixedpoint.h), the
 * output zero point, the clamp. tests/test_firmware_kernels.py holds them to it on random
 * layers and on every layer of vww_96_int8.
 *
 * Parameters are the model image's records (el_model_format.h) as they are in the image:
 * CMSIS-NN's fields and names, filled on the host from the Python runtime's prepared records
 * (edge_lls/program/params.py). The caller resolves the record's array offsets and tensor
 * indices to pointers; the kernels never see the image.
 *
 * Layouts:
 *   activations          (N,H,W,C) int8, C fastest (NHWC), the record's input_dims / output_dims
 *   CONV_2D filter       (Cout,KH,KW,Cin) int8 (OHWI), filter_dims
 *   DEPTHWISE filter     (1,KH,KW,C*ch_mult) int8; output channel c*ch_mult+m reads input channel c
 *   FULLY_CONNECTED      weights (out, depth) int8, row-major; filter_dims n = depth, c = out
 *   bias                 (C_out,) int32, or NULL for none
 *   multiplier, shift    (C_out,) int32: Q31 significands and exponents (> 0: left shift)
 *
 * Every kernel checks its record before it writes anything and returns EL_KERNEL_ERR_PARAMS
 * when the record is inconsistent (dims that disagree, a stride < 1, a shift outside [-31, 31],
 * an accumulator that could overflow int32, ...): a record that passes cannot make the kernel
 * overflow an int32 or read outside the volumes its dims describe. Matching those volumes to
 * the buffers passed in is the caller's part: el_model_open checks each tensor's bytes
 * against the tensor's dims and each array against the image, the runner a record's dims
 * against its tensors'.
 *
 * No heap, no libc beyond string.h; C99. Kernels that take an el_context may use
 * el_*_get_buffer_size() bytes of scratch from it; the reference versions need none (0), and
 * then ctx may be NULL.
 */
#ifndef EL_KERNELS_H
#define EL_KERNELS_H

#include <stddef.h>
#include <stdint.h>

#include "el_model_format.h"

/* Scratch memory for one kernel call, as cmsis_nn_context. */
typedef struct {
    void *buf;   /* at least el_*_get_buffer_size() bytes, aligned to 4; NULL when that is 0 */
    size_t size; /* bytes at buf */
} el_context;

typedef enum {
    EL_KERNEL_OK = 0,
    EL_KERNEL_ERR_PARAMS, /* the record is inconsistent; nothing was written */
    EL_KERNEL_ERR_SCRATCH /* ctx holds fewer bytes than el_*_get_buffer_size() asks */
} el_kernel_status;

/* CONV_2D. input (N,H,W,Cin); filter (Cout,KH,KW,Cin); output (N,OH,OW,Cout). */
size_t el_conv2d_s8_get_buffer_size(const el_conv_params *p);
/* 1 when the record (with its bias and shifts) is one the kernel computes exactly; the DSP
 * version runs the same check. */
int el_conv2d_s8_params_ok(const el_conv_params *p, const int32_t *bias, const int32_t *shift);
el_kernel_status el_conv2d_s8(const el_context *ctx, const el_conv_params *p, const int8_t *input,
                              const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                              const int32_t *shift, int8_t *output);

/* DEPTHWISE_CONV_2D. input (N,H,W,C); filter (1,KH,KW,C*ch_mult); output (N,OH,OW,C*ch_mult). */
size_t el_depthwise_conv2d_s8_get_buffer_size(const el_conv_params *p);
/* 1 when the record (with its bias and shifts) is one the kernel computes exactly; the DSP
 * version runs the same check. */
int el_depthwise_conv2d_s8_params_ok(const el_conv_params *p, const int32_t *bias, const int32_t *shift);
el_kernel_status el_depthwise_conv2d_s8(const el_context *ctx, const el_conv_params *p, const int8_t *input,
                                        const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                                        const int32_t *shift, int8_t *output);

/* FULLY_CONNECTED. input (N, depth); weights (out, depth); output (N, out).
 * filter_offset must be 0 (TFLite's int8 weights are symmetric, as the Python runtime requires). */
size_t el_fully_connected_s8_get_buffer_size(const el_fc_params *p);
/* 1 when the record (with its bias and shifts) is one the kernel computes exactly; the DSP
 * version runs the same check. */
int el_fully_connected_s8_params_ok(const el_fc_params *p, const int32_t *bias, const int32_t *shift);
el_kernel_status el_fully_connected_s8(const el_context *ctx, const el_fc_params *p, const int8_t *input,
                                       const int8_t *weights, const int32_t *bias, const int32_t *multiplier,
                                       const int32_t *shift, int8_t *output);

/* AVERAGE_POOL_2D. input (N,H,W,C); output (N,OH,OW,C), the same quantization. The window is
 * clipped to the image and the sum divided by the taps inside, rounding half away from zero. */
size_t el_avg_pool_s8_get_buffer_size(const el_pool_params *p);
el_kernel_status el_avg_pool_s8(const el_context *ctx, const el_pool_params *p, const int8_t *input,
                                int8_t *output);

/* MAX_POOL_2D. input (N,H,W,C); output (N,OH,OW,C), the same quantization. */
size_t el_max_pool_s8_get_buffer_size(const el_pool_params *p);
el_kernel_status el_max_pool_s8(const el_context *ctx, const el_pool_params *p, const int8_t *input,
                                int8_t *output);

/* SOFTMAX over the last axis. input (rows, depth); output (rows, depth) with scale 1/256 and
 * zero point -128, as TFLite requires. */
el_kernel_status el_softmax_s8(const el_softmax_params *p, const int8_t *input, int8_t *output);

/* PAD of a 4-D (N,H,W,C) tensor (lower ranks lifted with leading 1s) with pad_value, the
 * output zero point. input input_dims; output output_dims = input_dims + before + after. */
el_kernel_status el_pad_s8(const el_pad_params *p, const int8_t *input, int8_t *output);

/* LEAKY_RELU, element-wise. input (size,); output (size,). */
el_kernel_status el_leaky_relu_s8(const el_leaky_relu_params *p, const int8_t *input, int8_t *output);

/* ------------------------------------------------------------------------------------------
 * Record checks shared by the kernels (each returns 1 when the property holds).
 */

/* The largest |(x + input_offset) * w| of two int8 values with input_offset in [-127, 128]:
 * |x + input_offset| <= 255 and |w| <= 128. */
#define EL_KERNEL_MAX_PRODUCT (255 * 128)

static inline int32_t el_min_i32(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

static inline int32_t el_max_i32(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

/* Every dimension >= 1 and n*h*w*c <= INT32_MAX, so every element index fits an int32_t.
 * Each partial product is checked before the next multiply: it stays below 2^62. */
static inline int el_kernel_dims_ok(const el_dims *d)
{
    int64_t volume = 1;
    const int32_t dims[4] = {d->n, d->h, d->w, d->c};
    int i;
    for (i = 0; i < 4; ++i) {
        if (dims[i] < 1) {
            return 0;
        }
        volume *= dims[i];
        if (volume > INT32_MAX) {
            return 0;
        }
    }
    return 1;
}

/* One axis of a sliding window: stride and dilation >= 1, pad >= 0, and one past the farthest
 * tap, (out - 1) * stride + (kernel - 1) * dilation + 1, fits an int32_t. Then every input
 * coordinate o * stride - pad + k * dilation a kernel forms, and a window's exclusive end,
 * lies in [-pad, INT32_MAX]: no overflow. */
static inline int el_kernel_window_ok(int32_t out, int32_t stride, int32_t kernel, int32_t dilation, int32_t pad)
{
    if (out < 1 || kernel < 1 || stride < 1 || dilation < 1 || pad < 0) {
        return 0;
    }
    return (int64_t)(out - 1) * stride + (int64_t)(kernel - 1) * dilation < INT32_MAX;
}

/* An int8 clamp range: -128 <= act_min <= act_max <= 127. */
static inline int el_kernel_range_ok(int32_t act_min, int32_t act_max)
{
    return act_min >= INT8_MIN && act_min <= act_max && act_max <= INT8_MAX;
}

/* The offsets of an int8 tensor: input_offset = -zero point in [-127, 128], an output zero
 * point in [-128, 127]. */
static inline int el_kernel_offsets_ok(int32_t input_offset, int32_t output_offset)
{
    return input_offset >= -INT8_MAX && input_offset <= -INT8_MIN && output_offset >= INT8_MIN &&
           output_offset <= INT8_MAX;
}

/* Every shift in [-31, 31], the domain of el_multiply_by_quantized_multiplier (TFLite's
 * QuantizeMultiplier gives exponents in [-31, 30] for every representable scale). */
static inline int el_kernel_shifts_ok(const int32_t *shift, int32_t channels)
{
    int32_t c;
    for (c = 0; c < channels; ++c) {
        if (shift[c] < -31 || shift[c] > 31) {
            return 0;
        }
    }
    return 1;
}

/* The int32 accumulator bias + sum of `taps` products cannot overflow: every product is at
 * most EL_KERNEL_MAX_PRODUCT in magnitude, so |acc| <= taps * 32640 + max|bias| and that must
 * stay below 2^31 (the rule the Python runtime applies when it prepares the layer). With
 * taps <= INT32_MAX the product is below 2^46: exact in int64_t. */
static inline int el_kernel_accumulator_ok(int32_t taps, const int32_t *bias, int32_t channels)
{
    int64_t worst = 0;
    int32_t c;
    if (bias != NULL) {
        for (c = 0; c < channels; ++c) {
            int64_t magnitude = bias[c] < 0 ? -(int64_t)bias[c] : (int64_t)bias[c];
            worst = magnitude > worst ? magnitude : worst;
        }
    }
    return (int64_t)taps * EL_KERNEL_MAX_PRODUCT + worst <= INT32_MAX;
}

#endif /* EL_KERNELS_H */

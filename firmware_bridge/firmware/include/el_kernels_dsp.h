/*
 * el_kernels_dsp.h - the hot int8 kernels again, for cores with the DSP extension (Cortex-M4,
 * M7: SMLAD, SXTB16, SXTAB16 through ACLE's arm_acle.h).
 *
 * The same signatures and the same results as the plain kernels of el_kernels.h, byte for
 * byte: the record checks are the plain kernels' (the static inline el_kernel_*_ok of
 * el_kernels.h, combined as the plain kernel combines them), the requantization is the shared
 * el_requantize_s8 of el_fixedpoint.h, and the accumulation is exact integer arithmetic, so
 * the order in which the DSP kernels add the products cannot change an int32 sum (see "Why
 * SXTB16 + SMLAD is exact" below). A record the checks refuse, or a layer a DSP kernel has no
 * fast path for, goes to the plain kernel, which refuses it (EL_KERNEL_ERR_PARAMS, nothing
 * written) or computes it. tests/test_kernels_dsp.c holds them to the plain kernels under
 * QEMU on both boards (tests/test_firmware_dsp.py), and measures them.
 *
 * On a core without the DSP extension (or on the host) the names still exist: static inline
 * forwarders to the plain kernels, so a caller can use the _dsp names everywhere.
 *
 * Scratch: none from ctx, as the plain kernels (ctx may be NULL); the fastest paths keep their
 * buffers on the stack (CONV_2D's weight tile, with the gathered windows for a window, at most
 * 1,104 B; the depthwise kernel's three row buffers, 576 B, and its weights and job, 308 B),
 * never both at once.
 *
 * Why SXTB16 + SMLAD is exact
 * ---------------------------
 * A 32-bit word of four int8 values b0..b3 (b0 in bits 7:0, little-endian) is split into two
 * words of two int16 lanes each (lane 0 = bits 15:0, lane 1 = bits 31:16):
 *     SXTB16(v)          = (sext b0, sext b2)      the even bytes
 *     SXTB16(v ROR 8)    = (sext b1, sext b3)      the odd bytes
 * and SXTAB16(off2, v) does the same while adding the input offset to each lane, in 16-bit
 * lane arithmetic: x + input_offset with x in [-128, 127] and input_offset in [-127, 128]
 * (el_kernel_offsets_ok) lies in [-255, 255], well inside int16, so the lane holds the exact
 * value. The weights are split the same way, so lane k of the input word and lane k of the
 * weight word belong to the same tap: inputs (0,2) pair with weights (0,2), (1,3) with (1,3).
 * SMLAD(a, b, acc) = acc + a.lane0 * b.lane0 + a.lane1 * b.lane1: each product is at most
 * 255 * 128 = EL_KERNEL_MAX_PRODUCT in magnitude (|w| <= 128 for int8), and it is formed
 * exactly (16 x 16 -> 32 bits). The sum is an int32 addition; el_kernel_accumulator_ok proved
 * |bias| + taps * EL_KERNEL_MAX_PRODUCT <= INT32_MAX, and every partial sum the DSP kernels
 * form, in whatever order, is the bias plus a subset of the taps' products, so it is bounded
 * by the same number: no intermediate wraps (SMLAD would only set the Q flag, which nothing
 * reads), and the final int32 is the plain kernel's sum. Bytes past a multiple of four are
 * added one at a time, as in the plain kernel. The depthwise kernel, whose sums must not mix
 * channels, takes the lanes' products one at a time with SMLABB / SMLATT (acc + bottom *
 * bottom, acc + top * top): the same exact products, the same bound.
 */
#ifndef EL_KERNELS_DSP_H
#define EL_KERNELS_DSP_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "el_kernels.h"

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)

#define EL_KERNELS_DSP 1 /* the _dsp kernels are the DSP versions, not forwarders */

/* CONV_2D, as el_conv2d_s8. A layer with the output offset -128, the clamp all of int8,
 * right shifts and Cout a multiple of 4 (a ReLU layer of MobileNet / VWW), with 1x1 taps of
 * whole words (Cin a multiple of 4, at most 128) or a window of at most 32 taps: four output
 * channels of one pixel at a time against weights split once per layer ("quads", 13
 * instructions per 16 MACs, el_conv2d_s8_dsp.c). Others: a 1x1 stride-1 unpadded filter two
 * pixels x two output channels at a time (the input offset folded into the start value where
 * |bias| + 32768 * taps fits an int32), others two output channels at a time, one dot
 * product per window row inside the image. Requantization constants per channel once per
 * layer (el_dsp_internal.h). */
size_t el_conv2d_s8_dsp_get_buffer_size(const el_conv_params *p);
el_kernel_status el_conv2d_s8_dsp(const el_context *ctx, const el_conv_params *p, const int8_t *input,
                                  const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                                  const int32_t *shift, int8_t *output);

/* DEPTHWISE_CONV_2D, as el_depthwise_conv2d_s8 (ch_mult 1: four channels per split word,
 * SMLABB / SMLATT into one accumulator per channel; a 3x3 window with dilation 1 and the short
 * requantization over three zero-padded row buffers of split input ("rings", every window
 * nine unrolled taps, no border case), other windows clipped to the image; other multipliers
 * go to the plain kernel). */
size_t el_depthwise_conv2d_s8_dsp_get_buffer_size(const el_conv_params *p);
el_kernel_status el_depthwise_conv2d_s8_dsp(const el_context *ctx, const el_conv_params *p, const int8_t *input,
                                            const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                                            const int32_t *shift, int8_t *output);

/* FULLY_CONNECTED, as el_fully_connected_s8 (two outputs at a time). */
size_t el_fully_connected_s8_dsp_get_buffer_size(const el_fc_params *p);
el_kernel_status el_fully_connected_s8_dsp(const el_context *ctx, const el_fc_params *p, const int8_t *input,
                                           const int8_t *weights, const int32_t *bias, const int32_t *multiplier,
                                           const int32_t *shift, int8_t *output);

/* ------------------------------------------------------------------------------------------
 * Helpers of the DSP kernels (not an interface).
 */
#include <arm_acle.h>

/* Four int8 values as one word, at any alignment (an unaligned LDR: Cortex-M4/M7 allow it
 * and the boards leave CCR.UNALIGN_TRP off). */
static inline int32_t el_dsp_load4(const int8_t *p)
{
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* The input offset in both int16 lanes (16-bit two's complement; in [-127, 128]). */
static inline int32_t el_dsp_offset2(int32_t input_offset)
{
    int32_t v;
    const uint32_t lanes = (uint32_t)(uint16_t)input_offset * 0x00010001u;
    memcpy(&v, &lanes, sizeof v);
    return v;
}

/* SXTB16 / SXTAB16 with the operand rotated right by 8: the odd bytes (1, 3). GCC 12's
 * arm_acle.h has no __ror, and it does not fold a C rotate into the instruction's ROR #8
 * field (it emits a separate MOV ROR), so these two are spelled in inline assembly. */
static inline int32_t el_dsp_sxtb16_ror8(int32_t v)
{
    int32_t r;
    __asm__("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(v));
    return r;
}

static inline int32_t el_dsp_sxtab16_ror8(int32_t a, int32_t v)
{
    int32_t r;
    __asm__("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(v));
    return r;
}

/* acc + the sum over i < n of (x[i] + input_offset) * w[i]: one row of weights. The loops
 * walk pointers and count blocks of four down, which keeps GCC's -Os code free of spills. */
static inline int32_t el_dsp_dot1(const int8_t *x, const int8_t *w, int32_t n, int32_t input_offset,
                                  int32_t off2, int32_t acc)
{
    int32_t blocks = n >> 2, rest = n & 3;
    for (; blocks > 0; --blocks) {
        const int32_t xv = el_dsp_load4(x), wv = el_dsp_load4(w);
        acc = __smlad(__sxtab16(off2, xv), __sxtb16(wv), acc);              /* bytes 0, 2 */
        acc = __smlad(el_dsp_sxtab16_ror8(off2, xv), el_dsp_sxtb16_ror8(wv), acc); /* bytes 1, 3 */
        x += 4;
        w += 4;
    }
    for (; rest > 0; --rest) {
        acc += ((int32_t)*x++ + input_offset) * (int32_t)*w++;
    }
    return acc;
}

/* The same for two rows of weights, w and w + w1_offset, against one x: each input word is
 * split once for both rows. */
static inline void el_dsp_dot2(const int8_t *x, const int8_t *w, int32_t w1_offset, int32_t n,
                               int32_t input_offset, int32_t off2, int32_t *acc0, int32_t *acc1)
{
    int32_t a0 = *acc0, a1 = *acc1, blocks = n >> 2, rest = n & 3;
    for (; blocks > 0; --blocks) {
        const int32_t xv = el_dsp_load4(x);
        const int32_t xe = __sxtab16(off2, xv), xo = el_dsp_sxtab16_ror8(off2, xv);
        int32_t v = el_dsp_load4(w);
        a0 = __smlad(xe, __sxtb16(v), a0);
        a0 = __smlad(xo, el_dsp_sxtb16_ror8(v), a0);
        v = el_dsp_load4(w + w1_offset);
        a1 = __smlad(xe, __sxtb16(v), a1);
        a1 = __smlad(xo, el_dsp_sxtb16_ror8(v), a1);
        x += 4;
        w += 4;
    }
    for (; rest > 0; --rest) {
        const int32_t xi = (int32_t)*x++ + input_offset;
        a0 += xi * (int32_t)w[0];
        a1 += xi * (int32_t)w[w1_offset];
        ++w;
    }
    *acc0 = a0;
    *acc1 = a1;
}

#else /* no DSP extension: the plain kernels under the _dsp names */

static inline size_t el_conv2d_s8_dsp_get_buffer_size(const el_conv_params *p)
{
    return el_conv2d_s8_get_buffer_size(p);
}
static inline el_kernel_status el_conv2d_s8_dsp(const el_context *ctx, const el_conv_params *p,
                                                const int8_t *input, const int8_t *filter, const int32_t *bias,
                                                const int32_t *multiplier, const int32_t *shift, int8_t *output)
{
    return el_conv2d_s8(ctx, p, input, filter, bias, multiplier, shift, output);
}
static inline size_t el_depthwise_conv2d_s8_dsp_get_buffer_size(const el_conv_params *p)
{
    return el_depthwise_conv2d_s8_get_buffer_size(p);
}
static inline el_kernel_status el_depthwise_conv2d_s8_dsp(const el_context *ctx, const el_conv_params *p,
                                                          const int8_t *input, const int8_t *filter,
                                                          const int32_t *bias, const int32_t *multiplier,
                                                          const int32_t *shift, int8_t *output)
{
    return el_depthwise_conv2d_s8(ctx, p, input, filter, bias, multiplier, shift, output);
}
static inline size_t el_fully_connected_s8_dsp_get_buffer_size(const el_fc_params *p)
{
    return el_fully_connected_s8_get_buffer_size(p);
}
static inline el_kernel_status el_fully_connected_s8_dsp(const el_context *ctx, const el_fc_params *p,
                                                         const int8_t *input, const int8_t *weights,
                                                         const int32_t *bias, const int32_t *multiplier,
                                                         const int32_t *shift, int8_t *output)
{
    return el_fully_connected_s8(ctx, p, input, weights, bias, multiplier, shift, output);
}

#endif /* __ARM_FEATURE_DSP */

#endif /* EL_KERNELS_DSP_H */

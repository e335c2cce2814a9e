/* el_conv2d_s8_dsp.c - CONV_2D, int8, with the DSP extension (SXTB16 / SXTAB16 / SMLAD):
 * the results of el_conv2d_s8 byte for byte (el_kernels_dsp.h says why the sums are exact). */
#include "el_kernels_dsp.h"

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)

#include "el_dsp_internal.h"

size_t el_conv2d_s8_dsp_get_buffer_size(const el_conv_params *p)
{
    (void)p; /* the accumulators are registers */
    return 0u;
}

/* Two pixels (x, x + stride) by two filter rows (w, w + stride), `blocks` words of four
 * taps: acc[2 * pixel + filter] += x * w, the input taken as it is (the input offset is in the
 * accumulators already: conv_1x1). Each split input word serves both rows, each split weight
 * word both pixels: 8 SMLAD per 4 loads and 8 extends. Kept out of line so that its 14 live
 * values get the registers to themselves, and built at -O2: GCC 12's -Os allocation of this
 * loop spills three values per iteration (26 instructions per 16 MACs), -O2's one (24). */
static void __attribute__((noinline, optimize("O2"))) dot_2x2(const int8_t *x, const int8_t *w, int32_t stride, int32_t blocks,
                                              int32_t *acc)
{
    int32_t a00 = acc[0], a01 = acc[1], a10 = acc[2], a11 = acc[3];
    for (; blocks > 0; --blocks) {
        const int32_t x1 = el_dsp_load4(x + stride), x0 = el_dsp_load4(x);
        const int32_t x0e = __sxtb16(x0), x0o = el_dsp_sxtb16_ror8(x0);
        const int32_t x1e = __sxtb16(x1), x1o = el_dsp_sxtb16_ror8(x1);
        int32_t v = el_dsp_load4(w), ve = __sxtb16(v);
        a00 = __smlad(x0e, ve, a00);
        a10 = __smlad(x1e, ve, a10);
        v = el_dsp_sxtb16_ror8(v);
        a00 = __smlad(x0o, v, a00);
        a10 = __smlad(x1o, v, a10);
        v = el_dsp_load4(w + stride);
        ve = __sxtb16(v);
        a01 = __smlad(x0e, ve, a01);
        a11 = __smlad(x1e, ve, a11);
        v = el_dsp_sxtb16_ror8(v);
        a01 = __smlad(x0o, v, a01);
        a11 = __smlad(x1o, v, a11);
        x += 4;
        w += 4;
    }
    acc[0] = a00;
    acc[1] = a01;
    acc[2] = a10;
    acc[3] = a11;
}

/* The sum of n int8 weights. */
static int32_t weight_sum(const int8_t *w, int32_t n)
{
    const int32_t ones = 0x00010001;
    int32_t sum = 0, blocks;
    for (blocks = n >> 2; blocks > 0; --blocks) {
        const int32_t v = el_dsp_load4(w);
        sum = __smlad(__sxtb16(v), ones, sum);
        sum = __smlad(el_dsp_sxtb16_ror8(v), ones, sum);
        w += 4;
    }
    for (n &= 3; n > 0; --n) {
        sum += *w++;
    }
    return sum;
}

/* A 1x1 filter, stride 1, no padding, the output the input's size: output pixel q is the
 * Cout dot products of input pixel q (N*H*W rows of Cin) with the Cout filter rows.
 *
 * Two filters by two pixels at a time (dot_2x2). The input offset is taken out of the
 * products: sum (x + off) * w = sum x * w + off * sum w, the second term folded into the
 * filter's starting value once per layer. Exact integer arithmetic, and no partial sum can
 * wrap: |bias + off * sum w| <= |bias| + 128 * 128 * taps, and each product x * w added after
 * it is at most 128 * 128, so every partial sum is within |bias| + 32768 * taps, which
 * hoisted_ok() checks against INT32_MAX (the record check proves only |bias| + 32640 * taps;
 * a layer between the two takes conv_1x1_offset, the same loops with the offset in each
 * product). The filter pair is the outer loop, so that its requantization constants and
 * weight sums are worked out once per layer. An odd last pixel takes el_dsp_dot2, an odd last
 * filter el_dsp_dot1, both with the offset in the products and the record's bias. */
static int hoisted_ok(int32_t taps, const int32_t *bias, int32_t channels)
{
    int64_t worst = 0;
    int32_t c;
    if (bias != NULL) {
        for (c = 0; c < channels; ++c) {
            const int64_t magnitude = bias[c] < 0 ? -(int64_t)bias[c] : (int64_t)bias[c];
            worst = magnitude > worst ? magnitude : worst;
        }
    }
    return (int64_t)taps * (2 * 128 * 128) + worst <= INT32_MAX;
}

static void conv_1x1(const el_conv_params *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                     const int32_t *multiplier, const int32_t *shift, int8_t *output)
{
    const int32_t in_c = p->input_dims.c, out_c = p->output_dims.c;
    const int32_t pixels = p->input_dims.n * p->input_dims.h * p->input_dims.w; /* <= the input's volume */
    const int32_t off = p->input_offset, off2 = el_dsp_offset2(off);
    const int32_t out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t blocks = in_c >> 2;
    const int hoist = hoisted_ok(in_c, bias, out_c);
    int32_t q, co;
    for (co = 0; co + 2 <= out_c; co += 2) {
        const int8_t *const f0 = filter + co * in_c;
        const int32_t b0 = bias != NULL ? bias[co] : 0, b1 = bias != NULL ? bias[co + 1] : 0;
        /* the starting values of dot_2x2's sums: the bias plus the input offset's share */
        const int32_t h0 = hoist ? b0 + off * weight_sum(f0, in_c) : 0;
        const int32_t h1 = hoist ? b1 + off * weight_sum(f0 + in_c, in_c) : 0;
        el_dsp_rq rq0, rq1;
        int8_t *out = output + co;
        el_dsp_rq_prepare(&rq0, multiplier[co], shift[co]);
        el_dsp_rq_prepare(&rq1, multiplier[co + 1], shift[co + 1]);
        for (q = 0; q + 2 <= pixels; q += 2) {
            const int8_t *x = input + q * in_c;
            int32_t acc[4];
            if (hoist) {
                int32_t k;
                const int8_t *w = f0 + 4 * blocks;
                acc[0] = acc[2] = h0;
                acc[1] = acc[3] = h1;
                dot_2x2(x, f0, in_c, blocks, acc);
                for (k = 4 * blocks; k < in_c; ++k, ++w) { /* the last 1..3 taps */
                    acc[0] += (int32_t)x[k] * w[0];
                    acc[1] += (int32_t)x[k] * w[in_c];
                    acc[2] += (int32_t)x[k + in_c] * w[0];
                    acc[3] += (int32_t)x[k + in_c] * w[in_c];
                }
            } else {
                acc[0] = acc[2] = b0;
                acc[1] = acc[3] = b1;
                el_dsp_dot2(x, f0, in_c, in_c, off, off2, &acc[0], &acc[1]);
                el_dsp_dot2(x + in_c, f0, in_c, in_c, off, off2, &acc[2], &acc[3]);
            }
            out[0] = el_dsp_requantize(acc[0], &rq0, out_off, act_min, act_max);
            out[1] = el_dsp_requantize(acc[1], &rq1, out_off, act_min, act_max);
            out[out_c] = el_dsp_requantize(acc[2], &rq0, out_off, act_min, act_max);
            out[out_c + 1] = el_dsp_requantize(acc[3], &rq1, out_off, act_min, act_max);
            out += 2 * out_c;
        }
        if (q < pixels) { /* an odd pixel count: the last pixel alone */
            int32_t a0 = b0, a1 = b1;
            el_dsp_dot2(input + q * in_c, f0, in_c, in_c, off, off2, &a0, &a1);
            out[0] = el_dsp_requantize(a0, &rq0, out_off, act_min, act_max);
            out[1] = el_dsp_requantize(a1, &rq1, out_off, act_min, act_max);
        }
    }
    if (co < out_c) { /* an odd channel count: the last filter alone */
        el_dsp_rq rq;
        el_dsp_rq_prepare(&rq, multiplier[co], shift[co]);
        for (q = 0; q < pixels; ++q) {
            const int32_t acc =
                el_dsp_dot1(input + q * in_c, filter + co * in_c, in_c, off, off2, bias != NULL ? bias[co] : 0);
            output[q * out_c + co] = el_dsp_requantize(acc, &rq, out_off, act_min, act_max);
        }
    }
}

/* Any window: two output channels at a time (the outer loop, so that their requantization
 * constants are worked out once per layer), then every output pixel. With dilation_w 1 the
 * taps of one window row that lie inside the image are contiguous in both the input (NHWC)
 * and the filter (OHWI), kx_lo..kx_hi times Cin bytes, so each row is one dot product;
 * otherwise one per tap. Taps outside the image are skipped, as the plain kernel skips them. */
static void conv_general(const el_conv_params *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                         const int32_t *multiplier, const int32_t *shift, int8_t *output)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, in_c = p->input_dims.c;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w, out_c = p->output_dims.c;
    const int32_t filter_size = kernel_h * kernel_w * in_c;
    const int32_t off = p->input_offset, off2 = el_dsp_offset2(off);
    const int32_t out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    int32_t n, oy, ox, co, ky, kx;
    for (co = 0; co < out_c; co += 2) {
        const int8_t *const f0 = filter + co * filter_size;
        /* an odd last channel is paired with itself; its second sum is dropped */
        const int32_t co1 = co + 1 < out_c ? co + 1 : co;
        const int32_t f1 = co + 1 < out_c ? filter_size : 0;
        const int32_t b0 = bias != NULL ? bias[co] : 0, b1 = bias != NULL ? bias[co1] : 0;
        el_dsp_rq rq0, rq1;
        el_dsp_rq_prepare(&rq0, multiplier[co], shift[co]);
        el_dsp_rq_prepare(&rq1, multiplier[co1], shift[co1]);
        for (n = 0; n < p->input_dims.n; ++n) {
            for (oy = 0; oy < out_h; ++oy) {
                const int32_t y0 = oy * p->stride_h - p->pad_h;
                for (ox = 0; ox < out_w; ++ox) {
                    const int32_t x0 = ox * p->stride_w - p->pad_w;
                    int8_t *out = output + ((n * out_h + oy) * out_w + ox) * out_c + co;
                    /* dilation_w 1: the window's columns inside the image, [kx_lo, kx_hi) (int64: a
                     * large pad makes in_w - x0 exceed INT32_MAX). */
                    const int64_t lo = x0 < 0 ? -(int64_t)x0 : 0;
                    const int64_t hi = (int64_t)in_w - x0 < kernel_w ? (int64_t)in_w - x0 : kernel_w;
                    const int32_t kx_lo = (int32_t)(lo < kernel_w ? lo : kernel_w);
                    const int32_t span = hi > kx_lo ? (int32_t)(hi - kx_lo) * in_c : 0;
                    int32_t a0 = b0, a1 = b1;
                    for (ky = 0; ky < kernel_h; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation_h;
                        const int8_t *row;
                        if (iy < 0 || iy >= in_h) {
                            continue;
                        }
                        row = input + (n * in_h + iy) * in_w * in_c;
                        if (p->dilation_w == 1) {
                            if (span > 0) {
                                const int32_t w_at = (ky * kernel_w + kx_lo) * in_c;
                                el_dsp_dot2(row + (x0 + kx_lo) * in_c, f0 + w_at, f1, span, off, off2, &a0, &a1);
                            }
                            continue;
                        }
                        for (kx = 0; kx < kernel_w; ++kx) {
                            const int32_t ix = x0 + kx * p->dilation_w;
                            const int32_t w_at = (ky * kernel_w + kx) * in_c;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            el_dsp_dot2(row + ix * in_c, f0 + w_at, f1, in_c, off, off2, &a0, &a1);
                        }
                    }
                    out[0] = el_dsp_requantize(a0, &rq0, out_off, act_min, act_max);
                    if (f1 != 0) {
                        out[1] = el_dsp_requantize(a1, &rq1, out_off, act_min, act_max);
                    }
                }
            }
        }
    }
}

el_kernel_status el_conv2d_s8_dsp(const el_context *ctx, const el_conv_params *p, const int8_t *input,
                                  const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                                  const int32_t *shift, int8_t *output)
{
    if (!el_conv2d_s8_params_ok(p, bias, shift) || !el_dsp_rq_layer_ok(multiplier, p->output_dims.c)) {
        /* refused (the plain kernel says so), or a multiplier of INT32_MIN (el_dsp_internal.h) */
        return el_conv2d_s8(ctx, p, input, filter, bias, multiplier, shift, output);
    }
    if (p->filter_dims.h == 1 && p->filter_dims.w == 1 && p->stride_h == 1 && p->stride_w == 1 && p->pad_h == 0 &&
        p->pad_w == 0 && p->output_dims.h == p->input_dims.h && p->output_dims.w == p->input_dims.w) {
        conv_1x1(p, input, filter, bias, multiplier, shift, output);
    } else {
        conv_general(p, input, filter, bias, multiplier, shift, output);
    }
    return EL_KERNEL_OK;
}

#else
typedef int el_conv2d_s8_dsp_unavailable; /* no DSP extension: el_kernels_dsp.h forwards to el_conv2d_s8 */
#endif

/* el_conv2d_s8_dsp.c - CONV_2D, int8, with the DSP extension (SXTB16 / SXTAB16 / SMLAD):
 * the results of el_conv2d_s8 byte for byte (el_kernels_dsp.h says why the sums are exact). */
#include "el_kernels_dsp.h"

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)

#include "el_fixedpoint.h"

size_t el_conv2d_s8_dsp_get_buffer_size(const el_conv_params *p)
{
    (void)p; /* the accumulators are registers */
    return 0u;
}

static int8_t requantize(const el_conv_params *p, int32_t acc, const int32_t *multiplier, const int32_t *shift,
                         int32_t co)
{
    return el_requantize_s8(acc, multiplier[co], shift[co], p->output_offset, p->act_min, p->act_max);
}

/* A 1x1 filter, stride 1, no padding, the output the input's size: output pixel q is the
 * Cout dot products of input pixel q (N*H*W rows of Cin) with the Cout filter rows, two
 * filters at a time so that each split input word serves both. (Four at a time measured 2%
 * fewer instructions for 400 more bytes: GCC -Os spills in that loop.) */
static void conv_1x1(const el_conv_params *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                     const int32_t *multiplier, const int32_t *shift, int8_t *output)
{
    const int32_t in_c = p->input_dims.c, out_c = p->output_dims.c;
    const int32_t pixels = p->input_dims.n * p->input_dims.h * p->input_dims.w; /* <= the input's volume */
    const int32_t off = p->input_offset, off2 = el_dsp_offset2(off);
    int32_t q, co;
    for (q = 0; q < pixels; ++q) {
        const int8_t *x = input + q * in_c;
        int8_t *out = output + q * out_c;
        for (co = 0; co + 2 <= out_c; co += 2) {
            int32_t a0 = bias != NULL ? bias[co] : 0, a1 = bias != NULL ? bias[co + 1] : 0;
            el_dsp_dot2(x, filter + co * in_c, in_c, in_c, off, off2, &a0, &a1);
            out[co] = requantize(p, a0, multiplier, shift, co);
            out[co + 1] = requantize(p, a1, multiplier, shift, co + 1);
        }
        if (co < out_c) { /* an odd channel count: the last filter alone */
            const int32_t acc = el_dsp_dot1(x, filter + co * in_c, in_c, off, off2, bias != NULL ? bias[co] : 0);
            out[co] = requantize(p, acc, multiplier, shift, co);
        }
    }
}

/* Any window: per output pixel, two output channels at a time. With dilation_w 1 the taps of
 * one window row that lie inside the image are contiguous in both the input (NHWC) and the
 * filter (OHWI), kx_lo..kx_hi times Cin bytes, so each row is one dot product; otherwise one
 * per tap. Taps outside the image are skipped, as the plain kernel skips them. */
static void conv_general(const el_conv_params *p, const int8_t *input, const int8_t *filter, const int32_t *bias,
                         const int32_t *multiplier, const int32_t *shift, int8_t *output)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, in_c = p->input_dims.c;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w, out_c = p->output_dims.c;
    const int32_t filter_size = kernel_h * kernel_w * in_c;
    const int32_t off = p->input_offset, off2 = el_dsp_offset2(off);
    int32_t n, oy, ox, co, ky, kx;
    for (n = 0; n < p->input_dims.n; ++n) {
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                int8_t *out = output + ((n * out_h + oy) * out_w + ox) * out_c;
                /* dilation_w 1: the window's columns inside the image, [kx_lo, kx_hi) (int64: a
                 * large pad makes in_w - x0 exceed INT32_MAX). */
                const int64_t lo = x0 < 0 ? -(int64_t)x0 : 0;
                const int64_t hi = (int64_t)in_w - x0 < kernel_w ? (int64_t)in_w - x0 : kernel_w;
                const int32_t kx_lo = (int32_t)(lo < kernel_w ? lo : kernel_w);
                const int32_t span = hi > kx_lo ? (int32_t)(hi - kx_lo) * in_c : 0;
                for (co = 0; co < out_c; co += 2) {
                    const int8_t *f0 = filter + co * filter_size;
                    /* an odd last channel is paired with itself; its second sum is dropped */
                    const int32_t f1 = co + 1 < out_c ? filter_size : 0;
                    int32_t a0 = bias != NULL ? bias[co] : 0;
                    int32_t a1 = bias != NULL ? bias[co + 1 < out_c ? co + 1 : co] : 0;
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
                    out[co] = requantize(p, a0, multiplier, shift, co);
                    if (co + 1 < out_c) {
                        out[co + 1] = requantize(p, a1, multiplier, shift, co + 1);
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
    if (!el_conv2d_s8_params_ok(p, bias, shift)) {
        return el_conv2d_s8(ctx, p, input, filter, bias, multiplier, shift, output); /* it refuses the record */
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

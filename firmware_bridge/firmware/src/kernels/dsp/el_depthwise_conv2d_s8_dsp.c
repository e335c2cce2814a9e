/* el_depthwise_conv2d_s8_dsp.c - DEPTHWISE_CONV_2D, int8, with the DSP extension: the results
 * of el_depthwise_conv2d_s8 byte for byte (el_kernels_dsp.h says why the lanes are exact).
 *
 * A depthwise output sums the taps of one channel, so SMLAD, which adds its two lanes into one
 * accumulator, would mix the two channels a split word holds. Here the word of four channels
 * is split as elsewhere (SXTAB16 adds the input offset: lanes (c0, c2); with ROR 8: (c1, c3);
 * the filter word the same way, so lanes pair channel with channel), and SMLABB / SMLATT
 * (acc + bottom * bottom, acc + top * top: the same exact 16 x 16 -> 32 products) add each
 * lane's product into its own channel's accumulator: four channels per tap from two loads and
 * four extends. Channel multiplier 1 only (MobileNet's and VWW's depthwise layers); other
 * multipliers go to the plain kernel. */
#include "el_kernels_dsp.h"

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)

#include "el_dsp_internal.h"

size_t el_depthwise_conv2d_s8_dsp_get_buffer_size(const el_conv_params *p)
{
    (void)p;
    return 0u;
}

/* Four channels of one tap: a[k] += (x[k] + off) * w[k], k = 0..3. */
static inline __attribute__((always_inline)) void tap4(const int8_t *x, const int8_t *w, int32_t off2, int32_t *a)
{
    const int32_t xv = el_dsp_load4(x), wv = el_dsp_load4(w);
    const int32_t xe = __sxtab16(off2, xv);            /* (x0 + off, x2 + off) */
    const int32_t xo = el_dsp_sxtab16_ror8(off2, xv);  /* (x1 + off, x3 + off) */
    const int32_t we = __sxtb16(wv), wo = el_dsp_sxtb16_ror8(wv);
    a[0] = __smlabb(xe, we, a[0]);
    a[1] = __smlabb(xo, wo, a[1]);
    a[2] = __smlatt(xe, we, a[2]);
    a[3] = __smlatt(xo, wo, a[3]);
}

/* Channel multiplier 1, channels c..c+3 of every output pixel. The group of four is the outer
 * loop, so that its requantization constants are worked out once per layer; a 3x3 window
 * with dilation 1 that lies inside the image (all of them but the border's) is nine unrolled
 * taps, any other window the tap loop of the plain kernel, skipping the taps outside. */
static void depthwise_4ch(const el_conv_params *p, int32_t c, const int8_t *input, const int8_t *filter,
                          const int32_t *bias, const int32_t *multiplier, const int32_t *shift, int8_t *output)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, channels = p->input_dims.c;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w;
    const int32_t off2 = el_dsp_offset2(p->input_offset);
    const int32_t out_off = p->output_offset, act_min = p->act_min, act_max = p->act_max;
    const int32_t row = in_w * channels; /* one input row; < the input's volume */
    const int fast3x3 = kernel_h == 3 && kernel_w == 3 && p->dilation_h == 1 && p->dilation_w == 1;
    const int8_t *const f = filter + c;
    el_dsp_rq rq[4];
    int32_t b[4], k, n, oy, ox, ky, kx;
    for (k = 0; k < 4; ++k) {
        el_dsp_rq_prepare(&rq[k], multiplier[c + k], shift[c + k]);
        b[k] = bias != NULL ? bias[c + k] : 0;
    }
    for (n = 0; n < p->input_dims.n; ++n) {
        const int8_t *const image = input + n * in_h * row + c;
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            const int rows_inside = y0 >= 0 && y0 <= in_h - 3;
            int8_t *out = output + ((n * out_h + oy) * out_w) * channels + c;
            for (ox = 0; ox < out_w; ++ox, out += channels) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                int32_t a[4];
                a[0] = b[0];
                a[1] = b[1];
                a[2] = b[2];
                a[3] = b[3];
                if (fast3x3 && rows_inside && x0 >= 0 && x0 <= in_w - 3) {
                    const int8_t *x = image + y0 * row + x0 * channels;
                    const int8_t *w = f;
                    for (ky = 0; ky < 3; ++ky) {
                        tap4(x, w, off2, a);
                        tap4(x + channels, w + channels, off2, a);
                        tap4(x + 2 * channels, w + 2 * channels, off2, a);
                        x += row;
                        w += 3 * channels;
                    }
                } else {
                    for (ky = 0; ky < kernel_h; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= in_h) {
                            continue; /* a padded tap: the zero point, real 0 */
                        }
                        for (kx = 0; kx < kernel_w; ++kx) {
                            const int32_t ix = x0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            tap4(image + iy * row + ix * channels, f + (ky * kernel_w + kx) * channels, off2, a);
                        }
                    }
                }
                out[0] = el_dsp_requantize(a[0], &rq[0], out_off, act_min, act_max);
                out[1] = el_dsp_requantize(a[1], &rq[1], out_off, act_min, act_max);
                out[2] = el_dsp_requantize(a[2], &rq[2], out_off, act_min, act_max);
                out[3] = el_dsp_requantize(a[3], &rq[3], out_off, act_min, act_max);
            }
        }
    }
}

el_kernel_status el_depthwise_conv2d_s8_dsp(const el_context *ctx, const el_conv_params *p, const int8_t *input,
                                            const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                                            const int32_t *shift, int8_t *output)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, channels = p->input_dims.c;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w;
    const int32_t off = p->input_offset;
    int32_t n, oy, ox, c, ky, kx;
    if (!el_depthwise_conv2d_s8_params_ok(p, bias, shift) || p->ch_mult != 1 ||
        !el_dsp_rq_layer_ok(multiplier, p->output_dims.c)) {
        /* refused, a multiplier this version does not vectorize, or a Q31 multiplier of
         * INT32_MIN (el_dsp_internal.h): the plain kernel */
        return el_depthwise_conv2d_s8(ctx, p, input, filter, bias, multiplier, shift, output);
    }
    for (c = 0; c + 4 <= channels; c += 4) {
        depthwise_4ch(p, c, input, filter, bias, multiplier, shift, output);
    }
    for (; c < channels; ++c) { /* the last 1..3 channels of a count not a multiple of 4 */
        for (n = 0; n < p->input_dims.n; ++n) {
            for (oy = 0; oy < out_h; ++oy) {
                const int32_t y0 = oy * p->stride_h - p->pad_h;
                for (ox = 0; ox < out_w; ++ox) {
                    const int32_t x0 = ox * p->stride_w - p->pad_w;
                    int32_t acc = bias != NULL ? bias[c] : 0;
                    for (ky = 0; ky < kernel_h; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= in_h) {
                            continue;
                        }
                        for (kx = 0; kx < kernel_w; ++kx) {
                            const int32_t ix = x0 + kx * p->dilation_w;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            acc += ((int32_t)input[((n * in_h + iy) * in_w + ix) * channels + c] + off) *
                                   (int32_t)filter[(ky * kernel_w + kx) * channels + c];
                        }
                    }
                    output[((n * out_h + oy) * out_w + ox) * channels + c] =
                        el_requantize_s8(acc, multiplier[c], shift[c], p->output_offset, p->act_min, p->act_max);
                }
            }
        }
    }
    return EL_KERNEL_OK;
}

#else
typedef int el_depthwise_conv2d_s8_dsp_unavailable; /* no DSP: el_kernels_dsp.h forwards to the plain kernel */
#endif

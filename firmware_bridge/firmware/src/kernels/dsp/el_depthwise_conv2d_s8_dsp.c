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

#include "el_fixedpoint.h"

size_t el_depthwise_conv2d_s8_dsp_get_buffer_size(const el_conv_params *p)
{
    (void)p;
    return 0u;
}

static int8_t requantize(const el_conv_params *p, int32_t acc, const int32_t *multiplier, const int32_t *shift,
                         int32_t c)
{
    return el_requantize_s8(acc, multiplier[c], shift[c], p->output_offset, p->act_min, p->act_max);
}

el_kernel_status el_depthwise_conv2d_s8_dsp(const el_context *ctx, const el_conv_params *p, const int8_t *input,
                                            const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                                            const int32_t *shift, int8_t *output)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, channels = p->input_dims.c;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w;
    const int32_t off = p->input_offset;
    int32_t off2, n, oy, ox, c, ky, kx;
    if (!el_depthwise_conv2d_s8_params_ok(p, bias, shift) || p->ch_mult != 1) {
        /* refused, or a multiplier this version does not vectorize: the plain kernel */
        return el_depthwise_conv2d_s8(ctx, p, input, filter, bias, multiplier, shift, output);
    }
    off2 = el_dsp_offset2(off);
    for (n = 0; n < p->input_dims.n; ++n) {
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                int8_t *out = output + ((n * out_h + oy) * out_w + ox) * channels;
                for (c = 0; c + 4 <= channels; c += 4) {
                    int32_t a0 = bias != NULL ? bias[c] : 0, a1 = bias != NULL ? bias[c + 1] : 0;
                    int32_t a2 = bias != NULL ? bias[c + 2] : 0, a3 = bias != NULL ? bias[c + 3] : 0;
                    for (ky = 0; ky < kernel_h; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= in_h) {
                            continue; /* a padded tap: the zero point, real 0 */
                        }
                        for (kx = 0; kx < kernel_w; ++kx) {
                            const int32_t ix = x0 + kx * p->dilation_w;
                            int32_t xv, wv, xe, xo, we, wo;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            xv = el_dsp_load4(input + ((n * in_h + iy) * in_w + ix) * channels + c);
                            wv = el_dsp_load4(filter + (ky * kernel_w + kx) * channels + c);
                            xe = __sxtab16(off2, xv); /* (x0 + off, x2 + off) */
                            xo = el_dsp_sxtab16_ror8(off2, xv); /* (x1 + off, x3 + off) */
                            we = __sxtb16(wv);
                            wo = el_dsp_sxtb16_ror8(wv);
                            a0 = __smlabb(xe, we, a0);
                            a1 = __smlabb(xo, wo, a1);
                            a2 = __smlatt(xe, we, a2);
                            a3 = __smlatt(xo, wo, a3);
                        }
                    }
                    out[c] = requantize(p, a0, multiplier, shift, c);
                    out[c + 1] = requantize(p, a1, multiplier, shift, c + 1);
                    out[c + 2] = requantize(p, a2, multiplier, shift, c + 2);
                    out[c + 3] = requantize(p, a3, multiplier, shift, c + 3);
                }
                for (; c < channels; ++c) { /* the last 1..3 channels of a count not a multiple of 4 */
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
                    out[c] = requantize(p, acc, multiplier, shift, c);
                }
            }
        }
    }
    return EL_KERNEL_OK;
}

#else
typedef int el_depthwise_conv2d_s8_dsp_unavailable; /* no DSP: el_kernels_dsp.h forwards to the plain kernel */
#endif

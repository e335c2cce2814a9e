/* el_depthwise_conv2d_s8.c - DEPTHWISE_CONV_2D, int8, reference version
 * (edge_lls/kernels/int8/literal.py depthwise_conv2d_s8). */
#include "el_fixedpoint.h"
#include "el_kernels.h"

size_t el_depthwise_conv2d_s8_get_buffer_size(const el_conv_params *p)
{
    (void)p; /* one output channel at a time: the accumulator is a register */
    return 0u;
}

int el_depthwise_conv2d_s8_params_ok(const el_conv_params *p, const int32_t *bias, const int32_t *shift)
{
    const el_dims *in = &p->input_dims, *f = &p->filter_dims, *out = &p->output_dims;
    if (!el_kernel_dims_ok(in) || !el_kernel_dims_ok(f) || !el_kernel_dims_ok(out)) {
        return 0;
    }
    /* Filter (1, KH, KW, C * ch_mult): output channel c * ch_mult + m reads input channel c. */
    if (p->ch_mult < 1 || (int64_t)in->c * p->ch_mult != out->c || f->n != 1 || f->c != out->c || out->n != in->n) {
        return 0;
    }
    if (!el_kernel_window_ok(out->h, p->stride_h, f->h, p->dilation_h, p->pad_h) ||
        !el_kernel_window_ok(out->w, p->stride_w, f->w, p->dilation_w, p->pad_w)) {
        return 0;
    }
    /* Each output sums KH * KW taps of one channel. */
    return el_kernel_offsets_ok(p->input_offset, p->output_offset) && el_kernel_range_ok(p->act_min, p->act_max) &&
           el_kernel_shifts_ok(shift, out->c) && el_kernel_accumulator_ok(f->h * f->w, bias, out->c);
}

el_kernel_status el_depthwise_conv2d_s8(const el_context *ctx, const el_conv_params *p, const int8_t *input,
                                        const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                                        const int32_t *shift, int8_t *output)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, in_c = p->input_dims.c;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w, out_c = p->output_dims.c;
    const int32_t ch_mult = p->ch_mult;
    int32_t n, oy, ox, ic, m, ky, kx;
    (void)ctx;
    if (!el_depthwise_conv2d_s8_params_ok(p, bias, shift)) {
        return EL_KERNEL_ERR_PARAMS;
    }
    for (n = 0; n < p->input_dims.n; ++n) {
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                int8_t *out = output + ((n * out_h + oy) * out_w + ox) * out_c;
                for (ic = 0; ic < in_c; ++ic) {
                    for (m = 0; m < ch_mult; ++m) {
                        const int32_t oc = ic * ch_mult + m;
                        /* |acc| <= KH * KW * 32640 + |bias| < 2^31: el_depthwise_conv2d_s8_params_ok checked it. */
                        int32_t acc = bias != NULL ? bias[oc] : 0;
                        for (ky = 0; ky < kernel_h; ++ky) {
                            const int32_t iy = y0 + ky * p->dilation_h;
                            if (iy < 0 || iy >= in_h) {
                                continue; /* a padded tap: the zero point, real 0 */
                            }
                            for (kx = 0; kx < kernel_w; ++kx) {
                                const int32_t ix = x0 + kx * p->dilation_w;
                                int32_t x, w;
                                if (ix < 0 || ix >= in_w) {
                                    continue;
                                }
                                x = input[((n * in_h + iy) * in_w + ix) * in_c + ic];
                                w = filter[(ky * kernel_w + kx) * out_c + oc];
                                acc += (x + p->input_offset) * w;
                            }
                        }
                        out[oc] = el_requantize_s8(acc, multiplier[oc], shift[oc], p->output_offset, p->act_min,
                                                   p->act_max);
                    }
                }
            }
        }
    }
    return EL_KERNEL_OK;
}

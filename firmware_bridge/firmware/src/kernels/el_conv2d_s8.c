/* el_conv2d_s8.c - CONV_2D, int8, reference version (edge_lls/kernels/int8/literal.py conv2d_s8). */
#include "el_fixedpoint.h"
#include "el_kernels.h"

size_t el_conv2d_s8_get_buffer_size(const el_conv_params *p)
{
    (void)p; /* one output channel at a time: the accumulator is a register */
    return 0u;
}

int el_conv2d_s8_params_ok(const el_conv_params *p, const int32_t *bias, const int32_t *shift)
{
    const el_dims *in = &p->input_dims, *f = &p->filter_dims, *out = &p->output_dims;
    if (!el_kernel_dims_ok(in) || !el_kernel_dims_ok(f) || !el_kernel_dims_ok(out)) {
        return 0;
    }
    /* OHWI filter: Cout filters of KH x KW x Cin; one output image per input image. */
    if (f->c != in->c || f->n != out->c || out->n != in->n || p->ch_mult != 1) {
        return 0;
    }
    if (!el_kernel_window_ok(out->h, p->stride_h, f->h, p->dilation_h, p->pad_h) ||
        !el_kernel_window_ok(out->w, p->stride_w, f->w, p->dilation_w, p->pad_w)) {
        return 0;
    }
    /* taps = KH * KW * Cin is at most the filter's volume, an int32 by el_kernel_dims_ok. */
    return el_kernel_offsets_ok(p->input_offset, p->output_offset) && el_kernel_range_ok(p->act_min, p->act_max) &&
           el_kernel_shifts_ok(shift, out->c) && el_kernel_accumulator_ok(f->h * f->w * f->c, bias, out->c);
}

el_kernel_status el_conv2d_s8(const el_context *ctx, const el_conv_params *p, const int8_t *input,
                              const int8_t *filter, const int32_t *bias, const int32_t *multiplier,
                              const int32_t *shift, int8_t *output)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, in_c = p->input_dims.c;
    const int32_t kernel_h = p->filter_dims.h, kernel_w = p->filter_dims.w;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w, out_c = p->output_dims.c;
    int32_t n, oy, ox, co, ky, kx, ci;
    (void)ctx;
    if (!el_conv2d_s8_params_ok(p, bias, shift)) {
        return EL_KERNEL_ERR_PARAMS;
    }
    for (n = 0; n < p->input_dims.n; ++n) {
        for (oy = 0; oy < out_h; ++oy) {
            /* Top-left tap of the window; the window's taps outside the image are skipped,
             * which is what padding with the input zero point (real 0) amounts to. */
            const int32_t y0 = oy * p->stride_h - p->pad_h;
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x0 = ox * p->stride_w - p->pad_w;
                int8_t *out = output + ((n * out_h + oy) * out_w + ox) * out_c;
                for (co = 0; co < out_c; ++co) {
                    const int8_t *f = filter + co * kernel_h * kernel_w * in_c;
                    /* |acc| <= taps * 32640 + |bias| < 2^31: el_conv2d_s8_params_ok checked it. */
                    int32_t acc = bias != NULL ? bias[co] : 0;
                    for (ky = 0; ky < kernel_h; ++ky) {
                        const int32_t iy = y0 + ky * p->dilation_h;
                        if (iy < 0 || iy >= in_h) {
                            continue;
                        }
                        for (kx = 0; kx < kernel_w; ++kx) {
                            const int32_t ix = x0 + kx * p->dilation_w;
                            const int8_t *x, *w;
                            if (ix < 0 || ix >= in_w) {
                                continue;
                            }
                            x = input + ((n * in_h + iy) * in_w + ix) * in_c;
                            w = f + (ky * kernel_w + kx) * in_c;
                            for (ci = 0; ci < in_c; ++ci) {
                                acc += ((int32_t)x[ci] + p->input_offset) * (int32_t)w[ci];
                            }
                        }
                    }
                    out[co] = el_requantize_s8(acc, multiplier[co], shift[co], p->output_offset, p->act_min,
                                               p->act_max);
                }
            }
        }
    }
    return EL_KERNEL_OK;
}

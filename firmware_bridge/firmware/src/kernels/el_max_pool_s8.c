/* el_max_pool_s8.c - MAX_POOL_2D, int8, reference version (edge_lls/kernels/int8/literal.py max_pool2d_s8). */
#include "el_kernels.h"

size_t el_max_pool_s8_get_buffer_size(const el_pool_params *p)
{
    (void)p; /* one channel at a time: the maximum is a register */
    return 0u;
}

static int params_ok(const el_pool_params *p)
{
    const el_dims *in = &p->input_dims, *out = &p->output_dims;
    if (!el_kernel_dims_ok(in) || !el_kernel_dims_ok(out) || out->n != in->n || out->c != in->c) {
        return 0;
    }
    /* A window wholly in the padding is allowed: its maximum is -128, clamped, as in TFLite. */
    return el_kernel_window_ok(out->h, p->stride_h, p->filter_h, 1, p->pad_h) &&
           el_kernel_window_ok(out->w, p->stride_w, p->filter_w, 1, p->pad_w) &&
           el_kernel_range_ok(p->act_min, p->act_max);
}

el_kernel_status el_max_pool_s8(const el_context *ctx, const el_pool_params *p, const int8_t *input,
                                int8_t *output)
{
    const int32_t in_h = p->input_dims.h, in_w = p->input_dims.w, channels = p->input_dims.c;
    const int32_t out_h = p->output_dims.h, out_w = p->output_dims.w;
    int32_t n, oy, ox, c, iy, ix;
    (void)ctx;
    if (!params_ok(p)) {
        return EL_KERNEL_ERR_PARAMS;
    }
    for (n = 0; n < p->input_dims.n; ++n) {
        for (oy = 0; oy < out_h; ++oy) {
            const int32_t y = oy * p->stride_h - p->pad_h;
            const int32_t y_start = el_max_i32(y, 0), y_end = el_min_i32(y + p->filter_h, in_h);
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x = ox * p->stride_w - p->pad_w;
                const int32_t x_start = el_max_i32(x, 0), x_end = el_min_i32(x + p->filter_w, in_w);
                int8_t *out = output + ((n * out_h + oy) * out_w + ox) * channels;
                for (c = 0; c < channels; ++c) {
                    int32_t best = INT8_MIN;
                    for (iy = y_start; iy < y_end; ++iy) {
                        for (ix = x_start; ix < x_end; ++ix) {
                            const int32_t v = input[((n * in_h + iy) * in_w + ix) * channels + c];
                            best = v > best ? v : best;
                        }
                    }
                    out[c] = (int8_t)(best < p->act_min ? p->act_min : best > p->act_max ? p->act_max : best);
                }
            }
        }
    }
    return EL_KERNEL_OK;
}

/* el_avg_pool_s8.c - AVERAGE_POOL_2D, int8, reference version
 * (edge_lls/kernels/int8/literal.py avg_pool2d_s8; TFLite Micro's reference rounding). */
#include "el_kernels.h"

/* The clipped window is at most this many taps, so |sum| <= 128 * 2^23 = 2^30 and
 * sum +- count / 2 stays inside int32 (no real pool comes near: VWW's is 3 x 3). */
#define MAX_TAPS (1L << 23)

size_t el_avg_pool_s8_get_buffer_size(const el_pool_params *p)
{
    (void)p; /* one channel at a time: the sum is a register */
    return 0u;
}

static int params_ok(const el_pool_params *p)
{
    const el_dims *in = &p->input_dims, *out = &p->output_dims;
    if (!el_kernel_dims_ok(in) || !el_kernel_dims_ok(out) || out->n != in->n || out->c != in->c) {
        return 0;
    }
    if (!el_kernel_window_ok(out->h, p->stride_h, p->filter_h, 1, p->pad_h) ||
        !el_kernel_window_ok(out->w, p->stride_w, p->filter_w, 1, p->pad_w)) {
        return 0;
    }
    /* Every window holds at least one tap: the first starts before the filter's end
     * (pad < filter) and the last starts inside the image. Window starts grow with the
     * output index, so the two ends bound them all. (TFLite's SAME and VALID both satisfy it.) */
    if (p->pad_h >= p->filter_h || p->pad_w >= p->filter_w ||
        (out->h - 1) * p->stride_h - p->pad_h >= in->h || (out->w - 1) * p->stride_w - p->pad_w >= in->w) {
        return 0;
    }
    return (int64_t)el_min_i32(p->filter_h, in->h) * el_min_i32(p->filter_w, in->w) <= MAX_TAPS &&
           el_kernel_range_ok(p->act_min, p->act_max);
}

el_kernel_status el_avg_pool_s8(const el_context *ctx, const el_pool_params *p, const int8_t *input,
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
            /* The window clipped to the image: rows [y_start, y_end), columns [x_start, x_end). */
            const int32_t y = oy * p->stride_h - p->pad_h;
            const int32_t y_start = el_max_i32(y, 0), y_end = el_min_i32(y + p->filter_h, in_h);
            for (ox = 0; ox < out_w; ++ox) {
                const int32_t x = ox * p->stride_w - p->pad_w;
                const int32_t x_start = el_max_i32(x, 0), x_end = el_min_i32(x + p->filter_w, in_w);
                const int32_t count = (y_end - y_start) * (x_end - x_start); /* >= 1: params_ok */
                int8_t *out = output + ((n * out_h + oy) * out_w + ox) * channels;
                for (c = 0; c < channels; ++c) {
                    int32_t sum = 0, mean;
                    for (iy = y_start; iy < y_end; ++iy) {
                        for (ix = x_start; ix < x_end; ++ix) {
                            sum += input[((n * in_h + iy) * in_w + ix) * channels + c];
                        }
                    }
                    /* Rounded division, ties away from zero: C99's '/' truncates toward zero,
                     * so adding half the divisor on the side of the sum's sign rounds. */
                    mean = sum > 0 ? (sum + count / 2) / count : (sum - count / 2) / count;
                    out[c] = (int8_t)(mean < p->act_min ? p->act_min : mean > p->act_max ? p->act_max : mean);
                }
            }
        }
    }
    return EL_KERNEL_OK;
}

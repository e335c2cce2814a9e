/* el_fully_connected_s8.c - FULLY_CONNECTED, int8, reference version
 * (edge_lls/kernels/int8/literal.py fully_connected_s8 with single_rounding=False: TFLM's
 * two roundings, as the convolutions; LiteRT's reference kernel rounds this op once). */
#include "el_fixedpoint.h"
#include "el_kernels.h"

size_t el_fully_connected_s8_get_buffer_size(const el_fc_params *p)
{
    (void)p;
    return 0u;
}

int el_fully_connected_s8_params_ok(const el_fc_params *p, const int32_t *bias, const int32_t *shift)
{
    const el_dims *in = &p->input_dims, *f = &p->filter_dims, *out = &p->output_dims;
    const int32_t depth = f->n, out_c = f->c;
    if (!el_kernel_dims_ok(in) || !el_kernel_dims_ok(f) || !el_kernel_dims_ok(out)) {
        return 0;
    }
    /* N rows of `depth` values in, N rows of out_c values out; the products below fit an int32
     * because every volume does. */
    if ((int64_t)in->h * in->w * in->c != depth || (int64_t)out->h * out->w * out->c != out_c || out->n != in->n) {
        return 0;
    }
    /* Symmetric weights only: EL_KERNEL_MAX_PRODUCT assumes |w + filter_offset| <= 128. */
    if (p->filter_offset != 0) {
        return 0;
    }
    return el_kernel_offsets_ok(p->input_offset, p->output_offset) && el_kernel_range_ok(p->act_min, p->act_max) &&
           el_kernel_shifts_ok(shift, out_c) && el_kernel_accumulator_ok(depth, bias, out_c);
}

el_kernel_status el_fully_connected_s8(const el_context *ctx, const el_fc_params *p, const int8_t *input,
                                       const int8_t *weights, const int32_t *bias, const int32_t *multiplier,
                                       const int32_t *shift, int8_t *output)
{
    const int32_t depth = p->filter_dims.n, out_c = p->filter_dims.c;
    int32_t b, o, d;
    (void)ctx;
    if (!el_fully_connected_s8_params_ok(p, bias, shift)) {
        return EL_KERNEL_ERR_PARAMS;
    }
    for (b = 0; b < p->input_dims.n; ++b) {
        const int8_t *x = input + b * depth;
        for (o = 0; o < out_c; ++o) {
            const int8_t *w = weights + o * depth;
            /* |acc| <= depth * 32640 + |bias| < 2^31: el_fully_connected_s8_params_ok checked it. */
            int32_t acc = bias != NULL ? bias[o] : 0;
            for (d = 0; d < depth; ++d) {
                acc += ((int32_t)x[d] + p->input_offset) * (int32_t)w[d];
            }
            output[b * out_c + o] = el_requantize_s8(acc, multiplier[o], shift[o], p->output_offset, p->act_min,
                                                     p->act_max);
        }
    }
    return EL_KERNEL_OK;
}

/* el_fully_connected_s8_dsp.c - FULLY_CONNECTED, int8, with the DSP extension (SXTB16 /
 * SXTAB16 / SMLAD): the results of el_fully_connected_s8 byte for byte (el_kernels_dsp.h says
 * why the sums are exact). */
#include "el_kernels_dsp.h"

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)

#include "el_dsp_internal.h"

size_t el_fully_connected_s8_dsp_get_buffer_size(const el_fc_params *p)
{
    (void)p;
    return 0u;
}

static int8_t requantize(const el_fc_params *p, int32_t acc, const int32_t *multiplier, const int32_t *shift,
                         int32_t o)
{
    el_dsp_rq rq;
    el_dsp_rq_prepare(&rq, multiplier[o], shift[o]);
    return el_dsp_requantize(acc, &rq, p->output_offset, p->act_min, p->act_max);
}

el_kernel_status el_fully_connected_s8_dsp(const el_context *ctx, const el_fc_params *p, const int8_t *input,
                                           const int8_t *weights, const int32_t *bias, const int32_t *multiplier,
                                           const int32_t *shift, int8_t *output)
{
    const int32_t depth = p->filter_dims.n, out_c = p->filter_dims.c, rows = p->input_dims.n;
    const int32_t off = p->input_offset;
    int32_t off2, b, o;
    if (!el_fully_connected_s8_params_ok(p, bias, shift) || !el_dsp_rq_layer_ok(multiplier, p->filter_dims.c)) {
        /* refused (the plain kernel says so), or a multiplier of INT32_MIN (el_dsp_internal.h) */
        return el_fully_connected_s8(ctx, p, input, weights, bias, multiplier, shift, output);
    }
    off2 = el_dsp_offset2(off);
    /* Two outputs at a time: each split input word serves two weight rows. */
    for (b = 0; b < rows; ++b) {
        const int8_t *x = input + b * depth;
        int8_t *out = output + b * out_c;
        for (o = 0; o + 2 <= out_c; o += 2) {
            int32_t a0 = bias != NULL ? bias[o] : 0, a1 = bias != NULL ? bias[o + 1] : 0;
            el_dsp_dot2(x, weights + o * depth, depth, depth, off, off2, &a0, &a1);
            out[o] = requantize(p, a0, multiplier, shift, o);
            out[o + 1] = requantize(p, a1, multiplier, shift, o + 1);
        }
        if (o < out_c) { /* an odd output count: the last row alone */
            const int32_t acc = el_dsp_dot1(x, weights + o * depth, depth, off, off2, bias != NULL ? bias[o] : 0);
            out[o] = requantize(p, acc, multiplier, shift, o);
        }
    }
    return EL_KERNEL_OK;
}

#else
typedef int el_fully_connected_s8_dsp_unavailable; /* no DSP: el_kernels_dsp.h forwards to the plain kernel */
#endif

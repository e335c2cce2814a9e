/* el_leaky_relu_s8.c - LEAKY_RELU, int8, reference version (edge_lls/kernels/int8/literal.py
 * leaky_relu_s8, TFLite's reference int8 kernel). */
#include "el_fixedpoint.h"
#include "el_kernels.h"

static int params_ok(const el_leaky_relu_params *p)
{
    return p->size >= 0 && p->input_zero_point >= INT8_MIN && p->input_zero_point <= INT8_MAX &&
           p->output_zero_point >= INT8_MIN && p->output_zero_point <= INT8_MAX && p->identity_shift >= -31 &&
           p->identity_shift <= 31 && p->alpha_shift >= -31 && p->alpha_shift <= 31;
}

el_kernel_status el_leaky_relu_s8(const el_leaky_relu_params *p, const int8_t *input, int8_t *output)
{
    int32_t i;
    if (!params_ok(p)) {
        return EL_KERNEL_ERR_PARAMS;
    }
    for (i = 0; i < p->size; ++i) {
        /* v in [-255, 255]: at or above the input zero point (real >= 0) it is rescaled by
         * input scale / output scale, below it by alpha times that. */
        const int32_t v = (int32_t)input[i] - p->input_zero_point;
        output[i] = v >= 0 ? el_requantize_s8(v, p->identity_multiplier, p->identity_shift, p->output_zero_point,
                                              INT8_MIN, INT8_MAX)
                           : el_requantize_s8(v, p->alpha_multiplier, p->alpha_shift, p->output_zero_point, INT8_MIN,
                                              INT8_MAX);
    }
    return EL_KERNEL_OK;
}

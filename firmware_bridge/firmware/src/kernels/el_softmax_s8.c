/* el_softmax_s8.c - SOFTMAX, int8, reference version (edge_lls/kernels/int8/literal.py softmax_s8).
 *
 * TFLite Micro's int8 softmax, bit for bit: gemmlowp fixed point throughout (el_fixedpoint.h).
 * Per row, the difference of each value to the row's maximum is rescaled by beta * input
 * scale to Q5.26 (5 integer bits), exp() of it taken in Q0.31, the exps summed in Q12.19,
 * the sum's reciprocal taken in Q0.31 by Newton-Raphson, and each exp times the reciprocal
 * shifted to the output's 1/256 steps (zero point -128). Differences below diff_min would
 * give exp() < 2^-31 and are output as probability 0 directly.
 */
#include "el_fixedpoint.h"
#include "el_kernels.h"

/* The output counts 1/256 steps: 8 bits below one. */
#define OUTPUT_BITS 8

/* el_rounding_divide_by_pot for an exponent that may exceed 31 (a row whose exps sum to 2^9
 * or more: every probability is below 1/256). Then |x| < 2^31 <= 2^(exponent - 1) and x /
 * 2^exponent rounds to 0: x is a high multiply's result, never INT32_MIN. */
static int32_t rounding_divide_by_pot_wide(int32_t x, int32_t exponent)
{
    return exponent > 31 ? 0 : el_rounding_divide_by_pot(x, exponent);
}

/* The difference to the row maximum, diff in [max(diff_min, -255), 0], times beta * input
 * scale in Q5.26: diff * 2^input_left_shift (exact: params_ok bounds it below 2^31), then
 * the Q31 multiplier. The shift is done on the magnitude, in uint32_t. */
static int32_t rescale_difference(const el_softmax_params *p, int32_t diff)
{
    const int32_t scaled = -(int32_t)((uint32_t)(-diff) << p->input_left_shift);
    return el_saturating_rounding_doubling_high_mul(scaled, p->input_multiplier);
}

static int params_ok(const el_softmax_params *p)
{
    int64_t largest_difference;
    if (p->rows < 1 || p->depth < 1 || (int64_t)p->rows * p->depth > INT32_MAX) {
        return 0;
    }
    /* diff_min <= 0 lets the row maximum through, so every sum holds exp(0) > 0. */
    if (p->input_left_shift < 0 || p->input_left_shift > 31 || p->diff_min > 0) {
        return 0;
    }
    /* |diff| * 2^input_left_shift < 2^31 for every difference rescaled. TFLite derives diff_min
     * from the shift so that this holds: |diff_min| * 2^shift <= 31 * 2^26. */
    largest_difference = -(int64_t)p->diff_min < 255 ? -(int64_t)p->diff_min : 255;
    return largest_difference * ((int64_t)1 << p->input_left_shift) <= INT32_MAX;
}

el_kernel_status el_softmax_s8(const el_softmax_params *p, const int8_t *input, int8_t *output)
{
    int32_t r, c;
    if (!params_ok(p)) {
        return EL_KERNEL_ERR_PARAMS;
    }
    for (r = 0; r < p->rows; ++r) {
        const int8_t *x = input + r * p->depth;
        int8_t *y = output + r * p->depth;
        int32_t row_max = INT8_MIN, scale, bits_over_unit, exponent;
        /* Q12.19. Each exp adds at most 2^19, so the sum wraps only past 2^12 values at the row
         * maximum; then it wraps modulo 2^32, as gemmlowp's int32 sum does. */
        uint32_t sum_of_exps = 0u;
        for (c = 0; c < p->depth; ++c) {
            row_max = x[c] > row_max ? x[c] : row_max;
        }
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = x[c] - row_max;
            if (diff >= p->diff_min) {
                const int32_t exp_q31 = el_exp_on_negative_values(rescale_difference(p, diff));
                /* Q0.31 -> Q12.19: 12 more integer bits, 12 fewer fractional ones */
                sum_of_exps += (uint32_t)el_rounding_divide_by_pot(exp_q31, EL_SOFTMAX_ACCUM_INTEGER_BITS);
            }
        }
        scale = el_reciprocal_q12(el_wrap_int32((int64_t)sum_of_exps), &bits_over_unit);
        /* exp * scale is Q0.31 times 2^-bits_over_unit; the output counts 2^-8 steps. */
        exponent = bits_over_unit + 31 - OUTPUT_BITS;
        for (c = 0; c < p->depth; ++c) {
            const int32_t diff = x[c] - row_max;
            int64_t value = INT8_MIN;
            if (diff >= p->diff_min) {
                const int32_t exp_q31 = el_exp_on_negative_values(rescale_difference(p, diff));
                const int32_t probability =
                    rounding_divide_by_pot_wide(el_saturating_rounding_doubling_high_mul(scale, exp_q31), exponent);
                value = (int64_t)probability + INT8_MIN; /* the output zero point, -128 */
            }
            y[c] = (int8_t)(value < INT8_MIN ? INT8_MIN : value > INT8_MAX ? INT8_MAX : value);
        }
    }
    return EL_KERNEL_OK;
}

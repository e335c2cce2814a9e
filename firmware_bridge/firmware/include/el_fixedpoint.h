/*
 * el_fixedpoint.h - TFLite Micro's fixed-point requantization, in plain C99.
 *
 * The same arithmetic as edge_lls/kernels/fixedpoint.py (the Python runtime's scalar
 * primitives) and as TFLite Micro's reference kernels, which take it from gemmlowp:
 *
 *   el_saturating_rounding_doubling_high_mul(a, b)   round(a * b / 2^31), ties toward
 *                                                    +infinity; INT32_MIN * INT32_MIN
 *                                                    saturates to INT32_MAX
 *   el_rounding_divide_by_pot(x, e)                  round(x / 2^e), ties away from zero
 *   el_multiply_by_quantized_multiplier(x, m, s)     x * m * 2^(s - 31), rounded twice:
 *                                                    the high multiply, then the shift
 *   el_exp_on_negative_values(a)                     exp(a), a <= 0 in Q5.26, as Q0.31
 *   el_one_over_one_plus_x(a)                        1/(1+a), a in [0, 1), Q0.31 both
 *   el_reciprocal_q12(sum, &bits)                    1/sum of a Q12.19 sum (TFLite's
 *                                                    GetReciprocal), for the softmax
 *
 * Qm.n names an int32 holding a real as raw / 2^n with m integer bits (m + n = 31). Where
 * gemmlowp's int32 arithmetic may wrap, the sums wrap modulo 2^32 here too (el_wrap_int32),
 * as the Python runtime reproduces them (wrap_int32).
 *
 * Every function is total over its documented domain: no signed overflow, no shift of a
 * negative value to the left, no shift by 32 or more, so that UBSan has nothing to find and
 * the compiler nothing to assume. Two implementation-defined behaviours are relied on, and
 * checked at compile time below: int32_t is two's complement (C99 7.18.1.1 guarantees it for
 * the exact-width types), and >> of a negative value shifts in sign bits (what GCC, Clang,
 * Arm Compiler and IAR do; C99 leaves it to the implementation).
 */
#ifndef EL_FIXEDPOINT_H
#define EL_FIXEDPOINT_H

#include <stdint.h>

/* A negative right operand of >> must shift arithmetically (floor division by 2^e). */
typedef char el_fixedpoint_arithmetic_shift_check[(-1 >> 1) == -1 && (INT32_MIN >> 31) == -1 ? 1 : -1];

/* v modulo 2^32 as an int32_t: what an int32 store of v does on a two's-complement machine,
 * without the implementation-defined conversion of an out-of-range value. The conversion to
 * uint32_t is defined (C99 6.3.1.3p2); the two branches rebuild the signed value from it.
 * Compilers reduce the whole function to a register move. */
static inline int32_t el_wrap_int32(int64_t v)
{
    uint32_t u = (uint32_t)v;
    return u <= (uint32_t)INT32_MAX ? (int32_t)u : -(int32_t)(~u) - 1;
}

/* gemmlowp SaturatingRoundingDoublingHighMul: the high 32 bits of 2 * a * b, rounded to
 * nearest with ties toward +infinity (the nudge is +2^30 for a non-negative product and
 * 1 - 2^30 for a negative one, then C99's '/' truncates toward zero).
 * Bound: excluding INT32_MIN * INT32_MIN, |a * b| <= 2^62 - 2^31, so the int64 sum below
 * cannot overflow and the quotient lies in [-(2^31 - 1), 2^31 - 1]. */
static inline int32_t el_saturating_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    int64_t ab;
    int64_t nudge;
    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = ab >= 0 ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* gemmlowp RoundingDivideByPOT: x / 2^exponent rounded to nearest, ties away from zero;
 * exponent in [0, 31]. The remainder is taken through uint32_t (the low bits of x's two's
 * complement), the quotient by an arithmetic shift (floor); rounding up when the remainder
 * exceeds half of 2^exponent (or equals it, for a negative x) gives ties away from zero.
 * No overflow: (x >> exponent) + 1 <= INT32_MAX unless exponent == 0, where the mask is 0. */
static inline int32_t el_rounding_divide_by_pot(int32_t x, int32_t exponent)
{
    uint32_t mask = (uint32_t)(((uint64_t)1 << exponent) - 1u);
    int32_t remainder = (int32_t)((uint32_t)x & mask);
    int32_t threshold = (int32_t)(mask >> 1) + (x < 0 ? 1 : 0);
    return (x >> exponent) + (remainder > threshold ? 1 : 0);
}

/* TFLite Micro's MultiplyByQuantizedMultiplier (and CMSIS-NN's arm_nn_requantize, two
 * roundings): x * multiplier * 2^(shift - 31) for a Q31 multiplier; shift in [-31, 31],
 * > 0 a left shift. The left shift is done in uint32_t, which keeps the low 32 bits of
 * x * 2^shift: the int32 wrap-around TFLM's x * (1 << left_shift) has and the Python
 * runtime reproduces with wrap_int32 (a valid model never wraps: |x| < 2^31 / 2^shift). */
static inline int32_t el_multiply_by_quantized_multiplier(int32_t x, int32_t multiplier, int32_t shift)
{
    int32_t left_shift = shift > 0 ? shift : 0;
    int32_t right_shift = shift > 0 ? 0 : -shift;
    int32_t scaled = el_wrap_int32((int64_t)((uint32_t)x << left_shift));
    return el_rounding_divide_by_pot(el_saturating_rounding_doubling_high_mul(scaled, multiplier), right_shift);
}

/* The tail of every requantizing kernel: acc rescaled, plus the output zero point, clamped
 * to [act_min, act_max] (a sub-range of int8). The sum is formed in int64_t because a left
 * shift can take the rescaled value to within 127 of INT32_MAX. */
static inline int8_t el_requantize_s8(int32_t acc, int32_t multiplier, int32_t shift, int32_t output_offset,
                                      int32_t act_min, int32_t act_max)
{
    int64_t value = (int64_t)el_multiply_by_quantized_multiplier(acc, multiplier, shift) + output_offset;
    if (value < act_min) {
        value = act_min;
    }
    if (value > act_max) {
        value = act_max;
    }
    return (int8_t)value;
}

/* ------------------------------------------------------------------------------------------
 * gemmlowp's exp and reciprocal, as TFLite's int8 softmax uses them.
 */

/* exp(-1/8) and 1/3 in Q0.31: the Taylor expansion's centre and its x^3 coefficient's factor. */
#define EL_EXP_MINUS_ONE_EIGHTH_Q31 1895147668
#define EL_ONE_THIRD_Q31 715827883
/* Newton-Raphson's start for 1/d on [1/2, 1): 48/17 - 32/17 * d, in Q2.29. */
#define EL_FORTY_EIGHT_SEVENTEENTHS_Q29 1515870810
#define EL_MINUS_THIRTY_TWO_SEVENTEENTHS_Q29 (-1010580540)
/* The softmax's sum of exps has 12 integer bits (Q12.19). */
#define EL_SOFTMAX_ACCUM_INTEGER_BITS 12

static inline int32_t el_wrap_add(int32_t a, int32_t b)
{
    return el_wrap_int32((int64_t)a + b);
}

static inline int32_t el_wrap_sub(int32_t a, int32_t b)
{
    return el_wrap_int32((int64_t)a - b);
}

/* x * 2^exponent saturated to int32 (gemmlowp SaturatingRoundingMultiplyByPOT for an
 * exponent in [1, 30]). Unsaturated, |x| <= 2^(31 - exponent) - 1, so the product is at
 * most 2^31 - 2^exponent in magnitude: no overflow. */
static inline int32_t el_saturating_left_shift(int32_t x, int32_t exponent)
{
    const int32_t threshold = ((int32_t)1 << (31 - exponent)) - 1;
    if (x > threshold) {
        return INT32_MAX;
    }
    if (x < -threshold) {
        return INT32_MIN;
    }
    return x * ((int32_t)1 << exponent);
}

/* exp(a) for a in [-1/4, 0), Q0.31 in and out: exp(-1/8) * exp(x) with x = a + 1/8 in
 * [-1/8, 1/8), exp(x) by its Taylor series to x^4 (1 + x + x^2/2 + x^3/6 + x^4/24). */
static inline int32_t el_exp_on_interval_quarter(int32_t a)
{
    const int32_t x = el_wrap_add(a, (int32_t)1 << 28);
    const int32_t x2 = el_saturating_rounding_doubling_high_mul(x, x);
    const int32_t x3 = el_saturating_rounding_doubling_high_mul(x2, x);
    const int32_t x4 = el_saturating_rounding_doubling_high_mul(x2, x2);
    const int32_t x4_over_4 = el_rounding_divide_by_pot(x4, 2);
    /* ((x^4/4 + x^3) / 3 + x^2) / 2 = x^4/24 + x^3/6 + x^2/2 */
    int32_t poly = el_wrap_add(el_saturating_rounding_doubling_high_mul(el_wrap_add(x4_over_4, x3), EL_ONE_THIRD_Q31),
                               x2);
    poly = el_rounding_divide_by_pot(poly, 1);
    return el_wrap_add(EL_EXP_MINUS_ONE_EIGHTH_Q31,
                       el_saturating_rounding_doubling_high_mul(EL_EXP_MINUS_ONE_EIGHTH_Q31, el_wrap_add(x, poly)));
}

/* exp(a) for a <= 0 in Q5.26, result in Q0.31 (gemmlowp exp_on_negative_values with 5
 * integer bits). a = -(q + f) with f in (0, 1/4] and q a multiple of 1/4: exp(-f) from the
 * series above, then one factor exp(-2^k) for each bit k of q, k = -2 .. 4. */
static inline int32_t el_exp_on_negative_values(int32_t a)
{
    /* exp(-2^k) in Q0.31 for k = -2 .. 4 */
    static const int32_t barrel_q31[7] = {1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242};
    const int32_t one_quarter = (int32_t)1 << 24;
    /* (a mod 1/4) - 1/4, in [-1/4, 0): the low bits taken through uint32_t, a two's-complement view */
    const int32_t a_mod_quarter_minus_quarter = (int32_t)((uint32_t)a & (uint32_t)(one_quarter - 1)) - one_quarter;
    /* Q5.26 -> Q0.31 is x 2^5; |value| <= 2^24, so it never saturates. */
    int32_t result = el_exp_on_interval_quarter(el_saturating_left_shift(a_mod_quarter_minus_quarter, 5));
    const uint32_t remainder = (uint32_t)el_wrap_sub(a_mod_quarter_minus_quarter, a);
    int32_t k;
    for (k = 0; k < 7; ++k) {
        if (remainder & ((uint32_t)1 << (24 + k))) {
            result = el_saturating_rounding_doubling_high_mul(result, barrel_q31[k]);
        }
    }
    return a == 0 ? INT32_MAX : result; /* exp(0) = 1, which Q0.31 holds as its maximum */
}

/* 1/(1+a) for a in [0, 1), Q0.31 in and out: d = (1+a)/2 in [1/2, 1), three Newton-Raphson
 * steps x <- x + x(1 - d x) in Q2.29 from 48/17 - 32/17 d, then 1/(1+a) = x/2 as Q0.31. */
static inline int32_t el_one_over_one_plus_x(int32_t a)
{
    /* gemmlowp RoundingHalfSum(a, 1): (a + 2^31) / 2, formed in int64_t (>= 0 there) */
    const int32_t half_denominator = (int32_t)(((int64_t)a + INT32_MAX + 1) >> 1);
    int32_t x = el_wrap_add(EL_FORTY_EIGHT_SEVENTEENTHS_Q29,
                            el_saturating_rounding_doubling_high_mul(half_denominator,
                                                                     EL_MINUS_THIRTY_TWO_SEVENTEENTHS_Q29));
    int32_t i;
    for (i = 0; i < 3; ++i) {
        const int32_t half_denominator_times_x = el_saturating_rounding_doubling_high_mul(half_denominator, x);
        const int32_t one_minus_half_denominator_times_x = el_wrap_sub((int32_t)1 << 29, half_denominator_times_x);
        x = el_wrap_add(x, el_saturating_left_shift(
                               el_saturating_rounding_doubling_high_mul(x, one_minus_half_denominator_times_x), 2));
    }
    return el_saturating_left_shift(x, 1);
}

/* Leading zero bits of x (32 for 0). */
static inline int32_t el_count_leading_zeros(uint32_t x)
{
    int32_t count = 0;
    while (count < 32 && (x & 0x80000000u) == 0u) {
        ++count;
        x <<= 1;
    }
    return count;
}

/* 1/sum for a Q12.19 sum (TFLite's GetReciprocal): the sum normalised to 1 + s, s in [0, 1),
 * by a left shift of its leading zeros, 1/(1+s) in Q0.31, and 12 minus that shift (the
 * sum's bits above one) in *bits_over_unit: 1/sum = result * 2^-bits_over_unit. The uint32_t
 * arithmetic is the wrap-around of TFLite's (sum << headroom) - 2^31; the shift by 32 of a
 * zero sum is spelled out as 0. */
static inline int32_t el_reciprocal_q12(int32_t sum, int32_t *bits_over_unit)
{
    const uint32_t u = (uint32_t)sum;
    const int32_t headroom_plus_one = el_count_leading_zeros(u);
    const uint32_t shifted = (headroom_plus_one < 32 ? u << headroom_plus_one : 0u) - 0x80000000u;
    *bits_over_unit = EL_SOFTMAX_ACCUM_INTEGER_BITS - headroom_plus_one;
    return el_one_over_one_plus_x(el_wrap_int32((int64_t)shifted));
}

#endif /* EL_FIXEDPOINT_H */

/*
 * el_dsp_internal.h - helpers shared by the DSP kernels of this folder (not an interface).
 *
 * A requantization with the per-channel work done once per channel (el_dsp_rq_prepare), and
 * per output value the arithmetic of el_requantize_s8 (el_fixedpoint.h) in fewer
 * instructions, with the same result for every input (why, below). It covers every
 * multiplier but INT32_MIN, the one value for which the doubling high multiply can saturate:
 * a kernel checks el_dsp_rq_layer_ok() once per layer and hands a layer holding it to the
 * plain kernel.
 *
 * Why el_dsp_requantize equals el_requantize_s8
 * ---------------------------------------------
 * 1. The left shift is the same expression: the low 32 bits of x * 2^left, as int32.
 * 2. el_saturating_rounding_doubling_high_mul(a, b) is, for a * b >= 0, trunc((ab + 2^30) /
 *    2^31) = floor((ab + 2^30) / 2^31), the numerator being >= 0; for ab < 0, trunc((ab + 1 -
 *    2^30) / 2^31) with a negative numerator, i.e. ceil((ab + 1 - 2^30) / 2^31) = floor((ab +
 *    1 - 2^30 + 2^31 - 1) / 2^31) = floor((ab + 2^30) / 2^31). So in both cases it is
 *    (ab + 2^30) >> 31 in int64 (an arithmetic shift, checked at compile time below). With
 *    b != INT32_MIN, |ab| <= 2^31 * (2^31 - 1), so the int64 sum cannot overflow and the
 *    result lies in [-2^31 + 1, 2^31 - 1]: it fits an int32, and the saturation the reference
 *    spells out for INT32_MIN * INT32_MIN cannot arise.
 * 3. el_rounding_divide_by_pot(h, right) is kept as it is, with its mask (2^right - 1) and
 *    half mask (mask >> 1) computed once per channel instead of per value: (h >> right) + 1
 *    when the low bits (h & mask) exceed mask / 2 + (h < 0), compared as uint32 here (both
 *    sides lie in [0, 2^31 - 1], so the unsigned and the signed comparison agree).
 * 4. The output offset is added with QADD (saturating int32): the reference adds in int64
 *    and clamps to [act_min, act_max], a sub-range of int8; a sum beyond int32 saturates to
 *    INT32_MAX or INT32_MIN, which the clamp takes to the same bound as the exact sum.
 */
#ifndef EL_DSP_INTERNAL_H
#define EL_DSP_INTERNAL_H

#include "el_fixedpoint.h"
#include "el_kernels_dsp.h"

#if defined(__ARM_FEATURE_DSP) && defined(__ARM_FEATURE_SIMD32)

/* >> of a negative int64_t must shift arithmetically, as for int32 (el_fixedpoint.h). */
typedef char el_dsp_int64_shift_check[((int64_t)-1 >> 1) == -1 && (INT64_MIN >> 63) == -1 ? 1 : -1];

/* One channel's requantization constants. */
typedef struct {
    int32_t multiplier;
    int32_t left;       /* shift > 0 ? shift : 0 */
    int32_t right;      /* shift > 0 ? 0 : -shift, in [0, 31] */
    uint32_t mask;      /* 2^right - 1 */
    uint32_t half;      /* mask >> 1 */
} el_dsp_rq;

/* 1 when no multiplier is INT32_MIN (the only one el_dsp_requantize does not cover). */
static inline int el_dsp_rq_layer_ok(const int32_t *multiplier, int32_t channels)
{
    int32_t c;
    for (c = 0; c < channels; ++c) {
        if (multiplier[c] == INT32_MIN) {
            return 0;
        }
    }
    return 1;
}

/* shift in [-31, 31] (el_kernel_shifts_ok). */
static inline void el_dsp_rq_prepare(el_dsp_rq *q, int32_t multiplier, int32_t shift)
{
    q->multiplier = multiplier;
    q->left = shift > 0 ? shift : 0;
    q->right = shift > 0 ? 0 : -shift;
    q->mask = (uint32_t)(((uint64_t)1 << q->right) - 1u);
    q->half = q->mask >> 1;
}

/* el_requantize_s8(acc, multiplier, shift, output_offset, act_min, act_max), bit for bit.
 * Inlined always: about twenty instructions, fewer than a call's overhead would add. */
static inline __attribute__((always_inline)) int8_t el_dsp_requantize(int32_t acc, const el_dsp_rq *q, int32_t output_offset, int32_t act_min,
                                       int32_t act_max)
{
    const int32_t x = el_wrap_int32((int64_t)((uint32_t)acc << q->left));
    const int32_t h = (int32_t)(((int64_t)x * q->multiplier + ((int64_t)1 << 30)) >> 31);
    const int32_t r = (h >> q->right) + (((uint32_t)h & q->mask) > q->half + ((uint32_t)h >> 31) ? 1 : 0);
    int32_t v = __qadd(r, output_offset);
    v = v < act_min ? act_min : v;
    v = v > act_max ? act_max : v;
    return (int8_t)v;
}

#endif /* __ARM_FEATURE_DSP */

#endif /* EL_DSP_INTERNAL_H */

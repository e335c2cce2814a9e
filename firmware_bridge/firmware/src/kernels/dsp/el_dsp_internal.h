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


/* ------------------------------------------------------------------------------------------
 * The short requantization: el_requantize_s8 in seven or eight instructions per value, for
 * a layer whose every channel has multiplier >= 0 and shift <= -1 (a right shift e = -shift
 * in [1, 31], no left shift; el_dsp_rqf_layer_ok, once per layer; another layer takes
 * el_dsp_requantize above). Why it equals el_requantize_s8:
 * 1. h = floor((acc m + 2^30) / 2^31), the doubling high multiply (point 2 above).
 * 2. The rounding divide: with h = q 2^e + rem (0 <= rem < 2^e) the reference adds 1 to q
 *    when rem > 2^(e-1) - 1 + [h < 0], i.e. when rem + 2^(e-1) - [h < 0] >= 2^e; so it is
 *    floor((h + 2^(e-1) - [h < 0]) / 2^e).
 * 3. [h < 0] may be replaced by [acc < 0]: with m >= 0 they differ only when h = 0 and
 *    acc < 0, where both give floor((2^(e-1) - 1 or 2^(e-1)) / 2^e) = 0 (e >= 1).
 * 4. floor((floor(y / 2^31) + c) / 2^e) = floor((y + c 2^31) / 2^(31+e)) for integers y, c,
 *    so with c = round - [acc < 0], round = 2^(e-1) (+ output_offset 2^e, folded):
 *        value = floor((acc m + 2^30 + round 2^31 - [acc < 0] 2^31) / 2^(31+e))
 *    one int64 sum: SMLAL adds acc * m to the 64-bit constant P = 2^30 + round 2^31 (per
 *    channel) plus s 2^31, s = acc >> 31 (-1 or 0: as a 64-bit pair, high word s and low word
 *    s << 31, ADDS / ADC). The layer check keeps |round| <= 2^30, so |P| <= 2^61 + 2^30, and
 *    |acc m| < 2^62: |S| < 2^63, no int64 overflow, and the high word floor(S / 2^32) lies in
 *    [-2^31, 2^31): value = high >> (e - 1) (31 + e >= 32).
 * 5. Folded, output_offset * 2^e comes out of the shift as output_offset exactly; else it is
 *    added after (|value| <= 2^30: no overflow). Then the clamp, as the reference.
 */
typedef struct {
    uint32_t low;       /* P's low word */
    int32_t high;       /* P's high word */
    int32_t multiplier; /* >= 0 */
    int32_t shift;      /* e - 1, in [0, 30] */
} el_dsp_rqf;

static inline int64_t el_dsp_rqf_round(int32_t shift, int32_t output_offset, int fold)
{
    const int32_t e = -shift;
    return ((int64_t)1 << (e - 1)) + (fold ? (int64_t)output_offset * ((int64_t)1 << e) : 0);
}

/* A multiplier of 0 (a channel of zero scale) makes h = 0 whatever the shift, and the
 * reference's value the output offset: any right shift gives that (point 3 with h = 0), so
 * such a channel takes e = 1. */
static inline int32_t el_dsp_rqf_shift(int32_t multiplier, int32_t shift)
{
    return multiplier == 0 ? -1 : shift;
}

/* 1 when every channel meets the conditions above (shifts in [-31, 31] already); fold: the
 * output offset folded into the shift, which needs |round| <= 2^30. Unfolded, round =
 * 2^(e-1) <= 2^30 for every e in [1, 31]: nothing to check. */
static inline int el_dsp_rqf_layer_ok(const int32_t *multiplier, const int32_t *shift, int32_t channels,
                                      int32_t output_offset, int fold)
{
    int32_t c;
    for (c = 0; c < channels; ++c) {
        int64_t round;
        if (multiplier[c] < 0 || (shift[c] > -1 && multiplier[c] != 0)) {
            return 0;
        }
        if (!fold) {
            continue;
        }
        round = el_dsp_rqf_round(el_dsp_rqf_shift(multiplier[c], shift[c]), output_offset, fold);
        if (round > ((int64_t)1 << 30) || round < -((int64_t)1 << 30)) {
            return 0;
        }
    }
    return 1;
}

/* Channel constants for a layer el_dsp_rqf_layer_ok accepted (with the same fold): round
 * in int32 (|round| < 2^30 by the check), P = 2^30 + round 2^31 as (round >> 1) 2^32 +
 * (round & 1) 2^31 + 2^30. */
static inline __attribute__((always_inline)) void el_dsp_rqf_prepare(el_dsp_rqf *q, int32_t multiplier,
                                                                     int32_t shift, int32_t output_offset, int fold)
{
    const int32_t e = -el_dsp_rqf_shift(multiplier, shift);
    const int32_t round = (int32_t)(1u << (e - 1)) + (fold ? output_offset * (int32_t)(1u << e) : 0);
    q->low = 0x40000000u | ((uint32_t)round << 31);
    q->high = round >> 1;
    q->multiplier = multiplier;
    q->shift = e - 1;
}

/* The requantized value before the clamp (and before the output offset when not folded):
 * points 1-5 above. */
static inline __attribute__((always_inline)) int32_t el_dsp_rqf_apply(int32_t acc, const el_dsp_rqf *q)
{
    const int32_t s = acc >> 31;
    uint32_t low;
    int32_t high;
    __asm__("adds %0, %2, %4, lsl #31\n\t"
            "adc %1, %3, %4\n\t"
            "smlal %0, %1, %5, %6"
            : "=&r"(low), "=&r"(high)
            : "r"(q->low), "r"(q->high), "r"(s), "r"(acc), "r"(q->multiplier)
            : "cc");
    (void)low;
    return high >> q->shift;
}

/* Clamp to [act_min, act_max]; full (the layer's range is all of int8): one SSAT. */
static inline __attribute__((always_inline)) int8_t el_dsp_clamp(int32_t v, int full, int32_t act_min,
                                                                 int32_t act_max)
{
    if (full) {
        return (int8_t)__ssat(v, 8);
    }
    v = v < act_min ? act_min : v;
    v = v > act_max ? act_max : v;
    return (int8_t)v;
}

/* The requantization of a layer: the short one (el_dsp_rqf) when every channel allows it,
 * the output offset folded into its shift where that fits, one SSAT as the clamp when the
 * range is all of int8; else el_dsp_requantize. mode: RQ_SLOW, or RQ_FAST | the others. */
enum { RQ_SLOW = 0, RQ_FAST = 1, RQ_FOLD = 2, RQ_FULL = 4 };

typedef struct {
    el_dsp_rq slow;
    el_dsp_rqf fast;
} channel_rq;

static inline __attribute__((always_inline)) void channel_prepare(channel_rq *q, int mode, int32_t multiplier,
                                                                  int32_t shift, int32_t output_offset)
{
    if (mode == RQ_SLOW) {
        el_dsp_rq_prepare(&q->slow, multiplier, shift);
    } else {
        el_dsp_rqf_prepare(&q->fast, multiplier, shift, output_offset, (mode & RQ_FOLD) != 0);
    }
}

static inline __attribute__((always_inline)) int8_t channel_requantize(int32_t acc, const channel_rq *q, int mode,
                                                                       int32_t out_off, int32_t act_min,
                                                                       int32_t act_max)
{
    if (mode == RQ_SLOW) {
        return el_dsp_requantize(acc, &q->slow, out_off, act_min, act_max);
    }
    return el_dsp_clamp(el_dsp_rqf_apply(acc, &q->fast) + ((mode & RQ_FOLD) ? 0 : out_off), (mode & RQ_FULL) != 0,
                        act_min, act_max);
}

static inline int el_dsp_rq_mode(int32_t channels, int32_t output_offset, int32_t act_min, int32_t act_max,
                                 const int32_t *multiplier, const int32_t *shift)
{
    const int full = act_min == INT8_MIN && act_max == INT8_MAX ? RQ_FULL : 0;
    if (el_dsp_rqf_layer_ok(multiplier, shift, channels, output_offset, 1)) {
        return RQ_FAST | RQ_FOLD | full;
    }
    if (el_dsp_rqf_layer_ok(multiplier, shift, channels, output_offset, 0)) {
        return RQ_FAST | full;
    }
    return RQ_SLOW;
}

#endif /* __ARM_FEATURE_DSP */

#endif /* EL_DSP_INTERNAL_H */

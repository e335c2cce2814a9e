/*
 * el_mathf.h - exp and log in float32 from multiplies and adds only, so that the board and
 * the Python twin (edge_lls/board_train.py, which copies these lines) get the same bits;
 * libm's expf / logf differ between newlib, glibc and NumPy in the last place.
 *
 *   el_expf(x)   Cody-Waite reduction x = k ln2 + r (ln2 split in two, the high part with 11
 *                zero low bits so k * hi is exact for |k| <= 2^12), degree-6 Taylor
 *                polynomial in Horner form on |r| <= ln2 / 2, times 2^k built from its
 *                exponent bits; x is clamped to [-87, 88]. Relative error 2.4e-7 at most on
 *                200,001 points of [-80, 80] (tests/test_firmware_train.py asserts 1e-6).
 *   el_logf(x)   x > 0: x = m 2^e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(t),
 *                t = (m - 1) / (m + 1), |t| < 0.172, odd series to t^9; absolute error
 *                7.3e-6 at most for x in [2^-100, 2^100], where |log x| reaches 69 (the test
 *                asserts 2e-5).
 */
#ifndef EL_MATHF_H
#define EL_MATHF_H

#include <stdint.h>
#include <string.h>

static inline float el_f32_from_bits(uint32_t bits)
{
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

static inline uint32_t el_f32_bits(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

/* 2^k for k in [-126, 127]: a normal float32. */
static inline float el_pow2f(int32_t k)
{
    return el_f32_from_bits((uint32_t)(k + 127) << 23);
}

static inline float el_expf(float x)
{
    const float log2e = 1.44269502f, ln2_hi = 0.693145752f, ln2_lo = 1.42860677e-06f;
    float k, r, p;
    if (!(x > -87.0f)) { /* also NaN */
        x = -87.0f;
    }
    if (x > 88.0f) {
        x = 88.0f;
    }
    k = x * log2e + 0.5f;
    k = (float)(int32_t)k - ((float)(int32_t)k > k ? 1.0f : 0.0f); /* floor, k in [-126, 127] */
    r = x - k * ln2_hi;
    r = r - k * ln2_lo;
    p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    return p * el_pow2f((int32_t)k);
}

static inline float el_logf(float x)
{
    const float ln2 = 0.693147182f;
    uint32_t bits = el_f32_bits(x);
    int32_t e = (int32_t)((bits >> 23) & 0xffu) - 127;
    float m, t, t2, s;
    if (!(x > 1.17549435e-38f)) { /* zero, subnormal, negative, NaN: the loss is only reported */
        return -87.3365479f;
    }
    m = el_f32_from_bits((bits & 0x007fffffu) | 0x3f800000u); /* [1, 2) */
    if (m > 1.41421354f) {
        m = m * 0.5f;
        e = e + 1;
    }
    t = (m - 1.0f) / (m + 1.0f);
    t2 = t * t;
    s = 1.0f / 9.0f;
    s = s * t2 + 1.0f / 7.0f;
    s = s * t2 + 1.0f / 5.0f;
    s = s * t2 + 1.0f / 3.0f;
    s = s * t2 + 1.0f;
    return (float)e * ln2 + 2.0f * t * s;
}

#endif /* EL_MATHF_H */

/* el_lls_common.c - the small pieces the LLS head, the block update and the classifier share. */
#include <math.h>

#include "el_lls.h"

#include "el_mathf.h"

float el_weight_scale(int32_t multiplier, int32_t shift, float input_scale, float output_scale)
{
    float m = (float)multiplier * el_pow2f(shift - 31);
    return m * output_scale / input_scale;
}

float el_softmax_cross_entropy(const float *logits, uint32_t classes, float temperature, uint32_t label,
                               float *grad)
{
    float top = logits[0] / temperature, sum = 0.0f, target;
    uint32_t k;
    for (k = 1; k < classes; ++k) {
        float u = logits[k] / temperature;
        top = u > top ? u : top;
    }
    target = logits[label] / temperature - top; /* read before grad may overwrite logits */
    for (k = 0; k < classes; ++k) {
        grad[k] = el_expf(logits[k] / temperature - top);
        sum = sum + grad[k];
    }
    for (k = 0; k < classes; ++k) {
        float p = grad[k] / sum;
        grad[k] = (p - (k == label ? 1.0f : 0.0f)) / temperature;
    }
    return el_logf(sum) - target;
}

/* The step clamped to +-256 codes (no weight moves more in one step) and its uniform number
 * u; 0 with no number drawn for a zero step or a non-finite one (a channel whose scale is 0). */
static int drawn_step(float *step, float *u, uint32_t *rng)
{
    if (*step - *step != 0.0f || *step == 0.0f) {
        return 0;
    }
    *u = el_rng_uniform(rng);
    if (*step < -256.0f) {
        *step = -256.0f;
    }
    if (*step > 256.0f) {
        *step = 256.0f;
    }
    return 1;
}

static int32_t floor_to_int(float f)
{
    return (int32_t)f - ((float)(int32_t)f > f ? 1 : 0);
}

int8_t el_stochastic_round_step(int8_t q, float step, uint32_t *rng)
{
    float u;
    int32_t moved;
    if (!drawn_step(&step, &u, rng)) {
        return q; /* no step, and no random number drawn */
    }
    moved = floor_to_int(step + u) + q;
    return (int8_t)(moved < -127 ? -127 : moved > 127 ? 127 : moved);
}

int8_t el_fraction_round_step(int8_t q, int8_t *fraction, float step, uint32_t *rng)
{
    const int32_t most = 127 * 256;
    float u;
    int32_t master;
    if (!drawn_step(&step, &u, rng)) {
        return q;
    }
    /* 256 step is exact (a power of two, |256 step| <= 2^16) */
    master = floor_to_int(step * 256.0f + u) + 256 * (int32_t)q + (int32_t)*fraction;
    master = master < -most ? -most : master > most ? most : master;
    /* q = floor((M + 128) / 256) on a positive numerator (M + 128 + 2^15 >= 384) */
    q = (int8_t)((master + 128 + 32768) / 256 - 128);
    *fraction = (int8_t)(master - 256 * (int32_t)q);
    return q;
}

float el_rms_normalise(float g, float *v, float correction)
{
    if (v == NULL) {
        return g;
    }
    *v = 0.999f * *v + (1.0f - 0.999f) * (g * g);
    return g / (sqrtf(*v / correction) + 1e-8f);
}

float el_factored_total(const float *v, uint32_t rows)
{
    float total = 0.0f;
    uint32_t r;
    for (r = 0; r < rows; ++r) {
        total = total + v[r];
    }
    return total;
}

float el_factored_normalise(float g, float *v, uint32_t rows, uint32_t cols, uint32_t r, uint32_t c, float total,
                            float correction)
{
    const float history = total > 0.0f ? (v[r] * v[rows + c]) / total : 0.0f;
    const float g2 = g * g;
    float moment;
    v[rows + cols + c] = v[rows + cols + c] + g2;
    moment = 0.999f * history + (1.0f - 0.999f) * g2;
    return g / (sqrtf(moment / correction) + 1e-8f);
}

void el_factored_row_end(float *v, uint32_t r, float row_sum)
{
    v[r] = 0.999f * v[r] + (1.0f - 0.999f) * row_sum;
}

void el_factored_end(float *v, uint32_t rows, uint32_t cols)
{
    uint32_t c;
    for (c = 0; c < cols; ++c) {
        v[rows + c] = 0.999f * v[rows + c] + (1.0f - 0.999f) * v[rows + cols + c];
        v[rows + cols + c] = 0.0f;
    }
}

int32_t el_bias_limit(int32_t taps)
{
    int64_t room = (int64_t)INT32_MAX - (int64_t)taps * EL_KERNEL_MAX_PRODUCT;
    return room > 0 ? (int32_t)room : 0;
}

int32_t el_bias_step(int32_t bias, float step, int32_t limit)
{
    const float most = 1073741824.0f; /* 2^30: any int32 bias moves less in one step */
    float f;
    int64_t moved;
    if (step - step != 0.0f) { /* inf or NaN: a zero scale */
        step = 0.0f;
    }
    if (step < -most) {
        step = -most;
    }
    if (step > most) {
        step = most;
    }
    f = step + 0.5f;
    moved = (int64_t)(int32_t)f - ((float)(int32_t)f > f ? 1 : 0); /* round half up */
    moved += bias;
    return (int32_t)(moved < -(int64_t)limit ? -(int64_t)limit : moved > limit ? limit : moved);
}

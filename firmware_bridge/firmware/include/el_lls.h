/*
 * el_lls.h - the LLS rule's arithmetic on the chip: the local head and a block's update.
 *
 * Float32 only, every sum in the order written here, no fused multiply-add: the Python twin
 * (edge_lls/board_train.py) runs the same operations in the same order and gets the same
 * bits (tests/test_firmware_train.py). The rule is ../shared/docs/LLS.md, batch 1, SGD.
 *
 * Notation, for a block whose output Z (H,W,O) int8 has scale s_z and zero point z_z:
 *   v[t]   the adaptive average pool of the real output s_z * (Z - z_z) to p x p, flattened
 *          NHWC, t = (i*p + j)*O + o; cell (i, j) covers rows floor(i*H/p) ..
 *          ceil((i+1)*H/p) - 1 and the same for columns (PyTorch's windows; they overlap
 *          when p does not divide H). v[t] = ((float)sum / (float)count) * s_z.
 *   z      v / max(|v|, 1e-12), |v| = sqrtf(sum of v[t]^2, t ascending).
 *   y[k]   sum over t ascending of z[t] * B[k][t]; u[k] = y[k] / T.
 *   loss   CE(u, label) = log(sum exp(u - max u)) - (u[label] - max u).
 *   dL/dv  from dL/dy = (softmax(u) - onehot) / T: g_z[t] = sum over k ascending of
 *          dL/dy[k] * B[k][t]; g_v = (g_z - z * (z . g_z)) / |v| (g_z / 1e-12 below it).
 */
#ifndef EL_LLS_H
#define EL_LLS_H

#include <stdint.h>

#include "el_kernels.h"
#include "el_model_format.h"

/* xorshift32 (Marsaglia 2003): the stochastic rounding's random numbers, one per weight. */
static inline uint32_t el_rng_next(uint32_t *state)
{
    uint32_t x = *state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    *state = x;
    return x;
}

/* A uniform float in [0, 1) with 24 random bits: exact in float32. */
static inline float el_rng_uniform(uint32_t *state)
{
    return (float)(el_rng_next(state) >> 8) * 5.9604644775390625e-08f; /* 2^-24 */
}

/* The real scale of an int8 weight channel from its requantization: the kernel multiplies
 * by M = multiplier * 2^(shift - 31) ~ s_in * s_w / s_out, so s_w = M * s_out / s_in. The
 * exponent is exact: 2^(shift - 31) with shift in [-31, 31] is a normal float32. */
float el_weight_scale(int32_t multiplier, int32_t shift, float input_scale, float output_scale);

#define EL_LLS_MAX_CLASSES 64u /* classes an LLS head or the classifier may have */

/* The LLS head of one block output: returns the loss and fills grad_v[D] (dL/dv) and
 * logits[K] (y, before the temperature); v[D] is scratch (it ends holding g_z).
 * output (H,W,O) int8 NHWC with D = O*p*p; basis float32 [K][D]; K <= EL_LLS_MAX_CLASSES. */
float el_lls_head(const int8_t *output, const el_dims *dims, float scale, int32_t zero_point, uint32_t pool,
                  const float *basis, uint32_t classes, float temperature, uint32_t label, float *v,
                  float *grad_v, float *logits);

/* Softmax cross-entropy of logits[K] / temperature: returns the loss, writes dL/dlogits
 * ((softmax - onehot) / temperature) into grad. el_lls_head and the classifier use it. grad
 * may be logits itself (the classifier's step: dL/dlogits overwrites the logits in place). */
float el_softmax_cross_entropy(const float *logits, uint32_t classes, float temperature, uint32_t label,
                               float *grad);

/* One trainable dwsep block (depthwise KHxKW, channel multiplier 1, then pointwise 1x1
 * stride 1), its forward already run: X (its input), Y (the depthwise output) and Z (the
 * pointwise output) as the kernels wrote them. */
typedef struct {
    const el_conv_params *dw, *pw;               /* the image's records */
    int8_t *dw_weights;                          /* (1,KH,KW,C) in SRAM, updated */
    int32_t *dw_bias;                            /* (C,) in SRAM, updated */
    const int32_t *dw_multiplier, *dw_shift;
    int8_t *pw_weights;                          /* (O,1,1,C) in SRAM, updated */
    int32_t *pw_bias;                            /* (O,) */
    const int32_t *pw_multiplier, *pw_shift;
    float x_scale, y_scale, z_scale;             /* the three tensors' scales */
    const int8_t *x, *y, *z;                     /* (H,W,C), (H',W',C), (H',W',O) int8 */
    uint32_t pool;                               /* the head's p */
    const float *grad_v;                         /* dL/dv [O*p*p] from el_lls_head */
    float lr;
    uint32_t *rng;
    float *mid_grad;                             /* scratch float32 [H'*W'*C] */
    float *out_grad;                             /* scratch float32 [H'*W'] */
    int8_t *dw_fraction, *pw_fraction;           /* NULL: int8 codes only (the default); else each
                                                    weight's fraction in 1/256 of a code, laid out
                                                    as its weights (el_fraction_round_step) */
    float *dw_moment, *pw_moment;                /* NULL: SGD; else RMSprop's second moments, float32:
                                                    factored 0: one per weight, then the biases';
                                                    factored 1: el_factored's layout */
    int factored;                                /* the moments are factored (EL_TRAIN_RMSPROP_FACTORED):
                                                    a skipped pointwise row's moments decay */
    float correction;                            /* 1 - 0.999^t (RMSprop's bias correction) */
} el_lls_dwsep;

/* The block's local update, applied in place (batch 1, SGD on the real weights, stochastic
 * rounding). Straight-through requantization: a gradient passes an output code strictly
 * inside (act_min, act_max) and stops at a clamped one. A pointwise output channel whose
 * gradient is zero at every pixel (a ReLU that is off everywhere: most channels on a given
 * image) is skipped whole: none of its weights would move, no random number would be drawn
 * (el_stochastic_round_step) and it adds nothing to mid_grad. Order:
 *   pointwise, for each output channel o: the gradient at its pre-activation on every
 *   pixel, then its bias, then for each input channel c its weight's gradient
 *   (sum over pixels), the gradient reaching Y through the OLD weight (added into
 *   mid_grad), and the weight's step; then the depthwise weights (kh, kw, c order), then
 *   the depthwise biases. One random number per weight that moves, in that order. */
void el_lls_update_dwsep(const el_lls_dwsep *b);

/* A weight code after a real step `step` (in code units): q + floor(step + u), u uniform
 * in [0, 1) (unbiased), clamped to [-127, 127]. A zero step and a non-finite one (a channel
 * whose scale is 0) move nothing and draw no random number; a huge one is clamped to +-256. */
int8_t el_stochastic_round_step(int8_t q, float step, uint32_t *rng);

/* The gradient g itself with no moment (v NULL: SGD), else RMSprop's
 * g / (sqrt(*v / correction) + 1e-8) after *v = 0.999 *v + 0.001 g^2 (float32, in that order). */
float el_rms_normalise(float g, float *v, float correction);

/* EL_TRAIN_RMSPROP_FACTORED: the second moment of a rows x cols weight matrix (pointwise
 * O x C; depthwise KH*KW x C, a tap a row) as Adafactor's rank-1 estimate
 * v[r][c] ~ row[r] col[c] / sum(row), in float32
 *   v = [row (rows) | col (cols) | this step's column sums of g^2 (cols) | bias moments]
 * (rows + 2 cols + biases floats: 7,204 B for VWW's last block, 7,216 B padded; 273,408 B per weight).
 * An op's step: total = el_factored_total(v, rows) once; per weight el_factored_normalise,
 * its g^2 also added to the caller's row sum; after each row el_factored_row_end; after
 * every row el_factored_end. Its biases use el_rms_normalise at v + rows + 2 cols. */
float el_factored_total(const float *v, uint32_t rows);
/* g / (sqrt(m / correction) + 1e-8), m = 0.999 (row[r] col[c] / total) + 0.001 g^2 (the
 * history 0 while total is 0: the first step is sign(g), as RMSprop's); g^2 is added to
 * column c's sum for this step. */
float el_factored_normalise(float g, float *v, uint32_t rows, uint32_t cols, uint32_t r, uint32_t c, float total,
                            float correction);
/* row[r] = 0.999 row[r] + 0.001 row_sum (row_sum: this step's sum of g^2 over the row) */
void el_factored_row_end(float *v, uint32_t r, float row_sum);
/* col[c] = 0.999 col[c] + 0.001 (this step's column sum), which restarts at 0 */
void el_factored_end(float *v, uint32_t rows, uint32_t cols);

/* The same step on a 16-bit master: code q and its fraction f (in 1/256 of a code, [-128, 127])
 * hold M = 256 q + f; M moves by floor(256 step + u) (u as above: unbiased at 1/256 of a
 * code), is clamped to [-127 * 256, 127 * 256], and is split again with q = M / 256 rounded
 * half up. The forward reads q only. Zero and non-finite steps: as above. */
int8_t el_fraction_round_step(int8_t q, int8_t *fraction, float step, uint32_t *rng);

/* A bias code after a step (code units) rounded to nearest, kept within +-limit. */
int32_t el_bias_step(int32_t bias, float step, int32_t limit);

/* The largest |bias| a kernel with `taps` products per output accepts (el_kernel_accumulator_ok). */
int32_t el_bias_limit(int32_t taps);

#endif /* EL_LLS_H */

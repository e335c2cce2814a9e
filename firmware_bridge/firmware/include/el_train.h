/*
 * el_train.h - LLS fine-tuning on the chip: one sample at a time, no backward graph.
 *
 * A fine-tuning model image (edge-lls export --train-last N) holds a trainable tail: its
 * last N blocks, each with an LLS head (pool size p, a fixed basis float32[K][D] in NHWC
 * pooled order), and the classifier op. el_train_step() runs, for one int8 sample:
 *
 *   1. the frozen prefix (ops before the first trainable block) through the op runner;
 *   2. per trainable block, in order: its ops (int8, the TFLM-exact kernels, reading the
 *      block's weights from SRAM), its LLS head on its output, and at once its local
 *      update (el_lls_update_dwsep), so the next block reads the output the block computed
 *      before its update (the output is detached, as LLS prescribes);
 *   3. the ops between the last block and the classifier (the global pool), then the
 *      classifier in float32 on the dequantized pooled vector, trained by cross-entropy.
 *
 * The last block's learning signal (el_train_config.last_block):
 *   - EL_TRAIN_LAST_CLASSIFIER (0, the default): the last block learns from the classifier.
 *     Its step is: block forward (pre-update weights); the int8 head ops (the global pool);
 *     the classifier's float forward with its master weights (BEFORE the classifier's step);
 *     dlogits = softmax(logits) - onehot; g[c] = sum over k ascending of dlogits[k] * W[k][c]
 *     (W the float master, K x C); the block's update (el_lls_update_dwsep) with g as its
 *     dL/dv for a pool of 1 (every pixel of output channel c gets g[c] / (H*W)); then the
 *     classifier's update, unchanged. g is the gradient with respect to the classifier's
 *     real input x[c] = s_in * (P[c] - z_in), P the int8 pooled code; the block's LLS head
 *     with p = 1 would have formed v[c] = mean over pixels of s_z * (Z - z_z), which x equals
 *     up to the pool's int8 rounding. The step is straight through that requantization:
 *     dL/dv = dL/dx, scale factor 1 (both are real values; s_in and s_z drop out). The
 *     pool's clamp never binds: the mean of codes in [act_min, act_max] stays in that range.
 *     The block's reported loss is the classifier's cross-entropy. Needs the classifier to
 *     read the last block's globally pooled output: one AVERAGE_POOL_2D of the whole map to
 *     1 x 1 x O (RESHAPEs around it), O = the classifier's depth (else EL_TRAIN_ERR_HEAD).
 *     The LLS head's buffers hold it (g in feature_grad, x in features, dL/dlogits over the
 *     logits): the layout is the same. The pool may write its output over the depthwise
 *     output Y (the arena planner reuses Y's bytes), which the update reads: Y is parked in
 *     mid_grad (free until the update clears it) around the head ops and put back.
 *   - EL_TRAIN_LAST_LLS: every block, the last one too, learns from its own LLS head (the
 *     rule as published).
 *
 * Representation of the trainable weights (docs/firmware.md has the measured cost; with
 * config.fractions = 1 each block weight also keeps an int8 fraction, el_fraction_round_step):
 *   - block weights stay int8 with their exported per-channel scales, copied from flash to
 *     SRAM at el_train_init and updated in place: a real-valued SGD step (tiny-training's
 *     quantization-aware scaling: the update of code q is -lr * dL/dW_real / s_w, the real
 *     step divided by the channel's scale) with stochastic rounding (el_rng, xorshift32),
 *     clamped to [-127, 127]; int32 biases step by the same rule rounded to nearest and are
 *     kept inside the kernels' accumulator bound;
 *   - the classifier has a float32 master copy (K x C, K) in SRAM, re-quantized to its
 *     int8 weights and int32 biases (same scales) after every step, so inference runs int8.
 *   No gradient tensor is stored: the pointwise conv's rows are updated as their gradients
 *   are computed, and only the gradient reaching the depthwise output (H x W x C floats)
 *   is kept, to update the depthwise weights after.
 *
 * The float arithmetic is fixed by construction: float32 only, in a stated order, no fused
 * multiply-add (-ffp-contract=off), exp and log from el_mathf.h (mul / add only), sqrtf and
 * division correctly rounded (IEEE 754: the Cortex-M FPU and x86 SSE agree). The Python
 * twin (edge_lls/board_train.py) computes the same operations in the same order and its
 * results are asserted equal bit for bit (tests/test_firmware_train.py).
 *
 * Memory: one caller-owned buffer of el_train_buffer_bytes(model) bytes (16-byte aligned)
 * holds the SRAM copies, the classifier master and the step's scratch; its layout is
 * el_train_layout and edge_lls/board_train.py train_layout() computes the same sizes.
 */
#ifndef EL_TRAIN_H
#define EL_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "el_model.h"
#include "el_runner.h"

#define EL_TRAIN_MAX_BLOCKS 4u /* trainable blocks a tail may hold (2 ops each) */

typedef enum {
    EL_TRAIN_OK = 0,
    EL_TRAIN_ERR_TAIL,    /* the model has no trainable tail, or more than EL_TRAIN_MAX_BLOCKS */
    EL_TRAIN_ERR_BLOCK,   /* a block is not a dwsep block the update covers (failed_block) */
    EL_TRAIN_ERR_HEAD,    /* an LLS head or the classifier does not fit its tensors */
    EL_TRAIN_ERR_BUFFER,  /* buffer NULL, misaligned or smaller than el_train_buffer_bytes */
    EL_TRAIN_ERR_LABEL,   /* label >= num_classes */
    EL_TRAIN_ERR_RUNNER   /* the op runner failed (runner.failed_op, kernel_status) */
} el_train_status;

/* el_train_config.last_block: the last trainable block's learning signal (see above). */
typedef enum {
    EL_TRAIN_LAST_CLASSIFIER = 0, /* the classifier's cross-entropy gradient at its input (default) */
    EL_TRAIN_LAST_LLS = 1         /* the block's own LLS head */
} el_train_last_block;

/* el_train_config.optimizer: the trainable blocks' step (the classifier keeps SGD). */
typedef enum {
    EL_TRAIN_SGD = 0,    /* lr * g (the default; no state) */
    EL_TRAIN_RMSPROP = 1, /* lr * g / (sqrt(v / (1 - 0.999^t)) + 1e-8), v = 0.999 v + 0.001 g^2: a
                             float32 second moment per block weight and bias in the buffer; a
                             skipped pointwise row keeps its moments (el_rms_normalise) */
    EL_TRAIN_RMSPROP_FACTORED = 2 /* the same step, each weight matrix's v as row and column
                                     sums (el_factored_normalise): rows + 2 cols + biases
                                     float32 an op, 7 KB for VWW's last block (RMSprop: 273 KB);
                                     a skipped pointwise row's moments decay */
} el_train_optimizer;

typedef struct {
    float lr;            /* block learning rate (SGD on the real weights) */
    float classifier_lr; /* classifier learning rate */
    uint32_t seed;       /* stochastic rounding; 0 is replaced by 1 (xorshift32 needs a nonzero state) */
    uint32_t last_block; /* el_train_last_block; any other value is refused (EL_TRAIN_ERR_HEAD) */
    uint32_t fractions;  /* 0: block weights int8, stochastic rounding at the code (the default);
                            1: plus an int8 fraction per block weight (16-bit masters, 1/256 of a
                            code; the buffer grows: el_train_buffer_bytes_config); else refused
                            (EL_TRAIN_ERR_HEAD) */
    uint32_t optimizer;  /* el_train_optimizer: the blocks' step; else refused (EL_TRAIN_ERR_HEAD) */
} el_train_config;

/* Byte offsets of each part in the buffer; every part on a 16-byte boundary. */
typedef struct {
    uint32_t op_weights[2 * EL_TRAIN_MAX_BLOCKS + 1]; /* block ops in order, then the classifier */
    uint32_t op_bias[2 * EL_TRAIN_MAX_BLOCKS + 1];
    uint32_t classifier_master;  /* float32 [K][C] */
    uint32_t classifier_bias;    /* float32 [K] */
    uint32_t input_copy;         /* int8, the largest block input */
    uint32_t mid_grad;           /* float32, the largest depthwise output (H*W*C) */
    uint32_t out_grad;           /* float32, the largest block output's H*W */
    uint32_t features;           /* float32, max(D, C): the pooled vector v, the classifier input */
    uint32_t feature_grad;       /* float32, max D */
    uint32_t logits;             /* float32 [K]: the logits, then the classifier's dL/dlogits */
    uint32_t total;              /* the buffer without fractions (config.fractions = 0) */
    uint32_t op_fraction[2 * EL_TRAIN_MAX_BLOCKS]; /* int8, one per block weight, after total */
    uint32_t op_moment[2 * EL_TRAIN_MAX_BLOCKS];   /* float32 moments (el_train_moment_floats), after them */
    uint32_t total_config;       /* the buffer for the config planned (el_train_plan_config) */
} el_train_layout;

typedef struct {
    float block_loss[EL_TRAIN_MAX_BLOCKS]; /* each block's LLS loss before its update (the last
                                              block from the classifier: the classifier's CE) */
    float loss;                            /* the classifier's cross-entropy before its update */
    uint32_t predicted;                    /* argmax of the classifier's float logits (first max) */
} el_train_stats;

typedef struct {
    el_runner *runner;
    const el_model *model;
    el_train_config config;
    uint32_t rng;
    uint32_t op_count;         /* trainable ops: 2 per block + the classifier */
    el_runner_patch patches[2 * EL_TRAIN_MAX_BLOCKS + 1]; /* their SRAM copies, for the runner */
    uint32_t weight_count[2 * EL_TRAIN_MAX_BLOCKS + 1];   /* int8 weights of patches[i] */
    uint32_t bias_count[2 * EL_TRAIN_MAX_BLOCKS + 1];     /* int32 biases of patches[i] */
    el_train_layout layout;
    uint8_t *buffer;
    uint32_t failed_block;
    uint32_t steps;
    float decay_power;         /* 0.999^steps in float32 (EL_TRAIN_RMSPROP's bias correction) */
} el_trainer;

/* The buffer's layout and size for a model (0 with status set when the tail is not one
 * el_train covers: then el_train_init would refuse it with the same status). */
el_train_status el_train_plan(const el_model *m, el_train_layout *layout, uint32_t *failed_block);
size_t el_train_buffer_bytes(const el_model *m);
/* The same for a config (fractions and moments after the rest, in that order, when it asks
 * for them): layout->total_config is its buffer; el_train_plan plans the default config. */
el_train_status el_train_plan_config(const el_model *m, const el_train_config *config, el_train_layout *layout,
                                     uint32_t *failed_block);
size_t el_train_buffer_bytes_config(const el_model *m, const el_train_config *config);
/* The float32 moments a block op keeps under an optimizer: 0 (SGD), weights + biases (RMSprop),
 * rows + 2 cols + biases (factored: pointwise O x C, depthwise KH*KW x C). */
uint32_t el_train_moment_floats(const el_conv_params *op, uint32_t optimizer);

/* Checks the tail, copies the trainable weights from the image into buffer, starts the
 * classifier's master from its dequantized int8 weights, and points the runner at the
 * copies (el_runner_patch), so that plain inference (el_runner_invoke) uses the learned
 * weights too. r must be initialised (el_runner_init) on the same model. */
el_train_status el_train_init(el_trainer *t, el_runner *r, uint8_t *buffer, size_t buffer_bytes,
                              const el_train_config *config);

/* One LLS step on one sample (the model's input, int8, el_runner_input_bytes bytes). */
el_train_status el_train_step(el_trainer *t, const int8_t *input, uint32_t label, el_train_stats *stats);

/* The same step from int8 features at the cut (the first trainable block's input tensor,
 * el_train_cut_bytes bytes) that the host computed: the frozen prefix is not run. */
el_train_status el_train_step_at_cut(el_trainer *t, const int8_t *features, uint32_t label, el_train_stats *stats);

/* The cut tensor's place in the runner's arena and its bytes (NULL / 0 without a tail). */
int8_t *el_train_cut(const el_runner *r);
uint32_t el_train_cut_bytes(const el_model *m);

const char *el_train_status_name(el_train_status status);

#endif /* EL_TRAIN_H */

/* el_train.c - one LLS fine-tuning step of a model image's trainable tail (el_train.h). */
#include "el_train.h"

#include <string.h>

#include "el_lls.h"

const char *el_train_status_name(el_train_status status)
{
    static const char *const names[] = {"ok",
                                        "no trainable tail (or too many blocks)",
                                        "block is not a trainable dwsep block",
                                        "head or classifier does not fit its tensors",
                                        "training buffer too small or misaligned",
                                        "label out of range",
                                        "op runner failed"};
    return (unsigned)status < sizeof names / sizeof names[0] ? names[status] : "unknown status";
}

static uint32_t align16(uint32_t n)
{
    return (n + 15u) & ~15u;
}

static uint32_t volume(const el_dims *d)
{
    return (uint32_t)d->n * (uint32_t)d->h * (uint32_t)d->w * (uint32_t)d->c;
}

static uint32_t most(uint32_t a, uint32_t b)
{
    return a > b ? a : b;
}

static const el_conv_params *conv_record(const el_model *m, uint32_t op, uint32_t opcode)
{
    return op < m->header->op_count && m->ops[op].opcode == opcode ? (const el_conv_params *)el_model_record(m, op)
                                                                   : NULL;
}

/* A dwsep block el_lls_update_dwsep covers: depthwise (multiplier 1) into a 1x1 stride-1
 * unpadded conv, whose output is the tensor the head pools, with D = O*p*p. */
static int dwsep_ok(const el_model *m, const el_tail_block *b)
{
    const el_conv_params *dw = conv_record(m, b->first_op, EL_OP_DEPTHWISE_CONV_2D);
    const el_conv_params *pw = conv_record(m, b->first_op + 1u, EL_OP_CONV_2D);
    if (b->kind != EL_BLOCK_DWSEP || b->op_count != 2u || dw == NULL || pw == NULL) {
        return 0;
    }
    return dw->ch_mult == 1 && dw->output == pw->input && pw->output == b->output && pw->filter_dims.h == 1 &&
           pw->filter_dims.w == 1 && pw->stride_h == 1 && pw->stride_w == 1 && pw->pad_h == 0 && pw->pad_w == 0 &&
           pw->input_dims.h == pw->output_dims.h && pw->input_dims.w == pw->output_dims.w &&
           dw->input_dims.n == 1 && b->pool_size >= 1u && b->pool_size <= 16u &&
           b->feature_dim == (uint32_t)pw->output_dims.c * b->pool_size * b->pool_size;
}

el_train_status el_train_plan(const el_model *m, el_train_layout *layout, uint32_t *failed_block)
{
    return el_train_plan_config(m, NULL, layout, failed_block);
}

el_train_status el_train_plan_config(const el_model *m, const el_train_config *config, el_train_layout *layout,
                                     uint32_t *failed_block)
{
    const el_tail_header *tail = m->tail;
    const el_fc_params *fc;
    uint32_t at = 0, k, n = 0, input_copy = 0, mid = 0, out = 0, features = 0; /* the largest D */
    memset(layout, 0, sizeof *layout);
    *failed_block = 0;
    if (tail == NULL || tail->block_count < 1u || tail->block_count > EL_TRAIN_MAX_BLOCKS) {
        return EL_TRAIN_ERR_TAIL;
    }
    if (tail->num_classes < 2u || tail->num_classes > EL_LLS_MAX_CLASSES ||
        tail->classifier_op >= m->header->op_count || m->ops[tail->classifier_op].opcode != EL_OP_FULLY_CONNECTED) {
        return EL_TRAIN_ERR_HEAD;
    }
    for (k = 0; k < tail->block_count; ++k) {
        const el_tail_block *b = &m->tail_blocks[k];
        const el_conv_params *dw, *pw;
        *failed_block = k;
        if (!dwsep_ok(m, b) || (k > 0 && b->first_op != m->tail_blocks[k - 1u].first_op + 2u) ||
            b->first_op + 2u > tail->classifier_op) {
            return EL_TRAIN_ERR_BLOCK;
        }
        dw = conv_record(m, b->first_op, EL_OP_DEPTHWISE_CONV_2D);
        pw = conv_record(m, b->first_op + 1u, EL_OP_CONV_2D);
        layout->op_weights[n] = at;
        at += align16(volume(&dw->filter_dims));
        layout->op_bias[n++] = at;
        at += align16(4u * (uint32_t)dw->output_dims.c);
        layout->op_weights[n] = at;
        at += align16(volume(&pw->filter_dims));
        layout->op_bias[n++] = at;
        at += align16(4u * (uint32_t)pw->output_dims.c);
        input_copy = most(input_copy, volume(&dw->input_dims));
        mid = most(mid, volume(&pw->input_dims));
        out = most(out, (uint32_t)pw->output_dims.h * (uint32_t)pw->output_dims.w);
        features = most(features, b->feature_dim);
    }
    *failed_block = 0;
    fc = (const el_fc_params *)el_model_record(m, tail->classifier_op);
    if ((uint32_t)fc->filter_dims.c != tail->num_classes || fc->filter_offset != 0 || fc->input_dims.n != 1) {
        return EL_TRAIN_ERR_HEAD;
    }
    layout->op_weights[n] = at;
    at += align16((uint32_t)fc->filter_dims.n * tail->num_classes);
    layout->op_bias[n] = at;
    at += align16(4u * tail->num_classes);
    layout->classifier_master = at;
    at += align16(4u * (uint32_t)fc->filter_dims.n * tail->num_classes);
    layout->classifier_bias = at;
    at += align16(4u * tail->num_classes);
    layout->input_copy = at;
    at += align16(input_copy);
    layout->mid_grad = at;
    at += align16(4u * mid);
    layout->out_grad = at;
    at += align16(4u * out);
    layout->features = at;
    at += align16(4u * most(features, (uint32_t)fc->filter_dims.n));
    layout->feature_grad = at;
    at += align16(4u * features);
    layout->logits = at;
    at += align16(4u * tail->num_classes);
    layout->total = at;
    for (k = 0, n = 0; config != NULL && config->fractions && k < tail->block_count; ++k) {
        const uint32_t first = m->tail_blocks[k].first_op; /* after the rest: a plan without them is a prefix */
        layout->op_fraction[n++] = at;
        at += align16(volume(&conv_record(m, first, EL_OP_DEPTHWISE_CONV_2D)->filter_dims));
        layout->op_fraction[n++] = at;
        at += align16(volume(&conv_record(m, first + 1u, EL_OP_CONV_2D)->filter_dims));
    }
    for (k = 0, n = 0; config != NULL && config->optimizer != EL_TRAIN_SGD && k < tail->block_count; ++k) {
        const el_conv_params *dw = conv_record(m, m->tail_blocks[k].first_op, EL_OP_DEPTHWISE_CONV_2D);
        const el_conv_params *pw = conv_record(m, m->tail_blocks[k].first_op + 1u, EL_OP_CONV_2D);
        layout->op_moment[n++] = at;
        at += align16(4u * el_train_moment_floats(dw, config->optimizer));
        layout->op_moment[n++] = at;
        at += align16(4u * el_train_moment_floats(pw, config->optimizer));
    }
    layout->total_config = at;
    return EL_TRAIN_OK;
}

uint32_t el_train_moment_floats(const el_conv_params *op, uint32_t optimizer)
{
    const uint32_t biases = (uint32_t)op->output_dims.c, cols = (uint32_t)op->filter_dims.c;
    /* a block's depthwise filter is (1, KH, KW, C): KH*KW rows; its pointwise (O, 1, 1, C): O */
    const uint32_t rows = (uint32_t)(op->filter_dims.n * op->filter_dims.h * op->filter_dims.w);
    if (optimizer == EL_TRAIN_RMSPROP) {
        return volume(&op->filter_dims) + biases;
    }
    if (optimizer == EL_TRAIN_RMSPROP_FACTORED) {
        return rows + 2u * cols + biases;
    }
    return 0;
}

size_t el_train_buffer_bytes(const el_model *m)
{
    el_train_layout layout;
    uint32_t failed;
    return el_train_plan(m, &layout, &failed) == EL_TRAIN_OK ? layout.total : 0u;
}

size_t el_train_buffer_bytes_config(const el_model *m, const el_train_config *config)
{
    el_train_layout layout;
    uint32_t failed;
    return el_train_plan_config(m, config, &layout, &failed) == EL_TRAIN_OK ? layout.total_config : 0u;
}

static float tensor_scale(const el_model *m, uint32_t tensor)
{
    return m->tensors[tensor].scale;
}

/* Dequantized classifier weights and biases into the float masters. */
static void start_classifier(el_trainer *t, const el_fc_params *fc)
{
    const el_model *m = t->model;
    const uint32_t classes = m->tail->num_classes, depth = (uint32_t)fc->filter_dims.n;
    const int32_t *multiplier = (const int32_t *)el_model_at(m, fc->multiplier);
    const int32_t *shift = (const int32_t *)el_model_at(m, fc->shift);
    const float s_in = tensor_scale(m, fc->input), s_out = tensor_scale(m, fc->output);
    const int8_t *codes = t->patches[t->op_count - 1u].weights;
    const int32_t *bias = t->patches[t->op_count - 1u].bias;
    float *master = (float *)(t->buffer + t->layout.classifier_master);
    float *master_bias = (float *)(t->buffer + t->layout.classifier_bias);
    uint32_t k, c;
    for (k = 0; k < classes; ++k) {
        const float s_w = el_weight_scale(multiplier[k], shift[k], s_in, s_out);
        for (c = 0; c < depth; ++c) {
            master[k * depth + c] = s_w * (float)codes[k * depth + c];
        }
        master_bias[k] = (float)bias[k] * (s_in * s_w);
    }
}

/* The classifier reads the last block's globally pooled output: between them one
 * AVERAGE_POOL_2D of the block's whole output map to 1 x 1 x O, unpadded, and RESHAPEs
 * only; the classifier's depth is O. (EL_TRAIN_LAST_CLASSIFIER needs it.) */
static int global_pool_ok(const el_model *m)
{
    const el_tail_header *tail = m->tail;
    const el_tail_block *last = &m->tail_blocks[tail->block_count - 1u];
    const el_conv_params *pw = (const el_conv_params *)el_model_record(m, last->first_op + 1u);
    const el_fc_params *fc = (const el_fc_params *)el_model_record(m, tail->classifier_op);
    uint32_t op, pools = 0;
    for (op = last->first_op + 2u; op < tail->classifier_op; ++op) {
        if (m->ops[op].opcode == EL_OP_AVERAGE_POOL_2D) {
            const el_pool_params *p = (const el_pool_params *)el_model_record(m, op);
            if (p->input != pw->output || p->input_dims.h != pw->output_dims.h ||
                p->input_dims.w != pw->output_dims.w || p->filter_h != p->input_dims.h ||
                p->filter_w != p->input_dims.w || p->pad_h != 0 || p->pad_w != 0 || p->output_dims.h != 1 ||
                p->output_dims.w != 1 || p->output_dims.c != pw->output_dims.c) {
                return 0;
            }
            pools += 1u;
        } else if (m->ops[op].opcode != EL_OP_RESHAPE) {
            return 0;
        }
    }
    return pools == 1u && (uint32_t)fc->filter_dims.n == (uint32_t)pw->output_dims.c;
}

el_train_status el_train_init(el_trainer *t, el_runner *r, uint8_t *buffer, size_t buffer_bytes,
                              const el_train_config *config)
{
    const el_model *m = r->model;
    el_train_status status;
    uint32_t k, n;
    memset(t, 0, sizeof *t);
    t->runner = r;
    t->model = m;
    status = el_train_plan_config(m, config, &t->layout, &t->failed_block);
    if (status != EL_TRAIN_OK) {
        return status;
    }
    if (config->fractions > 1u || config->optimizer > EL_TRAIN_RMSPROP_FACTORED) {
        return EL_TRAIN_ERR_HEAD;
    }
    if (buffer == NULL || ((uintptr_t)buffer & 15u) != 0 || buffer_bytes < t->layout.total_config) {
        return EL_TRAIN_ERR_BUFFER;
    }
    if (config->last_block == EL_TRAIN_LAST_CLASSIFIER) {
        t->failed_block = m->tail->block_count - 1u;
        if (!global_pool_ok(m)) {
            return EL_TRAIN_ERR_HEAD;
        }
        t->failed_block = 0;
    } else if (config->last_block != EL_TRAIN_LAST_LLS) {
        return EL_TRAIN_ERR_HEAD;
    }
    t->buffer = buffer;
    t->config = *config;
    t->rng = config->seed != 0u ? config->seed : 1u;
    t->decay_power = 1.0f;
    for (k = 0, n = 0; k < m->tail->block_count; ++k) {
        uint32_t j;
        for (j = 0; j < 2u; ++j, ++n) {
            const uint32_t op = m->tail_blocks[k].first_op + j;
            const el_conv_params *p = (const el_conv_params *)el_model_record(m, op);
            int8_t *w = (int8_t *)(buffer + t->layout.op_weights[n]);
            int32_t *b = (int32_t *)(buffer + t->layout.op_bias[n]);
            memcpy(w, el_model_at(m, p->weights), volume(&p->filter_dims));
            memcpy(b, el_model_at(m, p->bias), 4u * (uint32_t)p->output_dims.c);
            t->patches[n].op = op;
            t->patches[n].weights = w;
            t->patches[n].bias = b;
            t->weight_count[n] = volume(&p->filter_dims);
            t->bias_count[n] = (uint32_t)p->output_dims.c;
            if (config->fractions) {
                memset(buffer + t->layout.op_fraction[n], 0, volume(&p->filter_dims)); /* M = 256 q */
            }
            if (config->optimizer != EL_TRAIN_SGD) {
                memset(buffer + t->layout.op_moment[n], 0, 4u * el_train_moment_floats(p, config->optimizer));
            }
        }
    }
    {
        const el_fc_params *fc = (const el_fc_params *)el_model_record(m, m->tail->classifier_op);
        int8_t *w = (int8_t *)(buffer + t->layout.op_weights[n]);
        int32_t *b = (int32_t *)(buffer + t->layout.op_bias[n]);
        memcpy(w, el_model_at(m, fc->weights), (uint32_t)fc->filter_dims.n * m->tail->num_classes);
        memcpy(b, el_model_at(m, fc->bias), 4u * m->tail->num_classes);
        t->patches[n].op = m->tail->classifier_op;
        t->patches[n].weights = w;
        t->patches[n].bias = b;
        t->weight_count[n] = (uint32_t)fc->filter_dims.n * m->tail->num_classes;
        t->bias_count[n] = m->tail->num_classes;
        t->op_count = n + 1u;
        start_classifier(t, fc);
    }
    el_runner_patch_ops(r, t->patches, t->op_count);
    return EL_TRAIN_OK;
}

static const int8_t *arena_tensor(const el_trainer *t, uint32_t tensor)
{
    return (const int8_t *)el_runner_tensor(t->runner, tensor);
}

/* The classifier's float logits of the dequantized pooled vector x (into features and
 * logits); returns the argmax (first max). */
static uint32_t classifier_forward(el_trainer *t)
{
    const el_model *m = t->model;
    const el_fc_params *fc = (const el_fc_params *)el_model_record(m, m->tail->classifier_op);
    const uint32_t classes = m->tail->num_classes, depth = (uint32_t)fc->filter_dims.n;
    const float s_in = tensor_scale(m, fc->input);
    const int8_t *pooled = arena_tensor(t, fc->input);
    float *x = (float *)(t->buffer + t->layout.features);
    float *logits = (float *)(t->buffer + t->layout.logits);
    const float *master = (const float *)(t->buffer + t->layout.classifier_master);
    const float *master_bias = (const float *)(t->buffer + t->layout.classifier_bias);
    uint32_t k, c, predicted = 0;
    for (c = 0; c < depth; ++c) {
        x[c] = s_in * (float)(pooled[c] + fc->input_offset);
    }
    for (k = 0; k < classes; ++k) {
        float y = 0.0f;
        for (c = 0; c < depth; ++c) {
            y = y + master[k * depth + c] * x[c];
        }
        logits[k] = y + master_bias[k];
        predicted = logits[k] > logits[predicted] ? k : predicted;
    }
    return predicted;
}

/* SGD on the classifier's masters with dL/dlogits grad and the input x (features), then the
 * int8 copies re-quantized with the exported scales. */
static void classifier_update(el_trainer *t, const float *grad)
{
    const el_model *m = t->model;
    const el_fc_params *fc = (const el_fc_params *)el_model_record(m, m->tail->classifier_op);
    const uint32_t classes = m->tail->num_classes, depth = (uint32_t)fc->filter_dims.n;
    const int32_t *multiplier = (const int32_t *)el_model_at(m, fc->multiplier);
    const int32_t *shift = (const int32_t *)el_model_at(m, fc->shift);
    const float s_in = tensor_scale(m, fc->input), s_out = tensor_scale(m, fc->output);
    const float lr = t->config.classifier_lr;
    const float *x = (const float *)(t->buffer + t->layout.features);
    float *master = (float *)(t->buffer + t->layout.classifier_master);
    float *master_bias = (float *)(t->buffer + t->layout.classifier_bias);
    int8_t *codes = (int8_t *)t->patches[t->op_count - 1u].weights;
    int32_t *bias = (int32_t *)t->patches[t->op_count - 1u].bias;
    const int32_t limit = el_bias_limit((int32_t)depth);
    uint32_t k, c;
    for (k = 0; k < classes; ++k) {
        const float s_w = el_weight_scale(multiplier[k], shift[k], s_in, s_out);
        for (c = 0; c < depth; ++c) {
            float *w = &master[k * depth + c];
            *w = *w - lr * (grad[k] * x[c]);
            codes[k * depth + c] = (int8_t)el_bias_step(0, *w / s_w, 127);
        }
        master_bias[k] = master_bias[k] - lr * grad[k];
        bias[k] = el_bias_step(0, master_bias[k] / (s_in * s_w), limit);
    }
}

/* The classifier's cross-entropy gradient at its input, with the masters before their step:
 * g[c] = sum over k ascending of grad[k] * W[k][c] (el_train.h: the last block's signal). */
static void classifier_input_grad(const el_trainer *t, const float *grad, float *g)
{
    const el_model *m = t->model;
    const el_fc_params *fc = (const el_fc_params *)el_model_record(m, m->tail->classifier_op);
    const uint32_t classes = m->tail->num_classes, depth = (uint32_t)fc->filter_dims.n;
    const float *master = (const float *)(t->buffer + t->layout.classifier_master);
    uint32_t k, c;
    for (c = 0; c < depth; ++c) {
        float s = 0.0f;
        for (k = 0; k < classes; ++k) {
            s = s + grad[k] * master[k * depth + c];
        }
        g[c] = s;
    }
}

/* One step from the model's input (features NULL: the prefix runs) or from int8 features at
 * the cut (the first trainable block's input tensor: the prefix is skipped). Either may
 * already be the arena's tensor itself (the bridge stages samples there): no copy then. */
static el_train_status train_step(el_trainer *t, const int8_t *input, const int8_t *features, uint32_t label,
                                  el_train_stats *stats)
{
    const el_model *m = t->model;
    const el_tail_header *tail = m->tail;
    el_runner *r = t->runner;
    const uint32_t last = tail->block_count - 1u;
    const int from_classifier = t->config.last_block == EL_TRAIN_LAST_CLASSIFIER;
    const uint32_t end = m->tail_blocks[last].first_op + 2u;
    /* the classifier's dL/dlogits overwrites its logits in place: no stack array (the stack
     * high water is that of el_lls_head / el_lls_update_dwsep under this frame) */
    float *grad = (float *)(t->buffer + t->layout.logits);
    const int moments = t->config.optimizer != EL_TRAIN_SGD; /* RMSprop's, whole or factored */
    float correction;
    uint32_t k;
    memset(stats, 0, sizeof *stats);
    if (t->buffer == NULL) {
        return EL_TRAIN_ERR_BUFFER; /* el_train_init did not succeed */
    }
    if (label >= tail->num_classes) {
        return EL_TRAIN_ERR_LABEL;
    }
    t->decay_power = t->decay_power * 0.999f; /* 0.999^t, as the twin's float32 product */
    correction = 1.0f - t->decay_power;
    if (features != NULL) {
        const el_conv_params *dw = (const el_conv_params *)el_model_record(m, m->tail_blocks[0].first_op);
        int8_t *cut = (int8_t *)(uintptr_t)arena_tensor(t, dw->input);
        if (cut != features) {
            memcpy(cut, features, volume(&dw->input_dims));
        }
    } else {
        if (el_runner_input(r) != input) {
            memcpy(el_runner_input(r), input, el_runner_input_bytes(r));
        }
        if (el_runner_invoke_range(r, 0, m->tail_blocks[0].first_op) != EL_RUNNER_OK) {
            return EL_TRAIN_ERR_RUNNER;
        }
    }
    for (k = 0; k < tail->block_count; ++k) {
        const el_tail_block *blk = &m->tail_blocks[k];
        const el_conv_params *dw = (const el_conv_params *)el_model_record(m, blk->first_op);
        const el_conv_params *pw = (const el_conv_params *)el_model_record(m, blk->first_op + 1u);
        int8_t *x_copy = (int8_t *)(t->buffer + t->layout.input_copy);
        float *v = (float *)(t->buffer + t->layout.features);
        float *grad_v = (float *)(t->buffer + t->layout.feature_grad);
        el_lls_dwsep update;
        /* the pointwise output may reuse the block input's bytes (the planner's choice) */
        memcpy(x_copy, arena_tensor(t, dw->input), volume(&dw->input_dims));
        if (el_runner_invoke_range(r, blk->first_op, blk->first_op + 2u) != EL_RUNNER_OK) {
            return EL_TRAIN_ERR_RUNNER;
        }
        if (from_classifier && k == last) {
            /* the head ops may write the pooled tensor over the depthwise output Y (the planner
             * reuses its bytes once the pointwise conv has read it), and the update reads Y:
             * Y waits in mid_grad (4 x its bytes; the update clears mid_grad first) meanwhile */
            const uint32_t y_bytes = volume(&pw->input_dims);
            int8_t *y_save = (int8_t *)(t->buffer + t->layout.mid_grad);
            memcpy(y_save, arena_tensor(t, pw->input), y_bytes);
            if (el_runner_invoke_range(r, end, tail->classifier_op) != EL_RUNNER_OK) {
                return EL_TRAIN_ERR_RUNNER;
            }
            stats->predicted = classifier_forward(t);
            stats->loss = el_softmax_cross_entropy(grad, tail->num_classes, 1.0f, label, grad);
            stats->block_loss[k] = stats->loss;
            /* dL/dv = dL/dx: straight through the pool's int8 requantization, factor 1 (el_train.h) */
            classifier_input_grad(t, grad, grad_v);
            memcpy(r->arena + m->tensors[pw->input].offset, y_save, y_bytes); /* Y back, the pool's bytes dead */
        } else {
            stats->block_loss[k] = el_lls_head(arena_tensor(t, pw->output), &pw->output_dims,
                                               tensor_scale(m, pw->output), pw->output_offset, blk->pool_size,
                                               (const float *)el_model_at(m, blk->basis), tail->num_classes,
                                               tail->temperature, label, v, grad_v,
                                               (float *)(t->buffer + t->layout.logits));
        }
        update.dw = dw;
        update.pw = pw;
        update.dw_weights = (int8_t *)t->patches[2u * k].weights;
        update.dw_bias = (int32_t *)t->patches[2u * k].bias;
        update.dw_multiplier = (const int32_t *)el_model_at(m, dw->multiplier);
        update.dw_shift = (const int32_t *)el_model_at(m, dw->shift);
        update.pw_weights = (int8_t *)t->patches[2u * k + 1u].weights;
        update.pw_bias = (int32_t *)t->patches[2u * k + 1u].bias;
        update.pw_multiplier = (const int32_t *)el_model_at(m, pw->multiplier);
        update.pw_shift = (const int32_t *)el_model_at(m, pw->shift);
        update.x_scale = tensor_scale(m, dw->input);
        update.y_scale = tensor_scale(m, dw->output);
        update.z_scale = tensor_scale(m, pw->output);
        update.x = x_copy;
        update.y = arena_tensor(t, pw->input);
        update.z = arena_tensor(t, pw->output);
        update.pool = from_classifier && k == last ? 1u : blk->pool_size; /* g: one value a channel */
        update.grad_v = grad_v;
        update.lr = t->config.lr;
        update.rng = &t->rng;
        update.mid_grad = (float *)(t->buffer + t->layout.mid_grad);
        update.out_grad = (float *)(t->buffer + t->layout.out_grad);
        update.dw_fraction = t->config.fractions ? (int8_t *)(t->buffer + t->layout.op_fraction[2u * k]) : NULL;
        update.pw_fraction = t->config.fractions ? (int8_t *)(t->buffer + t->layout.op_fraction[2u * k + 1u]) : NULL;
        update.dw_moment = moments ? (float *)(t->buffer + t->layout.op_moment[2u * k]) : NULL;
        update.pw_moment = moments ? (float *)(t->buffer + t->layout.op_moment[2u * k + 1u]) : NULL;
        update.factored = t->config.optimizer == EL_TRAIN_RMSPROP_FACTORED;
        update.correction = correction;
        el_lls_update_dwsep(&update);
    }
    if (!from_classifier) {
        if (el_runner_invoke_range(r, end, tail->classifier_op) != EL_RUNNER_OK) {
            return EL_TRAIN_ERR_RUNNER;
        }
        stats->predicted = classifier_forward(t);
        stats->loss = el_softmax_cross_entropy(grad, tail->num_classes, 1.0f, label, grad);
    }
    classifier_update(t, grad);
    t->steps += 1u;
    return EL_TRAIN_OK;
}

int8_t *el_train_cut(const el_runner *r)
{
    const el_model *m = r->model;
    const el_conv_params *dw;
    if (m->tail == NULL || m->tail->block_count == 0u) {
        return NULL;
    }
    dw = (const el_conv_params *)el_model_record(m, m->tail_blocks[0].first_op);
    return (int8_t *)(uintptr_t)el_runner_tensor(r, dw->input);
}

uint32_t el_train_cut_bytes(const el_model *m)
{
    if (m->tail == NULL || m->tail->block_count == 0u) {
        return 0;
    }
    return volume(&((const el_conv_params *)el_model_record(m, m->tail_blocks[0].first_op))->input_dims);
}

el_train_status el_train_step(el_trainer *t, const int8_t *input, uint32_t label, el_train_stats *stats)
{
    return train_step(t, input, NULL, label, stats);
}

el_train_status el_train_step_at_cut(el_trainer *t, const int8_t *features, uint32_t label, el_train_stats *stats)
{
    return train_step(t, NULL, features, label, stats);
}

/* el_runner.c - the op runner: a model image's ops through the kernels in one static arena. */
#include "el_runner.h"

#include <string.h>

#include "el_kernels_dsp.h"

/* The conv, depthwise and FC kernels: the DSP versions (SMLAD / SXTB16), which
 * el_kernels_dsp.h forwards to the plain ones on a core without the DSP extension (and the
 * host); built with -DEL_PLAIN_KERNELS (make KERNELS=plain), the reference versions, for
 * comparison. Both give the same bytes (tests/test_firmware_dsp.py, test_firmware_vww.py). */
#if defined(EL_PLAIN_KERNELS)
#define EL_CONV2D el_conv2d_s8
#define EL_DEPTHWISE el_depthwise_conv2d_s8
#define EL_FULLY_CONNECTED el_fully_connected_s8
#define EL_CONV2D_SCRATCH el_conv2d_s8_get_buffer_size
#define EL_DEPTHWISE_SCRATCH el_depthwise_conv2d_s8_get_buffer_size
#define EL_FULLY_CONNECTED_SCRATCH el_fully_connected_s8_get_buffer_size
#else
#define EL_CONV2D el_conv2d_s8_dsp
#define EL_DEPTHWISE el_depthwise_conv2d_s8_dsp
#define EL_FULLY_CONNECTED el_fully_connected_s8_dsp
#define EL_CONV2D_SCRATCH el_conv2d_s8_dsp_get_buffer_size
#define EL_DEPTHWISE_SCRATCH el_depthwise_conv2d_s8_dsp_get_buffer_size
#define EL_FULLY_CONNECTED_SCRATCH el_fully_connected_s8_dsp_get_buffer_size
#endif

const char *el_runner_status_name(el_runner_status status)
{
    static const char *const names[] = {"ok",
                                        "arena too small or misaligned",
                                        "scratch too small or misaligned",
                                        "model not open or its input / output not int8",
                                        "record does not fit its tensors",
                                        "output overlaps input",
                                        "unknown opcode",
                                        "kernel refused its record",
                                        "stopped by the hook"};
    return (unsigned)status < sizeof names / sizeof names[0] ? names[status] : "unknown status";
}

/* n*h*w*c, or -1 when a dim is < 1 or the product passes 2^32 (more than any tensor holds). */
static int64_t volume(const el_dims *d)
{
    const int32_t dims[4] = {d->n, d->h, d->w, d->c};
    int64_t v = 1;
    int i;
    for (i = 0; i < 4; ++i) {
        if (dims[i] < 1) {
            return -1;
        }
        v *= dims[i];
        if (v > ((int64_t)1 << 32)) {
            return -1;
        }
    }
    return v;
}

/* A runtime int8 tensor of exactly `elements` bytes; a rank-4 tensor must have dims d when
 * d is given. */
static int fits(const el_model *m, uint32_t index, int64_t elements, const el_dims *d)
{
    const el_tensor *t;
    if (index >= m->header->tensor_count) {
        return 0;
    }
    t = &m->tensors[index];
    if ((t->flags & EL_TENSOR_CONSTANT) || t->type != EL_TYPE_INT8 || elements < 1 || (int64_t)t->bytes != elements) {
        return 0;
    }
    if (d != NULL && t->rank == 4u &&
        (t->dims[0] != d->n || t->dims[1] != d->h || t->dims[2] != d->w || t->dims[3] != d->c)) {
        return 0;
    }
    return 1;
}

static int both_fit(const el_model *m, uint32_t in, const el_dims *in_dims, uint32_t out, const el_dims *out_dims)
{
    return fits(m, in, volume(in_dims), in_dims) && fits(m, out, volume(out_dims), out_dims);
}

/* The record of op i against its tensors; *in / *out get its tensor indices. */
static el_runner_status check_record(const el_model *m, uint32_t i, uint32_t *in, uint32_t *out)
{
    const void *record = el_model_record(m, i);
    int ok;
    memcpy(in, record, sizeof *in); /* every record starts with input, output */
    memcpy(out, (const uint8_t *)record + sizeof *in, sizeof *out);
    switch (m->ops[i].opcode) {
    case EL_OP_CONV_2D:
    case EL_OP_DEPTHWISE_CONV_2D: {
        const el_conv_params *p = (const el_conv_params *)record;
        ok = both_fit(m, p->input, &p->input_dims, p->output, &p->output_dims);
        break;
    }
    case EL_OP_FULLY_CONNECTED: {
        const el_fc_params *p = (const el_fc_params *)record;
        /* (N, depth) in, (N, out) out: the tensors may be rank 2, so volumes only */
        ok = fits(m, p->input, volume(&p->input_dims), NULL) && fits(m, p->output, volume(&p->output_dims), NULL);
        break;
    }
    case EL_OP_AVERAGE_POOL_2D:
    case EL_OP_MAX_POOL_2D: {
        const el_pool_params *p = (const el_pool_params *)record;
        ok = both_fit(m, p->input, &p->input_dims, p->output, &p->output_dims);
        break;
    }
    case EL_OP_PAD: {
        const el_pad_params *p = (const el_pad_params *)record;
        ok = both_fit(m, p->input, &p->input_dims, p->output, &p->output_dims);
        break;
    }
    case EL_OP_SOFTMAX: {
        const el_softmax_params *p = (const el_softmax_params *)record;
        int64_t n = p->rows >= 1 && p->depth >= 1 ? (int64_t)p->rows * p->depth : -1;
        ok = fits(m, p->input, n, NULL) && fits(m, p->output, n, NULL);
        break;
    }
    case EL_OP_RESHAPE: {
        const el_reshape_params *p = (const el_reshape_params *)record;
        ok = fits(m, p->input, p->size, NULL) && fits(m, p->output, p->size, NULL);
        break;
    }
    case EL_OP_LEAKY_RELU: {
        const el_leaky_relu_params *p = (const el_leaky_relu_params *)record;
        ok = fits(m, p->input, p->size, NULL) && fits(m, p->output, p->size, NULL);
        break;
    }
    default: return EL_RUNNER_ERR_OPCODE;
    }
    return ok ? EL_RUNNER_OK : EL_RUNNER_ERR_RECORD;
}

static size_t op_scratch(const el_model *m, uint32_t i)
{
    const void *record = el_model_record(m, i);
    switch (m->ops[i].opcode) {
    case EL_OP_CONV_2D: return EL_CONV2D_SCRATCH((const el_conv_params *)record);
    case EL_OP_DEPTHWISE_CONV_2D: return EL_DEPTHWISE_SCRATCH((const el_conv_params *)record);
    case EL_OP_FULLY_CONNECTED: return EL_FULLY_CONNECTED_SCRATCH((const el_fc_params *)record);
    case EL_OP_AVERAGE_POOL_2D: return el_avg_pool_s8_get_buffer_size((const el_pool_params *)record);
    case EL_OP_MAX_POOL_2D: return el_max_pool_s8_get_buffer_size((const el_pool_params *)record);
    default: return 0u;
    }
}

size_t el_runner_scratch_bytes(const el_model *m)
{
    size_t most = 0;
    uint32_t i;
    for (i = 0; i < m->header->op_count; ++i) {
        size_t need = op_scratch(m, i);
        most = need > most ? need : most;
    }
    return most;
}

el_runner_status el_runner_init(el_runner *r, const el_model *m, uint8_t *arena, size_t arena_bytes, void *scratch,
                                size_t scratch_bytes)
{
    uint32_t i;
    memset(r, 0, sizeof *r);
    r->model = m;
    if (m == NULL || m->header == NULL) {
        return EL_RUNNER_ERR_MODEL;
    }
    if (arena == NULL || ((uintptr_t)arena & (EL_MODEL_ALIGN - 1u)) != 0 || arena_bytes < m->header->arena_bytes) {
        return EL_RUNNER_ERR_ARENA;
    }
    if ((scratch == NULL && scratch_bytes != 0) || ((uintptr_t)scratch & 3u) != 0 ||
        scratch_bytes < el_runner_scratch_bytes(m)) {
        return EL_RUNNER_ERR_SCRATCH;
    }
    if (!fits(m, m->header->input_tensor, m->tensors[m->header->input_tensor].bytes, NULL) ||
        !fits(m, m->header->output_tensor, m->tensors[m->header->output_tensor].bytes, NULL)) {
        return EL_RUNNER_ERR_MODEL;
    }
    for (i = 0; i < m->header->op_count; ++i) {
        uint32_t in, out;
        el_runner_status status = check_record(m, i, &in, &out);
        r->failed_op = i;
        if (status != EL_RUNNER_OK) {
            return status;
        }
        if (m->ops[i].opcode != EL_OP_RESHAPE) {
            const el_tensor *a = &m->tensors[in], *b = &m->tensors[out];
            if ((uint64_t)a->offset < (uint64_t)b->offset + b->bytes &&
                (uint64_t)b->offset < (uint64_t)a->offset + a->bytes) {
                return EL_RUNNER_ERR_OVERLAP;
            }
        }
    }
    r->failed_op = 0;
    r->arena = arena;
    r->arena_bytes = arena_bytes;
    r->ctx.buf = scratch_bytes ? scratch : NULL;
    r->ctx.size = scratch_bytes;
    return EL_RUNNER_OK;
}

const void *el_runner_tensor(const el_runner *r, uint32_t tensor)
{
    const el_tensor *t = &r->model->tensors[tensor];
    return (t->flags & EL_TENSOR_CONSTANT) ? el_model_at(r->model, t->offset) : (const void *)(r->arena + t->offset);
}

int8_t *el_runner_input(const el_runner *r)
{
    return (int8_t *)(r->arena + r->model->tensors[r->model->header->input_tensor].offset);
}

uint32_t el_runner_input_bytes(const el_runner *r)
{
    return r->model->tensors[r->model->header->input_tensor].bytes;
}

const int8_t *el_runner_output(const el_runner *r)
{
    return (const int8_t *)(r->arena + r->model->tensors[r->model->header->output_tensor].offset);
}

uint32_t el_runner_output_bytes(const el_runner *r)
{
    return r->model->tensors[r->model->header->output_tensor].bytes;
}

static int8_t *activation(const el_runner *r, uint32_t tensor)
{
    return (int8_t *)(r->arena + r->model->tensors[tensor].offset);
}

static const int8_t *weights_at(const el_model *m, uint32_t offset)
{
    return (const int8_t *)el_model_at(m, offset);
}

/* Image arrays are 16-byte aligned in a 16-byte aligned image (el_model_open checks both). */
static const int32_t *words_at(const el_model *m, uint32_t offset)
{
    return (const int32_t *)el_model_at(m, offset);
}

void el_runner_patch_ops(el_runner *r, const el_runner_patch *patches, uint32_t count)
{
    r->patches = patches;
    r->patch_count = patches != NULL ? count : 0u;
}

/* Op i's weights and bias: its patch's, or the image's arrays. */
static void parameters(const el_runner *r, uint32_t i, uint32_t weights, uint32_t bias, const int8_t **w,
                       const int32_t **b)
{
    uint32_t k;
    for (k = 0; k < r->patch_count; ++k) {
        if (r->patches[k].op == i) {
            *w = r->patches[k].weights;
            *b = r->patches[k].bias;
            return;
        }
    }
    *w = weights_at(r->model, weights);
    *b = words_at(r->model, bias);
}

static el_kernel_status run_op(el_runner *r, uint32_t i, uint32_t *out)
{
    const el_model *m = r->model;
    const void *record = el_model_record(m, i);
    const int8_t *w;
    const int32_t *b;
    switch (m->ops[i].opcode) {
    case EL_OP_CONV_2D:
    case EL_OP_DEPTHWISE_CONV_2D: {
        const el_conv_params *p = (const el_conv_params *)record;
        *out = p->output;
        parameters(r, i, p->weights, p->bias, &w, &b);
        return (m->ops[i].opcode == EL_OP_CONV_2D ? EL_CONV2D : EL_DEPTHWISE)(
            &r->ctx, p, activation(r, p->input), w, b, words_at(m, p->multiplier), words_at(m, p->shift),
            activation(r, p->output));
    }
    case EL_OP_FULLY_CONNECTED: {
        const el_fc_params *p = (const el_fc_params *)record;
        *out = p->output;
        parameters(r, i, p->weights, p->bias, &w, &b);
        return EL_FULLY_CONNECTED(&r->ctx, p, activation(r, p->input), w, b, words_at(m, p->multiplier),
                                     words_at(m, p->shift), activation(r, p->output));
    }
    case EL_OP_AVERAGE_POOL_2D: {
        const el_pool_params *p = (const el_pool_params *)record;
        *out = p->output;
        return el_avg_pool_s8(&r->ctx, p, activation(r, p->input), activation(r, p->output));
    }
    case EL_OP_MAX_POOL_2D: {
        const el_pool_params *p = (const el_pool_params *)record;
        *out = p->output;
        return el_max_pool_s8(&r->ctx, p, activation(r, p->input), activation(r, p->output));
    }
    case EL_OP_SOFTMAX: {
        const el_softmax_params *p = (const el_softmax_params *)record;
        *out = p->output;
        return el_softmax_s8(p, activation(r, p->input), activation(r, p->output));
    }
    case EL_OP_PAD: {
        const el_pad_params *p = (const el_pad_params *)record;
        *out = p->output;
        return el_pad_s8(p, activation(r, p->input), activation(r, p->output));
    }
    case EL_OP_LEAKY_RELU: {
        const el_leaky_relu_params *p = (const el_leaky_relu_params *)record;
        *out = p->output;
        return el_leaky_relu_s8(p, activation(r, p->input), activation(r, p->output));
    }
    default: { /* EL_OP_RESHAPE: the planner gives the output the input's bytes; copy if not */
        const el_reshape_params *p = (const el_reshape_params *)record;
        int8_t *from = activation(r, p->input), *to = activation(r, p->output);
        *out = p->output;
        if (from != to) {
            memmove(to, from, (size_t)p->size);
        }
        return EL_KERNEL_OK;
    }
    }
}

el_runner_status el_runner_invoke(el_runner *r)
{
    return r->arena == NULL ? EL_RUNNER_ERR_ARENA : el_runner_invoke_range(r, 0, r->model->header->op_count);
}

el_runner_status el_runner_invoke_range(el_runner *r, uint32_t first, uint32_t end)
{
    const el_model *m = r->model;
    uint32_t i;
    if (r->arena == NULL) {
        return EL_RUNNER_ERR_ARENA; /* el_runner_init did not succeed */
    }
    if (first > end || end > m->header->op_count) {
        return EL_RUNNER_ERR_MODEL;
    }
    for (i = first; i < end; ++i) {
        uint32_t out = 0;
        r->failed_op = i;
        r->kernel_status = run_op(r, i, &out);
        if (r->kernel_status != EL_KERNEL_OK) {
            return EL_RUNNER_ERR_KERNEL;
        }
        if (r->hook != NULL && r->hook(r->hook_user, i, activation(r, out), m->tensors[out].bytes) != 0) {
            return EL_RUNNER_ERR_STOPPED;
        }
    }
    r->failed_op = 0;
    return EL_RUNNER_OK;
}

/* el_model.c - the model image reader: every check before anything runs. */
#include "el_model.h"

#include <string.h>

uint32_t el_type_size(uint32_t type)
{
    switch (type) {
    case EL_TYPE_INT8: return 1u;
    case EL_TYPE_INT32: return 4u;
    case EL_TYPE_FLOAT32: return 4u;
    default: return 0u;
    }
}

const char *el_status_name(el_status status)
{
    static const char *const names[] = {"ok", "image not 16-byte aligned", "shorter than a header", "bad magic",
                                        "unsupported version", "bad header size", "header CRC mismatch",
                                        "size mismatch", "payload CRC mismatch", "table out of bounds",
                                        "bad tensor", "bad op", "bad tail"};
    return (unsigned)status < sizeof names / sizeof names[0] ? names[status] : "unknown status";
}

const void *el_model_at(const el_model *model, uint32_t offset)
{
    return model->image + offset;
}

const void *el_model_record(const el_model *model, uint32_t op)
{
    return model->image + model->ops[op].record_offset;
}

/* [offset, offset + count * size) inside [HEADER_BYTES, limit), without overflow. */
static int inside(uint32_t offset, uint32_t count, uint32_t size, uint32_t limit)
{
    uint64_t end = (uint64_t)offset + (uint64_t)count * size;
    return offset >= EL_MODEL_HEADER_BYTES && end <= limit;
}

/* The product of dims, saturated just above 32 bits: four corrupt dims could wrap a plain
 * uint64_t product to a small count that passes the bounds check. Before each step
 * v <= 2^32 and a dim < 2^32, so v * dim < 2^64 never wraps. */
static uint64_t volume(const int32_t *dims, unsigned rank)
{
    const uint64_t too_many = (uint64_t)1 << 32; /* more than any image holds */
    uint64_t v = 1;
    unsigned i;
    for (i = 0; i < rank; ++i) {
        v *= (uint64_t)(uint32_t)dims[i];
        if (v > too_many) {
            return too_many;
        }
    }
    return v;
}

static uint32_t record_bytes(uint32_t opcode)
{
    switch (opcode) {
    case EL_OP_CONV_2D:
    case EL_OP_DEPTHWISE_CONV_2D: return (uint32_t)sizeof(el_conv_params);
    case EL_OP_FULLY_CONNECTED: return (uint32_t)sizeof(el_fc_params);
    case EL_OP_AVERAGE_POOL_2D:
    case EL_OP_MAX_POOL_2D: return (uint32_t)sizeof(el_pool_params);
    case EL_OP_SOFTMAX: return (uint32_t)sizeof(el_softmax_params);
    case EL_OP_RESHAPE: return (uint32_t)sizeof(el_reshape_params);
    case EL_OP_PAD: return (uint32_t)sizeof(el_pad_params);
    case EL_OP_LEAKY_RELU: return (uint32_t)sizeof(el_leaky_relu_params);
    default: return 0u;
    }
}

static int runtime_tensor(const el_model *m, uint32_t index)
{
    return index < m->header->tensor_count && !(m->tensors[index].flags & EL_TENSOR_CONSTANT);
}

static int dims_positive(const el_dims *d)
{
    return d->n >= 1 && d->h >= 1 && d->w >= 1 && d->c >= 1;
}

/* An array field: 16-byte aligned and inside the image. */
static int array_inside(uint32_t offset, uint64_t count, uint32_t element, uint32_t limit)
{
    return offset % EL_MODEL_ALIGN == 0 && count <= 0xffffffffu && inside(offset, (uint32_t)count, element, limit);
}

static int check_op(const el_model *m, const el_op *op, uint32_t limit)
{
    const uint8_t *record = m->image + op->record_offset;
    /* Every record starts with its input and output tensor indices. */
    uint32_t io[2];
    memcpy(io, record, sizeof io);
    if (!runtime_tensor(m, io[0]) || !runtime_tensor(m, io[1])) {
        return 0;
    }
    if (op->opcode == EL_OP_CONV_2D || op->opcode == EL_OP_DEPTHWISE_CONV_2D) {
        const el_conv_params *p = (const el_conv_params *)record;
        uint64_t channels = (uint64_t)(uint32_t)p->output_dims.c;
        if (!dims_positive(&p->input_dims) || !dims_positive(&p->filter_dims) || !dims_positive(&p->output_dims)) {
            return 0;
        }
        return array_inside(p->weights, volume(&p->filter_dims.n, 4), 1u, limit) &&
               array_inside(p->bias, channels, 4u, limit) && array_inside(p->multiplier, channels, 4u, limit) &&
               array_inside(p->shift, channels, 4u, limit);
    }
    if (op->opcode == EL_OP_FULLY_CONNECTED) {
        const el_fc_params *p = (const el_fc_params *)record;
        uint64_t out = (uint64_t)(uint32_t)p->filter_dims.c;
        if (!dims_positive(&p->input_dims) || !dims_positive(&p->filter_dims) || !dims_positive(&p->output_dims)) {
            return 0;
        }
        return array_inside(p->weights, (uint64_t)(uint32_t)p->filter_dims.n * out, 1u, limit) &&
               array_inside(p->bias, out, 4u, limit) && array_inside(p->multiplier, out, 4u, limit) &&
               array_inside(p->shift, out, 4u, limit);
    }
    if (op->opcode == EL_OP_AVERAGE_POOL_2D || op->opcode == EL_OP_MAX_POOL_2D) {
        const el_pool_params *p = (const el_pool_params *)record;
        return dims_positive(&p->input_dims) && dims_positive(&p->output_dims);
    }
    if (op->opcode == EL_OP_PAD) {
        const el_pad_params *p = (const el_pad_params *)record;
        return dims_positive(&p->input_dims) && dims_positive(&p->output_dims);
    }
    return 1;
}

static el_status check_tail(el_model *m, uint32_t limit)
{
    const el_model_header *h = m->header;
    uint32_t k;
    if (h->tail_offset % 4u || !inside(h->tail_offset, 1u, (uint32_t)sizeof(el_tail_header), limit)) {
        return EL_ERR_TAIL;
    }
    m->tail = (const el_tail_header *)(m->image + h->tail_offset);
    if (m->tail->classifier_op >= h->op_count ||
        (m->tail->waveform != EL_WAVEFORM_SINE && m->tail->waveform != EL_WAVEFORM_SQUARE)) {
        return EL_ERR_TAIL;
    }
    if (!inside(h->tail_offset + (uint32_t)sizeof(el_tail_header), m->tail->block_count,
                (uint32_t)sizeof(el_tail_block), limit)) {
        return EL_ERR_TABLE;
    }
    m->tail_blocks = (const el_tail_block *)(m->image + h->tail_offset + sizeof(el_tail_header));
    for (k = 0; k < m->tail->block_count; ++k) {
        const el_tail_block *b = &m->tail_blocks[k];
        uint64_t n = (uint64_t)m->tail->num_classes * b->feature_dim;
        m->failed_index = k;
        if ((uint64_t)b->first_op + b->op_count > h->op_count || b->output >= h->tensor_count ||
            !array_inside(b->basis, n, 4u, limit)) {
            return EL_ERR_TAIL;
        }
    }
    return EL_OK;
}

el_status el_model_open(const uint8_t *image, size_t size, el_model *model)
{
    const el_model_header *h = (const el_model_header *)image;
    uint32_t i, limit;
    memset(model, 0, sizeof *model);
    model->image = image;
    if (((uintptr_t)image & (EL_MODEL_ALIGN - 1u)) != 0) {
        return EL_ERR_ALIGN;
    }
    if (size < EL_MODEL_HEADER_BYTES) {
        return EL_ERR_SHORT;
    }
    if (memcmp(h->magic, EL_MODEL_MAGIC, 4) != 0) {
        return EL_ERR_MAGIC;
    }
    if (h->version != EL_MODEL_VERSION) {
        return EL_ERR_VERSION;
    }
    if (h->header_bytes != EL_MODEL_HEADER_BYTES) {
        return EL_ERR_HEADER;
    }
    if (el_crc32(image, EL_MODEL_HEADER_CRC_BYTES) != h->header_crc32) {
        return EL_ERR_HEADER_CRC;
    }
    if (h->total_bytes != size) {
        return EL_ERR_SIZE;
    }
    if (el_crc32(image + EL_MODEL_HEADER_BYTES, size - EL_MODEL_HEADER_BYTES) != h->payload_crc32) {
        return EL_ERR_PAYLOAD_CRC;
    }
    limit = h->total_bytes;
    model->header = h;
    if (h->tensors_offset % 4u || h->ops_offset % 4u ||
        !inside(h->tensors_offset, h->tensor_count, (uint32_t)sizeof(el_tensor), limit) ||
        !inside(h->ops_offset, h->op_count, (uint32_t)sizeof(el_op), limit)) {
        return EL_ERR_TABLE;
    }
    model->tensors = (const el_tensor *)(image + h->tensors_offset);
    model->ops = (const el_op *)(image + h->ops_offset);
    if (h->input_tensor >= h->tensor_count || h->output_tensor >= h->tensor_count) {
        return EL_ERR_TENSOR;
    }
    for (i = 0; i < h->tensor_count; ++i) {
        const el_tensor *t = &model->tensors[i];
        uint32_t element = el_type_size(t->type);
        int constant = (t->flags & EL_TENSOR_CONSTANT) != 0;
        uint64_t end = (uint64_t)t->offset + t->bytes;
        model->failed_index = i;
        if (element == 0u || t->rank > 4u || end > (constant ? limit : h->arena_bytes)) {
            return EL_ERR_TENSOR;
        }
        if (!constant) {
            uint64_t values = 1;
            unsigned d;
            for (d = 0; d < t->rank; ++d) {
                values *= t->dims[d];
            }
            if (values * element != t->bytes) {
                return EL_ERR_TENSOR;
            }
        }
    }
    for (i = 0; i < h->op_count; ++i) {
        const el_op *op = &model->ops[i];
        uint32_t bytes = record_bytes(op->opcode);
        model->failed_index = i;
        if (bytes == 0u || op->record_bytes != bytes || op->record_offset % 4u ||
            !inside(op->record_offset, 1u, bytes, limit) || !check_op(model, op, limit)) {
            return EL_ERR_OP;
        }
    }
    if (h->tail_offset != 0u) {
        el_status status = check_tail(model, limit);
        if (status != EL_OK) {
            return status;
        }
    }
    model->failed_index = 0;
    return EL_OK;
}

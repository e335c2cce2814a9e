/*
 * el_model_dump.c - print a model image, one line per header, tensor, op and tail block.
 *
 *     el_model_dump MODEL.blob          an image file (edge-lls export --format blob)
 *     el_model_dump [RAW_OUT]           built with -DEL_DUMP_IMAGE=sym -DEL_DUMP_BYTES=n and
 *                                       linked with a `--format c` export: that image (and
 *                                       its raw bytes written to RAW_OUT)
 *
 * The text is exactly what edge_lls/formats/blob.py describe_image() prints for the same
 * bytes; tests/test_c_export.py compares the two. Arrays print as offset, count and CRC-32.
 * Exit status: 0 printed, 1 the image failed a check (its status on stderr), 2 usage.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "el_model.h"

static const char *const opcode_names[] = {"?", "CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED",
                                           "AVERAGE_POOL_2D", "MAX_POOL_2D", "SOFTMAX", "RESHAPE", "PAD",
                                           "LEAKY_RELU"};

static uint32_t float_bits(float f)
{
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    return bits;
}

static void dims(FILE *out, const char *name, const el_dims *d)
{
    fprintf(out, " %s=%" PRId32 ",%" PRId32 ",%" PRId32 ",%" PRId32, name, d->n, d->h, d->w, d->c);
}

static void ints(FILE *out, const char *name, const int32_t *v, unsigned n)
{
    unsigned i;
    fprintf(out, " %s=", name);
    for (i = 0; i < n; ++i) {
        fprintf(out, i ? ",%" PRId32 : "%" PRId32, v[i]);
    }
}

static void array(FILE *out, const el_model *m, const char *name, uint32_t offset, uint32_t count, uint32_t element)
{
    fprintf(out, " %s=@%" PRIu32 "[%" PRIu32 "]crc=0x%08" PRIx32, name, offset, count,
            el_crc32((const uint8_t *)el_model_at(m, offset), (size_t)count * element));
}

static void conv(FILE *out, const el_model *m, const el_conv_params *p)
{
    uint32_t filter = (uint32_t)(p->filter_dims.n * p->filter_dims.h * p->filter_dims.w * p->filter_dims.c);
    uint32_t channels = (uint32_t)p->output_dims.c;
    fprintf(out, " input=%" PRIu32 " output=%" PRIu32 " input_offset=%" PRId32 " output_offset=%" PRId32, p->input,
            p->output, p->input_offset, p->output_offset);
    fprintf(out, " stride_h=%" PRId32 " stride_w=%" PRId32 " pad_h=%" PRId32 " pad_w=%" PRId32, p->stride_h,
            p->stride_w, p->pad_h, p->pad_w);
    fprintf(out, " dilation_h=%" PRId32 " dilation_w=%" PRId32 " act_min=%" PRId32 " act_max=%" PRId32
                 " ch_mult=%" PRId32,
            p->dilation_h, p->dilation_w, p->act_min, p->act_max, p->ch_mult);
    dims(out, "input_dims", &p->input_dims);
    dims(out, "filter_dims", &p->filter_dims);
    dims(out, "output_dims", &p->output_dims);
    array(out, m, "weights", p->weights, filter, 1u);
    array(out, m, "bias", p->bias, channels, 4u);
    array(out, m, "multiplier", p->multiplier, channels, 4u);
    array(out, m, "shift", p->shift, channels, 4u);
}

static void fully_connected(FILE *out, const el_model *m, const el_fc_params *p)
{
    uint32_t depth = (uint32_t)p->filter_dims.n, units = (uint32_t)p->filter_dims.c;
    fprintf(out, " input=%" PRIu32 " output=%" PRIu32 " input_offset=%" PRId32 " filter_offset=%" PRId32
                 " output_offset=%" PRId32 " act_min=%" PRId32 " act_max=%" PRId32,
            p->input, p->output, p->input_offset, p->filter_offset, p->output_offset, p->act_min, p->act_max);
    dims(out, "input_dims", &p->input_dims);
    dims(out, "filter_dims", &p->filter_dims);
    dims(out, "output_dims", &p->output_dims);
    array(out, m, "weights", p->weights, depth * units, 1u);
    array(out, m, "bias", p->bias, units, 4u);
    array(out, m, "multiplier", p->multiplier, units, 4u);
    array(out, m, "shift", p->shift, units, 4u);
}

static void pool(FILE *out, const el_pool_params *p)
{
    fprintf(out, " input=%" PRIu32 " output=%" PRIu32 " stride_h=%" PRId32 " stride_w=%" PRId32 " pad_h=%" PRId32
                 " pad_w=%" PRId32 " filter_h=%" PRId32 " filter_w=%" PRId32 " act_min=%" PRId32 " act_max=%" PRId32,
            p->input, p->output, p->stride_h, p->stride_w, p->pad_h, p->pad_w, p->filter_h, p->filter_w, p->act_min,
            p->act_max);
    dims(out, "input_dims", &p->input_dims);
    dims(out, "output_dims", &p->output_dims);
}

static void op_line(FILE *out, const el_model *m, uint32_t i)
{
    const el_op *op = &m->ops[i];
    const void *record = el_model_record(m, i);
    fprintf(out, "op %" PRIu32 " %s", i, opcode_names[op->opcode]);
    switch (op->opcode) {
    case EL_OP_CONV_2D:
    case EL_OP_DEPTHWISE_CONV_2D: conv(out, m, (const el_conv_params *)record); break;
    case EL_OP_FULLY_CONNECTED: fully_connected(out, m, (const el_fc_params *)record); break;
    case EL_OP_AVERAGE_POOL_2D:
    case EL_OP_MAX_POOL_2D: pool(out, (const el_pool_params *)record); break;
    case EL_OP_SOFTMAX: {
        const el_softmax_params *p = (const el_softmax_params *)record;
        fprintf(out, " input=%" PRIu32 " output=%" PRIu32 " rows=%" PRId32 " depth=%" PRId32
                     " input_multiplier=%" PRId32 " input_left_shift=%" PRId32 " diff_min=%" PRId32,
                p->input, p->output, p->rows, p->depth, p->input_multiplier, p->input_left_shift, p->diff_min);
        break;
    }
    case EL_OP_RESHAPE: {
        const el_reshape_params *p = (const el_reshape_params *)record;
        fprintf(out, " input=%" PRIu32 " output=%" PRIu32 " size=%" PRId32, p->input, p->output, p->size);
        break;
    }
    case EL_OP_PAD: {
        const el_pad_params *p = (const el_pad_params *)record;
        fprintf(out, " input=%" PRIu32 " output=%" PRIu32 " pad_value=%" PRId32, p->input, p->output, p->pad_value);
        ints(out, "before", p->before, 4);
        ints(out, "after", p->after, 4);
        dims(out, "input_dims", &p->input_dims);
        dims(out, "output_dims", &p->output_dims);
        break;
    }
    default: {
        const el_leaky_relu_params *p = (const el_leaky_relu_params *)record;
        fprintf(out, " input=%" PRIu32 " output=%" PRIu32 " size=%" PRId32 " input_zero_point=%" PRId32
                     " output_zero_point=%" PRId32 " identity_multiplier=%" PRId32 " identity_shift=%" PRId32
                     " alpha_multiplier=%" PRId32 " alpha_shift=%" PRId32,
                p->input, p->output, p->size, p->input_zero_point, p->output_zero_point, p->identity_multiplier,
                p->identity_shift, p->alpha_multiplier, p->alpha_shift);
        break;
    }
    }
    fputc('\n', out);
}

static int dump(const uint8_t *image, size_t size, FILE *out)
{
    el_model m;
    const el_model_header *h;
    uint32_t i;
    el_status status = el_model_open(image, size, &m);
    if (status != EL_OK) {
        fprintf(stderr, "el_model_dump: %s (index %" PRIu32 ")\n", el_status_name(status), m.failed_index);
        return 1;
    }
    h = m.header;
    fprintf(out, "header version=%u total_bytes=%" PRIu32 " payload_crc32=0x%08" PRIx32 " flags=%" PRIu32
                 " arena_bytes=%" PRIu32 " tensors=%" PRIu32 " ops=%" PRIu32 " input=%" PRIu32 " output=%" PRIu32
                 " tail=%" PRIu32 "\n",
            (unsigned)h->version, h->total_bytes, h->payload_crc32, h->flags, h->arena_bytes, h->tensor_count,
            h->op_count, h->input_tensor, h->output_tensor, h->tail_offset);
    for (i = 0; i < h->tensor_count; ++i) {
        const el_tensor *t = &m.tensors[i];
        fprintf(out, "tensor %" PRIu32 " offset=%" PRIu32 " bytes=%" PRIu32 " type=%u rank=%u flags=%u zero_point=%" PRId32
                     " scale=0x%08" PRIx32 " dims=%u,%u,%u,%u\n",
                i, t->offset, t->bytes, (unsigned)t->type, (unsigned)t->rank, (unsigned)t->flags, t->zero_point,
                float_bits(t->scale), (unsigned)t->dims[0], (unsigned)t->dims[1], (unsigned)t->dims[2],
                (unsigned)t->dims[3]);
    }
    for (i = 0; i < h->op_count; ++i) {
        op_line(out, &m, i);
    }
    if (m.tail != NULL) {
        fprintf(out, "tail blocks=%" PRIu32 " classes=%" PRIu32 " waveform=%" PRIu32 " temperature=0x%08" PRIx32
                     " classifier_op=%" PRIu32 "\n",
                m.tail->block_count, m.tail->num_classes, m.tail->waveform, float_bits(m.tail->temperature),
                m.tail->classifier_op);
        for (i = 0; i < m.tail->block_count; ++i) {
            const el_tail_block *b = &m.tail_blocks[i];
            fprintf(out, "block %" PRIu32 " kind=%" PRIu32 " first_op=%" PRIu32 " op_count=%" PRIu32
                         " output=%" PRIu32 " pool_size=%" PRIu32 " feature_dim=%" PRIu32,
                    i, b->kind, b->first_op, b->op_count, b->output, b->pool_size, b->feature_dim);
            array(out, &m, "basis", b->basis, m.tail->num_classes * b->feature_dim, 4u);
            fputc('\n', out);
        }
    }
    return 0;
}

#ifdef EL_DUMP_IMAGE
extern const uint8_t *const EL_DUMP_IMAGE;

int main(int argc, char **argv)
{
    if (argc > 1) {
        FILE *raw = fopen(argv[1], "wb");
        if (raw == NULL || fwrite(EL_DUMP_IMAGE, 1, EL_DUMP_BYTES, raw) != EL_DUMP_BYTES || fclose(raw) != 0) {
            fprintf(stderr, "el_model_dump: cannot write %s\n", argv[1]);
            return 2;
        }
    }
    return dump(EL_DUMP_IMAGE, EL_DUMP_BYTES, stdout);
}
#else
int main(int argc, char **argv)
{
    FILE *file;
    long size;
    uint8_t *image;
    int status;
    if (argc != 2) {
        fprintf(stderr, "usage: el_model_dump MODEL.blob\n");
        return 2;
    }
    file = fopen(argv[1], "rb");
    if (file == NULL || fseek(file, 0, SEEK_END) != 0 || (size = ftell(file)) < 0 || fseek(file, 0, SEEK_SET) != 0) {
        fprintf(stderr, "el_model_dump: cannot read %s\n", argv[1]);
        return 2;
    }
    /* malloc's alignment is 16 on the hosts this tool runs on; el_model_open checks it. */
    image = (uint8_t *)malloc(size > 0 ? (size_t)size : 1u);
    if (image == NULL || fread(image, 1, (size_t)size, file) != (size_t)size) {
        fprintf(stderr, "el_model_dump: cannot read %s\n", argv[1]);
        return 2;
    }
    fclose(file);
    status = dump(image, (size_t)size, stdout);
    free(image);
    return status;
}
#endif

/*
 * firmware_kernels_harness.c - runs the firmware's int8 kernels on test vectors (host only).
 *
 *     firmware_kernels_harness VECTORS OUTPUTS
 *
 * Built by tests/test_firmware_kernels.py with the firmware's strict flags and ASan/UBSan.
 * Every array of a case is copied into its own heap block of exactly its size, and the output
 * block is exactly the output's size, so a kernel that reads or writes one element too far is
 * stopped by AddressSanitizer. The file formats (little-endian; the Python side is in the test):
 *
 *   VECTORS   "<4sHHI" magic "ELKV", version 1, reserved 0, case count; then per case
 *             "<IIII"  kind, record bytes, array count, output count
 *                      the record (an el_*_params struct, as in the model image)
 *                      per array "<II" element size (1: int8, 4: int32), count; the values
 *             every record and array padded with zeros to a multiple of 4 bytes.
 *   OUTPUTS   "<4sHHI" magic "ELKO", version 1, reserved 0, case count; then per case
 *             "<iII"   el_kernel_status, element size, count; the values, padded to 4 bytes.
 *
 * kind: an EL_OP_* opcode (arrays: input, then for CONV_2D, DEPTHWISE_CONV_2D and
 * FULLY_CONNECTED filter, bias, multiplier, shift; a bias of 0 values is passed as NULL), or
 * one of el_fixedpoint.h's helpers on int32 arrays, element by element: KIND_MULTIPLY (x,
 * multiplier, shift), KIND_HIGH_MUL (a, b), KIND_DIVIDE_BY_POT (x, exponent), KIND_EXP (a),
 * KIND_ONE_OVER_ONE_PLUS_X (a), KIND_RECIPROCAL (sum: n results, then n bits over unit).
 * The output block starts filled with 0x5a, so what a failing kernel left unwritten shows.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "el_fixedpoint.h"
#include "el_kernels.h"

#define KIND_MULTIPLY 100
#define KIND_HIGH_MUL 101
#define KIND_DIVIDE_BY_POT 102
#define KIND_EXP 103
#define KIND_ONE_OVER_ONE_PLUS_X 104
#define KIND_RECIPROCAL 105
#define MAX_ARRAYS 5
#define SENTINEL 0x5a

typedef struct {
    const uint8_t *data;
    size_t size, at;
} reader;

typedef struct {
    uint32_t element, count;
    void *values; /* its own heap block of element * count bytes; NULL when count is 0 */
} array;

static void fail(const char *message)
{
    fprintf(stderr, "firmware_kernels_harness: %s\n", message);
    exit(1);
}

static const uint8_t *take(reader *r, size_t bytes)
{
    const uint8_t *at = r->data + r->at;
    size_t padded = (bytes + 3u) & ~(size_t)3u;
    if (padded < bytes || padded > r->size - r->at) {
        fail("truncated vector file");
    }
    r->at += padded;
    return at;
}

static uint32_t u32(reader *r)
{
    const uint8_t *b = take(r, 4);
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

static void put_u32(FILE *f, uint32_t v)
{
    const uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    fwrite(b, 1, 4, f);
}

static void *block(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1u);
    if (p == NULL) {
        fail("out of memory");
    }
    return p;
}

/* The record of a case as the struct T, after checking its size. */
#define RECORD(T, bytes, data, into)                                                                                   \
    do {                                                                                                               \
        if ((bytes) != sizeof(T)) {                                                                                    \
            fail("record size does not match " #T);                                                                    \
        }                                                                                                              \
        memcpy(&(into), (data), sizeof(T));                                                                            \
    } while (0)

static void need(uint32_t count, uint32_t wanted, const array *arrays, const uint32_t *elements)
{
    uint32_t i;
    if (count != wanted) {
        fail("wrong number of arrays for the kind");
    }
    for (i = 0; i < count; ++i) {
        if (arrays[i].element != elements[i]) {
            fail("wrong array element size for the kind");
        }
    }
}

static int32_t run(uint32_t kind, const uint8_t *record, uint32_t record_bytes, array *a, uint32_t arrays,
                   void *out, uint32_t out_count, uint32_t *out_element)
{
    static const uint32_t weighted[MAX_ARRAYS] = {1, 1, 4, 4, 4}, single[1] = {1}, ints[3] = {4, 4, 4};
    el_context ctx = {NULL, 0u};
    el_kernel_status status;
    *out_element = kind >= KIND_MULTIPLY ? 4u : 1u;
    switch (kind) {
    case EL_OP_CONV_2D:
    case EL_OP_DEPTHWISE_CONV_2D: {
        el_conv_params p;
        RECORD(el_conv_params, record_bytes, record, p);
        need(arrays, 5, a, weighted);
        ctx.size = kind == EL_OP_CONV_2D ? el_conv2d_s8_get_buffer_size(&p)
                                         : el_depthwise_conv2d_s8_get_buffer_size(&p);
        ctx.buf = ctx.size ? block(ctx.size) : NULL;
        status = (kind == EL_OP_CONV_2D ? el_conv2d_s8 : el_depthwise_conv2d_s8)(
            &ctx, &p, (const int8_t *)a[0].values, (const int8_t *)a[1].values, (const int32_t *)a[2].values,
            (const int32_t *)a[3].values, (const int32_t *)a[4].values, (int8_t *)out);
        break;
    }
    case EL_OP_FULLY_CONNECTED: {
        el_fc_params p;
        RECORD(el_fc_params, record_bytes, record, p);
        need(arrays, 5, a, weighted);
        ctx.size = el_fully_connected_s8_get_buffer_size(&p);
        ctx.buf = ctx.size ? block(ctx.size) : NULL;
        status = el_fully_connected_s8(&ctx, &p, (const int8_t *)a[0].values, (const int8_t *)a[1].values,
                                       (const int32_t *)a[2].values, (const int32_t *)a[3].values,
                                       (const int32_t *)a[4].values, (int8_t *)out);
        break;
    }
    case EL_OP_AVERAGE_POOL_2D:
    case EL_OP_MAX_POOL_2D: {
        el_pool_params p;
        RECORD(el_pool_params, record_bytes, record, p);
        need(arrays, 1, a, single);
        ctx.size = kind == EL_OP_AVERAGE_POOL_2D ? el_avg_pool_s8_get_buffer_size(&p)
                                                 : el_max_pool_s8_get_buffer_size(&p);
        ctx.buf = ctx.size ? block(ctx.size) : NULL;
        status = (kind == EL_OP_AVERAGE_POOL_2D ? el_avg_pool_s8 : el_max_pool_s8)(
            &ctx, &p, (const int8_t *)a[0].values, (int8_t *)out);
        break;
    }
    case EL_OP_SOFTMAX: {
        el_softmax_params p;
        RECORD(el_softmax_params, record_bytes, record, p);
        need(arrays, 1, a, single);
        status = el_softmax_s8(&p, (const int8_t *)a[0].values, (int8_t *)out);
        break;
    }
    case EL_OP_PAD: {
        el_pad_params p;
        RECORD(el_pad_params, record_bytes, record, p);
        need(arrays, 1, a, single);
        status = el_pad_s8(&p, (const int8_t *)a[0].values, (int8_t *)out);
        break;
    }
    case EL_OP_LEAKY_RELU: {
        el_leaky_relu_params p;
        RECORD(el_leaky_relu_params, record_bytes, record, p);
        need(arrays, 1, a, single);
        status = el_leaky_relu_s8(&p, (const int8_t *)a[0].values, (int8_t *)out);
        break;
    }
    case KIND_MULTIPLY:
    case KIND_HIGH_MUL:
    case KIND_DIVIDE_BY_POT:
    case KIND_EXP:
    case KIND_ONE_OVER_ONE_PLUS_X:
    case KIND_RECIPROCAL: {
        const uint32_t operands = kind == KIND_MULTIPLY ? 3u : kind <= KIND_DIVIDE_BY_POT ? 2u : 1u;
        const uint32_t n = kind == KIND_RECIPROCAL ? out_count / 2u : out_count;
        const int32_t *x = (const int32_t *)a[0].values;
        const int32_t *y = operands > 1u ? (const int32_t *)a[1].values : NULL;
        const int32_t *z = operands > 2u ? (const int32_t *)a[2].values : NULL;
        int32_t *r = (int32_t *)out;
        uint32_t i;
        need(arrays, operands, a, ints);
        for (i = 0; i < operands; ++i) {
            if (a[i].count != n || (kind == KIND_RECIPROCAL && out_count != 2u * n)) {
                fail("helper arrays must all have the output's count");
            }
        }
        for (i = 0; i < n; ++i) {
            switch (kind) {
            case KIND_MULTIPLY: r[i] = el_multiply_by_quantized_multiplier(x[i], y[i], z[i]); break;
            case KIND_HIGH_MUL: r[i] = el_saturating_rounding_doubling_high_mul(x[i], y[i]); break;
            case KIND_DIVIDE_BY_POT: r[i] = el_rounding_divide_by_pot(x[i], y[i]); break;
            case KIND_EXP: r[i] = el_exp_on_negative_values(x[i]); break;
            case KIND_ONE_OVER_ONE_PLUS_X: r[i] = el_one_over_one_plus_x(x[i]); break;
            default: r[i] = el_reciprocal_q12(x[i], &r[n + i]); break;
            }
        }
        status = EL_KERNEL_OK;
        break;
    }
    default:
        fail("unknown kind");
        return -1;
    }
    free(ctx.buf);
    return (int32_t)status;
}

static uint8_t *read_file(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data;
    long length;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (length = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fail("cannot read the vector file");
    }
    data = (uint8_t *)block((size_t)length);
    if (fread(data, 1, (size_t)length, f) != (size_t)length) {
        fail("cannot read the vector file");
    }
    fclose(f);
    *size = (size_t)length;
    return data;
}

int main(int argc, char **argv)
{
    reader r = {NULL, 0u, 0u};
    FILE *out;
    uint32_t cases, k;
    if (argc != 3) {
        fail("usage: firmware_kernels_harness VECTORS OUTPUTS");
    }
    r.data = read_file(argv[1], &r.size);
    if (memcmp(take(&r, 4), "ELKV", 4) != 0 || (u32(&r) & 0xffffu) != 1u) {
        fail("not a version 1 ELKV vector file");
    }
    cases = u32(&r);
    out = fopen(argv[2], "wb");
    if (out == NULL) {
        fail("cannot write the output file");
    }
    fwrite("ELKO", 1, 4, out);
    put_u32(out, 1u);
    put_u32(out, cases);
    for (k = 0; k < cases; ++k) {
        const uint32_t kind = u32(&r), record_bytes = u32(&r), count = u32(&r), out_count = u32(&r);
        const uint8_t *record = take(&r, record_bytes);
        array arrays[MAX_ARRAYS];
        uint32_t i, element;
        size_t out_bytes;
        void *values;
        int32_t status;
        if (count > MAX_ARRAYS) {
            fail("too many arrays");
        }
        for (i = 0; i < count; ++i) {
            arrays[i].element = u32(&r);
            arrays[i].count = u32(&r);
            if (arrays[i].element != 1u && arrays[i].element != 4u) {
                fail("array element size must be 1 or 4");
            }
            arrays[i].values = arrays[i].count ? block((size_t)arrays[i].element * arrays[i].count) : NULL;
            if (arrays[i].count) {
                memcpy(arrays[i].values, take(&r, (size_t)arrays[i].element * arrays[i].count),
                       (size_t)arrays[i].element * arrays[i].count);
            }
        }
        out_bytes = (size_t)out_count * (kind >= KIND_MULTIPLY ? 4u : 1u);
        values = block(out_bytes);
        memset(values, SENTINEL, out_bytes);
        status = run(kind, record, record_bytes, arrays, count, values, out_count, &element);
        put_u32(out, (uint32_t)status);
        put_u32(out, element);
        put_u32(out, out_count);
        fwrite(values, 1, out_bytes, out);
        for (i = 0; i < (uint32_t)((4u - out_bytes % 4u) % 4u); ++i) {
            fputc(0, out);
        }
        free(values);
        for (i = 0; i < count; ++i) {
            free(arrays[i].values);
        }
    }
    if (r.at != r.size) {
        fail("trailing bytes after the last case");
    }
    free((void *)r.data);
    return fclose(out) == 0 ? 0 : 1;
}

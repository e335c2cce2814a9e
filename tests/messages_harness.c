/*
 * messages_harness.c - el_messages.h on the host, for tests/test_messages.py.
 *
 *   messages_harness check IN OUT   IN: records (u8 type, u8 direction 0 request / 1 reply,
 *                                   u32 length, payload); OUT: per record one line: the
 *                                   verdict of el_msg_check_request / el_msg_check_reply
 *                                   and, when it is "ok", every field as the struct reads it
 *   messages_harness build IN OUT   IN: one message per line (type, direction, status, detail,
 *                                   the struct's field values in declaration order, the tail in
 *                                   hex or "-"); OUT: the payloads, each as u32 length + bytes,
 *                                   each field stored through its name in the C struct
 *
 * A field line is "name=value": integers in decimal, floats as their bits (0x%08x), byte
 * arrays in hex; test_messages.py prints the same text from the Python layouts. Exit status
 * 0; 2 on bad usage, I/O or a malformed line.
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "el_messages.h"
#include "firmware_harness_io.h"

static const char *const PROGRAM = "messages_harness";

enum { U16, U32, U64, F32, F32X4, BYTES };

typedef struct {
    const char *name;
    size_t offset;
    int kind;
    size_t size; /* bytes (BYTES) */
} field;

typedef struct {
    const char *name;
    size_t size;
    const field *fields;
} layout;

#define F(s, m, k) {#m, offsetof(s, m), k, sizeof(((s *)0)->m)}
#define END {NULL, 0, 0, 0}

static const field result_fields[] = {F(el_msg_result, status, U16), F(el_msg_result, reserved, U16),
                                      F(el_msg_result, detail, U32), END};
static const field hello_fields[] = {F(el_msg_hello, version, U32), F(el_msg_hello, session, U32), END};
static const field hello_reply_fields[] = {
    F(el_msg_hello_reply, version, U32), F(el_msg_hello_reply, frame_version, U32),
    F(el_msg_hello_reply, board, BYTES), F(el_msg_hello_reply, firmware, BYTES), F(el_msg_hello_reply, device, BYTES),
    F(el_msg_hello_reply, ram_bytes, U64), F(el_msg_hello_reply, flash_bytes, U64),
    F(el_msg_hello_reply, arena_bytes, U32), F(el_msg_hello_reply, max_payload, U32), F(el_msg_hello_reply, ops, U32),
    F(el_msg_hello_reply, tick_hz, U32), F(el_msg_hello_reply, slot, U32), F(el_msg_hello_reply, sequence, U32),
    F(el_msg_hello_reply, trial, U32), F(el_msg_hello_reply, model_bytes, U32), F(el_msg_hello_reply, sha256, BYTES),
    F(el_msg_hello_reply, input_bytes, U32), F(el_msg_hello_reply, output_bytes, U32), F(el_msg_hello_reply, cut, U32),
    F(el_msg_hello_reply, cut_bytes, U32), F(el_msg_hello_reply, classes, U32),
    F(el_msg_hello_reply, samples_seen, U32), END};
static const field put_model_fields[] = {
    F(el_msg_put_model, sha256, BYTES), F(el_msg_put_model, total_bytes, U32), F(el_msg_put_model, offset, U32),
    F(el_msg_put_model, length, U32), F(el_msg_put_model, flags, U32), END};
static const field put_model_reply_fields[] = {
    F(el_msg_put_model_reply, state, U32), F(el_msg_put_model_reply, next_offset, U32),
    F(el_msg_put_model_reply, total_bytes, U32), F(el_msg_put_model_reply, slot, U32), END};
static const field commit_fields[] = {F(el_msg_commit, sha256, BYTES), F(el_msg_commit, total_bytes, U32),
                                      F(el_msg_commit, flags, U32), END};
static const field commit_reply_fields[] = {
    F(el_msg_commit_reply, slot, U32), F(el_msg_commit_reply, sequence, U32), F(el_msg_commit_reply, trial, U32),
    F(el_msg_commit_reply, reserved, U32), END};
static const field infer_fields[] = {F(el_msg_infer, total_bytes, U32), F(el_msg_infer, offset, U32),
                                     F(el_msg_infer, length, U32), F(el_msg_infer, flags, U32), END};
static const field infer_reply_fields[] = {
    F(el_msg_infer_reply, state, U32), F(el_msg_infer_reply, next_offset, U32),
    F(el_msg_infer_reply, output_bytes, U32), F(el_msg_infer_reply, reserved, U32),
    F(el_msg_infer_reply, instructions, U64), F(el_msg_infer_reply, ticks, U64), END};
static const field train_fields[] = {
    F(el_msg_train, mode, U16), F(el_msg_train, count, U16), F(el_msg_train, sample_bytes, U32),
    F(el_msg_train, cut, U32), F(el_msg_train, batch, U32), F(el_msg_train, seed, U32), F(el_msg_train, lr, F32),
    F(el_msg_train, classifier_lr, F32), F(el_msg_train, flags, U32), F(el_msg_train, offset, U32),
    F(el_msg_train, length, U32), END};
static const field train_reply_fields[] = {
    F(el_msg_train_reply, state, U32), F(el_msg_train_reply, next_offset, U32),
    F(el_msg_train_reply, samples_seen, U32), F(el_msg_train_reply, count, U32),
    F(el_msg_train_reply, instructions, U64), F(el_msg_train_reply, ticks, U64), END};
static const field train_result_fields[] = {F(el_msg_train_result, block_loss, F32X4),
                                            F(el_msg_train_result, loss, F32),
                                            F(el_msg_train_result, predicted, U32), END};
static const field get_weights_fields[] = {
    F(el_msg_get_weights, index, U32), F(el_msg_get_weights, offset, U32), F(el_msg_get_weights, max_bytes, U32),
    F(el_msg_get_weights, reserved, U32), END};
static const field get_weights_reply_fields[] = {
    F(el_msg_get_weights_reply, index, U32), F(el_msg_get_weights_reply, count, U32),
    F(el_msg_get_weights_reply, op, U32), F(el_msg_get_weights_reply, weight_bytes, U32),
    F(el_msg_get_weights_reply, bias_bytes, U32), F(el_msg_get_weights_reply, offset, U32),
    F(el_msg_get_weights_reply, length, U32), F(el_msg_get_weights_reply, weights_crc32, U32),
    F(el_msg_get_weights_reply, bias_crc32, U32), F(el_msg_get_weights_reply, samples_seen, U32), END};
static const field stats_fields[] = {F(el_msg_stats, flags, U32), END};
static const field stats_reply_fields[] = {
    F(el_msg_stats_reply, arena_bytes, U32), F(el_msg_stats_reply, arena_high_water, U32),
    F(el_msg_stats_reply, stack_bytes, U32), F(el_msg_stats_reply, stack_high_water, U32),
    F(el_msg_stats_reply, ram_high_water, U32), F(el_msg_stats_reply, train_buffer_bytes, U32),
    F(el_msg_stats_reply, samples_seen, U32), F(el_msg_stats_reply, inferences, U32),
    F(el_msg_stats_reply, tick_hz, U32), F(el_msg_stats_reply, reserved, U32),
    F(el_msg_stats_reply, infer_instructions, U64), F(el_msg_stats_reply, infer_ticks, U64),
    F(el_msg_stats_reply, train_instructions, U64), F(el_msg_stats_reply, train_ticks, U64), END};
static const field reset_fields[] = {F(el_msg_reset, flags, U32), F(el_msg_reset, reserved, U32), END};

#define L(s, f) {#s, sizeof(s), f}
static const layout result_layout = L(el_msg_result, result_fields);
static const layout train_result_layout = L(el_msg_train_result, train_result_fields);
/* [type][direction]: request, reply body (NULL: the result alone) */
static const layout layouts[9][2] = {
    {{NULL, 0, NULL}, {NULL, 0, NULL}},
    {L(el_msg_hello, hello_fields), L(el_msg_hello_reply, hello_reply_fields)},
    {L(el_msg_put_model, put_model_fields), L(el_msg_put_model_reply, put_model_reply_fields)},
    {L(el_msg_commit, commit_fields), L(el_msg_commit_reply, commit_reply_fields)},
    {L(el_msg_infer, infer_fields), L(el_msg_infer_reply, infer_reply_fields)},
    {L(el_msg_train, train_fields), L(el_msg_train_reply, train_reply_fields)},
    {L(el_msg_get_weights, get_weights_fields), L(el_msg_get_weights_reply, get_weights_reply_fields)},
    {L(el_msg_stats, stats_fields), L(el_msg_stats_reply, stats_reply_fields)},
    {L(el_msg_reset, reset_fields), {NULL, 0, NULL}},
};

static void print_hex(FILE *out, const uint8_t *p, size_t n)
{
    size_t i;
    for (i = 0; i < n; ++i)
        fprintf(out, "%02x", p[i]);
}

/* Every field of a struct read into its C type from p: "name=value" each. */
static void print_fields(FILE *out, const layout *l, const uint8_t *p)
{
    static uint8_t copy[512];
    const field *f;
    memcpy(copy, p, l->size); /* the struct, aligned, as the board would read it */
    for (f = l->fields; f->name != NULL; ++f) {
        const uint8_t *at = copy + f->offset;
        fprintf(out, " %s=", f->name);
        if (f->kind == U16) {
            uint16_t v;
            memcpy(&v, at, sizeof v);
            fprintf(out, "%u", (unsigned)v);
        } else if (f->kind == U32) {
            uint32_t v;
            memcpy(&v, at, sizeof v);
            fprintf(out, "%" PRIu32, v);
        } else if (f->kind == U64) {
            uint64_t v;
            memcpy(&v, at, sizeof v);
            fprintf(out, "%" PRIu64, v);
        } else if (f->kind == F32 || f->kind == F32X4) {
            size_t k, count = f->kind == F32 ? 1u : 4u;
            for (k = 0; k < count; ++k) {
                float x;
                uint32_t bits;
                memcpy(&x, at + 4u * k, sizeof x);
                memcpy(&bits, &x, sizeof bits);
                fprintf(out, "%s0x%08" PRIx32, k ? "," : "", bits);
            }
        } else {
            print_hex(out, at, f->size);
        }
    }
}

static int do_check(const char *in_path, const char *out_path)
{
    size_t size, at = 0;
    uint8_t *in = read_file(PROGRAM, in_path, &size);
    FILE *out = open_out(PROGRAM, out_path);
    while (at < size) {
        uint8_t type, direction;
        uint32_t n;
        const uint8_t *p;
        el_frame_error verdict;
        if (size - at < 6u) {
            fprintf(stderr, "%s: truncated record at byte %zu\n", PROGRAM, at);
            return 2;
        }
        type = in[at];
        direction = in[at + 1];
        n = (uint32_t)in[at + 2] | (uint32_t)in[at + 3] << 8 | (uint32_t)in[at + 4] << 16 | (uint32_t)in[at + 5] << 24;
        at += 6u;
        if (n > size - at) {
            fprintf(stderr, "%s: truncated payload at byte %zu\n", PROGRAM, at);
            return 2;
        }
        p = in + at;
        verdict = direction == 0u ? el_msg_check_request(type, p, n) : el_msg_check_reply(type, p, n);
        if (verdict != EL_FRAME_OK) {
            fprintf(out, "%s\n", el_frame_error_name(verdict));
        } else if (direction == 0u) {
            const layout *l = &layouts[type][0];
            fprintf(out, "ok %s", l->name);
            print_fields(out, l, p);
            fprintf(out, " tail=");
            print_hex(out, p + l->size, n - l->size);
            fputc('\n', out);
        } else {
            const layout *l = &layouts[type][1];
            el_msg_result r;
            memcpy(&r, p, sizeof r);
            fprintf(out, "ok %s", result_layout.name);
            print_fields(out, &result_layout, p);
            if (r.status == EL_STATUS_OK && l->name != NULL) {
                const uint8_t *body = p + sizeof r;
                fprintf(out, " %s", l->name);
                print_fields(out, l, body);
                if (type == EL_MSG_TRAIN) {
                    el_msg_train_reply m;
                    uint32_t k;
                    memcpy(&m, body, sizeof m);
                    for (k = 0; k < m.count; ++k) {
                        fprintf(out, " result");
                        print_fields(out, &train_result_layout, body + sizeof m + k * sizeof(el_msg_train_result));
                    }
                } else {
                    fprintf(out, " tail=");
                    print_hex(out, body + l->size, n - sizeof r - l->size);
                }
            }
            fputc('\n', out);
        }
        at += n;
    }
    fclose(out);
    free(in);
    return 0;
}

/* ------------------------------------------------------------------ build */
static char *next_token(char **cursor)
{
    char *s = *cursor, *start;
    while (*s == ' ')
        ++s;
    if (*s == '\0' || *s == '\n')
        return NULL;
    start = s;
    while (*s != ' ' && *s != '\0' && *s != '\n')
        ++s;
    if (*s != '\0')
        *s++ = '\0';
    *cursor = s;
    return start;
}

static int parse_hex(const char *text, uint8_t *out, size_t cap, size_t *n)
{
    size_t len = strlen(text), i;
    if (strcmp(text, "-") == 0) {
        *n = 0;
        return 1;
    }
    if (len % 2u != 0u || len / 2u > cap)
        return 0;
    for (i = 0; i < len / 2u; ++i) {
        unsigned v;
        if (sscanf(text + 2u * i, "%2x", &v) != 1)
            return 0;
        out[i] = (uint8_t)v;
    }
    *n = len / 2u;
    return 1;
}

/* Each field of l from the next tokens, stored through the C struct's member. */
static int fill(const layout *l, uint8_t *s, char **cursor)
{
    const field *f;
    memset(s, 0, l->size);
    for (f = l->fields; f->name != NULL; ++f) {
        char *token = next_token(cursor);
        size_t n;
        if (token == NULL)
            return 0;
        if (f->kind == U16) {
            uint16_t v = (uint16_t)strtoul(token, NULL, 10);
            memcpy(s + f->offset, &v, sizeof v);
        } else if (f->kind == U32) {
            uint32_t v = (uint32_t)strtoul(token, NULL, 10);
            memcpy(s + f->offset, &v, sizeof v);
        } else if (f->kind == U64) {
            uint64_t v = (uint64_t)strtoull(token, NULL, 10);
            memcpy(s + f->offset, &v, sizeof v);
        } else if (f->kind == F32) {
            uint32_t bits = (uint32_t)strtoul(token, NULL, 16);
            float x;
            memcpy(&x, &bits, sizeof x);
            memcpy(s + f->offset, &x, sizeof x);
        } else if (f->kind == BYTES) {
            if (!parse_hex(token, s + f->offset, f->size, &n) || n != f->size)
                return 0;
        } else {
            return 0; /* F32X4 appears only in el_msg_train_result, built from hex */
        }
    }
    return 1;
}

static int do_build(const char *in_path, const char *out_path)
{
    FILE *in = fopen(in_path, "r"), *out;
    static char line[65536];
    static uint8_t payload[EL_FRAME_MAX_PAYLOAD + 64u];
    unsigned long number = 0;
    if (in == NULL) {
        fprintf(stderr, "%s: cannot read %s\n", PROGRAM, in_path);
        return 2;
    }
    out = open_out(PROGRAM, out_path);
    while (fgets(line, sizeof line, in) != NULL) {
        char *cursor = line, *token;
        unsigned type, direction;
        size_t size = 0, n;
        ++number;
        token = next_token(&cursor);
        if (token == NULL || sscanf(token, "%u", &type) != 1 || type < 1u || type > 8u ||
            (token = next_token(&cursor)) == NULL || sscanf(token, "%u", &direction) != 1 || direction > 1u)
            goto malformed;
        if (direction == 0u) {
            const layout *l = &layouts[type][0];
            if (!fill(l, payload, &cursor))
                goto malformed;
            size = l->size;
        } else {
            const layout *l = &layouts[type][1];
            el_msg_result r;
            if (!fill(&result_layout, payload, &cursor))
                goto malformed;
            memcpy(&r, payload, sizeof r);
            size = sizeof r;
            if (r.status == EL_STATUS_OK && l->name != NULL) {
                if (!fill(l, payload + size, &cursor))
                    goto malformed;
                size += l->size;
            }
        }
        token = next_token(&cursor);
        if (token == NULL || !parse_hex(token, payload + size, sizeof payload - size, &n))
            goto malformed;
        size += n;
        put_u32(out, (uint32_t)size);
        fwrite(payload, 1, size, out);
    }
    fclose(in);
    fclose(out);
    return 0;
malformed:
    fprintf(stderr, "%s: line %lu is malformed\n", PROGRAM, number);
    return 2;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "check") == 0)
        return do_check(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "build") == 0)
        return do_build(argv[2], argv[3]);
    fprintf(stderr, "usage: messages_harness check|build IN OUT\n");
    return 2;
}

/*
 * protocol_harness.c - the bridge's frame layer (el_protocol.c) on the host, for
 * tests/test_protocol.py. Test code only: it may use stdio and the heap.
 *
 *     protocol_harness encode IN OUT   IN holds records "<BHI" type, seq, n, then n payload
 *                                      bytes; OUT gets each record's el_frame_build bytes
 *     protocol_harness cobs IN OUT     OUT = el_cobs_encode(IN)
 *     protocol_harness decode IN OUT   IN's bytes fed one at a time to one el_frame_decoder;
 *                                      OUT gets a line per event: "frame TYPE SEQ FLAGS
 *                                      LENGTH HEX" or "error NAME"
 *     protocol_harness seen SEQ...     a line per SEQ: el_frame_seen's verdict (new,
 *                                      duplicate, stale) on one history
 *     protocol_harness fuzz SEED COUNT COUNT inputs made from valid frames by a seeded
 *                                      mutation generator, fed to one decoder; a line of
 *                                      counts on stdout
 *
 * The fuzzer's checks: every frame the decoder accepts has a CRC that checks, a length that
 * matches and a payload inside the buffer; every error is one of the decoder's reasons; an
 * unmutated input gives back exactly the frames it was built from. Exit status 0; 1 when a
 * check fails (one line naming it and the input); 2 on bad usage or I/O; 3 when
 * el_frame_build or el_cobs_encode refuses.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "el_model.h"
#include "el_protocol.h"
#include "firmware_harness_io.h"

static const char *const PROGRAM = "protocol_harness";

static int do_encode(const char *in_path, const char *out_path)
{
    size_t size, at = 0;
    uint8_t *in = read_file(PROGRAM, in_path, &size);
    static uint8_t wire[EL_FRAME_MAX_WIRE];
    FILE *out = open_out(PROGRAM, out_path);
    while (at < size) {
        uint8_t type;
        uint16_t seq;
        uint32_t n;
        size_t written;
        if (size - at < 7u) {
            fprintf(stderr, "%s: truncated record at byte %zu\n", PROGRAM, at);
            return 2;
        }
        type = in[at];
        seq = (uint16_t)(in[at + 1] | in[at + 2] << 8);
        n = (uint32_t)in[at + 3] | (uint32_t)in[at + 4] << 8 | (uint32_t)in[at + 5] << 16 | (uint32_t)in[at + 6] << 24;
        at += 7u;
        if (n > size - at) {
            fprintf(stderr, "%s: truncated payload at byte %zu\n", PROGRAM, at);
            return 2;
        }
        written = el_frame_build(type, seq, in + at, n, wire, sizeof wire);
        if (written == 0u) {
            fprintf(stderr, "el_frame_build: refused a payload of %lu bytes\n", (unsigned long)n);
            return 3;
        }
        fwrite(wire, 1, written, out);
        at += n;
    }
    fclose(out);
    free(in);
    return 0;
}

static int do_cobs(const char *in_path, const char *out_path)
{
    size_t size, cap, written;
    uint8_t *in = read_file(PROGRAM, in_path, &size);
    uint8_t *out;
    FILE *f;
    cap = EL_COBS_MAX_ENCODED(size);
    out = malloc(cap);
    written = out == NULL ? 0u : el_cobs_encode(in, size, out, cap);
    if (written == 0u || el_cobs_encode(in, size, out, written - 1u) != 0u) {
        fprintf(stderr, "el_cobs_encode: refused %zu bytes, or took a buffer one byte short\n", size);
        return 3;
    }
    f = open_out(PROGRAM, out_path);
    fwrite(out, 1, written, f);
    fclose(f);
    free(out);
    free(in);
    return 0;
}

static el_frame_decoder decoder; /* 4.4 KB: static, as on a board */

static int do_decode(const char *in_path, const char *out_path)
{
    size_t size, i;
    uint8_t *in = read_file(PROGRAM, in_path, &size);
    FILE *out = open_out(PROGRAM, out_path);
    el_frame_decoder_init(&decoder);
    for (i = 0; i < size; ++i) {
        el_feed_result r = el_frame_feed(&decoder, in[i]);
        if (r == EL_FEED_FRAME) {
            uint32_t k;
            fprintf(out, "frame %u %u %u %lu ", (unsigned)decoder.frame.type, (unsigned)decoder.frame.seq,
                    (unsigned)decoder.frame.flags, (unsigned long)decoder.frame.length);
            for (k = 0; k < decoder.frame.length; ++k)
                fprintf(out, "%02x", decoder.frame.payload[k]);
            fputc('\n', out);
        } else if (r == EL_FEED_ERROR) {
            fprintf(out, "error %s\n", el_frame_error_name(decoder.error));
        }
    }
    fclose(out);
    free(in);
    return 0;
}

static int do_seen(int count, char **seqs)
{
    static const char *const names[] = {"new", "duplicate", "stale"};
    el_frame_history h;
    int i;
    el_frame_history_reset(&h);
    for (i = 0; i < count; ++i)
        printf("%s\n", names[el_frame_seen(&h, (uint16_t)strtoul(seqs[i], NULL, 10))]);
    return 0;
}

/* ------------------------------------------------------------------ the mutation fuzzer */
static uint64_t rng_state;

static uint32_t rnd(void) /* xorshift64* */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 2685821657736338717ull) >> 32);
}

static uint32_t below(uint32_t n)
{
    return n ? rnd() % n : 0u;
}

typedef struct {
    uint8_t type;
    uint16_t seq;
    uint32_t n;
    uint8_t payload[EL_FRAME_MAX_PAYLOAD];
} frame_spec;

#define MAX_FRAMES 3
#define INPUT_CAP (4u * EL_FRAME_MAX_WIRE + 8192u)

static frame_spec specs[MAX_FRAMES];
static uint8_t input[INPUT_CAP];
static uint8_t spare[EL_FRAME_MAX_WIRE];

/* A payload size: mostly small, sometimes near a COBS block edge or the limit. */
static uint32_t random_size(void)
{
    static const uint32_t edges[] = {0u, 1u, 237u, 238u, 239u, 242u, 253u, 254u, 255u, 492u, 493u, 508u,
                                     EL_FRAME_MAX_PAYLOAD - 1u, EL_FRAME_MAX_PAYLOAD};
    uint32_t pick = below(100);
    if (pick < 55u)
        return below(65);
    if (pick < 85u)
        return below(700);
    if (pick < 93u)
        return below(EL_FRAME_MAX_PAYLOAD + 1u);
    return edges[below(sizeof edges / sizeof edges[0])];
}

static void random_spec(frame_spec *s)
{
    uint32_t i, style = below(4);
    s->type = below(4) == 0 ? (uint8_t)rnd() : (uint8_t)(1u + below(8));
    s->seq = (uint16_t)rnd();
    s->n = random_size();
    for (i = 0; i < s->n; ++i) {
        uint8_t b = (uint8_t)rnd();
        if (style == 1)
            b = below(4) == 0 ? b : 0u;     /* mostly zeros */
        else if (style == 2)
            b = b ? b : 0xffu;               /* no zeros: long COBS blocks */
        s->payload[i] = b;
    }
}

static size_t build(const frame_spec *s, uint8_t *out, size_t cap)
{
    size_t n = el_frame_build(s->type, s->seq, s->payload, s->n, out, cap);
    if (n == 0u) {
        fprintf(stderr, "el_frame_build: refused a payload of %lu bytes\n", (unsigned long)s->n);
        exit(3);
    }
    return n;
}

static size_t insert_at(size_t size, size_t at, const uint8_t *bytes, size_t n)
{
    if (size + n > INPUT_CAP)
        n = INPUT_CAP - size;
    memmove(input + at + n, input + at, size - at);
    memcpy(input + at, bytes, n);
    return size + n;
}

static size_t mutate(size_t size)
{
    uint32_t kind = below(11);
    size_t at = size ? below((uint32_t)size) : 0u;
    switch (kind) {
    case 0: case 1: /* flip a bit */
        if (size)
            input[at] ^= (uint8_t)(1u << below(8));
        return size;
    case 2: /* a random byte, often a delimiter or a long-block code */
        if (size) {
            uint32_t pick = below(3);
            input[at] = pick == 0 ? 0u : pick == 1 ? 0xffu : (uint8_t)rnd();
        }
        return size;
    case 3: { /* insert bytes */
        uint8_t bytes[8];
        uint32_t n = 1u + below(8), i;
        for (i = 0; i < n; ++i)
            bytes[i] = (uint8_t)rnd();
        return insert_at(size, at, bytes, n);
    }
    case 4: { /* delete bytes */
        size_t n = 1u + below(16);
        if (n > size - at)
            n = size - at;
        memmove(input + at, input + at + n, size - at - n);
        return size - n;
    }
    case 5: /* truncate */
        return at;
    case 6: { /* splice: the tail replaced by another frame's, from anywhere in it */
        frame_spec *other = &specs[below(MAX_FRAMES)];
        size_t n = build(other, spare, sizeof spare), from = below((uint32_t)n);
        if (at + (n - from) > INPUT_CAP)
            return size;
        memcpy(input + at, spare + from, n - from);
        return at + (n - from);
    }
    case 7: { /* duplicate a stretch (a line that repeats bytes) */
        size_t n = 1u + below(64);
        uint8_t copy[64];
        if (n > size - at)
            n = size - at;
        memcpy(copy, input + at, n);
        return insert_at(size, at + n, copy, n);
    }
    case 8: { /* a run with no delimiter: overlong */
        static uint8_t run[EL_FRAME_MAX_BYTES + 256u];
        size_t n = EL_FRAME_MAX_BYTES - 64u + below(256), i;
        for (i = 0; i < n; ++i)
            run[i] = (uint8_t)(1u + below(255));
        return insert_at(size, at, run, n);
    }
    case 9: { /* a frame whose CRC checks but whose header does not: forged, then COBS */
        static uint8_t raw[EL_FRAME_MAX_BYTES];
        frame_spec *s = &specs[below(MAX_FRAMES)];
        size_t n = s->n + EL_FRAME_OVERHEAD, enc;
        uint32_t crc;
        raw[0] = 'E'; raw[1] = 'F'; raw[2] = EL_FRAME_VERSION; raw[3] = s->type;
        raw[4] = (uint8_t)s->seq; raw[5] = (uint8_t)(s->seq >> 8); raw[6] = (uint8_t)rnd(); raw[7] = 0u;
        raw[8] = (uint8_t)s->n; raw[9] = (uint8_t)(s->n >> 8); raw[10] = 0u; raw[11] = 0u;
        memcpy(raw + EL_FRAME_HEADER_BYTES, s->payload, s->n);
        raw[below(12)] = (uint8_t)rnd(); /* any header byte, reserved included */
        if (below(2))
            raw[7] = (uint8_t)(1u + below(255));
        crc = el_crc32(raw, n - EL_FRAME_CRC_BYTES);
        raw[n - 4] = (uint8_t)crc; raw[n - 3] = (uint8_t)(crc >> 8);
        raw[n - 2] = (uint8_t)(crc >> 16); raw[n - 1] = (uint8_t)(crc >> 24);
        enc = el_cobs_encode(raw, n, spare, sizeof spare - 1u);
        if (enc == 0u) {
            fprintf(stderr, "el_cobs_encode: refused a frame of %zu bytes\n", n);
            exit(3);
        }
        spare[enc++] = 0u;
        return insert_at(size, below(2) ? size : at, spare, enc);
    }
    default: { /* a length field or CRC byte set at random: frames stay COBS-valid */
        size_t n = 1u + below(3), i;
        for (i = 0; i < n && size; ++i)
            input[below((uint32_t)size)] = (uint8_t)rnd();
        return size;
    }
    }
}

static int check_frame(const el_frame_decoder *d, unsigned long input_index)
{
    const uint8_t *b = d->buf;
    size_t size = (size_t)d->frame.length + EL_FRAME_OVERHEAD; /* the buffer holds it until the next byte */
    uint32_t stored;
    if (d->frame.length > EL_FRAME_MAX_PAYLOAD || d->frame.payload != b + EL_FRAME_HEADER_BYTES ||
        ((uint32_t)b[8] | (uint32_t)b[9] << 8 | (uint32_t)b[10] << 16 | (uint32_t)b[11] << 24) != d->frame.length) {
        fprintf(stderr, "fuzz: input %lu: accepted a frame of %zu bytes with length %lu\n", input_index, size,
                (unsigned long)d->frame.length);
        return 1;
    }
    stored = (uint32_t)b[size - 4] | (uint32_t)b[size - 3] << 8 | (uint32_t)b[size - 2] << 16 |
             (uint32_t)b[size - 1] << 24;
    if (stored != el_crc32(b, size - EL_FRAME_CRC_BYTES) || memcmp(b, EL_FRAME_MAGIC, 2) != 0 ||
        b[2] != EL_FRAME_VERSION) {
        fprintf(stderr, "fuzz: input %lu: accepted a frame whose CRC, magic or version does not check\n",
                input_index);
        return 1;
    }
    return 0;
}

static int do_fuzz(unsigned long seed, unsigned long count)
{
    unsigned long index, frames = 0, clean = 0, errors[32] = {0};
    unsigned long long bytes = 0;
    unsigned i;
    rng_state = 0x9e3779b97f4a7c15ull ^ (uint64_t)seed * 0x100000001b3ull;
    if (rng_state == 0)
        rng_state = 1;
    el_frame_decoder_init(&decoder);
    for (index = 0; index < count; ++index) {
        uint32_t k, nframes = 1u + below(MAX_FRAMES), mutations = below(8), expect = 0;
        size_t size = 0, j;
        const int intact = below(8) == 0;
        for (k = 0; k < nframes; ++k) {
            random_spec(&specs[k]);
            size += build(&specs[k], input + size, INPUT_CAP - size);
        }
        for (k = nframes; k < MAX_FRAMES; ++k)
            random_spec(&specs[k]); /* splice material */
        if (intact) {
            (void)el_frame_feed(&decoder, 0u); /* a clean start: an idle 0x00 */
        } else {
            if (mutations == 0)
                mutations = 1;
            for (k = 0; k < mutations; ++k)
                size = mutate(size);
        }
        for (j = 0; j < size; ++j) {
            el_feed_result r = el_frame_feed(&decoder, input[j]);
            if (r == EL_FEED_FRAME) {
                frames++;
                if (check_frame(&decoder, index))
                    return 1;
                if (intact) {
                    const frame_spec *s = &specs[expect < nframes ? expect : 0];
                    if (expect >= nframes || decoder.frame.type != s->type || decoder.frame.seq != s->seq ||
                        decoder.frame.length != s->n || decoder.frame.flags != 0u ||
                        memcmp(decoder.frame.payload, s->payload, s->n) != 0) {
                        fprintf(stderr, "fuzz: input %lu: frame %u is not the one built\n", index, expect);
                        return 1;
                    }
                    expect++;
                }
            } else if (r == EL_FEED_ERROR) {
                if ((unsigned)decoder.error < 1u || (unsigned)decoder.error > 8u) {
                    fprintf(stderr, "fuzz: input %lu: error %d is no decoder reason\n", index, (int)decoder.error);
                    return 1;
                }
                errors[decoder.error]++;
                if (intact) {
                    fprintf(stderr, "fuzz: input %lu: an unmutated frame gave %s\n", index,
                            el_frame_error_name(decoder.error));
                    return 1;
                }
            }
        }
        if (intact) {
            if (expect != nframes) {
                fprintf(stderr, "fuzz: input %lu: %u of %u unmutated frames came back\n", index, expect, nframes);
                return 1;
            }
            clean++;
        }
        bytes += size;
        if (below(2) == 0) { /* half the inputs end on a delimiter; the rest run into the next */
            el_feed_result r = el_frame_feed(&decoder, 0u);
            if (r == EL_FEED_FRAME && check_frame(&decoder, index))
                return 1;
            if (r == EL_FEED_FRAME)
                frames++;
            else if (r == EL_FEED_ERROR)
                errors[decoder.error]++;
            bytes++;
        }
    }
    printf("inputs %lu bytes %llu frames %lu intact %lu", count, bytes, frames, clean);
    for (i = 1; i <= 8u; ++i)
        printf(" %s=%lu", el_frame_error_name((el_frame_error)i), errors[i]);
    printf("\n");
    return 0;
}

int main(int argc, char **argv)
{
    (void)put_u32; /* firmware_harness_io.h's writer: this harness writes text and wire bytes */
    if (argc == 4 && strcmp(argv[1], "encode") == 0)
        return do_encode(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "cobs") == 0)
        return do_cobs(argv[2], argv[3]);
    if (argc == 4 && strcmp(argv[1], "decode") == 0)
        return do_decode(argv[2], argv[3]);
    if (argc >= 2 && strcmp(argv[1], "seen") == 0)
        return do_seen(argc - 2, argv + 2);
    if (argc == 4 && strcmp(argv[1], "fuzz") == 0)
        return do_fuzz(strtoul(argv[2], NULL, 10), strtoul(argv[3], NULL, 10));
    fprintf(stderr, "usage: protocol_harness encode|cobs|decode IN OUT | seen SEQ... | fuzz SEED COUNT\n");
    return 2;
}

/* el_protocol.c - the bridge's frame layer (el_protocol.h): COBS, frames, sequence numbers. */
#include "el_protocol.h"

#include <string.h>

#include "el_model.h" /* el_crc32 */

static void put_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put_u32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    p[2] = (uint8_t)(v >> 16);
    p[3] = (uint8_t)(v >> 24);
}

static uint32_t get_u32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* The exact COBS size of n bytes: a code byte per block; a block ends at a 0x00 or after
 * 254 other bytes. */
static size_t cobs_size(const uint8_t *in, size_t n)
{
    size_t size = 1u, run = 0u, i;
    for (i = 0; i < n; ++i) {
        if (in[i] == 0u) {
            size += 1u;
            run = 0u;
        } else {
            size += 1u;
            if (++run == 254u) {
                size += 1u;
                run = 0u;
            }
        }
    }
    return size;
}

/* COBS of in[0, n) into out. Each input byte is read before anything is written at or past
 * it, and after i input bytes at most 1 + i + i/254 bytes are written: in may lie inside out
 * at an offset of at least 1 + n/254 (el_frame_build encodes in place). */
static size_t cobs_encode(const uint8_t *in, size_t n, uint8_t *out)
{
    size_t code_at = 0u, w = 1u, i;
    for (i = 0; i < n; ++i) {
        const uint8_t x = in[i];
        if (x == 0u) {
            out[code_at] = (uint8_t)(w - code_at);
            code_at = w++;
        } else {
            out[w++] = x;
            if (w - code_at == 255u) {
                out[code_at] = 0xffu;
                code_at = w++;
            }
        }
    }
    out[code_at] = (uint8_t)(w - code_at);
    return w;
}

size_t el_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap)
{
    if (cobs_size(in, n) > cap)
        return 0u;
    return cobs_encode(in, n, out);
}

size_t el_frame_build(uint8_t type, uint16_t seq, const uint8_t *payload, size_t n, uint8_t *out, size_t cap)
{
    size_t raw, at, size;
    uint8_t *frame;
    if (n > EL_FRAME_MAX_PAYLOAD || cap < EL_FRAME_WIRE_BYTES(n))
        return 0u;
    raw = n + EL_FRAME_OVERHEAD;
    at = 1u + raw / 254u; /* the frame's bytes sit here and are encoded in place to out[0] */
    frame = out + at;
    frame[0] = (uint8_t)EL_FRAME_MAGIC[0];
    frame[1] = (uint8_t)EL_FRAME_MAGIC[1];
    frame[2] = (uint8_t)EL_FRAME_VERSION;
    frame[3] = type;
    put_u16(frame + 4, seq);
    frame[6] = 0u; /* flags */
    frame[7] = 0u; /* reserved */
    put_u32(frame + 8, (uint32_t)n);
    if (n != 0u)
        memcpy(frame + EL_FRAME_HEADER_BYTES, payload, n);
    put_u32(frame + EL_FRAME_HEADER_BYTES + n, el_crc32(frame, EL_FRAME_HEADER_BYTES + n));
    size = cobs_encode(frame, raw, out);
    out[size] = 0u;
    return size + 1u;
}

void el_frame_decoder_init(el_frame_decoder *d)
{
    d->size = 0u;
    d->remaining = 0u;
    d->pending_zero = 0u;
    d->started = 0u;
    d->discarding = 0u;
    d->error = EL_FRAME_OK;
    memset(&d->frame, 0, sizeof d->frame);
}

static void restart(el_frame_decoder *d)
{
    d->size = 0u;
    d->remaining = 0u;
    d->pending_zero = 0u;
    d->started = 0u;
}

static el_feed_result fail(el_frame_decoder *d, el_frame_error error)
{
    d->error = error;
    return EL_FEED_ERROR;
}

/* The checks on a whole decoded frame, in the order protocol.py makes them. */
static el_feed_result finish(el_frame_decoder *d)
{
    const uint8_t *b = d->buf;
    const size_t size = d->size;
    uint32_t length;
    if (d->remaining != 0u)
        return fail(d, EL_FRAME_ERR_COBS);
    if (size < EL_FRAME_OVERHEAD)
        return fail(d, EL_FRAME_ERR_SHORT);
    if (b[0] != (uint8_t)EL_FRAME_MAGIC[0] || b[1] != (uint8_t)EL_FRAME_MAGIC[1])
        return fail(d, EL_FRAME_ERR_MAGIC);
    if (b[2] != EL_FRAME_VERSION)
        return fail(d, EL_FRAME_ERR_VERSION);
    length = get_u32(b + 8);
    if ((size_t)length != size - EL_FRAME_OVERHEAD)
        return fail(d, EL_FRAME_ERR_LENGTH);
    if (get_u32(b + size - EL_FRAME_CRC_BYTES) != el_crc32(b, size - EL_FRAME_CRC_BYTES))
        return fail(d, EL_FRAME_ERR_CRC);
    if (b[7] != 0u)
        return fail(d, EL_FRAME_ERR_HEADER);
    d->frame.type = b[3];
    d->frame.seq = (uint16_t)(b[4] | b[5] << 8);
    d->frame.flags = b[6];
    d->frame.length = length;
    d->frame.payload = b + EL_FRAME_HEADER_BYTES;
    d->error = EL_FRAME_OK;
    return EL_FEED_FRAME;
}

el_feed_result el_frame_feed(el_frame_decoder *d, uint8_t byte)
{
    if (byte == 0u) {
        el_feed_result result = EL_FEED_NONE;
        if (!d->discarding && d->started)
            result = finish(d);
        d->discarding = 0u;
        restart(d);
        return result;
    }
    if (d->discarding)
        return EL_FEED_NONE;
    if (d->remaining == 0u) { /* a code byte: the implied 0x00 of the block before, if any */
        if (d->pending_zero) {
            if (d->size == EL_FRAME_MAX_BYTES)
                goto overlong;
            d->buf[d->size++] = 0u;
        }
        d->started = 1u;
        d->remaining = (uint8_t)(byte - 1u);
        d->pending_zero = byte != 0xffu;
        return EL_FEED_NONE;
    }
    if (d->size == EL_FRAME_MAX_BYTES)
        goto overlong;
    d->buf[d->size++] = byte;
    d->remaining--;
    return EL_FEED_NONE;
overlong:
    d->discarding = 1u;
    restart(d);
    return fail(d, EL_FRAME_ERR_OVERLONG);
}

const char *el_frame_error_name(el_frame_error error)
{
    switch (error) {
    case EL_FRAME_OK: return "ok";
    case EL_FRAME_ERR_OVERLONG: return "overlong";
    case EL_FRAME_ERR_COBS: return "bad COBS";
    case EL_FRAME_ERR_SHORT: return "short";
    case EL_FRAME_ERR_MAGIC: return "bad magic";
    case EL_FRAME_ERR_VERSION: return "bad version";
    case EL_FRAME_ERR_LENGTH: return "length mismatch";
    case EL_FRAME_ERR_CRC: return "bad CRC";
    case EL_FRAME_ERR_HEADER: return "bad header";
    case EL_NAK_UNKNOWN_TYPE: return "unknown type";
    case EL_NAK_BAD_PAYLOAD: return "bad payload";
    default: return "unknown error";
    }
}

void el_frame_history_reset(el_frame_history *h)
{
    h->last = 0u;
    h->valid = 0u;
}

el_seq_verdict el_frame_seen(el_frame_history *h, uint16_t seq)
{
    const uint16_t behind = (uint16_t)(h->last - seq);
    if (h->valid) {
        if (behind == 0u)
            return EL_SEQ_DUPLICATE;
        if (behind <= EL_FRAME_SEQ_WINDOW)
            return EL_SEQ_STALE;
    }
    h->last = seq;
    h->valid = 1u;
    return EL_SEQ_NEW;
}

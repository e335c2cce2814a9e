/*
 * el_protocol.h - the bridge's frame layer, version 1: COBS-framed, CRC-32-checked frames
 * over a serial line that drops, flips and duplicates bytes.
 *
 * One byte layout, two sides: firmware_bridge/protocol.py is the host's (the same numbers
 * and struct layouts); tests/test_protocol.py compiles this header and checks every size,
 * offset and constant against it, and has each side parse the other's frames. The layout,
 * a byte-level example and the rules are in docs/protocol.md.
 *
 * On the wire a frame is COBS(frame bytes) followed by one 0x00 delimiter; COBS leaves no
 * 0x00 inside, so a receiver that lost its place starts again at the next 0x00.
 *
 *     el_frame_header   12 bytes, little-endian: "EF", version, type, seq, flags, 0, length
 *     payload           length bytes, at most EL_FRAME_MAX_PAYLOAD
 *     crc32             u32 LE: zlib's CRC-32 (el_crc32) of the header and the payload
 *
 * The receiver (el_frame_decoder) takes one byte at a time into a fixed buffer: no heap, no
 * second copy. ACK and NAK answer a frame by its sequence number (el_frame_ack, el_frame_nak
 * payloads); el_frame_seen tells a new frame from a duplicate (acknowledged again, not run
 * again) and a stale one (dropped). Message payloads beyond ACK and NAK come later.
 */
#ifndef EL_PROTOCOL_H
#define EL_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#define EL_FRAME_MAGIC "EF"
#define EL_FRAME_VERSION 1u
#define EL_FRAME_HEADER_BYTES 12u
#define EL_FRAME_CRC_BYTES 4u
#define EL_FRAME_OVERHEAD (EL_FRAME_HEADER_BYTES + EL_FRAME_CRC_BYTES)
/* A 4 KB chunk and room for the header of the message that carries it. */
#define EL_FRAME_MAX_PAYLOAD 4352u
#define EL_FRAME_MAX_BYTES (EL_FRAME_MAX_PAYLOAD + EL_FRAME_OVERHEAD) /* a decoded frame */
/* COBS adds one code byte, and one more per 254 bytes of input. */
#define EL_COBS_MAX_ENCODED(n) ((n) + (n) / 254u + 1u)
/* Wire bytes of a frame with n payload bytes at most: COBS of the frame, the 0x00. */
#define EL_FRAME_WIRE_BYTES(n) (EL_COBS_MAX_ENCODED((n) + EL_FRAME_OVERHEAD) + 1u)
#define EL_FRAME_MAX_WIRE EL_FRAME_WIRE_BYTES(EL_FRAME_MAX_PAYLOAD)
/* el_frame_seen: a frame at most this many sequence numbers behind the last one is stale. */
#define EL_FRAME_SEQ_WINDOW 256u

/* el_frame_header.type: the messages (their payloads are later slices', but ACK's and NAK's) */
enum {
    EL_MSG_HELLO = 1,
    EL_MSG_PUT_MODEL = 2,
    EL_MSG_COMMIT = 3,
    EL_MSG_INFER = 4,
    EL_MSG_TRAIN = 5,
    EL_MSG_GET_WEIGHTS = 6,
    EL_MSG_STATS = 7,
    EL_MSG_RESET = 8,
    EL_MSG_ACK = 0x80, /* el_frame_ack, then the answer's data (if the message has one) */
    EL_MSG_NAK = 0x81  /* el_frame_nak */
};

/* el_frame_ack.flags */
#define EL_ACK_DUPLICATE 1u /* the frame was a duplicate: acknowledged again, not run again */

/* Why a frame was refused: the decoder's errors, which are also NAK reasons 1-8, and the
 * reasons of a receiver that decoded the frame but will not run it (16 and up). */
typedef enum {
    EL_FRAME_OK = 0,
    EL_FRAME_ERR_OVERLONG = 1,    /* more than EL_FRAME_MAX_BYTES before the 0x00 */
    EL_FRAME_ERR_COBS = 2,        /* the 0x00 came inside a COBS block */
    EL_FRAME_ERR_SHORT = 3,       /* fewer than EL_FRAME_OVERHEAD bytes */
    EL_FRAME_ERR_MAGIC = 4,
    EL_FRAME_ERR_VERSION = 5,
    EL_FRAME_ERR_LENGTH = 6,      /* length field != the payload bytes received */
    EL_FRAME_ERR_CRC = 7,
    EL_FRAME_ERR_HEADER = 8,      /* reserved byte not 0 (checked after the CRC) */
    EL_NAK_UNKNOWN_TYPE = 16,     /* a type this receiver does not handle */
    EL_NAK_BAD_PAYLOAD = 17       /* the payload does not fit the message */
} el_frame_error;

typedef struct {
    char magic[2];    /* "EF" */
    uint8_t version;  /* EL_FRAME_VERSION */
    uint8_t type;     /* EL_MSG_* */
    uint16_t seq;     /* the sender's sequence number, +1 per new frame, wrapping */
    uint8_t flags;    /* none defined in version 1: sent as 0, ignored when received */
    uint8_t reserved; /* 0 */
    uint32_t length;  /* payload bytes */
} el_frame_header;

typedef struct {
    uint16_t seq;     /* the frame acknowledged */
    uint16_t flags;   /* EL_ACK_* */
} el_frame_ack;

typedef struct {
    uint16_t seq;     /* the frame refused (as read: untrusted for reasons 1-8) */
    uint16_t reason;  /* el_frame_error */
} el_frame_nak;

/* COBS-encodes n bytes of in into out; the size written (no 0x00 appended), or 0 when it
 * exceeds cap. At most EL_COBS_MAX_ENCODED(n) bytes. in and out must not overlap. */
size_t el_cobs_encode(const uint8_t *in, size_t n, uint8_t *out, size_t cap);

/* The wire bytes of one frame (COBS, then the 0x00) in out; their count, or 0 when n >
 * EL_FRAME_MAX_PAYLOAD or cap < EL_FRAME_WIRE_BYTES(n). The payload must not overlap out. */
size_t el_frame_build(uint8_t type, uint16_t seq, const uint8_t *payload, size_t n, uint8_t *out, size_t cap);

typedef enum { EL_FEED_NONE = 0, EL_FEED_FRAME = 1, EL_FEED_ERROR = 2 } el_feed_result;

typedef struct {
    uint8_t type, flags;
    uint16_t seq;
    uint32_t length;
    const uint8_t *payload;  /* into the decoder's buffer: valid until the next el_frame_feed */
} el_frame;

typedef struct {
    uint8_t buf[EL_FRAME_MAX_BYTES]; /* the decoded bytes of the frame in progress */
    size_t size;
    uint8_t remaining;       /* data bytes left in the current COBS block */
    uint8_t pending_zero;    /* the block before ended in an implied 0x00 */
    uint8_t started;         /* a byte came since the last 0x00 */
    uint8_t discarding;      /* an error: skip to the next 0x00 */
    el_frame frame;          /* after EL_FEED_FRAME */
    el_frame_error error;    /* after EL_FEED_ERROR */
} el_frame_decoder;

void el_frame_decoder_init(el_frame_decoder *d);

/* One byte from the line. EL_FEED_FRAME: d->frame holds a frame whose CRC checked;
 * EL_FEED_ERROR: d->error says why the bytes since the last 0x00 are no frame (an overlong
 * one is reported at once and its rest skipped). A 0x00 with nothing before it is idle. */
el_feed_result el_frame_feed(el_frame_decoder *d, uint8_t byte);

/* A short name of an el_frame_error, for logs ("bad CRC"). */
const char *el_frame_error_name(el_frame_error error);

/* The last new sequence number a receiver accepted. */
typedef struct {
    uint16_t last;
    uint8_t valid;   /* 0 until the first frame: anything is new */
} el_frame_history;

typedef enum { EL_SEQ_NEW = 0, EL_SEQ_DUPLICATE = 1, EL_SEQ_STALE = 2 } el_seq_verdict;

void el_frame_history_reset(el_frame_history *h);

/* The verdict on a decoded frame's seq, modulo 2^16: the last one again is a DUPLICATE
 * (answer it again, do not run it again), one 1..EL_FRAME_SEQ_WINDOW behind is STALE (drop
 * it), anything else is NEW and becomes the last. */
el_seq_verdict el_frame_seen(el_frame_history *h, uint16_t seq);

#endif /* EL_PROTOCOL_H */

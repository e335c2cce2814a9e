/*
 * el_messages.h - the bridge's message layer, version 1: the payloads that el_protocol.h's
 * frames carry, one fixed-size struct per request and per reply.
 *
 * One byte layout, two sides: firmware_bridge/messages.py is the host's (the same struct
 * names, fields and numbers); tests/test_messages.py compiles this header and compares
 * every size, offset and constant, and tests/messages_harness.c parses the payloads Python
 * writes and writes payloads Python parses. The layouts and a byte-level example of each
 * message are in docs/protocol.md.
 *
 * Little-endian, no padding: every field sits at an offset that is a multiple of its size,
 * so a payload is read by memcpy into its struct on a little-endian core (Cortex-M, x86).
 *
 *   request   the frame of type EL_MSG_<NAME>: its el_msg_<name> struct, then its data
 *   answer    the ACK's payload after el_frame_ack: el_msg_result (status, detail), then,
 *             when status is EL_STATUS_OK, el_msg_<name>_reply and its data
 *
 * A request that does not fit its message (el_msg_check_request) is refused with NAK
 * EL_NAK_BAD_PAYLOAD (17), an unknown type with EL_NAK_UNKNOWN_TYPE (16); a well-formed
 * request the board cannot carry out is answered with an ACK whose el_msg_result.status says
 * why (EL_STATUS_*), and whose detail is a number completing it (the size expected, ...).
 */
#ifndef EL_MESSAGES_H
#define EL_MESSAGES_H

#include <stdint.h>
#include <string.h>

#include "el_protocol.h"

#if defined(__BYTE_ORDER__) && defined(__ORDER_LITTLE_ENDIAN__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "el_messages.h: the payloads are little-endian structs read by memcpy"
#endif

#define EL_MSG_VERSION 1u
#define EL_MSG_MAX_CHUNK 4096u /* data bytes in one PUT_MODEL, INFER or TRAIN frame */
#define EL_MSG_MAX_BATCH 64u   /* samples in one TRAIN batch */
#define EL_MSG_NONE 0xffffffffu /* no slot, no tensor */
#define EL_MSG_SHA256_BYTES 32u
/* The room for a reply body: a full frame less el_frame_ack (4) and el_msg_result (8). */
#define EL_MSG_REPLY_ROOM (EL_FRAME_MAX_PAYLOAD - 4u - 8u)
#define EL_MSG_MAX_OUTPUT (EL_MSG_REPLY_ROOM - 32u) /* INFER output bytes (after el_msg_infer_reply) */
#define EL_MSG_MAX_PAGE (EL_MSG_REPLY_ROOM - 40u)   /* GET_WEIGHTS bytes (after el_msg_get_weights_reply) */

/* el_msg_result.status */
typedef enum {
    EL_STATUS_OK = 0,
    EL_STATUS_NO_MODEL = 1,      /* no model is active */
    EL_STATUS_NO_TRANSFER = 2,   /* COMMIT: no complete, verified transfer of that SHA-256 */
    EL_STATUS_HASH_MISMATCH = 3, /* PUT_MODEL: all bytes came, their SHA-256 is not the transfer's */
    EL_STATUS_TOO_BIG = 4,       /* PUT_MODEL: larger than a slot (detail: the slot's bytes) */
    EL_STATUS_MODEL_REFUSED = 5, /* COMMIT: el_model_open / the runner refused it (detail: the op) */
    EL_STATUS_NOT_TRAINABLE = 6, /* TRAIN, GET_WEIGHTS: the model has no trainable tail */
    EL_STATUS_BAD_INPUT = 7,     /* sizes, labels, cut or index do not fit the model (detail: expected) */
    EL_STATUS_STORAGE = 8        /* a slot could not be written (detail: the error) */
} el_msg_status;

/* el_msg_*_reply.state of a chunked transfer (PUT_MODEL, INFER, TRAIN) */
enum { EL_XFER_RECEIVING = 0, EL_XFER_WRONG_OFFSET = 1, EL_XFER_COMPLETE = 2 };
/* el_msg_hello_reply.trial, el_msg_commit_reply.trial: the active model's boot state */
enum { EL_TRIAL_NONE = 0, EL_TRIAL_CONFIRMED = 1, EL_TRIAL_TRIAL = 2, EL_TRIAL_REVERTED = 3 };
/* el_msg_train.mode, .flags */
enum { EL_TRAIN_MODE_IMAGES = 1, EL_TRAIN_MODE_FEATURES = 2 };
#define EL_TRAIN_RESTART 1u /* start the trainer again from the image's weights, with this seed */

typedef struct {
    uint16_t status;   /* el_msg_status */
    uint16_t reserved; /* 0 */
    uint32_t detail;   /* completes the status: the size expected, the op refused, ... */
} el_msg_result;

/* HELLO: starts a session; the receiver takes the frame as new whatever its seq, unless it is
 * the last frame again with the same session (a retransmission), and its history restarts. */
typedef struct {
    uint32_t version; /* EL_MSG_VERSION the host speaks; not 0 */
    uint32_t session; /* the host's random session number */
} el_msg_hello;

typedef struct {
    uint32_t version;       /* EL_MSG_VERSION */
    uint32_t frame_version; /* EL_FRAME_VERSION */
    char board[32];         /* NUL-padded ASCII: "mps2-an500", "agent@raspberrypi" */
    char firmware[16];      /* its version */
    char device[16];        /* the device profile: "cortex-m7", "rpi4", "host" */
    uint64_t ram_bytes;
    uint64_t flash_bytes;   /* for models: both slots */
    uint32_t arena_bytes;   /* the largest model arena it runs */
    uint32_t max_payload;   /* EL_FRAME_MAX_PAYLOAD */
    uint32_t ops;           /* bit n: it runs EL_OP n */
    uint32_t tick_hz;       /* the clock of every *_ticks field */
    uint32_t slot;          /* the active slot, EL_MSG_NONE without a model */
    uint32_t sequence;      /* its commit record's sequence */
    uint32_t trial;         /* EL_TRIAL_* */
    uint32_t model_bytes;
    uint8_t sha256[32];     /* the active model's SHA-256 (zeros without one) */
    uint32_t input_bytes;   /* the active model's input tensor */
    uint32_t output_bytes;
    uint32_t cut;           /* the first trainable block's input tensor, EL_MSG_NONE: not trainable */
    uint32_t cut_bytes;
    uint32_t classes;
    uint32_t samples_seen;  /* TRAIN samples since the model became active */
} el_msg_hello_reply;

/* PUT_MODEL: one chunk of the model, into the inactive slot. A transfer is its (sha256,
 * total_bytes); another one starts a new transfer. A chunk at the offset the board expects
 * is written; at any other offset nothing is written and the reply names the offset to
 * send (an interrupted transfer resumes there). A chunk of 0 bytes asks for the state. */
typedef struct {
    uint8_t sha256[32];   /* SHA-256 of the whole model image */
    uint32_t total_bytes; /* the whole image; not 0 */
    uint32_t offset;
    uint32_t length;      /* data bytes following, at most EL_MSG_MAX_CHUNK, offset + length <= total */
    uint32_t flags;       /* none in version 1: 0 */
} el_msg_put_model;

typedef struct {
    uint32_t state;       /* EL_XFER_*: COMPLETE when every byte came and the SHA-256 checked */
    uint32_t next_offset; /* the offset the board expects next */
    uint32_t total_bytes;
    uint32_t slot;        /* the slot being written */
} el_msg_put_model_reply;

/* COMMIT: make the verified model in the inactive slot the active one: its commit record is
 * written last, then it boots in trial, and a self-check inference confirms it. */
typedef struct {
    uint8_t sha256[32];
    uint32_t total_bytes;
    uint32_t flags;       /* none in version 1: 0 */
} el_msg_commit;

typedef struct {
    uint32_t slot;
    uint32_t sequence;    /* the commit record's: one more than any before */
    uint32_t trial;       /* EL_TRIAL_CONFIRMED after the self-check */
    uint32_t reserved;
} el_msg_commit_reply;

/* INFER: the input tensor's bytes in chunks; the chunk that completes them runs the model.
 * A chunk at offset 0 starts an input again. */
typedef struct {
    uint32_t total_bytes; /* the model's input bytes */
    uint32_t offset;
    uint32_t length;      /* data bytes following, at most EL_MSG_MAX_CHUNK */
    uint32_t flags;       /* none in version 1: 0 */
} el_msg_infer;

typedef struct {
    uint32_t state;        /* EL_XFER_*: COMPLETE when the model ran */
    uint32_t next_offset;
    uint32_t output_bytes; /* output bytes following (COMPLETE only), at most EL_MSG_MAX_OUTPUT */
    uint32_t reserved;
    uint64_t instructions; /* executed by the inference; 0 when the board does not count them */
    uint64_t ticks;        /* the inference's time, at tick_hz */
} el_msg_infer_reply;

/* TRAIN: a batch of count samples (the model's input, or int8 features at the cut the host
 * computed), their labels, in chunks of the concatenated samples; each sample trains one LLS
 * step as soon as its bytes are complete. The payload: this struct, the labels (count bytes,
 * zero-padded to a multiple of 4), then length data bytes. */
typedef struct {
    uint16_t mode;          /* EL_TRAIN_MODE_* */
    uint16_t count;         /* 1..EL_MSG_MAX_BATCH */
    uint32_t sample_bytes;  /* bytes per sample: the input's, or the cut tensor's */
    uint32_t cut;           /* FEATURES: the cut tensor (HELLO's cut); IMAGES: EL_MSG_NONE */
    uint32_t batch;         /* the host's batch number: another number starts another batch */
    uint32_t seed;          /* stochastic rounding, used when a trainer starts */
    float lr;               /* block learning rate, finite, >= 0 */
    float classifier_lr;    /* finite, >= 0 */
    uint32_t flags;         /* EL_TRAIN_RESTART */
    uint32_t offset;        /* into the concatenated samples */
    uint32_t length;        /* data bytes in this frame, at most EL_MSG_MAX_CHUNK */
} el_msg_train;

typedef struct {
    uint32_t state;         /* EL_XFER_*: COMPLETE when every sample trained */
    uint32_t next_offset;
    uint32_t samples_seen;  /* since the model became active */
    uint32_t count;         /* el_msg_train_result following (COMPLETE only): one per sample */
    uint64_t instructions;  /* of the batch's steps; 0 when not counted */
    uint64_t ticks;         /* the batch's steps' time, at tick_hz */
} el_msg_train_reply;

typedef struct {
    float block_loss[4];    /* each trainable block's LLS loss before its update (0 past the last) */
    float loss;             /* the classifier's cross-entropy before its update */
    uint32_t predicted;     /* the class its logits gave */
} el_msg_train_result;

/* GET_WEIGHTS: a page of trainable op `index` (blocks' ops in order, then the classifier):
 * its int8 weights then its int32 biases as one byte string. */
typedef struct {
    uint32_t index;
    uint32_t offset;        /* into weights + biases */
    uint32_t max_bytes;     /* 0: as many as fit; at most EL_MSG_MAX_PAGE */
    uint32_t reserved;
} el_msg_get_weights;

typedef struct {
    uint32_t index;
    uint32_t count;         /* trainable ops */
    uint32_t op;            /* the op's index in the image */
    uint32_t weight_bytes;
    uint32_t bias_bytes;
    uint32_t offset;
    uint32_t length;        /* bytes following */
    uint32_t weights_crc32; /* of all its weights */
    uint32_t bias_crc32;    /* of all its biases */
    uint32_t samples_seen;
} el_msg_get_weights_reply;

typedef struct {
    uint32_t flags;         /* none in version 1: 0 */
} el_msg_stats;

typedef struct {
    uint32_t arena_bytes;   /* the active model's arena */
    uint32_t arena_high_water;
    uint32_t stack_bytes;
    uint32_t stack_high_water;
    uint32_t ram_high_water;
    uint32_t train_buffer_bytes;
    uint32_t samples_seen;
    uint32_t inferences;
    uint32_t tick_hz;
    uint32_t reserved;
    uint64_t infer_instructions; /* the last inference's (0: not counted) */
    uint64_t infer_ticks;
    uint64_t train_instructions; /* the last training step's */
    uint64_t train_ticks;
} el_msg_stats_reply;

/* RESET: the board acknowledges, then restarts (a trial model not confirmed reverts). */
typedef struct {
    uint32_t flags;         /* none in version 1: 0 */
    uint32_t reserved;
} el_msg_reset;

/* ------------------------------------------------------------------ the checks
 * The same rules as messages.py's check_request / check_reply: EL_FRAME_OK, or the NAK
 * reason the payload earns. Each reads the payload's struct by memcpy; no sizes overflow
 * (sums in 64 bits). */

static inline int el_msg_finite(float x)
{
    return x - x == 0.0f; /* false for NaN and the infinities */
}

/* length bytes after `at` make the whole payload, at most EL_MSG_MAX_CHUNK, inside total. */
static inline int el_msg_chunk_fits(uint32_t n, uint32_t at, uint32_t offset, uint32_t length, uint64_t total)
{
    return length <= EL_MSG_MAX_CHUNK && (uint64_t)n == (uint64_t)at + length && (uint64_t)offset + length <= total;
}

static inline el_frame_error el_msg_check_request(uint8_t type, const uint8_t *p, uint32_t n)
{
    const el_frame_error bad = EL_NAK_BAD_PAYLOAD;
    switch (type) {
    case EL_MSG_HELLO: {
        el_msg_hello m;
        if (n != sizeof m)
            return bad;
        memcpy(&m, p, sizeof m);
        return m.version != 0u ? EL_FRAME_OK : bad;
    }
    case EL_MSG_PUT_MODEL: {
        el_msg_put_model m;
        if (n < sizeof m)
            return bad;
        memcpy(&m, p, sizeof m);
        return m.total_bytes != 0u && el_msg_chunk_fits(n, sizeof m, m.offset, m.length, m.total_bytes) ? EL_FRAME_OK
                                                                                                         : bad;
    }
    case EL_MSG_COMMIT: {
        el_msg_commit m;
        if (n != sizeof m)
            return bad;
        memcpy(&m, p, sizeof m);
        return m.total_bytes != 0u ? EL_FRAME_OK : bad;
    }
    case EL_MSG_INFER: {
        el_msg_infer m;
        if (n < sizeof m)
            return bad;
        memcpy(&m, p, sizeof m);
        return m.total_bytes != 0u && el_msg_chunk_fits(n, sizeof m, m.offset, m.length, m.total_bytes) ? EL_FRAME_OK
                                                                                                         : bad;
    }
    case EL_MSG_TRAIN: {
        el_msg_train m;
        uint32_t at, i;
        if (n < sizeof m)
            return bad;
        memcpy(&m, p, sizeof m);
        if ((m.mode != EL_TRAIN_MODE_IMAGES && m.mode != EL_TRAIN_MODE_FEATURES) || m.count < 1u ||
            m.count > EL_MSG_MAX_BATCH || m.sample_bytes == 0u ||
            (m.mode == EL_TRAIN_MODE_IMAGES && m.cut != EL_MSG_NONE) || !el_msg_finite(m.lr) ||
            !el_msg_finite(m.classifier_lr) || m.lr < 0.0f || m.classifier_lr < 0.0f)
            return bad;
        at = (uint32_t)sizeof m + ((m.count + 3u) & ~3u);
        if (n < at)
            return bad;
        for (i = (uint32_t)sizeof m + m.count; i < at; ++i)
            if (p[i] != 0u)
                return bad; /* the labels' padding */
        return el_msg_chunk_fits(n, at, m.offset, m.length, (uint64_t)m.count * m.sample_bytes) ? EL_FRAME_OK : bad;
    }
    case EL_MSG_GET_WEIGHTS: {
        el_msg_get_weights m;
        if (n != sizeof m)
            return bad;
        memcpy(&m, p, sizeof m);
        return m.max_bytes <= EL_MSG_MAX_PAGE ? EL_FRAME_OK : bad;
    }
    case EL_MSG_STATS: return n == sizeof(el_msg_stats) ? EL_FRAME_OK : bad;
    case EL_MSG_RESET: return n == sizeof(el_msg_reset) ? EL_FRAME_OK : bad;
    default: return EL_NAK_UNKNOWN_TYPE;
    }
}

/* An answer's data (after el_frame_ack) for a request of `type`. */
static inline el_frame_error el_msg_check_reply(uint8_t type, const uint8_t *p, uint32_t n)
{
    const el_frame_error bad = EL_NAK_BAD_PAYLOAD;
    el_msg_result r;
    const uint8_t *body = p + sizeof r;
    uint32_t size;
    if (type < EL_MSG_HELLO || type > EL_MSG_RESET)
        return EL_NAK_UNKNOWN_TYPE;
    if (n < sizeof r)
        return bad;
    memcpy(&r, p, sizeof r);
    if (r.status != EL_STATUS_OK || type == EL_MSG_RESET)
        return n == sizeof r ? EL_FRAME_OK : bad;
    size = n - (uint32_t)sizeof r;
    switch (type) {
    case EL_MSG_HELLO: return size == sizeof(el_msg_hello_reply) ? EL_FRAME_OK : bad;
    case EL_MSG_PUT_MODEL: {
        el_msg_put_model_reply m;
        if (size != sizeof m)
            return bad;
        memcpy(&m, body, sizeof m);
        return m.state <= EL_XFER_COMPLETE && m.next_offset <= m.total_bytes ? EL_FRAME_OK : bad;
    }
    case EL_MSG_COMMIT: return size == sizeof(el_msg_commit_reply) ? EL_FRAME_OK : bad;
    case EL_MSG_INFER: {
        el_msg_infer_reply m;
        if (size < sizeof m)
            return bad;
        memcpy(&m, body, sizeof m);
        if (m.state > EL_XFER_COMPLETE || m.output_bytes > EL_MSG_MAX_OUTPUT ||
            (m.output_bytes != 0u && m.state != EL_XFER_COMPLETE))
            return bad;
        return size == sizeof m + m.output_bytes ? EL_FRAME_OK : bad;
    }
    case EL_MSG_TRAIN: {
        el_msg_train_reply m;
        if (size < sizeof m)
            return bad;
        memcpy(&m, body, sizeof m);
        if (m.state > EL_XFER_COMPLETE || m.count > EL_MSG_MAX_BATCH || (m.count != 0u && m.state != EL_XFER_COMPLETE))
            return bad;
        return size == sizeof m + m.count * sizeof(el_msg_train_result) ? EL_FRAME_OK : bad;
    }
    case EL_MSG_GET_WEIGHTS: {
        el_msg_get_weights_reply m;
        if (size < sizeof m)
            return bad;
        memcpy(&m, body, sizeof m);
        if (m.index >= m.count || m.bias_bytes % 4u != 0u || m.length > EL_MSG_MAX_PAGE ||
            (uint64_t)m.offset + m.length > (uint64_t)m.weight_bytes + m.bias_bytes)
            return bad;
        return size == sizeof m + m.length ? EL_FRAME_OK : bad;
    }
    default: return size == sizeof(el_msg_stats_reply) ? EL_FRAME_OK : bad; /* EL_MSG_STATS */
    }
}

#endif /* EL_MESSAGES_H */

/*
 * el_session.h - the board side of the bridge: frames in (el_protocol.h), messages carried
 * out (el_messages.h) on the A/B slots (el_slots.h), the op runner and the trainer, answers
 * out. firmware_bridge/agent.py is its Python twin (the Linux agent): the same rules for
 * sequence numbers, duplicates, staged transfers and slots, so one host tool drives both.
 *
 *     static el_session s;
 *     el_session_init(&s, pool, sizeof pool, write_to_uart, NULL);  // boots a slot
 *     for (;;) el_session_feed(&s, (uint8_t)el_uart_getc());
 *
 * Memory: the session struct (frame decoder, the last answer, the wire buffer: 15,472 B on
 * Cortex-M) and one caller-owned pool, 16-byte aligned, that holds the active model's arena and, for
 * a fine-tuning model, its training buffer after it. HELLO reports the pool as arena_bytes.
 * Samples are staged where they are used: an INFER input in the runner's input tensor, a
 * TRAIN sample in the input tensor (images) or the cut tensor (features). So a TRAIN chunk
 * between two INFER chunks restarts the INFER (WRONG_OFFSET, next_offset 0), and an INFER
 * between two TRAIN chunks drops the batch's partial sample (the next TRAIN chunk is told to
 * resume at the first sample not trained); the agent does the same.
 */
#ifndef EL_SESSION_H
#define EL_SESSION_H

#include <stddef.h>
#include <stdint.h>

#include "el_messages.h"
#include "el_model.h"
#include "el_protocol.h"
#include "el_runner.h"
#include "el_slots.h"
#include "el_train.h"

typedef void (*el_session_write)(void *user, const uint8_t *data, size_t size);

typedef struct {
    el_slots slots;
    el_slots_status storage;     /* EL_SLOTS_OK when the slots are usable */
    uint8_t *pool;
    uint32_t pool_bytes;
    el_session_write write;
    void *write_user;
    /* the active model */
    el_model model;
    el_runner runner;
    el_trainer trainer;
    int active, trainer_on;
    uint32_t trial;              /* EL_TRIAL_* */
    uint32_t input_bytes, output_bytes, cut, cut_bytes, classes, first_op, train_buffer_bytes;
    /* counters (since the model became active) */
    uint32_t samples_seen, inferences, arena_high_water;
    uint64_t infer_ticks, train_ticks;
    /* a staged INFER */
    int infer_staged;
    uint32_t infer_received;
    /* a staged TRAIN batch */
    int train_staged;
    el_msg_train train_key;      /* offset and length zeroed: the batch's identity */
    uint8_t labels[EL_MSG_MAX_BATCH];
    uint32_t train_received, trained;
    uint64_t batch_ticks;
    el_msg_train_result results[EL_MSG_MAX_BATCH];
    /* the line */
    el_frame_decoder decoder;
    el_frame_history history;
    uint32_t session_id;
    int has_session, has_last;
    uint16_t last_seq, out_seq;
    uint8_t last_nak;            /* the last answer was a NAK of reason last_reason */
    uint16_t last_reason;
    uint32_t answer_bytes;       /* the last ACK's data (after el_frame_ack) in answer + 4 */
    uint8_t answer[EL_FRAME_MAX_PAYLOAD];
    uint8_t wire[EL_FRAME_MAX_WIRE];
    int reset_requested;         /* RESET answered: the caller restarts the board */
} el_session;

/* Opens the slots (el_flash_init must have run: storage is its status) and boots. */
void el_session_init(el_session *s, uint8_t *pool, uint32_t pool_bytes, el_flash_status storage,
                     el_session_write write, void *write_user);

/* One byte from the line; answers are written through the callback as frames complete. */
void el_session_feed(el_session *s, uint8_t byte);

#endif /* EL_SESSION_H */

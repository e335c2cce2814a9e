/*
 * el_session.c - the board side of the bridge (el_session.h); firmware_bridge/agent.py is
 * its twin, handler for handler (_hello, _put_model, _commit, _infer, _train, _get_weights,
 * _stats, _reset), and the rules below are the agent's.
 */
#include "el_session.h"

#include <string.h>

#include "el_board.h"

#define ACK_BYTES ((uint32_t)sizeof(el_frame_ack))
#define RESULT_BYTES ((uint32_t)sizeof(el_msg_result))
#define ALIGN16(n) (((n) + 15u) & ~15u)

/* What a handler leaves: the status, its detail, and the reply body's bytes. */
typedef struct {
    uint32_t status, detail, body_bytes;
} outcome;

static uint8_t *body(el_session *s)
{
    return s->answer + ACK_BYTES + RESULT_BYTES;
}

static outcome fail(uint32_t status, uint32_t detail)
{
    outcome o;
    o.status = status;
    o.detail = detail;
    o.body_bytes = 0;
    return o;
}

static outcome ok(uint32_t body_bytes)
{
    outcome o = fail(EL_STATUS_OK, 0);
    o.body_bytes = body_bytes;
    return o;
}

static uint32_t volume(const el_dims *d)
{
    return (uint32_t)d->n * (uint32_t)d->h * (uint32_t)d->w * (uint32_t)d->c;
}

static uint32_t inactive_slot(const el_session *s)
{
    return s->slots.active == EL_SLOT_NONE ? 0u : 1u - s->slots.active;
}

/* ------------------------------------------------------------------ the model */

/* Opens image into s->model and s->runner on the pool; with run, the self-check inference
 * (an input of zeros runs to the end). 0 when the board will run it, else 1 and *detail the
 * op or tensor at fault (EL_MSG_NONE: the model as a whole). */
static int open_model(el_session *s, const uint8_t *image, uint32_t bytes, int run, uint32_t *detail)
{
    el_train_layout layout;
    uint32_t failed = 0, arena;
    *detail = EL_MSG_NONE;
    s->active = s->trainer_on = 0;
    if (el_model_open(image, bytes, &s->model) != EL_OK) {
        *detail = s->model.failed_index;
        return 1;
    }
    arena = ALIGN16(s->model.header->arena_bytes);
    if (arena > s->pool_bytes) {
        return 1;
    }
    if (el_runner_init(&s->runner, &s->model, s->pool, arena, NULL, 0) != EL_RUNNER_OK) {
        *detail = s->runner.failed_op;
        return 1;
    }
    s->train_buffer_bytes = 0;
    if (s->model.tail != NULL) {
        if (el_train_plan(&s->model, &layout, &failed) != EL_TRAIN_OK) {
            *detail = s->model.tail_blocks[failed].first_op;
            return 1;
        }
        if (layout.total > s->pool_bytes - arena) {
            return 1; /* the training buffer does not fit after the arena */
        }
        s->train_buffer_bytes = layout.total;
    }
    if (run) {
        memset(el_runner_input(&s->runner), 0, el_runner_input_bytes(&s->runner));
        if (el_runner_invoke(&s->runner) != EL_RUNNER_OK) {
            *detail = s->runner.failed_op;
            return 1;
        }
    }
    return 0;
}

static int self_check(void *user, uint32_t slot, const uint8_t *image, uint32_t bytes)
{
    uint32_t detail;
    (void)slot;
    return open_model((el_session *)user, image, bytes, 1, &detail);
}

/* After a boot: the booted slot's model open, its summary, counters and stages fresh. */
static void activate(el_session *s)
{
    uint32_t detail;
    s->active = s->trainer_on = 0;
    s->samples_seen = s->inferences = s->arena_high_water = 0;
    s->infer_ticks = s->train_ticks = 0;
    s->infer_staged = s->train_staged = 0;
    s->trial = EL_TRIAL_NONE;
    if (s->slots.active == EL_SLOT_NONE ||
        open_model(s, el_slot_image(&s->slots, s->slots.active), s->slots.record.model_bytes, 0, &detail) != 0) {
        return; /* (a booted slot passed its self-check: it opens) */
    }
    s->active = 1;
    s->trial = s->slots.reverted ? EL_TRIAL_REVERTED : EL_TRIAL_CONFIRMED;
    s->input_bytes = el_runner_input_bytes(&s->runner);
    s->output_bytes = el_runner_output_bytes(&s->runner);
    s->cut = EL_MSG_NONE;
    s->cut_bytes = s->classes = s->first_op = 0;
    if (s->model.tail != NULL) {
        const el_conv_params *dw = (const el_conv_params *)el_model_record(&s->model, s->model.tail_blocks[0].first_op);
        s->cut = dw->input;
        s->cut_bytes = el_train_cut_bytes(&s->model);
        s->classes = s->model.tail->num_classes;
        s->first_op = s->model.tail_blocks[0].first_op;
    }
}

static void boot(el_session *s)
{
    if (s->storage == EL_SLOTS_OK) {
        (void)el_slots_boot(&s->slots, self_check, s);
    }
    activate(s);
}

/* ------------------------------------------------------------------ HELLO */

static void put_text(char *field, size_t size, const char *a, const char *b)
{
    size_t n = strlen(a), m = b != NULL ? strlen(b) : 0u;
    memset(field, 0, size);
    memcpy(field, a, n < size ? n : size);
    if (n < size && m > 0u) {
        memcpy(field + n, b, m < size - n ? m : size - n);
    }
}

static outcome hello(el_session *s)
{
    el_msg_hello_reply r;
    memset(&r, 0, sizeof r);
    r.version = EL_MSG_VERSION;
    r.frame_version = EL_FRAME_VERSION;
    put_text(r.board, sizeof r.board, el_board_name(), NULL);
    put_text(r.firmware, sizeof r.firmware, "edge-lls ", EL_FW_VERSION);
    put_text(r.device, sizeof r.device, el_board_device(), NULL);
    r.ram_bytes = el_ram_bytes();
    r.flash_bytes = (uint64_t)EL_SLOT_COUNT * s->slots.slot_bytes;
    r.arena_bytes = s->pool_bytes;
    r.max_payload = EL_FRAME_MAX_PAYLOAD;
    r.ops = 0x3FEu; /* EL_OP 1..9: every op the runner has a kernel for */
    r.tick_hz = el_board_clock_hz();
    r.slot = s->active ? s->slots.active : EL_MSG_NONE;
    r.sequence = s->active ? s->slots.record.sequence : 0u;
    r.trial = s->trial;
    if (s->active) {
        r.model_bytes = s->slots.record.model_bytes;
        memcpy(r.sha256, s->slots.record.sha256, sizeof r.sha256);
        r.input_bytes = s->input_bytes;
        r.output_bytes = s->output_bytes;
        r.cut_bytes = s->cut_bytes;
        r.classes = s->classes;
    }
    r.cut = s->active ? s->cut : EL_MSG_NONE;
    r.samples_seen = s->samples_seen;
    memcpy(body(s), &r, sizeof r);
    return ok(sizeof r);
}

/* ------------------------------------------------------------------ PUT_MODEL, COMMIT */

static outcome transfer_state(el_session *s, uint32_t state, uint32_t next, uint32_t total, uint32_t slot)
{
    el_msg_put_model_reply r;
    r.state = state;
    r.next_offset = next;
    r.total_bytes = total;
    r.slot = slot;
    memcpy(body(s), &r, sizeof r);
    return ok(sizeof r);
}

static outcome storage_error(const el_session *s)
{
    return fail(EL_STATUS_STORAGE, (uint32_t)s->slots.flash_status);
}

static outcome put_model(el_session *s, const uint8_t *p)
{
    el_msg_put_model m;
    el_slots *slots = &s->slots;
    uint32_t slot;
    memcpy(&m, p, sizeof m);
    if (s->storage != EL_SLOTS_OK) {
        return fail(EL_STATUS_STORAGE, EL_MSG_NONE);
    }
    if (m.total_bytes > slots->slot_bytes) {
        return fail(EL_STATUS_TOO_BIG, slots->slot_bytes);
    }
    slot = inactive_slot(s);
    if (slots->ready_slot == slot && slots->total == m.total_bytes && memcmp(slots->sha256, m.sha256, 32) == 0) {
        return transfer_state(s, EL_XFER_COMPLETE, m.total_bytes, m.total_bytes, slot);
    }
    if (slots->transfer_slot != slot || slots->total != m.total_bytes || memcmp(slots->sha256, m.sha256, 32) != 0) {
        if (el_slots_begin(slots, slot, m.sha256, m.total_bytes) != EL_SLOTS_OK) {
            return storage_error(s);
        }
    }
    if (slots->received == m.total_bytes) { /* every byte came before a restart */
        return el_slots_finish(slots) ? transfer_state(s, EL_XFER_COMPLETE, m.total_bytes, m.total_bytes, slot)
                                      : fail(EL_STATUS_HASH_MISMATCH, 0);
    }
    if (m.length == 0u) { /* a question: where do we stand? */
        return transfer_state(s, EL_XFER_RECEIVING, slots->received, m.total_bytes, slot);
    }
    if (m.offset != slots->received) { /* nothing written: resume at `received` */
        return transfer_state(s, EL_XFER_WRONG_OFFSET, slots->received, m.total_bytes, slot);
    }
    if (el_slots_append(slots, p + sizeof m, m.length) != EL_SLOTS_OK) {
        return storage_error(s);
    }
    if (slots->received < m.total_bytes) {
        return transfer_state(s, EL_XFER_RECEIVING, slots->received, m.total_bytes, slot);
    }
    return el_slots_finish(slots) ? transfer_state(s, EL_XFER_COMPLETE, m.total_bytes, m.total_bytes, slot)
                                  : fail(EL_STATUS_HASH_MISMATCH, 0);
}

static outcome commit(el_session *s, const uint8_t *p)
{
    el_msg_commit m;
    el_msg_commit_reply r;
    el_slots *slots = &s->slots;
    uint8_t digest[EL_SHA256_BYTES];
    uint32_t slot = inactive_slot(s), detail, sequence;
    memcpy(&m, p, sizeof m);
    if (s->storage != EL_SLOTS_OK || slots->ready_slot != slot || slots->total != m.total_bytes ||
        memcmp(slots->sha256, m.sha256, 32) != 0) {
        return fail(EL_STATUS_NO_TRANSFER, 0);
    }
    el_sha256_digest(el_slot_image(slots, slot), m.total_bytes, digest);
    if (memcmp(digest, m.sha256, sizeof digest) != 0) { /* re-verified: the flash is what commits */
        slots->ready_slot = EL_SLOT_NONE;
        return fail(EL_STATUS_NO_TRANSFER, 0);
    }
    s->infer_staged = s->train_staged = 0;
    if (open_model(s, el_slot_image(slots, slot), m.total_bytes, 1, &detail) != 0) {
        activate(s); /* the active model again, as it was */
        return fail(EL_STATUS_MODEL_REFUSED, detail);
    }
    if (el_slots_commit(slots, &sequence) != EL_SLOTS_OK) {
        activate(s);
        return storage_error(s);
    }
    boot(s);
    if (!s->active || memcmp(slots->record.sha256, m.sha256, 32) != 0) {
        return fail(EL_STATUS_MODEL_REFUSED, EL_MSG_NONE);
    }
    s->trial = EL_TRIAL_CONFIRMED;
    r.slot = slot;
    r.sequence = sequence;
    r.trial = s->trial;
    r.reserved = 0;
    memcpy(body(s), &r, sizeof r);
    return ok(sizeof r);
}

/* ------------------------------------------------------------------ INFER */

/* An INFER chunk uses the arena: a TRAIN sample staged there is lost. */
static void drop_partial_sample(el_session *s)
{
    if (s->train_staged) {
        s->train_received = s->trained * s->train_key.sample_bytes;
    }
}

static outcome infer(el_session *s, const uint8_t *p)
{
    el_msg_infer m;
    el_msg_infer_reply r;
    uint64_t start;
    memcpy(&m, p, sizeof m);
    if (!s->active) {
        return fail(EL_STATUS_NO_MODEL, 0);
    }
    if (m.total_bytes != s->input_bytes) {
        return fail(EL_STATUS_BAD_INPUT, s->input_bytes);
    }
    if (s->output_bytes > EL_MSG_MAX_OUTPUT) {
        return fail(EL_STATUS_BAD_INPUT, EL_MSG_MAX_OUTPUT);
    }
    drop_partial_sample(s);
    memset(&r, 0, sizeof r);
    if (!s->infer_staged) {
        if (m.offset != 0u) {
            r.state = EL_XFER_WRONG_OFFSET;
            memcpy(body(s), &r, sizeof r);
            return ok(sizeof r);
        }
        s->infer_staged = 1;
        s->infer_received = 0;
    } else if (m.offset == 0u) {
        s->infer_received = 0; /* an input starts again */
    }
    if (m.offset != s->infer_received) {
        r.state = EL_XFER_WRONG_OFFSET;
        r.next_offset = s->infer_received;
        memcpy(body(s), &r, sizeof r);
        return ok(sizeof r);
    }
    memcpy(el_runner_input(&s->runner) + m.offset, p + sizeof m, m.length);
    s->infer_received += m.length;
    r.next_offset = s->infer_received;
    if (s->infer_received < m.total_bytes) {
        r.state = EL_XFER_RECEIVING;
        memcpy(body(s), &r, sizeof r);
        return ok(sizeof r);
    }
    s->infer_staged = 0;
    start = el_clock_ticks();
    if (el_runner_invoke(&s->runner) != EL_RUNNER_OK) {
        return fail(EL_STATUS_MODEL_REFUSED, s->runner.failed_op);
    }
    s->infer_ticks = el_clock_ticks() - start;
    s->inferences += 1u;
    s->arena_high_water = s->model.header->arena_bytes;
    r.state = EL_XFER_COMPLETE;
    r.output_bytes = s->output_bytes;
    r.ticks = s->infer_ticks;
    memcpy(body(s), &r, sizeof r);
    memcpy(body(s) + sizeof r, el_runner_output(&s->runner), s->output_bytes);
    return ok((uint32_t)sizeof r + s->output_bytes);
}

/* ------------------------------------------------------------------ TRAIN */

static int same_batch(const el_session *s, const el_msg_train *key, const uint8_t *labels)
{
    return s->train_staged && memcmp(&s->train_key, key, sizeof *key) == 0 &&
           memcmp(s->labels, labels, key->count) == 0;
}

static outcome train_reply(el_session *s, uint32_t state, uint32_t next)
{
    el_msg_train_reply r;
    memset(&r, 0, sizeof r);
    r.state = state;
    r.next_offset = next;
    r.samples_seen = s->samples_seen;
    if (state != EL_XFER_COMPLETE) {
        memcpy(body(s), &r, sizeof r);
        return ok(sizeof r);
    }
    r.count = s->trained;
    r.ticks = s->batch_ticks;
    memcpy(body(s), &r, sizeof r);
    memcpy(body(s) + sizeof r, s->results, s->trained * sizeof s->results[0]);
    return ok((uint32_t)(sizeof r + s->trained * sizeof s->results[0]));
}

static outcome train(el_session *s, const uint8_t *p)
{
    el_msg_train m, key;
    const uint8_t *labels = p + sizeof m, *data;
    uint32_t i, expected, length;
    int features, fresh;
    int8_t *stage;
    memcpy(&m, p, sizeof m);
    data = labels + ((m.count + 3u) & ~3u);
    if (!s->active) {
        return fail(EL_STATUS_NO_MODEL, 0);
    }
    if (s->model.tail == NULL) {
        return fail(EL_STATUS_NOT_TRAINABLE, 0);
    }
    features = m.mode == EL_TRAIN_MODE_FEATURES;
    if (features && m.cut != s->cut) {
        return fail(EL_STATUS_BAD_INPUT, s->cut);
    }
    expected = features ? s->cut_bytes : s->input_bytes;
    if (m.sample_bytes != expected) {
        return fail(EL_STATUS_BAD_INPUT, expected);
    }
    for (i = 0; i < m.count; ++i) {
        if (labels[i] >= s->classes) {
            return fail(EL_STATUS_BAD_INPUT, s->classes);
        }
    }
    s->infer_staged = 0; /* the arena is the trainer's now */
    key = m;
    key.offset = key.length = 0;
    fresh = !same_batch(s, &key, labels);
    if (fresh) {
        if (m.offset != 0u) {
            return train_reply(s, EL_XFER_WRONG_OFFSET, 0);
        }
        if (!s->trainer_on || (m.flags & EL_TRAIN_RESTART) != 0u) {
            /* the session trains with int8 codes and SGD: its buffer is el_train_buffer_bytes */
            const el_train_config config = {m.lr, m.classifier_lr, m.seed, EL_TRAIN_LAST_CLASSIFIER, 0u, EL_TRAIN_SGD};
            if (el_train_init(&s->trainer, &s->runner, s->pool + ALIGN16(s->model.header->arena_bytes),
                              s->train_buffer_bytes, &config) != EL_TRAIN_OK) {
                return fail(EL_STATUS_NOT_TRAINABLE, s->trainer.failed_block);
            }
            s->trainer_on = 1;
        }
        s->trainer.config.lr = m.lr;
        s->trainer.config.classifier_lr = m.classifier_lr;
        s->train_key = key;
        memcpy(s->labels, labels, m.count);
        s->train_staged = 1;
        s->train_received = s->trained = 0;
        s->batch_ticks = 0;
    }
    if (m.offset != s->train_received) {
        return train_reply(s, EL_XFER_WRONG_OFFSET, s->train_received);
    }
    stage = features ? el_train_cut(&s->runner) : el_runner_input(&s->runner);
    length = m.length;
    while (length > 0u) { /* into the staged sample; each one that completes trains at once */
        const uint32_t at = s->train_received % m.sample_bytes;
        const uint32_t take = length < m.sample_bytes - at ? length : m.sample_bytes - at;
        memcpy(stage + at, data, take);
        data += take;
        length -= take;
        s->train_received += take;
        if (at + take == m.sample_bytes) {
            el_train_stats stats;
            el_msg_train_result *out = &s->results[s->trained];
            const uint64_t start = el_clock_ticks();
            const el_train_status status =
                features ? el_train_step_at_cut(&s->trainer, stage, s->labels[s->trained], &stats)
                         : el_train_step(&s->trainer, stage, s->labels[s->trained], &stats);
            const uint64_t ticks = el_clock_ticks() - start;
            if (status != EL_TRAIN_OK) {
                s->train_staged = 0;
                return fail(EL_STATUS_MODEL_REFUSED, s->runner.failed_op);
            }
            s->batch_ticks += ticks;
            s->train_ticks = ticks;
            s->samples_seen += 1u;
            memcpy(out->block_loss, stats.block_loss, sizeof out->block_loss);
            out->loss = stats.loss;
            out->predicted = stats.predicted;
            s->trained += 1u;
        }
    }
    if (s->train_received < m.count * m.sample_bytes) {
        return train_reply(s, EL_XFER_RECEIVING, s->train_received);
    }
    s->train_staged = 0;
    return train_reply(s, EL_XFER_COMPLETE, s->train_received);
}

/* ------------------------------------------------------------------ GET_WEIGHTS, STATS */

static outcome get_weights(el_session *s, const uint8_t *p)
{
    el_msg_get_weights m;
    el_msg_get_weights_reply r;
    const el_tail_header *tail = s->model.tail;
    const int8_t *weights;
    const uint8_t *bias;
    uint32_t count = 0, k, op = 0, total, page, weight_bytes, bias_bytes, i;
    memcpy(&m, p, sizeof m);
    if (!s->active) {
        return fail(EL_STATUS_NO_MODEL, 0);
    }
    if (tail == NULL) {
        return fail(EL_STATUS_NOT_TRAINABLE, 0);
    }
    for (k = 0; k < tail->block_count; ++k) { /* each block's ops in order, then the classifier */
        if (m.index >= count && m.index < count + s->model.tail_blocks[k].op_count) {
            op = s->model.tail_blocks[k].first_op + (m.index - count);
        }
        count += s->model.tail_blocks[k].op_count;
    }
    if (m.index == count) {
        op = tail->classifier_op;
    }
    count += 1u;
    if (m.index >= count) {
        return fail(EL_STATUS_BAD_INPUT, count);
    }
    if (s->model.ops[op].opcode == EL_OP_FULLY_CONNECTED) {
        const el_fc_params *fc = (const el_fc_params *)el_model_record(&s->model, op);
        weights = (const int8_t *)el_model_at(&s->model, fc->weights);
        bias = (const uint8_t *)el_model_at(&s->model, fc->bias);
        weight_bytes = (uint32_t)fc->filter_dims.n * (uint32_t)fc->filter_dims.c;
        bias_bytes = 4u * (uint32_t)fc->filter_dims.c;
    } else {
        const el_conv_params *cv = (const el_conv_params *)el_model_record(&s->model, op);
        weights = (const int8_t *)el_model_at(&s->model, cv->weights);
        bias = (const uint8_t *)el_model_at(&s->model, cv->bias);
        weight_bytes = volume(&cv->filter_dims);
        bias_bytes = 4u * (uint32_t)cv->output_dims.c;
    }
    if (s->trainer_on) { /* the learned copies in SRAM */
        for (i = 0; i < s->trainer.op_count; ++i) {
            if (s->trainer.patches[i].op == op) {
                weights = s->trainer.patches[i].weights;
                bias = (const uint8_t *)s->trainer.patches[i].bias;
            }
        }
    }
    total = weight_bytes + bias_bytes;
    if (m.offset > total) {
        return fail(EL_STATUS_BAD_INPUT, total);
    }
    page = total - m.offset;
    k = m.max_bytes != 0u ? m.max_bytes : EL_MSG_MAX_PAGE;
    page = page < k ? page : k;
    r.index = m.index;
    r.count = count;
    r.op = op;
    r.weight_bytes = weight_bytes;
    r.bias_bytes = bias_bytes;
    r.offset = m.offset;
    r.length = page;
    r.weights_crc32 = el_crc32((const uint8_t *)weights, weight_bytes);
    r.bias_crc32 = el_crc32(bias, bias_bytes);
    r.samples_seen = s->samples_seen;
    memcpy(body(s), &r, sizeof r);
    for (i = 0; i < page; ++i) { /* weights, then biases, as one byte string */
        const uint32_t at = m.offset + i;
        body(s)[sizeof r + i] = at < weight_bytes ? (uint8_t)weights[at] : bias[at - weight_bytes];
    }
    return ok((uint32_t)sizeof r + page);
}

static outcome stats(el_session *s)
{
    el_msg_stats_reply r;
    memset(&r, 0, sizeof r);
    r.arena_bytes = s->active ? s->model.header->arena_bytes : 0u;
    r.arena_high_water = s->arena_high_water;
    r.stack_bytes = (uint32_t)el_stack_size();
    r.stack_high_water = (uint32_t)el_stack_high_water();
    r.ram_high_water = el_ram_static() + r.stack_high_water;
    r.train_buffer_bytes = s->active ? s->train_buffer_bytes : 0u;
    r.samples_seen = s->samples_seen;
    r.inferences = s->inferences;
    r.tick_hz = el_board_clock_hz();
    r.infer_ticks = s->infer_ticks;
    r.train_ticks = s->train_ticks;
    memcpy(body(s), &r, sizeof r);
    return ok(sizeof r);
}

/* ------------------------------------------------------------------ frames */

static void send_frame(el_session *s, uint8_t type, const uint8_t *payload, uint32_t size)
{
    const size_t n = el_frame_build(type, s->out_seq++, payload, size, s->wire, sizeof s->wire);
    s->write(s->write_user, s->wire, n);
}

static void send_nak(el_session *s, uint16_t seq, uint16_t reason)
{
    el_frame_nak nak;
    uint8_t bytes[sizeof nak];
    nak.seq = seq;
    nak.reason = reason;
    memcpy(bytes, &nak, sizeof nak);
    send_frame(s, EL_MSG_NAK, bytes, sizeof bytes);
}

/* The last answer again (or for the first time): an ACK with s->answer's data, or the NAK. */
static void send_last(el_session *s, int duplicate)
{
    el_frame_ack ack;
    if (s->last_nak) {
        send_nak(s, s->last_seq, s->last_reason);
        return;
    }
    ack.seq = s->last_seq;
    ack.flags = duplicate ? EL_ACK_DUPLICATE : 0u;
    memcpy(s->answer, &ack, sizeof ack);
    send_frame(s, EL_MSG_ACK, s->answer, ACK_BYTES + s->answer_bytes);
}

static outcome dispatch(el_session *s, const el_frame *f)
{
    switch (f->type) {
    case EL_MSG_HELLO: return hello(s);
    case EL_MSG_PUT_MODEL: return put_model(s, f->payload);
    case EL_MSG_COMMIT: return commit(s, f->payload);
    case EL_MSG_INFER: return infer(s, f->payload);
    case EL_MSG_TRAIN: return train(s, f->payload);
    case EL_MSG_GET_WEIGHTS: return get_weights(s, f->payload);
    case EL_MSG_STATS: return stats(s);
    default: /* RESET: answered, then the board restarts */
        s->reset_requested = 1;
        return ok(0);
    }
}

static void on_frame(el_session *s, const el_frame *f)
{
    el_frame_error check;
    if (f->type == EL_MSG_ACK || f->type == EL_MSG_NAK) {
        return;
    }
    if (f->type == EL_MSG_HELLO && f->length == sizeof(el_msg_hello)) {
        el_msg_hello h;
        memcpy(&h, f->payload, sizeof h);
        if (s->has_last && s->last_seq == f->seq && s->has_session && h.session == s->session_id) {
            send_last(s, 1); /* a retransmitted HELLO */
            return;
        }
        el_frame_history_reset(&s->history); /* HELLO starts the session's numbering */
        (void)el_frame_seen(&s->history, f->seq);
        s->session_id = h.session;
        s->has_session = 1;
    } else {
        const el_seq_verdict verdict = el_frame_seen(&s->history, f->seq);
        if (verdict == EL_SEQ_STALE) {
            return;
        }
        if (verdict == EL_SEQ_DUPLICATE && s->has_last && s->last_seq == f->seq) {
            send_last(s, 1);
            return;
        }
    }
    s->has_last = 1;
    s->last_seq = f->seq;
    check = el_msg_check_request(f->type, f->payload, f->length);
    if (check != EL_FRAME_OK) {
        s->last_nak = 1;
        s->last_reason = (uint16_t)check;
    } else {
        const outcome o = dispatch(s, f);
        el_msg_result result;
        result.status = (uint16_t)o.status;
        result.reserved = 0;
        result.detail = o.detail;
        memcpy(s->answer + ACK_BYTES, &result, sizeof result);
        s->answer_bytes = RESULT_BYTES + (o.status == EL_STATUS_OK ? o.body_bytes : 0u);
        s->last_nak = 0;
    }
    send_last(s, 0);
}

void el_session_feed(el_session *s, uint8_t byte)
{
    switch (el_frame_feed(&s->decoder, byte)) {
    case EL_FEED_FRAME: on_frame(s, &s->decoder.frame); break;
    case EL_FEED_ERROR: send_nak(s, 0, (uint16_t)s->decoder.error); break;
    default: break;
    }
}

void el_session_init(el_session *s, uint8_t *pool, uint32_t pool_bytes, el_flash_status storage,
                     el_session_write write, void *write_user)
{
    memset(s, 0, sizeof *s);
    s->pool = pool;
    s->pool_bytes = pool_bytes;
    s->write = write;
    s->write_user = write_user;
    el_frame_decoder_init(&s->decoder);
    el_frame_history_reset(&s->history);
    s->storage = storage != EL_FLASH_OK ? EL_SLOTS_ERR_FLASH : el_slots_init(&s->slots);
    if (s->storage != EL_SLOTS_OK) {
        s->slots.active = s->slots.transfer_slot = s->slots.ready_slot = EL_SLOT_NONE;
        s->slots.flash_status = storage;
    }
    boot(s);
}

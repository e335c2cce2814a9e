/*
 * main.c - the firmware: a banner on UART0 (board, version, memory), the linked model image
 * opened and checked when the build has one (make MODEL=path/to/export.c), then exit with
 * status 0 (or 1 when the model does not open), or idle (make IDLE=1).
 *
 *   edge-lls firmware 0.1.0 on mps2-an386 (cortex-m4, 25000000 Hz)
 *   flash 1048576 bytes: 5120 used
 *   ram 262144 bytes: 512 static, 16384 stack, 245248 free
 *   model none (make MODEL=path/to/export.c links one)
 *   stack high water 232 bytes
 *
 * Built with INPUT=path/to/inputs.h as well (and MODEL), main() then runs the model on each
 * input that header holds through the op runner (el_runner.h), in one static arena of the
 * image's arena size, and prints per input one line: the status, the SysTick ticks the
 * inference took (under QEMU -icount shift=0, 40 instructions a tick) and the output bytes in
 * hex. The header defines EL_RUN_INPUT_COUNT, EL_RUN_INPUT_BYTES and
 * `static const int8_t el_run_inputs[EL_RUN_INPUT_COUNT][EL_RUN_INPUT_BYTES]`.
 *
 *   inference 0: ok, ticks 1234567, output 8a76
 *
 * Built with TRAIN=path/to/samples.h (and MODEL, a fine-tuning image), main() trains: for
 * each sample one inference (its ticks, for comparison) and one el_train_step, printing
 *
 *   step 0: ok, infer ticks 1194500, train ticks 1300000, losses 3c5a1b2c 3f3c2d1e, predicted 1
 *
 * (the losses as float32 bits: each block's LLS loss, then the classifier's), then per
 * trainable op the CRC-32 of its int8 weights and of its int32 biases:
 *
 *   op 25: weights crc 0x1234abcd, bias crc 0x9876fedc
 *
 * The header defines EL_TRAIN_SAMPLE_COUNT, EL_TRAIN_SAMPLE_BYTES, EL_TRAIN_BUFFER_BYTES (the
 * plan of edge_lls/board_train.py train_layout, checked at start-up against
 * el_train_buffer_bytes), EL_TRAIN_LR, EL_TRAIN_CLASSIFIER_LR, EL_TRAIN_SEED, optionally
 * EL_TRAIN_LAST_BLOCK (the last block's signal, el_train_last_block; default
 * EL_TRAIN_LAST_CLASSIFIER), optionally EL_TRAIN_FRACTIONS (el_train_config.fractions: 1 for
 * 16-bit masters, default 0), optionally EL_TRAIN_OPTIMIZER (el_train_optimizer, default
 * EL_TRAIN_SGD),
 * `static const uint32_t el_train_labels[]` and
 * `static const int8_t el_train_inputs[EL_TRAIN_SAMPLE_COUNT][EL_TRAIN_SAMPLE_BYTES]`.
 */
#include "el_board.h"
#include "el_model.h"

#ifndef EL_SESSION
static void put_line(const char *label, uint32_t value, const char *unit)
{
    el_uart_puts(label);
    el_uart_put_dec(value);
    el_uart_puts(unit);
}
#endif

#if defined(EL_RUN_INPUT) || defined(EL_TRAIN_SAMPLES)
#include <string.h>

#include "el_runner.h"

/* The one arena: every runtime tensor at its planned offset. The kernels need no scratch;
 * should one ask for some, el_runner_init refuses (and says so). */
EL_ALIGNED(16) static uint8_t el_arena[EL_MODEL_ARENA_BYTES];

/* el_runner_init on the arena; 0 when it accepts the model, else 1 (and why on UART0). */
static int start_runner(el_runner *runner, const el_model *model)
{
    el_runner_status status = el_runner_init(runner, model, el_arena, sizeof el_arena, NULL, 0);
    if (status != EL_RUNNER_OK) {
        el_uart_puts("runner refuses the model: ");
        el_uart_puts(el_runner_status_name(status));
        put_line(" (op ", runner->failed_op, ")\n");
        return 1;
    }
    return 0;
}
#endif

#ifdef EL_RUN_INPUT


static void put_hex_bytes(const int8_t *data, uint32_t size)
{
    static const char digits[] = "0123456789abcdef";
    uint32_t i;
    for (i = 0; i < size; ++i) {
        uint8_t b = (uint8_t)data[i];
        el_uart_putc((uint8_t)digits[b >> 4]);
        el_uart_putc((uint8_t)digits[b & 15u]);
    }
}

/* 0 when every input ran, else 1. */
static int run_inputs(const el_model *model)
{
    el_runner runner;
    uint32_t k;
    el_runner_status status;
    if (start_runner(&runner, model) != 0) {
        return 1;
    }
    if (el_runner_input_bytes(&runner) != EL_RUN_INPUT_BYTES) {
        put_line("the inputs hold ", EL_RUN_INPUT_BYTES, " bytes each, ");
        put_line("the model takes ", el_runner_input_bytes(&runner), "\n");
        return 1;
    }
    for (k = 0; k < EL_RUN_INPUT_COUNT; ++k) {
        uint64_t start, ticks;
        memcpy(el_runner_input(&runner), el_run_inputs[k], EL_RUN_INPUT_BYTES);
        start = el_clock_ticks();
        status = el_runner_invoke(&runner);
        ticks = el_clock_ticks() - start;
        put_line("inference ", k, ": ");
        el_uart_puts(el_runner_status_name(status));
        if (status != EL_RUNNER_OK) {
            put_line(" (op ", runner.failed_op, ")\n");
            return 1;
        }
        put_line(", ticks ", (uint32_t)ticks, ", output ");
        put_hex_bytes(el_runner_output(&runner), el_runner_output_bytes(&runner));
        el_uart_puts("\n");
    }
    return 0;
}
#endif

#ifdef EL_TRAIN_SAMPLES
#include "el_train.h"

EL_ALIGNED(16) static uint8_t el_train_buffer[EL_TRAIN_BUFFER_BYTES];

#ifndef EL_TRAIN_LAST_BLOCK
#define EL_TRAIN_LAST_BLOCK EL_TRAIN_LAST_CLASSIFIER
#endif
#ifndef EL_TRAIN_FRACTIONS
#define EL_TRAIN_FRACTIONS 0u
#endif
#ifndef EL_TRAIN_OPTIMIZER
#define EL_TRAIN_OPTIMIZER EL_TRAIN_SGD
#endif

static void put_crc(const char *label, const void *data, uint32_t bytes)
{
    el_uart_puts(label);
    el_uart_put_hex(el_crc32((const uint8_t *)data, bytes));
}

static void put_bits(float value)
{
    static const char digits[] = "0123456789abcdef";
    uint32_t bits;
    int i;
    memcpy(&bits, &value, sizeof bits);
    for (i = 28; i >= 0; i -= 4) {
        el_uart_putc((uint8_t)digits[(bits >> i) & 15u]);
    }
}

/* 0 when every step ran, else 1. */
static int train_samples(const el_model *model)
{
    static el_runner runner;
    static el_trainer trainer;
    const el_train_config config = {EL_TRAIN_LR, EL_TRAIN_CLASSIFIER_LR, EL_TRAIN_SEED, EL_TRAIN_LAST_BLOCK,
                                    EL_TRAIN_FRACTIONS, EL_TRAIN_OPTIMIZER};
    el_train_status trained;
    el_runner_status status;
    uint32_t k, i;
    if (start_runner(&runner, model) != 0) {
        return 1;
    }
    put_line("training buffer ", (uint32_t)el_train_buffer_bytes_config(model, &config), " bytes planned, ");
    put_line("", (uint32_t)sizeof el_train_buffer, " reserved\n");
    trained = el_train_init(&trainer, &runner, el_train_buffer, sizeof el_train_buffer, &config);
    if (trained != EL_TRAIN_OK || el_runner_input_bytes(&runner) != EL_TRAIN_SAMPLE_BYTES) {
        el_uart_puts("training refuses the model: ");
        el_uart_puts(trained != EL_TRAIN_OK ? el_train_status_name(trained) : "sample size");
        put_line(" (block ", trainer.failed_block, ")\n");
        return 1;
    }
    for (k = 0; k < EL_TRAIN_SAMPLE_COUNT; ++k) {
        el_train_stats stats;
        uint64_t start, infer, train;
        memcpy(el_runner_input(&runner), el_train_inputs[k], EL_TRAIN_SAMPLE_BYTES);
        start = el_clock_ticks();
        status = el_runner_invoke(&runner);
        infer = el_clock_ticks() - start;
        start = el_clock_ticks();
        trained = el_train_step(&trainer, el_train_inputs[k], el_train_labels[k], &stats);
        train = el_clock_ticks() - start;
        put_line("step ", k, ": ");
        el_uart_puts(status == EL_RUNNER_OK ? el_train_status_name(trained) : el_runner_status_name(status));
        if (status != EL_RUNNER_OK || trained != EL_TRAIN_OK) {
            put_line(" (op ", runner.failed_op, ")\n");
            return 1;
        }
        put_line(", infer ticks ", (uint32_t)infer, "");
        put_line(", train ticks ", (uint32_t)train, ", losses");
        for (i = 0; i < model->tail->block_count; ++i) {
            el_uart_puts(" ");
            put_bits(stats.block_loss[i]);
        }
        el_uart_puts(" ");
        put_bits(stats.loss);
        put_line(", predicted ", stats.predicted, "\n");
    }
    for (i = 0; i < trainer.op_count; ++i) {
        const el_runner_patch *p = &trainer.patches[i];
        put_line("op ", p->op, ": ");
        put_crc("weights crc ", p->weights, trainer.weight_count[i]);
        put_crc(", bias crc ", p->bias, 4u * trainer.bias_count[i]);
        el_uart_puts("\n");
    }
    return 0;
}
#endif

#ifdef EL_SESSION
#include "el_flash.h"
#include "el_session.h"

/* The bridge firmware (make SESSION=1): the protocol on UART0 (docs/protocol.md), the models
 * in the flash HAL's A/B slots, one static pool for the active model's arena and training
 * buffer (EL_SESSION_POOL_BYTES, boards/<board>/board.mk). UART0 carries frames only: what
 * it does is logged over semihosting (QEMU's standard output). */
EL_ALIGNED(16) static uint8_t el_pool[EL_SESSION_POOL_BYTES];
static el_session el_bridge;

static void uart_write(void *user, const uint8_t *data, size_t size)
{
    (void)user;
    el_uart_write(data, size);
}

static void log_boot(const el_session *s, el_flash_status flash)
{
    static const char digits[] = "0123456789abcdef";
    char slot[] = "slot 0, sha256 ", hash[17];
    uint32_t i;
    el_semihost_write0("edge-lls bridge " EL_FW_VERSION " on " EL_BOARD_NAME ": ");
    if (flash != EL_FLASH_OK) {
        el_semihost_write0("no model storage (flash: ");
        el_semihost_write0(el_flash_status_name(flash));
        el_semihost_write0(")\n");
        return;
    }
    if (s->active) {
        slot[5] = (char)('0' + s->slots.active);
        for (i = 0; i < 8u; ++i) { /* the first 8 bytes of the SHA-256, as the host prints them */
            hash[2u * i] = digits[s->slots.record.sha256[i] >> 4];
            hash[2u * i + 1u] = digits[s->slots.record.sha256[i] & 15u];
        }
        hash[16] = '\0';
        el_semihost_write0(slot);
        el_semihost_write0(hash);
    } else {
        el_semihost_write0("no model");
    }
    el_semihost_write0(s->slots.reverted ? " (a trial was reverted)\n" : "\n");
}

int main(void)
{
    el_flash_status flash;
    el_uart_init(115200u);
    el_clock_start();
    flash = el_flash_init();
    el_session_init(&el_bridge, el_pool, sizeof el_pool, flash, uart_write, NULL);
    log_boot(&el_bridge, flash);
    for (;;) {
        el_session_feed(&el_bridge, (uint8_t)el_uart_getc());
        if (el_bridge.reset_requested) {
            el_board_reset();
        }
    }
}
#else

/* 0 when no model is linked or the linked one opens, else 1. */
static int open_model(void)
{
#ifdef EL_MODEL_IMAGE
    el_model model;
    el_status status = el_model_open(EL_MODEL_IMAGE, EL_MODEL_BYTES, &model);
    put_line("model " EL_MODEL_NAME ": ", EL_MODEL_BYTES, " bytes");
    if (status != EL_OK) {
        el_uart_puts(", does not open: ");
        el_uart_puts(el_status_name(status));
        put_line(" (index ", model.failed_index, ")\n");
        return 1;
    }
    put_line(", ", model.header->tensor_count, " tensors");
    put_line(", ", model.header->op_count, " ops");
    put_line(", arena ", model.header->arena_bytes, " bytes");
    el_uart_puts(model.tail ? ", trainable tail" : "");
    el_uart_puts(model.header->arena_bytes <= el_ram_free() ? ": ok\n" : ": ok, but the arena exceeds free RAM\n");
#if defined(EL_TRAIN_SAMPLES)
    return train_samples(&model);
#elif defined(EL_RUN_INPUT)
    return run_inputs(&model);
#else
    return 0;
#endif
#else
    el_uart_puts("model none (make MODEL=path/to/export.c links one)\n");
    return 0;
#endif
}

int main(void)
{
    int status;
    el_uart_init(115200u);
    el_clock_start();
    el_uart_puts("edge-lls firmware " EL_FW_VERSION " on ");
    el_uart_puts(el_board_name());
    el_uart_puts(" (");
    el_uart_puts(el_board_device());
    put_line(", ", el_board_clock_hz(), " Hz)\n");
    put_line("flash ", el_flash_bytes(), " bytes: ");
    put_line("", el_flash_used(), " used\n");
    put_line("ram ", el_ram_bytes(), " bytes: ");
    put_line("", el_ram_static(), " static, ");
    put_line("", (uint32_t)el_stack_size(), " stack, ");
    put_line("", el_ram_free(), " free\n");
    status = open_model();
    put_line("stack high water ", (uint32_t)el_stack_high_water(), " bytes\n");
#ifdef EL_IDLE
    el_uart_puts("idle\n");
    for (;;) {
        __asm__ volatile("wfi");
    }
#endif
    return status;
}
#endif /* EL_SESSION */

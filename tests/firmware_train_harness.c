/*
 * firmware_train_harness.c - the firmware's LLS training step (el_train.c and src/lls/) on
 * the host, for tests/test_firmware_train.py.
 *
 *     firmware_train_harness IMAGE SAMPLES OUTPUT LR_BITS CLASSIFIER_LR_BITS SEED LAST_BLOCK [BUFFER_BYTES]
 *
 * IMAGE is a fine-tuning model image; SAMPLES holds k records of "<I" label then the model's
 * input bytes; the learning rates are given as float32 bit patterns (hex or decimal), so no
 * decimal conversion stands between the test and the board. LAST_BLOCK is the config's
 * last_block (0 from the classifier, 1 its LLS head; el_train_last_block). The training buffer is exactly
 * BUFFER_BYTES (default el_train_buffer_bytes) in its own allocation, so ASan sees a byte past
 * it. For each sample, one el_train_step; OUTPUT gets, per step, "<IIIII I" the bits of
 * block_loss[0..3] and loss, then predicted; then "<I" the trainable op count and per op "<III" op,
 * weight count, bias count, the int8 weights and int32 biases; then per block op its optimizer
 * state: "<I" fraction count and the int8 fractions, "<I" moment count and the float32
 * moments (counts 0 where the config keeps none); then, per sample, the classifier's int8
 * output after training (el_runner_invoke with the learned weights). stdout: "buffer N" (the plan's bytes).
 * Exit status 0; 2 usage or I/O; 3 el_model_open refuses; 4 el_runner_init refuses;
 * 5 el_train_init refuses (the line names the status and block); 6 a step or inference fails.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "el_model.h"
#include "el_runner.h"
#include "firmware_harness_io.h"
#include "el_train.h"

static void put_f32(FILE *f, float v)
{
    uint32_t bits;
    memcpy(&bits, &v, sizeof bits);
    put_u32(f, bits);
}

static float f32_from(const char *text)
{
    uint32_t bits = (uint32_t)strtoul(text, NULL, 0);
    float v;
    memcpy(&v, &bits, sizeof v);
    return v;
}

int main(int argc, char **argv)
{
    size_t image_size, samples_size, buffer_bytes, record, k, count;
    uint8_t *image, *samples, *arena, *buffer;
    el_model model;
    el_runner runner;
    el_trainer trainer;
    el_train_config config;
    el_status opened;
    el_runner_status status;
    el_train_status trained;
    FILE *out;
    uint32_t i;
    if (argc < 8 || argc > 11) {
        fprintf(stderr, "usage: firmware_train_harness IMAGE SAMPLES OUTPUT LR_BITS CLASSIFIER_LR_BITS SEED "
                        "LAST_BLOCK [BUFFER_BYTES|- [FRACTIONS [OPTIMIZER]]]\n");
        return 2;
    }
    image = read_file("firmware_train_harness", argv[1], &image_size);
    samples = read_file("firmware_train_harness", argv[2], &samples_size);
    opened = el_model_open(image, image_size, &model);
    if (opened != EL_OK) {
        fprintf(stderr, "el_model_open: %s (index %u)\n", el_status_name(opened), (unsigned)model.failed_index);
        return 3;
    }
    arena = malloc(model.header->arena_bytes); /* glibc: 16-byte aligned (el_runner_init checks) */
    status = el_runner_init(&runner, &model, arena, model.header->arena_bytes, NULL, 0);
    if (status != EL_RUNNER_OK) {
        fprintf(stderr, "el_runner_init: %s (op %u)\n", el_runner_status_name(status), (unsigned)runner.failed_op);
        return 4;
    }
    config.fractions = argc >= 10 ? (uint32_t)strtoul(argv[9], NULL, 0) : 0u;
    config.optimizer = argc >= 11 ? (uint32_t)strtoul(argv[10], NULL, 0) : 0u;
    buffer_bytes = argc >= 9 && strcmp(argv[8], "-") != 0 ? (size_t)strtoul(argv[8], NULL, 0)
                                                          : el_train_buffer_bytes_config(&model, &config);
    printf("buffer %u\n", (unsigned)el_train_buffer_bytes_config(&model, &config));
    buffer = malloc(buffer_bytes > 0 ? buffer_bytes : 1u);
    config.lr = f32_from(argv[4]);
    config.classifier_lr = f32_from(argv[5]);
    config.seed = (uint32_t)strtoul(argv[6], NULL, 0);
    config.last_block = (uint32_t)strtoul(argv[7], NULL, 0);
    trained = el_train_init(&trainer, &runner, buffer, buffer_bytes, &config);
    if (trained != EL_TRAIN_OK) {
        fprintf(stderr, "el_train_init: %s (block %u)\n", el_train_status_name(trained),
                (unsigned)trainer.failed_block);
        return 5;
    }
    record = 4u + el_runner_input_bytes(&runner);
    count = samples_size / record;
    if (samples_size % record != 0) {
        fprintf(stderr, "firmware_train_harness: %s is not a whole number of samples\n", argv[2]);
        return 2;
    }
    out = fopen(argv[3], "wb");
    if (out == NULL) {
        fprintf(stderr, "firmware_train_harness: cannot write %s\n", argv[3]);
        return 2;
    }
    for (k = 0; k < count; ++k) {
        const uint8_t *s = samples + k * record;
        uint32_t label = (uint32_t)s[0] | (uint32_t)s[1] << 8 | (uint32_t)s[2] << 16 | (uint32_t)s[3] << 24;
        el_train_stats stats;
        trained = el_train_step(&trainer, (const int8_t *)(s + 4), label, &stats);
        if (trained != EL_TRAIN_OK) {
            fprintf(stderr, "el_train_step %u: %s (op %u)\n", (unsigned)k, el_train_status_name(trained),
                    (unsigned)runner.failed_op);
            return 6;
        }
        for (i = 0; i < EL_TRAIN_MAX_BLOCKS; ++i) {
            put_f32(out, stats.block_loss[i]);
        }
        put_f32(out, stats.loss);
        put_u32(out, stats.predicted);
    }
    put_u32(out, trainer.op_count);
    for (i = 0; i < trainer.op_count; ++i) {
        const el_runner_patch *p = &trainer.patches[i];
        put_u32(out, p->op);
        put_u32(out, trainer.weight_count[i]);
        put_u32(out, trainer.bias_count[i]);
        fwrite(p->weights, 1, trainer.weight_count[i], out);
        fwrite(p->bias, 4, trainer.bias_count[i], out);
    }
    for (i = 0; i + 1u < trainer.op_count; ++i) { /* the block ops; the classifier keeps none */
        const uint32_t fractions = config.fractions ? trainer.weight_count[i] : 0u;
        const uint32_t moments = el_train_moment_floats(
            (const el_conv_params *)el_model_record(&model, trainer.patches[i].op), config.optimizer);
        put_u32(out, fractions);
        fwrite(trainer.buffer + trainer.layout.op_fraction[i], 1, fractions, out);
        put_u32(out, moments);
        fwrite(trainer.buffer + trainer.layout.op_moment[i], 4, moments, out);
    }
    for (k = 0; k < count; ++k) {
        memcpy(el_runner_input(&runner), samples + k * record + 4u, el_runner_input_bytes(&runner));
        if (el_runner_invoke(&runner) != EL_RUNNER_OK) {
            fprintf(stderr, "el_runner_invoke %u: op %u\n", (unsigned)k, (unsigned)runner.failed_op);
            return 6;
        }
        {
            const el_fc_params *fc = (const el_fc_params *)el_model_record(&model, model.tail->classifier_op);
            fwrite(el_runner_tensor(&runner, fc->output), 1, model.tail->num_classes, out);
        }
    }
    fclose(out);
    free(buffer);
    free(arena);
    free(samples);
    free(image);
    return 0;
}

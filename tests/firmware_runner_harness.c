/*
 * firmware_runner_harness.c - the firmware's op runner (el_runner.c) on the host, for
 * tests/test_firmware_vww.py.
 *
 *     firmware_runner_harness IMAGE INPUT OUTPUT [ARENA_BYTES]
 *
 * Opens IMAGE (a model image file) with el_model_open, gives el_runner_init an arena of
 * exactly ARENA_BYTES (default: the header's arena_bytes, allocated on its own so ASan sees
 * any byte past it), then for each input of INPUT (the file holds k * input-bytes bytes)
 * runs el_runner_invoke and writes to OUTPUT, per op, the op's output tensor:
 *     "<II" op index, byte count, then the bytes
 * and after the last op of each input "<II" 0xFFFFFFFF, output bytes, then el_runner_output.
 * Exit status 0; 2 on bad usage or I/O; 3 when el_model_open refuses (one line on stderr),
 * 4 when el_runner_init refuses, 5 when el_runner_invoke fails; the line names the status
 * and the op.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "el_model.h"
#include "el_runner.h"
#include "firmware_harness_io.h"

static int write_op(void *user, uint32_t op, const int8_t *output, uint32_t bytes)
{
    FILE *f = (FILE *)user;
    put_u32(f, op);
    put_u32(f, bytes);
    fwrite(output, 1, bytes, f);
    return 0;
}

int main(int argc, char **argv)
{
    size_t image_size, input_size, arena_bytes, k, count;
    uint8_t *image, *input, *arena;
    el_model model;
    el_runner runner;
    el_status opened;
    el_runner_status status;
    FILE *out;
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: firmware_runner_harness IMAGE INPUT OUTPUT [ARENA_BYTES]\n");
        return 2;
    }
    image = read_file("firmware_runner_harness", argv[1], &image_size);
    input = read_file("firmware_runner_harness", argv[2], &input_size);
    if (((uintptr_t)image & 15u) != 0) {
        fprintf(stderr, "firmware_runner_harness: malloc gave an unaligned image\n");
        return 2;
    }
    opened = el_model_open(image, image_size, &model);
    if (opened != EL_OK) {
        fprintf(stderr, "el_model_open: %s (index %u)\n", el_status_name(opened), (unsigned)model.failed_index);
        return 3;
    }
    arena_bytes = argc == 5 ? (size_t)strtoul(argv[4], NULL, 10) : model.header->arena_bytes;
    arena = malloc(arena_bytes ? arena_bytes : 1u);
    if (arena == NULL || ((uintptr_t)arena & 15u) != 0) {
        fprintf(stderr, "firmware_runner_harness: no aligned arena\n");
        return 2;
    }
    memset(arena, 0x5A, arena_bytes);
    status = el_runner_init(&runner, &model, arena, arena_bytes, NULL, 0);
    if (status != EL_RUNNER_OK) {
        fprintf(stderr, "el_runner_init: %s (op %u)\n", el_runner_status_name(status), (unsigned)runner.failed_op);
        return 4;
    }
    if (input_size == 0 || input_size % el_runner_input_bytes(&runner) != 0) {
        fprintf(stderr, "firmware_runner_harness: %s holds %lu bytes, not a multiple of the input's %u\n", argv[2],
                (unsigned long)input_size, (unsigned)el_runner_input_bytes(&runner));
        return 2;
    }
    out = fopen(argv[3], "wb");
    if (out == NULL) {
        fprintf(stderr, "firmware_runner_harness: cannot write %s\n", argv[3]);
        return 2;
    }
    runner.hook = write_op;
    runner.hook_user = out;
    count = input_size / el_runner_input_bytes(&runner);
    for (k = 0; k < count; ++k) {
        memcpy(el_runner_input(&runner), input + k * el_runner_input_bytes(&runner), el_runner_input_bytes(&runner));
        status = el_runner_invoke(&runner);
        if (status != EL_RUNNER_OK) {
            fprintf(stderr, "el_runner_invoke: %s (op %u, kernel status %d)\n", el_runner_status_name(status),
                    (unsigned)runner.failed_op, (int)runner.kernel_status);
            return 5;
        }
        write_op(out, 0xFFFFFFFFu, el_runner_output(&runner), el_runner_output_bytes(&runner));
    }
    fclose(out);
    free(arena);
    free(input);
    free(image);
    return 0;
}

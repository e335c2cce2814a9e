/*
 * firmware_harness_io.h - file input and little-endian output for the host harnesses of
 * the firmware (firmware_runner_harness.c, firmware_train_harness.c, protocol_harness.c,
 * messages_harness.c). Test code only.
 */
#ifndef FIRMWARE_HARNESS_IO_H
#define FIRMWARE_HARNESS_IO_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

/* The whole file, in its own allocation (16 spare bytes); exit status 2 when unreadable. */
static uint8_t *read_file(const char *program, const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    uint8_t *data;
    long n;
    if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (n = ftell(f)) < 0 || fseek(f, 0, SEEK_SET) != 0) {
        fprintf(stderr, "%s: cannot read %s\n", program, path);
        exit(2);
    }
    data = malloc((size_t)n + 16u);
    if (data == NULL || fread(data, 1, (size_t)n, f) != (size_t)n) {
        fprintf(stderr, "%s: cannot read %s\n", program, path);
        exit(2);
    }
    fclose(f);
    *size = (size_t)n;
    return data;
}

/* A file opened for writing; exit status 2 when it cannot be. (inline: not every harness
 * writes files, and an unused plain static function is a warning, i.e. an error here.) */
static inline FILE *open_out(const char *program, const char *path)
{
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        fprintf(stderr, "%s: cannot write %s\n", program, path);
        exit(2);
    }
    return f;
}

static void put_u32(FILE *f, uint32_t v)
{
    uint8_t b[4];
    b[0] = (uint8_t)v;
    b[1] = (uint8_t)(v >> 8);
    b[2] = (uint8_t)(v >> 16);
    b[3] = (uint8_t)(v >> 24);
    fwrite(b, 1, 4, f);
}

#endif /* FIRMWARE_HARNESS_IO_H */

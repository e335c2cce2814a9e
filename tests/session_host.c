/*
 * session_host.c - the bridge firmware's session (src/bridge/) on the host, for tests under
 * ASan and UBSan: frames on stdin, answers on stdout, exactly as UART0 carries them.
 *
 *     session_host FLASH_FILE [STORAGE_KIB]
 *
 * It stands in for the board: el_board.h's few functions the session calls (a host board
 * named "host-session"), and the flash HAL (el_flash.h) over FLASH_FILE with the rules of
 * boards/mps2/flash.c (a fresh file is created erased; erase by 4 KiB sector; a write over a
 * programmed byte is refused), writing through with fflush so a killed process leaves the
 * file as a power loss would. RESET re-reads the flash file and boots again (a restart).
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "el_board.h"
#include "el_flash.h"
#include "el_session.h"

#define SECTOR 4096u
#define MAX_STORAGE (4u << 20)

static uint8_t storage[MAX_STORAGE] __attribute__((aligned(16)));
static uint32_t storage_bytes = 896u * 1024u;
static FILE *backing;
static const char *backing_path;

/* ------------------------------------------------------------------ the host "board" */
const char *el_board_name(void) { return "host-session"; }
const char *el_board_device(void) { return "host"; }
uint32_t el_board_clock_hz(void) { return 1000000u; }
uint32_t el_ram_bytes(void) { return 2u << 20; } /* the pool (1 MiB) and the rest */
uint32_t el_ram_static(void) { return 0; }
size_t el_stack_size(void) { return 0; }
size_t el_stack_high_water(void) { return 0; }

uint64_t el_clock_ticks(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000u + (uint64_t)t.tv_nsec / 1000u;
}

/* ------------------------------------------------------------------ the flash HAL over a file */
const uint8_t *el_flash_storage(void) { return storage; }
uint32_t el_flash_storage_bytes(void) { return storage_bytes; }
uint32_t el_flash_sector_bytes(void) { return SECTOR; }

el_flash_status el_flash_init(void)
{
    if (backing != NULL) {
        fclose(backing);
    }
    backing = fopen(backing_path, "r+b");
    if (backing == NULL) {
        backing = fopen(backing_path, "w+b");
        if (backing == NULL) {
            return EL_FLASH_ERR_IO;
        }
        memset(storage, 0xFF, storage_bytes);
        return fwrite(storage, 1, storage_bytes, backing) == storage_bytes && fflush(backing) == 0 ? EL_FLASH_OK
                                                                                                   : EL_FLASH_ERR_IO;
    }
    if (fseek(backing, 0, SEEK_END) != 0 || ftell(backing) != (long)storage_bytes || fseek(backing, 0, SEEK_SET) != 0 ||
        fread(storage, 1, storage_bytes, backing) != storage_bytes) {
        return EL_FLASH_ERR_IO;
    }
    return EL_FLASH_OK;
}

static el_flash_status mirror(uint32_t offset, uint32_t size)
{
    if (fseek(backing, (long)offset, SEEK_SET) != 0 || fwrite(storage + offset, 1, size, backing) != size ||
        fflush(backing) != 0) {
        return EL_FLASH_ERR_IO;
    }
    return EL_FLASH_OK;
}

el_flash_status el_flash_erase(uint32_t offset)
{
    if (offset % SECTOR != 0u) {
        return EL_FLASH_ERR_ALIGN;
    }
    if (offset >= storage_bytes) {
        return EL_FLASH_ERR_RANGE;
    }
    memset(storage + offset, 0xFF, SECTOR);
    return mirror(offset, SECTOR);
}

el_flash_status el_flash_write(uint32_t offset, const void *data, uint32_t size)
{
    uint32_t i;
    if (offset > storage_bytes || size > storage_bytes - offset) {
        return EL_FLASH_ERR_RANGE;
    }
    for (i = 0; i < size; ++i) {
        if (storage[offset + i] != 0xFFu) {
            return EL_FLASH_ERR_NOT_ERASED;
        }
    }
    memcpy(storage + offset, data, size);
    return mirror(offset, size);
}

/* ------------------------------------------------------------------ the line */
static void write_out(void *user, const uint8_t *data, size_t size)
{
    (void)user;
    if (fwrite(data, 1, size, stdout) != size || fflush(stdout) != 0) {
        exit(3); /* the host went away */
    }
}

static uint8_t pool[1u << 20] __attribute__((aligned(16)));
static el_session session;

int main(int argc, char **argv)
{
    uint8_t buf[4096];
    ssize_t n;
    if (argc < 2) {
        fprintf(stderr, "usage: session_host FLASH_FILE [STORAGE_KIB]\n");
        return 2;
    }
    backing_path = argv[1];
    if (argc > 2) {
        storage_bytes = (uint32_t)strtoul(argv[2], NULL, 10) * 1024u;
        if (storage_bytes == 0u || storage_bytes > MAX_STORAGE || storage_bytes % SECTOR != 0u) {
            fprintf(stderr, "session_host: STORAGE_KIB %s: a multiple of 4 up to %u\n", argv[2], MAX_STORAGE >> 10);
            return 2;
        }
    }
    el_session_init(&session, pool, sizeof pool, el_flash_init(), write_out, NULL);
    while ((n = read(0, buf, sizeof buf)) > 0) {
        ssize_t i;
        for (i = 0; i < n; ++i) {
            el_session_feed(&session, buf[i]);
            if (session.reset_requested) { /* a restart: the flash as the file holds it */
                el_session_init(&session, pool, sizeof pool, el_flash_init(), write_out, NULL);
            }
        }
    }
    return 0;
}

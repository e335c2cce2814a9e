/*
 * flash.c - the flash HAL (el_flash.h) of QEMU's MPS2 boards: the model storage is the top
 * of the FLASH region (sections.ld: __el_storage_start, EL_STORAGE_BYTES), which QEMU
 * backs with writable SSRAM, mirrored to a host file through semihosting.
 *
 * The file holds the storage byte for byte. el_flash_init reads it into the region (a file
 * that does not exist yet is created erased, all 0xFF); every erase and write then updates
 * the region and the file at once, so a QEMU killed or reset finds the storage as a real
 * part would after a power loss. The file is named on QEMU's semihosting command line,
 * `-semihosting-config enable=on,target=native,arg=edge-lls-fw,arg=flash=PATH`
 * (default: edge-lls-flash.bin in QEMU's working directory).
 */
#include <string.h>

#include "el_board.h"
#include "el_flash.h"

#define SECTOR_BYTES 4096u

extern uint8_t __el_storage_start[];
extern const char __el_storage_bytes[];

static int backing = -1;

static uint8_t *storage(void) { return __el_storage_start; }
const uint8_t *el_flash_storage(void) { return __el_storage_start; }
uint32_t el_flash_storage_bytes(void) { return (uint32_t)(uintptr_t)__el_storage_bytes; }
uint32_t el_flash_sector_bytes(void) { return SECTOR_BYTES; }

/* The value of `flash=PATH` on the semihosting command line, into path. */
static void backing_path(char *path, uint32_t size)
{
    static const char fallback[] = "edge-lls-flash.bin";
    char line[256];
    const char *p = NULL;
    uint32_t n = 0;
    if (el_semihost_cmdline(line, sizeof line) == 0) {
        const char *q = line;
        while ((q = strstr(q, "flash=")) != NULL) {
            if (q == line || q[-1] == ' ') {
                p = q + 6;
                break;
            }
            q += 6;
        }
    }
    if (p == NULL) {
        p = fallback;
    }
    while (p[n] != '\0' && p[n] != ' ' && n + 1u < size) {
        path[n] = p[n];
        ++n;
    }
    path[n] = '\0';
}

el_flash_status el_flash_init(void)
{
    char path[200];
    long length;
    backing_path(path, sizeof path);
    backing = el_semihost_open(path, 0);
    if (backing < 0) { /* a fresh board: the storage erased */
        backing = el_semihost_open(path, 1);
        if (backing < 0) {
            return EL_FLASH_ERR_IO;
        }
        memset(storage(), 0xFF, el_flash_storage_bytes());
        return el_semihost_write(backing, storage(), el_flash_storage_bytes()) == 0 ? EL_FLASH_OK : EL_FLASH_ERR_IO;
    }
    length = el_semihost_length(backing);
    if (length != (long)el_flash_storage_bytes()) { /* another board's file: not ours to change */
        backing = -1;
        return EL_FLASH_ERR_IO;
    }
    if (el_semihost_seek(backing, 0) != 0 || el_semihost_read(backing, storage(), el_flash_storage_bytes()) != 0) {
        backing = -1;
        return EL_FLASH_ERR_IO;
    }
    return EL_FLASH_OK;
}

/* The region's bytes [offset, offset + size) to the file. */
static el_flash_status mirror(uint32_t offset, uint32_t size)
{
    if (el_semihost_seek(backing, offset) != 0 || el_semihost_write(backing, storage() + offset, size) != 0) {
        return EL_FLASH_ERR_IO;
    }
    return EL_FLASH_OK;
}

el_flash_status el_flash_erase(uint32_t offset)
{
    if (backing < 0) {
        return EL_FLASH_ERR_IO;
    }
    if (offset % SECTOR_BYTES != 0u) {
        return EL_FLASH_ERR_ALIGN;
    }
    if (offset >= el_flash_storage_bytes()) {
        return EL_FLASH_ERR_RANGE;
    }
    memset(storage() + offset, 0xFF, SECTOR_BYTES);
    return mirror(offset, SECTOR_BYTES);
}

el_flash_status el_flash_write(uint32_t offset, const void *data, uint32_t size)
{
    const uint8_t *bytes = (const uint8_t *)data;
    uint32_t i;
    if (backing < 0) {
        return EL_FLASH_ERR_IO;
    }
    if (offset > el_flash_storage_bytes() || size > el_flash_storage_bytes() - offset) {
        return EL_FLASH_ERR_RANGE;
    }
    for (i = 0; i < size; ++i) {
        if (storage()[offset + i] != 0xFFu) {
            return EL_FLASH_ERR_NOT_ERASED;
        }
    }
    memcpy(storage() + offset, bytes, size);
    return mirror(offset, size);
}

/*
 * el_flash.h - the model storage as a board gives it: NOR flash semantics over one region.
 *
 * The region is memory-mapped (a model image in it runs in place: el_model_open reads it
 * where it lies) and written only through this interface, with the rules of real flash:
 *   - erase sets one whole sector to 0xFF;
 *   - a write programs bytes that are erased (0xFF); writing over a programmed byte is
 *     refused (EL_FLASH_ERR_NOT_ERASED) instead of silently AND-ing bits, so code that would
 *     corrupt a real part fails in tests;
 *   - a write or erase is complete when it returns; power can fail between any two.
 * On QEMU's MPS2 boards (boards/mps2/flash.c) the region is a part of the FLASH memory the
 * linker leaves to it, backed by a host file through semihosting: every write and erase
 * goes to the file at once, so a QEMU that is killed or reset finds the flash as a real
 * board would. The host build (tests/) backs it with a plain file.
 */
#ifndef EL_FLASH_H
#define EL_FLASH_H

#include <stdint.h>

typedef enum {
    EL_FLASH_OK = 0,
    EL_FLASH_ERR_RANGE = 1,       /* outside the region */
    EL_FLASH_ERR_ALIGN = 2,       /* an erase not at a sector boundary */
    EL_FLASH_ERR_NOT_ERASED = 3,  /* a write over a programmed byte */
    EL_FLASH_ERR_IO = 4           /* the backing store failed */
} el_flash_status;

/* Opens the backing store and maps its contents (a fresh store reads as erased). */
el_flash_status el_flash_init(void);

const uint8_t *el_flash_storage(void);      /* the region, memory-mapped (sector aligned) */
uint32_t el_flash_storage_bytes(void);      /* its bytes: a multiple of the sector */
uint32_t el_flash_sector_bytes(void);       /* the erase unit */

el_flash_status el_flash_erase(uint32_t offset);  /* the sector at offset (a multiple of the sector) */
el_flash_status el_flash_write(uint32_t offset, const void *data, uint32_t size);

const char *el_flash_status_name(el_flash_status status);

#endif /* EL_FLASH_H */

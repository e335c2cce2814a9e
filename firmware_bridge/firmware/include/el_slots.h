/*
 * el_slots.h - A/B model slots in flash (el_flash.h), as MCUboot keeps images: a new model
 * is written into the inactive slot, checked against its SHA-256, and made active by a small
 * commit record written last; at boot the newest slot whose record and image check runs, in
 * a trial state that reverts unless a self-check confirms it.
 *
 * The storage, in sectors:
 *     [slot 0][slot 1][meta 0][meta 1]        slot_bytes each, one sector of meta per slot
 * A slot's meta sector (erased when a transfer into the slot begins):
 *     0       el_transfer_record   the transfer into the slot (SHA-256, total bytes)
 *     64      progress bytes       one per sector of the slot: 0x00 once it holds its data
 *     1024    el_commit_record[48] appended, never rewritten (flash is written once); the
 *                                  last whose CRC checks is the slot's state
 * So every change is one write into erased bytes, and a power loss between any two writes
 * leaves either the state before or the state after (a torn record fails its CRC and the one
 * before it stands). firmware_bridge/agent.py keeps the same records (the same 64-byte
 * el_commit_record and 44-byte el_transfer_record, tests/test_firmware_session.py compares
 * the layouts) in files, with the same boot rules.
 *
 * Boot (el_slots_boot): slots by descending record sequence; REVERTED is skipped; so is a
 * slot whose image does not match its record's size and SHA-256; TRIAL (booted once, never
 * confirmed: the self-check did not finish) becomes REVERTED and is skipped; PENDING
 * (committed, never booted) becomes TRIAL, runs the self-check, then CONFIRMED (or REVERTED
 * when the check fails); CONFIRMED runs the check and boots.
 */
#ifndef EL_SLOTS_H
#define EL_SLOTS_H

#include <stdint.h>

#include "el_flash.h"
#include "el_sha256.h"

#define EL_SLOT_COUNT 2u
#define EL_RECORD_MAGIC "ELCR"
#define EL_RECORD_VERSION 1u
#define EL_TRANSFER_MAGIC "ELTR"
#define EL_META_PROGRESS_AT 64u
#define EL_META_RECORDS_AT 1024u
#define EL_META_PROGRESS_MAX (EL_META_RECORDS_AT - EL_META_PROGRESS_AT) /* slot sectors at most */
#define EL_RECORD_BYTES 64u
#define EL_SLOT_NONE 0xffffffffu

/* el_commit_record.state */
enum { EL_RECORD_PENDING = 1, EL_RECORD_TRIAL = 2, EL_RECORD_CONFIRMED = 3, EL_RECORD_REVERTED = 4 };

typedef struct {
    char magic[4];          /* "ELCR" */
    uint16_t version;       /* EL_RECORD_VERSION */
    uint16_t state;         /* EL_RECORD_* */
    uint32_t sequence;      /* one more than any record before it, on either slot */
    uint32_t slot;
    uint32_t model_bytes;
    uint8_t sha256[32];
    uint32_t reserved[2];   /* 0 */
    uint32_t crc32;         /* zlib's CRC-32 of the 60 bytes before it */
} el_commit_record;

typedef struct {
    char magic[4];          /* "ELTR" */
    uint32_t total_bytes;
    uint8_t sha256[32];
    uint32_t crc32;         /* of the 40 bytes before it */
} el_transfer_record;

typedef enum {
    EL_SLOTS_OK = 0,
    EL_SLOTS_ERR_FLASH,      /* the flash HAL failed (flash_status says how) */
    EL_SLOTS_ERR_GEOMETRY,   /* the storage is too small for two slots, or a slot too large */
    EL_SLOTS_ERR_TOO_BIG,    /* a model larger than a slot */
    EL_SLOTS_ERR_FULL        /* a meta sector has no room for another record */
} el_slots_status;

/* The self-check of a model about to boot: 0 when it opens and runs. */
typedef int (*el_slot_check)(void *user, uint32_t slot, const uint8_t *image, uint32_t bytes);

typedef struct {
    uint32_t slot_bytes, sector_bytes, slot_sectors;
    el_flash_status flash_status;   /* the last HAL failure */
    /* the transfer into the inactive slot */
    uint32_t transfer_slot;         /* EL_SLOT_NONE: none */
    uint32_t total, received;
    uint8_t sha256[32];
    uint32_t ready_slot;            /* EL_SLOT_NONE, or a complete image whose SHA-256 checked */
    /* the booted slot */
    uint32_t active;                /* EL_SLOT_NONE: none */
    el_commit_record record;        /* its latest record */
    int reverted;                   /* the last boot reverted a trial */
} el_slots;

/* The geometry from the HAL (el_flash_init must have succeeded). */
el_slots_status el_slots_init(el_slots *s);

const uint8_t *el_slot_image(const el_slots *s, uint32_t slot);

/* The slot's latest valid record: 1 and *out filled, or 0 when it has none. */
int el_slot_record(const el_slots *s, uint32_t slot, el_commit_record *out);

/* Boots as the header says; s->active, s->record, s->reverted tell the outcome; then the
 * inactive slot's transfer is recovered (el_slots_recover). */
el_slots_status el_slots_boot(el_slots *s, el_slot_check check, void *user);

/* The inactive slot after a start: a transfer to resume (received = its complete sectors),
 * or, every sector complete and the SHA-256 right, an image ready to commit. */
void el_slots_recover(el_slots *s);

/* A new transfer into `slot` (its meta sector erased, the transfer record written). */
el_slots_status el_slots_begin(el_slots *s, uint32_t slot, const uint8_t sha256[32], uint32_t total);

/* data at offset s->received of the transfer (erasing each sector as it is entered). */
el_slots_status el_slots_append(el_slots *s, const uint8_t *data, uint32_t size);

/* Every byte received: 1 when the SHA-256 checks (ready_slot set), else 0 and the transfer
 * dropped (its meta sector erased). */
int el_slots_finish(el_slots *s);

/* The ready image's PENDING record, sequence one more than any: written last. */
el_slots_status el_slots_commit(el_slots *s, uint32_t *sequence);

/* A short name of a status, for logs ("flash failed"). */
const char *el_slots_status_name(el_slots_status status);
const char *el_flash_status_name(el_flash_status status);

#endif /* EL_SLOTS_H */

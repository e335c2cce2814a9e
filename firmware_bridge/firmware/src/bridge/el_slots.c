/* el_slots.c - A/B model slots, their transfer and commit records, trial boots (el_slots.h). */
#include "el_slots.h"

#include <string.h>

#include "el_model.h" /* el_crc32 */

#define PROGRESS_DONE 0x00u

static uint32_t meta_offset(const el_slots *s, uint32_t slot)
{
    return EL_SLOT_COUNT * s->slot_bytes + slot * s->sector_bytes;
}

static uint32_t slot_offset(const el_slots *s, uint32_t slot)
{
    return slot * s->slot_bytes;
}

static const uint8_t *at(uint32_t offset)
{
    return el_flash_storage() + offset;
}

static uint32_t record_capacity(const el_slots *s)
{
    return (s->sector_bytes - EL_META_RECORDS_AT) / EL_RECORD_BYTES;
}

static int erased(const uint8_t *p, uint32_t size)
{
    uint32_t i;
    for (i = 0; i < size; ++i) {
        if (p[i] != 0xFFu) {
            return 0;
        }
    }
    return 1;
}

static el_slots_status flash(el_slots *s, el_flash_status status)
{
    if (status == EL_FLASH_OK) {
        return EL_SLOTS_OK;
    }
    s->flash_status = status;
    return EL_SLOTS_ERR_FLASH;
}

el_slots_status el_slots_init(el_slots *s)
{
    const uint32_t sector = el_flash_sector_bytes(), storage = el_flash_storage_bytes();
    memset(s, 0, sizeof *s);
    s->transfer_slot = s->ready_slot = s->active = EL_SLOT_NONE;
    if (sector < EL_META_RECORDS_AT + EL_RECORD_BYTES || storage / sector < EL_SLOT_COUNT * 2u) {
        return EL_SLOTS_ERR_GEOMETRY;
    }
    s->sector_bytes = sector;
    s->slot_sectors = (storage / sector - EL_SLOT_COUNT) / EL_SLOT_COUNT; /* one meta sector each */
    s->slot_bytes = s->slot_sectors * sector;
    return s->slot_sectors <= EL_META_PROGRESS_MAX ? EL_SLOTS_OK : EL_SLOTS_ERR_GEOMETRY;
}

const uint8_t *el_slot_image(const el_slots *s, uint32_t slot)
{
    return at(slot_offset(s, slot));
}

/* ------------------------------------------------------------------ commit records */

static int record_valid(const uint8_t *p, uint32_t slot, el_commit_record *out)
{
    el_commit_record r;
    memcpy(&r, p, sizeof r);
    if (el_crc32(p, sizeof r - 4u) != r.crc32 || memcmp(r.magic, EL_RECORD_MAGIC, 4) != 0 ||
        r.version != EL_RECORD_VERSION || r.slot != slot || r.state < EL_RECORD_PENDING ||
        r.state > EL_RECORD_REVERTED) {
        return 0;
    }
    *out = r;
    return 1;
}

/* The slot's latest valid record (1, *out) and the index of its first free entry. */
static int scan_records(const el_slots *s, uint32_t slot, el_commit_record *out, uint32_t *free_entry)
{
    const uint8_t *base = at(meta_offset(s, slot) + EL_META_RECORDS_AT);
    uint32_t i, n = record_capacity(s);
    int found = 0;
    for (i = 0; i < n && !erased(base + i * EL_RECORD_BYTES, EL_RECORD_BYTES); ++i) {
        found |= record_valid(base + i * EL_RECORD_BYTES, slot, out); /* a torn one is skipped */
    }
    *free_entry = i;
    return found;
}

int el_slot_record(const el_slots *s, uint32_t slot, el_commit_record *out)
{
    uint32_t unused;
    return scan_records(s, slot, out, &unused);
}

static el_slots_status append_record(el_slots *s, const el_commit_record *r)
{
    el_commit_record last, entry = *r;
    uint32_t free_entry;
    (void)scan_records(s, r->slot, &last, &free_entry);
    if (free_entry >= record_capacity(s)) {
        return EL_SLOTS_ERR_FULL;
    }
    memcpy(entry.magic, EL_RECORD_MAGIC, 4);
    entry.version = EL_RECORD_VERSION;
    entry.reserved[0] = entry.reserved[1] = 0;
    entry.crc32 = el_crc32((const uint8_t *)&entry, sizeof entry - 4u);
    return flash(s, el_flash_write(meta_offset(s, r->slot) + EL_META_RECORDS_AT + free_entry * EL_RECORD_BYTES,
                                   &entry, sizeof entry));
}

static el_slots_status set_state(el_slots *s, el_commit_record *r, uint32_t state)
{
    r->state = (uint16_t)state;
    return append_record(s, r);
}

static uint32_t next_sequence(const el_slots *s)
{
    el_commit_record r;
    uint32_t slot, top = 0;
    for (slot = 0; slot < EL_SLOT_COUNT; ++slot) {
        if (el_slot_record(s, slot, &r) && r.sequence > top) {
            top = r.sequence;
        }
    }
    return top + 1u;
}

static int image_matches(const el_slots *s, const el_commit_record *r)
{
    uint8_t digest[EL_SHA256_BYTES];
    if (r->model_bytes == 0u || r->model_bytes > s->slot_bytes) {
        return 0;
    }
    el_sha256_digest(el_slot_image(s, r->slot), r->model_bytes, digest);
    return memcmp(digest, r->sha256, sizeof digest) == 0;
}

/* ------------------------------------------------------------------ boot */

el_slots_status el_slots_boot(el_slots *s, el_slot_check check, void *user)
{
    el_commit_record records[EL_SLOT_COUNT];
    int has[EL_SLOT_COUNT];
    el_slots_status status = EL_SLOTS_OK;
    uint32_t k, slot;
    s->active = EL_SLOT_NONE;
    s->reverted = 0;
    for (slot = 0; slot < EL_SLOT_COUNT; ++slot) {
        has[slot] = el_slot_record(s, slot, &records[slot]);
    }
    for (k = 0; k < EL_SLOT_COUNT; ++k) {
        /* the k-th newest: with two slots, the newer first */
        const uint32_t newer = has[1] && (!has[0] || records[1].sequence > records[0].sequence) ? 1u : 0u;
        el_commit_record *r;
        slot = k == 0 ? newer : 1u - newer;
        r = &records[slot];
        if (!has[slot] || r->state == EL_RECORD_REVERTED || !image_matches(s, r)) {
            continue;
        }
        if (r->state == EL_RECORD_TRIAL) { /* booted once, never confirmed */
            status = set_state(s, r, EL_RECORD_REVERTED);
            s->reverted = 1;
            continue;
        }
        if (r->state == EL_RECORD_PENDING) {
            if ((status = set_state(s, r, EL_RECORD_TRIAL)) != EL_SLOTS_OK) {
                continue;
            }
            if (check(user, slot, el_slot_image(s, slot), r->model_bytes) != 0) {
                status = set_state(s, r, EL_RECORD_REVERTED);
                s->reverted = 1;
                continue;
            }
            if ((status = set_state(s, r, EL_RECORD_CONFIRMED)) != EL_SLOTS_OK) {
                continue;
            }
        } else if (check(user, slot, el_slot_image(s, slot), r->model_bytes) != 0) {
            continue; /* confirmed once, does not run now (another firmware?) */
        }
        s->active = slot;
        s->record = *r;
        break;
    }
    el_slots_recover(s);
    return status;
}

/* ------------------------------------------------------------------ transfers */

static int transfer_valid(const uint8_t *p, const el_slots *s, el_transfer_record *out)
{
    el_transfer_record t;
    memcpy(&t, p, sizeof t);
    if (memcmp(t.magic, EL_TRANSFER_MAGIC, 4) != 0 || el_crc32(p, sizeof t - 4u) != t.crc32 || t.total_bytes == 0u ||
        t.total_bytes > s->slot_bytes) {
        return 0;
    }
    *out = t;
    return 1;
}

static uint32_t sectors_of(const el_slots *s, uint32_t bytes)
{
    return (bytes + s->sector_bytes - 1u) / s->sector_bytes;
}

void el_slots_recover(el_slots *s)
{
    const uint32_t slot = s->active == EL_SLOT_NONE ? 0u : 1u - s->active;
    const uint8_t *meta = at(meta_offset(s, slot));
    el_transfer_record t;
    el_commit_record r;
    uint32_t done = 0;
    s->transfer_slot = s->ready_slot = EL_SLOT_NONE;
    s->received = s->total = 0;
    if (el_slot_record(s, slot, &r) || !transfer_valid(meta, s, &t)) {
        return; /* committed (or never used): a PUT_MODEL starts a new transfer */
    }
    while (done < sectors_of(s, t.total_bytes) && meta[EL_META_PROGRESS_AT + done] == PROGRESS_DONE) {
        ++done;
    }
    s->transfer_slot = slot;
    s->total = t.total_bytes;
    memcpy(s->sha256, t.sha256, sizeof s->sha256);
    s->received = done * s->sector_bytes < t.total_bytes ? done * s->sector_bytes : t.total_bytes;
    if (s->received == s->total) {
        (void)el_slots_finish(s); /* every byte came before the restart */
    }
}

el_slots_status el_slots_begin(el_slots *s, uint32_t slot, const uint8_t sha256[32], uint32_t total)
{
    el_transfer_record t;
    el_slots_status status;
    if (total == 0u || total > s->slot_bytes) {
        return EL_SLOTS_ERR_TOO_BIG;
    }
    s->transfer_slot = s->ready_slot = EL_SLOT_NONE;
    if ((status = flash(s, el_flash_erase(meta_offset(s, slot)))) != EL_SLOTS_OK) {
        return status;
    }
    memcpy(t.magic, EL_TRANSFER_MAGIC, 4);
    t.total_bytes = total;
    memcpy(t.sha256, sha256, sizeof t.sha256);
    t.crc32 = el_crc32((const uint8_t *)&t, sizeof t - 4u);
    if ((status = flash(s, el_flash_write(meta_offset(s, slot), &t, sizeof t))) != EL_SLOTS_OK) {
        return status;
    }
    s->transfer_slot = slot;
    s->total = total;
    s->received = 0;
    memcpy(s->sha256, sha256, sizeof s->sha256);
    return EL_SLOTS_OK;
}

el_slots_status el_slots_append(el_slots *s, const uint8_t *data, uint32_t size)
{
    const uint32_t base = slot_offset(s, s->transfer_slot), sector = s->sector_bytes;
    const uint8_t done = PROGRESS_DONE;
    el_slots_status status;
    if (s->transfer_slot == EL_SLOT_NONE || size > s->total - s->received) {
        return EL_SLOTS_ERR_TOO_BIG;
    }
    while (size > 0u) {
        const uint32_t pos = s->received, in_sector = pos % sector;
        const uint32_t take = size < sector - in_sector ? size : sector - in_sector;
        if (in_sector == 0u && (status = flash(s, el_flash_erase(base + pos))) != EL_SLOTS_OK) {
            return status; /* entering a sector: erased first (a restart may have left it half written) */
        }
        if ((status = flash(s, el_flash_write(base + pos, data, take))) != EL_SLOTS_OK) {
            return status;
        }
        s->received = pos + take;
        data += take;
        size -= take;
        if (s->received % sector == 0u || s->received == s->total) { /* the sector holds its data */
            const uint32_t progress = meta_offset(s, s->transfer_slot) + EL_META_PROGRESS_AT + (s->received - 1u) / sector;
            if ((status = flash(s, el_flash_write(progress, &done, 1))) != EL_SLOTS_OK) {
                return status;
            }
        }
    }
    return EL_SLOTS_OK;
}

int el_slots_finish(el_slots *s)
{
    uint8_t digest[EL_SHA256_BYTES];
    const uint32_t slot = s->transfer_slot;
    el_sha256_digest(el_slot_image(s, slot), s->total, digest);
    s->transfer_slot = EL_SLOT_NONE;
    if (memcmp(digest, s->sha256, sizeof digest) != 0) {
        (void)flash(s, el_flash_erase(meta_offset(s, slot))); /* the transfer is dropped */
        s->received = 0;
        return 0;
    }
    s->ready_slot = slot;
    return 1;
}

el_slots_status el_slots_commit(el_slots *s, uint32_t *sequence)
{
    el_commit_record r;
    el_slots_status status;
    memset(&r, 0, sizeof r);
    r.state = EL_RECORD_PENDING;
    r.sequence = next_sequence(s);
    r.slot = s->ready_slot;
    r.model_bytes = s->total;
    memcpy(r.sha256, s->sha256, sizeof r.sha256);
    if ((status = append_record(s, &r)) != EL_SLOTS_OK) {
        return status;
    }
    s->ready_slot = EL_SLOT_NONE;
    *sequence = r.sequence;
    return EL_SLOTS_OK;
}

const char *el_slots_status_name(el_slots_status status)
{
    switch (status) {
    case EL_SLOTS_OK: return "ok";
    case EL_SLOTS_ERR_FLASH: return "flash failed";
    case EL_SLOTS_ERR_GEOMETRY: return "storage geometry";
    case EL_SLOTS_ERR_TOO_BIG: return "larger than a slot";
    case EL_SLOTS_ERR_FULL: return "no room for a record";
    }
    return "unknown";
}

const char *el_flash_status_name(el_flash_status status)
{
    switch (status) {
    case EL_FLASH_OK: return "ok";
    case EL_FLASH_ERR_RANGE: return "outside the storage";
    case EL_FLASH_ERR_ALIGN: return "erase not at a sector boundary";
    case EL_FLASH_ERR_NOT_ERASED: return "write over programmed bytes";
    case EL_FLASH_ERR_IO: return "backing store failed";
    }
    return "unknown";
}

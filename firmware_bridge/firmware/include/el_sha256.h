/*
 * el_sha256.h - SHA-256 (FIPS 180-4), streaming: the bridge names a model transfer by the
 * SHA-256 of the whole image and checks a slot against it before it commits or boots it.
 *
 *     el_sha256 h;  el_sha256_init(&h);  el_sha256_update(&h, data, n); ...
 *     el_sha256_final(&h, digest);      // 32 bytes, as hashlib.sha256(data).digest()
 *
 * No table beyond the 64 round constants; 112 bytes of state.
 */
#ifndef EL_SHA256_H
#define EL_SHA256_H

#include <stddef.h>
#include <stdint.h>

#define EL_SHA256_BYTES 32u

typedef struct {
    uint32_t state[8];
    uint64_t bytes;      /* message bytes so far */
    uint8_t block[64];   /* the block being filled: bytes % 64 of it hold data */
} el_sha256;

void el_sha256_init(el_sha256 *h);
void el_sha256_update(el_sha256 *h, const void *data, size_t size);
void el_sha256_final(el_sha256 *h, uint8_t digest[EL_SHA256_BYTES]);

/* The digest of size bytes at data, in one call. */
void el_sha256_digest(const void *data, size_t size, uint8_t digest[EL_SHA256_BYTES]);

#endif /* EL_SHA256_H */

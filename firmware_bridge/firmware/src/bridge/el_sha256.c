/* el_sha256.c - SHA-256 as FIPS 180-4 section 6.2 states it (el_sha256.h). */
#include "el_sha256.h"

#include <string.h>

static const uint32_t round_constants[64] = {
    0x428a2f98u, 0x71374491u, 0xb5c0fbcfu, 0xe9b5dba5u, 0x3956c25bu, 0x59f111f1u, 0x923f82a4u, 0xab1c5ed5u,
    0xd807aa98u, 0x12835b01u, 0x243185beu, 0x550c7dc3u, 0x72be5d74u, 0x80deb1feu, 0x9bdc06a7u, 0xc19bf174u,
    0xe49b69c1u, 0xefbe4786u, 0x0fc19dc6u, 0x240ca1ccu, 0x2de92c6fu, 0x4a7484aau, 0x5cb0a9dcu, 0x76f988dau,
    0x983e5152u, 0xa831c66du, 0xb00327c8u, 0xbf597fc7u, 0xc6e00bf3u, 0xd5a79147u, 0x06ca6351u, 0x14292967u,
    0x27b70a85u, 0x2e1b2138u, 0x4d2c6dfcu, 0x53380d13u, 0x650a7354u, 0x766a0abbu, 0x81c2c92eu, 0x92722c85u,
    0xa2bfe8a1u, 0xa81a664bu, 0xc24b8b70u, 0xc76c51a3u, 0xd192e819u, 0xd6990624u, 0xf40e3585u, 0x106aa070u,
    0x19a4c116u, 0x1e376c08u, 0x2748774cu, 0x34b0bcb5u, 0x391c0cb3u, 0x4ed8aa4au, 0x5b9cca4fu, 0x682e6ff3u,
    0x748f82eeu, 0x78a5636fu, 0x84c87814u, 0x8cc70208u, 0x90befffau, 0xa4506cebu, 0xbef9a3f7u, 0xc67178f2u};

static uint32_t rotr(uint32_t x, unsigned n)
{
    return (x >> n) | (x << (32u - n));
}

/* One 64-byte block into the state; the message schedule is kept as a 16-word ring. */
static void compress(uint32_t state[8], const uint8_t *block)
{
    uint32_t w[16], v[8];
    unsigned t;
    for (t = 0; t < 16u; ++t) {
        w[t] = (uint32_t)block[4u * t] << 24 | (uint32_t)block[4u * t + 1u] << 16 |
               (uint32_t)block[4u * t + 2u] << 8 | (uint32_t)block[4u * t + 3u];
    }
    memcpy(v, state, sizeof v);
    for (t = 0; t < 64u; ++t) {
        uint32_t s0, s1, ch, maj, t1, t2;
        if (t >= 16u) {
            const uint32_t w15 = w[(t + 1u) & 15u], w2 = w[(t + 14u) & 15u];
            s0 = rotr(w15, 7) ^ rotr(w15, 18) ^ (w15 >> 3);
            s1 = rotr(w2, 17) ^ rotr(w2, 19) ^ (w2 >> 10);
            w[t & 15u] += s0 + w[(t + 9u) & 15u] + s1;
        }
        s1 = rotr(v[4], 6) ^ rotr(v[4], 11) ^ rotr(v[4], 25);
        ch = (v[4] & v[5]) ^ (~v[4] & v[6]);
        t1 = v[7] + s1 + ch + round_constants[t] + w[t & 15u];
        s0 = rotr(v[0], 2) ^ rotr(v[0], 13) ^ rotr(v[0], 22);
        maj = (v[0] & v[1]) ^ (v[0] & v[2]) ^ (v[1] & v[2]);
        t2 = s0 + maj;
        memmove(&v[1], &v[0], 7u * sizeof v[0]);
        v[4] += t1;
        v[0] = t1 + t2;
    }
    for (t = 0; t < 8u; ++t) {
        state[t] += v[t];
    }
}

void el_sha256_init(el_sha256 *h)
{
    static const uint32_t initial[8] = {0x6a09e667u, 0xbb67ae85u, 0x3c6ef372u, 0xa54ff53au,
                                        0x510e527fu, 0x9b05688cu, 0x1f83d9abu, 0x5be0cd19u};
    memcpy(h->state, initial, sizeof h->state);
    h->bytes = 0;
}

void el_sha256_update(el_sha256 *h, const void *data, size_t size)
{
    const uint8_t *p = (const uint8_t *)data;
    size_t used = (size_t)(h->bytes & 63u);
    h->bytes += size;
    if (used != 0u) {
        size_t take = 64u - used < size ? 64u - used : size;
        memcpy(h->block + used, p, take);
        p += take;
        size -= take;
        if (used + take < 64u) {
            return;
        }
        compress(h->state, h->block);
    }
    for (; size >= 64u; p += 64, size -= 64u) {
        compress(h->state, p); /* whole blocks straight from the data: no copy */
    }
    memcpy(h->block, p, size);
}

void el_sha256_final(el_sha256 *h, uint8_t digest[EL_SHA256_BYTES])
{
    const uint64_t bits = h->bytes * 8u;
    size_t used = (size_t)(h->bytes & 63u);
    unsigned i;
    h->block[used++] = 0x80u;
    if (used > 56u) { /* no room for the length: pad this block out, then one more */
        memset(h->block + used, 0, 64u - used);
        compress(h->state, h->block);
        used = 0;
    }
    memset(h->block + used, 0, 56u - used);
    for (i = 0; i < 8u; ++i) {
        h->block[56u + i] = (uint8_t)(bits >> (56u - 8u * i));
    }
    compress(h->state, h->block);
    for (i = 0; i < 32u; ++i) {
        digest[i] = (uint8_t)(h->state[i / 4u] >> (24u - 8u * (i % 4u)));
    }
}

void el_sha256_digest(const void *data, size_t size, uint8_t digest[EL_SHA256_BYTES])
{
    el_sha256 h;
    el_sha256_init(&h);
    el_sha256_update(&h, data, size);
    el_sha256_final(&h, digest);
}

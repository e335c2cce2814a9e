/* sha256_harness.c - el_sha256 on the host: the bytes on stdin, fed in pieces of the sizes
 * given as arguments (cycled; none: all at once), and the digest printed in hex. */
#include <stdio.h>
#include <stdlib.h>

#include "el_sha256.h"

int main(int argc, char **argv)
{
    static unsigned char data[1 << 22];
    size_t size = fread(data, 1, sizeof data, stdin), at = 0;
    uint8_t digest[EL_SHA256_BYTES];
    el_sha256 h;
    int k = 1, i;
    el_sha256_init(&h);
    while (at < size) {
        size_t piece = argc > 1 ? (size_t)strtoul(argv[k], NULL, 10) : size;
        if (piece > size - at) {
            piece = size - at;
        }
        el_sha256_update(&h, data + at, piece);
        at += piece;
        k = k + 1 < argc ? k + 1 : 1;
    }
    el_sha256_final(&h, digest);
    for (i = 0; i < 32; ++i) {
        printf("%02x", digest[i]);
    }
    printf("\n");
    return 0;
}

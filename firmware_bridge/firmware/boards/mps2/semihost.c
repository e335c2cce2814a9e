/* semihost.c - ARM semihosting calls (BKPT 0xAB, operation in r0, argument block in r1). */
#include "el_board.h"

#include <string.h>

#define SYS_WRITE0 0x04u
#define SYS_EXIT_EXTENDED 0x20u
#define ADP_STOPPED_APPLICATION_EXIT 0x20026u

static uint32_t semihost_call(uint32_t operation, const void *argument)
{
    register uint32_t r0 __asm__("r0") = operation;
    register const void *r1 __asm__("r1") = argument;
    __asm__ volatile("bkpt 0xab" : "+r"(r0) : "r"(r1) : "memory");
    return r0;
}

void el_semihost_write0(const char *text)
{
    (void)semihost_call(SYS_WRITE0, text);
}

void el_semihost_exit(int status)
{
    /* SYS_EXIT_EXTENDED takes the reason and the status (SYS_EXIT on 32-bit ARM takes only a
       reason, so the status would be lost). */
    uint32_t block[2];
    block[0] = ADP_STOPPED_APPLICATION_EXIT;
    block[1] = (uint32_t)status;
    (void)semihost_call(SYS_EXIT_EXTENDED, block);
    for (;;) {
        __asm__ volatile("wfi");
    }
}

#define SYS_OPEN 0x01u
#define SYS_WRITE 0x05u
#define SYS_READ 0x06u
#define SYS_SEEK 0x0Au
#define SYS_FLEN 0x0Cu
#define SYS_GET_CMDLINE 0x15u
#define SYS_OPEN_MODE_RPLUS_B 3u /* fopen modes, numbered as the semihosting spec lists them */
#define SYS_OPEN_MODE_WPLUS_B 7u

int el_semihost_open(const char *path, int create)
{
    uint32_t block[3];
    block[0] = (uint32_t)(uintptr_t)path;
    block[1] = create ? SYS_OPEN_MODE_WPLUS_B : SYS_OPEN_MODE_RPLUS_B;
    block[2] = (uint32_t)strlen(path);
    return (int)semihost_call(SYS_OPEN, block);
}

int el_semihost_write(int handle, const void *data, uint32_t size)
{
    uint32_t block[3];
    block[0] = (uint32_t)handle;
    block[1] = (uint32_t)(uintptr_t)data;
    block[2] = size;
    return (int)semihost_call(SYS_WRITE, block); /* the bytes NOT written */
}

int el_semihost_read(int handle, void *data, uint32_t size)
{
    uint32_t block[3];
    block[0] = (uint32_t)handle;
    block[1] = (uint32_t)(uintptr_t)data;
    block[2] = size;
    return (int)semihost_call(SYS_READ, block); /* the bytes NOT read */
}

int el_semihost_seek(int handle, uint32_t position)
{
    uint32_t block[2];
    block[0] = (uint32_t)handle;
    block[1] = position;
    return (int)semihost_call(SYS_SEEK, block);
}

long el_semihost_length(int handle)
{
    uint32_t block[1];
    block[0] = (uint32_t)handle;
    return (long)(int32_t)semihost_call(SYS_FLEN, block);
}

int el_semihost_cmdline(char *buf, uint32_t size)
{
    uint32_t block[2];
    block[0] = (uint32_t)(uintptr_t)buf;
    block[1] = size;
    if (semihost_call(SYS_GET_CMDLINE, block) != 0u || size == 0u) {
        return -1;
    }
    buf[block[1] < size ? block[1] : size - 1u] = '\0';
    return 0;
}

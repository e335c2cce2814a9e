/* semihost.c - ARM semihosting calls (BKPT 0xAB, operation in r0, argument block in r1). */
#include "el_board.h"

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

/* clock.c - SysTick free running at the board clock: 24 bits in hardware, the wraps counted
 * by its interrupt, 64 bits together. */
#include "el_board.h"
#include "mps2.h"

static volatile uint32_t wraps;

void el_systick_handler(void);

void el_systick_handler(void)
{
    ++wraps;
}

void el_clock_start(void)
{
    EL_REG(SYST_CSR) = 0u;
    EL_REG(SYST_RVR) = SYST_MAX_RELOAD;
    EL_REG(SYST_CVR) = 0u; /* any write clears the counter: it reloads on the next tick */
    /* SysTick at the lowest priority (SHPR3 bits 31:24) */
    EL_REG(SCB_SHPR3) |= 0xFFu << 24;
    wraps = 0u;
    EL_REG(SYST_CSR) = SYST_CSR_CLKSOURCE | SYST_CSR_TICKINT | SYST_CSR_ENABLE;
}

uint64_t el_clock_ticks(void)
{
    uint32_t before, count, after;
    /* A wrap between the two reads of `wraps` is taken at once (thread mode), so retry. */
    do {
        before = wraps;
        count = EL_REG(SYST_CVR);
        after = wraps;
    } while (before != after);
    /* The count runs RELOAD..0 and the interrupt comes as it reaches 0: ticks since the last
       wrap are (RELOAD + 1 - count) mod (RELOAD + 1). */
    return (uint64_t)before * (SYST_MAX_RELOAD + 1u) + ((SYST_MAX_RELOAD + 1u - count) & SYST_MAX_RELOAD);
}

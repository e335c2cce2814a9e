/*
 * startup.c - reset, the vector table and the fault handlers of QEMU's MPS2 boards.
 *
 * Reset: the FPU first (CPACR, then DSB and ISB, before any floating-point instruction),
 * then .data copied from its load image in FLASH, .bss zeroed, the stack painted with
 * EL_STACK_PAINT, the vector table's address in VTOR, MemManage / BusFault / UsageFault
 * handlers and the divide-by-zero trap on, and main(); its return value is the exit status.
 *
 * Every fault and every exception nobody handles ends in el_board_fault_report(): one line
 * naming it, with the stacked PC and the fault status registers, over semihosting and (when
 * it is on) UART0, then exit status EL_EXIT_FAULT + the exception number.
 */
#include <string.h>

#include "el_board.h"
#include "mps2.h"

/* sections.ld */
extern uint32_t __data_load[], __data_start[], __data_end[], __bss_start[], __bss_end[];
extern uint32_t __heap_end[], __stack_bottom[], __stack_top[];
extern const char __el_flash_origin[], __el_flash_bytes[], __el_flash_used_end[];
extern const char __el_ram_origin[], __el_ram_bytes[];

int main(void);
void el_reset_handler(void);
void el_fault_entry(void);
void el_systick_handler(void); /* clock.c */
EL_NORETURN void el_board_fault_report(const uint32_t *frame, uint32_t exc_return);

typedef void (*el_handler)(void);

/* The initial stack pointer, then the handlers of exceptions 1..15 and of the IRQs. */
typedef struct {
    uint32_t *initial_sp;
    el_handler handlers[15 + EL_BOARD_IRQS];
} el_vector_table;

#define F el_fault_entry
#define F8 F, F, F, F, F, F, F, F
#if EL_BOARD_IRQS == 32
#define EL_IRQ_HANDLERS F8, F8, F8, F8
#else
#error "EL_BOARD_IRQS: list this many IRQ handlers"
#endif

__attribute__((section(".vectors"), used)) const el_vector_table el_vectors = {
    __stack_top,
    {
        el_reset_handler, /* 1 Reset */
        F,                /* 2 NMI */
        F,                /* 3 HardFault */
        F,                /* 4 MemManage */
        F,                /* 5 BusFault */
        F,                /* 6 UsageFault */
        0, 0, 0, 0,       /* 7..10 reserved */
        F,                /* 11 SVCall */
        F,                /* 12 DebugMonitor */
        0,                /* 13 reserved */
        F,                /* 14 PendSV */
        el_systick_handler, /* 15 SysTick */
        EL_IRQ_HANDLERS,
    },
};

#undef F
#undef F8

/* Everything after the FPU is on: a separate function, so no floating-point instruction the
 * compiler might choose for it (a VFP register spill or copy) can come before CPACR. */
static EL_NORETURN __attribute__((noinline)) void start(void)
{
    uintptr_t sp;
    uint32_t *word;
    memcpy(__data_start, __data_load, (size_t)((uintptr_t)__data_end - (uintptr_t)__data_start));
    memset(__bss_start, 0, (size_t)((uintptr_t)__bss_end - (uintptr_t)__bss_start));

    /* Paint the stack below this frame (16 words of margin) for el_stack_high_water(). */
    __asm__ volatile("mov %0, sp" : "=r"(sp));
    for (word = __stack_bottom; (uintptr_t)(word + 16) < sp; ++word) {
        *word = EL_STACK_PAINT;
    }

    EL_REG(SCB_VTOR) = (uint32_t)(uintptr_t)&el_vectors;
    EL_REG(SCB_SHCSR) |= SHCSR_MEMFAULTENA | SHCSR_BUSFAULTENA | SHCSR_USGFAULTENA;
    EL_REG(SCB_CCR) |= CCR_DIV_0_TRP;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    el_board_exit(main());
}

void el_reset_handler(void)
{
    EL_REG(SCB_CPACR) |= CPACR_CP10_CP11_FULL;
    __asm__ volatile("dsb\n\tisb" ::: "memory");
    start();
}

/* --------------------------------------------------------------------- the board */
const char *el_board_name(void) { return EL_BOARD_NAME; }
const char *el_board_device(void) { return EL_BOARD_DEVICE; }
uint32_t el_board_clock_hz(void) { return EL_BOARD_CLOCK_HZ; }

void el_board_exit(int status)
{
    if (el_uart_enabled()) {
        while (EL_REG(UART_STATE) & UART_STATE_TX_FULL) {
        }
    }
    el_semihost_exit(status);
}

void el_board_reset(void)
{
    if (el_uart_enabled()) {
        while (EL_REG(UART_STATE) & UART_STATE_TX_FULL) { /* the last byte of a reply leaves first */
        }
    }
    __asm__ volatile("dsb" ::: "memory");
    EL_REG(SCB_AIRCR) = AIRCR_VECTKEY | AIRCR_SYSRESETREQ;
    __asm__ volatile("dsb" ::: "memory");
    for (;;) {
    }
}

uint32_t el_flash_bytes(void) { return (uint32_t)(uintptr_t)__el_flash_bytes; }
uint32_t el_ram_bytes(void) { return (uint32_t)(uintptr_t)__el_ram_bytes; }

uint32_t el_flash_used(void)
{
    return (uint32_t)((uintptr_t)__el_flash_used_end - (uintptr_t)__el_flash_origin);
}

uint32_t el_ram_static(void)
{
    return (uint32_t)((uintptr_t)__bss_end - (uintptr_t)__el_ram_origin);
}

uint32_t el_ram_free(void)
{
    return (uint32_t)((uintptr_t)__stack_bottom - (uintptr_t)__heap_end);
}

size_t el_stack_size(void)
{
    return (size_t)((uintptr_t)__stack_top - (uintptr_t)__stack_bottom);
}

size_t el_stack_high_water(void)
{
    const uint32_t *word = __stack_bottom;
    while ((uintptr_t)word < (uintptr_t)__stack_top && *word == EL_STACK_PAINT) {
        ++word;
    }
    return (size_t)((uintptr_t)__stack_top - (uintptr_t)word);
}

/* --------------------------------------------------------------------- faults */

/* The frame the core stacked (r0-r3, r12, lr, pc, xpsr) is on MSP or PSP, as EXC_RETURN
 * bit 2 says; hand it and EXC_RETURN to the reporter. */
__attribute__((naked)) void el_fault_entry(void)
{
    __asm__ volatile("tst lr, #4\n\t"
                     "ite eq\n\t"
                     "mrseq r0, msp\n\t"
                     "mrsne r0, psp\n\t"
                     "mov r1, lr\n\t"
                     "b el_board_fault_report\n\t");
}

static const char *exception_name(uint32_t number)
{
    static const char *const names[16] = {"Thread", "Reset",  "NMI",      "HardFault",    "MemManage", "BusFault",
                                          "UsageFault", "Reserved", "Reserved", "Reserved", "Reserved", "SVCall",
                                          "DebugMonitor", "Reserved", "PendSV", "SysTick"};
    return number < 16u ? names[number] : "IRQ";
}

static char *put_text(char *out, const char *text)
{
    while (*text) {
        *out++ = *text++;
    }
    return out;
}

static char *put_hex(char *out, const char *label, uint32_t value)
{
    int shift;
    out = put_text(out, label);
    *out++ = '0';
    *out++ = 'x';
    for (shift = 28; shift >= 0; shift -= 4) {
        *out++ = "0123456789abcdef"[(value >> shift) & 0xFu];
    }
    return out;
}

static char *put_dec(char *out, uint32_t value)
{
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    while (n > 0) {
        *out++ = digits[--n];
    }
    return out;
}

void el_board_fault_report(const uint32_t *frame, uint32_t exc_return)
{
    char line[192];
    char *out = line;
    uint32_t ipsr, number;
    __asm__ volatile("mrs %0, ipsr" : "=r"(ipsr));
    number = ipsr & 0x1FFu;
    out = put_text(out, "FAULT ");
    out = put_text(out, exception_name(number));
    if (number >= 16u) {
        out = put_dec(out, number - 16u);
    }
    out = put_text(out, " (exception ");
    out = put_dec(out, number);
    out = put_text(out, ")");
    /* The frame is read only where it can be: inside RAM, below the stack top. */
    if ((uintptr_t)frame >= (uintptr_t)__el_ram_origin && (uintptr_t)(frame + 8) <= (uintptr_t)__stack_top) {
        out = put_hex(out, " pc=", frame[6]);
        out = put_hex(out, " lr=", frame[5]);
        out = put_hex(out, " xpsr=", frame[7]);
    }
    out = put_hex(out, " cfsr=", EL_REG(SCB_CFSR));
    out = put_hex(out, " hfsr=", EL_REG(SCB_HFSR));
    out = put_hex(out, " mmfar=", EL_REG(SCB_MMFAR));
    out = put_hex(out, " bfar=", EL_REG(SCB_BFAR));
    out = put_hex(out, " exc_return=", exc_return);
    *out++ = '\n';
    *out = '\0';
    if (el_uart_enabled()) {
        el_uart_puts(line);
    }
    el_semihost_write0(line);
    el_semihost_exit(EL_EXIT_FAULT + (int)(number & 0x7Fu));
}

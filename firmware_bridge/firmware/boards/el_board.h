/*
 * el_board.h - what every board gives the firmware: start-up, UART0, semihosting, a clock,
 * the memory map of its device profile and the stack's high-water mark.
 *
 * A board is boards/<name>/ (board.mk: CPU flags and family; memory.ld: the FLASH and RAM
 * regions, sized as the device profile in edge_lls/devices.py) plus its family's sources
 * (boards/mps2/ for QEMU's MPS2 boards: AN386 = cortex-m4, AN500 = cortex-m7). The reset
 * handler enables the FPU, copies .data, zeroes .bss, paints the stack, turns on the
 * configurable fault handlers and calls main(); main's return value is the exit status.
 *
 * No heap: nothing provides _sbrk, so code that pulls in malloc (or newlib's stdio) fails
 * at link time. Memory is static (.data / .bss) or on the stack.
 */
#ifndef EL_BOARD_H
#define EL_BOARD_H

#include <stddef.h>
#include <stdint.h>

#if defined(__GNUC__)
#define EL_NORETURN __attribute__((noreturn))
#else
#define EL_NORETURN
#endif

/* Exit status of a fault or an unexpected exception: EL_EXIT_FAULT + its exception number
 * (HardFault 3 -> 131, MemManage 4 -> 132, BusFault 5 -> 133, UsageFault 6 -> 134). */
#define EL_EXIT_FAULT 0x80

/* Word the stack is painted with at reset; el_stack_high_water() looks for the first one
 * overwritten. */
#define EL_STACK_PAINT 0xC5C5C5C5u

/* ------------------------------------------------------------------ the board */
const char *el_board_name(void);   /* "mps2-an386" */
const char *el_board_device(void); /* its device profile: "cortex-m4" */
uint32_t el_board_clock_hz(void);  /* the clock SysTick and the UART run from */

/* Waits for UART0's transmit buffer, then exits: semihosting SYS_EXIT_EXTENDED under QEMU. */
EL_NORETURN void el_board_exit(int status);

/* The memory map as linked (memory.ld): region sizes and what the build uses of them. */
uint32_t el_flash_bytes(void);      /* the FLASH region: the profile's flash */
uint32_t el_flash_used(void);       /* .vectors + .text + .rodata + .data's load image */
uint32_t el_ram_bytes(void);        /* the RAM region: the profile's SRAM */
uint32_t el_ram_static(void);       /* .data + .bss */
uint32_t el_ram_free(void);         /* between the end of the heap reserve and the stack */

/* ------------------------------------------------------------------ the stack */
size_t el_stack_size(void);       /* the stack reserve (EL_STACK_BYTES in memory.ld) */
size_t el_stack_high_water(void); /* most bytes of it used since reset (an upper bound by
                                     the few words reset itself used before painting) */

/* ------------------------------------------------------------------ UART0 */
void el_uart_init(uint32_t baud);  /* 8N1; transmitter and receiver on */
int el_uart_enabled(void);         /* el_uart_init has run (the transmitter is on) */
void el_uart_putc(uint8_t c);      /* raw bytes: no newline translation */
void el_uart_write(const void *data, size_t size);
void el_uart_puts(const char *text);
void el_uart_put_dec(uint32_t value);
void el_uart_put_hex(uint32_t value); /* 0x%08x */
int el_uart_getc(void);            /* blocks for a byte: 0..255 */
int el_uart_try_getc(void);        /* a received byte, or -1 when none is waiting */

/* ------------------------------------------------------------------ semihosting
 * ARM semihosting (BKPT 0xAB): the host debugger or QEMU (-semihosting-config
 * enable=on,target=native) services it. Without one attached a BKPT faults (or locks up the
 * core in a fault handler): on a real board, use these only under a debugger. */
void el_semihost_write0(const char *text); /* SYS_WRITE0 */
EL_NORETURN void el_semihost_exit(int status); /* SYS_EXIT_EXTENDED, ADP_Stopped_ApplicationExit */
/* Files on the host (the flash HAL's backing store). Handles are the host's; -1 on failure. */
int el_semihost_open(const char *path, int create); /* "r+b", or "w+b" (create / truncate) */
int el_semihost_write(int handle, const void *data, uint32_t size);  /* 0 when all were written */
int el_semihost_read(int handle, void *data, uint32_t size);         /* 0 when all were read */
int el_semihost_seek(int handle, uint32_t position);                 /* 0 on success */
long el_semihost_length(int handle);                                 /* bytes, or -1 */
/* The command line QEMU passes (-semihosting-config ...,arg=A,arg=B: "A B"), NUL-terminated
 * in buf; 0 on success. */
int el_semihost_cmdline(char *buf, uint32_t size);

/* Restarts the core and its peripherals (AIRCR SYSRESETREQ): the board boots again. */
EL_NORETURN void el_board_reset(void);

/* ------------------------------------------------------------------ the clock
 * SysTick, free running from the board clock with an interrupt on each wrap. On QEMU with
 * -icount shift=0 a guest instruction takes 1 ns of virtual time, so at a 25 MHz board clock
 * one tick is 40 instructions (QEMU models no cycles). */
void el_clock_start(void);
uint64_t el_clock_ticks(void); /* board-clock ticks since el_clock_start (thread mode) */

#endif /* EL_BOARD_H */

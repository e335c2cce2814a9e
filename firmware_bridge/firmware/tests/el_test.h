/*
 * el_test.h - checks for the test ELFs in firmware_bridge/firmware/tests/ (one ELF per
 * tests/<name>.c: `make BOARD=... tests`). main() returning 0 passes (exit status 0 through
 * semihosting); a failed EL_CHECK prints "FAIL file:line: condition" on UART0 and over
 * semihosting and exits with status 1. tests/test_boards.py runs them under QEMU.
 */
#ifndef EL_TEST_H
#define EL_TEST_H

#include "el_board.h"

#define EL_CHECK(condition)                                          \
    do {                                                             \
        if (!(condition)) {                                          \
            el_test_fail(__FILE__, __LINE__, #condition);            \
        }                                                            \
    } while (0)

static inline EL_NORETURN void el_test_fail(const char *file, unsigned line, const char *condition)
{
    char number[12];
    int n = (int)sizeof number - 1;
    number[n] = '\0';
    do {
        number[--n] = (char)('0' + line % 10u);
        line /= 10u;
    } while (line != 0u && n > 0);
    if (!el_uart_enabled()) {
        el_uart_init(115200u);
    }
    el_uart_puts("FAIL ");
    el_uart_puts(file);
    el_uart_puts(":");
    el_uart_puts(number + n);
    el_uart_puts(": ");
    el_uart_puts(condition);
    el_uart_puts("\n");
    el_semihost_write0("FAIL ");
    el_semihost_write0(condition);
    el_semihost_write0("\n");
    el_board_exit(1);
}

#endif /* EL_TEST_H */

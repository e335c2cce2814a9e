/* uart.c - the CMSDK APB UART0 of QEMU's MPS2 boards: polled, raw bytes. */
#include "el_board.h"
#include "mps2.h"

void el_uart_init(uint32_t baud)
{
    uint32_t divider = baud ? EL_BOARD_CLOCK_HZ / baud : UART_MIN_BAUDDIV;
    EL_REG(UART_CTRL) = 0u;
    EL_REG(UART_BAUDDIV) = divider < UART_MIN_BAUDDIV ? UART_MIN_BAUDDIV : divider;
    EL_REG(UART_STATE) = UART_STATE_TX_OVERRUN | UART_STATE_RX_OVERRUN; /* write 1 to clear */
    EL_REG(UART_CTRL) = UART_CTRL_TX_EN | UART_CTRL_RX_EN;
}

int el_uart_enabled(void)
{
    return (EL_REG(UART_CTRL) & UART_CTRL_TX_EN) != 0u;
}

void el_uart_putc(uint8_t c)
{
    while (EL_REG(UART_STATE) & UART_STATE_TX_FULL) {
    }
    EL_REG(UART_DATA) = c;
}

void el_uart_write(const void *data, size_t size)
{
    const uint8_t *bytes = (const uint8_t *)data;
    size_t i;
    for (i = 0; i < size; ++i) {
        el_uart_putc(bytes[i]);
    }
}

void el_uart_puts(const char *text)
{
    while (*text) {
        el_uart_putc((uint8_t)*text++);
    }
}

void el_uart_put_dec(uint32_t value)
{
    char digits[10];
    int n = 0;
    do {
        digits[n++] = (char)('0' + value % 10u);
        value /= 10u;
    } while (value != 0u);
    while (n > 0) {
        el_uart_putc((uint8_t)digits[--n]);
    }
}

void el_uart_put_hex(uint32_t value)
{
    int shift;
    el_uart_puts("0x");
    for (shift = 28; shift >= 0; shift -= 4) {
        el_uart_putc((uint8_t)"0123456789abcdef"[(value >> shift) & 0xFu]);
    }
}

int el_uart_try_getc(void)
{
    if (!(EL_REG(UART_STATE) & UART_STATE_RX_FULL)) {
        return -1;
    }
    return (int)(EL_REG(UART_DATA) & 0xFFu);
}

int el_uart_getc(void)
{
    int c;
    while ((c = el_uart_try_getc()) < 0) {
    }
    return c;
}

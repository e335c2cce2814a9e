/* test_uart_echo.c - UART0 receives: a line read with el_uart_getc comes back upper-cased,
 * then its length. Its instruction count depends on when the host's bytes arrive (the
 * program polls for them), so unlike the others it does not repeat run to run. */
#include "el_test.h"

int main(void)
{
    int c;
    uint32_t n = 0;
    el_uart_init(115200u);
    el_uart_puts("ready\n");
    while ((c = el_uart_getc()) != '\n') {
        el_uart_putc((uint8_t)(c >= 'a' && c <= 'z' ? c - 'a' + 'A' : c));
        ++n;
    }
    el_uart_puts("\n");
    el_uart_put_dec(n);
    el_uart_puts(" bytes\n");
    return 0;
}

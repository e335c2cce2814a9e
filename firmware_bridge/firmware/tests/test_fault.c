/* test_fault.c - an undefined instruction: the UsageFault handler reports it (UNDEFINSTR,
 * CFSR bit 16) over UART0 and semihosting and exits with status 0x80 + 6. */
#include "el_test.h"

int main(void)
{
    el_uart_init(115200u);
    el_uart_puts("undefined instruction next\n");
    __asm__ volatile("udf #1");
    el_uart_puts("still running\n");
    return 0;
}

/* test_fault_div0.c - an integer division by zero: trapped (CCR.DIV_0_TRP, set at reset)
 * as a UsageFault (DIVBYZERO, CFSR bit 25), status 0x80 + 6; without the trap it gives 0. */
#include "el_test.h"

static volatile uint32_t divisor = 0u;

int main(void)
{
    uint32_t q;
    el_uart_init(115200u);
    el_uart_puts("division by zero next\n");
    q = 100u / divisor;
    el_uart_puts("still running, quotient ");
    el_uart_put_dec(q);
    el_uart_puts("\n");
    return 0;
}

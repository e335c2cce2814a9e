/* test_check_fails.c - the harness itself: a failed EL_CHECK prints "FAIL file:line:
 * condition" and exits with status 1 (tests/test_boards.py expects exactly that). */
#include "el_test.h"

static volatile int two = 2;

int main(void)
{
    el_uart_init(115200u);
    el_uart_puts("checking 1 + 1 == 3\n");
    EL_CHECK(1 + 1 == two + 1);
    el_uart_puts("still running\n");
    return 0;
}

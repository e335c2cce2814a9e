/*
 * test_hello.c - the board runs: UART0 prints, the FPU computes (single precision, and
 * double on an FPv5-D16 core), SysTick counts, the stack's high-water mark sees a 4 KiB
 * frame; exit status 0.
 */
#include "el_test.h"

#define SCB_CPACR (*(volatile uint32_t *)0xE000ED88u)

static volatile int terms = 1000;

/* sum 1/k^2, k = 1..n: pi^2/6 - 1/n + O(1/n^2); 1.6439345 for n = 1000 */
static float basel_f32(int n)
{
    float sum = 0.0f;
    int k;
    for (k = n; k >= 1; --k) {
        float x = (float)k;
        sum += 1.0f / (x * x);
    }
    return sum;
}

#if defined(__ARM_FP) && (__ARM_FP & 8)
static double basel_f64(int n)
{
    double sum = 0.0;
    int k;
    for (k = n; k >= 1; --k) {
        double x = (double)k;
        sum += 1.0 / (x * x);
    }
    return sum;
}
#endif

/* A 4 KiB frame the compiler cannot drop: the stack's high-water mark must see it. */
static __attribute__((noinline)) uint32_t use_stack(uint32_t seed)
{
    volatile uint8_t frame[4096];
    uint32_t i, sum = 0;
    for (i = 0; i < sizeof frame; ++i) {
        frame[i] = (uint8_t)(seed + i);
    }
    for (i = 0; i < sizeof frame; i += 64u) {
        sum += frame[i];
    }
    return sum;
}

int main(void)
{
    float f;
    uint64_t ticks;
    el_clock_start();
    el_uart_init(115200u);
    el_uart_puts("hello from ");
    el_uart_puts(el_board_name());
    el_uart_puts("\n");

    EL_CHECK(((SCB_CPACR >> 20) & 0xFu) == 0xFu); /* CP10, CP11: full access */
    f = basel_f32(terms);
    EL_CHECK(f > 1.64393f && f < 1.64394f);
    el_uart_puts("fpu f32 basel(1000) * 1e6 = ");
    el_uart_put_dec((uint32_t)(f * 1e6f + 0.5f));
    el_uart_puts("\n");
#if defined(__ARM_FP) && (__ARM_FP & 8)
    {
        double d = basel_f64(terms * 100); /* pi^2/6 - 1e-5 + 5e-11 */
        EL_CHECK(d > 1.6449240668 && d < 1.6449240670);
        el_uart_puts("fpu f64 basel(100000) * 1e9 = ");
        el_uart_put_dec((uint32_t)(d * 1e9 + 0.5));
        el_uart_puts("\n");
    }
#endif

    EL_CHECK(use_stack(7u) != 0u);
    EL_CHECK(el_stack_high_water() >= 4096u && el_stack_high_water() < el_stack_size());
    el_uart_puts("stack high water ");
    el_uart_put_dec((uint32_t)el_stack_high_water());
    el_uart_puts(" of ");
    el_uart_put_dec((uint32_t)el_stack_size());
    el_uart_puts(" bytes\n");

    ticks = el_clock_ticks();
    EL_CHECK(ticks > 0u);
    el_uart_puts("clock ticks ");
    el_uart_put_dec((uint32_t)ticks);
    el_uart_puts("\nok\n");
    return 0;
}

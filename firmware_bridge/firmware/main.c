/*
 * main.c - the firmware: a banner on UART0 (board, version, memory), the linked model image
 * opened and checked when the build has one (make MODEL=path/to/export.c), then exit with
 * status 0 (or 1 when the model does not open), or idle (make IDLE=1).
 *
 *   edge-lls firmware 0.1.0 on mps2-an386 (cortex-m4, 25000000 Hz)
 *   flash 1048576 bytes: 5120 used
 *   ram 262144 bytes: 512 static, 16384 stack, 245248 free
 *   model none (make MODEL=path/to/export.c links one)
 *   stack high water 232 bytes
 */
#include "el_board.h"
#include "el_model.h"

static void put_line(const char *label, uint32_t value, const char *unit)
{
    el_uart_puts(label);
    el_uart_put_dec(value);
    el_uart_puts(unit);
}

/* 0 when no model is linked or the linked one opens, else 1. */
static int open_model(void)
{
#ifdef EL_MODEL_IMAGE
    el_model model;
    el_status status = el_model_open(EL_MODEL_IMAGE, EL_MODEL_BYTES, &model);
    put_line("model " EL_MODEL_NAME ": ", EL_MODEL_BYTES, " bytes");
    if (status != EL_OK) {
        el_uart_puts(", does not open: ");
        el_uart_puts(el_status_name(status));
        put_line(" (index ", model.failed_index, ")\n");
        return 1;
    }
    put_line(", ", model.header->tensor_count, " tensors");
    put_line(", ", model.header->op_count, " ops");
    put_line(", arena ", model.header->arena_bytes, " bytes");
    el_uart_puts(model.tail ? ", trainable tail" : "");
    el_uart_puts(model.header->arena_bytes <= el_ram_free() ? ": ok\n" : ": ok, but the arena exceeds free RAM\n");
    return 0;
#else
    el_uart_puts("model none (make MODEL=path/to/export.c links one)\n");
    return 0;
#endif
}

int main(void)
{
    int status;
    el_uart_init(115200u);
    el_clock_start();
    el_uart_puts("edge-lls firmware " EL_FW_VERSION " on ");
    el_uart_puts(el_board_name());
    el_uart_puts(" (");
    el_uart_puts(el_board_device());
    put_line(", ", el_board_clock_hz(), " Hz)\n");
    put_line("flash ", el_flash_bytes(), " bytes: ");
    put_line("", el_flash_used(), " used\n");
    put_line("ram ", el_ram_bytes(), " bytes: ");
    put_line("", el_ram_static(), " static, ");
    put_line("", (uint32_t)el_stack_size(), " stack, ");
    put_line("", el_ram_free(), " free\n");
    status = open_model();
    put_line("stack high water ", (uint32_t)el_stack_high_water(), " bytes\n");
#ifdef EL_IDLE
    el_uart_puts("idle\n");
    for (;;) {
        __asm__ volatile("wfi");
    }
#endif
    return status;
}

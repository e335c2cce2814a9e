/*
 * mps2.h - registers of QEMU's MPS2 boards (AN386: Cortex-M4F, AN500: Cortex-M7) that the
 * firmware touches: the System Control Block, SysTick and the CMSDK APB UART0.
 *
 * boards/<board>/board.mk defines EL_BOARD_NAME, EL_BOARD_DEVICE, EL_BOARD_CLOCK_HZ and
 * EL_BOARD_IRQS for the family's sources.
 */
#ifndef EL_MPS2_H
#define EL_MPS2_H

#include <stdint.h>

#if !defined(EL_BOARD_NAME) || !defined(EL_BOARD_DEVICE) || !defined(EL_BOARD_CLOCK_HZ) || !defined(EL_BOARD_IRQS)
#error "build through firmware_bridge/firmware/Makefile: boards/<board>/board.mk defines the board"
#endif

#define EL_REG(address) (*(volatile uint32_t *)(address))

/* System Control Block (ARMv7-M) */
#define SCB_ICSR 0xE000ED04u
#define SCB_VTOR 0xE000ED08u
#define SCB_AIRCR 0xE000ED0Cu
#define SCB_CCR 0xE000ED14u
#define SCB_SHPR3 0xE000ED20u
#define SCB_SHCSR 0xE000ED24u
#define SCB_CFSR 0xE000ED28u
#define SCB_HFSR 0xE000ED2Cu
#define SCB_MMFAR 0xE000ED34u
#define SCB_BFAR 0xE000ED38u
#define SCB_CPACR 0xE000ED88u

#define AIRCR_VECTKEY (0x05FAu << 16)
#define AIRCR_SYSRESETREQ (1u << 2)
#define CCR_DIV_0_TRP (1u << 4)
#define SHCSR_MEMFAULTENA (1u << 16)
#define SHCSR_BUSFAULTENA (1u << 17)
#define SHCSR_USGFAULTENA (1u << 18)
#define CPACR_CP10_CP11_FULL (0xFu << 20)

/* SysTick */
#define SYST_CSR 0xE000E010u
#define SYST_RVR 0xE000E014u
#define SYST_CVR 0xE000E018u
#define SYST_CSR_ENABLE (1u << 0)
#define SYST_CSR_TICKINT (1u << 1)
#define SYST_CSR_CLKSOURCE (1u << 2) /* the processor clock */
#define SYST_MAX_RELOAD 0x00FFFFFFu

/* CMSDK APB UART0 */
#define UART0_BASE 0x40004000u
#define UART_DATA (UART0_BASE + 0x00u)
#define UART_STATE (UART0_BASE + 0x04u)
#define UART_CTRL (UART0_BASE + 0x08u)
#define UART_INTSTATUS (UART0_BASE + 0x0Cu)
#define UART_BAUDDIV (UART0_BASE + 0x10u)
#define UART_STATE_TX_FULL (1u << 0)
#define UART_STATE_RX_FULL (1u << 1)
#define UART_STATE_TX_OVERRUN (1u << 2)
#define UART_STATE_RX_OVERRUN (1u << 3)
#define UART_CTRL_TX_EN (1u << 0)
#define UART_CTRL_RX_EN (1u << 1)
#define UART_MIN_BAUDDIV 16u

#endif /* EL_MPS2_H */

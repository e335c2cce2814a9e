# mps2-an500: QEMU's MPS2 AN500, a Cortex-M7 with FPv5-D16, as the cortex-m7 device profile.
BOARD_FAMILY := mps2
BOARD_DEVICE := cortex-m7
BOARD_CPU := -mcpu=cortex-m7 -mfpu=fpv5-d16 -mfloat-abi=hard -mthumb
BOARD_CLOCK_HZ := 25000000
BOARD_IRQS := 32
# The bridge firmware (SESSION=1): its model storage at the top of FLASH (1920 KiB: two slots and
# their meta sectors; code gets the rest) and its pool (the active model's arena + training buffer).
BOARD_SESSION_STORAGE_BYTES := 1966080
BOARD_SESSION_POOL_BYTES := 983040

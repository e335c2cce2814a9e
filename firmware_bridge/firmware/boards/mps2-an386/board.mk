# mps2-an386: QEMU's MPS2 AN386, a Cortex-M4F, as the cortex-m4 device profile.
BOARD_FAMILY := mps2
BOARD_DEVICE := cortex-m4
BOARD_CPU := -mcpu=cortex-m4 -mfpu=fpv4-sp-d16 -mfloat-abi=hard -mthumb
BOARD_CLOCK_HZ := 25000000
BOARD_IRQS := 32
# The bridge firmware (SESSION=1): its model storage at the top of FLASH (896 KiB: two slots and
# their meta sectors; code gets the rest) and its pool (the active model's arena + training buffer).
BOARD_SESSION_STORAGE_BYTES := 917504
BOARD_SESSION_POOL_BYTES := 221184

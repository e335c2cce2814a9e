"""Device profiles: the boards we train for, each with its cores, a memory budget for one
training run, and its default precision.

`--device rpi4` on any Linux machine trains locally with the Pi's thread count and refuses
a model whose training footprint would not fit in the Pi's budget, so a run that works
here also fits there. Microcontroller profiles describe targets of the Cortex-M bridge
(a later feature): training does not run on them locally.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from .errors import ConfigError
from .runtime import available_cores

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    cores: int
    memory_budget: int        # bytes one training process may use
    precision: str            # default numeric format of training: 'fp32' or 'int8'
    runs_locally: bool        # False: a bridge target, not something this process emulates
    flash_bytes: int = 0      # on-chip flash of a microcontroller (firmware + model image); 0: none

    def summary(self) -> str:
        threads = f"{self.cores} thread" + ("s" if self.cores != 1 else "")
        flash = f", {format_bytes(self.flash_bytes)} flash" if self.flash_bytes else ""
        return (f"{self.name}: {self.description}; {threads}, "
                f"{format_bytes(self.memory_budget)} training budget{flash}, {self.precision}")


def _host_memory() -> int:
    """Physical memory of this machine (the host profile's budget)."""
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 8 * GiB


def _host() -> DeviceProfile:
    return DeviceProfile("host", "this machine", available_cores(), _host_memory(), "fp32", True)


# Budgets leave the OS and the dataset room on the smallest common board of each family:
# a 2 GB Raspberry Pi 4 and a 4 GB Pi 5; MCU budgets are typical on-chip SRAM, and their
# flash that of the same class of part. The firmware's boards (QEMU's MPS2 AN386 and AN500,
# firmware_bridge/firmware/boards/) link into exactly these FLASH and RAM sizes.
_BOARDS = {
    "rpi4": DeviceProfile("rpi4", "Raspberry Pi 4 (4x Cortex-A72 1.5 GHz, 2 GB board)",
                          4, 1 * GiB, "fp32", True),
    "rpi5": DeviceProfile("rpi5", "Raspberry Pi 5 (4x Cortex-A76 2.4 GHz, 4 GB board)",
                          4, 2 * GiB, "fp32", True),
    "cortex-m4": DeviceProfile("cortex-m4", "Cortex-M4F microcontroller (STM32F4-class, 256 KiB SRAM)",
                               1, 256 * KiB, "int8", False, flash_bytes=1 * MiB),
    "cortex-m7": DeviceProfile("cortex-m7", "Cortex-M7 microcontroller (STM32H7-class, 1 MiB SRAM)",
                               1, 1 * MiB, "int8", False, flash_bytes=2 * MiB),
}
ALIASES = {"rpi": "rpi4", "pi": "rpi4", "pi4": "rpi4", "pi5": "rpi5", "m4": "cortex-m4", "m7": "cortex-m7"}
DEVICE_NAMES = ("host", *_BOARDS)


def get_device(name: str) -> DeviceProfile:
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key == "host":
        return _host()
    if key not in _BOARDS:
        choices = ", ".join((*DEVICE_NAMES, *(f"{a} (= {t})" for a, t in ALIASES.items())))
        raise ConfigError(f"unknown device {name!r}; choose one of: {choices}")
    return _BOARDS[key]


def all_devices() -> list[DeviceProfile]:
    return [get_device(name) for name in DEVICE_NAMES]


def require_local(profile: DeviceProfile) -> DeviceProfile:
    """The profile if this process can train under it, else a ConfigError saying why."""
    if not profile.runs_locally:
        raise ConfigError(
            f"device {profile.name} is a microcontroller profile for the Cortex-M bridge "
            f"(not available yet); it cannot train in this process. Use host, rpi4 or rpi5")
    return profile


def check_footprint(profile: DeviceProfile, footprint: dict[str, int], what: str) -> None:
    """footprint: bytes per part (weights, optimizer state, step arena, ...). Raises a
    ConfigError naming the parts when their sum exceeds the profile's budget."""
    total = sum(footprint.values())
    if total > profile.memory_budget:
        parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in footprint.items() if v)
        raise ConfigError(
            f"{what} needs {format_bytes(total)} to train ({parts}) but the {profile.name} budget "
            f"is {format_bytes(profile.memory_budget)}; lower --batch-size or choose a smaller model")


def format_bytes(n: int | float) -> str:
    for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"

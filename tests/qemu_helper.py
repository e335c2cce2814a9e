"""Run a firmware ELF on QEMU's MPS2 boards: exit status, UART0 output, instructions executed.

    status, uart, instructions = run_elf(elf, "mps2-an386", timeout=10)

QEMU runs `-machine BOARD -nographic -kernel ELF` with semihosting on (target=native: the
guest's SYS_EXIT_EXTENDED status is QEMU's exit status, SYS_WRITE0 goes to QEMU's stderr)
and UART0 on QEMU's stdin and stdout (`uart_input` bytes are what the guest receives); a
run longer than `timeout` seconds is killed and raises QemuTimeout, carrying the UART
output so far.

Instructions are counted by a QEMU TCG plugin of ours (firmware_bridge/firmware/tools/
el_qemu_insns.c, built here with the host gcc): a callback before every executed guest
instruction, the total written at exit. It is exact (the hand-counted test in
tests/test_boards.py) and needs nothing of the guest. With icount=True QEMU also runs with
`-icount shift=0,sleep=off`: virtual time is the instruction count (1 ns each), never host
time, so SysTick and timer interrupts land on the same instruction every run and the count
of a program that uses them repeats. Without icount, counts of interrupt-driven code vary
with the host; and a program that polls for UART input counts its waiting, which depends
on when the host's bytes arrive. The count is of instructions, not cycles: QEMU models no
pipeline, caches or wait states (DWT CYCCNT reads 0 there); the other deterministic clock,
SysTick at the 25 MHz board clock under icount, ticks once per 40 instructions.

This is a test helper, not installed: firmware_bridge the package ships the host side of the
bridge (protocol.py), while this module only builds and runs test ELFs for the test suite.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIRMWARE = REPO / "firmware_bridge" / "firmware"
PLUGIN_SOURCE = FIRMWARE / "tools" / "el_qemu_insns.c"
PLUGIN_CACHE = FIRMWARE / "build" / "host"
BOARDS = {"mps2-an386": "cortex-m4", "mps2-an500": "cortex-m7"}   # QEMU machine -> device profile
QEMU = os.environ.get("QEMU", "qemu-system-arm")


class QemuError(RuntimeError):
    """QEMU did not run the ELF to an exit (it failed to start, or the count is missing)."""


class QemuTimeout(QemuError):
    def __init__(self, message: str, uart: str):
        super().__init__(message)
        self.uart = uart


@dataclass(frozen=True)
class QemuRun:
    """One run; unpacks as (exit_status, uart, instructions)."""
    exit_status: int
    uart: str                        # everything the guest wrote to UART0
    instructions: int | None         # None when not counted
    semihost: str = ""               # SYS_WRITE0 output (QEMU's stderr)
    command: list[str] = field(default_factory=list)

    def __iter__(self):
        return iter((self.exit_status, self.uart, self.instructions))


def plugin_path(cache: Path = PLUGIN_CACHE) -> Path:
    """The instruction-counting plugin, built once per source version (atomically, so
    concurrent sessions may share the cache)."""
    source = PLUGIN_SOURCE.read_bytes()
    api = os.environ.get("EL_QEMU_PLUGIN_API", "1")
    key = hashlib.sha256(source + api.encode()).hexdigest()[:12]
    target = cache / f"el_qemu_insns-{key}.so"
    if target.exists():
        return target
    gcc = os.environ.get("HOST_CC", shutil.which("gcc") or shutil.which("cc") or "gcc")
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run([gcc, "-std=c99", "-Wall", "-Wextra", "-Werror", "-O2", "-shared", "-fPIC",
                                 f"-DEL_QEMU_PLUGIN_API={api}", "-o", str(built), str(PLUGIN_SOURCE)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise QemuError(f"building the QEMU plugin failed:\n{result.stderr}")
        os.replace(built, target)
    return target


def qemu_command(elf, board: str, *, icount: bool = True, count_file: Path | None = None, extra=()) -> list[str]:
    if board not in BOARDS:
        raise ValueError(f"unknown board {board!r}; choose one of {', '.join(BOARDS)}")
    cmd = [QEMU, "-machine", board, "-nographic", "-monitor", "none", "-serial", "stdio",
           "-semihosting-config", "enable=on,target=native", "-kernel", str(elf)]
    if icount:
        cmd += ["-icount", "shift=0,sleep=off"]
    if count_file is not None:
        cmd += ["-plugin", f"{plugin_path()},out={count_file}"]
    return cmd + list(extra)


def make_firmware(build: Path, board: str, *args: str) -> subprocess.CompletedProcess:
    """`make -C firmware_bridge/firmware BOARD=board BUILD=build ARGS...`, its output captured."""
    return subprocess.run(["make", "-C", str(FIRMWARE), "-j2", f"BOARD={board}", f"BUILD={build}", *args],
                          capture_output=True, text=True, timeout=300)


def run_elf(elf, board: str, timeout: float = 10.0, icount: bool = True, *, count: bool = True,
            uart_input: bytes = b"", extra=()) -> QemuRun:
    """Runs elf on the QEMU machine `board` until the guest exits through semihosting.
    Returns QemuRun(exit_status, uart, instructions, semihost, command); UART bytes are
    decoded as Latin-1 (one character per byte)."""
    elf = Path(elf)
    if not elf.is_file():
        raise FileNotFoundError(elf)
    with tempfile.TemporaryDirectory(prefix="el-qemu-") as tmp:
        count_file = Path(tmp) / "instructions.txt"
        cmd = qemu_command(elf, board, icount=icount, count_file=count_file if count else None, extra=extra)
        try:
            proc = subprocess.run(cmd, input=uart_input, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired as e:       # subprocess.run has killed QEMU
            uart = (e.stdout or b"").decode("latin-1")
            raise QemuTimeout(f"{elf.name} on {board} ran past {timeout} s and was killed; UART0 so far:\n{uart}",
                              uart) from None
        uart = proc.stdout.decode("latin-1")
        stderr = proc.stderr.decode("latin-1")
        qemu_errors = [line for line in stderr.splitlines()
                       if line.startswith(f"{Path(QEMU).name}: ") and ": warning: " not in line]
        if qemu_errors:
            raise QemuError(f"QEMU failed on {elf.name} ({board}): " + "; ".join(qemu_errors))
        instructions = None
        if count:
            if not count_file.exists():
                raise QemuError(f"no instruction count from {elf.name} on {board} (exit {proc.returncode}):\n{stderr}")
            instructions = int(count_file.read_text())
        return QemuRun(proc.returncode, uart, instructions, stderr, cmd)

"""The firmware on its boards: QEMU's MPS2 AN386 (cortex-m4) and AN500 (cortex-m7).

Built by firmware_bridge/firmware/Makefile for each board (the firmware and every
tests/*.c test ELF), then checked: the linker's FLASH and RAM regions are the device
profile's sizes (edge_lls/devices.py) and the ELF carries each core's FPU ABI; under QEMU
the firmware prints its banner and exits 0, test_hello passes (UART0, the FPU, SysTick, the
stack's high-water mark), UART0 receives, faults end in the fault handler's report and
status 0x80 + 6, a failed EL_CHECK in status 1, the instruction count is reported, repeats,
and is exact on a hand-counted program, a linked model image is opened at start-up (and a
corrupted one refused), builds that do not fit fail at link time naming the region, and a
run past its timeout is killed. Needs arm-none-eabi-gcc with newlib, qemu-system-arm, make and a host
gcc (`make toolchain`): skipped without them, failed under CI=true.
"""
from __future__ import annotations

import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import require_tools
from edge_lls.devices import get_device
from qemu_helper import BOARDS, FIRMWARE, REPO, QemuTimeout, run_elf, make_firmware

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-readelf", "arm-none-eabi-objdump",
         "qemu-system-arm", "make", "gcc")
BOARD_IDS = list(BOARDS)
FP_ARCH = {"mps2-an386": "VFPv4-D16", "mps2-an500": "FPv5/FP-D16 for ARMv8"}
STACK_BYTES = {"mps2-an386": 16 << 10, "mps2-an500": 32 << 10}
CLOCK_HZ = 25_000_000
INSTRUCTIONS_PER_TICK = 1_000_000_000 // CLOCK_HZ    # -icount shift=0: 1 ns per instruction
VERSION = re.search(r'^version\s*=\s*"([^"]+)"', (REPO / "pyproject.toml").read_text(), re.M).group(1)


@pytest.fixture(scope="module")
def toolchain():
    require_tools(*TOOLS)


make = make_firmware


@pytest.fixture(scope="module")
def builds(toolchain, tmp_path_factory) -> dict[str, Path]:
    """Both boards built at once: the firmware and the test ELFs, board -> build folder."""
    root = tmp_path_factory.mktemp("boards")
    with ThreadPoolExecutor(len(BOARDS)) as pool:
        results = dict(zip(BOARDS, pool.map(lambda b: make(root / b, b, "firmware", "tests"), BOARDS)))
    for board, result in results.items():
        assert result.returncode == 0, f"{board}:\n{result.stdout}\n{result.stderr}"
    return {board: root / board for board in BOARDS}


def _symbols(elf: Path) -> dict[str, int]:
    out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    rows = (line.split() for line in out.splitlines() if line.count(" ") == 2)
    return {name: int(value, 16) for value, _, name in rows}


def _tool(name: str, *args) -> str:
    return subprocess.run([name, *map(str, args)], capture_output=True, text=True, check=True).stdout


# ------------------------------------------------------------------ what the linker placed
@pytest.mark.parametrize("board", BOARD_IDS)
def test_the_link_has_the_device_profiles_flash_and_ram_and_the_cores_fpu_abi(builds, board):
    profile = get_device(BOARDS[board])
    elf = builds[board] / "edge-lls-fw.elf"
    regions = dict((name, (int(origin, 16), int(length, 16))) for name, origin, length in re.findall(
        r"^(FLASH|RAM)\s+0x([0-9a-f]+)\s+0x([0-9a-f]+)", elf.with_suffix(".map").read_text(), re.M))
    assert regions == {"FLASH": (0, profile.flash_bytes), "RAM": (0x2000_0000, profile.memory_budget)}
    assert (profile.flash_bytes, profile.memory_budget) == {"cortex-m4": (1 << 20, 256 << 10),
                                                            "cortex-m7": (2 << 20, 1 << 20)}[profile.name]

    s = _symbols(elf)
    assert s["el_vectors"] == 0                       # the vector table at 0x0, where the core reads it
    assert s["__el_flash_used_end"] <= profile.flash_bytes
    assert s["__stack_top"] == 0x2000_0000 + profile.memory_budget
    assert s["__stack_top"] - s["__stack_bottom"] == STACK_BYTES[board]
    assert s["__bss_end"] <= s["__heap_end"] <= s["__stack_bottom"]
    assert not {"malloc", "_sbrk", "_malloc_r", "printf"} & set(s)     # no heap, no stdio

    attributes = _tool("arm-none-eabi-readelf", "-A", elf)
    assert f"Tag_FP_arch: {FP_ARCH[board]}" in attributes
    assert "Tag_ABI_VFP_args: VFP registers" in attributes                # -mfloat-abi=hard
    assert "Tag_CPU_arch_profile: Microcontroller" in attributes


# ------------------------------------------------------------------ running under QEMU
@pytest.mark.parametrize("board", BOARD_IDS)
def test_the_firmware_prints_its_banner_and_exits_0(builds, board):
    profile = get_device(BOARDS[board])
    status, uart, instructions = run_elf(builds[board] / "edge-lls-fw.elf", board, timeout=20)
    assert status == 0, uart
    lines = uart.splitlines()
    assert lines[0] == f"edge-lls firmware {VERSION} on {board} ({profile.name}, {CLOCK_HZ} Hz)"
    assert lines[1].startswith(f"flash {profile.flash_bytes} bytes: ")
    assert lines[2].startswith(f"ram {profile.memory_budget} bytes: ") and f"{STACK_BYTES[board]} stack" in lines[2]
    assert lines[3].startswith("model none")
    assert re.fullmatch(r"stack high water \d+ bytes", lines[4])
    assert instructions > 0


@pytest.mark.parametrize("board", BOARD_IDS)
def test_hello_runs_uart_fpu_clock_and_stack_with_a_repeatable_instruction_count(builds, board):
    elf = builds[board] / "tests" / "test_hello.elf"
    first, second = run_elf(elf, board, timeout=20), run_elf(elf, board, timeout=20)
    assert first.exit_status == 0, first.uart + first.semihost
    lines = first.uart.splitlines()
    assert lines[0] == f"hello from {board}" and lines[-1] == "ok"
    assert "fpu f32 basel(1000) * 1e6 = 1643935" in lines
    assert ("fpu f64 basel(100000) * 1e9 = 1644924067" in lines) == (board == "mps2-an500")
    assert f" of {STACK_BYTES[board]} bytes" in first.uart

    # The count is there and repeats, bit for bit (icount: virtual time is the instruction count).
    assert first.instructions > 10_000 and first.instructions == second.instructions
    assert first.uart == second.uart
    # SysTick runs at the 25 MHz board clock on 1 ns instructions: 40 instructions a tick. The
    # count also holds what ran outside the clock's window (reset, painting the stack).
    ticks = int(re.search(r"^clock ticks (\d+)$", first.uart, re.M).group(1))
    outside = first.instructions - INSTRUCTIONS_PER_TICK * ticks
    assert 0 <= outside < 100_000, (first.instructions, ticks)

    # The FPU did the work: hard-float instructions, double precision only on FPv5-D16.
    code = _tool("arm-none-eabi-objdump", "-d", elf)
    assert "vdiv.f32" in code and ("vdiv.f64" in code) == (board == "mps2-an500")


@pytest.mark.parametrize("board", BOARD_IDS)
@pytest.mark.parametrize("test, cfsr", [("test_fault", 0x0001_0000),        # UNDEFINSTR
                                        ("test_fault_div0", 0x0200_0000)])  # DIVBYZERO (CCR.DIV_0_TRP)
def test_a_fault_is_reported_over_uart_and_semihosting_and_exits_nonzero(builds, board, test, cfsr):
    run = run_elf(builds[board] / "tests" / f"{test}.elf", board, timeout=20)
    assert run.exit_status == 0x80 + 6, run.uart + run.semihost    # EL_EXIT_FAULT + UsageFault
    report = re.search(r"^FAULT UsageFault \(exception 6\) pc=0x[0-9a-f]{8} .*$", run.uart, re.M)
    assert report, run.uart
    assert f"cfsr=0x{cfsr:08x}" in report.group(0)
    assert report.group(0) in run.semihost                          # the same line through semihosting
    assert "still running" not in run.uart
    assert run.instructions > 0


@pytest.mark.parametrize("board", BOARD_IDS)
def test_a_failed_check_in_a_test_elf_prints_where_and_exits_1(builds, board):
    run = run_elf(builds[board] / "tests" / "test_check_fails.elf", board, timeout=20)
    assert run.exit_status == 1
    assert run.uart.splitlines() == ["checking 1 + 1 == 3", "FAIL tests/test_check_fails.c:11: 1 + 1 == two + 1"]
    assert "FAIL 1 + 1 == two + 1" in run.semihost


@pytest.mark.parametrize("board", BOARD_IDS)
def test_uart0_receives_what_the_host_sends(builds, board):
    run = run_elf(builds[board] / "tests" / "test_uart_echo.elf", board, timeout=20, uart_input=b"edge-lls 0.1\n")
    assert (run.exit_status, run.uart) == (0, "ready\nEDGE-LLS 0.1\n12 bytes\n")


# The counter against a count by hand: 4 + 10 * 7 + 3 instructions, with UART0 stores and
# loads in the middle of translation blocks (I/O that icount makes QEMU treat specially).
HAND_COUNTED = 77
HAND_COUNTED_SOURCE = """
    .syntax unified
    .thumb
    .section .text
    .word 0x20001000          @ initial SP
    .word reset + 1           @ reset vector
    .thumb_func
reset:
    ldr r2, =0x40004000       @ UART0
    movs r3, #1
    str r3, [r2, #8]          @ CTRL: transmitter on
    movs r4, #10
loop:
    movs r3, #65
    adds r3, r3, #0
    str r3, [r2]              @ DATA
    nop
    ldr r3, [r2, #4]          @ STATE
    subs r4, #1
    bne loop
    ldr r1, =exit_block
    movs r0, #0x20            @ SYS_EXIT_EXTENDED
    bkpt 0xab
    b .
    .align 2
exit_block:
    .word 0x20026, 0          @ ADP_Stopped_ApplicationExit, status 0
"""


@pytest.mark.parametrize("icount", [True, False])
@pytest.mark.parametrize("board", BOARD_IDS)
def test_the_instruction_count_is_exact_on_a_program_counted_by_hand(toolchain, tmp_path, board, icount):
    source = tmp_path / "counted.S"
    source.write_text(HAND_COUNTED_SOURCE)
    cpu = {"mps2-an386": "cortex-m4", "mps2-an500": "cortex-m7"}[board]
    _tool("arm-none-eabi-gcc", f"-mcpu={cpu}", "-mthumb", "-nostdlib", "-Wl,-Ttext=0", "-o", tmp_path / "c.elf", source)
    status, uart, instructions = run_elf(tmp_path / "c.elf", board, timeout=20, icount=icount)
    assert (status, uart, instructions) == (0, "A" * 10, HAND_COUNTED)


# ------------------------------------------------------------------ a linked model image
def _model_source(folder: Path, corrupt: bool = False) -> Path:
    """A one-operator model image (FULLY_CONNECTED 4 -> 3) as `edge-lls export --format c`
    writes it."""
    import numpy as np
    from edge_lls.formats import blob
    from edge_lls.program.ir import I8, I32, Builder, Program
    b = Builder()
    x = b.tensor("x", (1, 4), I8, scales=0.1, zero_points=0)
    w = b.tensor("w", (3, 4), I8, data=np.arange(12).reshape(3, 4) - 6, scales=0.05, zero_points=0)
    bias = b.tensor("b", (3,), I32, data=np.array([10, -20, 30]), scales=0.005, zero_points=0)
    y = b.tensor("y", (1, 3), I8, scales=0.2, zero_points=-3)
    b.op("FULLY_CONNECTED", [x, w, bias], [y], activation="NONE")
    image = blob.build_image(Program(b.tensors, b.operators, (x,), (y,), name="fc"))
    header, source = blob.c_source(image, "fc", "fc.h")
    if corrupt:     # one weight changed after the payload's CRC-32 was taken
        source, n = re.subn(r"(\.op0_weights = \{\s*)-6,", r"\g<1>-7,", source)
        assert n == 1
    (folder / "fc.h").write_text(header)
    (folder / "fc.c").write_text(source)
    return folder / "fc.c"


@pytest.mark.parametrize("corrupt", [False, True])
def test_a_model_image_linked_into_flash_is_opened_at_start_up(toolchain, tmp_path, corrupt):
    board = "mps2-an386"
    model = _model_source(tmp_path, corrupt)
    result = make(tmp_path / "build", board, f"MODEL={model}")
    assert result.returncode == 0, result.stdout + result.stderr
    status, uart, _ = run_elf(tmp_path / "build" / "edge-lls-fw.elf", board, timeout=20)
    line = next(line for line in uart.splitlines() if line.startswith("model "))
    if corrupt:
        assert (status, line) == (1, "model fc: 368 bytes, does not open: payload CRC mismatch (index 0)")
    else:
        assert (status, line) == (0, "model fc: 368 bytes, 4 tensors, 1 ops, arena 32 bytes: ok")


# ------------------------------------------------------------------ builds that do not fit
@pytest.mark.parametrize("board", BOARD_IDS)
def test_builds_that_do_not_fit_the_profile_fail_at_link_time(toolchain, tmp_path, board):
    profile = get_device(BOARDS[board])
    # A "model" one byte larger than the flash: the linker's region check names FLASH.
    (tmp_path / "huge.h").write_text("#include <stdint.h>\n#define EL_MODEL_HUGE_BYTES "
                                     f"{profile.flash_bytes + 1}u\n#define EL_MODEL_HUGE_ARENA_BYTES 0u\n"
                                     "extern const uint8_t *const el_model_huge;\n")
    (tmp_path / "huge.c").write_text('#include "huge.h"\n'
                                     "static const uint8_t image[EL_MODEL_HUGE_BYTES] __attribute__((aligned(16)))"
                                     " = {1};\n"
                                     "const uint8_t *const el_model_huge = image;\n")
    result = make(tmp_path / "flash", board, f"MODEL={tmp_path / 'huge.c'}")
    assert result.returncode != 0
    assert "region `FLASH' overflowed" in result.stderr, result.stderr
    assert not (tmp_path / "flash" / "edge-lls-fw.elf").exists()

    # Reserves as large as the SRAM: the sections' ASSERT says what does not fit.
    for reserve in ("STACK_BYTES", "HEAP_BYTES"):
        result = make(tmp_path / reserve, board, f"{reserve}={profile.memory_budget}")
        assert result.returncode != 0
        assert "the stack reserve do not fit the RAM region" in result.stderr, result.stderr
        assert not (tmp_path / reserve / "edge-lls-fw.elf").exists()


# ------------------------------------------------------------------ the harness's timeout
def test_a_run_past_its_timeout_is_killed_and_keeps_the_uart_output(toolchain, tmp_path):
    board = "mps2-an386"
    result = make(tmp_path / "idle", board, "IDLE=1")
    assert result.returncode == 0, result.stdout + result.stderr
    with pytest.raises(QemuTimeout) as caught:
        run_elf(tmp_path / "idle" / "edge-lls-fw.elf", board, timeout=2)
    assert caught.value.uart.endswith("idle\n")

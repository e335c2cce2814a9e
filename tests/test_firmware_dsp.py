"""The DSP kernels (firmware_bridge/firmware/src/kernels/dsp/, include/el_kernels_dsp.h)
against the plain ones, on QEMU's MPS2 AN386 (cortex-m4) and AN500 (cortex-m7).

tests/test_kernels_dsp.c, built by the firmware Makefile as a test ELF for each board, runs
seeded random CONV_2D (1x1 fast path and general windows), DEPTHWISE_CONV_2D and
FULLY_CONNECTED layers, then layers drawn for the fastest paths (quads, rings), through
el_*_s8 and el_*_s8_dsp and compares every output byte
(exit 0, or 1 naming the first mismatch), then times VWW-sized layers with SysTick (one tick
per 40 instructions under -icount shift=0): the DSP versions must take well under the plain
ones' instructions. The sources also compile, strict, for both cores and for the host (where
they are empty units and el_kernels_dsp.h forwards to the plain kernels). Needs
arm-none-eabi-gcc with newlib, qemu-system-arm, make and a host gcc (`make toolchain`):
skipped without them, failed under CI=true.
"""
from __future__ import annotations

import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from conftest import C_STRICT as STRICT, require_tools
from qemu_helper import BOARDS, FIRMWARE, run_elf, make_firmware

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "arm-none-eabi-objdump", "qemu-system-arm", "make", "gcc")
BOARD_IDS = list(BOARDS)
ARM_CPUS = {"cortex-m4": "fpv4-sp-d16", "cortex-m7": "fpv5-d16"}
DSP_SOURCES = sorted((FIRMWARE / "src" / "kernels" / "dsp").glob("el_*_dsp.c"))
ELF = "test_kernels_dsp"
# The DSP version's instructions over the plain one's, at most (measured with GCC 12.2 -Os:
# 0.087, 0.142, 0.218 and 0.438 with quantization() mixing left and right shifts, off the
# fastest paths; 0.045, 0.056 and 0.067 for the "_relu" layers, which take them as VWW's layers
# do (right shifts, output offset -128: the quads of el_conv2d_s8_dsp.c, the rings of
# el_depthwise_conv2d_s8_dsp.c); the same on both boards; the margins are wide so that another
# compiler's register allocation does not trip them).
MAX_RATIO = {"conv1x1_24x24x64_64": 0.5, "conv3x3_12x12x32_32": 0.5, "dwconv3x3_24x24x64": 0.75,
             "conv1x1_6x6x128_128_relu": 0.1, "conv3x3_96x96x3_8_s2_relu": 0.12,
             "dwconv3x3_24x24x32_relu": 0.16, "fc_256_2_x100": 0.8}


@pytest.fixture(scope="module")
def toolchain():
    require_tools(*TOOLS)


make = make_firmware


@pytest.fixture(scope="module")
def elfs(toolchain, tmp_path_factory) -> dict[str, Path]:
    """test_kernels_dsp.elf for both boards (the Makefile's test-ELF rule), board -> ELF."""
    root = tmp_path_factory.mktemp("dsp")
    targets = {board: root / board / "tests" / f"{ELF}.elf" for board in BOARDS}
    with ThreadPoolExecutor(len(BOARDS)) as pool:
        results = dict(zip(BOARDS, pool.map(lambda b: make(root / b, b, str(targets[b])), BOARDS)))
    for board, result in results.items():
        assert result.returncode == 0, f"{board}:\n{result.stdout}\n{result.stderr}"
    return targets


@pytest.fixture(scope="module")
def runs(elfs):
    return {board: run_elf(elf, board, timeout=120, icount=True) for board, elf in elfs.items()}


def _bench(uart: str) -> dict[str, tuple[int, int]]:
    return {name: (int(plain), int(dsp))
            for name, plain, dsp in re.findall(r"^bench (\S+) plain (\d+) dsp (\d+)$", uart, re.M)}


@pytest.mark.parametrize("board", BOARD_IDS)
def test_the_dsp_kernels_equal_the_plain_ones_byte_for_byte_on_random_layers(runs, board):
    run = runs[board]
    assert run.exit_status == 0, run.uart + run.semihost
    assert "MISMATCH" not in run.uart and run.uart.splitlines()[-1] == "ok"
    counts = re.search(r"^random layers equal: conv2d (\d+) depthwise (\d+) fully_connected (\d+)$", run.uart, re.M)
    assert counts, run.uart
    assert tuple(map(int, counts.groups())) == (300, 200, 300)
    # layers drawn for the fastest paths (and a few that just miss them)
    fast = re.search(r"^fast-path layers equal: conv2d (\d+) depthwise (\d+)$", run.uart, re.M)
    assert fast and tuple(map(int, fast.groups())) == (300, 200), run.uart


@pytest.mark.parametrize("board", BOARD_IDS)
def test_the_dsp_kernels_take_far_fewer_instructions_on_vww_sized_layers(runs, board):
    run = runs[board]
    assert run.exit_status == 0, run.uart + run.semihost
    bench = _bench(run.uart)
    assert set(bench) == set(MAX_RATIO), run.uart
    ratios = {}
    for layer, (plain, dsp) in bench.items():
        assert plain > 0 and dsp > 0, (layer, plain, dsp)
        ratios[layer] = dsp / plain
        print(f"{board} {layer}: plain {plain * 40} dsp {dsp * 40} instructions, ratio {dsp / plain:.3f}")
    for layer, ratio in ratios.items():
        assert ratio < MAX_RATIO[layer], (board, layer, ratio)


@pytest.mark.parametrize("board", BOARD_IDS)
def test_the_timings_repeat_exactly_under_icount(elfs, runs, board):
    again = run_elf(elfs[board], board, timeout=120, icount=True)
    assert again.exit_status == 0
    assert again.uart == runs[board].uart and again.instructions == runs[board].instructions


@pytest.mark.parametrize("board", BOARD_IDS)
def test_the_dsp_kernels_use_smlad_and_sxtb16(elfs, board):
    code = subprocess.run(["arm-none-eabi-objdump", "-d", str(elfs[board])], capture_output=True, text=True,
                          check=True).stdout
    functions = dict(re.findall(r"^[0-9a-f]+ <(\w+)>:\n(.*?)(?=\n\n)", code, re.M | re.S))
    # static helpers may be inlined or kept: look at each kernel and what it calls
    body = {name: text for name, text in functions.items() if "dsp" in name}
    joined = "\n".join(body.values())
    assert "el_conv2d_s8_dsp" in body and "el_fully_connected_s8_dsp" in body
    assert "el_depthwise_conv2d_s8_dsp" in body
    for instruction in ("smlad", "sxtb16", "sxtab16", "smlabb", "smlatt"):
        assert re.search(rf"\t{instruction}\t", joined), instruction
    assert re.search(r"\tsxtb16\t\S+, \S+, ror #8", joined) and re.search(r"\tsxtab16\t.*ror #8", joined)


def test_the_host_kernel_tests_do_not_pick_up_the_dsp_folder():
    import test_firmware_kernels
    assert DSP_SOURCES and not set(DSP_SOURCES) & set(test_firmware_kernels.KERNEL_SOURCES)


@pytest.mark.parametrize("cpu", list(ARM_CPUS))
def test_the_dsp_sources_compile_strict_for_cortex_m_calling_only_the_plain_kernels(toolchain, cpu, tmp_path):
    objects = []
    for source in DSP_SOURCES:
        obj = tmp_path / (source.stem + ".o")
        cmd = ["arm-none-eabi-gcc", f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=hard", f"-mfpu={ARM_CPUS[cpu]}", "-Os",
               *STRICT, f"-I{FIRMWARE / 'include'}", "-c", str(source), "-o", str(obj)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        objects.append(obj)
    listed = subprocess.run(["arm-none-eabi-nm", "-u", *map(str, objects)], capture_output=True, text=True,
                            check=True).stdout
    undefined = {line.split()[-1] for line in listed.splitlines() if line.strip() and not line.endswith(":")}
    plain = ("el_conv2d_s8", "el_depthwise_conv2d_s8", "el_fully_connected_s8")
    # the plain kernels (the fallback) and their record checks, which the DSP versions share
    assert undefined <= {"memcpy", "memset", *plain, *(f"{name}_params_ok" for name in plain)}


def test_without_dsp_the_sources_are_valid_empty_units_and_the_header_forwards(toolchain, tmp_path):
    gcc = shutil.which("gcc")
    for source in DSP_SOURCES:
        result = subprocess.run([gcc, *STRICT, f"-I{FIRMWARE / 'include'}", "-c", str(source), "-o",
                                 str(tmp_path / (source.stem + ".o"))], capture_output=True, text=True)
        assert result.returncode == 0 and result.stderr == "", result.stderr
    # A Cortex-M0+ (no DSP extension) and the host: the _dsp names are the plain kernels.
    probe = tmp_path / "probe.c"
    probe.write_text('#include "el_kernels_dsp.h"\n'
                     "#if defined(EL_KERNELS_DSP)\n#error DSP versions claimed without the extension\n#endif\n"
                     "el_kernel_status probe(const el_fc_params *p, const int8_t *x, const int8_t *w, int8_t *y);\n"
                     "el_kernel_status probe(const el_fc_params *p, const int8_t *x, const int8_t *w, int8_t *y)\n"
                     "{ return el_fully_connected_s8_dsp(NULL, p, x, w, NULL, NULL, NULL, y); }\n")
    for cmd in ([gcc], ["arm-none-eabi-gcc", "-mcpu=cortex-m0plus", "-mthumb"]):
        result = subprocess.run([*cmd, *STRICT, f"-I{FIRMWARE / 'include'}", "-c", str(probe), "-o",
                                 str(tmp_path / "probe.o")], capture_output=True, text=True)
        assert result.returncode == 0 and result.stderr == "", (cmd, result.stderr)


# el_dsp_requantize (src/kernels/dsp/el_dsp_internal.h), the DSP kernels' per-output
# requantization, against el_requantize_s8 and el_multiply_by_quantized_multiplier on the chip:
# edge values (0, +-1, +-2^30, INT32_MIN, INT32_MAX, ...), values of every magnitude, every shift
# in [-31, 31], every multiplier but INT32_MIN (which the kernels hand to the plain kernel).
REQUANTIZE_PROBE = r"""
#include "el_dsp_internal.h"
#include "el_test.h"

static uint32_t state = 0x9E3779B9u;
static uint32_t rnd(void)
{
    uint32_t x = state;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    state = x;
    return x;
}
static int32_t pick(void)
{
    static const int32_t edge[14] = {0, 1, -1, 2, -2, INT32_MAX, INT32_MIN, INT32_MAX - 1, INT32_MIN + 1,
                                     1 << 30, -(1 << 30), 1 << 29, 3, -3};
    const uint32_t kind = rnd() % 8u;
    if (kind == 0u) {
        return edge[rnd() % 14u];
    }
    if (kind == 1u) {
        const int32_t v = (int32_t)(rnd() >> (rnd() % 32u));
        return (rnd() & 1u) ? v : -v;
    }
    if (kind == 2u) {
        return (int32_t)(rnd() % 2001u) - 1000;
    }
    return (int32_t)rnd();
}
int main(void)
{
    uint32_t i;
    el_uart_init(115200u);
    for (i = 0; i < 1000000u; ++i) {
        const int32_t acc = pick(), off = (int32_t)(rnd() % 256u) - 128;
        int32_t m = pick(), sh = (int32_t)(rnd() % 63u) - 31, lo = (int32_t)(rnd() % 256u) - 128, hi = 127;
        el_dsp_rq q;
        if (m == INT32_MIN) {
            m = INT32_MIN + 1;
        }
        if (rnd() % 4u == 0u) { /* a Q31 multiplier in [2^30, 2^31) and a right shift, as models have */
            m = (int32_t)(0x40000000u + (rnd() & 0x3FFFFFFFu));
            sh = -(int32_t)(rnd() % 15u);
        }
        if (rnd() & 1u) {
            lo = -128;
        } else {
            hi = lo + (int32_t)(rnd() % (uint32_t)(128 - lo));
        }
        el_dsp_rq_prepare(&q, m, sh);
        EL_CHECK(el_dsp_requantize(acc, &q, off, lo, hi) == el_requantize_s8(acc, m, sh, off, lo, hi));
        /* the value before the offset and the clamp, over the whole int32 range: offset 0 and
         * the clamp at the int8 range would hide most of it, so compare its low byte too */
        EL_CHECK(el_dsp_requantize(acc, &q, 0, -128, 127) == el_requantize_s8(acc, m, sh, 0, -128, 127));
    }
    el_uart_puts("requantize equal\n");
    return 0;
}
"""


@pytest.mark.parametrize("board", BOARD_IDS)
def test_the_dsp_requantization_equals_the_reference_on_a_million_values(elfs, board, tmp_path):
    build = elfs[board].parent.parent                          # the elfs fixture's BUILD folder
    cpu = BOARDS[board]
    flags = [f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=hard", f"-mfpu={ARM_CPUS[cpu]}"]
    source = tmp_path / "requantize_probe.c"
    source.write_text(REQUANTIZE_PROBE)
    obj, elf = tmp_path / "requantize_probe.o", tmp_path / "requantize_probe.elf"
    compile_cmd = ["arm-none-eabi-gcc", *flags, "-Os", *STRICT, f"-I{FIRMWARE / 'include'}",
                   f"-I{FIRMWARE / 'boards'}", f"-I{FIRMWARE / 'boards' / 'mps2'}", f"-I{FIRMWARE / 'tests'}",
                   f"-I{FIRMWARE / 'src' / 'kernels' / 'dsp'}", "-DEL_BOARD_CLOCK_HZ=25000000u", "-DEL_BOARD_IRQS=32",
                   f'-DEL_BOARD_NAME="{board}"', f'-DEL_BOARD_DEVICE="{cpu}"', "-c", str(source), "-o", str(obj)]
    result = subprocess.run(compile_cmd, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    board_objects = sorted(str(o) for o in (build / "obj" / "boards" / "mps2").glob("*.o"))
    assert board_objects
    link_cmd = ["arm-none-eabi-gcc", *flags, "-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections",
                f"-L{FIRMWARE / 'boards' / 'mps2'}", f"-T{FIRMWARE / 'boards' / board / 'memory.ld'}", "-o", str(elf),
                str(obj), *board_objects]
    result = subprocess.run(link_cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    run = run_elf(elf, board, timeout=120, icount=False, count=False)
    assert run.exit_status == 0 and "requantize equal" in run.uart, run.uart + run.semihost

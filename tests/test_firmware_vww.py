"""The firmware's op runner (firmware_bridge/firmware/src/el_runner.c) and the VWW model on the chip.

Host: tests/firmware_runner_harness.c with el_model.c, el_crc32.c, the kernels and el_runner.c,
built with the host gcc under the firmware's strict flags and ASan/UBSan (any stray read or
write, any overflow, fails the run). It opens a model image file, runs el_runner_init in an
arena of exactly the image's arena_bytes (its own allocation: a byte past it is an ASan
error), runs each input and writes every op's output tensor and the final output. Held to:

- vww_96_int8 (`blob.build_image(read_tflite(...))`) on the two sample images and random
  inputs: every op's output equals prepare(program, batch=1, fast=False,
  requantize="tflm").run_all byte for byte, and the final output equals the tflite-micro
  interpreter's;
- SmallConv trained one epoch with LLS on digits and exported int8 (CONV_2D, LEAKY_RELU,
  MAX_POOL_2D, AVERAGE_POOL_2D, RESHAPE, FULLY_CONNECTED), and a hand-built program with a
  PAD, the same way;
- images the reader accepts but the runner must refuse: records whose dims agree with
  themselves (the kernels pass them) but not with their tensors, an output moved onto its
  input, an arena one byte short.

QEMU: main.c built with `make MODEL=vww.c INPUT=inputs.h` (tools/bench_firmware.py writes
both) on mps2-an386 (cortex-m4: 256 KiB SRAM, 1 MiB flash) and mps2-an500 (cortex-m7), under
-icount: the printed output bytes equal the TFLM mode's for both sample images, two runs give
the same UART text and instruction count, and the instructions per inference are printed.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest

from conftest import C_SANITIZE as SANITIZE, C_STRICT as STRICT, FIRMWARE, SAMPLES_DIR, VWW_DIR, require_tools
from edge_lls.formats import blob
from edge_lls.formats.tflite import read_tflite
from edge_lls.program.interpreter import prepare

REPO = Path(__file__).resolve().parents[1]
SOURCES = [FIRMWARE / "src" / "el_model.c", FIRMWARE / "src" / "el_crc32.c", FIRMWARE / "src" / "el_runner.c",
           *sorted((FIRMWARE / "src" / "kernels").glob("el_*.c"))]
HARNESS = Path(__file__).with_name("firmware_runner_harness.c")
VWW_INT8 = VWW_DIR / "vww_96_int8.tflite"
FINAL = 0xFFFFFFFF
QEMU_TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm", "make", "gcc")


def _bench():
    spec = importlib.util.spec_from_file_location("bench_firmware", REPO / "tools" / "bench_firmware.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ------------------------------------------------------------------ the host harness
@pytest.fixture(scope="module")
def harness(gcc, tmp_path_factory):
    out = tmp_path_factory.mktemp("runner") / "firmware_runner_harness"
    cmd = [gcc, *STRICT, *SANITIZE, f"-I{FIRMWARE / 'include'}", "-o", str(out), str(HARNESS), *map(str, SOURCES)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return out


def _run(harness, data: bytes, inputs, folder: Path, arena: int | None = None) -> subprocess.CompletedProcess:
    (folder / "model.bin").write_bytes(data)
    (folder / "inputs.bin").write_bytes(b"".join(np.ascontiguousarray(x, np.int8).tobytes() for x in inputs))
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    cmd = [str(harness), str(folder / "model.bin"), str(folder / "inputs.bin"), str(folder / "outputs.bin")]
    return subprocess.run(cmd + ([str(arena)] if arena is not None else []), capture_output=True, text=True,
                          timeout=120, env=env)


def _outputs(harness, data: bytes, inputs, folder: Path) -> list[list[tuple[int, bytes]]]:
    """Per input, [(op index or FINAL, output bytes)] as the harness wrote them."""
    result = _run(harness, data, inputs, folder)
    assert result.returncode == 0 and "runtime error" not in result.stderr, result.stderr[-4000:]
    raw, at, runs, current = (folder / "outputs.bin").read_bytes(), 0, [], []
    while at < len(raw):
        op, n = struct.unpack_from("<II", raw, at)
        current.append((op, raw[at + 8:at + 8 + n]))
        at += 8 + n
        if op == FINAL:
            runs.append(current)
            current = []
    assert at == len(raw) and not current and len(runs) == len(inputs)
    return runs


def _assert_runs_like_the_tflm_mode(harness, program, inputs, folder: Path) -> list[bytes]:
    """Every op's output and the final output of the C runner equal run_all's; the finals."""
    data = blob.build_image(program).data
    graph = prepare(program, batch=1, fast=False, requantize="tflm")
    finals = []
    for x, run in zip(inputs, _outputs(harness, data, inputs, folder)):
        values = graph.run_all([x])
        assert [op for op, _ in run] == list(range(len(program.operators))) + [FINAL]
        for (index, got), op in zip(run, program.operators):
            expected = np.ascontiguousarray(values[op.outputs[0]], np.int8).tobytes()
            assert got == expected, f"op {index} ({op.opcode}): {np.count_nonzero(np.frombuffer(got, np.int8) != np.frombuffer(expected, np.int8))} bytes differ"
        assert run[-1][1] == np.ascontiguousarray(values[program.outputs[0]], np.int8).tobytes()
        finals.append(run[-1][1])
    return finals


def _tflm_output(model: bytes, program, x: np.ndarray) -> bytes:
    from edge_lls.tflm import tflm_interpreter
    interpreter = tflm_interpreter(model, arena_size=4 << 20)
    interpreter.set_input(x, 0)
    interpreter.invoke()
    return np.ascontiguousarray(interpreter.GetTensor(program.outputs[0], 0)["tensor_data"], np.int8).tobytes()


def _random_inputs(program, count: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    shape = program.tensors[program.inputs[0]].shape
    extremes = [np.full(shape, -128, np.int8), np.full(shape, 127, np.int8)]
    return extremes + [rng.integers(-128, 128, shape).astype(np.int8) for _ in range(count)]


@pytest.mark.shared(VWW_DIR, SAMPLES_DIR)
def test_vww_runs_op_for_op_as_the_tflm_mode_and_ends_where_tflite_micro_does(harness, tmp_path):
    program = read_tflite(VWW_INT8)
    samples = [x for _, x in _bench().sample_inputs(program, SAMPLES_DIR)]
    inputs = samples + _random_inputs(program, 4, seed=23)
    finals = _assert_runs_like_the_tflm_mode(harness, program, inputs, tmp_path)
    model = VWW_INT8.read_bytes()
    for x, final in zip(inputs, finals):
        assert final == _tflm_output(model, program, x)
    scores = [np.frombuffer(f, np.int8) for f in finals[:2]]
    assert scores[0].argmax() == 1 and scores[1].argmax() == 0          # person, no person


@pytest.fixture(scope="module")
def small_program(tmp_path_factory):
    """SmallConv trained one epoch with LLS on digits, exported int8 .tflite, read back."""
    from edge_lls.cli import main
    folder = tmp_path_factory.mktemp("small")
    assert main(["train", "--epochs", "1", "--out", str(folder / "run"), "--json"]) == 0
    assert main(["export", str(folder / "run"), "--format", "tflite", "--precision", "int8",
                 "--calibration-images", "64", "--out", str(folder / "m.tflite"), "--json"]) == 0
    return folder / "m.tflite", read_tflite(folder / "m.tflite")


def test_a_trained_smallconv_runs_op_for_op_as_the_tflm_mode_and_tflite_micro(harness, small_program, tmp_path):
    path, program = small_program
    assert {"CONV_2D", "LEAKY_RELU", "MAX_POOL_2D", "FULLY_CONNECTED"} <= {op.opcode for op in program.operators}
    inputs = _random_inputs(program, 6, seed=5)
    finals = _assert_runs_like_the_tflm_mode(harness, program, inputs, tmp_path)
    for x, final in zip(inputs, finals):
        assert final == _tflm_output(path.read_bytes(), program, x)


@pytest.fixture(scope="module")
def pad_program():
    """A small model whose convolutions pad as TFLite cannot (stride 2 with pads 1/1 on an even
    input, pad 2 around a 3x3 depthwise): PAD ops before them; int8 by post-training
    quantization on random calibration images."""
    from edge_lls.nn.model import Model
    from edge_lls.program.lower import float_program
    from edge_lls.program.ptq import quantize_program
    spec = {"name": "padded", "input_shape": [10, 10, 3], "num_classes": 5, "classifier": {"bias": True},
            "blocks": [{"type": "conv", "filters": 8, "kernel": 3, "stride": 2, "padding": 1, "act": "leaky_relu",
                        "pool_size": 2, "post": [{"type": "maxpool", "kernel": 2, "stride": 1}]},
                       {"type": "dwsep", "filters": 12, "kernel": 3, "padding": 2, "act": "relu", "pool_size": 2},
                       {"type": "dense", "units": 16, "act": "leaky_relu", "pool_size": 16}]}
    model = Model(spec, seed=3)
    rng = np.random.default_rng(4)
    batches = [rng.uniform(0, 1, (8, 10, 10, 3)).astype(np.float32) for _ in range(4)]
    return quantize_program(float_program(model), batches)


def test_a_program_with_pad_ops_runs_op_for_op_as_the_tflm_mode(harness, pad_program, tmp_path):
    opcodes = [op.opcode for op in pad_program.operators]
    assert opcodes.count("PAD") == 2 and {"DEPTHWISE_CONV_2D", "MAX_POOL_2D", "LEAKY_RELU"} <= set(opcodes), opcodes
    _assert_runs_like_the_tflm_mode(harness, pad_program, _random_inputs(pad_program, 6, seed=8), tmp_path)


# ------------------------------------------------------------------ what the runner refuses
def _with_crcs(b: bytearray) -> bytes:
    at = blob.HEADER.offsets()["payload_crc32"]
    b[at:at + 4] = struct.pack("<I", zlib.crc32(bytes(b[blob.HEADER.size:])) & 0xFFFFFFFF)
    b[60:64] = struct.pack("<I", zlib.crc32(bytes(b[:60])) & 0xFFFFFFFF)
    return bytes(b)


def _patched(data: bytes, edits) -> bytes:
    b = bytearray(data)
    for at, value in edits:
        b[at:at + 4] = struct.pack("<i", value)
    return _with_crcs(b)


def _mismatches(data: bytes):
    """(what, image) pairs: each record agrees with itself but not with its tensors."""
    image = blob.open_image(data)
    layouts = {number: layout for number, layout in blob.OPCODES.values()}
    seen = set()
    for index, entry in enumerate(image["ops"]):
        name, layout, record, at = (blob.OPCODE_NAMES[entry["opcode"]], layouts[entry["opcode"]], entry["record"],
                                    entry["record_offset"])
        if name in seen:
            continue
        seen.add(name)
        field = layout.offsets()
        if "input_dims" in field:
            # batch 2 on both sides: the kernel's own checks pass, and it would read and write
            # twice the tensors' bytes
            yield index, f"op {index} {name}: batch 2", _patched(
                data, [(at + field["input_dims"], 2), (at + field["output_dims"], 2)])
        if name in ("CONV_2D", "MAX_POOL_2D", "PAD"):
            # one row fewer in and out (stride-1 windows stay consistent): a smaller volume
            n, h, w, c = record["input_dims"]
            if h > 2 and record.get("stride_h", 1) == 1:
                yield index, f"op {index} {name}: one row fewer", _patched(
                    data, [(at + field["input_dims"] + 4, h - 1), (at + field["output_dims"] + 4,
                                                                    record["output_dims"][1] - 1)])
        if "size" in field:
            yield index, f"op {index} {name}: size + 16", _patched(data, [(at + field["size"], record["size"] + 16)])
        if name == "SOFTMAX":
            yield index, f"op {index} {name}: rows 2", _patched(data, [(at + field["rows"], 2)])


def test_records_that_agree_with_themselves_but_not_their_tensors_are_refused_at_init(harness, pad_program, small_program,
                                                                                        tmp_path):
    names = set()
    programs = [pad_program, small_program[1]]
    if VWW_INT8.exists():                       # RESHAPE and SOFTMAX: only VWW has them
        programs.append(read_tflite(VWW_INT8))
    for program in programs:
        data = blob.build_image(program).data
        x = _random_inputs(program, 1, seed=1)[2:]
        assert _run(harness, data, x, tmp_path).returncode == 0
        for index, what, bad in _mismatches(data):
            result = _run(harness, bad, x, tmp_path)
            # el_model_open accepts it (exit 3 would be the reader), el_runner_init does not
            assert result.returncode == 4, f"{what}: exit {result.returncode} {result.stderr}"
            assert result.stderr == f"el_runner_init: record does not fit its tensors (op {index})\n", what
            names.add(what.split()[2].rstrip(":"))
    assert {"CONV_2D", "DEPTHWISE_CONV_2D", "MAX_POOL_2D", "PAD", "LEAKY_RELU", "FULLY_CONNECTED",
            "AVERAGE_POOL_2D"} | ({"RESHAPE", "SOFTMAX"} if VWW_INT8.exists() else set()) <= names, names


def test_an_output_on_its_input_and_an_arena_a_byte_short_are_refused_at_init(harness, pad_program, tmp_path):
    data = blob.build_image(pad_program).data
    image = blob.open_image(data)
    x = _random_inputs(pad_program, 1, seed=1)[2:]
    arena = image["header"]["arena_bytes"]
    result = _run(harness, data, x, tmp_path, arena=arena - 1)
    assert (result.returncode, result.stderr) == (4, "el_runner_init: arena too small or misaligned (op 0)\n")
    assert _run(harness, data, x, tmp_path, arena=arena).returncode == 0

    tensors_at, field = image["header"]["tensors_offset"], blob.TENSOR.offsets()
    for index, entry in enumerate(image["ops"]):
        record = entry["record"]
        source, target = image["tensors"][record["input"]], image["tensors"][record["output"]]
        if blob.OPCODE_NAMES[entry["opcode"]] != "RESHAPE" and source["offset"] + target["bytes"] <= arena:
            break
    at = tensors_at + record["output"] * blob.TENSOR.size + field["offset"]
    result = _run(harness, _patched(data, [(at, source["offset"])]), x, tmp_path)
    assert (result.returncode, result.stderr) == (4, f"el_runner_init: output overlaps input (op {index})\n")



def test_a_record_the_kernel_refuses_stops_invoke_naming_the_op(harness, pad_program, tmp_path):
    """A stride of 0 fits the tensors (init passes) but not the kernel: invoke stops there,
    after the ops before it ran, and names it."""
    data = blob.build_image(pad_program).data
    image = blob.open_image(data)
    index, entry = next((i, e) for i, e in enumerate(image["ops"]) if blob.OPCODE_NAMES[e["opcode"]] == "CONV_2D")
    bad = _patched(data, [(entry["record_offset"] + blob.CONV.offsets()["stride_h"], 0)])
    result = _run(harness, bad, _random_inputs(pad_program, 1, seed=1)[2:], tmp_path)
    assert (result.returncode, result.stderr) == (
        5, f"el_runner_invoke: kernel refused its record (op {index}, kernel status 1)\n")
    written = (tmp_path / "outputs.bin").read_bytes()
    ops, at = [], 0
    while at < len(written):
        op, n = struct.unpack_from("<II", written, at)
        ops.append(op)
        at += 8 + n
    assert ops == list(range(index))

# ------------------------------------------------------------------ on the boards, under QEMU
@pytest.fixture(scope="module")
def vww_firmware(tmp_path_factory):
    """The firmware with vww_96_int8 linked and the two sample images as its inputs, built
    for both boards: (bench module, {board: ELF}, expected output bytes per sample)."""
    require_tools(*QEMU_TOOLS)
    from concurrent.futures import ThreadPoolExecutor
    bench = _bench()
    program = read_tflite(VWW_INT8)
    samples = [x for _, x in bench.sample_inputs(program, SAMPLES_DIR)]
    root = tmp_path_factory.mktemp("vww_fw")
    model_c, _ = bench.write_model_c(program, root)
    inputs_h = bench.write_inputs_header(root / "inputs.h", samples)
    with ThreadPoolExecutor(len(bench.BOARDS)) as pool:
        elfs = dict(zip(bench.BOARDS, pool.map(lambda b: bench.build(b, model_c, inputs_h, root / b), bench.BOARDS)))
    return bench, elfs, bench.expected_outputs(program, samples)


@pytest.mark.shared(VWW_DIR, SAMPLES_DIR)
@pytest.mark.parametrize("board", ["mps2-an386", "mps2-an500"])
def test_vww_on_the_board_gives_the_tflm_modes_bytes_with_a_repeatable_count(vww_firmware, board, capsys):
    from edge_lls.devices import get_device
    from qemu_helper import run_elf
    bench, elfs, expected = vww_firmware
    elf = elfs[board]
    first, second = run_elf(elf, board, timeout=300), run_elf(elf, board, timeout=300)
    assert first.exit_status == 0, first.uart + first.semihost
    image_bytes = len(blob.build_image(read_tflite(VWW_INT8)).data)
    assert f"model vww: {image_bytes} bytes, " in first.uart and ": ok\n" in first.uart
    runs = bench.parse_run(first.uart)
    assert [out for _, out in runs] == expected                     # person, no person: TFLM mode's bytes
    assert np.frombuffer(expected[0], np.int8).argmax() == 1 and np.frombuffer(expected[1], np.int8).argmax() == 0
    # icount: the same instructions, the same ticks, every run
    assert (first.uart, first.instructions) == (second.uart, second.instructions)
    per_inference = [bench.INSTRUCTIONS_PER_TICK * ticks for ticks, _ in runs]
    assert 0 < sum(per_inference) < first.instructions
    # the static arena is the image's arena_bytes, in .bss; the whole build fits the profile
    arena = blob.open_image(blob.build_image(read_tflite(VWW_INT8)).data)["header"]["arena_bytes"]
    sizes = bench.symbol_sizes(elf)
    assert sizes["el_arena"] == arena
    symbols = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout.split()
    assert not {"malloc", "_sbrk", "_malloc_r", "printf"} & set(symbols)            # no heap, no stdio
    memory = bench.map_memory(elf.with_suffix(".map"))
    profile = get_device(bench.BOARDS[board])
    flash_used = bench.banner_value(first.uart, r"^flash \d+ bytes: (\d+) used")
    assert memory["bss"] >= arena and memory["data"] + memory["bss"] + memory["stack"] <= profile.memory_budget
    assert image_bytes < flash_used <= profile.flash_bytes
    high_water = bench.banner_value(first.uart, r"^stack high water (\d+) bytes")
    assert 0 < high_water < memory["stack"]
    with capsys.disabled():
        print(f"\n{board}: {' / '.join(f'{n:,}' for n in per_inference)} instructions per inference "
              f"(person / no_person), {first.instructions:,} in the run; arena {arena:,} B, SRAM "
              f"{memory['data'] + memory['bss'] + memory['stack']:,} B, flash {flash_used:,} B, stack high water "
              f"{high_water:,} B")


@pytest.mark.parametrize("cpu, fpu", [("cortex-m4", "fpv4-sp-d16"), ("cortex-m7", "fpv5-d16")])
def test_the_runner_compiles_for_cortex_m_strictly_and_calls_only_the_kernels_and_string_h(cpu, fpu, tmp_path):
    require_tools("arm-none-eabi-gcc", "arm-none-eabi-nm")
    arm_gcc, nm = shutil.which("arm-none-eabi-gcc"), shutil.which("arm-none-eabi-nm")
    obj = tmp_path / "el_runner.o"
    result = subprocess.run([arm_gcc, f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=hard", f"-mfpu={fpu}", "-Os", *STRICT,
                             f"-I{FIRMWARE / 'include'}", "-c", str(FIRMWARE / "src" / "el_runner.c"), "-o", str(obj)],
                            capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    undefined = set(subprocess.run([nm, "-u", str(obj)], capture_output=True, text=True, check=True).stdout.split())
    undefined.discard("U")
    allowed = {"memcpy", "memmove", "memset", "el_model_record", "el_model_at"} | {
        f"el_{k}_s8{suffix}" for k in ("conv2d", "depthwise_conv2d", "fully_connected", "avg_pool", "max_pool")
        for suffix in ("", "_get_buffer_size", "_dsp", "_dsp_get_buffer_size")} | \
        {"el_softmax_s8", "el_pad_s8", "el_leaky_relu_s8"}
    assert undefined <= allowed, undefined - allowed

"""`edge-lls export --format c | blob`: the firmware's model image.

One layout, checked from both sides: the C header compiles (gcc -std=c99 -Wall -Wextra
-Werror -pedantic) and gives every struct the sizes and field offsets of the Python layouts;
the exported C source, compiled and linked, holds exactly the blob's bytes; the C reader and
printer (el_model_open, el_model_dump) print exactly what the Python reader prints; the
records hold the parameters the Python runtime prepares; and both readers reject the same
corrupted images (the C one built with ASan and UBSan, so a bad read is a failure).
"""
import json
import os
import subprocess
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from c_layouts import compile_time_checks, printed_layouts
from conftest import C_SANITIZE as SANITIZE, C_STRICT as STRICT, FIRMWARE, IN_CI, VWW_DIR, require_shared
from edge_lls.cli import main
from edge_lls.errors import ConfigError, FormatError
from edge_lls.finetune import trainable_tail
from edge_lls.formats import blob
from edge_lls.formats.tflite import read_tflite
from edge_lls.program.interpreter import prepare
from edge_lls.program.memory import plan_program
from edge_lls.rules.heads import ProjectionHead

SOURCES = [FIRMWARE / "src" / "el_model.c", FIRMWARE / "src" / "el_crc32.c"]


def _compile(gcc, out: Path, *sources, flags=()):
    cmd = [gcc, *STRICT, *flags, f"-I{FIRMWARE / 'include'}", "-o", str(out), *map(str, sources)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture(scope="module")
def dump_tool(gcc, tmp_path_factory):
    """el_model_dump reading image files, with the sanitizers on."""
    folder = tmp_path_factory.mktemp("dump")
    return _compile(gcc, folder / "el_model_dump", FIRMWARE / "tools" / "el_model_dump.c", *SOURCES, flags=SANITIZE)


def _dump(tool, path) -> subprocess.CompletedProcess:
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    return subprocess.run([str(tool), str(path)], capture_output=True, text=True, timeout=60, env=env)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """SmallConv trained one epoch with LLS on the built-in digits: CONV_2D, LEAKY_RELU,
    MAX_POOL_2D, AVERAGE_POOL_2D and FULLY_CONNECTED in its int8 program."""
    run = tmp_path_factory.mktemp("image") / "run"
    assert main(["train", "--epochs", "1", "--out", str(run), "--json"]) == 0
    return run


def _export(capsys, model, fmt, out, *extra) -> dict:
    assert main(["export", str(model), "--format", fmt, "--out", str(out), "--json", *extra]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


# ------------------------------------------------------------------ one layout, two sides
def test_every_c_struct_has_the_python_layouts_size_and_offsets(gcc, tmp_path):
    printed, expected = printed_layouts(gcc, tmp_path, "el_model_format.h", blob.LAYOUTS)
    assert printed == expected
    assert blob.HEADER.size == 64 and blob.HEADER.offsets()["header_crc32"] == blob.HEADER_CRC_BYTES


@pytest.mark.parametrize("cpu", ["cortex-m4", "cortex-m7"])
def test_the_layout_and_an_export_compile_for_cortex_m_with_the_same_offsets(arm_gcc, trained, cpu, tmp_path, capsys):
    """The ARM EABI lays the structs out as the host does: every offset asserted at compile
    time, and the exported image's size by its own check (sizeof(image) == bytes)."""
    lines = compile_time_checks("el_model_format.h", blob.LAYOUTS)
    (tmp_path / "layout.c").write_text("\n".join(lines) + "\n")
    _export(capsys, trained, "c", tmp_path / "small", "--calibration-images", "64")
    for source in (tmp_path / "layout.c", tmp_path / "small.c", *SOURCES):
        cmd = [arm_gcc, f"-mcpu={cpu}", "-mthumb", *STRICT, f"-I{FIRMWARE / 'include'}", f"-I{tmp_path}", "-c",
               str(source), "-o", str(tmp_path / (source.stem + ".o"))]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr


def test_crc32_in_c_is_zlibs(gcc, tmp_path):
    source = tmp_path / "crc.c"
    source.write_text('#include <stdio.h>\n#include "el_model.h"\n'
                      'int main(void) { static uint8_t b[1000]; unsigned i;\n'
                      '  for (i = 0; i < sizeof b; ++i) b[i] = (uint8_t)(i * 7u + 3u);\n'
                      '  printf("%08lx %08lx\\n", (unsigned long)el_crc32(b, sizeof b), (unsigned long)el_crc32(b, 0));'
                      '  return 0; }\n')
    tool = _compile(gcc, tmp_path / "crc", source, SOURCES[1])
    data = bytes((i * 7 + 3) & 0xFF for i in range(1000))
    printed = subprocess.run([str(tool)], capture_output=True, text=True, check=True).stdout.split()
    assert printed == [f"{zlib.crc32(data):08x}", f"{zlib.crc32(b''):08x}"]


# ------------------------------------------------------------------ the exported model
@pytest.mark.shared(VWW_DIR)
def test_vww_c_export_compiles_strictly_holds_the_blob_bytes_and_prints_as_python(gcc, dump_tool, tmp_path, capsys):
    model = VWW_DIR / "vww_96_int8.tflite"
    blob_result = _export(capsys, model, "blob", tmp_path / "vww.bin", "--train-last", "2")
    c_result = _export(capsys, model, "c", tmp_path / "vww.c", "--train-last", "2")
    data = (tmp_path / "vww.bin").read_bytes()
    assert blob_result["bytes"] == c_result["bytes"] == len(data)
    assert c_result["symbol"] == "el_model_vww" and blob_result["trainable_ops"] == [[23, 24], [25, 26]]
    header = (tmp_path / "vww.h").read_text()
    assert f"#define EL_MODEL_VWW_ARENA_BYTES {blob_result['arena_bytes']}u" in header

    linked = _compile(gcc, tmp_path / "dump_linked", FIRMWARE / "tools" / "el_model_dump.c", *SOURCES,
                      tmp_path / "vww.c", flags=[f"-I{tmp_path}", "-include", "vww.h", "-DEL_DUMP_IMAGE=el_model_vww",
                                                 "-DEL_DUMP_BYTES=EL_MODEL_VWW_BYTES"])
    raw = tmp_path / "raw.bin"
    from_c = subprocess.run([str(linked), str(raw)], capture_output=True, text=True, check=True).stdout
    assert raw.read_bytes() == data                     # the const struct is the blob, byte for byte
    from_file = _dump(dump_tool, tmp_path / "vww.bin")
    assert from_file.returncode == 0, from_file.stderr
    assert from_c == from_file.stdout == blob.describe_image(data)
    assert "tail blocks=2 classes=2 waveform=1 temperature=0x3f000000 classifier_op=29" in from_c


def test_records_hold_what_the_python_runtime_prepares(trained, tmp_path, capsys):
    _export(capsys, trained, "blob", tmp_path / "m.bin", "--calibration-images", "64")
    data = (tmp_path / "m.bin").read_bytes()
    _export(capsys, trained, "tflite", tmp_path / "m.tflite", "--precision", "int8", "--calibration-images", "64")
    program = read_tflite(tmp_path / "m.tflite")
    image = blob.open_image(data)
    graph = prepare(program, batch=1, fast=False, requantize="tflm")
    plan = plan_program(program)
    assert image["header"]["arena_bytes"] == plan.arena_bytes
    opcodes = {op.opcode for op in program.operators}
    assert {"CONV_2D", "LEAKY_RELU", "MAX_POOL_2D", "FULLY_CONNECTED"} <= opcodes
    for op, entry in zip(program.operators, image["ops"]):
        record, p = entry["record"], graph.params[op.index]
        assert blob.OPCODE_NAMES[entry["opcode"]] == op.opcode
        assert (record["input"], record["output"]) == (op.inputs[0], op.outputs[0])
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            channels = p.bias.size
            arrays = {name: np.frombuffer(data, np.dtype(code).newbyteorder("<"), channels, record[name])
                      for name, code in (("bias", "i4"), ("multiplier", "i4"), ("shift", "i4"))}
            np.testing.assert_array_equal(arrays["bias"], p.bias)
            np.testing.assert_array_equal(arrays["multiplier"], p.quant.multiplier)
            np.testing.assert_array_equal(arrays["shift"], p.quant.shift)
            w = program.tensors[op.inputs[1]].data
            np.testing.assert_array_equal(np.frombuffer(data, np.int8, w.size, record["weights"]), w.reshape(-1))
            assert record["input_offset"] == p.input_offset and record["output_offset"] == p.output_offset
            assert (record["act_min"], record["act_max"]) == p.activation
        elif op.opcode == "LEAKY_RELU":
            assert (record["identity_multiplier"], record["identity_shift"], record["alpha_multiplier"],
                    record["alpha_shift"]) == (p.identity_multiplier, p.identity_shift, p.alpha_multiplier,
                                               p.alpha_shift)
        for role in ("input", "output"):
            tensor = image["tensors"][record[role]]
            assert tensor["offset"] == plan.offsets[record[role]]
            assert tensor["offset"] + tensor["bytes"] <= plan.arena_bytes


@pytest.mark.shared(VWW_DIR)
def test_the_tail_carries_the_lls_heads_basis_as_the_host_trainer_builds_it():
    program = read_tflite(VWW_DIR / "vww_96_int8.tflite")
    tail = trainable_tail(program, 2, waveform="square", temperature=0.5)
    image = blob.open_image(blob.build_image(program, tail).data)
    assert image["tail"]["block_count"] == 2 and image["tail"]["num_classes"] == 2
    for block, row in zip(tail.blocks, image["tail"]["blocks"]):
        shape = program.tensors[block.output].shape[1:]
        head = ProjectionHead("h", shape, block.pool_size, 2, waveform="square", temperature=0.5)
        np.testing.assert_array_equal(block.basis, head.basis)      # the trainer's own head, NHWC columns
        assert row["feature_dim"] == head.dim and row["output"] == block.output


def test_the_small_model_exports_as_c_that_compiles_and_matches(gcc, trained, dump_tool, tmp_path, capsys):
    result = _export(capsys, trained, "c", tmp_path / "small", "--calibration-images", "64")
    assert Path(result["source"]).name == "small.c" and Path(result["header"]).name == "small.h"
    linked = _compile(gcc, tmp_path / "dump_small", FIRMWARE / "tools" / "el_model_dump.c", *SOURCES,
                      tmp_path / "small.c", flags=[f"-I{tmp_path}", "-include", "small.h",
                                                   "-DEL_DUMP_IMAGE=el_model_small",
                                                   "-DEL_DUMP_BYTES=EL_MODEL_SMALL_BYTES", *SANITIZE])
    raw = tmp_path / "raw.bin"
    printed = subprocess.run([str(linked), str(raw)], capture_output=True, text=True, check=True).stdout
    assert printed == blob.describe_image(raw.read_bytes())
    assert printed.count("\nop ") == result["operators"]


# ------------------------------------------------------------------ bad models, bad images
def test_what_the_image_cannot_hold_is_one_line_exit_2(trained, tmp_path, capsys):
    fp32 = tmp_path / "f.tflite"
    _export(capsys, trained, "tflite", fp32, "--precision", "fp32")
    cases = [
        (["export", str(trained), "--format", "blob", "--out", str(tmp_path / "a.bin"), "--precision", "fp32"],
         "int8"),
        (["export", str(fp32), "--format", "c", "--out", str(tmp_path / "a.c")], "own precision"),
        (["export", str(trained), "--format", "tflite", "--out", str(tmp_path / "a.tflite"), "--train-last", "1"],
         "--train-last"),
        (["export", str(trained), "--format", "blob", "--out", str(tmp_path / "no" / "a.bin")], "does not exist"),
        (["export", str(trained), "--format", "blob", "--out", str(tmp_path / "a.bin"), "--waveform", "saw"],
         "--waveform"),
    ]
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and needle in err and "Traceback" not in err, err
    assert not any(p.name.startswith("a.") or p.suffix == ".tmp" for p in tmp_path.iterdir())


def test_an_op_without_a_firmware_kernel_is_named():
    from edge_lls.program.ir import I8, Builder, Program
    b = Builder()
    x = b.tensor("x", (1, 4), I8, scales=0.1, zero_points=0)
    y = b.tensor("y", (1, 4), I8, scales=0.1, zero_points=0)
    out = b.tensor("out", (1, 4), I8, scales=0.2, zero_points=0)
    b.op("ADD", [x, y], [out], activation="NONE")
    with pytest.raises(ConfigError, match=r"op 0 \(ADD\) has no firmware kernel"):
        blob.build_image(Program(b.tensors, b.operators, (x,), (out,), name="add"))


def _mutations(data: bytes, count: int, seed: int):
    """Truncations, bit flips and field overwrites, some with both CRCs recomputed so the
    structural checks behind them are reached too."""
    rng = np.random.default_rng(seed)
    header = blob.HEADER.offsets()
    for i in range(count):
        b = bytearray(data)
        kind = i % 4
        if kind == 0:
            b = b[:int(rng.integers(0, len(b)))]
        elif kind == 1:
            at = int(rng.integers(0, len(b)))
            b[at] ^= 1 << int(rng.integers(0, 8))
        else:                                     # a 4-byte field in the tables or records, CRCs made valid
            limit = min(len(b), 4096 if kind == 2 else len(b)) - 4
            at = int(rng.integers(4, limit)) & ~3
            value = int(rng.choice([0, 1, 0xFFFFFFFF, 0x7FFFFFFF, len(b), len(b) - 16, int(rng.integers(0, 1 << 32))]))
            b[at:at + 4] = value.to_bytes(4, "little")
            if len(b) >= 64:
                payload = zlib.crc32(bytes(b[64:])) & 0xFFFFFFFF
                b[header["payload_crc32"]:header["payload_crc32"] + 4] = payload.to_bytes(4, "little")
                crc = zlib.crc32(bytes(b[:60])) & 0xFFFFFFFF
                b[60:64] = crc.to_bytes(4, "little")
        yield bytes(b)


def test_c_and_python_readers_reject_the_same_corrupted_images(trained, dump_tool, tmp_path, capsys):
    _export(capsys, trained, "blob", tmp_path / "m.bin", "--calibration-images", "64")
    data = (tmp_path / "m.bin").read_bytes()
    accepted = rejected = 0
    for i, mutated in enumerate(_mutations(data, 160, seed=11)):
        path = tmp_path / f"x{i}.bin"
        path.write_bytes(mutated)
        try:
            expected = blob.describe_image(mutated, str(path))
        except FormatError as e:
            expected = None
            assert str(e).startswith(str(path)) and "\n" not in str(e)
        result = _dump(dump_tool, path)
        assert "runtime error" not in result.stderr and "AddressSanitizer" not in result.stderr, result.stderr
        if expected is None:
            assert result.returncode == 1 and result.stderr.startswith("el_model_dump: "), (i, result.stderr)
            rejected += 1
        else:
            assert i % 4 >= 2, f"mutation {i} (a truncation or bit flip) was not caught"
            assert result.returncode == 0 and result.stdout == expected, (i, result.stderr)
            accepted += 1
        path.unlink()
    # Every truncation and bit flip is caught (the CRCs); a field rewritten with valid CRCs is
    # caught when it breaks a bound, and loads when it stays in range (a zero point, a weight).
    assert rejected >= 80 and accepted > 0


def _with_crcs(b: bytearray) -> bytes:
    header = blob.HEADER.offsets()
    b[header["payload_crc32"]:header["payload_crc32"] + 4] = (zlib.crc32(bytes(b[64:])) & 0xFFFFFFFF).to_bytes(4, "little")
    b[60:64] = (zlib.crc32(bytes(b[:60])) & 0xFFFFFFFF).to_bytes(4, "little")
    return bytes(b)


def test_filter_dims_whose_product_wraps_64_bits_are_rejected_by_both_readers(trained, dump_tool, tmp_path, capsys):
    # 2^16 x 2^16 x 2^16 x 2^16 = 2^64: a uint64_t product of four corrupt dims wraps to 0,
    # and 0 weights "fit" anywhere; both readers must count exactly (or saturate) and refuse.
    _export(capsys, trained, "blob", tmp_path / "m.bin", "--calibration-images", "64")
    data = bytearray((tmp_path / "m.bin").read_bytes())
    image = blob.open_image(bytes(data))
    conv = next(e for e in image["ops"] if e["opcode"] == blob.OPCODES["CONV_2D"][0])
    at = conv["record_offset"] + blob.CONV.offsets()["filter_dims"]
    data[at:at + 16] = struct.pack("<4i", *[1 << 16] * 4)
    path = tmp_path / "wrapped.bin"
    path.write_bytes(_with_crcs(data))
    with pytest.raises(FormatError):
        blob.open_image(path.read_bytes(), str(path))
    result = _dump(dump_tool, path)
    assert result.returncode == 1 and result.stderr.startswith("el_model_dump: "), result.stderr


def test_an_image_without_constant_arrays_exports_as_c_of_its_exact_size(gcc, dump_tool, tmp_path):
    # A lone pooling op: no 16-byte aligned array member makes the struct 16-byte aligned,
    # so the header member carries the alignment and sizeof covers the final padding.
    from edge_lls.program.ir import I8, Builder, Program
    b = Builder()
    x = b.tensor("x", (1, 4, 4, 1), I8, scales=0.1, zero_points=0)
    y = b.tensor("y", (1, 2, 2, 1), I8, scales=0.1, zero_points=0)
    b.op("AVERAGE_POOL_2D", [x], [y], padding="VALID", stride_h=2, stride_w=2, filter_h=2, filter_w=2,
         activation="NONE")
    image = blob.build_image(Program(b.tensors, b.operators, (x,), (y,), name="pool"))
    assert len(image.data) % 16 == 0 and image.members and all(m.array is None for m in image.members)
    header, source = blob.c_source(image, "pool", "pool.h")
    (tmp_path / "pool.h").write_text(header)
    (tmp_path / "pool.c").write_text(source)
    linked = _compile(gcc, tmp_path / "dump_pool", FIRMWARE / "tools" / "el_model_dump.c", *SOURCES,
                      tmp_path / "pool.c", flags=[f"-I{tmp_path}", "-include", "pool.h", "-DEL_DUMP_IMAGE=el_model_pool",
                                                  "-DEL_DUMP_BYTES=EL_MODEL_POOL_BYTES"])
    raw = tmp_path / "raw.bin"
    printed = subprocess.run([str(linked), str(raw)], capture_output=True, text=True, check=True).stdout
    assert raw.read_bytes() == image.data and printed == blob.describe_image(image.data)

"""Thousands of corrupted model files, fed to every edge-lls reader.

Each reader must answer a damaged file with exactly one clear error, an EdgeLLSError whose
message is one line naming the file, and with nothing else: no IndexError, struct.error,
UnicodeDecodeError, numpy ValueError, MemoryError, RecursionError, no hang, no huge
allocation. A damaged file that still reads is fine only when what it holds is usable: the
program it gives loads and runs one input, the model it gives runs forward, the image it
gives prints. The readers:

    edge_lls.formats.tflite.read_tflite(path)     then interpreter.load_tflite + one run
    edge_lls.formats.model_file.load_model(path)  then Model.forward on one input
    edge_lls.formats.blob.open_image(data, where) then describe_image
    edge-lls info PATH                            exit 2 and one stderr line, or exit 0

Seeds are built here: a tiny SmallConv (4/8/8 filters, a few KB per file, so most damage
lands in structure rather than in weights) and the zoo SmallConv, as .ells, float and int8
.tflite and the firmware image (the tiny one also with an LLS tail); plus the VWW models
from ../shared when present. Mutations (seeded numpy RNG, every case reproducible from its
seed and index): truncations, bit flips, byte overwrites, 4-byte words overwritten with
huge, negative, size-relative or in-file offset values (these hit offsets and lengths),
duplicated and deleted chunks, most of them aimed at structure bytes rather than at tensor
data; for the checksummed formats (.ells, blob) half of them with the CRC-32s recomputed so
the checks behind the checksums are reached too, and for .ells edits of the JSON header
itself (values replaced by huge, negative, wrong-typed or deeply nested ones).

The default run is about ten thousand cases in half a minute; `-m long` adds a sweep of
71,000 more on the tiny seeds (under two minutes).
"""
from __future__ import annotations

import contextlib
import json
import resource
import signal
import struct
import sys
import time
import traceback
import warnings
import zlib
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from conftest import VWW_DIR
from edge_lls.cli import main
from edge_lls.errors import EdgeLLSError, FormatWarning
from edge_lls.formats import blob
from edge_lls.formats import model_file as mf
from edge_lls.formats.onnx_import import load_onnx
from edge_lls.formats.tflite import read_tflite
from edge_lls.models import build_model, model_spec
from edge_lls.nn.model import Model
from edge_lls.program.interpreter import load_tflite

SEED = 20261202
CASE_SECONDS = 10.0            # one case (read, load and run) taking longer is a hang
RSS_GROWTH_LIMIT = 1 << 30     # the whole sweep may not raise the peak resident size by more
RUN_LIMIT_VALUES = 1 << 20     # a damaged .ells that loads is run when no activation is larger


# ------------------------------------------------------------------------------ seeds
def _tiny_spec() -> dict:
    spec = model_spec("smallconv", 10, (8, 8, 1))
    for block, filters in zip(spec["blocks"], (4, 8, 8)):
        block["filters"] = filters
    spec["blocks"][3].update(units=16, pool_size=16)
    return spec


def _export(model: Path, fmt: str, out: Path, *extra: str) -> Path:
    assert main(["export", str(model), "--format", fmt, "--out", str(out), *extra]) == 0
    return out


def _tiny_tail(program) -> blob.Tail:
    """An LLS tail on the tiny int8 program's dense block (FULLY_CONNECTED + LEAKY_RELU)."""
    ops = [op.index for op in program.operators]
    fc, act, classifier = ops[-3], ops[-2], ops[-1]
    output = program.operators[act].outputs[0]
    width = program.tensors[output].shape[-1]
    basis = np.linspace(-1, 1, 10 * width, dtype=np.float32).reshape(10, width)
    return blob.Tail((blob.TailBlock("dense", (fc, act), output, 1, basis),), 10, "square", 0.5, classifier)


@pytest.fixture(scope="module")
def seeds(tmp_path_factory) -> dict[str, Path]:
    return build_seeds(tmp_path_factory.mktemp("fuzz_seeds"))


def build_seeds(folder: Path) -> dict[str, Path]:
    int8 = ("--precision", "int8", "--dataset", "digits", "--calibration-images", "32")
    out = {}
    for tag, model in (("tiny", Model(_tiny_spec(), seed=0)), ("smallconv", build_model("smallconv", 10, (8, 8, 1)))):
        ells = out[f"{tag}.ells"] = folder / f"{tag}.ells"
        mf.save_model(ells, model, {"rule": {"rule": "lls"}, "precision": "fp32", "dataset": {"name": "digits"}})
        out[f"{tag}_f32.tflite"] = _export(ells, "tflite", folder / f"{tag}_f32.tflite")
        out[f"{tag}_int8.tflite"] = _export(ells, "tflite", folder / f"{tag}_int8.tflite", *int8)
        out[f"{tag}.bin"] = _export(ells, "blob", folder / f"{tag}.bin", *int8[2:])
        out[f"{tag}.onnx"] = _export(ells, "onnx", folder / f"{tag}.onnx")
    program = read_tflite(out["tiny_int8.tflite"])
    tailed = out["tiny_tail.bin"] = folder / "tiny_tail.bin"
    tailed.write_bytes(blob.build_image(program, _tiny_tail(program)).data)
    for path in out.values():                     # every seed is valid to begin with
        assert _read_any(path) is not None, path
    return out


def _read_any(path: Path):
    if path.suffix == ".tflite":
        return read_tflite(path)
    if path.suffix == ".ells":
        return mf.load_model(path)
    if path.suffix == ".onnx":
        return load_onnx(path)
    return blob.open_image(path.read_bytes(), str(path))


# ------------------------------------------------------------------- where damage matters
def _tflite_structure(data: bytes) -> np.ndarray:
    """Byte positions outside every buffer's data: the flatbuffer's tables, vectors, strings."""
    import tflite
    model = tflite.Model.GetRootAs(data, 0)
    inside = np.zeros(len(data), bool)
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength():
            start = buffer._tab.Vector(4)
            inside[start:start + buffer.DataLength()] = True
    return np.flatnonzero(~inside)


def _ells_structure(data: bytes) -> np.ndarray:
    """The preamble, the JSON header and the first bytes of every tensor."""
    length = struct.unpack_from("<I", data, 8)[0]
    header = json.loads(data[16:16 + length])
    start = -(-(16 + length) // 64) * 64
    spots = [np.arange(16 + length)]
    for e in header["tensors"]:
        spots.append(start + e["offset"] + np.arange(min(e["nbytes"], 8)))
    return np.concatenate(spots)


def _blob_structure(data: bytes) -> np.ndarray:
    """Header, tables, records, tail: everything but the constant arrays."""
    image = blob.open_image(data)
    inside = np.zeros(len(data), bool)
    for op in image["ops"]:
        record = op["record"]
        for name, code, count_of in blob.ARRAYS.get(blob.OPCODES[blob.OPCODE_NAMES[op["opcode"]]][1].name, ()):
            inside[record[name]:record[name] + count_of(record) * struct.calcsize(code)] = True
    for t in image["tensors"]:
        if t["flags"] & blob.TENSOR_CONSTANT:
            inside[t["offset"]:t["offset"] + t["bytes"]] = True
    if image["tail"] is not None:
        for b in image["tail"]["blocks"]:
            n = image["tail"]["num_classes"] * b["feature_dim"]
            inside[b["basis"]:b["basis"] + 4 * n] = True
    return np.flatnonzero(~inside)


def _onnx_structure(data: bytes) -> np.ndarray:
    """Everything but the initializers' raw weight bytes: the protobuf tags, lengths, names,
    attributes and shapes that the reader interprets."""
    import onnx
    inside = np.zeros(len(data), bool)
    for tensor in onnx.load_from_string(data).graph.initializer:
        raw = tensor.raw_data
        start = data.find(raw) if len(raw) >= 16 else -1
        if start >= 0:
            inside[start:start + len(raw)] = True
    return np.flatnonzero(~inside)


# ------------------------------------------------------------------------- mutations
def _words(n: int, rng) -> list[int]:
    """Values for a 4-byte field: huge, negative, size-relative, an offset inside the file."""
    return [0, 1, 2, 4, 0x7F, 0x80, 0xFF, 0xFFFF, 0x10000, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 0xFFFFFFFE,
            0xFFFFFFFC, 0xFFFFFF80, n, n + 1, n - 1, n - 4, n // 2, int(rng.integers(0, max(n, 1))),
            int(rng.integers(0, 1 << 32)), int(rng.integers(0, 64)), *FLOAT_WORDS]


# float32 bit patterns: huge, tiny, subnormal, negative, NaN, infinite (scales, alpha, beta)
FLOAT_WORDS = tuple(struct.unpack("<I", struct.pack("<f", v))[0]
                    for v in (3e38, -3e38, 1e30, 1e-30, 1e-40, -1.0, 0.5, 65504.0, float("nan"), float("inf")))


def _position(rng, n: int, hot: np.ndarray, width: int = 1) -> int:
    if len(hot) and rng.random() < 0.8:
        at = int(hot[rng.integers(len(hot))])
    else:
        at = int(rng.integers(0, n))
    return max(0, min(at, n - width))


def _mutate(data: bytes, rng, hot: np.ndarray, header_bytes: int) -> tuple[bytes, str]:
    """One random corruption of data: (damaged bytes, what was done)."""
    n = len(data)
    b = bytearray(data)
    kind = str(rng.choice(["truncate", "flip", "flips", "bytes", "word", "word", "word", "duplicate", "delete"]))
    if kind == "truncate":
        cut = int(rng.choice([0, 1, 4, 8, header_bytes - 1, header_bytes, int(rng.integers(0, n)),
                              int(rng.integers(0, n)), n - 1]))
        return bytes(b[:max(cut, 0)]), f"truncate to {cut}"
    if kind in ("flip", "flips"):
        count = 1 if kind == "flip" else int(rng.integers(2, 9))
        spots = []
        for _ in range(count):
            at = _position(rng, n, hot)
            bit = int(rng.integers(0, 8))
            b[at] ^= 1 << bit
            spots.append(f"{at}.{bit}")
        return bytes(b), "flip " + ",".join(spots)
    if kind == "bytes":
        width = int(rng.integers(1, 9))
        at = _position(rng, n, hot, width)
        fill = int(rng.choice([0x00, 0xFF, -1]))
        b[at:at + width] = bytes(width) if fill == 0 else b"\xff" * width if fill == 0xFF else \
            rng.integers(0, 256, width, dtype=np.uint8).tobytes()
        return bytes(b), f"overwrite {width} bytes at {at} with {fill:#x}"
    if kind == "word":
        at = _position(rng, n, hot, 4)
        if rng.random() < 0.75:
            at &= ~3
        value = int(rng.choice(_words(n, rng))) & 0xFFFFFFFF
        b[at:at + 4] = value.to_bytes(4, "little")
        return bytes(b), f"word {value:#x} at {at}"
    start = _position(rng, n, hot)
    length = int(rng.integers(1, min(256, max(n - start, 1)) + 1))
    if kind == "duplicate":
        at = int(rng.integers(0, n + 1))
        chunk = bytes(b[start:start + length])
        return bytes(b[:at]) + chunk + bytes(b[at:]), f"duplicate {length} bytes from {start} at {at}"
    del b[start:start + length]
    return bytes(b), f"delete {length} bytes at {start}"


def _fix_blob_crcs(b: bytes) -> bytes:
    """Both CRC-32s recomputed (as a writer would), so the checks behind them are reached."""
    if len(b) < blob.HEADER.size:
        return b
    b = bytearray(b)
    at = blob.HEADER.offsets()["payload_crc32"]
    b[at:at + 4] = blob.crc32(bytes(b[blob.HEADER.size:])).to_bytes(4, "little")
    b[blob.HEADER_CRC_BYTES:blob.HEADER.size] = blob.crc32(bytes(b[:blob.HEADER_CRC_BYTES])).to_bytes(4, "little")
    return bytes(b)


def _fix_ells_header_crc(b: bytes) -> bytes:
    """The header CRC-32 recomputed over the header length the preamble states."""
    if len(b) < 16:
        return b
    length = struct.unpack_from("<I", b, 8)[0]
    if 16 + length > len(b):
        return b
    return b[:12] + struct.pack("<I", zlib.crc32(b[16:16 + length])) + b[16:]


# ------------------------------------------------------------------- .ells header edits
def _nasty_values(rng) -> list:
    deep = []
    for _ in range(int(rng.integers(2, 40))):
        deep = [deep]
    return [-1, 0, 1, 3, 2 ** 31, 2 ** 32 + 1, 2 ** 63, 2 ** 64 + 3, -2 ** 63, 10 ** 30, 1.5, -0.0, float("nan"),
            float("inf"), "", "x", "float32", "int8", "object", None, True, False, [], {}, [1, 2], [0] * 3,
            [2 ** 40, 0], [1] * 40, {"x": 1}, deep, "\n\u2028" * 3, "a" * 10_000]


def _leaves(value, path=()):
    yield path, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, path + (k,))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, path + (i,))


def _ells_parts(data: bytes) -> tuple[dict, bytes]:
    length = struct.unpack_from("<I", data, 8)[0]
    start = -(-(16 + length) // 64) * 64
    return json.loads(data[16:16 + length]), data[start:]


def _ells_with_header(text: bytes, tensor_data: bytes) -> bytes:
    pad = b"\0" * (-(16 + len(text)) % 64)
    return struct.pack("<4sIII", mf.MAGIC, 2, len(text), zlib.crc32(text)) + text + pad + tensor_data


def _mutate_ells_header(data: bytes, rng) -> tuple[bytes, str]:
    """The JSON header edited and re-checksummed: a value replaced, a key dropped, a list
    element repeated, or raw text a JSON writer would not produce."""
    header, tensor_data = _ells_parts(data)
    kind = str(rng.choice(["replace", "replace", "replace", "drop", "repeat", "text"]))
    if kind == "text":
        text = json.dumps(header, separators=(",", ":"))
        numbers = [i for i, c in enumerate(text) if c.isdigit() and not text[i - 1].isdigit()]
        special = str(rng.choice(["digits", "nesting", "nul", "surrogate"]))
        at = numbers[int(rng.integers(len(numbers)))]
        end = at
        while text[end].isdigit():
            end += 1
        insert = {"digits": "9" * 5000, "nesting": "[" * 100_000 + "]" * 100_000, "nul": '"\\u0000"',
                  "surrogate": '"\\ud800"'}[special]
        damaged = _ells_with_header((text[:at] + insert + text[end:]).encode(), tensor_data)
        return damaged, f"header text {special} at {at}"
    leaves = [(p, v) for p, v in _leaves(header) if p]
    path, _ = leaves[int(rng.integers(len(leaves)))]
    parent = header
    for key in path[:-1]:
        parent = parent[key]
    key = path[-1]
    if kind == "drop" and isinstance(parent, dict):
        del parent[key]
    elif kind == "repeat" and isinstance(parent, list):
        parent.insert(key, parent[key])
    else:
        values = _nasty_values(rng)
        parent[key] = values[int(rng.integers(len(values)))]
        kind = f"replace with {parent[key]!r:.40}"
    text = json.dumps(header, separators=(",", ":")).encode()
    return _ells_with_header(text, tensor_data), f"header {kind} at {'/'.join(map(str, path))}"


def _mutate_ells_tensor(data: bytes, rng) -> tuple[bytes, str]:
    """Tensor bytes changed and their CRC-32 updated: a valid file holding other weights
    (NaN, inf, huge values included)."""
    header, tensor_data = _ells_parts(data)
    e = header["tensors"][int(rng.integers(len(header["tensors"])))]
    if not e["nbytes"]:
        return data, "no change"
    raw = bytearray(tensor_data)
    at = e["offset"] + int(rng.integers(0, e["nbytes"] // 4)) * 4
    value = [np.float32(np.nan), np.float32(np.inf), np.float32(-1e38), np.float32(0)][int(rng.integers(4))]
    raw[at:at + 4] = value.tobytes()
    e["crc32"] = zlib.crc32(bytes(raw[e["offset"]:e["offset"] + e["nbytes"]]))
    text = json.dumps(header, separators=(",", ":")).encode()
    return _ells_with_header(text, bytes(raw)), f"tensor {e['name']} value {value} at {at}"


# ----------------------------------------------------------------------------- oracles
class _Hang(BaseException):
    pass


@contextlib.contextmanager
def _deadline(seconds: float):
    """Interrupt a case that runs longer than seconds (a hang), where signals allow it."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def expire(signum, frame):
        raise _Hang(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


class Sweep:
    """Counts of outcomes and every problem, reported together at the end."""

    def __init__(self):
        self.counts: Counter = Counter()
        self.problems: list[str] = []
        self.slowest = (0.0, "")

    def call(self, step: str, case: str, path: Path, fn):
        """fn() -> (True, result), or (False, None) after a clean EdgeLLSError; any other
        outcome is recorded as a problem."""
        started = time.perf_counter()
        try:
            with _deadline(CASE_SECONDS), warnings.catch_warnings():
                warnings.simplefilter("ignore", FormatWarning)
                warnings.simplefilter("ignore", RuntimeWarning)   # NaN weights are content
                result = fn()
        except EdgeLLSError as e:
            message = str(e)
            if "\n" in message or "\r" in message:
                self.problems.append(f"{case}: {step}: multi-line message {message!r:.300}")
            elif path.name not in message:
                self.problems.append(f"{case}: {step}: message does not name {path.name}: {message!r:.300}")
            self.counts[f"{step} refused"] += 1
            return False, None
        except (Exception, _Hang) as e:           # the oracle: anything else is a reader bug
            where = traceback.extract_tb(e.__traceback__)[-1]
            self.problems.append(f"{case}: {step}: {type(e).__name__}: {str(e)[:200]} "
                                 f"(at {Path(where.filename).name}:{where.lineno} {where.name})")
            return False, None
        finally:
            spent = time.perf_counter() - started
            if spent > self.slowest[0]:
                self.slowest = (spent, f"{case}: {step}")
        self.counts[f"{step} accepted"] += 1
        return True, result

    def check(self):
        summary = ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        assert not self.problems, f"{len(self.problems)} problems ({summary}):\n" + "\n".join(self.problems[:25])
        return summary


def _run_program(graph) -> None:
    inputs = []
    for detail in graph.input_details:
        shape, dtype = tuple(detail["shape"]), np.dtype(detail["dtype"])
        info = np.iinfo(dtype) if dtype.kind in "iu" else None
        values = np.random.default_rng(0).integers(info.min, info.max, shape, endpoint=True) if info \
            else np.random.default_rng(0).random(shape)
        inputs.append(values.astype(dtype))
    for output in graph.run(inputs):
        assert output.shape is not None


def _check_tflite(sweep: Sweep, case: str, path: Path) -> bool:
    ok, program = sweep.call("read_tflite", case, path, lambda: read_tflite(path))
    if not ok:
        return False
    ok, graph = sweep.call("load_tflite", case, path, lambda: load_tflite(path))
    if ok:
        sweep.call("run", case, path, lambda: _run_program(graph))
    return True


def _check_ells(sweep: Sweep, case: str, path: Path) -> bool:
    ok, loaded = sweep.call("load_model", case, path, lambda: mf.load_model(path))
    if not ok:
        return False
    model, _ = loaded
    stages, classifier_input = model.stage_shapes(1)
    largest = max([int(np.prod(s)) for stage in stages for s in stage] + [int(np.prod(classifier_input))])
    if largest <= RUN_LIMIT_VALUES:
        sweep.call("forward", case, path, lambda: _forward(model))
    else:                  # valid, and large: the reader's limits are far above this sweep's
        sweep.counts["forward skipped (large)"] += 1
    return True


def _forward(model) -> None:
    x = np.random.default_rng(0).random((1, *model.input_shape), dtype=np.float32)
    logits = model.forward(x)
    assert logits.shape == (1, model.num_classes)


def _check_blob(sweep: Sweep, case: str, path: Path) -> bool:
    data = path.read_bytes()
    ok, _ = sweep.call("open_image", case, path, lambda: blob.open_image(data, str(path)))
    if ok:
        sweep.call("describe_image", case, path, lambda: blob.describe_image(data, str(path)))
    return ok


def _check_onnx(sweep: Sweep, case: str, path: Path) -> bool:
    ok, loaded = sweep.call("load_onnx", case, path, lambda: load_onnx(path))
    if ok:
        model, _ = loaded
        stages, classifier_input = model.stage_shapes(1)
        largest = max([int(np.prod(s)) for stage in stages for s in stage] + [int(np.prod(classifier_input))])
        if largest <= RUN_LIMIT_VALUES:
            sweep.call("forward", case, path, lambda: _forward(model))
        else:
            sweep.counts["forward skipped (large)"] += 1
    return ok


CHECKS = {".tflite": _check_tflite, ".ells": _check_ells, ".bin": _check_blob, ".onnx": _check_onnx}
# header bytes: the truncation points of interest (ONNX: the ir_version field, tag and varint)
HEADER_BYTES = {".tflite": 8, ".ells": 16, ".bin": blob.HEADER.size, ".onnx": 2}
STRUCTURE = {".tflite": _tflite_structure, ".ells": _ells_structure, ".bin": _blob_structure,
             ".onnx": _onnx_structure}


def _cases(seed_path: Path, count: int, salt: int):
    """(case name, damaged bytes) for one seed file, reproducible from (SEED, salt, index)."""
    data = seed_path.read_bytes()
    suffix = seed_path.suffix
    hot = STRUCTURE[suffix](data)
    for i in range(count):
        rng = np.random.default_rng([SEED, salt, i])
        if suffix == ".ells" and i % 4 == 3:
            damaged, what = (_mutate_ells_header if rng.random() < 0.8 else _mutate_ells_tensor)(data, rng)
        else:
            damaged, what = _mutate(data, rng, hot, HEADER_BYTES[suffix])
            if suffix == ".bin" and i % 2:
                damaged, what = _fix_blob_crcs(damaged), what + " (CRCs fixed)"
            elif suffix == ".ells" and i % 4 == 1:
                damaged, what = _fix_ells_header_crc(damaged), what + " (header CRC fixed)"
        yield f"{seed_path.name} #{i} [{what}]", damaged


def _sweep(seed_paths: list[Path], counts: list[int], folder: Path, salt: int = 0, info_every: int = 0,
           capsys=None) -> Sweep:
    """Every case of every seed through its reader's checks; with info_every, `edge-lls info`
    too, on each damaged file that still reads and on every info_every-th other one."""
    sweep = Sweep()
    rss_before = _peak_rss()
    for k, (seed_path, count) in enumerate(zip(seed_paths, counts)):
        check = CHECKS[seed_path.suffix]
        path = folder / f"damaged{seed_path.suffix}"
        for i, (case, damaged) in enumerate(_cases(seed_path, count, salt + k)):
            path.write_bytes(damaged)
            readable = check(sweep, case, path)
            sweep.counts["cases"] += 1
            if info_every and (readable or i % info_every == 0):
                _check_info(sweep, case, path, readable, capsys)
    growth = _peak_rss() - rss_before
    assert growth < RSS_GROWTH_LIMIT, f"the sweep raised the peak resident size by {growth / 2 ** 20:.0f} MB"
    return sweep


def _peak_rss() -> int:
    """This process's peak resident size in bytes (Linux counts KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def _check_info(sweep: Sweep, case: str, path: Path, readable: bool, capsys) -> None:
    """`edge-lls info` on the damaged file: exit 2 and one error line naming the file, or,
    when the reader accepted the file, exit 0 (info may still refuse header facts it
    prints, such as an unknown rule, and then says so the same way)."""
    capsys.readouterr()
    ok, code = sweep.call("info", case, path, lambda: main(["info", str(path)]))
    out, err = capsys.readouterr()
    if not ok:
        return
    errors = [line for line in err.splitlines() if not line.startswith("edge-lls: warning:")]
    if code == 0 and readable and not errors:
        sweep.counts["info exit 0"] += 1
    elif code == 2 and len(errors) == 1 and errors[0].startswith("edge-lls: error:") and path.name in errors[0]:
        sweep.counts["info exit 2"] += 1
    else:
        sweep.problems.append(f"{case}: info: exit {code} for a file the reader "
                              f"{'accepted' if readable else 'refused'}, stderr {err!r:.300}")


# ------------------------------------------------------------------------------- tests
def test_seeded_mutations_are_reproducible(seeds):
    a = [d for _, d in _cases(seeds["tiny_int8.tflite"], 20, 7)]
    b = [d for _, d in _cases(seeds["tiny_int8.tflite"], 20, 7)]
    assert a == b and len(set(a)) > 15


def test_damaged_tflite_files_each_give_one_clear_error(seeds, tmp_path):
    names = ["tiny_f32.tflite", "tiny_int8.tflite", "smallconv_f32.tflite", "smallconv_int8.tflite"]
    sweep = _sweep([seeds[n] for n in names], [1200, 1500, 300, 500], tmp_path)
    print(sweep.check(), f"slowest {sweep.slowest[0]:.2f} s")


def test_damaged_model_files_each_give_one_clear_error(seeds, tmp_path, capsys):
    sweep = _sweep([seeds["tiny.ells"], seeds["smallconv.ells"]], [2600, 400], tmp_path, salt=10, info_every=10,
                   capsys=capsys)
    print(sweep.check(), f"slowest {sweep.slowest[0]:.2f} s")


def test_damaged_model_images_each_give_one_clear_error(seeds, tmp_path, capsys):
    names = ["tiny.bin", "tiny_tail.bin", "smallconv.bin"]
    sweep = _sweep([seeds[n] for n in names], [1300, 1300, 300], tmp_path, salt=20, info_every=10, capsys=capsys)
    print(sweep.check(), f"slowest {sweep.slowest[0]:.2f} s")


def test_damaged_onnx_files_each_give_one_clear_error(seeds, tmp_path, capsys):
    sweep = _sweep([seeds["tiny.onnx"], seeds["smallconv.onnx"]], [1500, 300], tmp_path, salt=40, info_every=10,
                   capsys=capsys)
    print(sweep.check(), f"slowest {sweep.slowest[0]:.2f} s")


@pytest.mark.shared(VWW_DIR)
def test_damaged_vww_models_each_give_one_clear_error(tmp_path):
    from edge_lls.finetune import trainable_tail
    vww, person = VWW_DIR / "vww_96_int8.tflite", VWW_DIR / "person_detect.tflite"
    image = tmp_path / "vww.bin"
    program = read_tflite(vww)
    image.write_bytes(blob.build_image(program, trainable_tail(program, 2)).data)
    sweep = _sweep([vww, person, image], [150, 150, 250], tmp_path, salt=30)
    print(sweep.check(), f"slowest {sweep.slowest[0]:.2f} s")


@pytest.mark.long
def test_a_ten_times_larger_sweep_of_the_tiny_seeds(seeds, tmp_path, capsys):
    names = ["tiny_f32.tflite", "tiny_int8.tflite", "tiny.ells", "tiny.bin", "tiny_tail.bin"]
    sweep = _sweep([seeds[n] for n in names], [10000, 12000, 25000, 12000, 12000], tmp_path, salt=1000,
                   info_every=100, capsys=capsys)
    print(sweep.check(), f"slowest {sweep.slowest[0]:.2f} s")


# ------------------------------------------------------ what the sweeps found, one case each
def _expect_format_error(fn, path: Path, words: str) -> None:
    with pytest.raises(EdgeLLSError, match=words) as e:
        fn()
    assert "\n" not in str(e.value) and path.name in str(e.value), str(e.value)


def _root(data: bytes):
    import tflite
    return tflite.Model.GetRootAs(data, 0)


def _vtable(data: bytes, obj) -> int:
    """Where the vtable of a generated accessor object's table lies in data."""
    return obj._tab.Pos - struct.unpack_from("<i", data, obj._tab.Pos)[0]


def _field(data: bytes, obj, slot: int) -> int:
    """Where a generated accessor object's field (vtable slot) lies in data."""
    return obj._tab.Pos + struct.unpack_from("<H", data, _vtable(data, obj) + slot)[0]


def _vector(data: bytes, obj, slot: int) -> int:
    """Where the contents of a vector or string field start."""
    at = _field(data, obj, slot)
    return at + struct.unpack_from("<I", data, at)[0] + 4


def _patched(data: bytes, at: int, fmt: str, value) -> bytes:
    b = bytearray(data)
    struct.pack_into(fmt, b, at, value)
    return bytes(b)


def test_tflite_damage_that_escaped_before(seeds, tmp_path):
    import tflite
    path = tmp_path / "x.tflite"
    f32, int8 = seeds["tiny_f32.tflite"].read_bytes(), seeds["tiny_int8.tflite"].read_bytes()
    graph = _root(f32).Subgraphs(0)
    ops = [graph.Operators(i) for i in range(graph.OperatorsLength())]
    pool = next(op for op in ops if _root(f32).OperatorCodes(op.OpcodeIndex()).BuiltinCode() == 17)   # MAX_POOL
    options = tflite.Pool2DOptions()
    options.Init(f32, pool.BuiltinOptions().Pos)
    conv_output = graph.Tensors(int(ops[0].OutputsAsNumpy()[0]))
    tensor, scale_of = graph.Tensors(3), _root(int8).Subgraphs(0).Tensors(0).Quantization()
    cases = [   # (damaged file, words of the FormatError), with what the file did before
        # a pool filter of 2^31 - 1 with SAME padding: load_tflite tried a 256 GiB padded input
        (_patched(f32, _field(f32, options, 12), "<i", 0x7FFFFFFF), "filter_h 2147483647 is out of range"),
        # a tensor name whose length runs into the next table: read as garbage, a multi-line message
        (_patched(f32, _vector(f32, tensor, 10) - 4, "<I", 200), "not NUL-terminated"),
        # a runtime tensor of 2^28 rows: load_tflite allocated 32 GiB before any shape check
        (_patched(f32, _vector(f32, conv_output, 4) + 4, "<I", 1 << 28), "a tensor may hold"),
        # a NaN quantization scale: a ValueError in the multiplier arithmetic
        (_patched(int8, _vector(int8, scale_of, 8), "<f", float("nan")), "scales outside"),
        # a convolution writing a scalar (its output's shape vector emptied): an IndexError
        (_patched(f32, _vector(f32, conv_output, 4) - 4, "<I", 0), "not NHWC"),
    ]
    for damaged, words in cases:
        path.write_bytes(damaged)
        _expect_format_error(lambda: read_tflite(path), path, words)


def test_model_file_damage_that_escaped_before(seeds, tmp_path, capsys):
    path = tmp_path / "x.ells"
    header, tensor_data = _ells_parts(seeds["tiny.ells"].read_bytes())
    text = json.dumps(header)

    def edited(edit):
        h = json.loads(text)
        edit(h["spec"], h)
        return json.dumps(h)

    cases = [   # (header text, words of the FormatError), with what load_model or info did before
        (text.replace('"filters": 4', '"filters": ' + "9" * 5000), "not valid JSON"),        # ValueError
        (text.replace('"spec": {', '"spec": {"x": ' + "[" * 100_000 + "]" * 100_000 + ", "),
         "not valid JSON"),                                                                # RecursionError
        (text.replace('"spec": {', '"spec": {"x": ' + "[" * 500 + "]" * 500 + ", "),
         "nested more than"),                                               # RecursionError in deepcopy
        (edited(lambda s, h: s["blocks"][0].update(filters=2 ** 32 + 1)), r"blocks\[0\].filters"),  # 288 GiB
        (edited(lambda s, h: s.update(classifier=False)), "'spec.classifier'"),             # AttributeError
        (edited(lambda s, h: s["input_shape"].__setitem__(1, 8.0)), r"input_shape\[1\]"),   # forward: TypeError
        (edited(lambda s, h: s["input_shape"].append(1)), "input_shape"),               # forward: ValueError
        (edited(lambda s, h: s["blocks"][2].update(stride=2 ** 64 + 3)), "stride"),     # forward: OverflowError
        (edited(lambda s, h: s["blocks"][0].update(padding=10 ** 30)), "padding"),      # forward: OverflowError
        (edited(lambda s, h: s["blocks"][3].update(pool_size=2 ** 32 + 1)), "pool_size"),  # info: 32 GiB basis
        (edited(lambda s, h: h["tensors"][0].update(shape=h["tensors"][0]["shape"] + [1] * 66)),
         "shape"),                                                       # numpy: a ValueError, 70 dims
    ]
    for damaged, words in cases:
        assert damaged != text, words
        path.write_bytes(_ells_with_header(damaged.encode(), tensor_data))
        _expect_format_error(lambda: mf.load_model(path), path, words)
    for edit, words in ((lambda h: h.update(dataset=[]), "'dataset'"),                   # AttributeError
                        (lambda h: h["rule"].update(rule={"x": 1}), "'rule'")):          # AttributeError
        h = json.loads(text)
        edit(h)
        path.write_bytes(_ells_with_header(json.dumps(h).encode(), tensor_data))
        mf.load_model(path)                                  # what the reader itself needs is fine
        capsys.readouterr()
        assert main(["info", str(path)]) == 2
        err = capsys.readouterr().err.splitlines()
        assert len(err) == 1 and str(path) in err[0] and words in err[0], err


def test_info_reads_a_model_image_and_names_a_damaged_one(seeds, tmp_path, capsys):
    assert main(["info", str(seeds["tiny_tail.bin"])]) == 0
    out = capsys.readouterr().out
    assert out.startswith("model image ") and out.count("\nop ") == 12 and "\ntail blocks=1 " in out
    assert main(["info", str(seeds["tiny.bin"]), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["description"] == blob.describe_image(
        seeds["tiny.bin"].read_bytes()).splitlines()
    path = tmp_path / "cut.bin"
    path.write_bytes(seeds["tiny.bin"].read_bytes()[:100])
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("edge-lls: error:") and "cut.bin: total_bytes" in err[0]
    head = seeds["tiny.ells"].read_bytes()[:3]                                    # still the .ells reader's
    path = tmp_path / "short.ells"
    path.write_bytes(head)
    assert main(["info", str(path)]) == 2 and "truncated" in capsys.readouterr().err


def test_an_image_whose_dims_overflow_int64_is_refused(seeds):
    data = seeds["tiny.bin"].read_bytes()
    record = blob.open_image(data)["ops"][0]["record_offset"] + blob.CONV.offsets()["filter_dims"]
    for dims in ((1 << 30, 1 << 30, 4, 4), (1 << 16, 1 << 16, 1 << 16, 1 << 15)):   # 2^64 -> 0, 2^63 -> < 0
        b = bytearray(data)
        struct.pack_into("<4i", b, record, *dims)
        with pytest.raises(EdgeLLSError, match="op 0: weights"):
            blob.open_image(_fix_blob_crcs(bytes(b)), "x.bin")

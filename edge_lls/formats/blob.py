"""The edge-lls model image: what the firmware reads, as a blob file or as C source.

One byte layout, two carriers (firmware_bridge/firmware/include/el_model_format.h is its
C side and describes it in full):

    build_image(program, tail=None) -> Image     the prepared int8 program laid out
    Image.data                                   the bytes (`edge-lls export --format blob`)
    c_source(image, symbol) -> (header, source)  the same bytes as one const struct,
                                                 (`--format c`), a record per operator
    open_image(data, where) -> dict              validates an image the way the firmware's
                                                 el_model_open() does; FormatError otherwise
    describe_image(data) -> str                  one line per header, tensor, op and array,
                                                 printed identically by el_model_dump.c

Every operator record is filled from the parameters the Python runtime prepares for it
(program/params.py, via interpreter.prepare in TFLM rounding mode, which is what the
firmware computes); runtime tensors get the offsets of the inference arena plan
(program/memory.py). Each layout below is one Python struct format whose fields are the C
struct's, in order; tests/test_c_export.py compiles the header and checks every offset.
"""
from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError, FormatError
from ..program.ir import Program
from .sniff import IMAGE_MAGIC as MAGIC

VERSION = 1
ALIGN = 16
HEADER_CRC_BYTES = 60
TFLM_ROUNDING = 1
TENSOR_CONSTANT, TENSOR_PER_CHANNEL = 1, 2
TYPE_CODES = {"INT8": 1, "INT32": 2, "FLOAT32": 3}
TYPE_SIZES = {1: 1, 2: 4, 3: 4}
WAVEFORMS = {"sine": 0, "cosine": 0, "square": 1}     # 'cosine' is the rule's historical name of the sine
BLOCK_KINDS = {"conv": 1, "dwsep": 2, "dense": 3}


@dataclass(frozen=True)
class Layout:
    """A C struct of 4-byte-aligned fields: (name, struct code) in declaration order. A code
    with a count ("4i") is an array field; "4s" is char[4]."""
    name: str
    fields: tuple[tuple[str, str], ...]

    @property
    def struct(self) -> struct.Struct:
        return struct.Struct("<" + "".join(code for _, code in self.fields))

    @property
    def size(self) -> int:
        return self.struct.size

    def offsets(self) -> dict[str, int]:
        offsets, at = {}, 0
        for name, code in self.fields:
            offsets[name] = at
            at += struct.calcsize("<" + code)
        return offsets

    def pack(self, values: dict) -> bytes:
        flat = []
        for name, code in self.fields:
            value = values[name]
            if code[:-1].isdigit() and code[-1] != "s":
                flat.extend(int(v) if code[-1] != "f" else float(v) for v in value)
            else:
                flat.append(value)
        return self.struct.pack(*flat)

    def unpack(self, data: bytes, offset: int) -> dict:
        flat = list(self.struct.unpack_from(data, offset))
        values = {}
        for name, code in self.fields:
            count = int(code[:-1]) if code[:-1].isdigit() and code[-1] != "s" else 1
            values[name] = tuple(flat[:count]) if count > 1 else flat[0]
            del flat[:count]
        return values


DIMS = "4i"
HEADER = Layout("el_model_header", (
    ("magic", "4s"), ("version", "H"), ("header_bytes", "H"), ("total_bytes", "I"), ("payload_crc32", "I"),
    ("flags", "I"), ("arena_bytes", "I"), ("tensor_count", "I"), ("tensors_offset", "I"), ("op_count", "I"),
    ("ops_offset", "I"), ("input_tensor", "I"), ("output_tensor", "I"), ("tail_offset", "I"),
    ("reserved", "2I"), ("header_crc32", "I")))
TENSOR = Layout("el_tensor", (
    ("offset", "I"), ("bytes", "I"), ("type", "B"), ("rank", "B"), ("flags", "B"), ("reserved", "B"),
    ("zero_point", "i"), ("scale", "I"), ("dims", "4H"), ("reserved2", "I")))   # scale: float32 bits
OP = Layout("el_op", (("opcode", "I"), ("record_offset", "I"), ("record_bytes", "I")))
CONV = Layout("el_conv_params", (
    ("input", "I"), ("output", "I"), ("input_offset", "i"), ("output_offset", "i"), ("stride_h", "i"),
    ("stride_w", "i"), ("pad_h", "i"), ("pad_w", "i"), ("dilation_h", "i"), ("dilation_w", "i"),
    ("act_min", "i"), ("act_max", "i"), ("ch_mult", "i"), ("input_dims", DIMS), ("filter_dims", DIMS),
    ("output_dims", DIMS), ("weights", "I"), ("bias", "I"), ("multiplier", "I"), ("shift", "I")))
FC = Layout("el_fc_params", (
    ("input", "I"), ("output", "I"), ("input_offset", "i"), ("filter_offset", "i"), ("output_offset", "i"),
    ("act_min", "i"), ("act_max", "i"), ("input_dims", DIMS), ("filter_dims", DIMS), ("output_dims", DIMS),
    ("weights", "I"), ("bias", "I"), ("multiplier", "I"), ("shift", "I")))
POOL = Layout("el_pool_params", (
    ("input", "I"), ("output", "I"), ("stride_h", "i"), ("stride_w", "i"), ("pad_h", "i"), ("pad_w", "i"),
    ("filter_h", "i"), ("filter_w", "i"), ("act_min", "i"), ("act_max", "i"), ("input_dims", DIMS),
    ("output_dims", DIMS)))
SOFTMAX = Layout("el_softmax_params", (
    ("input", "I"), ("output", "I"), ("rows", "i"), ("depth", "i"), ("input_multiplier", "i"),
    ("input_left_shift", "i"), ("diff_min", "i")))
RESHAPE = Layout("el_reshape_params", (("input", "I"), ("output", "I"), ("size", "i")))
PAD = Layout("el_pad_params", (
    ("input", "I"), ("output", "I"), ("pad_value", "i"), ("before", "4i"), ("after", "4i"),
    ("input_dims", DIMS), ("output_dims", DIMS)))
LEAKY_RELU = Layout("el_leaky_relu_params", (
    ("input", "I"), ("output", "I"), ("size", "i"), ("input_zero_point", "i"), ("output_zero_point", "i"),
    ("identity_multiplier", "i"), ("identity_shift", "i"), ("alpha_multiplier", "i"), ("alpha_shift", "i")))
TAIL = Layout("el_tail_header", (
    ("block_count", "I"), ("num_classes", "I"), ("waveform", "I"), ("temperature", "I"),   # float32 bits
    ("classifier_op", "I"), ("reserved", "3I")))
TAIL_BLOCK = Layout("el_tail_block", (
    ("kind", "I"), ("first_op", "I"), ("op_count", "I"), ("output", "I"), ("pool_size", "I"),
    ("feature_dim", "I"), ("basis", "I"), ("reserved", "I")))
LAYOUTS = (HEADER, TENSOR, OP, CONV, FC, POOL, SOFTMAX, RESHAPE, PAD, LEAKY_RELU, TAIL, TAIL_BLOCK)

# opcode: (number, record layout); numbers as el_model_format.h's EL_OP_*
OPCODES = {"CONV_2D": (1, CONV), "DEPTHWISE_CONV_2D": (2, CONV), "FULLY_CONNECTED": (3, FC),
           "AVERAGE_POOL_2D": (4, POOL), "MAX_POOL_2D": (5, POOL), "SOFTMAX": (6, SOFTMAX),
           "RESHAPE": (7, RESHAPE), "PAD": (8, PAD), "LEAKY_RELU": (9, LEAKY_RELU)}
OPCODE_NAMES = {number: name for name, (number, _) in OPCODES.items()}
# array fields of a record: (field, element struct code, element count from the record)
ARRAYS = {
    CONV.name: (("weights", "b", lambda r: _volume(r["filter_dims"])), ("bias", "i", lambda r: r["output_dims"][3]),
                ("multiplier", "i", lambda r: r["output_dims"][3]), ("shift", "i", lambda r: r["output_dims"][3])),
    FC.name: (("weights", "b", lambda r: r["filter_dims"][0] * r["filter_dims"][3]),
              ("bias", "i", lambda r: r["filter_dims"][3]), ("multiplier", "i", lambda r: r["filter_dims"][3]),
              ("shift", "i", lambda r: r["filter_dims"][3])),
}
C_TYPES = {"b": "int8_t", "i": "int32_t", "f": "float"}


def _volume(dims) -> int:
    """The product of dims, exact (an int64 product of four corrupt int32 dims wraps, to 0 or
    below, and a wrapped element count would pass a bounds check)."""
    return math.prod(int(d) for d in dims)


def _aligned(n: int, to: int = ALIGN) -> int:
    return -(-n // to) * to


def crc32(data) -> int:
    return zlib.crc32(data) & 0xFFFFFFFF


def _f32_bits(value: float) -> int:
    return struct.unpack("<I", struct.pack("<f", value))[0]


@dataclass(frozen=True)
class TailBlock:
    """One trainable block of a fine-tuning model and its LLS head."""
    kind: str                   # "conv" | "dwsep" | "dense"
    ops: tuple[int, ...]        # consecutive operator indices
    output: int                 # the tensor the head pools
    pool_size: int
    basis: np.ndarray           # (num_classes, D) float32, columns in NHWC pooled order


@dataclass(frozen=True)
class Tail:
    blocks: tuple[TailBlock, ...]
    num_classes: int
    waveform: str
    temperature: float
    classifier_op: int


@dataclass
class Member:
    """One member of the image struct: a record (layout) or a constant array."""
    name: str
    offset: int
    data: bytes
    layout: Layout | None = None           # a record
    values: dict | list | None = None      # record fields, or a list of records
    array: np.ndarray | None = None        # a constant array
    align: int = 4
    table: bool = False                    # values is a list: an array of records


@dataclass
class Image:
    data: bytes
    members: list[Member]
    arena_bytes: int
    tensor_count: int
    op_count: int
    name: str = "model"
    info: dict = field(default_factory=dict)


class _Builder:
    def __init__(self):
        self.members: list[Member] = []
        self.size = 0

    def _place(self, member: Member) -> int:
        member.offset = _aligned(self.size, member.align)
        self.size = member.offset + len(member.data)
        self.members.append(member)
        return member.offset

    def reserve(self, name: str, layout: Layout, count: int | None = None) -> Member:
        """Room for one record (count None) or a table of count records, filled later."""
        member = Member(name, 0, bytes(layout.size * (count or 1)), layout=layout, table=count is not None)
        self._place(member)
        return member

    def record(self, name: str, layout: Layout, values: dict) -> Member:
        member = Member(name, 0, layout.pack(values), layout=layout, values=values)
        self._place(member)
        return member

    def array(self, name: str, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        return self._place(Member(name, 0, array.astype(array.dtype.newbyteorder("<")).tobytes(), array=array,
                                  align=ALIGN))

    def fill(self, member: Member, values: list[dict] | dict) -> None:
        member.values = values
        member.data = b"".join(member.layout.pack(v) for v in values) if member.table else member.layout.pack(values)

    def image_bytes(self) -> bytearray:
        out = bytearray(_aligned(self.size))
        for m in self.members:
            out[m.offset:m.offset + len(m.data)] = m.data
        return out


def _dims(d) -> tuple[int, int, int, int]:
    return (d.n, d.h, d.w, d.c)


def _record_values(op, p, tensor_ids) -> dict:
    """The record of one op from its prepared parameters (program/params.py)."""
    io = {"input": tensor_ids[0], "output": tensor_ids[1]}
    if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
        return {**io, "input_offset": p.input_offset, "output_offset": p.output_offset, "stride_h": p.stride[0],
                "stride_w": p.stride[1], "pad_h": p.padding[0], "pad_w": p.padding[1], "dilation_h": p.dilation[0],
                "dilation_w": p.dilation[1], "act_min": p.activation[0], "act_max": p.activation[1],
                "ch_mult": getattr(p, "ch_mult", 1), "input_dims": _dims(p.input_dims),
                "filter_dims": _dims(p.filter_dims), "output_dims": _dims(p.output_dims)}
    if op.opcode == "FULLY_CONNECTED":
        return {**io, "input_offset": p.input_offset, "filter_offset": p.filter_offset,
                "output_offset": p.output_offset, "act_min": p.activation[0], "act_max": p.activation[1],
                "input_dims": _dims(p.input_dims), "filter_dims": _dims(p.filter_dims),
                "output_dims": _dims(p.output_dims)}
    if op.opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return {**io, "stride_h": p.stride[0], "stride_w": p.stride[1], "pad_h": p.padding[0], "pad_w": p.padding[1],
                "filter_h": p.filter[0], "filter_w": p.filter[1], "act_min": p.activation[0],
                "act_max": p.activation[1], "input_dims": _dims(p.input_dims), "output_dims": _dims(p.output_dims)}
    if op.opcode == "SOFTMAX":
        return {**io, "rows": p.rows, "depth": p.depth, "input_multiplier": p.input_multiplier,
                "input_left_shift": p.input_left_shift, "diff_min": p.diff_min}
    if op.opcode == "RESHAPE":
        return {**io, "size": p.size}
    if op.opcode == "PAD":
        return {**io, "pad_value": p.pad_value, "before": p.before, "after": p.after,
                "input_dims": _dims(p.input_dims), "output_dims": _dims(p.output_dims)}
    return {**io, "size": p.size, "input_zero_point": p.input_zero_point, "output_zero_point": p.output_zero_point,
            "identity_multiplier": p.identity_multiplier, "identity_shift": p.identity_shift,
            "alpha_multiplier": p.alpha_multiplier, "alpha_shift": p.alpha_shift}


def build_image(program: Program, tail: Tail | None = None) -> Image:
    """The image of an int8 program (see the module docstring)."""
    from ..program.interpreter import prepare
    from ..program.memory import plan_program

    where = program.name
    tensors = program.tensors
    for op in program.operators:
        if op.opcode not in OPCODES:
            raise ConfigError(f"{where}: op {op.index} ({op.opcode}) has no firmware kernel; the image supports "
                              f"{', '.join(OPCODES)}")
    for t in tensors:
        if t.data is None and t.dtype != np.int8:
            raise ConfigError(f"{where}: tensor {t.index} '{t.name}' is {t.type_name}; the firmware runs int8 "
                              f"models (export with --precision int8)")
        if len(t.shape) > 4 or any(d > 0xFFFF for d in t.shape):
            raise ConfigError(f"{where}: tensor {t.index} '{t.name}' has shape {t.shape}: the image holds "
                              f"rank <= 4 and dimensions < 65536")
    if len(program.inputs) != 1 or len(program.outputs) != 1:
        raise ConfigError(f"{where}: the image holds one input and one output, not {len(program.inputs)} "
                          f"and {len(program.outputs)}")
    graph = prepare(program, batch=1, fast=False, requantize="tflm")
    plan = plan_program(program, batch=1)

    b = _Builder()
    header = b.reserve("header", HEADER)
    tensor_table = b.reserve("tensors", TENSOR, len(tensors))
    op_table = b.reserve("ops", OP, len(program.operators))
    constant_at: dict[int, tuple[int, int]] = {}       # constant tensor -> (offset, bytes) in the image
    ops = []
    for op in program.operators:
        number, layout = OPCODES[op.opcode]
        p = graph.params.get(op.index)
        if p is None:
            raise ConfigError(f"{where}: op {op.index} ({op.opcode}) has no prepared int8 parameters")
        values = _record_values(op, p, (op.inputs[0], op.outputs[0]))
        name = f"op{op.index}"
        if layout in (CONV, FC):
            values.update(weights=0, bias=0, multiplier=0, shift=0)
        record = b.record(name, layout, values)
        if layout in (CONV, FC):
            w = tensors[op.inputs[1]]
            values["weights"] = b.array(f"{name}_weights", w.data.astype(np.int8))
            constant_at[w.index] = (values["weights"], w.data.size)
            values["bias"] = b.array(f"{name}_bias", p.bias.astype(np.int32))
            if len(op.inputs) > 2 and op.inputs[2] >= 0:
                constant_at[op.inputs[2]] = (values["bias"], 4 * p.bias.size)
            values["multiplier"] = b.array(f"{name}_multiplier", p.quant.multiplier.astype(np.int32))
            values["shift"] = b.array(f"{name}_shift", p.quant.shift.astype(np.int32))
            record.data = layout.pack(values)          # now with the arrays' offsets
        ops.append({"opcode": number, "record_offset": record.offset, "record_bytes": layout.size})
    tail_at = 0
    if tail is not None:
        tail_at = _add_tail(b, program, tail)
    b.fill(op_table, ops)
    table = []
    for t in tensors:
        constant = t.data is not None
        offset, size = constant_at.get(t.index, (0, 0)) if constant else (plan.offsets[t.index], t.size)
        flags = (TENSOR_CONSTANT if constant else 0) | (TENSOR_PER_CHANNEL if t.scales is not None and
                                                        t.scales.size > 1 else 0)
        if not constant:
            size *= t.dtype.itemsize
        table.append({"offset": offset, "bytes": size, "type": TYPE_CODES.get(t.type_name, 0), "rank": len(t.shape),
                      "flags": flags, "reserved": 0, "zero_point": t.zero_point,
                      "scale": _f32_bits(t.scale), "dims": tuple(t.shape) + (0,) * (4 - len(t.shape)),
                      "reserved2": 0})
    b.fill(tensor_table, table)
    total = _aligned(b.size)
    head = {"magic": MAGIC, "version": VERSION, "header_bytes": HEADER.size, "total_bytes": total,
            "payload_crc32": 0, "flags": TFLM_ROUNDING, "arena_bytes": plan.arena_bytes,
            "tensor_count": len(tensors), "tensors_offset": tensor_table.offset, "op_count": len(program.operators),
            "ops_offset": op_table.offset, "input_tensor": program.inputs[0], "output_tensor": program.outputs[0],
            "tail_offset": tail_at, "reserved": (0, 0), "header_crc32": 0}
    b.fill(header, head)
    data = b.image_bytes()
    head["payload_crc32"] = crc32(bytes(data[HEADER.size:]))
    b.fill(header, head)
    data[:HEADER.size] = header.data
    head["header_crc32"] = crc32(bytes(data[:HEADER_CRC_BYTES]))
    b.fill(header, head)
    data[:HEADER.size] = header.data
    return Image(bytes(data), b.members, plan.arena_bytes, len(tensors), len(program.operators), name=where)


def _add_tail(b: _Builder, program: Program, tail: Tail) -> int:
    where = program.name
    if not 0 <= tail.classifier_op < len(program.operators):
        raise ConfigError(f"{where}: classifier op {tail.classifier_op} is not in the program")
    values = {"block_count": len(tail.blocks), "num_classes": tail.num_classes,
              "waveform": WAVEFORMS[tail.waveform], "temperature": _f32_bits(tail.temperature),
              "classifier_op": tail.classifier_op, "reserved": (0, 0, 0)}
    at = b.record("tail", TAIL, values).offset
    blocks = b.reserve("tail_blocks", TAIL_BLOCK, len(tail.blocks))
    rows = []
    for k, block in enumerate(tail.blocks):
        if list(block.ops) != list(range(block.ops[0], block.ops[0] + len(block.ops))):
            raise ConfigError(f"{where}: trainable block {k} ops {block.ops} are not consecutive")
        basis = np.ascontiguousarray(block.basis, np.float32)
        if basis.shape[0] != tail.num_classes:
            raise ConfigError(f"{where}: block {k} basis has {basis.shape[0]} rows, not {tail.num_classes}")
        rows.append({"kind": BLOCK_KINDS[block.kind], "first_op": block.ops[0], "op_count": len(block.ops),
                     "output": block.output, "pool_size": block.pool_size, "feature_dim": basis.shape[1],
                     "basis": b.array(f"tail{k}_basis", basis), "reserved": 0})
    b.fill(blocks, rows)
    return at


# ---------------------------------------------------------------------------- reading
def _fail(where: str, message: str):
    raise FormatError(f"{where}: {message}")


def open_image(data: bytes, where: str = "<image>") -> dict:
    """Every check el_model_open() makes, in the same order; returns the parsed header,
    tensors, ops (with records) and tail. FormatError names the first check that fails."""
    data = bytes(data)
    size = len(data)
    if size < HEADER.size:
        _fail(where, f"{size} bytes is shorter than the {HEADER.size}-byte model image header")
    h = HEADER.unpack(data, 0)
    if h["magic"] != MAGIC:
        _fail(where, f"not an edge-lls model image (magic {h['magic']!r}, expected {MAGIC!r})")
    if h["version"] != VERSION:
        _fail(where, f"model image version {h['version']}; this reader takes version {VERSION}")
    if h["header_bytes"] != HEADER.size:
        _fail(where, f"header_bytes {h['header_bytes']} != {HEADER.size}")
    if crc32(data[:HEADER_CRC_BYTES]) != h["header_crc32"]:
        _fail(where, "header CRC-32 mismatch: the header is corrupt")
    if h["total_bytes"] != size:
        _fail(where, f"total_bytes {h['total_bytes']} != the {size} bytes given (truncated or padded)")
    if crc32(data[HEADER.size:]) != h["payload_crc32"]:
        _fail(where, "payload CRC-32 mismatch: the model data is corrupt")

    def table(name: str, offset: int, count: int, layout: Layout) -> list[dict]:
        if offset % 4 or offset < HEADER.size or count > size // layout.size or offset + count * layout.size > size:
            _fail(where, f"{name} table ({count} x {layout.size} bytes at {offset}) is outside the image")
        return [layout.unpack(data, offset + i * layout.size) for i in range(count)]

    tensors = table("tensor", h["tensors_offset"], h["tensor_count"], TENSOR)
    ops = table("op", h["ops_offset"], h["op_count"], OP)
    count = len(tensors)
    if h["input_tensor"] >= count or h["output_tensor"] >= count:
        _fail(where, f"input/output tensor {h['input_tensor']}/{h['output_tensor']} out of range ({count} tensors)")
    for i, t in enumerate(tensors):
        if t["type"] not in TYPE_SIZES or t["rank"] > 4:
            _fail(where, f"tensor {i}: type {t['type']} / rank {t['rank']} invalid")
        limit = size if t["flags"] & TENSOR_CONSTANT else h["arena_bytes"]
        if t["offset"] + t["bytes"] > limit:
            _fail(where, f"tensor {i}: {t['bytes']} bytes at {t['offset']} overrun the "
                         f"{'image' if t['flags'] & TENSOR_CONSTANT else 'arena'} ({limit} bytes)")
        if not t["flags"] & TENSOR_CONSTANT and \
                t["bytes"] != _volume(t["dims"][:t["rank"]]) * TYPE_SIZES[t["type"]]:
            _fail(where, f"tensor {i}: {t['bytes']} bytes do not match dims {t['dims'][:t['rank']]}")
    for i, op in enumerate(ops):
        if op["opcode"] not in OPCODE_NAMES:
            _fail(where, f"op {i}: unknown opcode {op['opcode']}")
        layout = OPCODES[OPCODE_NAMES[op["opcode"]]][1]
        at = op["record_offset"]
        if op["record_bytes"] != layout.size or at % 4 or at < HEADER.size or at + layout.size > size:
            _fail(where, f"op {i}: record ({op['record_bytes']} bytes at {at}) is not an {layout.name} in the image")
        record = op["record"] = layout.unpack(data, at)
        for role in ("input", "output"):
            t = record[role]
            if t >= count or tensors[t]["flags"] & TENSOR_CONSTANT:
                _fail(where, f"op {i}: {role} tensor {t} is not a runtime tensor")
        for dims_field in ("input_dims", "filter_dims", "output_dims"):
            if dims_field in record and min(record[dims_field]) < 1:
                _fail(where, f"op {i}: {dims_field} {record[dims_field]} has a dimension < 1")
        for name, code, count_of in ARRAYS.get(layout.name, ()):
            start, n = record[name], count_of(record)
            if start % ALIGN or start < HEADER.size or start + n * struct.calcsize(code) > size:
                _fail(where, f"op {i}: {name} ({n} values at {start}) is outside the image")
    tail = None
    if h["tail_offset"]:
        at = h["tail_offset"]
        if at % 4 or at < HEADER.size or at + TAIL.size > size:
            _fail(where, f"tail at {at} is outside the image")
        tail = TAIL.unpack(data, at)
        if tail["classifier_op"] >= len(ops) or tail["waveform"] not in WAVEFORMS.values():
            _fail(where, f"tail: classifier op {tail['classifier_op']} / waveform {tail['waveform']} invalid")
        tail["blocks"] = table("tail block", at + TAIL.size, tail["block_count"], TAIL_BLOCK)
        for k, block in enumerate(tail["blocks"]):
            n = tail["num_classes"] * block["feature_dim"]
            if block["first_op"] + block["op_count"] > len(ops) or block["output"] >= count or \
                    block["basis"] % ALIGN or block["basis"] < HEADER.size or block["basis"] + 4 * n > size:
                _fail(where, f"tail block {k}: ops, output or basis out of range")
    return {"header": h, "tensors": tensors, "ops": ops, "tail": tail}


def describe_image(data: bytes, where: str = "<image>") -> str:
    """The text el_model_dump prints for the same image, line for line."""
    image = open_image(data, where)
    h = image["header"]
    lines = [f"header version={h['version']} total_bytes={h['total_bytes']} payload_crc32=0x{h['payload_crc32']:08x} "
             f"flags={h['flags']} arena_bytes={h['arena_bytes']} tensors={h['tensor_count']} "
             f"ops={h['op_count']} input={h['input_tensor']} output={h['output_tensor']} tail={h['tail_offset']}"]
    for i, t in enumerate(image["tensors"]):
        lines.append(f"tensor {i} offset={t['offset']} bytes={t['bytes']} type={t['type']} rank={t['rank']} "
                     f"flags={t['flags']} zero_point={t['zero_point']} scale=0x{t['scale']:08x} "
                     f"dims={','.join(str(d) for d in t['dims'])}")
    for i, op in enumerate(image["ops"]):
        layout = OPCODES[OPCODE_NAMES[op["opcode"]]][1]
        arrays = {name: (code, count_of) for name, code, count_of in ARRAYS.get(layout.name, ())}
        fields = []
        for name, _ in layout.fields:
            value = op["record"][name]
            if name in arrays:
                code, count_of = arrays[name]
                n = count_of(op["record"])
                chunk = data[value:value + n * struct.calcsize(code)]
                fields.append(f"{name}=@{value}[{n}]crc=0x{crc32(chunk):08x}")
            elif isinstance(value, tuple):
                fields.append(f"{name}={','.join(str(v) for v in value)}")
            else:
                fields.append(f"{name}={value}")
        lines.append(f"op {i} {OPCODE_NAMES[op['opcode']]} " + " ".join(fields))
    tail = image["tail"]
    if tail is not None:
        lines.append(f"tail blocks={tail['block_count']} classes={tail['num_classes']} waveform={tail['waveform']} "
                     f"temperature=0x{tail['temperature']:08x} classifier_op={tail['classifier_op']}")
        for k, block in enumerate(tail["blocks"]):
            n = tail["num_classes"] * block["feature_dim"]
            chunk = data[block["basis"]:block["basis"] + 4 * n]
            lines.append(f"block {k} kind={block['kind']} first_op={block['first_op']} op_count={block['op_count']} "
                         f"output={block['output']} pool_size={block['pool_size']} "
                         f"feature_dim={block['feature_dim']} basis=@{block['basis']}[{n}]crc=0x{crc32(chunk):08x}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------- C source
def c_identifier(text: str) -> str:
    ident = "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_") or "model"
    return ident if not ident[0].isdigit() else f"m_{ident}"


def _c_value(code: str, value) -> str:
    if code == "4s":
        return "{" + ", ".join(f"'{chr(c)}'" for c in value) + "}"
    if isinstance(value, tuple):
        return "{" + ", ".join(_c_scalar(v) for v in value) + "}"
    return _c_scalar(value)


def _c_scalar(value) -> str:
    value = int(value)
    if value == -(1 << 31):
        return "(-2147483647 - 1)"       # INT32_MIN has no literal of its own type
    return f"{value}u" if value > 0x7FFFFFFF else str(value)


def _c_record(layout: Layout, values: dict, indent: str) -> str:
    fields = []
    for name, code in layout.fields:
        if name in ("scale", "temperature"):        # float32 bits -> an exact hex-float literal
            bits = values[name]
            fields.append(f".{name} = {float(struct.unpack('<f', struct.pack('<I', bits))[0]).hex()}f")
        else:
            fields.append(f".{name} = {_c_value(code, values[name])}")
    return "{" + ", ".join(fields) + "}"


def _c_array(array: np.ndarray) -> str:
    flat = array.reshape(-1)
    if flat.dtype == np.float32:
        items = [f"{float(v).hex()}f" for v in flat]
    else:
        items = [_c_scalar(v) for v in flat]
    rows = [", ".join(items[i:i + 16]) for i in range(0, len(items), 16)]
    return "{\n        " + ",\n        ".join(rows) + "\n    }"


def c_source(image: Image, symbol: str, header_name: str) -> tuple[str, str]:
    """(header, source) text: the image as one 16-byte aligned const struct whose bytes are
    image.data exactly (the struct's members are the image's records and arrays, laid out
    by the compiler where build_image placed them; tests compile it and compare bytes)."""
    symbol = c_identifier(symbol)
    upper = symbol.upper()
    guard = f"EL_MODEL_{upper}_H"
    header = (f"/* Generated by `edge-lls export --format c` from {image.name}: do not edit. */\n"
              f"#ifndef {guard}\n#define {guard}\n\n#include <stddef.h>\n#include <stdint.h>\n\n"
              f"#define EL_MODEL_{upper}_BYTES {len(image.data)}u\n"
              f"#define EL_MODEL_{upper}_ARENA_BYTES {image.arena_bytes}u  /* the planned inference arena */\n"
              f"#define EL_MODEL_{upper}_PAYLOAD_CRC32 0x{HEADER.unpack(image.data, 0)['payload_crc32']:08x}u\n\n"
              f"/* The model image (el_model_format.h), 16-byte aligned, in flash: open it with\n"
              f"   el_model_open(el_model_{symbol}, EL_MODEL_{upper}_BYTES, &model). */\n"
              f"extern const uint8_t *const el_model_{symbol};\n\n#endif /* {guard} */\n")
    decls, inits = [], []
    for m in image.members:
        if m.array is not None:
            ctype = C_TYPES[{np.dtype(np.int8): "b", np.dtype(np.int32): "i", np.dtype(np.float32): "f"}[m.array.dtype]]
            decls.append(f"    EL_ALIGNED(16) {ctype} {m.name}[{m.array.size}];")
            inits.append(f"    .{m.name} = {_c_array(m.array)}")
        elif m.table:
            decls.append(f"    {m.layout.name} {m.name}[{len(m.values)}];")
            rows = ",\n        ".join(_c_record(m.layout, v, "        ") for v in m.values)
            inits.append(f"    .{m.name} = {{\n        {rows}\n    }}")
        else:
            # The first member (the header) is 16-byte aligned so that the struct is too, and its
            # sizeof rounds up to the image's final 16-byte padding even with no arrays at all.
            align = "EL_ALIGNED(16) " if not decls else ""
            decls.append(f"    {align}{m.layout.name} {m.name};")
            inits.append(f"    .{m.name} = {_c_record(m.layout, m.values, '    ')}")
    source = (f"/* Generated by `edge-lls export --format c` from {image.name}: do not edit.\n"
              f"   {len(image.data)} bytes, {image.op_count} operators, arena {image.arena_bytes} bytes. */\n"
              f"#include \"{header_name}\"\n#include \"el_model_format.h\"\n\n"
              f"typedef struct {{\n" + "\n".join(decls) + f"\n}} el_model_{symbol}_image;\n\n"
              f"static EL_ALIGNED(16) const el_model_{symbol}_image image = {{\n" + ",\n".join(inits) + "\n};\n\n"
              f"/* The struct is laid out exactly as the image: no member needs padding the exporter did not put. */\n"
              f"typedef char el_model_{symbol}_size_check[sizeof(image) == {len(image.data)}u ? 1 : -1];\n\n"
              f"const uint8_t *const el_model_{symbol} = (const uint8_t *)&image;\n")
    return header, source

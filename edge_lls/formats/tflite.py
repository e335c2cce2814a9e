"""The one TFLite reader and writer: .tflite flatbuffer bytes (schema v3, identifier "TFL3")
<-> a Program (edge_lls/program/ir.py), plain data; nothing here runs a model.

Only the `tflite` package's generated flatbuffer accessors and builder are used;
TensorFlow is not needed.
Files are accepted as TensorFlow Lite Micro accepts them: in particular a bias tensor whose
``quantized_dimension`` points past its single axis (person_detect.tflite has 3 on 1-D
biases, which LiteRT rejects) is fine, because a bias is read as plain int32 values and its
quantization parameters are never used.
"""
from __future__ import annotations

import importlib
import math
import struct
from pathlib import Path

import flatbuffers
import numpy as np
import tflite
from tflite.ActivationFunctionType import ActivationFunctionType
from tflite.BuiltinOperator import BuiltinOperator
from tflite.BuiltinOptions import BuiltinOptions
from tflite.Padding import Padding
from tflite.TensorType import TensorType

from edge_lls.errors import FormatError
from edge_lls.formats.sniff import TFLITE_IDENTIFIER
from edge_lls.program.ir import Operator, Program, Tensor

FILE_IDENTIFIER = TFLITE_IDENTIFIER

OPCODE_NAMES = {value: name for name, value in vars(BuiltinOperator).items() if not name.startswith("_")}
OPTIONS_TYPE_NAMES = {value: name for name, value in vars(BuiltinOptions).items() if not name.startswith("_")}
ACTIVATION_NAMES = {value: name for name, value in vars(ActivationFunctionType).items() if not name.startswith("_")}
PADDING_NAMES = {value: name for name, value in vars(Padding).items() if not name.startswith("_")}
TENSOR_TYPE_NAMES = {value: name for name, value in vars(TensorType).items() if not name.startswith("_")}

NUMPY_DTYPES = {
    TensorType.FLOAT32: np.dtype(np.float32),
    TensorType.INT8: np.dtype(np.int8),
    TensorType.UINT8: np.dtype(np.uint8),
    TensorType.INT16: np.dtype(np.int16),
    TensorType.INT32: np.dtype(np.int32),
    TensorType.INT64: np.dtype(np.int64),
}

# Limits against absurd sizes, checked before anything is allocated: a tensor no model
# this runtime targets comes near, and a rank no TFLite kernel takes.
MAX_TENSOR_BYTES = 1 << 30
MAX_RANK = 8
# Quantization scales and the real-valued options (LEAKY_RELU's alpha, SOFTMAX's beta) are
# bounded so that every ratio of them the int8 kernels' multipliers are computed from stays
# a finite float32: real models' scales lie many orders of magnitude inside (VWW's smallest
# bias scale is 3e-13).
MIN_SCALE, MAX_SCALE = 2.0 ** -64, 2.0 ** 32
MAX_REAL_OPTION = 2.0 ** 31


def read_tflite(path) -> Program:
    """The .tflite file at ``path`` as a Program (first subgraph, with its description and
    metadata). Raises FormatError naming the field or op when the file is malformed."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise FormatError(f"cannot read {path}: {error.strerror}") from error
    return parse_tflite(data, name=path.name)


def parse_tflite(data: bytes, name: str = "<bytes>") -> Program:
    """TFLite flatbuffer bytes as a Program; see read_tflite."""
    data = bytes(data)
    _check_header(data, name)
    _Verifier(data, name).model(struct.unpack_from("<I", data, 0)[0])
    # From here on every accessor reads inside the buffer (the verifier checked each table,
    # vector and string the reader touches), so a bad value is a FormatError below, and no
    # accessor error is caught: one would be a bug of the verifier.
    model = tflite.Model.GetRootAs(data, 0)
    tensors, operators, inputs, outputs = _read_subgraph(model, data, name)
    description = _text(model.Description()) if model.Description() else ""
    metadata = {}
    for i in range(model.MetadataLength()):
        entry = model.Metadata(i)
        if entry.Name() is None or not 0 < entry.Buffer() < model.BuffersLength():
            continue
        raw = _buffer_bytes(model.Buffers(entry.Buffer()), data, name, entry.Buffer())
        metadata[_text(entry.Name())] = raw or b""
    return Program(tensors, operators, inputs, outputs, name=name, description=description, metadata=metadata)


def _check_header(data: bytes, name: str) -> None:
    if len(data) < 8:
        raise FormatError(f"{name}: file too short for a TFLite flatbuffer ({len(data)} bytes)")
    identifier = bytes(data[4:8])
    if identifier != FILE_IDENTIFIER:
        raise FormatError(f"{name}: file identifier is {identifier!r}, expected {FILE_IDENTIFIER!r} (not a TFLite model)")
    root_offset = struct.unpack_from("<I", data, 0)[0]
    if root_offset + 4 > len(data):
        raise FormatError(f"{name}: truncated flatbuffer (root table offset {root_offset} past end of {len(data)} bytes)")


# ------------------------------------------------------------------ flatbuffer verifier
# The fields this reader uses, per table, by vtable slot (the generated accessors'
# Offset(slot)): (field name, kind). A kind is a scalar's size in bytes, "string",
# ("vector", element bytes), ("table", table) or ("tables", table) (a vector of tables);
# "options" is Operator.builtin_options, a table whose type the union tag names.
_TABLES = {
    "Model": {4: ("version", 4), 6: ("operator_codes", ("tables", "OperatorCode")),
              8: ("subgraphs", ("tables", "SubGraph")), 10: ("description", "string"),
              12: ("buffers", ("tables", "Buffer")), 16: ("metadata", ("tables", "Metadata"))},
    "OperatorCode": {4: ("deprecated_builtin_code", 1), 6: ("custom_code", "string"), 8: ("version", 4),
                     10: ("builtin_code", 4)},
    "SubGraph": {4: ("tensors", ("tables", "Tensor")), 6: ("inputs", ("vector", 4)), 8: ("outputs", ("vector", 4)),
                 10: ("operators", ("tables", "Operator")), 12: ("name", "string")},
    "Tensor": {4: ("shape", ("vector", 4)), 6: ("type", 1), 8: ("buffer", 4), 10: ("name", "string"),
               12: ("quantization", ("table", "QuantizationParameters"))},
    "QuantizationParameters": {8: ("scale", ("vector", 4)), 10: ("zero_point", ("vector", 8)),
                               16: ("quantized_dimension", 4)},
    "Operator": {4: ("opcode_index", 4), 6: ("inputs", ("vector", 4)), 8: ("outputs", ("vector", 4)),
                 10: ("builtin_options_type", 1), 12: ("builtin_options", "options")},
    "Buffer": {4: ("data", ("vector", 1)), 6: ("offset", 8), 8: ("size", 8)},
    "Metadata": {4: ("name", "string"), 6: ("buffer", 4)},
    # the builtin options _read_options reads
    "Conv2DOptions": {4: ("padding", 1), 6: ("stride_w", 4), 8: ("stride_h", 4), 10: ("fused_activation", 1),
                      12: ("dilation_w", 4), 14: ("dilation_h", 4)},
    "DepthwiseConv2DOptions": {4: ("padding", 1), 6: ("stride_w", 4), 8: ("stride_h", 4),
                               10: ("depth_multiplier", 4), 12: ("fused_activation", 1), 14: ("dilation_w", 4),
                               16: ("dilation_h", 4)},
    "Pool2DOptions": {4: ("padding", 1), 6: ("stride_w", 4), 8: ("stride_h", 4), 10: ("filter_width", 4),
                      12: ("filter_height", 4), 14: ("fused_activation", 1)},
    "FullyConnectedOptions": {4: ("fused_activation", 1), 6: ("weights_format", 1), 8: ("keep_num_dims", 1)},
    "AddOptions": {4: ("fused_activation", 1)},
    "ReducerOptions": {4: ("keep_dims", 1)},
    "SoftmaxOptions": {4: ("beta", 4)},
    "ReshapeOptions": {4: ("new_shape", ("vector", 4))},
    "LeakyReluOptions": {4: ("alpha", 4)},
}
_OPTIONS_TABLES = {getattr(BuiltinOptions, kind): kind for kind in _TABLES if kind.endswith("Options")}


class _Verifier:
    """Every table, vector and string the reader touches lies inside the buffer, checked
    before any generated accessor runs (what TFLite's VerifyModelBuffer does for its C++
    reader): vtables in bounds and well formed, each used field inside its table, vector
    and string contents inside the buffer, strings NUL-terminated. FormatError names the
    first object that is not."""

    def __init__(self, data: bytes, name: str):
        self.data, self.size, self.name = data, len(data), name

    def _fail(self, where: str, what: str):
        raise FormatError(f"{self.name}: truncated or corrupt flatbuffer: {where}: {what}")

    def _u32(self, at: int, where: str) -> int:
        if not 0 <= at <= self.size - 4:
            self._fail(where, f"offset field at byte {at} is outside the {self.size}-byte file")
        return struct.unpack_from("<I", self.data, at)[0]

    def model(self, root: int) -> None:
        self.table(root, "Model", "model")

    def table(self, at: int, kind: str, where: str) -> None:
        if not 0 <= at <= self.size - 4:
            self._fail(where, f"{kind} table at byte {at} is outside the {self.size}-byte file")
        vtable = at - struct.unpack_from("<i", self.data, at)[0]
        if not 0 <= vtable <= self.size - 4:
            self._fail(where, f"{kind} vtable at byte {vtable} is outside the file")
        vtable_bytes, table_bytes = struct.unpack_from("<HH", self.data, vtable)
        if vtable_bytes < 4 or vtable_bytes % 2 or vtable + vtable_bytes > self.size or table_bytes < 4 \
                or at + table_bytes > self.size:
            self._fail(where, f"{kind} vtable ({vtable_bytes} bytes, table {table_bytes} bytes) is malformed "
                              f"or runs past the end of the file")
        for slot, (field, kind_of) in _TABLES[kind].items():
            if slot + 2 > vtable_bytes:
                continue
            offset = struct.unpack_from("<H", self.data, vtable + slot)[0]
            if offset == 0:
                continue
            width = kind_of if isinstance(kind_of, int) else 4
            if offset < 4 or offset + width > table_bytes:
                self._fail(where, f"{kind}.{field} lies outside its table")
            if isinstance(kind_of, int):
                continue
            position = at + offset
            target = position + struct.unpack_from("<I", self.data, position)[0]
            here = f"{where}.{field}"
            if kind_of == "string":
                start, length = self._vector(target, 1, here)
                if start + length >= self.size or self.data[start + length] != 0:
                    self._fail(here, "string is not NUL-terminated inside the file")
            elif kind_of == "options":
                tag_offset = struct.unpack_from("<H", self.data, vtable + 10)[0] if vtable_bytes >= 12 else 0
                options = _OPTIONS_TABLES.get(self.data[at + tag_offset] if tag_offset else 0)
                if options is not None:
                    self.table(target, options, here)
            elif kind_of[0] == "vector":
                self._vector(target, kind_of[1], here)
            elif kind_of[0] == "table":
                self.table(target, kind_of[1], here)
            else:
                start, length = self._vector(target, 4, here)
                for i in range(length):
                    element = start + 4 * i
                    self.table(element + self._u32(element, here), kind_of[1], f"{here}[{i}]")

    def _vector(self, at: int, element_bytes: int, where: str) -> tuple[int, int]:
        length = self._u32(at, where)
        if at + 4 + length * element_bytes > self.size:
            self._fail(where, f"{length} elements of {element_bytes} bytes at byte {at + 4} run past the end "
                              f"of the {self.size}-byte file")
        return at + 4, length


def _text(raw: bytes) -> str:
    """A name from the file as text: UTF-8, and never a control character (a message that
    quotes it stays one line)."""
    return "".join(c if c.isprintable() else "\ufffd" for c in raw.decode("utf-8", "replace"))


def _read_subgraph(model, data: bytes, name: str):
    """(tensors, operators, input indices, output indices) of the first subgraph."""
    if model.SubgraphsLength() < 1:
        raise FormatError(f"{name}: model has no subgraph")
    subgraph = model.Subgraphs(0)
    opcodes = [_opcode_name(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    tensors = [_read_tensor(subgraph.Tensors(i), i, model, data, name) for i in range(subgraph.TensorsLength())]
    operators = [_read_operator(subgraph.Operators(i), i, opcodes, len(tensors), name)
                 for i in range(subgraph.OperatorsLength())]
    for op in operators:
        _check_window(op, tensors, name)
    inputs = _tensor_indices(subgraph.InputsAsNumpy(), len(tensors), f"{name}: subgraph inputs")
    outputs = _tensor_indices(subgraph.OutputsAsNumpy(), len(tensors), f"{name}: subgraph outputs")
    return tensors, operators, inputs, outputs


def _opcode_name(opcode) -> str:
    # Schema 3a moved builtin codes > 127 to a new field; the old int8 field saturates at 127.
    code = max(opcode.BuiltinCode(), opcode.DeprecatedBuiltinCode())
    if code == BuiltinOperator.CUSTOM:
        custom = opcode.CustomCode()
        return "CUSTOM:" + (_text(custom) if custom else "?")
    return OPCODE_NAMES.get(code, f"BUILTIN_{code}")


def _tensor_indices(raw, tensor_count: int, where: str) -> tuple[int, ...]:
    indices = tuple(int(i) for i in (raw if isinstance(raw, np.ndarray) else []))
    for index in indices:
        if index != -1 and not 0 <= index < tensor_count:
            raise FormatError(f"{where}: tensor index {index} out of range (model has {tensor_count} tensors)")
    return indices


def _read_tensor(entry, index: int, model, data: bytes, name: str) -> Tensor:
    tensor_name = _text(entry.Name()) if entry.Name() else f"tensor_{index}"
    where = f"{name}: tensor {index} '{tensor_name}'"
    type_code = entry.Type()
    dtype = NUMPY_DTYPES.get(type_code)
    if entry.ShapeLength() > MAX_RANK:
        raise FormatError(f"{where} has rank {entry.ShapeLength()} (at most {MAX_RANK} is supported)")
    shape = tuple(int(d) for d in entry.ShapeAsNumpy()) if entry.ShapeLength() else ()
    if any(d < 0 for d in shape):
        raise FormatError(f"{where} has a negative dimension in shape {shape}")
    nbytes = math.prod(shape) * (dtype.itemsize if dtype is not None else 1)
    if nbytes > MAX_TENSOR_BYTES:
        raise FormatError(f"{where} has shape {shape}: {nbytes} bytes, more than the {MAX_TENSOR_BYTES} a "
                          f"tensor may hold (a corrupt shape?)")
    scales, zero_points, quantized_dimension = _read_quantization(entry.Quantization(), dtype, where)
    constant = _read_constant(entry, index, tensor_name, model, data, name, shape, dtype, type_code)
    return Tensor(index=index, name=tensor_name, shape=shape, dtype=dtype,
                  type_name=TENSOR_TYPE_NAMES.get(type_code, f"TYPE_{type_code}"),
                  scales=scales, zero_points=zero_points, quantized_dimension=quantized_dimension, data=constant)


def _read_quantization(quantization, dtype, where: str):
    if quantization is None or quantization.ScaleLength() == 0:
        return None, None, 0
    scales = quantization.ScaleAsNumpy().astype(np.float32)
    if quantization.ZeroPointLength():
        zero_points = quantization.ZeroPointAsNumpy().astype(np.int64)
        if zero_points.shape != scales.shape:
            raise FormatError(f"{where} has {zero_points.size} zero points for {scales.size} scales")
    else:
        zero_points = np.zeros(scales.shape, np.int64)
    if dtype is not None and dtype.kind in "iu":   # the integer types' parameters are used
        if not np.all((scales >= MIN_SCALE) & (scales <= MAX_SCALE)):    # NaN fails too
            raise FormatError(f"{where} has quantization scales outside [2^-64, 2^32] "
                              f"({scales[:4].tolist()}{' ...' if scales.size > 4 else ''})")
        limits = np.iinfo(dtype)
        if zero_points.min() < limits.min or zero_points.max() > limits.max:
            raise FormatError(f"{where} has zero points outside the range of {dtype} "
                              f"({zero_points.min()} .. {zero_points.max()})")
    # quantized_dimension is kept as written, even when out of range (see the module docstring);
    # the op handlers decide what per-channel parameters mean for each of their inputs.
    return scales, zero_points, int(quantization.QuantizedDimension())


def _read_constant(entry, index, tensor_name, model, data, name, shape, dtype, type_code):
    buffer_index = entry.Buffer()
    if buffer_index == 0:  # buffer 0 is the empty sentinel: a runtime tensor
        return None
    if not 0 <= buffer_index < model.BuffersLength():
        raise FormatError(f"{name}: tensor {index} '{tensor_name}' refers to missing buffer {buffer_index}")
    buffer = model.Buffers(buffer_index)
    raw = _buffer_bytes(buffer, data, name, buffer_index)
    if raw is None:
        return None
    if dtype is None:
        raise FormatError(f"{name}: tensor {index} '{tensor_name}' has unsupported type "
                          f"{TENSOR_TYPE_NAMES.get(type_code, type_code)}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise FormatError(f"{name}: tensor {index} '{tensor_name}' buffer holds {len(raw)} bytes, "
                          f"shape {shape} of {dtype} needs {expected}")
    return np.frombuffer(raw, dtype=dtype).reshape(shape).copy()


def _buffer_bytes(buffer, data: bytes, name: str, buffer_index: int):
    """Contents of a Buffer: inline vector, or (files > 2 GB) an offset/size into the file."""
    if buffer.DataLength():
        return buffer.DataAsNumpy().tobytes()
    offset, size = buffer.Offset(), buffer.Size()
    if offset > 1 and size > 0:
        if offset + size > len(data):
            raise FormatError(f"{name}: buffer {buffer_index} extends past the end of the file (truncated)")
        return bytes(data[offset:offset + size])
    return None


def _read_operator(entry, index: int, opcodes: list[str], tensor_count: int, name: str) -> Operator:
    opcode_index = entry.OpcodeIndex()
    if not 0 <= opcode_index < len(opcodes):
        raise FormatError(f"{name}: op {index} uses opcode index {opcode_index}, model defines {len(opcodes)}")
    opcode = opcodes[opcode_index]
    where = f"{name}: op {index} ({opcode})"
    inputs = _tensor_indices(entry.InputsAsNumpy(), tensor_count, f"{where} inputs")
    outputs = _tensor_indices(entry.OutputsAsNumpy(), tensor_count, f"{where} outputs")
    options = _read_options(entry, opcode, where)
    return Operator(index=index, opcode=opcode, inputs=inputs, outputs=outputs, options=options)


_WINDOW_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D")


def _check_window(op: Operator, tensors: list[Tensor], name: str) -> None:
    """A convolution or pooling op reads and writes NHWC tensors, and its stride, dilation
    and filter size are each at least 1 and, along each axis, at most twice the input size
    plus the kernel size. A larger window only ever sees padding, and the padding it implies
    would be allocated when the op is prepared (a corrupt field, not a model)."""
    if op.opcode not in _WINDOW_OPS or not op.inputs or op.inputs[0] < 0:
        return                                       # the interpreter names a missing input
    where = f"{name}: op {op.index} ({op.opcode})"
    x = tensors[op.inputs[0]]
    for role, index in (("input", op.inputs[0]), ("output", op.outputs[0] if op.outputs else -1)):
        if index >= 0 and len(tensors[index].shape) != 4:
            raise FormatError(f"{where}: {role} tensor {index} has shape {tensors[index].shape}, not NHWC")
    o = op.options
    if op.opcode.endswith("POOL_2D"):
        kernel = (1, 1)
        fields = {"stride_h": o["stride_h"], "stride_w": o["stride_w"], "filter_h": o["filter_h"],
                  "filter_w": o["filter_w"]}
    else:
        weights = tensors[op.inputs[1]] if len(op.inputs) > 1 and op.inputs[1] >= 0 else None
        kernel = weights.shape[1:3] if weights is not None and len(weights.shape) == 4 else (1, 1)
        fields = {"stride_h": o["stride_h"], "stride_w": o["stride_w"], "dilation_h": o["dilation_h"],
                  "dilation_w": o["dilation_w"]}
    for field, value in fields.items():
        axis = 0 if field.endswith("_h") else 1
        span = 2 * x.shape[1 + axis] + kernel[axis]
        reach = (kernel[axis] - 1) * value + 1 if field.startswith("dilation") else value
        if value < 1 or reach > span:
            raise FormatError(f"{where}: {field} {value} is out of range for the input of shape {x.shape}")


def _real_option(value: float, field: str, where: str) -> float:
    if not abs(value) <= MAX_REAL_OPTION:                                 # NaN fails too
        raise FormatError(f"{where}: {field} is {value}, not a finite number of magnitude <= 2^31")
    return float(value)


def _activation(code: int, where: str) -> str:
    activation = ACTIVATION_NAMES.get(code, f"ACTIVATION_{code}")
    if activation not in ("NONE", "RELU", "RELU6", "RELU_N1_TO_1"):
        raise FormatError(f"{where}: unsupported fused activation {activation}")
    return activation


def _padding(code: int, where: str) -> str:
    if code not in PADDING_NAMES:
        raise FormatError(f"{where}: unknown padding code {code}")
    return PADDING_NAMES[code]


def _options_table(entry, options_class, where: str):
    """The op's builtin options as ``options_class``, None when absent; the union's type tag
    must name that class, otherwise the bytes would be misread."""
    table = entry.BuiltinOptions()
    if table is None or entry.BuiltinOptionsType() == BuiltinOptions.NONE:
        return None
    expected = getattr(BuiltinOptions, options_class.__name__)
    if entry.BuiltinOptionsType() != expected:
        found = OPTIONS_TYPE_NAMES.get(entry.BuiltinOptionsType(), entry.BuiltinOptionsType())
        raise FormatError(f"{where}: builtin_options is {found}, expected {options_class.__name__}")
    options = options_class()
    options.Init(table.Bytes, table.Pos)
    return options


def _read_options(entry, opcode: str, where: str) -> dict:
    """The builtin options each supported op needs, with TFLite's defaults when absent."""
    if opcode == "CONV_2D":
        o = _options_table(entry, tflite.Conv2DOptions, where)
        if o is None:
            raise FormatError(f"{where}: missing Conv2DOptions")
        return dict(padding=_padding(o.Padding(), where), stride_h=o.StrideH(), stride_w=o.StrideW(),
                    dilation_h=o.DilationHFactor(), dilation_w=o.DilationWFactor(),
                    activation=_activation(o.FusedActivationFunction(), where))
    if opcode == "DEPTHWISE_CONV_2D":
        o = _options_table(entry, tflite.DepthwiseConv2DOptions, where)
        if o is None:
            raise FormatError(f"{where}: missing DepthwiseConv2DOptions")
        return dict(padding=_padding(o.Padding(), where), stride_h=o.StrideH(), stride_w=o.StrideW(),
                    dilation_h=o.DilationHFactor(), dilation_w=o.DilationWFactor(),
                    depth_multiplier=o.DepthMultiplier(), activation=_activation(o.FusedActivationFunction(), where))
    if opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        o = _options_table(entry, tflite.Pool2DOptions, where)
        if o is None:
            raise FormatError(f"{where}: missing Pool2DOptions")
        return dict(padding=_padding(o.Padding(), where), stride_h=o.StrideH(), stride_w=o.StrideW(),
                    filter_h=o.FilterHeight(), filter_w=o.FilterWidth(),
                    activation=_activation(o.FusedActivationFunction(), where))
    if opcode == "FULLY_CONNECTED":
        o = _options_table(entry, tflite.FullyConnectedOptions, where)
        if o is None:
            return dict(activation="NONE", keep_num_dims=False, weights_format=0)
        return dict(activation=_activation(o.FusedActivationFunction(), where),
                    keep_num_dims=bool(o.KeepNumDims()), weights_format=o.WeightsFormat())
    if opcode == "ADD":
        o = _options_table(entry, tflite.AddOptions, where)
        return dict(activation=_activation(o.FusedActivationFunction(), where) if o else "NONE")
    if opcode == "MEAN":
        o = _options_table(entry, tflite.ReducerOptions, where)
        return dict(keep_dims=bool(o.KeepDims()) if o else False)
    if opcode == "SOFTMAX":
        o = _options_table(entry, tflite.SoftmaxOptions, where)
        return dict(beta=_real_option(o.Beta(), "beta", where) if o else 1.0)
    if opcode == "RESHAPE":
        o = _options_table(entry, tflite.ReshapeOptions, where)
        new_shape = tuple(int(d) for d in o.NewShapeAsNumpy()) if (o is not None and o.NewShapeLength()) else None
        return dict(new_shape=new_shape)
    if opcode == "LEAKY_RELU":
        o = _options_table(entry, tflite.LeakyReluOptions, where)
        return dict(alpha=_real_option(o.Alpha(), "alpha", where) if o is not None else 0.0)
    return {}


# ------------------------------------------------------------------------------ writing
_TYPE_CODES = {dtype: code for code, dtype in NUMPY_DTYPES.items()}
_ACTIVATION_CODES = {name: code for code, name in ACTIVATION_NAMES.items()}
_PADDING_CODES = {name: code for code, name in PADDING_NAMES.items()}


def _schema(table: str):
    return importlib.import_module(f"tflite.{table}")


def _options(b: flatbuffers.Builder, op: Operator):
    """(BuiltinOptions type, offset) of an op's options, or (0, None)."""
    o = op.options

    def table(kind: str, **fields):
        module = _schema(kind)
        getattr(module, f"{kind}Start")(b)
        for name, value in fields.items():
            getattr(module, f"{kind}Add{name}")(b, value)
        return getattr(tflite.BuiltinOptions, kind), getattr(module, f"{kind}End")(b)

    if op.opcode == "CONV_2D":
        return table("Conv2DOptions", Padding=_PADDING_CODES[o["padding"]], StrideW=o["stride_w"],
                     StrideH=o["stride_h"], DilationWFactor=o.get("dilation_w", 1),
                     DilationHFactor=o.get("dilation_h", 1), FusedActivationFunction=_ACTIVATION_CODES[o["activation"]])
    if op.opcode == "DEPTHWISE_CONV_2D":
        return table("DepthwiseConv2DOptions", Padding=_PADDING_CODES[o["padding"]], StrideW=o["stride_w"],
                     StrideH=o["stride_h"], DepthMultiplier=o.get("depth_multiplier", 1),
                     DilationWFactor=o.get("dilation_w", 1), DilationHFactor=o.get("dilation_h", 1),
                     FusedActivationFunction=_ACTIVATION_CODES[o["activation"]])
    if op.opcode in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
        return table("Pool2DOptions", Padding=_PADDING_CODES[o["padding"]], StrideW=o["stride_w"],
                     StrideH=o["stride_h"], FilterWidth=o["filter_w"], FilterHeight=o["filter_h"],
                     FusedActivationFunction=_ACTIVATION_CODES[o.get("activation", "NONE")])
    if op.opcode == "FULLY_CONNECTED":
        return table("FullyConnectedOptions", FusedActivationFunction=_ACTIVATION_CODES[o.get("activation", "NONE")],
                     WeightsFormat=o.get("weights_format", 0), KeepNumDims=bool(o.get("keep_num_dims", False)))
    if op.opcode == "ADD":
        return table("AddOptions", FusedActivationFunction=_ACTIVATION_CODES[o.get("activation", "NONE")])
    if op.opcode == "MEAN":
        return table("ReducerOptions", KeepDims=bool(o.get("keep_dims", False)))
    if op.opcode == "SOFTMAX":
        return table("SoftmaxOptions", Beta=float(o.get("beta", 1.0)))
    if op.opcode == "LEAKY_RELU":
        return table("LeakyReluOptions", Alpha=float(o.get("alpha", 0.0)))
    if op.opcode == "RESHAPE" and o.get("new_shape") is not None:
        shape = _int32_vector(b, o["new_shape"])
        return table("ReshapeOptions", NewShape=shape)
    return 0, None


def _int32_vector(b: flatbuffers.Builder, values) -> int:
    return b.CreateNumpyVector(np.asarray(list(values), np.int32))


def _offset_vector(b: flatbuffers.Builder, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def write_tflite(program: Program) -> bytes:
    """Serialise a program as a TFLite flatbuffer (schema v3, one subgraph).  Constant
    tensors get one buffer each (buffer 0 is the empty sentinel)."""
    size_hint = 1024 + sum(t.data.nbytes for t in program.tensors if t.data is not None)
    b = flatbuffers.Builder(size_hint)
    Buffer, Tensor_, Quant = _schema("Buffer"), _schema("Tensor"), _schema("QuantizationParameters")
    buffer_offsets = []
    Buffer.BufferStart(b)
    buffer_offsets.append(Buffer.BufferEnd(b))
    tensor_buffer: dict[int, int] = {}
    for t in program.tensors:
        if t.data is None:
            continue
        raw = np.ascontiguousarray(t.data, t.dtype.newbyteorder("<")).reshape(-1).view(np.uint8)
        b.StartVector(1, raw.size, 16)        # 16-byte aligned data, as TFLite's writer does
        b.head -= raw.size
        b.Bytes[b.head:b.head + raw.size] = raw.tobytes()
        b.vectorNumElems = raw.size
        data = b.EndVector()
        Buffer.BufferStart(b)
        Buffer.BufferAddData(b, data)
        tensor_buffer[t.index] = len(buffer_offsets)
        buffer_offsets.append(Buffer.BufferEnd(b))
    metadata_buffer: dict[str, int] = {}
    for key, value in program.metadata.items():
        data = b.CreateNumpyVector(np.frombuffer(bytes(value), np.uint8))
        Buffer.BufferStart(b)
        Buffer.BufferAddData(b, data)
        metadata_buffer[key] = len(buffer_offsets)
        buffer_offsets.append(Buffer.BufferEnd(b))
    tensor_offsets = []
    for t in program.tensors:
        if t.dtype not in _TYPE_CODES:
            raise FormatError(f"{program.name}: tensor {t.index} '{t.name}' has type {t.dtype}, not writable")
        name = b.CreateString(t.name)
        shape = _int32_vector(b, t.shape)
        quantization = None
        if t.scales is not None:
            scales = b.CreateNumpyVector(np.asarray(t.scales, np.float32))
            zero_points = b.CreateNumpyVector(np.asarray(t.zero_points, np.int64))
            Quant.QuantizationParametersStart(b)
            Quant.QuantizationParametersAddScale(b, scales)
            Quant.QuantizationParametersAddZeroPoint(b, zero_points)
            Quant.QuantizationParametersAddQuantizedDimension(b, int(t.quantized_dimension))
            quantization = Quant.QuantizationParametersEnd(b)
        Tensor_.TensorStart(b)
        Tensor_.TensorAddShape(b, shape)
        Tensor_.TensorAddType(b, _TYPE_CODES[t.dtype])
        Tensor_.TensorAddName(b, name)
        Tensor_.TensorAddBuffer(b, tensor_buffer.get(t.index, 0))
        if quantization is not None:
            Tensor_.TensorAddQuantization(b, quantization)
        tensor_offsets.append(Tensor_.TensorEnd(b))
    codes = sorted({op.opcode for op in program.operators})
    Operator_ = _schema("Operator")
    operator_offsets = []
    for op in program.operators:
        inputs, outputs = _int32_vector(b, op.inputs), _int32_vector(b, op.outputs)
        options_type, options = _options(b, op)
        Operator_.OperatorStart(b)
        Operator_.OperatorAddOpcodeIndex(b, codes.index(op.opcode))
        Operator_.OperatorAddInputs(b, inputs)
        Operator_.OperatorAddOutputs(b, outputs)
        if options is not None:
            Operator_.OperatorAddBuiltinOptionsType(b, options_type)
            Operator_.OperatorAddBuiltinOptions(b, options)
        operator_offsets.append(Operator_.OperatorEnd(b))
    SubGraph = _schema("SubGraph")
    tensors_vector, operators_vector = _offset_vector(b, tensor_offsets), _offset_vector(b, operator_offsets)
    inputs_vector, outputs_vector = _int32_vector(b, program.inputs), _int32_vector(b, program.outputs)
    subgraph_name = b.CreateString(program.name)
    SubGraph.SubGraphStart(b)
    SubGraph.SubGraphAddTensors(b, tensors_vector)
    SubGraph.SubGraphAddInputs(b, inputs_vector)
    SubGraph.SubGraphAddOutputs(b, outputs_vector)
    SubGraph.SubGraphAddOperators(b, operators_vector)
    SubGraph.SubGraphAddName(b, subgraph_name)
    subgraph = SubGraph.SubGraphEnd(b)
    OperatorCode = _schema("OperatorCode")
    code_offsets = []
    for opcode in codes:
        code = getattr(BuiltinOperator, opcode)
        OperatorCode.OperatorCodeStart(b)
        OperatorCode.OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        OperatorCode.OperatorCodeAddBuiltinCode(b, code)
        OperatorCode.OperatorCodeAddVersion(b, 1)
        code_offsets.append(OperatorCode.OperatorCodeEnd(b))
    codes_vector = _offset_vector(b, code_offsets)
    subgraphs_vector = _offset_vector(b, [subgraph])
    buffers_vector = _offset_vector(b, buffer_offsets)
    description = b.CreateString(program.description or "edge-lls")
    Metadata = _schema("Metadata")
    metadata_offsets = []
    for key, index in metadata_buffer.items():
        key_offset = b.CreateString(key)
        Metadata.MetadataStart(b)
        Metadata.MetadataAddName(b, key_offset)
        Metadata.MetadataAddBuffer(b, index)
        metadata_offsets.append(Metadata.MetadataEnd(b))
    metadata_vector = _offset_vector(b, metadata_offsets) if metadata_offsets else None
    Model = _schema("Model")
    Model.ModelStart(b)
    Model.ModelAddVersion(b, 3)
    Model.ModelAddOperatorCodes(b, codes_vector)
    Model.ModelAddSubgraphs(b, subgraphs_vector)
    Model.ModelAddDescription(b, description)
    Model.ModelAddBuffers(b, buffers_vector)
    if metadata_vector is not None:
        Model.ModelAddMetadata(b, metadata_vector)
    b.Finish(Model.ModelEnd(b), file_identifier=FILE_IDENTIFIER)
    return bytes(b.Output())


def save_tflite(program: Program, path) -> int:
    """Write program as a .tflite file (atomically: a temporary, then a rename); returns
    its size in bytes."""
    from .model_file import write_bytes_atomic
    data = write_tflite(program)
    write_bytes_atomic(path, data)
    return len(data)

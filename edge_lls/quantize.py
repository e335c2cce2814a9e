"""Post-training int8 quantization (TFLite's scheme) and the op-list programs int8 models run as.

A *program* is what a .tflite file holds: tensors (batch-1 shapes) and TFLite operators in
order.  Our fp32 models become programs in three steps:

    float_program(model)            BN folded into conv/dense weights, TFLite ops in float32
    quantize_program(fp, batches)   min/max calibration of every activation on a sample,
                                    int8 codes for activations (per tensor, asymmetric),
                                    weights (per output channel for CONV_2D and
                                    DEPTHWISE_CONV_2D, per tensor for FULLY_CONNECTED,
                                    symmetric, [-127, 127]) and int32 biases (scale
                                    s_in * s_w[c], zero point 0)
    Int8Model(program)              runs it on the TFLite-exact int8 kernels (edge_lls.graph)

    q = quantize_model(model, calibration_x)        # the three steps at once
    q.predict(x_float); q.save("model_int8.tflite")  # a standard .tflite (LiteRT runs it)

Programs run through ProgramGraph, edge_lls.graph.Graph plus the ops our models need that
imported graphs did not: LEAKY_RELU (TFLite's integer semantics, see leaky_relu_s8).
Quantization parameters follow TFLite's converter: a tensor's real range is widened to
contain 0, scale = (max - min) / 255, zero point = round(-128 - min / scale) clamped;
pooling, RESHAPE and PAD outputs share their input's parameters (TFLite requires it);
SOFTMAX outputs are 1/256, -128.
"""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
import tflite
from tflite.BuiltinOperator import BuiltinOperator

from edge_lls import graph as graph_module
from edge_lls.errors import ConfigError, FormatError
from edge_lls.formats import tflite as tflite_format
from edge_lls.graph import Graph, Operator, Tensor
from edge_lls.kernels.activation import LEAKY_SLOPE
from edge_lls.kernels.fixedpoint import (
    INT8_MAX,
    INT8_MIN,
    dequantize,
    quantize,
    quantize_multiplier,
)
from edge_lls.kernels.geometry import tflite_padding, uniform_adaptive_pool
from edge_lls.kernels.int8 import leaky_relu_s8
from edge_lls.nn.fold import unit_affine

F32, I8, I32 = np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.int32)
WEIGHT_MAX = 127                    # symmetric weights use [-127, 127], as TFLite does
SHARED_QUANT_OPS = frozenset({"MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "PAD"})
FUSED = {"none": "NONE", "relu": "RELU", "relu6": "RELU6"}


# ====================================================================================
# LEAKY_RELU: parameters and the graph handler (kernels: kernels/int8/literal.py)
# ====================================================================================

def leaky_relu_params(input_scale: float, output_scale: float, alpha: float) -> tuple[int, int, int, int]:
    """(identity multiplier, shift, alpha multiplier, shift) as TFLite's LeakyReluPrepare: the
    real multipliers are computed in float32 (C++ float expressions) and then quantized."""
    s_in, s_out, a = np.float32(input_scale), np.float32(output_scale), np.float32(alpha)
    identity = float(np.float32(s_in / s_out))
    alpha_real = float(np.float32(np.float32(s_in * a) / s_out))
    return (*quantize_multiplier(identity), *quantize_multiplier(alpha_real))


def LEAKY_RELU(graph: Graph, op: Operator):
    """Graph handler (same contract as edge_lls.graph.OP_HANDLERS)."""
    g = graph_module
    x, x_value = g._activation_input(graph, op)
    out, out_buffer = g._output(graph, op)
    g._same_shape(x.shape, out.shape, graph, op, "output")
    alpha = float(op.options.get("alpha", 0.0))
    x_flat, out_flat = x_value.reshape(-1), out_buffer.reshape(-1)
    if x.dtype == np.float32:
        alpha32 = np.float32(alpha)

        def step():
            np.multiply(x_flat, alpha32, out=out_flat, where=x_flat <= 0)
            np.copyto(out_flat, x_flat, where=x_flat > 0)
        return step
    g._require_dtype(x, [np.int8], graph, op, "input")
    g._require_dtype(out, [np.int8], graph, op, "output")
    g._require_quantized(x, graph, op, "input")
    g._require_quantized(out, graph, op, "output")
    params = leaky_relu_params(x.scale, out.scale, alpha)
    zp_in, zp_out = x.zero_point, out.zero_point
    return lambda: leaky_relu_s8(x_flat, out_flat, zp_in, zp_out, *params)


EXTRA_HANDLERS = {"LEAKY_RELU": LEAKY_RELU}


class ProgramGraph(Graph):
    """edge_lls.graph.Graph with the extra ops of EXTRA_HANDLERS."""

    def _prepare(self, op: Operator):
        handler = EXTRA_HANDLERS.get(op.opcode)
        return handler(self, op) if handler is not None else super()._prepare(op)


# ====================================================================================
# Programs
# ====================================================================================

@dataclass
class Program:
    """A TFLite-style model: tensors with batch-1 shapes, operators in run order."""
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    name: str = "program"
    description: str = ""
    metadata: dict = dataclasses.field(default_factory=dict)   # TFLite metadata: name -> bytes

    def graph(self, batch: int = 1, fast: bool = True) -> ProgramGraph:
        """A runnable graph for ``batch`` samples (every runtime tensor's leading axis)."""
        tensors = []
        for t in self.tensors:
            if t.data is None and batch != 1:
                if not t.shape or t.shape[0] != 1:
                    raise ConfigError(f"{self.name}: tensor {t.index} '{t.name}' has shape {t.shape}, "
                                      f"no batch axis to resize")
                t = dataclasses.replace(t, shape=(batch, *t.shape[1:]))
            tensors.append(t)
        return ProgramGraph(tensors, self.operators, self.inputs, self.outputs, name=self.name, fast=fast)

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]

    def to_tflite(self) -> bytes:
        return write_tflite(self)

    def save(self, path) -> int:
        """Write a .tflite file; returns its size."""
        from edge_lls.formats.model_file import write_bytes_atomic
        data = self.to_tflite()
        write_bytes_atomic(path, data)
        return len(data)

    @classmethod
    def from_graph(cls, graph: Graph) -> Program:
        return cls(list(graph.tensors), list(graph.operators), tuple(graph.inputs), tuple(graph.outputs),
                   name=graph.name)


class _Builder:
    """Appends tensors and operators, for building programs."""

    def __init__(self):
        self.tensors: list[Tensor] = []
        self.operators: list[Operator] = []

    def tensor(self, name, shape, dtype=F32, data=None, scales=None, zero_points=None,
               quantized_dimension=0) -> int:
        dtype = np.dtype(dtype)
        index = len(self.tensors)
        if scales is not None:
            scales = np.atleast_1d(np.asarray(scales, np.float32))
            zero_points = np.atleast_1d(np.asarray(0 if zero_points is None else zero_points, np.int64))
            zero_points = np.broadcast_to(zero_points, scales.shape).copy()
        type_name = {F32: "FLOAT32", I8: "INT8", I32: "INT32"}[dtype]
        self.tensors.append(Tensor(index=index, name=name, shape=tuple(int(d) for d in shape), dtype=dtype,
                                   type_name=type_name, scales=scales, zero_points=zero_points,
                                   quantized_dimension=quantized_dimension,
                                   data=None if data is None else np.ascontiguousarray(data, dtype)))
        return index

    def op(self, opcode: str, inputs, outputs, **options) -> None:
        self.operators.append(Operator(index=len(self.operators), opcode=opcode, inputs=tuple(inputs),
                                       outputs=tuple(outputs), options=options))


# ====================================================================================
# fp32 Model -> float program (batch norm folded)
# ====================================================================================

def _emit_unit(b: _Builder, op, bn, x: int, shape: tuple, name: str) -> tuple[int, tuple]:
    """conv/dense + folded batch norm + activation; returns (output tensor, shape)."""
    from edge_lls.nn.layers import Conv2d, Dense
    w, bias = unit_affine(op, bn)
    act = bn.act_name if bn is not None else "none"
    if act not in FUSED and act != "leaky_relu":
        raise ConfigError(f"{name}: activation {act!r} has no TFLite int8 form")
    fused = FUSED.get(act, "NONE")
    if isinstance(op, Conv2d):
        win = op.window(shape)
        padding = tflite_padding(win)
        if padding is None:  # explicit padding TFLite cannot express: a PAD op, then VALID
            pads = np.array([[0, 0], [win.pad_top, win.pad_bottom], [win.pad_left, win.pad_right], [0, 0]], np.int32)
            padded_shape = (shape[0], shape[1] + win.pad_top + win.pad_bottom,
                            shape[2] + win.pad_left + win.pad_right, shape[3])
            p = b.tensor(f"{name}/pad", padded_shape)
            b.op("PAD", [x, b.tensor(f"{name}/paddings", (4, 2), I32, pads)], [p])
            x, shape, padding = p, padded_shape, "VALID"
        out_shape = (shape[0], win.out_h, win.out_w, op.cout)
        bias_t = b.tensor(f"{name}/bias", (op.cout,), F32, bias)
        out = b.tensor(f"{name}/out", out_shape)
        geometry = dict(padding=padding, stride_h=win.sh, stride_w=win.sw, dilation_h=1, dilation_w=1,
                        activation=fused)
        if op.groups == 1:
            w_t = b.tensor(f"{name}/weights", w.shape, F32, w)
            b.op("CONV_2D", [x, w_t, bias_t], [out], **geometry)
        elif op.groups == op.cin and w.shape[3] == 1:
            w_t = b.tensor(f"{name}/weights", (1, *w.shape[1:3], w.shape[0]), F32, w.transpose(3, 1, 2, 0))
            b.op("DEPTHWISE_CONV_2D", [x, w_t, bias_t], [out], depth_multiplier=op.cout // op.cin, **geometry)
        else:
            raise ConfigError(f"{name}: grouped convolution (groups={op.groups}) has no TFLite form")
    elif isinstance(op, Dense):
        out_shape = (shape[0], op.fout)
        w_t = b.tensor(f"{name}/weights", w.shape, F32, w)
        bias_t = b.tensor(f"{name}/bias", (op.fout,), F32, bias)
        out = b.tensor(f"{name}/out", out_shape)
        b.op("FULLY_CONNECTED", [x, w_t, bias_t], [out], activation=fused, keep_num_dims=False, weights_format=0)
    else:
        raise ConfigError(f"{name}: layer {type(op).__name__} has no TFLite form")
    if act == "leaky_relu":
        activated = b.tensor(f"{name}/leaky_relu", out_shape)
        b.op("LEAKY_RELU", [out], [activated], alpha=float(np.float32(LEAKY_SLOPE)))
        out = activated
    return out, out_shape


def _emit_post(b: _Builder, post, x: int, shape: tuple, name: str) -> tuple[int, tuple]:
    from edge_lls.nn.layers import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
    if isinstance(post, (MaxPool2d, AvgPool2d)):
        win = post.window(shape)
        padding = tflite_padding(win)
        if padding is None or (isinstance(post, AvgPool2d) and post.count_include_pad and win.padded):
            raise ConfigError(f"{name}: pooling padding {post.padding} has no TFLite form")
        opcode, kh, kw, sh, sw, oh, ow = ("MAX_POOL_2D" if isinstance(post, MaxPool2d) else "AVERAGE_POOL_2D",
                                          win.kh, win.kw, win.sh, win.sw, win.out_h, win.out_w)
    elif isinstance(post, AdaptiveAvgPool2d):
        rows, cols = uniform_adaptive_pool(shape[1], post.size[0]), uniform_adaptive_pool(shape[2], post.size[1])
        if rows is None or cols is None:
            raise ConfigError(f"{name}: adaptive pooling {shape[1]}x{shape[2]} -> {post.size[0]}x{post.size[1]} "
                              f"has uneven windows, no TFLite form")
        opcode, padding, (kh, sh), (kw, sw), (oh, ow) = "AVERAGE_POOL_2D", "VALID", rows, cols, post.size
    else:
        raise ConfigError(f"{name}: post op {type(post).__name__} has no TFLite form")
    out_shape = (shape[0], oh, ow, shape[3])
    out = b.tensor(f"{name}/out", out_shape)
    b.op(opcode, [x], [out], padding=padding, stride_h=sh, stride_w=sw, filter_h=kh, filter_w=kw, activation="NONE")
    return out, out_shape


def float_program(model, *, softmax: bool = False, name: str | None = None) -> Program:
    """The model as a float32 TFLite program (eval mode: batch norm folded).  softmax=True
    appends a SOFTMAX (as the VWW models end)."""
    b = _Builder()
    shape = (1, *model.input_shape)
    x = b.tensor("input", shape)
    first = x
    for block in model.blocks:
        for unit in block.units:
            x, shape = _emit_unit(b, unit.op, unit.bn, x, shape, unit.op.name)
        for j, post in enumerate(block.post):
            x, shape = _emit_post(b, post, x, shape, f"{block.name}.post{j}")
    x, shape = _emit_unit(b, model.classifier, None, x, shape, "classifier")
    if softmax:
        probabilities = b.tensor("softmax", shape)
        b.op("SOFTMAX", [x], [probabilities], beta=1.0)
        x = probabilities
    return Program(b.tensors, b.operators, (first,), (x,), name=name or model.name)


# ====================================================================================
# Calibration and int8 conversion
# ====================================================================================

def activation_quant(low: float, high: float) -> tuple[float, int]:
    """(scale, zero point) of an int8 tensor holding reals in [low, high] (TFLite converter:
    the range is widened to contain 0; the zero point is nudged into [-128, 127])."""
    low, high = min(float(low), 0.0), max(float(high), 0.0)
    if not (np.isfinite(low) and np.isfinite(high)):
        raise ConfigError(f"calibration produced a non-finite range [{low}, {high}]")
    if high - low < 1e-12:
        high = low + 1.0
    scale = float(np.float32((high - low) / (INT8_MAX - INT8_MIN)))
    zero_point = int(np.clip(round(INT8_MIN - low / scale), INT8_MIN, INT8_MAX))
    return scale, zero_point


def weight_quant(w: np.ndarray, axis: int | None) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 weights: (codes, float32 scales), per slice along ``axis`` (None:
    one scale).  scale = max|w| / 127 (1 for an all-zero slice), codes round half away."""
    w = np.asarray(w, np.float32)
    if axis is None:
        maxabs = np.array([np.abs(w).max(initial=0.0)], np.float32)
        shaped = maxabs.reshape((1,) * w.ndim)
    else:
        others = tuple(a for a in range(w.ndim) if a != axis)
        maxabs = np.abs(w).max(axis=others, initial=0.0).astype(np.float32)
        shape = [1] * w.ndim
        shape[axis] = -1
        shaped = maxabs.reshape(shape)
    scales = np.where(maxabs > 0, maxabs / np.float32(WEIGHT_MAX), np.float32(1.0)).astype(np.float32)
    ratio = w.astype(np.float64) / scales.reshape(shaped.shape).astype(np.float64)
    codes = np.clip(np.sign(ratio) * np.floor(np.abs(ratio) + 0.5), -WEIGHT_MAX, WEIGHT_MAX).astype(np.int8)
    return codes, scales


def bias_quant(bias: np.ndarray, input_scale: float, weight_scales: np.ndarray) -> np.ndarray:
    """int32 bias with scale input_scale * weight_scale[c] (zero point 0)."""
    scales = np.float64(np.float32(input_scale)) * weight_scales.astype(np.float64)
    codes = np.round(np.asarray(bias, np.float64) / scales)
    return np.clip(codes, -(2 ** 31) + 1, 2 ** 31 - 1).astype(np.int32)


class RangeObserver:
    """Min/max of every runtime tensor of a float program over calibration batches."""

    def __init__(self, program: Program):
        self.program = program
        self.low: dict[int, float] = {}
        self.high: dict[int, float] = {}
        self._graphs: dict[int, ProgramGraph] = {}
        self.samples = 0

    def observe(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, np.float32)
        graph = self._graphs.get(len(x))
        if graph is None:
            if len(self._graphs) >= 2:
                self._graphs.pop(next(iter(self._graphs)))
            graph = self._graphs[len(x)] = self.program.graph(batch=len(x))
        for index, value in graph.run_all([x]).items():
            if value.size == 0:
                continue
            low, high = float(value.min()), float(value.max())
            self.low[index] = min(self.low.get(index, low), low)
            self.high[index] = max(self.high.get(index, high), high)
        self.samples += len(x)


def quantize_program(fp: Program, batches: Iterable[np.ndarray], *, input_quant: tuple[float, int] | None = None,
                     name: str | None = None) -> Program:
    """int8 program from a float program and calibration batches (float32 inputs as the
    float program takes them).  input_quant fixes the input tensor's (scale, zero point)
    (e.g. to match an existing int8 producer) instead of calibrating it."""
    observer = RangeObserver(fp)
    for x in batches:
        observer.observe(x)
    if observer.samples == 0:
        raise ConfigError(f"{fp.name}: the calibration set is empty")
    return quantize_with_ranges(fp, observer.low, observer.high, input_quant=input_quant, name=name)


def quantize_with_ranges(fp: Program, low: dict, high: dict, *, input_quant=None, name=None) -> Program:
    """int8 program from a float program and observed ranges per runtime tensor."""
    quant: dict[int, tuple[float, int]] = {}
    (input_index,) = fp.inputs
    quant[input_index] = input_quant if input_quant is not None else activation_quant(low[input_index],
                                                                                        high[input_index])
    for op in fp.operators:
        out = op.outputs[0]
        if op.opcode in SHARED_QUANT_OPS:
            quant[out] = quant[op.inputs[0]]
        elif op.opcode == "SOFTMAX":
            quant[out] = (1.0 / 256.0, -128)
        else:
            quant[out] = activation_quant(low[out], high[out])
    tensors = list(fp.tensors)
    for index, (scale, zero_point) in quant.items():
        t = tensors[index]
        tensors[index] = dataclasses.replace(t, dtype=I8, type_name="INT8", scales=np.array([scale], np.float32),
                                             zero_points=np.array([zero_point], np.int64), quantized_dimension=0)
    for op in fp.operators:
        if op.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
            continue
        weights, bias = fp.tensors[op.inputs[1]], fp.tensors[op.inputs[2]]
        axis = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": None}[op.opcode]
        codes, scales = weight_quant(weights.data, axis)
        tensors[weights.index] = dataclasses.replace(
            weights, dtype=I8, type_name="INT8", data=codes, scales=scales,
            zero_points=np.zeros(scales.shape, np.int64), quantized_dimension=axis or 0)
        channels = bias.shape[0]
        per_channel = np.broadcast_to(scales, (channels,)) if scales.size == 1 else scales
        input_scale = quant[op.inputs[0]][0]
        bias_scales = (np.float32(input_scale) * scales).astype(np.float32)   # one scale for per-tensor weights
        tensors[bias.index] = dataclasses.replace(
            bias, dtype=I32, type_name="INT32", data=bias_quant(bias.data, input_scale, per_channel),
            scales=bias_scales, zero_points=np.zeros(bias_scales.shape, np.int64), quantized_dimension=0)
    return Program(tensors, list(fp.operators), fp.inputs, fp.outputs, name=name or fp.name)


# ====================================================================================
# Running int8 programs on float data
# ====================================================================================

class Int8Model:
    """An int8 program as a classifier of float images (NHWC, the values the fp32 model
    takes).  Graphs are built per batch size (at most two kept)."""

    def __init__(self, program: Program, fast: bool = True, batch_size: int = 256):
        if len(program.inputs) != 1 or len(program.outputs) != 1:
            raise FormatError(f"{program.name}: expected one input and one output tensor")
        self.program, self.fast, self.batch_size = program, fast, batch_size
        self.input = program.tensors[program.inputs[0]]
        self.output = program.tensors[program.outputs[0]]
        self._graphs: dict[int, ProgramGraph] = {}

    @property
    def input_shape(self) -> tuple:
        return tuple(self.input.shape[1:])

    def graph(self, batch: int) -> ProgramGraph:
        graph = self._graphs.get(batch)
        if graph is None:
            if len(self._graphs) >= 2:
                self._graphs.pop(next(iter(self._graphs)))
            graph = self._graphs[batch] = self.program.graph(batch=batch, fast=self.fast)
        return graph

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        if self.input.dtype == np.float32:
            return np.ascontiguousarray(x, np.float32)
        return quantize(x, self.input.scale, self.input.zero_point)

    def run(self, x_codes: np.ndarray) -> np.ndarray:
        """Raw output tensor (N, ...) for inputs already in the input tensor's type."""
        x_codes = np.asarray(x_codes)
        if x_codes.shape[1:] != self.input_shape:
            raise ConfigError(f"{self.program.name}: input shape {x_codes.shape[1:]} does not match {self.input_shape}")
        outputs = []
        for start in range(0, len(x_codes), self.batch_size):
            chunk = x_codes[start:start + self.batch_size]
            outputs.append(self.graph(len(chunk)).run([np.ascontiguousarray(chunk, self.input.dtype)])[0])
        return np.concatenate(outputs) if outputs else np.zeros((0, *self.output.shape[1:]), self.output.dtype)

    def outputs(self, x: np.ndarray) -> np.ndarray:
        """Real-valued outputs (dequantized) for float inputs."""
        raw = self.run(self.quantize_input(x))
        if raw.dtype == np.int8:
            return dequantize(raw, self.output.scale, self.output.zero_point)
        return raw

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.run(self.quantize_input(x)).reshape(len(x), -1).argmax(axis=1)

    def accuracy(self, batches) -> float:
        correct = total = 0
        for x, y in batches:
            correct += int((self.predict(x) == np.asarray(y)).sum())
            total += len(y)
        return correct / max(total, 1)

    def save(self, path) -> int:
        return self.program.save(path)


def quantize_model(model, calibration, *, batch_size: int = 64, name: str | None = None,
                   softmax: bool = False) -> Int8Model:
    """Post-training int8 quantization of an fp32 Model.  calibration: float32 images
    (N, H, W, C) as the model takes them, or an iterable of such batches."""
    fp = float_program(model, softmax=softmax, name=name)
    if isinstance(calibration, np.ndarray):
        if len(calibration) == 0:
            raise ConfigError("the calibration set is empty")
        data = calibration
        calibration = (data[i:i + batch_size] for i in range(0, len(data), batch_size))
    return Int8Model(quantize_program(fp, calibration, name=name))


# ====================================================================================
# .tflite reading (with LEAKY_RELU) and writing
# ====================================================================================

def read_program(path) -> Program:
    """A .tflite file as a Program.  Unlike load_tflite it also reads LeakyReluOptions."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise FormatError(f"cannot read {path}: {error.strerror}") from error
    tflite_format._check_header(data, path.name)
    try:
        model = tflite.Model.GetRootAs(data, 0)
        tensors, operators, inputs, outputs = tflite_format._read_subgraph(model, data, path.name)
        subgraph = model.Subgraphs(0)
        for op in operators:
            if op.opcode == "LEAKY_RELU":
                options = tflite_format._options_table(subgraph.Operators(op.index), tflite.LeakyReluOptions,
                                                       f"{path.name}: op {op.index} (LEAKY_RELU)")
                op.options = dict(alpha=float(options.Alpha()) if options is not None else 0.0)
        description = model.Description().decode("utf-8", "replace") if model.Description() else ""
        metadata = {}
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if entry.Name() is None or not 0 < entry.Buffer() < model.BuffersLength():
                continue
            raw = tflite_format._buffer_bytes(model.Buffers(entry.Buffer()), data, path.name, entry.Buffer())
            metadata[entry.Name().decode("utf-8", "replace")] = raw or b""
    except tflite_format._TRUNCATION_ERRORS as error:
        raise FormatError(f"{path.name}: truncated or corrupt flatbuffer ({type(error).__name__}: {error})") from error
    return Program(tensors, operators, inputs, outputs, name=path.name, description=description, metadata=metadata)


_TYPE_CODES = {dtype: code for code, dtype in tflite_format.NUMPY_DTYPES.items()}
_ACTIVATION_CODES = {name: code for code, name in tflite_format.ACTIVATION_NAMES.items()}
_PADDING_CODES = {name: code for code, name in tflite_format.PADDING_NAMES.items()}


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
    b.Finish(Model.ModelEnd(b), file_identifier=tflite_format.FILE_IDENTIFIER)
    return bytes(b.Output())


# ====================================================================================
# Splicing: a program's prefix followed by another program
# ====================================================================================

def splice(base: Program, cut_op: int, tail: Program, *, name: str | None = None,
           description: str = "", metadata: dict | None = None) -> Program:
    """base's operators [0, cut_op) followed by tail, whose single input is base's tensor
    feeding op cut_op (operand 0); unused base tensors are dropped.  The tail's input must
    carry the same type and quantization as that tensor."""
    if cut_op < len(base.operators):
        cut_tensor = base.operators[cut_op].inputs[0]
    else:
        cut_tensor = base.outputs[0]
    (tail_input,) = tail.inputs
    a, t = base.tensors[cut_tensor], tail.tensors[tail_input]
    if a.dtype != t.dtype or a.scales is None and t.scales is not None or (
            a.scales is not None and (t.scales is None or a.scale != t.scale or a.zero_point != t.zero_point)):
        raise ConfigError(f"splice: tail input '{t.name}' does not match '{a.name}' (type or quantization)")
    kept_ops = base.operators[:cut_op]
    used = list(dict.fromkeys([*base.inputs, *(i for op in kept_ops for i in (*op.inputs, *op.outputs) if i >= 0),
                               cut_tensor]))
    mapping = {old: new for new, old in enumerate(used)}
    tensors = [dataclasses.replace(base.tensors[old], index=new) for new, old in enumerate(used)]
    tail_mapping = {tail_input: mapping[cut_tensor]}
    for t in tail.tensors:
        if t.index != tail_input:
            tail_mapping[t.index] = len(tensors)
            tensors.append(dataclasses.replace(t, index=len(tensors)))
    operators = [dataclasses.replace(op, index=i, inputs=tuple(mapping.get(x, -1) if x >= 0 else -1 for x in op.inputs),
                                     outputs=tuple(mapping[x] for x in op.outputs)) for i, op in enumerate(kept_ops)]
    for op in tail.operators:
        operators.append(dataclasses.replace(op, index=len(operators), options=dict(op.options),
                                             inputs=tuple(tail_mapping[x] if x >= 0 else -1 for x in op.inputs),
                                             outputs=tuple(tail_mapping[x] for x in op.outputs)))
    return Program(tensors, operators, tuple(mapping[i] for i in base.inputs),
                   tuple(tail_mapping[i] for i in tail.outputs), name=name or base.name, description=description,
                   metadata=dict(metadata or {}))


def subprogram(program: Program, start_op: int, end_op: int | None = None) -> Program:
    """Operators [start_op, end_op) as a program whose input is operand 0 of start_op and
    whose output is the output of the last operator."""
    end_op = len(program.operators) if end_op is None else end_op
    ops = program.operators[start_op:end_op]
    first = ops[0].inputs[0]
    used = list(dict.fromkeys([first, *(i for op in ops for i in (*op.inputs, *op.outputs) if i >= 0)]))
    mapping = {old: new for new, old in enumerate(used)}
    tensors = [dataclasses.replace(program.tensors[old], index=new) for new, old in enumerate(used)]
    operators = [dataclasses.replace(op, index=i, inputs=tuple(mapping[x] if x >= 0 else -1 for x in op.inputs),
                                     outputs=tuple(mapping[x] for x in op.outputs)) for i, op in enumerate(ops)]
    return Program(tensors, operators, (mapping[first],), (mapping[ops[-1].outputs[0]],), name=program.name)




# ====================================================================================
# Calibration data
# ====================================================================================

def calibration_sample(split, images: int, seed: int = 0) -> np.ndarray:
    """The first ``images`` training images of a seeded shuffle, float32 (no augmentation)."""
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"--calibration-images must be an integer >= 1, got {images!r}")
    order = split.batch_order(shuffle=True, seed=seed)[:images]
    return split.subset(np.sort(order)).arrays()[0]


__all__ = ["Program", "ProgramGraph", "Int8Model", "float_program", "quantize_program", "quantize_model",
           "activation_quant", "weight_quant", "bias_quant", "read_program", "write_tflite",
           "splice", "subprogram", "leaky_relu_params",
           "calibration_sample"]

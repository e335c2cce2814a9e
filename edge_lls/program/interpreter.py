"""The interpreter: a program prepared into a runnable graph.

Loading a graph prepares every operator once: a handler named after the TFLite op (CONV_2D,
DEPTHWISE_CONV_2D, ...) checks the op's tensors, precomputes everything that depends only on
constants (per-channel multipliers and shifts, clamp ranges, folded biases, float32 weight
copies) and returns a *step*: a closure that runs the op on preallocated buffers.  Running the
graph is then a loop over steps with no allocation and no per-op decision making.  In fast mode
most int8 layers are instead rows of a NativeProgram (kernels.run_program): consecutive rows
run as one compiled call, so a whole model like VWW is a single call with no Python dispatch
per layer, and their transient buffers (padded inputs, patches, accumulators) share one
scratch buffer per role to keep the working set in L2.

int8 ops follow TFLite's integer semantics bit for bit (edge_lls/kernels/int8/); float32
ops are plain NumPy.  Every runtime tensor has its own buffer, so after a run every
intermediate tensor is still available (Graph.run_all).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from numba import typed, types

from edge_lls.errors import FormatError
from edge_lls.formats.tflite import parse_tflite, read_tflite
from edge_lls.program.ir import Operator, Program, Tensor
from edge_lls.program.memory import ProgramPlan, plan_program
from edge_lls.program.params import (ConvParams, DepthwiseConvParams, Dims, FullyConnectedParams, LeakyReluParams,
                                     PadParams, PoolParams, ReshapeParams, SoftmaxParams, nhwc, quant_params)
from edge_lls.kernels import blas
from edge_lls.kernels import int8 as kernels
from edge_lls.kernels.geometry import same_padding, valid_output
from edge_lls.kernels.fixedpoint import (
    ADD_LEFT_SHIFT,
    activation_range_s8,
    add_params,
    clamp_first_tables,
    conv_output_multipliers,
    mean_multiplier,
    quantize_multiplier,
    requantize_tables,
    softmax_params,
)

Step = Callable[[], None]

# How int8 results are rounded: "litert" as LiteRT's reference kernels (the default; every
# tensor bit-exact with LiteRT BUILTIN_REF), "tflm" as TensorFlow Lite Micro's reference
# kernels and CMSIS-NN, what a microcontroller computes. They differ in one place:
# FULLY_CONNECTED's requantization rounds once in LiteRT and twice in TFLM (as every
# convolution does in both).
REQUANTIZE_MODES = ("litert", "tflm")

# int32 accumulator guard: taps * max|x - zp| * max|w| + max|bias| must stay below 2^31.
MAX_PRODUCT_MAGNITUDE = 255 * 128


class Graph:
    """A prepared, runnable graph.  Build it with prepare(program) or load_tflite(path)."""

    def __init__(self, tensors: list[Tensor], operators: list[Operator], inputs: tuple[int, ...],
                 outputs: tuple[int, ...], name: str = "graph", fast: bool = True, requantize: str = "litert",
                 arena: ProgramPlan | None = None):
        if requantize not in REQUANTIZE_MODES:
            raise ValueError(f"requantize must be one of {', '.join(REQUANTIZE_MODES)}, got {requantize!r}")
        self.name = name
        self.requantize = requantize
        # With a plan (program/memory.py), every runtime tensor is a view into one arena at
        # its planned offset, as on a microcontroller; without, each has its own buffer.
        self.arena = arena
        self.memory = np.zeros(arena.arena_bytes, np.uint8) if arena is not None else None
        self.tensors = tensors
        self.operators = operators
        self.inputs = tuple(inputs)
        self.outputs = tuple(outputs)
        self.fast = fast
        self.buffers: dict[int, np.ndarray] = {}
        self.float_mirrors: dict[int, np.ndarray] = {}  # int8 tensor -> float32 (pixels, C) copy
        self._mirror_requests, self._hand_offs = self._plan_float_mirrors() if fast else (set(), set())
        self.native = NativeProgram()
        self.params: dict[int, object] = {}    # op index -> its prepared record (program/params.py)
        for index in self.inputs:
            self._allocate(index, "graph input")
        self._steps: list[Step] = self.native.merge([self._prepare(op) for op in operators])
        for index in self.outputs:
            if index not in self.buffers and self.tensors[index].data is None:
                raise FormatError(f"{name}: graph output tensor {index} '{self.tensors[index].name}' is never produced")

    # ---------------------------------------------------------------- public API

    @property
    def input_details(self) -> list[dict]:
        return [self._details(i) for i in self.inputs]

    @property
    def output_details(self) -> list[dict]:
        return [self._details(i) for i in self.outputs]

    def run(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        """Run once; returns a copy of every graph output tensor, in output order."""
        self._execute(inputs)
        return [self.value(i).copy() for i in self.outputs]

    def run_all(self, inputs: list[np.ndarray]) -> dict[int, np.ndarray]:
        """Run once; returns a copy of every runtime tensor (inputs, intermediates, outputs)
        keyed by tensor index (names: graph.tensors[index].name)."""
        self._execute(inputs)
        return {index: buffer.copy() for index, buffer in self.buffers.items()}

    def value(self, index: int) -> np.ndarray:
        """Current contents of a tensor: its constant data or its runtime buffer."""
        tensor = self.tensors[index]
        return tensor.data if tensor.data is not None else self.buffers[index]

    # ---------------------------------------------------------------- running

    def _execute(self, inputs: list[np.ndarray]) -> None:
        if len(inputs) != len(self.inputs):
            raise ValueError(f"{self.name}: expected {len(self.inputs)} input arrays, got {len(inputs)}")
        for index, array in zip(self.inputs, inputs):
            buffer = self.buffers[index]
            array = np.asarray(array)
            if array.shape != buffer.shape or array.dtype != buffer.dtype:
                raise ValueError(f"{self.name}: input '{self.tensors[index].name}' must be {buffer.dtype} "
                                 f"{buffer.shape}, got {array.dtype} {array.shape}")
            np.copyto(buffer, array)
        for step in self._steps:
            step()

    # ---------------------------------------------------------------- preparation helpers

    def _details(self, index: int) -> dict:
        tensor = self.tensors[index]
        return dict(name=tensor.name, index=index, shape=tensor.shape, dtype=tensor.dtype,
                    scale=tensor.scale, zero_point=tensor.zero_point)

    def _prepare(self, op: Operator) -> Step:
        handler = OP_HANDLERS.get(op.opcode)
        if handler is None:
            raise FormatError(f"{self.name}: unsupported op {op.opcode} (op {op.index})")
        return handler(self, op)

    def _allocate(self, index: int, role: str) -> np.ndarray:
        tensor = self.tensors[index]
        if tensor.dtype is None:
            raise FormatError(f"{self.name}: {role} tensor {index} '{tensor.name}' has unsupported type {tensor.type_name}")
        if index not in self.buffers:
            if self.arena is not None and index in self.arena.offsets:
                start = self.arena.offsets[index]
                nbytes = int(np.prod(tensor.shape, dtype=np.int64)) * np.dtype(tensor.dtype).itemsize
                self.buffers[index] = self.memory[start:start + nbytes].view(tensor.dtype).reshape(tensor.shape)
            else:
                self.buffers[index] = np.zeros(tensor.shape, tensor.dtype)
        return self.buffers[index]

    def _plan_float_mirrors(self) -> tuple[set[int], set[int]]:
        """int8 tensors read by a 1x1 GEMM convolution: their producer also writes float32.
        Second set: those whose only reader is the very next op (not a graph output), whose
        float32 copy is dead once that op has run (see mirror_for_output)."""
        wanted, hand_offs = set(), set()
        readers: dict[int, int] = {}
        for op in self.operators:
            for index in op.inputs:
                readers[index] = readers.get(index, 0) + 1
        for position, op in enumerate(self.operators):
            if op.opcode == "CONV_2D" and len(op.inputs) >= 2 and min(op.inputs[:2]) >= 0 \
                    and self._is_pointwise_gemm(op):
                index = op.inputs[0]
                wanted.add(index)
                produced_just_before = position > 0 and index in self.operators[position - 1].outputs
                if produced_just_before and readers[index] == 1 and index not in self.outputs:
                    hand_offs.add(index)
        return wanted, hand_offs

    def _is_pointwise_gemm(self, op: Operator) -> bool:
        """Malformed ops answer False here; their handler reports the problem."""
        x, w = self.tensors[op.inputs[0]], self.tensors[op.inputs[1]]
        o = op.options
        return (x.dtype == np.int8 and w.data is not None and len(w.shape) == 4 and w.shape[1:3] == (1, 1)
                and o.get("stride_h") == 1 and o.get("stride_w") == 1
                and w.shape[3] <= kernels.FLOAT32_EXACT_MAX_TAPS)

    def mirror_for_output(self, index: int, hand_off: bool = False) -> np.ndarray | Scratch:
        """Float32 (pixels, C) buffer the producer of ``index`` should also fill, or an empty
        (0, 0) array when no GEMM consumer asked for one.  With hand_off (a native producer
        whose own inputs are int8) a copy read only by the next op is shared Scratch of the
        native program instead of a buffer of its own; a consumer that is not native then
        converts the int8 tensor itself."""
        if index not in self._mirror_requests:
            return np.zeros((0, 0), np.float32)
        shape = self.tensors[index].shape
        if hand_off and index in self._hand_offs:
            mirror = Scratch("mirror", int(np.prod(shape)))
        else:
            mirror = np.zeros((int(np.prod(shape[:-1])), shape[-1]), np.float32)
        self.float_mirrors[index] = mirror
        return mirror


@dataclass(frozen=True)
class Scratch:
    """Float32 working memory of a native layer that does not outlive its call: every layer's
    scratch of one role shares one buffer (a smaller footprint keeps the run in L2)."""
    role: str
    size: int


def NOTHING() -> None:
    """The step of an op that needs no work at run time (a RESHAPE that is a view)."""


class NativeStep:
    """A prepared layer that runs inside kernels.run_program (row ``row`` of its program).
    Called on its own it runs just that row; NativeProgram.merge turns runs of them into one
    call."""

    def __init__(self, program: "NativeProgram", row: int):
        self.program, self.row = program, row

    def __call__(self) -> None:
        self.program.run(self.row, self.row + 1)


class NativeProgram:
    """Fast-path layers as rows of an int64 table over typed lists of flat arrays (layout in
    edge_lls/kernels/int8/program.py, run_program), so that a run of consecutive layers is one
    compiled call: no Python dispatch and no argument unboxing per layer."""

    def __init__(self):
        self.f32 = typed.List.empty_list(types.float32[::1])
        self.i8 = typed.List.empty_list(types.int8[::1])
        self.i64 = typed.List.empty_list(types.int64[::1])
        for store, dtype in ((self.f32, np.float32), (self.i8, np.int8), (self.i64, np.int64)):
            store.append(np.zeros(0, dtype))  # index 0: "none"
        self.rows: list[np.ndarray] = []
        self.table: np.ndarray | None = None  # np.stack(rows), built as rows are added
        self._scratch: list[tuple[int, str, int]] = []  # (f32 list index, role, size)
        slots = blas.SLOTS
        self.slot = (slots.ints[0], slots.floats[0], slots.chars[0])

    def _index(self, store, array) -> int:
        if isinstance(array, Scratch):
            store.append(np.zeros(0, np.float32))  # replaced by a view of the shared buffer in merge()
            self._scratch.append((len(store) - 1, array.role, array.size))
            return len(store) - 1
        if array is None or array.size == 0:
            return 0
        if not array.flags.c_contiguous:  # reshape(-1) would copy: the kernels must see the real buffer
            raise ValueError("native program arrays must be C-contiguous")
        store.append(array.reshape(-1))  # a view: the kernels write into the graph's own buffers
        return len(store) - 1

    def add(self, kind: int, floats=(), bytes_=(), longs=(), ints=()) -> NativeStep:
        row = np.zeros(kernels.PROGRAM_WIDTH, np.int64)
        row[0] = kind
        for column, store, arrays, limit in ((kernels.FLOATS, self.f32, floats, kernels.BYTES),
                                             (kernels.BYTES, self.i8, bytes_, kernels.LONGS),
                                             (kernels.LONGS, self.i64, longs, kernels.INTS)):
            assert column + len(arrays) <= limit
            for k, array in enumerate(arrays):
                row[column + k] = self._index(store, array)
        assert kernels.INTS + len(ints) <= kernels.PROGRAM_WIDTH
        row[kernels.INTS:kernels.INTS + len(ints)] = [int(v) for v in ints]
        self.rows.append(row)
        self.table = np.stack(self.rows)
        return NativeStep(self, len(self.rows) - 1)

    def run(self, start: int, stop: int) -> None:
        kernels.run_program(self.table, start, stop, self.f32, self.i8, self.i64, *self.slot)

    def merge(self, steps: list[Step]) -> list[Step]:
        """Consecutive NativeSteps (consecutive rows) -> one step running them all.  Also lays
        every layer's scratch of one role over a single shared buffer."""
        for role in {role for _, role, _ in self._scratch}:
            shared = np.zeros(max(size for _, r, size in self._scratch if r == role), np.float32)
            for index, r, size in self._scratch:
                if r == role:
                    self.f32[index] = shared[:size]
        merged: list[Step] = []
        steps = [step for step in steps if step is not NOTHING]
        k = 0
        while k < len(steps):
            step = steps[k]
            if not isinstance(step, NativeStep):
                merged.append(step)
                k += 1
                continue
            while k + 1 < len(steps) and isinstance(steps[k + 1], NativeStep) and steps[k + 1].row == steps[k].row + 1:
                k += 1
            start, stop = step.row, steps[k].row + 1
            merged.append(step if stop == start + 1 else self._segment(start, stop))
            k += 1
        return merged

    def _segment(self, start: int, stop: int) -> Step:
        table, lists, slot = self.table, (self.f32, self.i8, self.i64), self.slot
        run = kernels.run_program
        return lambda: run(table, start, stop, *lists, *slot)


# ====================================================================================
# Operand access and validation shared by the handlers
# ====================================================================================

def _where(graph: Graph, op: Operator) -> str:
    return f"{graph.name}: op {op.index} ({op.opcode})"


def _operand(graph: Graph, op: Operator, position: int, field_name: str, required: bool = True) -> Tensor | None:
    if position >= len(op.inputs) or op.inputs[position] == -1:
        if required:
            raise FormatError(f"{_where(graph, op)}: missing {field_name} tensor")
        return None
    return graph.tensors[op.inputs[position]]


def _activation_input(graph: Graph, op: Operator, position: int = 0) -> tuple[Tensor, np.ndarray]:
    tensor = _operand(graph, op, position, "input")
    if tensor.data is not None:
        return tensor, tensor.data
    if tensor.index not in graph.buffers:
        raise FormatError(f"{_where(graph, op)}: input tensor {tensor.index} '{tensor.name}' is used before it is produced")
    return tensor, graph.buffers[tensor.index]


def _output(graph: Graph, op: Operator, position: int = 0) -> tuple[Tensor, np.ndarray]:
    if position >= len(op.outputs):
        raise FormatError(f"{_where(graph, op)}: missing output tensor")
    index = op.outputs[position]
    return graph.tensors[index], graph._allocate(index, "output")


def _constant(graph: Graph, op: Operator, position: int, field_name: str) -> Tensor:
    tensor = _operand(graph, op, position, field_name)
    if tensor.data is None:
        raise FormatError(f"{_where(graph, op)}: {field_name} tensor {tensor.index} '{tensor.name}' must be constant")
    return tensor


def _require(condition: bool, graph: Graph, op: Operator, message: str) -> None:
    if not condition:
        raise FormatError(f"{_where(graph, op)}: {message}")


def _require_dtype(tensor: Tensor, dtypes, graph: Graph, op: Operator, role: str) -> None:
    allowed = [np.dtype(d) for d in dtypes]
    _require(tensor.dtype in allowed, graph, op,
             f"{role} tensor '{tensor.name}' has type {tensor.type_name}, expected {'/'.join(str(d) for d in allowed)}")


def _require_quantized(tensor: Tensor, graph: Graph, op: Operator, role: str) -> None:
    _require(tensor.scales is not None, graph, op, f"{role} tensor '{tensor.name}' is int8 but has no quantization scale")


def _same_shape(expected, actual, graph: Graph, op: Operator, role: str) -> None:
    _require(tuple(expected) == tuple(actual), graph, op, f"{role} shape {tuple(actual)} does not match expected {tuple(expected)}")


def _window_geometry(padding: str, in_size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(output size, padding before) as TFLite computes them for SAME / VALID."""
    if padding == "SAME":
        out_size, before, _ = same_padding(in_size, kernel, stride, dilation)
        return out_size, before
    return valid_output(in_size, kernel, stride, dilation), 0


def _spatial_setup(graph: Graph, op: Operator, x: Tensor, out: Tensor, kernel_h: int, kernel_w: int,
                   dilation_h: int = 1, dilation_w: int = 1) -> tuple[int, int]:
    """Checks NHWC ranks and output size; returns (pad_top, pad_left)."""
    o = op.options
    _require(len(x.shape) == 4, graph, op, f"input shape {x.shape} is not NHWC")
    _require(len(out.shape) == 4, graph, op, f"output shape {out.shape} is not NHWC")
    _require(min(o["stride_h"], o["stride_w"], dilation_h, dilation_w) >= 1, graph, op, "stride and dilation must be >= 1")
    out_h, pad_top = _window_geometry(o["padding"], x.shape[1], kernel_h, o["stride_h"], dilation_h)
    out_w, pad_left = _window_geometry(o["padding"], x.shape[2], kernel_w, o["stride_w"], dilation_w)
    _require(out.shape[1:3] == (out_h, out_w) and out.shape[0] == x.shape[0], graph, op,
             f"output shape {out.shape} does not match the computed ({x.shape[0]}, {out_h}, {out_w}, ...)")
    return pad_top, pad_left


def _channel_scales(weights: Tensor, channels: int, graph: Graph, op: Operator) -> np.ndarray:
    _require_quantized(weights, graph, op, "weights")
    _require(weights.scales.size in (1, channels), graph, op,
             f"weights '{weights.name}' have {weights.scales.size} scales for {channels} output channels")
    _require(np.all(weights.zero_points == 0), graph, op, f"weights '{weights.name}' have a non-zero zero point")
    return weights.scales


def _int8_bias(graph: Graph, op: Operator, position: int, channels: int) -> np.ndarray:
    """Bias as int32 (C,); zeros when omitted.  Its quantization parameters are ignored on
    purpose: TFLite computes requantization from input and weight scales only, so a stray
    quantized_dimension (person_detect.tflite) is harmless."""
    bias = _operand(graph, op, position, "bias", required=False)
    if bias is None:
        return np.zeros(channels, np.int32)
    _require(bias.data is not None, graph, op, f"bias tensor '{bias.name}' must be constant")
    _require_dtype(bias, [np.int32], graph, op, "bias")
    _require(bias.data.size == channels, graph, op, f"bias '{bias.name}' has shape {bias.shape}, expected ({channels},)")
    return bias.data.reshape(channels).astype(np.int32)


def _check_accumulator_bound(graph: Graph, op: Operator, taps: int, bias: np.ndarray) -> None:
    worst = taps * MAX_PRODUCT_MAGNITUDE + int(np.abs(bias.astype(np.int64)).max(initial=0))
    _require(worst < 2 ** 31, graph, op,
             f"{taps} taps per output could overflow the int32 accumulator (worst case {worst})")


def _float_bias(graph: Graph, op: Operator, position: int, channels: int) -> np.ndarray:
    bias = _operand(graph, op, position, "bias", required=False)
    if bias is None:
        return np.zeros(channels, np.float32)
    _require(bias.data is not None and bias.data.size == channels, graph, op,
             f"bias '{bias.name}' must be a constant of {channels} values")
    return bias.data.reshape(channels).astype(np.float32)


FLOAT_ACTIVATIONS = {"NONE": (-np.inf, np.inf), "RELU": (0.0, np.inf), "RELU6": (0.0, 6.0),
                     "RELU_N1_TO_1": (-1.0, 1.0)}


def _apply_float_activation(values: np.ndarray, activation: str) -> None:
    low, high = FLOAT_ACTIVATIONS[activation]
    if activation != "NONE":
        np.clip(values, np.float32(low), np.float32(high), out=values)


def _float_windows(x: np.ndarray, out_h: int, out_w: int, kernel_h: int, kernel_w: int, stride_h: int,
                   stride_w: int, dilation_h: int, dilation_w: int, pad_top: int, pad_left: int, fill: float):
    """(N, OH, OW, KH, KW, C) receptive fields of x padded with ``fill``."""
    _, in_h, in_w, _ = x.shape
    far_h = max((out_h - 1) * stride_h + (kernel_h - 1) * dilation_h + 1 - in_h - pad_top, 0)
    far_w = max((out_w - 1) * stride_w + (kernel_w - 1) * dilation_w + 1 - in_w - pad_left, 0)
    padded = np.pad(x, ((0, 0), (pad_top, far_h), (pad_left, far_w), (0, 0)), constant_values=fill)
    rows = (np.arange(out_h) * stride_h)[:, None] + np.arange(kernel_h) * dilation_h
    cols = (np.arange(out_w) * stride_w)[:, None] + np.arange(kernel_w) * dilation_w
    return padded[:, rows[:, None, :, None], cols[None, :, None, :], :]


# ====================================================================================
# Op handlers, named after the TFLite builtin operators
# ====================================================================================

def CONV_2D(graph: Graph, op: Operator) -> Step:
    x, x_value = _activation_input(graph, op)
    weights = _constant(graph, op, 1, "weights")
    out, out_buffer = _output(graph, op)
    o = op.options
    _require(len(weights.shape) == 4, graph, op, f"weights shape {weights.shape} is not (Cout, KH, KW, Cin)")
    out_c, kernel_h, kernel_w, in_c = weights.shape
    _require(len(x.shape) == 4 and x.shape[3] == in_c, graph, op,
             f"input shape {x.shape} has {x.shape[-1] if x.shape else '?'} channels, weights expect {in_c}")
    _require(out.shape[-1] == out_c, graph, op, f"output shape {out.shape} does not have {out_c} channels")
    pad_top, pad_left = _spatial_setup(graph, op, x, out, kernel_h, kernel_w, o["dilation_h"], o["dilation_w"])
    geometry = (o["stride_h"], o["stride_w"], pad_top, pad_left, o["dilation_h"], o["dilation_w"])
    if x.dtype == np.float32:
        return _conv_2d_float(graph, op, x_value, weights, out_buffer, geometry)
    _require_dtype(x, [np.int8], graph, op, "input")
    _require_dtype(weights, [np.int8], graph, op, "weights")
    _require_dtype(out, [np.int8], graph, op, "output")
    _require_quantized(x, graph, op, "input")
    _require_quantized(out, graph, op, "output")
    bias = _int8_bias(graph, op, 2, out_c)
    _check_accumulator_bound(graph, op, kernel_h * kernel_w * in_c, bias)
    multipliers, shifts = conv_output_multipliers(x.scale, _channel_scales(weights, out_c, graph, op), out.scale, out_c)
    p = graph.params[op.index] = ConvParams(
        input_offset=-x.zero_point, output_offset=out.zero_point, stride=(o["stride_h"], o["stride_w"]),
        padding=(pad_top, pad_left), dilation=(o["dilation_h"], o["dilation_w"]),
        activation=activation_range_s8(o["activation"], out.scale, out.zero_point),
        quant=quant_params(multipliers, shifts), input_dims=nhwc(x.shape), filter_dims=nhwc(weights.shape),
        output_dims=nhwc(out.shape), bias=bias)
    # Both paths below read the record, never the op again.
    if graph.fast and p.taps <= kernels.FLOAT32_EXACT_MAX_TAPS:
        return _conv_2d_gemm(graph, op, x, x_value, weights.data, p, out, out_buffer)
    args = (*p.stride, *p.padding, *p.dilation, -p.input_offset, p.output_offset, p.quant.multiplier,
            p.quant.shift, *p.activation)
    w = weights.data
    return lambda: kernels.conv2d_s8(x_value, w, p.bias, out_buffer, *args)


def _conv_2d_float(graph, op, x_value, weights: Tensor, out_buffer, geometry) -> Step:
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w = geometry
    out_c, kernel_h, kernel_w, in_c = weights.shape
    bias = _float_bias(graph, op, 2, out_c)
    w_matrix = weights.data.astype(np.float32).reshape(out_c, -1).T.copy()  # (KH*KW*Cin, Cout)
    n, out_h, out_w, _ = out_buffer.shape
    activation = op.options["activation"]

    def step():
        windows = _float_windows(x_value, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w,
                                 dilation_h, dilation_w, pad_top, pad_left, 0.0)
        result = windows.reshape(n * out_h * out_w, -1) @ w_matrix + bias
        _apply_float_activation(result, activation)
        out_buffer[...] = result.reshape(out_buffer.shape)
    return step


def _conv_2d_gemm(graph, op, x: Tensor, x_value, w, p: ConvParams, out: Tensor, out_buffer) -> Step:
    """int8 convolution as an exact float32 GEMM (bound in edge_lls/kernels/int8/__init__.py).

    The input zero point is folded into the bias, bias_eff = bias - zp * sum(w): exact in
    int64, and padded taps carry the zero point so that they cancel exactly as TFLite's
    skipped taps do.
    """
    geometry = (*p.stride, *p.padding, *p.dilation)
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w = geometry
    multipliers, shifts, (act_min, act_max) = p.quant.multiplier, p.quant.shift, p.activation
    out_c, kernel_h, kernel_w, in_c = w.shape
    batches, out_h, out_w, _ = out_buffer.shape
    bias_eff = p.bias.astype(np.int64) + p.input_offset * w.reshape(out_c, -1).astype(np.int64).sum(axis=1)
    _require(np.all(np.abs(bias_eff) < 2 ** 31), graph, op, "bias with folded zero point overflows int32")
    bias_eff = bias_eff.astype(np.int32)
    w_matrix = w.reshape(out_c, -1).T.astype(np.float32).copy()  # (KH*KW*Cin, Cout)
    zp, out_zp = -p.input_offset, p.output_offset
    pointwise = kernel_h == kernel_w == 1 and stride_h == stride_w == 1
    tables = _clamp_first(multipliers, shifts, bias_eff, out_zp, act_min, act_max)
    if tables is not None:
        mirror = graph.mirror_for_output(out.index, hand_off=not pointwise)
        return _conv_2d_fused(graph, x, x_value, w, w_matrix, tables, out_buffer, mirror, geometry, pointwise)
    # Requantization the clamp-first tables cannot express (left shifts): separate passes.
    mirror = graph.mirror_for_output(out.index)
    table = requantize_tables(multipliers, shifts)
    pixels = out_h * out_w
    acc = np.zeros((pixels, out_c), np.float32)
    out_rows = out_buffer.reshape(batches, pixels, out_c)
    mirror_rows = mirror.reshape(batches, pixels, out_c) if mirror.size else None
    no_mirror = np.zeros((0, 0), np.float32)
    if pointwise:
        source_mirror = graph.float_mirrors.get(x.index)
        if not isinstance(source_mirror, np.ndarray):  # none, or the native program's scratch
            source_mirror = np.zeros((batches * pixels, in_c), np.float32)
            x_flat = x_value.reshape(-1)
            convert = lambda: kernels.s8_to_f32(x_flat, source_mirror.reshape(-1))  # noqa: E731
        else:
            convert = None
        source_rows = source_mirror.reshape(batches, pixels, in_c)

        def step():
            if convert is not None:
                convert()
            for n in range(batches):
                np.matmul(source_rows[n], w_matrix, out=acc)
                kernels.requantize_gemm(acc, bias_eff, table, out_zp, act_min, act_max, out_rows[n],
                                        mirror_rows[n] if mirror_rows is not None else no_mirror)
        return step

    cols = np.zeros((pixels, kernel_h * kernel_w * in_c), np.float32)

    def step():
        for n in range(batches):
            kernels.im2col_s8_f32(x_value[n], cols, out_w, kernel_h, kernel_w, stride_h, stride_w, pad_top,
                                  pad_left, dilation_h, dilation_w, zp)
            np.matmul(cols, w_matrix, out=acc)
            kernels.requantize_gemm(acc, bias_eff, table, out_zp, act_min, act_max, out_rows[n],
                                    mirror_rows[n] if mirror_rows is not None else no_mirror)
    return step


def _clamp_first(multipliers, shifts, bias_eff, out_zp, act_min, act_max, tile: int = 1):
    """Requantization tables of kernels.conv_gemm_f32 / pointwise_gemm_f32 / depthwise3x3_f32
    (fixedpoint.clamp_first_tables, repeated ``tile`` times along the span), or None."""
    tables = clamp_first_tables(multipliers, shifts, bias_eff, out_zp, act_min, act_max)
    if tables is None:
        return None
    bounds = np.tile(np.stack([tables["lo"], tables["hi"]]), (1, tile))
    longs = np.tile(np.stack([tables[k] for k in ("multiplier", "shift", "folded", "bias_product", "offset",
                                                  "negative_delta")]), (1, tile))
    return bounds, longs, tables["signed"], out_zp


# Pixels per GEMM tile: the tile's accumulators and patches stay in L1/L2 while requantized.
GEMM_TILE_PIXELS = 256


def _conv_2d_fused(graph, x: Tensor, x_value, w, w_matrix, tables, out_buffer, mirror, geometry, pointwise) -> Step:
    """One compiled call per convolution: patches, sgemm and requantization (see
    kernels.conv_gemm_f32 and kernels.pointwise_gemm_f32), as a row of the graph's native
    program."""
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w = geometry
    out_c, kernel_h, kernel_w, in_c = w.shape
    batches, out_h, out_w, _ = out_buffer.shape
    bounds, longs, signed, out_zp = tables
    if pointwise:
        pixels = batches * out_h * out_w
        source = graph.float_mirrors.get(x.index)
        convert = source is None
        if convert:  # no producer writes a float32 copy: convert in the same call
            source = np.zeros((pixels, in_c), np.float32)
        tile = min(pixels, GEMM_TILE_PIXELS)
        acc = Scratch("acc", tile * out_c)
        return graph.native.add(kernels.KIND_POINTWISE, floats=(source, w_matrix, acc, bounds, mirror),
                                bytes_=(out_buffer, x_value), longs=(longs,),
                                ints=(pixels, in_c, out_c, tile, signed, out_zp, convert))
    padded_h = (out_h - 1) * stride_h + (kernel_h - 1) * dilation_h + 1
    planes_w = out_w + ((kernel_w - 1) * dilation_w) // stride_w
    xp = Scratch("input", padded_h * in_c * stride_w * planes_w)
    tile_rows = max(1, min(out_h, GEMM_TILE_PIXELS // out_w))
    cols_t = Scratch("patches", kernel_h * kernel_w * in_c * tile_rows * out_w)
    acc = Scratch("acc", tile_rows * out_w * out_c)
    in_h, in_w = x_value.shape[1], x_value.shape[2]
    return graph.native.add(kernels.KIND_CONV_GEMM, floats=(xp, cols_t, w_matrix, acc, bounds, mirror),
                            bytes_=(x_value, out_buffer), longs=(longs,),
                            ints=(batches, in_h, in_w, in_c, out_h, out_w, out_c, kernel_h, kernel_w, stride_h,
                                  stride_w, pad_top, pad_left, dilation_h, dilation_w, padded_h, planes_w, tile_rows,
                                  signed, out_zp, x.zero_point))


def DEPTHWISE_CONV_2D(graph: Graph, op: Operator) -> Step:
    x, x_value = _activation_input(graph, op)
    weights = _constant(graph, op, 1, "weights")
    out, out_buffer = _output(graph, op)
    o = op.options
    _require(len(weights.shape) == 4 and weights.shape[0] == 1, graph, op,
             f"weights shape {weights.shape} is not (1, KH, KW, C*multiplier)")
    _, kernel_h, kernel_w, out_c = weights.shape
    _require(len(x.shape) == 4, graph, op, f"input shape {x.shape} is not NHWC")
    in_c = x.shape[3]
    _require(in_c > 0 and out_c % in_c == 0, graph, op, f"weights have {out_c} channels, not a multiple of input's {in_c}")
    multiplier = out_c // in_c
    _require(o["depth_multiplier"] in (0, multiplier), graph, op,
             f"depth_multiplier {o['depth_multiplier']} does not match weights ({out_c} / {in_c})")
    _require(out.shape[-1] == out_c, graph, op, f"output shape {out.shape} does not have {out_c} channels")
    pad_top, pad_left = _spatial_setup(graph, op, x, out, kernel_h, kernel_w, o["dilation_h"], o["dilation_w"])
    geometry = (o["stride_h"], o["stride_w"], pad_top, pad_left, o["dilation_h"], o["dilation_w"])
    if x.dtype == np.float32:
        return _depthwise_float(graph, op, x_value, weights, out_buffer, geometry, multiplier)
    _require_dtype(x, [np.int8], graph, op, "input")
    _require_dtype(weights, [np.int8], graph, op, "weights")
    _require_dtype(out, [np.int8], graph, op, "output")
    _require_quantized(x, graph, op, "input")
    _require_quantized(out, graph, op, "output")
    bias = _int8_bias(graph, op, 2, out_c)
    _check_accumulator_bound(graph, op, kernel_h * kernel_w, bias)
    multipliers, shifts = conv_output_multipliers(x.scale, _channel_scales(weights, out_c, graph, op), out.scale, out_c)
    p = graph.params[op.index] = DepthwiseConvParams(
        input_offset=-x.zero_point, output_offset=out.zero_point, ch_mult=multiplier,
        stride=(o["stride_h"], o["stride_w"]), padding=(pad_top, pad_left), dilation=(o["dilation_h"], o["dilation_w"]),
        activation=activation_range_s8(o["activation"], out.scale, out.zero_point),
        quant=quant_params(multipliers, shifts), input_dims=nhwc(x.shape), filter_dims=nhwc(weights.shape),
        output_dims=nhwc(out.shape), bias=bias)
    # Every path below reads the record, never the op again.
    geometry = (*p.stride, *p.padding, *p.dilation)
    bias, multipliers, shifts, (act_min, act_max) = p.bias, p.quant.multiplier, p.quant.shift, p.activation
    multiplier, in_zero_point, out_zero_point = p.ch_mult, -p.input_offset, p.output_offset
    w = weights.data
    if graph.fast and multiplier == 1 and kernel_h == kernel_w == 3:
        step = _depthwise_3x3_fused(graph, x, x_value, w, bias, multipliers, shifts, out, out_buffer, geometry,
                                    act_min, act_max)
        if step is not None:
            return step
    mirror = graph.mirror_for_output(out.index)
    if graph.fast and multiplier == 1:
        out_w = out.shape[2]
        weights_tiled = np.tile(w[0].astype(np.int16), (1, 1, out_w))  # (KH, KW, OW*C)
        bias_tiled = np.tile(bias, out_w)
        table_tiled = np.tile(requantize_tables(multipliers, shifts), (1, out_w))
        zps = (in_zero_point, out_zero_point, act_min, act_max)
        return lambda: kernels.depthwise_rows_s8(x_value, weights_tiled, bias_tiled, table_tiled, out_buffer,
                                                 mirror, *geometry, *zps)
    args = (*geometry, multiplier, in_zero_point, out_zero_point, multipliers, shifts, act_min, act_max)
    if mirror.size:
        return lambda: kernels.depthwise_conv2d_s8_mirrored(x_value, w, bias, out_buffer, mirror, *args)
    return lambda: kernels.depthwise_conv2d_s8(x_value, w, bias, out_buffer, *args)


def _depthwise_3x3_fused(graph, x: Tensor, x_value, w, bias, multipliers, shifts, out: Tensor, out_buffer, geometry,
                         act_min, act_max) -> Step | None:
    """kernels.depthwise3x3_f32 (one call per layer), or None when its requantization tables
    do not apply."""
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w = geometry
    _, out_h, out_w, channels = out_buffer.shape
    taps = w[0].reshape(9, channels).astype(np.int64)
    bias_eff = bias.astype(np.int64) - x.zero_point * taps.sum(axis=0)
    if np.any(np.abs(bias_eff) >= 2 ** 31):
        return None
    chunk = channels * -(-DEPTHWISE_CHUNK // channels)  # a multiple of C: tables repeat per chunk
    tables = _clamp_first(multipliers, shifts, bias_eff, out.zero_point, act_min, act_max, tile=chunk // channels)
    if tables is None:
        return None
    padded_h = (out_h - 1) * stride_h + 2 * dilation_h + 1
    planes_w = out_w + (2 * dilation_w) // stride_w
    xp = Scratch("input", padded_h * stride_w * planes_w * channels)
    plane = planes_w * channels
    offsets = np.array([ky * dilation_h * stride_w * plane + ((kx * dilation_w) % stride_w) * plane
                        + ((kx * dilation_w) // stride_w) * channels for ky in range(3) for kx in range(3)], np.int64)
    weights = np.tile(taps.astype(np.float32), (1, chunk // channels))  # (9, chunk)
    acc = Scratch("acc", chunk)
    mirror = graph.mirror_for_output(out.index, hand_off=True)
    bounds, longs, signed, out_zp = tables
    batches, in_h, in_w, _ = x_value.shape
    return graph.native.add(kernels.KIND_DEPTHWISE_3X3, floats=(xp, weights, bounds, acc, mirror),
                            bytes_=(x_value, out_buffer), longs=(offsets, longs),
                            ints=(batches, in_h, in_w, channels, out_h, out_w, pad_top, pad_left, stride_h, stride_w,
                                  padded_h, planes_w, signed, out_zp, chunk, x.zero_point))


# Values per depthwise inner loop (rounded up to a multiple of the channel count); its weights
# and requantization tables are tiled to this length.
DEPTHWISE_CHUNK = 128


def _depthwise_float(graph, op, x_value, weights: Tensor, out_buffer, geometry, multiplier) -> Step:
    stride_h, stride_w, pad_top, pad_left, dilation_h, dilation_w = geometry
    _, kernel_h, kernel_w, out_c = weights.shape
    bias = _float_bias(graph, op, 2, out_c)
    w = weights.data[0].astype(np.float32)  # (KH, KW, C*mult)
    _, out_h, out_w, _ = out_buffer.shape
    activation = op.options["activation"]

    def step():
        source = np.repeat(x_value, multiplier, axis=3) if multiplier > 1 else x_value
        windows = _float_windows(source, out_h, out_w, kernel_h, kernel_w, stride_h, stride_w,
                                 dilation_h, dilation_w, pad_top, pad_left, 0.0)
        result = np.einsum("nyxhwc,hwc->nyxc", windows, w, dtype=np.float32) + bias
        _apply_float_activation(result, activation)
        out_buffer[...] = result
    return step


def FULLY_CONNECTED(graph: Graph, op: Operator) -> Step:
    x, x_value = _activation_input(graph, op)
    weights = _constant(graph, op, 1, "weights")
    out, out_buffer = _output(graph, op)
    _require(op.options.get("weights_format", 0) == 0, graph, op, "only the DEFAULT weights_format is supported")
    _require(len(weights.shape) == 2, graph, op, f"weights shape {weights.shape} is not (out, in)")
    out_c, depth = weights.shape
    _require(depth > 0 and x.size % depth == 0, graph, op, f"input of {x.size} values is not a multiple of {depth}")
    batches = x.size // depth
    _require(out.size == batches * out_c, graph, op, f"output shape {out.shape} does not hold {batches}x{out_c} values")
    x_rows = x_value.reshape(batches, depth)
    out_rows = out_buffer.reshape(batches, out_c)
    activation = op.options["activation"]
    if x.dtype == np.float32:
        bias = _float_bias(graph, op, 2, out_c)
        w_t = weights.data.astype(np.float32).T.copy()

        def step():
            result = x_rows @ w_t + bias
            _apply_float_activation(result, activation)
            out_rows[...] = result
        return step
    _require_dtype(x, [np.int8], graph, op, "input")
    _require_dtype(weights, [np.int8], graph, op, "weights")
    _require_dtype(out, [np.int8], graph, op, "output")
    _require_quantized(x, graph, op, "input")
    _require_quantized(out, graph, op, "output")
    bias = _int8_bias(graph, op, 2, out_c)
    _check_accumulator_bound(graph, op, depth, bias)
    multipliers, shifts = conv_output_multipliers(x.scale, _channel_scales(weights, out_c, graph, op), out.scale, out_c)
    p = graph.params[op.index] = FullyConnectedParams(
        input_offset=-x.zero_point, filter_offset=0, output_offset=out.zero_point,
        activation=activation_range_s8(activation, out.scale, out.zero_point), quant=quant_params(multipliers, shifts),
        input_dims=Dims(batches, 1, 1, depth), filter_dims=Dims(depth, 1, 1, out_c), output_dims=Dims(batches, 1, 1, out_c),
        bias=bias, single_rounding=graph.requantize == "litert")
    # Both paths below read the record, never the op again.
    w = weights.data
    if graph.fast and w.flags.c_contiguous:
        return graph.native.add(kernels.KIND_FULLY_CONNECTED, bytes_=(x_rows, w, out_rows),
                                longs=(p.bias.astype(np.int64), p.quant.multiplier.astype(np.int64),
                                       p.quant.shift.astype(np.int64)),
                                ints=(batches, depth, out_c, -p.input_offset, p.output_offset, *p.activation,
                                      int(p.single_rounding)))
    args = (-p.input_offset, p.output_offset, p.quant.multiplier, p.quant.shift, *p.activation, p.single_rounding)
    return lambda: kernels.fully_connected_s8(x_rows, w, p.bias, out_rows, *args)


def _pool_setup(graph: Graph, op: Operator):
    x, x_value = _activation_input(graph, op)
    out, out_buffer = _output(graph, op)
    o = op.options
    _require(o["filter_h"] >= 1 and o["filter_w"] >= 1, graph, op, "filter size must be >= 1")
    pad_top, pad_left = _spatial_setup(graph, op, x, out, o["filter_h"], o["filter_w"])
    _require(out.shape[3] == x.shape[3], graph, op, f"output channels {out.shape[3]} != input channels {x.shape[3]}")
    geometry = (o["filter_h"], o["filter_w"], o["stride_h"], o["stride_w"], pad_top, pad_left)
    return x, x_value, out, out_buffer, geometry


def _pool_int8_range(graph: Graph, op: Operator, x: Tensor, out: Tensor) -> tuple[int, int]:
    _require_dtype(out, [np.int8], graph, op, "output")
    _require_quantized(x, graph, op, "input")
    _require_quantized(out, graph, op, "output")
    _require(x.scale == out.scale and x.zero_point == out.zero_point, graph, op,
             "int8 pooling needs identical input and output quantization")
    return activation_range_s8(op.options["activation"], out.scale, out.zero_point)


def _pool_params(graph: Graph, op: Operator, x: Tensor, out: Tensor, geometry) -> PoolParams:
    filter_h, filter_w, stride_h, stride_w, pad_top, pad_left = geometry
    p = graph.params[op.index] = PoolParams(
        stride=(stride_h, stride_w), padding=(pad_top, pad_left), filter=(filter_h, filter_w),
        activation=_pool_int8_range(graph, op, x, out), input_dims=nhwc(x.shape), output_dims=nhwc(out.shape))
    return p


def AVERAGE_POOL_2D(graph: Graph, op: Operator) -> Step:
    x, x_value, out, out_buffer, geometry = _pool_setup(graph, op)
    if x.dtype == np.float32:
        return _float_pool(x_value, out_buffer, geometry, op.options["activation"], average=True)
    _require_dtype(x, [np.int8], graph, op, "input")
    act_min, act_max = _pool_params(graph, op, x, out, geometry).activation
    if graph.fast:
        return _native_pool(graph, kernels.KIND_AVERAGE_POOL, x_value, out_buffer, geometry, act_min, act_max)
    return lambda: kernels.avg_pool2d_s8(x_value, out_buffer, *geometry, act_min, act_max)


def _native_pool(graph, kind, x_value, out_buffer, geometry, act_min, act_max) -> Step:
    return graph.native.add(kind, bytes_=(x_value, out_buffer),
                            ints=(*x_value.shape, *out_buffer.shape[1:3], *geometry, act_min, act_max))


def MAX_POOL_2D(graph: Graph, op: Operator) -> Step:
    x, x_value, out, out_buffer, geometry = _pool_setup(graph, op)
    if x.dtype == np.float32:
        return _float_pool(x_value, out_buffer, geometry, op.options["activation"], average=False)
    _require_dtype(x, [np.int8], graph, op, "input")
    act_min, act_max = _pool_params(graph, op, x, out, geometry).activation
    if graph.fast:
        return _native_pool(graph, kernels.KIND_MAX_POOL, x_value, out_buffer, geometry, act_min, act_max)
    return lambda: kernels.max_pool2d_s8(x_value, out_buffer, *geometry, act_min, act_max)


def _float_pool(x_value, out_buffer, geometry, activation: str, average: bool) -> Step:
    filter_h, filter_w, stride_h, stride_w, pad_top, pad_left = geometry
    _, out_h, out_w, _ = out_buffer.shape
    valid = _float_windows(np.ones(x_value.shape, np.float32), out_h, out_w, filter_h, filter_w, stride_h,
                           stride_w, 1, 1, pad_top, pad_left, 0.0).sum(axis=(3, 4))

    def step():
        if average:
            windows = _float_windows(x_value, out_h, out_w, filter_h, filter_w, stride_h, stride_w, 1, 1,
                                     pad_top, pad_left, 0.0)
            result = (windows.sum(axis=(3, 4), dtype=np.float32) / valid).astype(np.float32)
        else:
            windows = _float_windows(x_value, out_h, out_w, filter_h, filter_w, stride_h, stride_w, 1, 1,
                                     pad_top, pad_left, -np.inf)
            result = windows.max(axis=(3, 4))
        _apply_float_activation(result, activation)
        out_buffer[...] = result
    return step


def MEAN(graph: Graph, op: Operator) -> Step:
    x, x_value = _activation_input(graph, op)
    axes_tensor = _constant(graph, op, 1, "axis")
    out, out_buffer = _output(graph, op)
    rank = len(x.shape)
    axes = sorted({int(a) % rank for a in axes_tensor.data.reshape(-1)}) if rank else []
    _require(all(-rank <= int(a) < rank for a in axes_tensor.data.reshape(-1)), graph, op,
             f"axis {axes_tensor.data.tolist()} out of range for rank {rank}")
    kept = [d for d in range(rank) if d not in axes]
    reduced_count = int(np.prod([x.shape[d] for d in axes], dtype=np.int64))
    kept_count = int(np.prod([x.shape[d] for d in kept], dtype=np.int64))
    _require(out.size == kept_count, graph, op, f"output shape {out.shape} does not match reducing {x.shape} over {axes}")
    _require(reduced_count > 0, graph, op, "reduction over an empty axis")
    contiguous = axes == list(range(axes[0], axes[-1] + 1)) if axes else True
    if contiguous and axes:
        outer = int(np.prod(x.shape[:axes[0]], dtype=np.int64))
        grouped = lambda: x_value.reshape(outer, reduced_count, -1)  # noqa: E731 - a view, no copy
    else:
        order = kept + axes
        grouped = lambda: np.ascontiguousarray(x_value.transpose(order)).reshape(kept_count, reduced_count, 1)  # noqa: E731
    out_matrix = out_buffer.reshape(grouped().shape[0], grouped().shape[2])
    if x.dtype == np.float32:
        def step():
            out_matrix[...] = grouped().mean(axis=1, dtype=np.float32)
        return step
    _require_dtype(x, [np.int8], graph, op, "input")
    _require_dtype(out, [np.int8], graph, op, "output")
    _require_quantized(x, graph, op, "input")
    _require_quantized(out, graph, op, "output")
    multiplier, shift = mean_multiplier(x.scale, out.scale, reduced_count)
    zp_in, zp_out = x.zero_point, out.zero_point
    return lambda: kernels.mean_s8(grouped(), out_matrix, zp_in, zp_out, multiplier, shift)


def ADD(graph: Graph, op: Operator) -> Step:
    a, a_value = _activation_input(graph, op, 0)
    b, b_value = _activation_input(graph, op, 1)
    out, out_buffer = _output(graph, op)
    try:
        broadcast_shape = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise FormatError(f"{_where(graph, op)}: input shapes {a.shape} and {b.shape} do not broadcast") from None
    _same_shape(broadcast_shape, out.shape, graph, op, "output")
    activation = op.options["activation"]
    same_shapes = a.shape == b.shape == out.shape

    def expanded(value):
        return value.reshape(-1) if same_shapes else np.ascontiguousarray(np.broadcast_to(value, out.shape)).reshape(-1)

    if a.dtype == np.float32:
        def step():
            result = a_value + b_value
            _apply_float_activation(result, activation)
            out_buffer[...] = result
        return step
    for tensor, role in ((a, "first input"), (b, "second input"), (out, "output")):
        _require_dtype(tensor, [np.int8], graph, op, role)
        _require_quantized(tensor, graph, op, role)
    (m1, s1), (m2, s2), (mo, so) = add_params(a.scale, b.scale, out.scale)
    act_min, act_max = activation_range_s8(activation, out.scale, out.zero_point)
    out_flat = out_buffer.reshape(-1)
    args = (a.zero_point, b.zero_point, out.zero_point, ADD_LEFT_SHIFT, m1, s1, m2, s2, mo, so, act_min, act_max)
    return lambda: kernels.add_s8(expanded(a_value), expanded(b_value), out_flat, *args)


def PAD(graph: Graph, op: Operator) -> Step:
    x, x_value = _activation_input(graph, op)
    paddings = _constant(graph, op, 1, "paddings")
    out, out_buffer = _output(graph, op)
    rank = len(x.shape)
    _require(paddings.data.shape == (rank, 2), graph, op, f"paddings shape {paddings.shape} is not ({rank}, 2)")
    pads = paddings.data.astype(np.int64)
    _require(np.all(pads >= 0), graph, op, "negative paddings")
    _same_shape(np.array(x.shape) + pads.sum(axis=1), out.shape, graph, op, "output")
    _require(rank <= 4, graph, op, f"rank {rank} > 4")
    lift = (1,) * (4 - rank)  # pad_s8 works on 4-D tensors: lead with unit axes
    x4, out4 = x_value.reshape(lift + x.shape), out_buffer.reshape(lift + out.shape)
    before = np.array((0,) * (4 - rank) + tuple(pads[:, 0]), np.int64)
    if x.dtype == np.float32:
        pad_width = [(int(b), int(a)) for b, a in pads]

        def step():
            out_buffer[...] = np.pad(x_value, pad_width)
        return step
    _require_dtype(x, [np.int8], graph, op, "input")
    _require_dtype(out, [np.int8], graph, op, "output")
    _require_quantized(out, graph, op, "output")
    _require(x.scales is None or (x.scale == out.scale and x.zero_point == out.zero_point), graph, op,
             "int8 PAD needs identical input and output quantization")
    after = (0,) * (4 - rank) + tuple(int(a) for a in pads[:, 1])
    p = graph.params[op.index] = PadParams(pad_value=out.zero_point,  # real 0
                                           before=tuple(int(b) for b in before), after=after,
                                           input_dims=nhwc(x4.shape), output_dims=nhwc(out4.shape))
    pad_value = p.pad_value
    return lambda: kernels.pad_s8(x4, out4, before, pad_value)


def RESHAPE(graph: Graph, op: Operator) -> Step:
    x, x_value = _activation_input(graph, op)
    out = graph.tensors[op.outputs[0]] if op.outputs else None
    _require(out is not None, graph, op, "missing output tensor")
    _require(x.size == out.size, graph, op, f"cannot reshape {x.shape} ({x.size} values) to {out.shape}")
    _require(x.dtype == out.dtype, graph, op, f"input type {x.type_name} != output type {out.type_name}")
    if x.dtype == np.int8:
        graph.params[op.index] = ReshapeParams(size=x.size)
    if x.data is None and out.index not in graph.buffers:
        graph.buffers[out.index] = x_value.reshape(out.shape)  # a view: reshape costs nothing at run time
        return NOTHING
    out_buffer = graph._allocate(out.index, "output")
    return lambda: np.copyto(out_buffer, x_value.reshape(out.shape))


def SOFTMAX(graph: Graph, op: Operator) -> Step:
    x, x_value = _activation_input(graph, op)
    out, out_buffer = _output(graph, op)
    _same_shape(x.shape, out.shape, graph, op, "output")
    _require(len(x.shape) >= 1 and x.shape[-1] > 0, graph, op, f"input shape {x.shape} has no last axis")
    depth = x.shape[-1]
    rows = x.size // depth
    x_rows, out_rows = x_value.reshape(rows, depth), out_buffer.reshape(rows, depth)
    beta = op.options["beta"]
    if x.dtype == np.float32:
        def step():
            exps = np.exp((x_rows - x_rows.max(axis=1, keepdims=True)) * np.float32(beta))
            out_rows[...] = exps / exps.sum(axis=1, keepdims=True, dtype=np.float32)
        return step
    _require_dtype(x, [np.int8], graph, op, "input")
    _require_dtype(out, [np.int8], graph, op, "output")
    _require_quantized(x, graph, op, "input")
    _require_quantized(out, graph, op, "output")
    _require(out.zero_point == -128 and abs(out.scale - 1 / 256) <= 0.001 / 256, graph, op,
             f"int8 output must have scale 1/256 and zero point -128, got {out.scale} and {out.zero_point}")
    p = graph.params[op.index] = SoftmaxParams(rows, depth, *softmax_params(x.scale, beta))
    multiplier, left_shift, diff_min = p.input_multiplier, p.input_left_shift, p.diff_min
    if graph.fast:
        return graph.native.add(kernels.KIND_SOFTMAX, bytes_=(x_rows, out_rows),
                                ints=(rows, depth, multiplier, left_shift, diff_min))
    return lambda: kernels.softmax_s8(x_rows, out_rows, multiplier, left_shift, diff_min)


def QUANTIZE(graph: Graph, op: Operator) -> Step:
    x, x_value = _activation_input(graph, op)
    out, out_buffer = _output(graph, op)
    _same_shape(x.shape, out.shape, graph, op, "output")
    _require_dtype(out, [np.int8], graph, op, "output")
    _require_quantized(out, graph, op, "output")
    _require(out.scales.size == 1, graph, op, "per-channel QUANTIZE output is not supported")
    x_flat, out_flat = x_value.reshape(-1), out_buffer.reshape(-1)
    if x.dtype == np.float32:
        scale, zp = out.scale, out.zero_point
        return lambda: kernels.quantize_f32_to_s8(x_flat, out_flat, scale, zp)
    _require_dtype(x, [np.int8], graph, op, "input")
    _require_quantized(x, graph, op, "input")
    multiplier, shift = quantize_multiplier(float(np.float32(x.scale)) / float(np.float32(out.scale)))
    zp_in, zp_out = x.zero_point, out.zero_point
    return lambda: kernels.requantize_s8(x_flat, out_flat, zp_in, zp_out, multiplier, shift)


def DEQUANTIZE(graph: Graph, op: Operator) -> Step:
    x, x_value = _activation_input(graph, op)
    out, out_buffer = _output(graph, op)
    _same_shape(x.shape, out.shape, graph, op, "output")
    _require_dtype(x, [np.int8], graph, op, "input")
    _require_dtype(out, [np.float32], graph, op, "output")
    _require_quantized(x, graph, op, "input")
    _require(x.scales.size == 1, graph, op, "per-channel DEQUANTIZE is not supported")
    x_flat, out_flat = x_value.reshape(-1), out_buffer.reshape(-1)
    scale, zp = x.scale, x.zero_point
    return lambda: kernels.dequantize_s8(x_flat, out_flat, scale, zp)


def leaky_relu_params(input_scale: float, output_scale: float, alpha: float) -> tuple[int, int, int, int]:
    """(identity multiplier, shift, alpha multiplier, shift) as TFLite's LeakyReluPrepare: the
    real multipliers are computed in float32 (C++ float expressions) and then quantized."""
    s_in, s_out, a = np.float32(input_scale), np.float32(output_scale), np.float32(alpha)
    identity = float(np.float32(s_in / s_out))
    alpha_real = float(np.float32(np.float32(s_in * a) / s_out))
    return (*quantize_multiplier(identity), *quantize_multiplier(alpha_real))


def LEAKY_RELU(graph: Graph, op: Operator) -> Step:
    x, x_value = _activation_input(graph, op)
    out, out_buffer = _output(graph, op)
    _same_shape(x.shape, out.shape, graph, op, "output")
    alpha = float(op.options.get("alpha", 0.0))
    x_flat, out_flat = x_value.reshape(-1), out_buffer.reshape(-1)
    if x.dtype == np.float32:
        alpha32 = np.float32(alpha)

        def step():
            np.multiply(x_flat, alpha32, out=out_flat, where=x_flat <= 0)
            np.copyto(out_flat, x_flat, where=x_flat > 0)
        return step
    _require_dtype(x, [np.int8], graph, op, "input")
    _require_dtype(out, [np.int8], graph, op, "output")
    _require_quantized(x, graph, op, "input")
    _require_quantized(out, graph, op, "output")
    p = graph.params[op.index] = LeakyReluParams(x.size, x.zero_point, out.zero_point,
                                                 *leaky_relu_params(x.scale, out.scale, alpha))
    params = (p.identity_multiplier, p.identity_shift, p.alpha_multiplier, p.alpha_shift)
    zp_in, zp_out = p.input_zero_point, p.output_zero_point
    kernel = kernels.leaky_relu_s8
    return lambda: kernel(x_flat, out_flat, zp_in, zp_out, *params)


OP_HANDLERS: dict[str, Callable[[Graph, Operator], Step]] = {
    "LEAKY_RELU": LEAKY_RELU,
    "CONV_2D": CONV_2D,
    "DEPTHWISE_CONV_2D": DEPTHWISE_CONV_2D,
    "FULLY_CONNECTED": FULLY_CONNECTED,
    "AVERAGE_POOL_2D": AVERAGE_POOL_2D,
    "MAX_POOL_2D": MAX_POOL_2D,
    "MEAN": MEAN,
    "ADD": ADD,
    "PAD": PAD,
    "RESHAPE": RESHAPE,
    "SOFTMAX": SOFTMAX,
    "QUANTIZE": QUANTIZE,
    "DEQUANTIZE": DEQUANTIZE,
}

__all__ = ["Graph", "Tensor", "Operator", "OP_HANDLERS"]


def prepare(program: Program, batch: int = 1, fast: bool = True, requantize: str = "litert",
            arena: bool = False) -> Graph:
    """A program prepared to run ``batch`` samples at a time (every runtime tensor's leading
    axis): each operator validated once and its parameters computed. fast=True runs
    convolutions through the exact float32 GEMM path where its bound holds
    (kernels/int8/); fast=False uses the plain Numba kernels for every op. requantize:
    "litert" (default) or "tflm" rounding (REQUANTIZE_MODES). arena=True lays every
    runtime tensor into one planned arena (program/memory.py), intermediates overwritten
    as they die, as a microcontroller runs it."""
    plan = plan_program(program, batch) if arena else None
    return Graph(program.batched_tensors(batch), program.operators, program.inputs, program.outputs,
                 name=program.name, fast=fast, requantize=requantize, arena=plan)


def load_tflite(source, fast: bool = True, name: str | None = None, requantize: str = "litert") -> Graph:
    """A .tflite file (a path) or its bytes, prepared (batch 1) into a runnable Graph."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return prepare(parse_tflite(bytes(source), name=name or "<bytes>"), fast=fast, requantize=requantize)
    return prepare(read_tflite(source), fast=fast, requantize=requantize)

"""A program as an ONNX model (opset 17): float32 as it is, int8 as QDQ; for onnxruntime
and the tools that read ONNX.

One walk over the operators serves both precisions. Every op is emitted as the float op of
ONNX on real values; what differs per tensor is only how its value is stored:

* a float32 tensor is that float value;
* an int8 tensor (per-tensor scale s, zero point z) is stored as int8 codes: each op reads
  it through its own DequantizeLinear (s, z) and writes it through QuantizeLinear to the
  output tensor's own s and z (round half to even, saturated to [-128, 127]). QDQ-aware
  runtimes fuse DQ -> op -> Q into integer kernels (onnxruntime: QLinearConv,
  QLinearLeakyRelu, QLinearSoftmax); others run the float op between the pairs. A program
  may mix both kinds of tensor (QUANTIZE / DEQUANTIZE between them).
* constant int8 weights are int8 initializers behind a DequantizeLinear; per-channel scales
  keep `axis` 0 after the transposes below (Conv OIHW: the output channel; Gemm with
  transB=1: the output unit). int32 biases are int32 initializers behind a DequantizeLinear
  with scale input_scale * weight_scale[c] (float32) and zero point 0, which is how TFLite
  interprets them (it ignores the bias tensor's own quantization).

Fused activations become Relu / Clip before the QuantizeLinear: for an int8 output they
are implied by the quantized range (Q(relu(x)) = max(Q(x), z), TFLite's clamp) but are
emitted anyway, so a runtime that keeps the ops in float computes the same. QUANTIZE and
DEQUANTIZE pass the real value from their read to their write, so each becomes the one
QuantizeLinear / DequantizeLinear of its int8 side. RESHAPE reshapes in TFLite's (NHWC)
element order, the batch axis kept (-1); SOFTMAX's beta != 1 is a Mul before it.

The program is NHWC (TFLite's layout); ONNX convolutions and pooling are NCHW. The graph
keeps the program's NHWC input and output: one Transpose to NCHW after the input, and one
back to NHWC before a FULLY_CONNECTED or a RESHAPE (TFLite flattens NHWC, so the weights'
column order stays as trained). Weights are transposed once, here: conv OHWI -> OIHW,
depthwise (1, KH, KW, C*m) -> (C*m, 1, KH, KW) with group = C. SAME padding becomes the
explicit pads TFLite computes (kernels/geometry.same_padding: the odd pixel after). The
batch dimension is symbolic ("N").

The graph's input and output are float32 at both precisions. An int8 program's input is
the float32 image (N, H, W, C) followed by QuantizeLinear with the input tensor's scale and
zero point; its output is the DequantizeLinear of the final int8 tensor, s * (q - z), as
float32 (the model's real-valued outputs, e.g. probabilities in steps of 1/256 after an
int8 SOFTMAX). Results agree with edge-lls / LiteRT to within LSB, not bit for bit:
onnxruntime requantizes in float (or computes the float op between Q/DQ pairs) and rounds
half to even, where TFLite uses fixed-point multipliers and rounds twice. Each op, given
the same int8 input, is within 1 LSB; the differences propagate, and trained models'
outputs were measured within 2 LSB (tests/test_onnx_qdq.py derives and measures).

    to_onnx(program) -> bytes          float32 or int8 programs (TFLite ops listed in OPS)
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..kernels.geometry import same_padding
from ..program.ir import Program, Tensor

OPSET = 17
FUSED = {"NONE": None, "RELU": (0.0, None), "RELU6": (0.0, 6.0), "RELU_N1_TO_1": (-1.0, 1.0)}
NCHW, NHWC = (0, 3, 1, 2), (0, 2, 3, 1)
OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "AVERAGE_POOL_2D", "MAX_POOL_2D", "PAD", "LEAKY_RELU",
       "RESHAPE", "SOFTMAX", "QUANTIZE", "DEQUANTIZE")


def _is_int8(t: Tensor) -> bool:
    return t.dtype is not None and t.dtype == np.int8


def to_onnx(program: Program) -> bytes:
    """The ONNX ModelProto bytes of a float32 or int8 program (see the module docstring):
    float32 input (N, H, W, C) and float32 output at both precisions; an int8 program's
    output is the DequantizeLinear of its final int8 tensor."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    tensors = program.tensors
    nodes, initializers = [], []
    # tensor index -> its stored ONNX value (int8 codes for an int8 tensor) and that value's
    # layout: "nchw" after a transpose, else "nhwc" (the program's own order, any rank)
    names = {i: f"t{i}" for i in range(len(tensors))}
    layout: dict[int, str] = {}

    def fail(message: str):
        raise ConfigError(f"{program.name}: {message}")

    def constant(name: str, array: np.ndarray) -> str:
        array = np.asarray(array)                 # 0-d stays 0-d: a per-tensor scale, a Clip bound
        initializers.append(numpy_helper.from_array(array if array.flags.c_contiguous else array.copy(), name))
        return name

    def node(op_type: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op_type, inputs, [output], name=f"{op_type}_{len(nodes)}", **attrs))
        return output

    quant_names: dict[int, tuple[str, str]] = {}
    transposed: set[str] = set()

    def qparams(index: int) -> tuple[str, str]:
        """The (scale, zero point) scalars of an int8 activation tensor (per tensor only)."""
        if index not in quant_names:
            t = tensors[index]
            if t.scales is None or t.scales.size != 1:
                fail(f"int8 tensor {t.index} '{t.name}' needs one scale and zero point for ONNX QDQ")
            quant_names[index] = (constant(f"t{index}_scale", np.float32(t.scales[0])),
                                  constant(f"t{index}_zero_point", np.int8(t.zero_points[0])))
        return quant_names[index]

    def stored(index: int, want: str) -> str:
        """Tensor index's stored value in layout want ("nchw", or "nhwc": program order)."""
        if layout[index] == want:
            return names[index]
        perm = NCHW if want == "nchw" else NHWC
        key = f"{names[index]}_{want}"
        if key not in transposed:                                 # one transpose per tensor and layout
            transposed.add(key)
            node("Transpose", [names[index]], key, perm=list(perm))
        return key

    def read(op, position: int, want: str | None = None, shape: list[int] | str | None = None) -> str:
        """The real (float32) value of op's input at position, in layout want (default: as
        stored), reshaped to shape if given ("flatten": to (N, -1)). Data movement happens on
        the stored value, so an int8 input's DequantizeLinear feeds the op itself (the
        pattern QDQ runtimes fuse)."""
        index = op.inputs[position]
        if index < 0 or tensors[index].data is not None or index not in layout:
            fail(f"op {op.index} ({op.opcode}): input {position} must be a runtime tensor computed before it")
        value = stored(index, want or layout[index])
        if shape == "flatten":
            value = node("Flatten", [value], f"{value}_flat{op.index}", axis=1)
        elif shape is not None:
            value = node("Reshape", [value, constant(f"{value}_shape{op.index}", np.array(shape, np.int64))],
                         f"{value}_reshaped{op.index}")
        if not _is_int8(tensors[index]):
            return value
        scale, zero_point = qparams(index)
        return node("DequantizeLinear", [value, scale, zero_point], f"{value}_dq{op.index}")

    def write(value: str, op, out_layout: str) -> None:
        """Store the real value as op's output tensor: QuantizeLinear for an int8 tensor."""
        index = op.outputs[0]
        if _is_int8(tensors[index]):
            scale, zero_point = qparams(index)
            node("QuantizeLinear", [value, scale, zero_point], names[index])
        elif tensors[index].dtype is not None and tensors[index].dtype != np.float32:
            fail(f"op {op.index} ({op.opcode}): output type {tensors[index].type_name} has no ONNX export")
        else:
            node("Identity", [value], names[index])
        layout[index] = out_layout

    def weights(op, data_layout, name: str) -> str:
        """op's weights (input 1) as a float value in ONNX's layout: float32 data as it is,
        int8 codes behind a DequantizeLinear (per-channel: along the output axis, 0 after
        data_layout)."""
        w = tensors[op.inputs[1]]
        data = data_layout(w.data)
        if not _is_int8(w):
            return constant(name, data.astype(np.float32))
        scales = np.asarray(w.scales, np.float32)
        if np.any(w.zero_points != 0):
            fail(f"op {op.index} ({op.opcode}): weights '{w.name}' have a non-zero zero point")
        codes = constant(f"{name}_q", data.astype(np.int8))
        if scales.size == 1:
            return node("DequantizeLinear", [codes, constant(f"{name}_scale", scales[0]),
                                             constant(f"{name}_zero_point", np.int8(0))], name)
        if scales.size != data.shape[0]:
            fail(f"op {op.index} ({op.opcode}): weights '{w.name}' have {scales.size} scales for "
                 f"{data.shape[0]} output channels")
        return node("DequantizeLinear", [codes, constant(f"{name}_scale", scales),
                                         constant(f"{name}_zero_point", np.zeros(scales.size, np.int8))], name, axis=0)

    def bias(op, channels: int, name: str) -> list[str]:
        """op's bias (input 2) as [float value], or [] when omitted. An int32 bias has scale
        input_scale * weight_scale[c] and zero point 0 (as TFLite's kernels read it)."""
        if len(op.inputs) < 3 or op.inputs[2] < 0:
            return []
        b = tensors[op.inputs[2]]
        if b.data is None or b.data.size != channels:
            fail(f"op {op.index} ({op.opcode}): bias '{b.name}' must be a constant of {channels} values")
        data = b.data.reshape(channels)
        if b.dtype != np.int32:
            return [constant(name, data.astype(np.float32))]
        x, w = tensors[op.inputs[0]], tensors[op.inputs[1]]
        if not (_is_int8(x) and _is_int8(w)):
            fail(f"op {op.index} ({op.opcode}): an int32 bias needs int8 input and weights")
        scales = (np.float32(x.scales[0]) * np.asarray(w.scales, np.float32)).astype(np.float32)
        codes = constant(f"{name}_q", data.astype(np.int32))
        if scales.size == 1:
            return [node("DequantizeLinear", [codes, constant(f"{name}_scale", scales[0]),
                                              constant(f"{name}_zero_point", np.int32(0))], name)]
        return [node("DequantizeLinear", [codes, constant(f"{name}_scale", scales),
                                          constant(f"{name}_zero_point", np.zeros(scales.size, np.int32))], name,
                     axis=0)]

    def activated(value: str, activation: str, out: str) -> str:
        if activation not in FUSED:
            fail(f"fused activation {activation} has no ONNX form here")
        bounds = FUSED[activation]
        if bounds is None:
            return value
        low, high = bounds
        if high is None:
            return node("Relu", [value], f"{out}_relu")
        return node("Clip", [value, constant(f"{out}_min", np.float32(low)), constant(f"{out}_max", np.float32(high))],
                    f"{out}_clip")

    def pads(options, x_shape, kernel) -> list[int]:
        if options["padding"] == "VALID":
            return [0, 0, 0, 0]
        _, top, bottom = same_padding(x_shape[1], kernel[0], options["stride_h"], options.get("dilation_h", 1))
        _, left, right = same_padding(x_shape[2], kernel[1], options["stride_w"], options.get("dilation_w", 1))
        return [top, left, bottom, right]

    if len(program.inputs) != 1 or len(program.outputs) != 1:
        fail("ONNX export takes one input and one output tensor")
    (first,) = program.inputs
    x_t = tensors[first]
    if _is_int8(x_t):                          # the float image, quantized as the program's input expects
        graph_input = "input"
        scale, zero_point = qparams(first)
        node("QuantizeLinear", [graph_input, scale, zero_point], names[first])
    elif x_t.dtype is None or x_t.dtype == np.float32:
        graph_input = names[first]
    else:
        fail(f"input type {x_t.type_name} has no ONNX export")
    layout[first] = "nhwc"

    for op in program.operators:
        x, out = op.inputs[0], op.outputs[0]
        x_shape, o = tensors[x].shape, op.options
        name = names[out]
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w_shape = tensors[op.inputs[1]].shape
            if op.opcode == "CONV_2D":          # OHWI -> OIHW
                w = weights(op, lambda a: a.transpose(0, 3, 1, 2), f"{name}_w")
                channels, kernel, group = w_shape[0], list(w_shape[1:3]), 1
            else:                               # (1, KH, KW, C*m) -> (C*m, 1, KH, KW)
                w = weights(op, lambda a: a.transpose(3, 0, 1, 2), f"{name}_w")
                channels, kernel, group = w_shape[3], list(w_shape[1:3]), x_shape[3]
            conv = node("Conv", [read(op, 0, "nchw"), w, *bias(op, channels, f"{name}_b")], f"{name}_conv",
                        kernel_shape=kernel, strides=[o["stride_h"], o["stride_w"]],
                        dilations=[o.get("dilation_h", 1), o.get("dilation_w", 1)], group=group,
                        pads=pads(o, x_shape, kernel))
            write(activated(conv, o["activation"], name), op, "nchw")
        elif op.opcode == "PAD":
            p = tensors[op.inputs[1]].data.astype(np.int64)            # NHWC (4, 2) before/after
            if p.shape != (4, 2):
                fail(f"op {op.index} (PAD): paddings of shape {p.shape}, expected (4, 2)")
            order = [p[i, 0] for i in NCHW] + [p[i, 1] for i in NCHW]
            # real 0 outside: an int8 PAD fills with the zero point, which is Q(0) exactly
            padded = node("Pad", [read(op, 0, "nchw"), constant(f"{name}_pads", np.array(order, np.int64))],
                          f"{name}_pad", mode="constant")
            write(padded, op, "nchw")
        elif op.opcode in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            kernel = [o["filter_h"], o["filter_w"]]
            attrs = dict(kernel_shape=kernel, strides=[o["stride_h"], o["stride_w"]], pads=pads(o, x_shape, kernel))
            if op.opcode == "AVERAGE_POOL_2D":
                attrs["count_include_pad"] = 0                         # TFLite divides by the taps inside
            pooled = node("MaxPool" if op.opcode == "MAX_POOL_2D" else "AveragePool", [read(op, 0, "nchw")],
                          f"{name}_pool", **attrs)
            write(activated(pooled, o.get("activation", "NONE"), name), op, "nchw")
        elif op.opcode == "LEAKY_RELU":
            write(node("LeakyRelu", [read(op, 0)], f"{name}_leaky", alpha=float(o.get("alpha", 0.0))), op, layout[x])
        elif op.opcode == "FULLY_CONNECTED":
            if o.get("weights_format", 0) != 0:
                fail(f"op {op.index} (FULLY_CONNECTED): only the DEFAULT weights_format has an ONNX form")
            w_shape = tensors[op.inputs[1]].shape
            one_row = int(np.prod(x_shape[1:])) == w_shape[1]         # else TFLite's rows of `depth` values
            flat = read(op, 0, "nhwc", "flatten" if one_row else [-1, w_shape[1]])     # NHWC order
            gemm = node("Gemm", [flat, weights(op, lambda a: a, f"{name}_w"), *bias(op, w_shape[0], f"{name}_b")],
                        f"{name}_gemm", transB=1)
            write(activated(gemm, o["activation"], name), op, "nhwc")
        elif op.opcode == "RESHAPE":
            out_shape = tensors[out].shape
            if not out_shape or not x_shape or out_shape[0] != 1 or x_shape[0] != 1:
                fail(f"op {op.index} (RESHAPE): {x_shape} -> {out_shape} does not keep the batch axis")
            write(read(op, 0, "nhwc", [-1, *out_shape[1:]]), op, "nhwc")     # -1: the batch axis
        elif op.opcode == "SOFTMAX":
            value, beta = read(op, 0, "nhwc"), float(o.get("beta", 1.0))   # over TFLite's last axis
            if beta != 1.0:
                value = node("Mul", [value, constant(f"{name}_beta", np.float32(beta))], f"{name}_scaled")
            write(node("Softmax", [value], f"{name}_softmax", axis=-1), op, "nhwc")
        elif op.opcode in ("QUANTIZE", "DEQUANTIZE"):                 # real values pass; read / write convert
            write(read(op, 0), op, layout[x])
        else:
            fail(f"op {op.index} ({op.opcode}) has no ONNX export yet")

    (last,) = program.outputs
    y_t = tensors[last]
    value = stored(last, "nhwc")
    if _is_int8(y_t):                          # real-valued float32 output
        scale, zero_point = qparams(last)
        output = node("DequantizeLinear", [value, scale, zero_point], "output")
    else:
        output = node("Identity", [value], "output")
    graph = helper.make_graph(
        nodes, program.name,
        [helper.make_tensor_value_info(graph_input, TensorProto.FLOAT, ["N", *x_t.shape[1:]])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", *y_t.shape[1:]])],
        initializer=initializers)
    model = helper.make_model(graph, producer_name="edge-lls", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8                       # onnxruntime reads IR 8 with opset 17
    for key, value in program.metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value.decode("utf-8", "replace")
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()

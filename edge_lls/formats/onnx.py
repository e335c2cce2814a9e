"""A float program as an ONNX model (opset 17), for onnxruntime and the tools that read ONNX.

The program is NHWC (TFLite's layout); ONNX convolutions and pooling are NCHW. The graph
keeps the program's NHWC input and output: one Transpose to NCHW after the input, and one
back to NHWC before a FULLY_CONNECTED (TFLite flattens NHWC, so the weights' column order
stays as trained). Weights are transposed once, here: conv OHWI -> OIHW, depthwise
(1, KH, KW, C*m) -> (C*m, 1, KH, KW) with group = C. SAME padding becomes the explicit
pads TFLite computes (kernels/geometry.same_padding: the odd pixel after). The batch
dimension is symbolic ("N").

    to_onnx(program) -> bytes          float32 programs only (int8: not yet)
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..kernels.geometry import same_padding
from ..program.ir import Program

OPSET = 17
FUSED = {"NONE": None, "RELU": "Relu", "RELU6": "Clip"}
NCHW, NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


def to_onnx(program: Program) -> bytes:
    """The ONNX ModelProto bytes of a float32 program (see the module docstring)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    tensors = program.tensors
    if any(t.dtype is not None and t.dtype.kind == "i" and t.data is None for t in tensors):
        raise ConfigError(f"{program.name}: ONNX export takes a float program; export int8 as .tflite")
    nodes, initializers, layout = [], [], {}          # layout: tensor index -> "nhwc" | "nchw" | "flat"
    names = {i: f"t{i}" for i in range(len(tensors))}

    def constant(name: str, array: np.ndarray) -> str:
        initializers.append(numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def node(op_type: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op_type, inputs, [output], name=f"{op_type}_{len(nodes)}", **attrs))
        return output

    def as_nchw(index: int) -> str:
        if layout[index] == "nchw":
            return names[index]
        return node("Transpose", [names[index]], f"{names[index]}_nchw", perm=list(NCHW))

    def activated(value: str, activation: str, out: str) -> str:
        kind = FUSED.get(activation, "?")
        if kind == "?":
            raise ConfigError(f"{program.name}: fused activation {activation} has no ONNX form here")
        if kind is None:
            return node("Identity", [value], out)
        if kind == "Relu":
            return node("Relu", [value], out)
        low, high = constant(f"{out}_min", np.float32(0)), constant(f"{out}_max", np.float32(6))
        return node("Clip", [value, low, high], out)

    def pads(options, x_shape, kernel) -> list[int]:
        if options["padding"] == "VALID":
            return [0, 0, 0, 0]
        _, top, bottom = same_padding(x_shape[1], kernel[0], options["stride_h"], options.get("dilation_h", 1))
        _, left, right = same_padding(x_shape[2], kernel[1], options["stride_w"], options.get("dilation_w", 1))
        return [top, left, bottom, right]

    (first,) = program.inputs
    layout[first] = "nhwc"
    for op in program.operators:
        x, out = op.inputs[0], op.outputs[0]
        x_shape, o = tensors[x].shape, op.options
        name = names[out]
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w, b = tensors[op.inputs[1]], tensors[op.inputs[2]]
            if op.opcode == "CONV_2D":
                weights, group = w.data.transpose(0, 3, 1, 2), 1
            else:
                weights, group = w.data.transpose(3, 0, 1, 2), x_shape[3]
            conv = node("Conv", [as_nchw(x), constant(f"{name}_w", weights.astype(np.float32)),
                                 constant(f"{name}_b", b.data.astype(np.float32))], f"{name}_conv",
                        kernel_shape=list(weights.shape[2:]), strides=[o["stride_h"], o["stride_w"]],
                        dilations=[o.get("dilation_h", 1), o.get("dilation_w", 1)], group=group,
                        pads=pads(o, x_shape, weights.shape[2:]))
            activated(conv, o["activation"], name)
            layout[out] = "nchw"
        elif op.opcode == "PAD":
            p = tensors[op.inputs[1]].data.astype(np.int64)            # NHWC (4, 2) before/after
            order = [p[i, 0] for i in NCHW] + [p[i, 1] for i in NCHW]
            node("Pad", [as_nchw(x), constant(f"{name}_pads", np.array(order, np.int64))], name, mode="constant")
            layout[out] = "nchw"
        elif op.opcode in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            kernel = [o["filter_h"], o["filter_w"]]
            attrs = dict(kernel_shape=kernel, strides=[o["stride_h"], o["stride_w"]], pads=pads(o, x_shape, kernel))
            if op.opcode == "AVERAGE_POOL_2D":
                attrs["count_include_pad"] = 0                         # TFLite divides by the taps inside
            pooled = node("MaxPool" if op.opcode == "MAX_POOL_2D" else "AveragePool", [as_nchw(x)],
                          f"{name}_pool", **attrs)
            activated(pooled, o.get("activation", "NONE"), name)
            layout[out] = "nchw"
        elif op.opcode == "LEAKY_RELU":
            node("LeakyRelu", [names[x]], name, alpha=float(o.get("alpha", 0.0)))
            layout[out] = layout[x]
        elif op.opcode == "FULLY_CONNECTED":
            w, b = tensors[op.inputs[1]], tensors[op.inputs[2]]
            source = names[x]
            if layout[x] == "nchw":                                   # flatten in TFLite's NHWC order
                source = node("Transpose", [source], f"{source}_nhwc", perm=list(NHWC))
            flat = node("Flatten", [source], f"{name}_flat", axis=1)
            gemm = node("Gemm", [flat, constant(f"{name}_w", w.data.astype(np.float32)),
                                 constant(f"{name}_b", b.data.astype(np.float32))], f"{name}_gemm", transB=1)
            activated(gemm, o["activation"], name)
            layout[out] = "flat"
        elif op.opcode == "SOFTMAX" and float(o.get("beta", 1.0)) == 1.0:
            node("Softmax", [names[x]], name, axis=-1)
            layout[out] = layout[x]
        else:
            raise ConfigError(f"{program.name}: op {op.index} ({op.opcode}) has no ONNX export yet")
    (last,) = program.outputs
    output = names[last]
    if layout[last] == "nchw":
        output = node("Transpose", [output], "output", perm=list(NHWC))
    else:
        output = node("Identity", [output], "output")
    x_t, y_t = tensors[first], tensors[last]
    graph = helper.make_graph(
        nodes, program.name,
        [helper.make_tensor_value_info(names[first], TensorProto.FLOAT, ["N", *x_t.shape[1:]])],
        [helper.make_tensor_value_info(output, TensorProto.FLOAT, ["N", *y_t.shape[1:]])],
        initializer=initializers)
    model = helper.make_model(graph, producer_name="edge-lls", opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8                       # onnxruntime reads IR 8 with opset 17
    for key, value in program.metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value.decode("utf-8", "replace")
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()

"""A trained Model lowered to a float32 program: batch norm folded (nn/fold.py) into each
conv / dense, activations fused where TFLite can express them, padding TFLite cannot
express made an explicit PAD, adaptive pooling a strided AVERAGE_POOL_2D."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from ..kernels.activation import LEAKY_SLOPE
from ..kernels.geometry import tflite_padding, uniform_adaptive_pool
from ..nn.fold import unit_affine
from .ir import F32, I32, Builder, Program

FUSED = {"none": "NONE", "relu": "RELU", "relu6": "RELU6"}


def _emit_unit(b: Builder, op, bn, x: int, shape: tuple, name: str) -> tuple[int, tuple]:
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


def _emit_post(b: Builder, post, x: int, shape: tuple, name: str) -> tuple[int, tuple]:
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
    b = Builder()
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

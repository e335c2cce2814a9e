"""fp16 inference of an fp32 Model: weights and activations stored as float16, math in float32.

The model runs as what is deployed: its lowered program (program/lower.py, batch norm
folded once there), op by op, with float16 storage. The kernels read and write float16
activations themselves (kernels/half.py: loads widen to float32, a float16 output is
accumulated in float32 and rounded once), so activations exist only in float16. Weights
are widened per layer into one float32 scratch the size of the largest layer's (the GEMM
is float32 sgemm). That is what a half-precision deployment stores: half the bytes of
fp32 for weights and activations.

    half = Fp16Model(model)          # lowered, then weights rounded to fp16
    logits = half.forward(x)          # x (N,H,W,C) float32 -> (N,K) float32 (fp16 values)

The program's ops map onto layers: CONV_2D / DEPTHWISE_CONV_2D (a PAD before one becomes
the convolution's explicit padding), FULLY_CONNECTED, MAX_POOL_2D / AVERAGE_POOL_2D, and
activations (fused RELU / RELU6, or a LEAKY_RELU op), each applied to the layer's rounded
float16 output in place (exact for ReLU and ReLU6; LeakyReLU rounds twice). Buffers are
allocated once per batch size (the last two sizes are kept): two float16 activation
buffers used in turn, float32 weight scratch, the convolution scratch and the dense
layers' input scratch, each sized for the largest layer.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_lls.errors import ConfigError
from edge_lls.kernels import conv as kconv
from edge_lls.kernels import dense as kdense
from edge_lls.kernels import pool as kpool
from edge_lls.kernels.activation import ACT_NONE, ACTIVATIONS, activation_f32
from edge_lls.kernels.geometry import Window, resolve_window
from edge_lls.program.lower import float_program

F16 = np.float16
F16_MAX = float(np.finfo(np.float16).max)
FUSED_ACTIVATIONS = {"NONE": "none", "RELU": "relu", "RELU6": "relu6"}


@dataclass
class _Layer:
    kind: str                       # "conv", "dense", "max_pool" or "avg_pool"
    name: str
    out_shape: tuple                # batch-1 output shape, from the program's tensor
    window: Window | None = None    # conv and pooling
    groups: int = 1
    w: np.ndarray | None = None     # float16: conv (Cout, KH, KW, Cin/groups), dense (out, in)
    b: np.ndarray | None = None     # float16
    act: int = ACT_NONE


def _to_f16(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float32)
    if np.abs(values).max(initial=0.0) > F16_MAX:
        raise ConfigError(f"{name}: weights exceed the float16 range (max |w| "
                          f"{np.abs(values).max():.3g} > {F16_MAX:g})")
    return values.astype(F16)


def _window(in_shape, kernel, options, pads) -> Window:
    padding = pads if pads is not None else options["padding"].lower()
    return resolve_window(in_shape[1:3], kernel, (options["stride_h"], options["stride_w"]), padding)


def _layers(program) -> list[_Layer]:
    """The program's ops as fp16 layers (see the module docstring)."""
    tensors, layers, pads = program.tensors, [], None
    for op in program.operators:
        x, out = tensors[op.inputs[0]], tensors[op.outputs[0]]
        o, where = op.options, f"{program.name}: op {op.index} ({op.opcode})"
        if pads is not None and op.opcode not in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            raise ConfigError(f"{where}: a PAD feeds it; fp16 inference folds PAD into a convolution only")
        if op.opcode == "PAD":
            p = tensors[op.inputs[1]].data
            pads = (int(p[1, 0]), int(p[1, 1]), int(p[2, 0]), int(p[2, 1]))
            in_shape = x.shape
            continue
        if op.opcode in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            w, bias = tensors[op.inputs[1]], tensors[op.inputs[2]]
            shape = in_shape if pads is not None else x.shape
            if op.opcode == "CONV_2D":
                weights, groups = w.data, 1
            else:                                         # (1, KH, KW, C*m) -> (C*m, KH, KW, 1)
                weights, groups = w.data.transpose(3, 1, 2, 0), shape[3]
            layer = _Layer("conv", w.name, out.shape, _window(shape, weights.shape[1:3], o, pads), groups,
                           _to_f16(w.name, weights), _to_f16(bias.name, bias.data),
                           ACTIVATIONS[FUSED_ACTIVATIONS[o["activation"]]])
            pads = None
        elif op.opcode == "FULLY_CONNECTED":
            w, bias = tensors[op.inputs[1]], tensors[op.inputs[2]]
            layer = _Layer("dense", w.name, out.shape, w=_to_f16(w.name, w.data), b=_to_f16(bias.name, bias.data),
                           act=ACTIVATIONS[FUSED_ACTIVATIONS[o["activation"]]])
        elif op.opcode in ("MAX_POOL_2D", "AVERAGE_POOL_2D"):
            kind = "max_pool" if op.opcode == "MAX_POOL_2D" else "avg_pool"
            layer = _Layer(kind, out.name, out.shape, _window(x.shape, (o["filter_h"], o["filter_w"]), o, None))
        elif op.opcode == "LEAKY_RELU" and layers and layers[-1].act == ACT_NONE:
            layers[-1].act = ACTIVATIONS["leaky_relu"]    # in place on the layer's rounded output
            continue
        else:
            raise ConfigError(f"{where} is not supported in fp16")
        layers.append(layer)
    return layers


class Fp16Model:
    """Half-precision inference of an fp32 Model (a snapshot: later changes to the model's
    weights are not seen)."""

    def __init__(self, model):
        self.input_shape = tuple(model.input_shape)
        self.num_classes = model.num_classes
        self.name = model.name
        self.layers = _layers(float_program(model))
        self._plans: dict[int, dict] = {}

    # ------------------------------------------------------------------ memory
    @property
    def weight_bytes(self) -> int:
        return sum(layer.w.nbytes + layer.b.nbytes for layer in self.layers if layer.w is not None)

    def _plan(self, batch: int) -> dict:
        """Shapes of every layer and the buffers for this batch size (allocated once)."""
        plan = self._plans.get(batch)
        if plan is not None:
            return plan
        shapes, shape = [], (batch, *self.input_shape)
        act_max, dense_in, w_max, b_max, conv_max = int(np.prod(shape)), 1, 1, 1, 1
        for layer in self.layers:
            out = (batch, *layer.out_shape[1:])
            shapes.append((shape, out))
            act_max = max(act_max, int(np.prod(out)))
            if layer.w is not None:
                w_max, b_max = max(w_max, layer.w.size), max(b_max, layer.b.size)
            if layer.kind == "conv":
                conv_max = max(conv_max, kconv.conv2d_scratch_floats(shape, layer.w.shape, layer.window,
                                                                     layer.groups, half=True))
            elif layer.kind == "dense":
                dense_in = max(dense_in, kdense.dense_scratch_floats(shape[0], int(np.prod(shape[1:])), out[1], True))
            shape = out
        plan = dict(shapes=shapes, act=[np.empty(act_max, F16), np.empty(act_max, F16)],
                    w32=np.empty(w_max, np.float32), b32=np.empty(b_max, np.float32),
                    scratch=np.empty(conv_max, np.float32), dense=np.empty(dense_in, np.float32))
        if len(self._plans) >= 2:
            self._plans.pop(next(iter(self._plans)))
        self._plans[batch] = plan
        return plan

    # ------------------------------------------------------------------ inference
    def forward(self, x: np.ndarray) -> np.ndarray:
        """Logits (N, K) as float32 (holding float16 values)."""
        x = np.asarray(x)
        if x.shape[1:] != self.input_shape:
            raise ConfigError(f"input shape {x.shape[1:]} does not match the model's {self.input_shape}")
        plan = self._plan(len(x))
        current = plan["act"][0][:x.size].reshape(x.shape)
        np.copyto(current, x, casting="unsafe")                 # the input is stored as float16
        for i, (layer, (_, out_shape)) in enumerate(zip(self.layers, plan["shapes"])):
            out = plan["act"][(i + 1) % 2][:int(np.prod(out_shape))].reshape(out_shape)
            self._run(layer, current, out, plan)
            current = out
        return current.astype(np.float32)

    def _run(self, layer: _Layer, x16, y16, plan) -> None:
        """One layer, float16 activations in and out."""
        if layer.kind == "max_pool":
            kpool.max_pool2d_f32(x16, y16, layer.window, None, None)
            return
        if layer.kind == "avg_pool":
            kpool.avg_pool2d_f32(x16, y16, layer.window, False)    # TFLite's: padding not counted
            return
        w32 = plan["w32"][:layer.w.size].reshape(layer.w.shape)
        b32 = plan["b32"][:layer.b.size]
        np.copyto(w32, layer.w)
        np.copyto(b32, layer.b)
        if layer.kind == "conv":
            kconv.conv2d_f32(x16, w32, b32, y16, layer.window, layer.groups, plan["scratch"])
        else:
            kdense.dense_f32(x16.reshape(len(x16), -1), w32, b32, y16, plan["dense"])
        if layer.act != ACT_NONE:
            activation_f32(y16, y16, layer.act)

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        out = np.empty(len(x), np.int64)
        for i in range(0, len(x), batch_size):
            out[i:i + batch_size] = self.forward(x[i:i + batch_size]).argmax(1)
        return out


__all__ = ["Fp16Model"]

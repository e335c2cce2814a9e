"""fp16 inference of an fp32 Model: weights and activations stored as float16, math in float32.

The kernels read and write float16 activations themselves (kernels/half.py: loads widen
to float32, a float16 output is accumulated in float32 and rounded once), so activations
exist only in float16. Weights are widened per layer into one float32 scratch the size of
the largest layer's (the GEMM is float32 sgemm). That is what a half-precision deployment
stores: half the bytes of fp32 for weights and activations.

    half = Fp16Model(model)          # batch norm folded into conv/dense, then rounded to fp16
    logits = half.forward(x)          # x (N,H,W,C) float32 -> (N,K) float32 (fp16 values)

Layers, in order, per unit: conv or dense with folded batch norm (nn/fold.py)
and its activation; per block the post ops (max/avg/adaptive pooling); then the classifier.
Buffers are allocated once per batch size (the last two sizes are kept): two float16
activation buffers used in turn, float32 weight scratch, the convolution scratch and the
dense layers' input scratch, each sized for the largest layer. A layer's activation is
applied to its rounded float16 output in place (exact for ReLU and ReLU6; LeakyReLU
rounds twice).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_lls.errors import ConfigError
from edge_lls.kernels import conv as kconv
from edge_lls.kernels import dense as kdense
from edge_lls.kernels.activation import ACT_NONE, ACTIVATIONS, activation_f32
from edge_lls.nn.layers import AdaptiveAvgPool2d, AvgPool2d, Conv2d, Dense, MaxPool2d
from edge_lls.nn.fold import fold_batchnorm

F16 = np.float16
F16_MAX = float(np.finfo(np.float16).max)


@dataclass
class _Layer:
    kind: str                       # "conv", "dense" or "post"
    name: str
    op: object                      # the core layer (Conv2d for its window and groups; pooling op)
    w: np.ndarray | None = None     # float16, folded
    b: np.ndarray | None = None     # float16, folded
    act: int = ACT_NONE

    def out_shape(self, in_shape):
        return self.op.out_shape(in_shape)


def _to_f16(name: str, values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, np.float32)
    if np.abs(values).max(initial=0.0) > F16_MAX:
        raise ConfigError(f"{name}: weights exceed the float16 range (max |w| "
                          f"{np.abs(values).max():.3g} > {F16_MAX:g})")
    return values.astype(F16)


class Fp16Model:
    """Half-precision inference of an fp32 Model (a snapshot: later changes to the model's
    weights are not seen)."""

    def __init__(self, model):
        self.input_shape = tuple(model.input_shape)
        self.num_classes = model.num_classes
        self.name = model.name
        self.layers: list[_Layer] = []
        for block in model.blocks:
            for unit in block.units:
                w, b = fold_batchnorm(unit.op, unit.bn)
                self.layers.append(self._compute_layer(unit.op, w, b, unit.bn.act_name))
            for j, post in enumerate(block.post):
                if not isinstance(post, (MaxPool2d, AvgPool2d, AdaptiveAvgPool2d)):
                    raise ConfigError(f"{block.name}: post op {type(post).__name__} is not supported in fp16")
                self.layers.append(_Layer("post", f"{block.name}.post{j}", post))
        c = model.classifier
        bias = c.b.value if c.b is not None else np.zeros(c.fout, np.float32)
        self.layers.append(self._compute_layer(c, c.w.value, bias, "none"))
        self._plans: dict[int, dict] = {}

    def _compute_layer(self, op, w, b, act_name: str) -> _Layer:
        kind = "conv" if isinstance(op, Conv2d) else "dense" if isinstance(op, Dense) else None
        if kind is None:
            raise ConfigError(f"{op.name}: layer {type(op).__name__} is not supported in fp16")
        return _Layer(kind, op.name, op, _to_f16(f"{op.name}.w", w), _to_f16(f"{op.name}.b", b), ACTIVATIONS[act_name])

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
            out = layer.out_shape(shape)
            shapes.append((shape, out))
            act_max = max(act_max, int(np.prod(out)))
            if layer.w is not None:
                w_max, b_max = max(w_max, layer.w.size), max(b_max, layer.b.size)
            if layer.kind == "conv":
                conv_max = max(conv_max, kconv.conv2d_scratch_floats(shape, layer.w.shape, layer.op.window(shape),
                                                                     layer.op.groups, half=True))
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
        if layer.kind == "post":
            layer.op.forward(x16, y16, None)
            return
        w32 = plan["w32"][:layer.w.size].reshape(layer.w.shape)
        b32 = plan["b32"][:layer.b.size]
        np.copyto(w32, layer.w)
        np.copyto(b32, layer.b)
        if layer.kind == "conv":
            kconv.conv2d_f32(x16, w32, b32, y16, layer.op.window(x16.shape), layer.op.groups, plan["scratch"])
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

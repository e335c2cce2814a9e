"""A model: blocks (each trained by a learning rule) and a final linear classifier.

Built from a declarative spec (a JSON-able dict, see models/ for the zoo):
    {"name": ..., "input_shape": [H, W, C], "num_classes": K,
     "blocks": [{"type": "conv" | "dwsep" | "dense", ...}, ...], "classifier": {"bias": true}}
"""
from __future__ import annotations

import copy

import numpy as np

from ..errors import ConfigError
from .arena import Arena, Buf
from .block import Block, Unit
from .layers import AdaptiveAvgPool2d, AvgPool2d, BatchNorm, Conv2d, Dense, MaxPool2d


def _post_op(spec: dict):
    kind = spec["type"]
    if kind == "maxpool":
        return MaxPool2d(spec.get("kernel", 2), spec.get("stride"), spec.get("padding", 0))
    if kind == "avgpool":
        return AvgPool2d(spec.get("kernel", 2), spec.get("stride"), spec.get("padding", 0))
    if kind == "adaptive_avgpool":
        return AdaptiveAvgPool2d(spec["size"])
    raise ConfigError(f"unknown post-block op type {kind!r} (maxpool, avgpool, adaptive_avgpool)")


def _build_block(index: int, spec: dict, in_shape, rng) -> Block:
    kind, name = spec["type"], f"block{index}"
    act = spec.get("act", "leaky_relu")
    if kind == "conv":
        op = Conv2d(f"{name}.conv", in_shape[-1], spec["filters"], spec.get("kernel", 3),
                    spec.get("stride", 1), spec.get("padding", 1), 1, spec.get("bias", True), rng)
        units = [Unit(op, BatchNorm(f"{name}.bn", spec["filters"], act))]
    elif kind == "dwsep":
        cin = in_shape[-1]
        dw = Conv2d(f"{name}.dw", cin, cin, spec.get("kernel", 3), spec.get("stride", 1),
                    spec.get("padding", "same"), cin, spec.get("bias", False), rng)
        pw = Conv2d(f"{name}.pw", cin, spec["filters"], 1, 1, 0, 1, spec.get("bias", False), rng)
        units = [Unit(dw, BatchNorm(f"{name}.bn1", cin, act)),
                 Unit(pw, BatchNorm(f"{name}.bn2", spec["filters"], act))]
    elif kind == "dense":
        fin = int(np.prod(in_shape[1:]))
        op = Dense(f"{name}.fc", fin, spec["units"], spec.get("bias", True), rng)
        units = [Unit(op, BatchNorm(f"{name}.bn", spec["units"], act))]
    else:
        raise ConfigError(f"unknown block type {kind!r} (conv, dwsep, dense)")
    post = [_post_op(p) for p in spec.get("post", [])]
    return Block(name, units, post, spec["pool_size"], spec)


class Model:
    def __init__(self, spec: dict, seed: int = 0):
        self.spec = copy.deepcopy(spec)
        self.name = spec["name"]
        self.input_shape = tuple(spec["input_shape"])          # (H, W, C)
        self.num_classes = int(spec["num_classes"])
        rng = np.random.default_rng(seed)
        self.blocks: list[Block] = []
        shape = (1, *self.input_shape)
        for i, bspec in enumerate(spec["blocks"]):
            block = _build_block(i, bspec, shape, rng)
            self.blocks.append(block)
            shape = block.shapes(shape)[2]
        fin = int(np.prod(shape[1:]))
        self.classifier = Dense("classifier", fin, self.num_classes, spec.get("classifier", {}).get("bias", True), rng)
        self._infer_arenas: dict[int, Arena] = {}
        self._lent = None
        self.activation_dtype = np.dtype(np.float32)   # float16: mixed precision (set_activation_dtype)

    # ----------------------------------------------------------------------- structure
    @property
    def params(self):
        return [p for b in self.blocks for p in b.params] + self.classifier.params

    def num_params(self) -> int:
        return sum(p.value.size for p in self.params)

    def batch_norms(self):
        return [u.bn for b in self.blocks for u in b.units]

    def stage_shapes(self, batch: int):
        """Per block: (input shape, a's shape, h's shape); then the classifier's input shape."""
        out, shape = [], (batch, *self.input_shape)
        for b in self.blocks:
            _, a_shape, h_shape = b.shapes(shape)
            out.append((shape, a_shape, h_shape))
            shape = h_shape
        return out, shape

    def set_activation_dtype(self, dtype) -> None:
        """Store every activation of training and inference steps as float32 or float16
        (mixed precision: float32 weights and math, float16 activations)."""
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float16):
            raise ConfigError(f"activation storage {dtype}; float32 or float16")
        self.activation_dtype = dtype
        self._infer_arenas.clear()

    def classifier_buffers(self, batch: int, *, backprop: bool) -> list[Buf]:
        bufs = [Buf("logits", (batch, self.num_classes), "keep"),
                Buf("dlogits", (batch, self.num_classes), "grad")]
        if self.activation_dtype == np.float16:            # the classifier widens its input here
            _, h_shape = self.stage_shapes(batch)
            bufs.append(Buf("s", (max(self.classifier.scratch_floats(h_shape, half=True), 1),), "tmp"))
        return bufs

    def arena(self, batch: int, mode: str, extra: list[list[Buf]] | None = None,
              pooled_grad: list[bool] | None = None, memory=None) -> Arena:
        """extra[i]: buffers a learning rule adds to stage i (its head); pooled_grad[i]:
        block i's gradient arrives pooled (see Block.backward_pooled)."""
        return Arena(self.stages(batch, mode, extra, pooled_grad), mode, memory)

    def stages(self, batch: int, mode: str, extra: list[list[Buf]] | None = None,
               pooled_grad: list[bool] | None = None) -> list[list[Buf]]:
        """Every buffer of a step, per stage (blocks, then the classifier): arena.plan's input."""
        shapes, _ = self.stage_shapes(batch)
        backprop = mode == "backprop"
        pooled = pooled_grad or [False] * len(self.blocks)
        stages = [b.buffers(s[0], backprop=backprop, pooled_grad=pg, storage=self.activation_dtype)
                  for b, s, pg in zip(self.blocks, shapes, pooled)]
        stages.append(self.classifier_buffers(batch, backprop=backprop))
        if extra:
            for i, bufs in enumerate(extra):
                stages[i] = stages[i] + list(bufs)
        return stages

    def lend_memory(self, memory) -> None:
        """Let inference arenas lay over this buffer (a training arena's): evaluation
        and training steps never run at the same time."""
        self._lent = memory
        self._infer_arenas.clear()

    # ----------------------------------------------------------------------- inference
    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        """Logits (N, K) for x (N, H, W, C) float32: a view into the model's inference
        arena (copy it to keep it past the next call). training=True normalises with batch
        statistics and updates the running averages (a batch-norm refresh); no learning."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ConfigError(f"input shape {x.shape[1:]} does not match the model's {self.input_shape}")
        n = x.shape[0]
        arena = self._infer_arenas.get(n)
        if arena is None:
            self._infer_arenas.clear()
            arena = self._infer_arenas[n] = self.arena(n, "infer", memory=self._lent)
        h = x
        for block, V in zip(self.blocks, arena.views):
            _, h = block.forward(h, V, training=training)
        logits = arena.views[-1]["logits"]
        self.classifier.forward(h, logits, arena.views[-1].get("s"))
        return logits

    def predict(self, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class indices for x (N, H, W, C), in batches."""
        out = np.empty(len(x), np.int64)
        for i in range(0, len(x), batch_size):
            out[i:i + batch_size] = self.forward(x[i:i + batch_size]).argmax(1)
        return out

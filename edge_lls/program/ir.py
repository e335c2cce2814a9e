"""The one representation of a deployed model: a program.

A program is what a .tflite file holds and what every backend reads: tensors (batch-1
shapes, constant data inline, int8 quantization per tensor or per channel) and TFLite
operators in run order. formats/tflite.py reads and writes it as bytes, lower.py makes one
from a trained Model, ptq.py quantizes it, edit.py cuts and splices it, and
interpreter.prepare validates every operator once and prepares it into a runnable Graph.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from ..errors import ConfigError

F32, I8, I32 = np.dtype(np.float32), np.dtype(np.int8), np.dtype(np.int32)


@dataclass
class Tensor:
    """One tensor of the graph.  ``data`` holds the contents of constant tensors (weights,
    biases, shapes); runtime tensors get a buffer in Graph.buffers instead."""
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: np.dtype | None
    type_name: str
    scales: np.ndarray | None = None  # float32, (1,) per-tensor or (C,) per-channel
    zero_points: np.ndarray | None = None  # int64, same length as scales
    quantized_dimension: int = 0
    data: np.ndarray | None = None

    @property
    def scale(self) -> float:
        return float(self.scales[0]) if self.scales is not None else 0.0

    @property
    def zero_point(self) -> int:
        return int(self.zero_points[0]) if self.zero_points is not None else 0

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))


@dataclass
class Operator:
    index: int
    opcode: str
    inputs: tuple[int, ...]  # -1 marks an omitted optional input
    outputs: tuple[int, ...]
    options: dict = field(default_factory=dict)


@dataclass
class Program:
    """A TFLite-style model: tensors with batch-1 shapes, operators in run order."""
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    name: str = "program"
    description: str = ""
    metadata: dict = field(default_factory=dict)   # TFLite metadata: name -> bytes

    def batched_tensors(self, batch: int) -> list[Tensor]:
        """The tensors with every runtime tensor's leading (batch) axis set to ``batch``."""
        tensors = []
        for t in self.tensors:
            if t.data is None and batch != 1:
                if not t.shape or t.shape[0] != 1:
                    raise ConfigError(f"{self.name}: tensor {t.index} '{t.name}' has shape {t.shape}, "
                                      f"no batch axis to resize")
                t = dataclasses.replace(t, shape=(batch, *t.shape[1:]))
            tensors.append(t)
        return tensors

    def tensor(self, index: int) -> Tensor:
        return self.tensors[index]


class Builder:
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

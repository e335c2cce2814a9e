"""An int8 (or float) program as a classifier of float images: quantize the input, run the
prepared graph per batch size, dequantize or argmax the output."""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError, FormatError
from ..kernels.fixedpoint import dequantize, quantize
from ..formats.tflite import save_tflite
from .interpreter import Graph, prepare
from .ir import Program


class Int8Model:
    """An int8 program as a classifier of float images (NHWC, the values the fp32 model
    takes).  Graphs are built per batch size (at most two kept)."""

    def __init__(self, program: Program, fast: bool = True, batch_size: int = 256, requantize: str = "litert"):
        if len(program.inputs) != 1 or len(program.outputs) != 1:
            raise FormatError(f"{program.name}: expected one input and one output tensor")
        self.program, self.fast, self.batch_size, self.requantize = program, fast, batch_size, requantize
        self.input = program.tensors[program.inputs[0]]
        self.output = program.tensors[program.outputs[0]]
        self._graphs: dict[int, Graph] = {}

    @property
    def input_shape(self) -> tuple:
        return tuple(self.input.shape[1:])

    def graph(self, batch: int) -> Graph:
        graph = self._graphs.get(batch)
        if graph is None:
            if len(self._graphs) >= 2:
                self._graphs.pop(next(iter(self._graphs)))
            graph = self._graphs[batch] = prepare(self.program, batch, self.fast, self.requantize)
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
        return save_tflite(self.program, path)

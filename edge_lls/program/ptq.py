"""Post-training int8 quantization in TFLite's scheme.

    quantize_program(fp, batches)   min/max calibration of every activation on a sample,
                                    int8 codes for activations (per tensor, asymmetric),
                                    weights (per output channel for CONV_2D and
                                    DEPTHWISE_CONV_2D, per tensor for FULLY_CONNECTED,
                                    symmetric, [-127, 127]) and int32 biases (scale
                                    s_in * s_w[c], zero point 0)
    quantize_model(model, x)        lower.float_program, then the above: an Int8Model

Quantization parameters follow TFLite's converter: a tensor's real range is widened to
contain 0, scale = (max - min) / 255, zero point = round(-128 - min / scale) clamped;
pooling, RESHAPE and PAD outputs share their input's parameters (TFLite requires it);
SOFTMAX outputs are 1/256, -128.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import numpy as np

from ..errors import ConfigError
from ..kernels.fixedpoint import INT8_MAX, INT8_MIN
from .interpreter import prepare
from .ir import I8, I32, Program
from .lower import float_program
from .runner import Int8Model

WEIGHT_MAX = 127                    # symmetric weights use [-127, 127], as TFLite does
SHARED_QUANT_OPS = frozenset({"MAX_POOL_2D", "AVERAGE_POOL_2D", "RESHAPE", "PAD"})


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
        self._graphs: dict = {}        # batch size -> interpreter.Graph
        self.samples = 0

    def observe(self, x: np.ndarray) -> None:
        x = np.ascontiguousarray(x, np.float32)
        graph = self._graphs.get(len(x))
        if graph is None:
            if len(self._graphs) >= 2:
                self._graphs.pop(next(iter(self._graphs)))
            graph = self._graphs[len(x)] = prepare(self.program, len(x))
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


def calibration_sample(split, images: int, seed: int = 0) -> np.ndarray:
    """The first ``images`` training images of a seeded shuffle, float32 (no augmentation)."""
    if isinstance(images, bool) or not isinstance(images, int) or images < 1:
        raise ConfigError(f"--calibration-images must be an integer >= 1, got {images!r}")
    order = split.batch_order(shuffle=True, seed=seed)[:images]
    return split.subset(np.sort(order)).arrays()[0]

"""Classify image files with a .tflite model or one of our model files (.ells).

    predictor = load_predictor("vww_96_int8.tflite")
    for record in predict_files(predictor, ["person.bmp"]):
        print(record["class"], record["probability"], record["scores"])

Preprocessing is the one the model's input implies (documented per model in docs/int8.md):
  * images are decoded with Pillow (BMP rows stored bottom-up are put top row first, as
    for every format), converted to the model's channels (L for 1, RGB for 3) and resized
    bilinearly to its input size when they differ;
  * pixels are scaled to the real range the input tensor covers: [0, 1] in general,
    [-1, 1] for an int8 input whose quantization reaches below -0.5 (finetune.pixel_range);
  * an int8 input is then quantized with the input tensor's scale and zero point
    (vww_96_int8: q = pixel - 128; person_detect: q = pixel - 128 within one code);
  * .ells models take the [0, 1] pixels as float32 (how edge-lls trains them).
pixel_format="int8" reads an 8-bit single-channel file whose bytes are int8 codes
(grey - 128, two's complement: the sample person.bmp), i.e. byte XOR 0x80 is the picture.

Each result is {"path", "class", "label", "probability", "scores"}: scores is the raw output
tensor (integers for an int8 model), probability the predicted class's probability (the
dequantized output of a model ending in SOFTMAX, else the softmax of the scores).
"""
from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from edge_lls.errors import ConfigError, DataError, FormatError
from edge_lls.finetune import METADATA_KEY, pixel_range, quantize_pixels
from edge_lls.formats.sniff import model_kind, model_path
from edge_lls.kernels.fixedpoint import dequantize
from edge_lls.precision import PRECISIONS

PIXEL_FORMATS = ("image", "int8")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError,
                  Image.DecompressionBombError)


def load_image(path, shape, pixel_format: str = "image") -> np.ndarray:
    """(H, W, C) uint8 pixels of an image file, for a model input of shape (H, W, C)."""
    height, width, channels = shape
    if pixel_format not in PIXEL_FORMATS:
        raise ConfigError(f"--pixels must be one of {', '.join(PIXEL_FORMATS)}, got {pixel_format!r}")
    try:
        with Image.open(path) as img:
            if pixel_format == "int8":
                if img.mode not in ("L", "P"):
                    raise DataError(f"{path}: --pixels int8 needs an 8-bit single-channel image, found mode {img.mode}")
                img = Image.fromarray(np.asarray(img, np.uint8) ^ np.uint8(0x80), "L")
            img = img.convert("L" if channels == 1 else "RGB")
            if img.size != (width, height):
                img = img.resize((width, height), Image.BILINEAR)
            pixels = np.asarray(img, np.uint8)
    except FileNotFoundError:
        raise DataError(f"{path}: image file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a folder, not an image file") from None
    except _DECODE_ERRORS as e:
        raise DataError(f"{path}: unreadable image ({' '.join(str(e).split())})") from None
    return pixels.reshape(height, width, channels)


def _softmax(values: np.ndarray) -> np.ndarray:
    shifted = values.astype(np.float64) - values.max()
    e = np.exp(shifted)
    return e / e.sum()


class TflitePredictor:
    """A .tflite model (int8 or float32 input), run on edge-lls's TFLite-exact kernels."""

    def __init__(self, path: Path):
        from edge_lls.formats.tflite import read_tflite
        from edge_lls.program.runner import Int8Model
        program = read_tflite(path)
        self.path, self.model = path, Int8Model(program, batch_size=32)
        self.input, self.output = self.model.input, self.model.output
        if len(self.input.shape) != 4:
            raise FormatError(f"{path}: input tensor shape {self.input.shape} is not an image (N, H, W, C)")
        self.input_shape = tuple(self.input.shape[1:])
        self.ends_in_softmax = bool(program.operators) and program.operators[-1].opcode == "SOFTMAX"
        self.precision = "int8" if self.input.dtype == np.int8 else "fp32"
        info = {}
        if METADATA_KEY in program.metadata:
            try:
                info = json.loads(program.metadata[METADATA_KEY].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                raise FormatError(f"{path}: metadata '{METADATA_KEY}' is not JSON") from None
        self.labels = info.get("classes")

    def describe(self) -> dict:
        low, high = pixel_range(self.input)
        return {"model": str(self.path), "kind": "tflite", "precision": self.precision,
                "input_shape": list(self.input_shape), "input_dtype": str(self.input.dtype),
                "input_scale": self.input.scale, "input_zero_point": self.input.zero_point,
                "pixel_range": [low, high]}

    def raw_outputs(self, pixels: np.ndarray) -> np.ndarray:
        x = quantize_pixels(pixels.astype(np.float32) / np.float32(255.0), self.input)
        return self.model.run(x).reshape(len(pixels), -1)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        real = dequantize(raw, self.output.scale, self.output.zero_point) if raw.dtype == np.int8 \
            else raw.astype(np.float32)
        return real if self.ends_in_softmax else _softmax(real)


class ModelFilePredictor:
    """One of our model files, at fp32 or fp16 (int8 needs calibration: `edge-lls quantize`)."""

    def __init__(self, path: Path, precision: str):
        from edge_lls.formats.model_file import load_model
        model, header = load_model(path)
        self.path, self.precision = path, precision
        self.input_shape = tuple(model.input_shape)
        self.model = model
        if precision == "fp16":
            from edge_lls.fp16 import Fp16Model
            self.model = Fp16Model(model)
        dataset = header.get("dataset") if isinstance(header.get("dataset"), dict) else {}
        self.labels = dataset.get("class_names")

    def describe(self) -> dict:
        return {"model": str(self.path), "kind": "ells", "precision": self.precision,
                "input_shape": list(self.input_shape), "input_dtype": "float32", "pixel_range": [0.0, 1.0]}

    def raw_outputs(self, pixels: np.ndarray) -> np.ndarray:
        x = pixels.astype(np.float32) / np.float32(255.0)
        return np.array(self.model.forward(x), np.float32, copy=True)

    def probabilities(self, raw: np.ndarray) -> np.ndarray:
        return _softmax(raw)


def load_predictor(path, precision: str | None = None):
    """A predictor for a .tflite file, a .ells model file, or a run folder (its model.ells)."""
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"--precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    path = model_path(path)
    if model_kind(path) == "tflite":
        predictor = TflitePredictor(path)
        if precision is not None and precision != predictor.precision:
            raise ConfigError(f"{path}: a .tflite model runs at its own precision ({predictor.precision}), "
                              f"not --precision {precision}")
        return predictor
    precision = precision or "fp32"
    if precision == "int8":
        raise ConfigError(f"{path}: int8 inference of a model file needs calibration data: convert it with "
                          f"`edge-lls quantize` and predict with the .tflite it writes")
    return ModelFilePredictor(path, precision)


def predict_files(predictor, paths, pixel_format: str = "image", labels=None, batch_size: int = 32):
    """Yields one result record per image path, in order."""
    labels = labels if labels is not None else predictor.labels
    paths = [Path(p) for p in paths]
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        pixels = np.stack([load_image(p, predictor.input_shape, pixel_format) for p in chunk])
        raw = predictor.raw_outputs(pixels)
        for path, row in zip(chunk, raw):
            k = int(row.argmax())
            scores = [int(v) for v in row] if row.dtype.kind == "i" else [float(v) for v in row]
            label = labels[k] if labels is not None and k < len(labels) else None
            yield {"path": str(path), "class": k, "label": label,
                   "probability": round(float(predictor.probabilities(row)[k]), 6), "scores": scores}


__all__ = ["load_image", "load_predictor", "predict_files", "TflitePredictor", "ModelFilePredictor",
           "PRECISIONS", "PIXEL_FORMATS"]

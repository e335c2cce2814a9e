"""A model leaves edge-lls: `edge-lls export MODEL --format tflite|onnx --out PATH`.

MODEL is a .ells file, a run folder (its model.ells) or a .tflite file. The export is the
model's program (program/lower.py: batch norm folded), written by the one TFLite writer
(formats/tflite.py) or as ONNX (formats/onnx.py, float32, opset 17):

    --precision fp32   the float program, float32 in and out
    --precision int8   post-training quantization (program/ptq.py), calibrated on a
                       sample of the model's recorded training split or of --dataset/--data;
                       int8 in and out, per-channel weights
A .tflite MODEL is rewritten as it is (its own precision). Class names, the pixel range
the input expects and the source file go into the `edge_lls` metadata entry, which
`edge-lls predict` reads. LiteRT and TFLite Micro load what this writes (tested).
"""
from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError
from .evaluate import DEFAULT_CALIBRATION_IMAGES, ptq_of_model_file
from .finetune import METADATA_KEY
from .formats.sniff import model_kind, model_path
from .formats.tflite import read_tflite, save_tflite
from .precision import check_precision

FORMATS = ("tflite", "onnx")
EXPORT_PRECISIONS = ("fp32", "int8")



def export_model(source, fmt: str, out, *, precision: str | None = None, dataset=None, data=None,
                 val_split=None, calibration_images: int = DEFAULT_CALIBRATION_IMAGES) -> dict:
    """Write MODEL in format fmt to out; returns what was written (JSON-able)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if precision is not None:
        check_precision(precision, EXPORT_PRECISIONS)
    path, out = model_path(source), Path(out)
    if model_kind(path) == "tflite":
        program = read_tflite(path)
        own = "int8" if program.tensors[program.inputs[0]].dtype.kind == "i" else "fp32"
        if precision not in (None, own):
            raise ConfigError(f"{path}: a .tflite model is exported at its own precision ({own}), "
                              f"not --precision {precision}")
        precision = own
    else:
        if fmt == "onnx" and precision == "int8":
            raise ConfigError("--format onnx exports float32 models: leave out --precision int8 "
                              "(int8 goes to --format tflite)")
        program, precision = _lowered(path, precision or "fp32", dataset, data, val_split, calibration_images)
    if fmt == "tflite":
        size = save_tflite(program, out)
    else:
        from .formats.model_file import write_bytes_atomic
        from .formats.onnx import to_onnx
        if precision != "fp32":
            raise ConfigError(f"{path}: --format onnx exports float32 models; this one is {precision}")
        data_bytes = to_onnx(program)
        write_bytes_atomic(out, data_bytes)
        size = len(data_bytes)
    return {"model_file": str(path), "format": fmt, "precision": precision, "out": str(out), "bytes": size,
            "operators": len(program.operators), "classes": _classes(program)}


def _lowered(path: Path, precision: str, dataset, data, val_split, calibration_images):
    from .formats.model_file import load_model
    from .program.lower import float_program

    model, header = load_model(path)
    if precision == "int8":
        q, _, _ = ptq_of_model_file(path, model, header, dataset=dataset, data=data, val_split=val_split,
                                    calibration_images=calibration_images)
        return q.program, precision
    program = float_program(model, name=path.stem)
    trained_on = header.get("dataset") if isinstance(header.get("dataset"), dict) else {}
    info = {"pixel_range": [0.0, 1.0], "exported_from": path.name}
    if trained_on.get("class_names"):
        info = {"classes": list(trained_on["class_names"]), **info}
    program.metadata[METADATA_KEY] = json.dumps(info).encode()
    return program, precision


def _classes(program) -> list | None:
    try:
        return json.loads(program.metadata.get(METADATA_KEY, b"{}").decode("utf-8")).get("classes")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return None

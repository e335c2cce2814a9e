"""A model leaves edge-lls: `edge-lls export MODEL --format tflite|onnx|c|blob --out PATH`.

MODEL is a .ells file, a run folder (its model.ells), a .tflite file or a float .onnx
model (imported by formats/onnx_import.py, then exported like a .ells model). The export is the
model's program (program/lower.py: batch norm folded), written by the one TFLite writer
(formats/tflite.py) or as ONNX (formats/onnx.py, float32, opset 17):

    --precision fp32   the float program, float32 in and out
    --precision int8   post-training quantization (program/ptq.py), calibrated on a
                       sample of the model's recorded training split or of --dataset/--data;
                       int8 in and out, per-channel weights
A .tflite MODEL is rewritten as it is (its own precision). Class names, the pixel range
the input expects and the source file go into the `edge_lls` metadata entry, which
`edge-lls predict` reads. LiteRT and TFLite Micro load what this writes (tested).

--format blob / c write the firmware's model image (formats/blob.py, el_model_format.h):
int8 only (a .ells model is quantized; int8 is their default), prepared in TFLite Micro's
rounding, with the planned arena size; `c` writes PATH.c and PATH.h holding the same bytes
as one const struct. --train-last N adds the trainable tail (the last N blocks with their
LLS head constants and basis) for on-device fine-tuning; a model fine-tuned by
`edge-lls train --backbone` defaults to the N it was trained with.
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

FORMATS = ("tflite", "onnx", "c", "blob")
IMAGE_FORMATS = ("c", "blob")
EXPORT_PRECISIONS = ("fp32", "int8")



def export_model(source, fmt: str, out, *, precision: str | None = None, dataset=None, data=None,
                 val_split=None, calibration_images: int = DEFAULT_CALIBRATION_IMAGES, train_last: int | None = None,
                 waveform: str = "square", temperature: float = 0.5) -> dict:
    """Write MODEL in format fmt to out; returns what was written (JSON-able)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if precision is not None:
        check_precision(precision, EXPORT_PRECISIONS)
    if fmt in IMAGE_FORMATS:
        if precision == "fp32":
            raise ConfigError(f"--format {fmt} writes int8 models for the firmware: leave out --precision fp32")
        precision = "int8"
        if waveform not in ("square", "cosine"):
            raise ConfigError(f"--waveform must be square or cosine, got {waveform!r}")
        if not temperature > 0:
            raise ConfigError(f"--temperature must be > 0, got {temperature}")
    elif train_last is not None:
        raise ConfigError(f"--train-last goes with --format c or blob, not --format {fmt}")
    path, out = model_path(source), Path(out)
    if model_kind(path) == "tflite":
        program = read_tflite(path)
        own = "int8" if program.tensors[program.inputs[0]].dtype.kind == "i" else "fp32"
        if precision not in (None, own):
            raise ConfigError(f"{path}: a .tflite model is exported at its own precision ({own}), "
                              f"not --precision {precision}")
        precision = own
    else:
        program, precision = _lowered(path, precision or "fp32", dataset, data, val_split, calibration_images)
    extra = {}
    if fmt == "tflite":
        size = save_tflite(program, out)
    elif fmt in IMAGE_FORMATS:
        size, extra = _write_image(program, fmt, out, train_last, waveform, temperature)
    else:
        from .formats.model_file import write_bytes_atomic
        from .formats.onnx import to_onnx
        data_bytes = to_onnx(program)            # float32, or QDQ int8 for an int8 program
        write_bytes_atomic(out, data_bytes)
        size = len(data_bytes)
    return {"model_file": str(path), "format": fmt, "precision": precision, "out": str(out), "bytes": size,
            "operators": len(program.operators), "classes": _classes(program), **extra}


def _write_image(program, fmt: str, out: Path, train_last, waveform: str, temperature: float) -> tuple[int, dict]:
    """The firmware's model image as a blob, or as out.c + out.h; returns (bytes, details)."""
    from .finetune import trainable_tail
    from .formats.blob import build_image, c_identifier, c_source
    from .formats.model_file import write_bytes_atomic

    if train_last is None:
        train_last = _fine_tuned(program).get("train_last", 0)
    tail = trainable_tail(program, train_last, waveform=waveform, temperature=temperature) if train_last else None
    image = build_image(program, tail)
    details = {"arena_bytes": image.arena_bytes, "train_last": train_last,
               "trainable_ops": [list(b.ops) for b in tail.blocks] if tail else []}
    if fmt == "blob":
        write_bytes_atomic(out, image.data)
        return len(image.data), details
    base = out.with_suffix("") if out.suffix in (".c", ".h") else out
    header_path, source_path = base.with_name(base.name + ".h"), base.with_name(base.name + ".c")
    header, source = c_source(image, base.name, header_path.name)
    write_bytes_atomic(source_path, source.encode())
    write_bytes_atomic(header_path, header.encode())
    return len(image.data), {**details, "header": str(header_path), "source": str(source_path),
                             "symbol": f"el_model_{c_identifier(base.name)}"}


def _c_symbol(name: str) -> str:
    from .formats.blob import _c_identifier
    return _c_identifier(name)


def _fine_tuned(program) -> dict:
    try:
        info = json.loads(program.metadata.get(METADATA_KEY, b"{}").decode("utf-8"))
        return info.get("fine_tuned") or {} if isinstance(info, dict) else {}
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return {}


def _lowered(path: Path, precision: str, dataset, data, val_split, calibration_images):
    from .formats.model_file import load_model
    from .formats.onnx_import import load_onnx
    from .program.lower import float_program

    model, header = load_onnx(path) if model_kind(path) == "onnx" else load_model(path)
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

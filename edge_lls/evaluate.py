"""Accuracy of a saved model, at a precision, on the data it was trained on (or another):
the one evaluation path behind `edge-lls eval`, `train --precision` and `quantize`.

MODEL is a .ells file, a run folder (its model.ells) or a .tflite file (at its own
precision). The dataset, its path and its val_split default to those recorded in a .ells
file; every precision checks that the labels fit the model's classes.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from .errors import ConfigError
from .formats.sniff import model_kind, model_path
from .precision import check_precision

EVAL_BATCH = 256
DEFAULT_CALIBRATION_IMAGES = 512
SPLITS = ("test", "train")


def require_int(value, flag: str, minimum: int) -> None:
    """--flag must be an int >= minimum (bool is not an int here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"--{flag} must be an integer >= {minimum}, got {value!r}")


def load_recorded_dataset(path, header: dict, input_shape, dataset=None, data=None, val_split=None):
    """The dataset a saved model is evaluated on: the one recorded in its file (name,
    path, val_split) unless the caller names another."""
    from .data import load_dataset

    trained_on = header.get("dataset") if isinstance(header.get("dataset"), dict) else {}
    name = dataset or trained_on.get("name")
    if name is None:
        raise ConfigError(f"{path}: the file does not record a dataset; pass --dataset (and --data)")
    if data is None and name == trained_on.get("name"):
        data = trained_on.get("path")
    if val_split is None:
        val_split = trained_on.get("val_split", 0.2)
    return load_dataset(name, data, input_shape=input_shape, val_split=val_split)


def check_label_range(ds, num_classes: int) -> None:
    if ds.num_classes > num_classes:
        raise ConfigError(f"{ds.name}: labels go up to {ds.num_classes - 1}, out of range for a model "
                          f"with {num_classes} classes (0..{num_classes - 1})")


def _tflite_classifier(path: Path, precision, dataset, data, val_split):
    """(predict, precision, dataset, classes) of a .tflite model at its own precision."""
    from .data import load_dataset
    from .finetune import quantize_pixels
    from .formats.tflite import read_tflite
    from .program.runner import Int8Model

    runner = Int8Model(read_tflite(path))
    own = "int8" if runner.input.dtype == np.int8 else "fp32"
    if precision not in (None, own):
        raise ConfigError(f"{path}: a .tflite model runs at its own precision ({own}), not --precision {precision}")
    if dataset is None:
        raise ConfigError(f"{path}: pass --dataset (and --data) to evaluate a .tflite model")
    ds = load_dataset(dataset, data, input_shape=runner.input_shape, val_split=0.2 if val_split is None else val_split)

    def predict(x):
        return runner.run(quantize_pixels(x, runner.input)).reshape(len(x), -1).argmax(1)
    return predict, own, ds, int(np.prod(runner.output.shape[1:]))


def _model_file_classifier(path: Path, precision, dataset, data, val_split, batch_size, calibration_images):
    """(predict, precision, dataset, classes) of a .ells model at fp32, fp16 or int8 (PTQ
    calibrated on the training split)."""
    from .formats.model_file import load_model

    model, header = load_model(path)
    precision = precision or "fp32"
    ds = load_recorded_dataset(path, header, model.input_shape, dataset, data, val_split)
    if precision == "fp32":
        def predict(x):
            return model.predict(x, batch_size)
    elif precision == "fp16":
        from .fp16 import Fp16Model
        predict = Fp16Model(model).predict
    else:
        from .program.ptq import calibration_sample, quantize_model
        predict = quantize_model(model, calibration_sample(ds.train, calibration_images)).predict
    return predict, precision, ds, model.num_classes


def evaluate_model_file(path, precision: str | None = None, *, dataset=None, data=None, val_split=None,
                        split: str = "test", batch_size: int = EVAL_BATCH,
                        calibration_images: int = DEFAULT_CALIBRATION_IMAGES) -> dict:
    """Top-1 accuracy of a saved model on a dataset split, at a precision (a .ells model:
    fp32 by default; a .tflite model: its own)."""
    require_int(batch_size, "batch-size", 1)
    if split not in SPLITS:
        raise ConfigError(f"--split must be test or train, got {split!r}")
    if precision is not None:
        check_precision(precision)
    path = model_path(path)
    if model_kind(path) == "tflite":
        predict, precision, ds, classes = _tflite_classifier(path, precision, dataset, data, val_split)
    else:
        predict, precision, ds, classes = _model_file_classifier(path, precision, dataset, data, val_split,
                                                                 batch_size, calibration_images)
    check_label_range(ds, classes)
    part = ds.test if split == "test" else ds.train
    started = time.perf_counter()
    correct = sum(int((predict(x) == y).sum()) for x, y in part.batches(batch_size))
    seconds = time.perf_counter() - started
    kind = "held-out" if split == "test" and ds.test_is_holdout else split
    return {"accuracy": correct / max(len(part), 1), "images": len(part), "dataset": ds.name, "split": kind,
            "model_file": str(path), "precision": precision, "seconds": round(seconds, 3),
            "images_per_s": round(len(part) / seconds, 1) if seconds else None}


def ptq_of_model_file(path: Path, model, header: dict, *, dataset=None, data=None, val_split=None,
                      calibration_images: int = DEFAULT_CALIBRATION_IMAGES, seed: int = 0):
    """(Int8Model, dataset, calibration images) of a loaded .ells model: calibrated on a
    seeded sample of its recorded training split (or of the named dataset), with the class
    names and pixel range in the program's metadata."""
    from .program.ptq import calibration_sample, quantize_model

    ds = load_recorded_dataset(path, header, model.input_shape, dataset, data, val_split)
    check_label_range(ds, model.num_classes)
    calibration = calibration_sample(ds.train, calibration_images, seed)
    q = quantize_model(model, calibration, name=path.stem)
    q.program.metadata["edge_lls"] = json.dumps({"classes": list(ds.class_names), "pixel_range": [0.0, 1.0],
                                                 "quantized_from": path.name}).encode()
    return q, ds, calibration


def quantize_model_file(path, *, out=None, dataset=None, data=None, val_split=None,
                        calibration_images: int = DEFAULT_CALIBRATION_IMAGES, seed: int = 0,
                        batch_size: int = EVAL_BATCH) -> dict:
    """PTQ of a .ells model (or run folder): calibrate on its training split, write an int8
    .tflite, and measure fp32 and int8 accuracy on the test split."""
    from .formats.model_file import load_model

    path = model_path(path)
    model, header = load_model(path)
    out = Path(out) if out is not None else path.with_name(path.stem + "_int8.tflite")
    started = time.perf_counter()
    q, ds, calibration = ptq_of_model_file(path, model, header, dataset=dataset, data=data, val_split=val_split,
                                           calibration_images=calibration_images, seed=seed)
    seconds = time.perf_counter() - started
    size = q.save(out)
    fp32 = int8 = total = 0
    for x, y in ds.test.batches(batch_size):
        fp32 += int((model.predict(x, batch_size) == y).sum())
        int8 += int((q.predict(x) == y).sum())
        total += len(y)
    return {"model_file": str(path), "tflite": str(out), "tflite_bytes": size, "dataset": ds.name,
            "calibration_images": len(calibration), "test_images": total, "fp32_accuracy": fp32 / max(total, 1),
            "int8_accuracy": int8 / max(total, 1), "quantize_seconds": round(seconds, 3)}

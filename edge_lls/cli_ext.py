"""CLI hooks for precision, fine-tuning, quantization and prediction, for edge_lls/cli.py to wire.

    predict:   add_predict_arguments(parser) / run_predict(args)
    quantize:  add_quantize_arguments(parser) / run_quantize(args)
    train:     add_train_precision_arguments(parser); when args.backbone: finetune_from_args(args);
               after an fp32 run with --precision int8|fp16: post_train_precision(args, result)
    eval:      add_eval_precision_arguments(parser); when eval_needs_precision(args):
               eval_from_args(args)

Every run_* function returns the exit status (0) and raises edge_lls.errors.EdgeLLSError
subclasses for bad input, which cli.main prints on one line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from edge_lls.errors import ConfigError

EXIT_OK = 0
PRECISIONS = ("fp32", "fp16", "int8")
DEFAULT_CALIBRATION_IMAGES = 512


def _print_json(record: dict) -> None:
    print(json.dumps(record), flush=True)


def _apply_threads(threads) -> None:
    if threads is not None:
        from edge_lls.runtime import set_threads
        set_threads(threads)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- predict
def add_predict_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a .tflite file, a model file (.ells) or a run folder")
    p.add_argument("images", metavar="IMAGE", nargs="+", help="image files (PNG, JPEG, BMP, ...)")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="for a .ells model: fp32 (default) or fp16; a .tflite model runs at its own precision")
    p.add_argument("--pixels", choices=("image", "int8"), default="image",
                   help="image: ordinary pixels (default); int8: the 8-bit file stores int8 codes "
                        "(grey - 128, as TFLM's person.bmp sample), read back as grey = byte XOR 0x80")
    p.add_argument("--labels", metavar="A,B,...", help="class names (default: those stored in the model, if any)")
    p.add_argument("--threads", type=int, help="default: all cores")
    p.add_argument("--json", action="store_true",
                   help="one JSON object per image: path, class, label, probability, scores (the raw output)")


def run_predict(args: argparse.Namespace) -> int:
    from edge_lls.predict import load_predictor, predict_files
    _apply_threads(args.threads)
    predictor = load_predictor(args.model, args.precision)
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    for record in predict_files(predictor, args.images, args.pixels, labels):
        if args.json:
            _print_json(record)
        else:
            label = f" ({record['label']})" if record["label"] is not None else ""
            print(f"{record['path']}: class {record['class']}{label}  probability {record['probability']:.4f}  "
                  f"scores {record['scores']}", flush=True)
    return EXIT_OK


# ---------------------------------------------------------------------------- quantize
def add_quantize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a model file (.ells) or a run folder")
    p.add_argument("--out", metavar="FILE.tflite", help="default: MODEL's name + _int8.tflite, next to it")
    p.add_argument("--dataset", help="calibration and evaluation data (default: the dataset the model was trained on)")
    p.add_argument("--data", metavar="PATH", help="the dataset's file or folder (default: as trained)")
    p.add_argument("--val-split", type=float, help="held-out fraction (default: as trained)")
    p.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                   help=f"training images for the activation ranges (default {DEFAULT_CALIBRATION_IMAGES})")
    p.add_argument("--threads", type=int, help="default: all cores")
    p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")


def run_quantize(args: argparse.Namespace) -> int:
    from edge_lls.quantize import quantize_model_file
    _apply_threads(args.threads)
    result = quantize_model_file(args.model, out=args.out, dataset=args.dataset, data=args.data,
                                 val_split=args.val_split, calibration_images=args.calibration_images)
    if args.json:
        _print_json(result)
    else:
        print(f"int8 model {result['tflite']} ({result['tflite_bytes']:,} bytes); accuracy on "
              f"{result['test_images']} {result['dataset']} images: fp32 {result['fp32_accuracy']:.4f}, "
              f"int8 {result['int8_accuracy']:.4f}")
    return EXIT_OK


# ------------------------------------------------------------------------------- train
def add_train_precision_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("precision and fine-tuning")
    g.add_argument("--precision", choices=PRECISIONS,
                   help="fp32 (default); fp16: mixed-precision training (every stored activation float16, "
                        "weights, gradients and optimizer state float32, float32 math), then report the "
                        "accuracy with fp16 weights too; int8: train in fp32, then quantize after training "
                        "(calibrated on the training split) and write model_int8.tflite; with --backbone "
                        "always int8")
    g.add_argument("--backbone", metavar="FILE.tflite",
                   help="fine-tune an int8 .tflite model: its last --train-last blocks and its classifier "
                        "train with --rule, the rest stays frozen int8; writes RUN_DIR/model.tflite")
    g.add_argument("--train-last", type=int, metavar="N", help="blocks to train with --backbone (default 2)")
    g.add_argument("--calibration-images", type=int, metavar="N",
                   help=f"images for int8 activation ranges and batch-norm init (default {DEFAULT_CALIBRATION_IMAGES})")


def _given(args, name, default=None):
    value = getattr(args, name, None)
    return default if value is None else value


def finetune_from_args(args: argparse.Namespace) -> int:
    """`edge-lls train --backbone FILE.tflite --train-last N ...`: writes RUN_DIR/model.tflite
    (int8) and RUN_DIR/result.json, prints the result."""
    from edge_lls.data import load_dataset
    from edge_lls.finetune import finetune, load_backbone
    from edge_lls.formats.model_file import write_bytes_atomic
    from edge_lls.train import TrainConfig as D

    for flag, name in (("--model", "model"), ("--width", "width"), ("--resume", "resume"),
                       ("--checkpoint-every", "checkpoint_every")):
        if getattr(args, name, None) not in (None, False):
            raise ConfigError(f"{flag} does not apply to fine-tuning a --backbone")
    if _given(args, "precision", "int8") != "int8":
        raise ConfigError("--backbone fine-tunes into an int8 model; --precision must be int8 (or left out)")
    if getattr(args, "data", None) is None:
        raise ConfigError("--backbone needs --data: an image folder (one subfolder per class)")
    _apply_threads(getattr(args, "threads", None))
    backbone = load_backbone(args.backbone)
    dataset_name = _given(args, "dataset", "folder")
    seed = _given(args, "seed", D.seed)
    data = load_dataset(dataset_name, args.data, input_shape=tuple(backbone.input.shape[1:]),
                        val_split=_given(args, "val_split", D.val_split), seed=seed)
    progress = getattr(args, "progress", None)
    log = _stderr if (progress if progress is not None else sys.stderr.isatty()) else None
    program, result = finetune(
        backbone, data, train_last=_given(args, "train_last", 2), epochs=_given(args, "epochs", D.epochs),
        batch_size=_given(args, "batch_size", D.batch_size), lr=_given(args, "lr", D.lr),
        optimizer=_given(args, "optimizer", D.optimizer), weight_decay=_given(args, "weight_decay", D.weight_decay),
        rule=_given(args, "rule", D.rule), seed=seed,
        calibration_images=_given(args, "calibration_images", DEFAULT_CALIBRATION_IMAGES), log=log,
        **_rule_options(args))
    out = Path(args.out) if getattr(args, "out", None) else \
        Path("runs") / f"finetune-{Path(args.backbone).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "model.tflite"
    result["model_file"] = str(model_path)
    result["tflite_bytes"] = program.save(model_path)
    write_bytes_atomic(out / "result.json", (json.dumps(result, indent=1) + "\n").encode())
    if getattr(args, "json", False):
        _print_json(result)
    else:
        baseline = result["baseline_int8_accuracy"]
        before = f"before {baseline:.4f}, " if baseline is not None else ""
        print(f"fine-tuned last {result['train_last']} blocks + classifier of {Path(args.backbone).name} on "
              f"{result['train_images']} {result['dataset']} images: accuracy on {result['test_images']} held out: "
              f"{before}fp32 {result['fp32_accuracy']:.4f}, int8 {result['int8_accuracy']:.4f} "
              f"({result['seconds']:.1f} s); model: {model_path}")
    return EXIT_OK


def _rule_options(args) -> dict:
    from edge_lls.train import TrainConfig as D
    rule = _given(args, "rule", D.rule)
    if rule in ("bp", "dfa"):
        return {}
    return {"waveform": _given(args, "waveform", D.waveform), "temperature": _given(args, "temperature", D.temperature)}


def post_train_precision(args: argparse.Namespace, result: dict) -> dict:
    """After `edge-lls train` wrote result['model_file'] (fp32): --precision int8 quantizes it
    (RUN_DIR/model_int8.tflite, accuracy added as result['int8_accuracy']); fp16 adds the fp16
    inference accuracy as result['fp16_accuracy'].  Returns the updated result."""
    precision = getattr(args, "precision", None)
    if precision in (None, "fp32"):
        return result
    from edge_lls.quantize import evaluate_at_precision, quantize_model_file
    model_file = Path(result["model_file"])
    if precision == "int8":
        q = quantize_model_file(model_file, out=model_file.with_name("model_int8.tflite"),
                                calibration_images=_given(args, "calibration_images", DEFAULT_CALIBRATION_IMAGES))
        return {**result, "precision": "int8", "int8_model_file": q["tflite"], "int8_accuracy": q["int8_accuracy"]}
    evaluated = evaluate_at_precision(model_file, "fp16")
    return {**result, "precision": "fp16", "fp16_accuracy": evaluated["accuracy"]}


# -------------------------------------------------------------------------------- eval
def add_eval_precision_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", choices=PRECISIONS,
                   help="run a .ells model at fp32 (default), fp16, or int8 (quantized after training, "
                        "calibrated on the training split); a .tflite model runs at its own precision")
    p.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                   help=f"int8 calibration images (default {DEFAULT_CALIBRATION_IMAGES})")


def eval_needs_precision(args: argparse.Namespace) -> bool:
    """True when eval must go through eval_from_args: a .tflite model or a non-fp32 precision."""
    if getattr(args, "precision", None) not in (None, "fp32"):
        return True
    path = Path(args.model)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(8)[4:8] == b"TFL3"


def eval_from_args(args: argparse.Namespace) -> int:
    from edge_lls.quantize import evaluate_at_precision
    _apply_threads(getattr(args, "threads", None))
    result = evaluate_at_precision(args.model, getattr(args, "precision", None), dataset=args.dataset,
                                   data=args.data, val_split=args.val_split, split=getattr(args, "split", "test"),
                                   batch_size=getattr(args, "batch_size", 256),
                                   calibration_images=getattr(args, "calibration_images", DEFAULT_CALIBRATION_IMAGES))
    if getattr(args, "json", False):
        _print_json(result)
    else:
        print(f"accuracy {result['accuracy']:.4f} on {result['images']} {result['split']} {result['dataset']} "
              f"images at {result['precision']} ({result['images_per_s']:.0f} img/s)")
    return EXIT_OK


__all__ = ["add_predict_arguments", "run_predict", "add_quantize_arguments", "run_quantize",
           "add_train_precision_arguments", "finetune_from_args", "post_train_precision",
           "add_eval_precision_arguments", "eval_needs_precision", "eval_from_args"]

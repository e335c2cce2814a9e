"""`edge-lls export`: a model as a file another runtime loads (edge_lls.export)."""
from __future__ import annotations

import argparse

from ..evaluate import DEFAULT_CALIBRATION_IMAGES
from ..export import EXPORT_PRECISIONS, FORMATS, export_model
from .output import EXIT_OK, apply_threads, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a model file (.ells), a run folder, or a .tflite file")
    p.add_argument("--format", required=True, choices=FORMATS,
                   help="tflite: for LiteRT and TFLite Micro (fp32 or int8); onnx: for onnxruntime (float32, or "
                        "QDQ int8), opset 17; blob: the firmware's int8 model image, to stream to a board; c: "
                        "the same bytes as PATH.c + PATH.h, to link into firmware")
    p.add_argument("--out", required=True, metavar="PATH", help="the file to write (atomically)")
    p.add_argument("--precision", choices=EXPORT_PRECISIONS,
                   help="fp32 (default for a .ells model) or int8 (post-training quantization calibrated on "
                        "the training split, or on --dataset/--data); a .tflite model keeps its own")
    p.add_argument("--dataset", metavar="NAME", help="calibration data (default: the dataset the model was trained on)")
    p.add_argument("--data", metavar="PATH", help="the dataset's file or folder (default: as trained)")
    p.add_argument("--val-split", metavar="F", type=float, help="held-out fraction (default: as trained)")
    p.add_argument("--calibration-images", metavar="N", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                   help=f"training images for the int8 activation ranges (default {DEFAULT_CALIBRATION_IMAGES})")
    tail = p.add_argument_group("on-device fine-tuning (--format c / blob)")
    tail.add_argument("--train-last", metavar="N", type=int,
                      help="blocks the board trains with LLS: the image carries their head constants and basis "
                           "(default: as fine-tuned by train --backbone, else 0: inference only)")
    tail.add_argument("--waveform", default="square", help="LLS basis waveform: square (default) or cosine")
    tail.add_argument("--temperature", metavar="T", type=float, default=0.5, help="LLS temperature (default 0.5)")
    p.add_argument("--threads", metavar="N", type=int, help="default: all cores")
    p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    result = export_model(args.model, args.format, args.out, precision=args.precision, dataset=args.dataset,
                          data=args.data, val_split=args.val_split, calibration_images=args.calibration_images,
                          train_last=args.train_last, waveform=args.waveform, temperature=args.temperature)
    if args.json:
        print_json(result)
    else:
        where = f"{result['source']} + {result['header']}" if "source" in result else result["out"]
        print(f"{result['format']} ({result['precision']}, {result['operators']} ops, {result['bytes']:,} bytes): "
              f"{where}")
        if "arena_bytes" in result:
            print(f"arena {result['arena_bytes']:,} bytes; trainable blocks: {result['train_last']}")
    return EXIT_OK

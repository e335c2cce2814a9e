"""`edge-lls export`: a model as a file another runtime loads (edge_lls.export)."""
from __future__ import annotations

import argparse

from ..evaluate import DEFAULT_CALIBRATION_IMAGES
from ..export import EXPORT_PRECISIONS, FORMATS, export_model
from .output import EXIT_OK, apply_threads, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a model file (.ells), a run folder, or a .tflite file")
    p.add_argument("--format", required=True, choices=FORMATS, help="tflite: for LiteRT and TFLite Micro (fp32 or int8); onnx: float32, opset 17, "
                        "for onnxruntime")
    p.add_argument("--out", required=True, metavar="PATH", help="the file to write (atomically)")
    p.add_argument("--precision", choices=EXPORT_PRECISIONS,
                   help="fp32 (default for a .ells model) or int8 (post-training quantization calibrated on "
                        "the training split, or on --dataset/--data); a .tflite model keeps its own")
    p.add_argument("--dataset", metavar="NAME", help="calibration data (default: the dataset the model was trained on)")
    p.add_argument("--data", metavar="PATH", help="the dataset's file or folder (default: as trained)")
    p.add_argument("--val-split", metavar="F", type=float, help="held-out fraction (default: as trained)")
    p.add_argument("--calibration-images", metavar="N", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                   help=f"training images for the int8 activation ranges (default {DEFAULT_CALIBRATION_IMAGES})")
    p.add_argument("--threads", metavar="N", type=int, help="default: all cores")
    p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    result = export_model(args.model, args.format, args.out, precision=args.precision, dataset=args.dataset,
                          data=args.data, val_split=args.val_split, calibration_images=args.calibration_images)
    if args.json:
        print_json(result)
    else:
        print(f"{result['format']} ({result['precision']}, {result['operators']} ops, {result['bytes']:,} bytes): "
              f"{result['out']}")
    return EXIT_OK

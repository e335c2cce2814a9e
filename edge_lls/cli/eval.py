"""`edge-lls eval`: top-1 accuracy of a saved model (edge_lls.evaluate)."""
from __future__ import annotations

import argparse

from ..evaluate import DEFAULT_CALIBRATION_IMAGES, evaluate_model_file
from ..formats.sniff import is_tflite
from ..precision import PRECISIONS
from .output import EXIT_OK, apply_threads, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a model file (.ells), a run folder, or a .tflite file")
    p.add_argument("--dataset", metavar="NAME", help="default: the dataset the model was trained on")
    p.add_argument("--data", metavar="PATH", help="the dataset's file or folder (default: as trained)")
    p.add_argument("--val-split", metavar="F", type=float, help="held-out fraction (default: as trained)")
    p.add_argument("--split", default="test", choices=("test", "train"), help="default test")
    p.add_argument("--batch-size", metavar="N", type=int, default=256, help="default 256")
    p.add_argument("--threads", metavar="N", type=int, help="default: all cores")
    p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")
    p.add_argument("--precision", choices=PRECISIONS,
                   help="run a .ells model at fp32 (default), fp16, or int8 (quantized after training, "
                        "calibrated on the training split); a .tflite model runs at its own precision")
    p.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                   help=f"int8 calibration images (default {DEFAULT_CALIBRATION_IMAGES})")


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    result = evaluate_model_file(args.model, args.precision, dataset=args.dataset, data=args.data,
                                 val_split=args.val_split, split=args.split, batch_size=args.batch_size,
                                 calibration_images=args.calibration_images)
    if args.json:
        print_json(result)
        return EXIT_OK
    # the precision is named when it is not a .ells model's default
    at = f" at {result['precision']}" if args.precision not in (None, "fp32") or is_tflite(args.model) else ""
    print(f"accuracy {result['accuracy']:.4f} on {result['images']} {result['split']} "
          f"{result['dataset']} images{at} ({result['images_per_s']:.0f} img/s)")
    return EXIT_OK

"""`edge-lls quantize`: post-training int8 quantization of a .ells model (edge_lls.evaluate)."""
from __future__ import annotations

import argparse

from ..evaluate import DEFAULT_CALIBRATION_IMAGES, quantize_model_file
from .output import EXIT_OK, apply_threads, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a model file (.ells) or a run folder")
    p.add_argument("--out", metavar="FILE.tflite", help="default: MODEL's name + _int8.tflite, next to it")
    p.add_argument("--dataset", help="calibration and evaluation data (default: the dataset the model was trained on)")
    p.add_argument("--data", metavar="PATH", help="the dataset's file or folder (default: as trained)")
    p.add_argument("--val-split", type=float, help="held-out fraction (default: as trained)")
    p.add_argument("--calibration-images", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                   help=f"training images for the activation ranges (default {DEFAULT_CALIBRATION_IMAGES})")
    p.add_argument("--threads", type=int, help="default: all cores")
    p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")


def run(args: argparse.Namespace) -> int:
    apply_threads(args.threads)
    result = quantize_model_file(args.model, out=args.out, dataset=args.dataset, data=args.data,
                                 val_split=args.val_split, calibration_images=args.calibration_images)
    if args.json:
        print_json(result)
    else:
        print(f"int8 model {result['tflite']} ({result['tflite_bytes']:,} bytes); accuracy on "
              f"{result['test_images']} {result['dataset']} images: fp32 {result['fp32_accuracy']:.4f}, "
              f"int8 {result['int8_accuracy']:.4f}")
    return EXIT_OK

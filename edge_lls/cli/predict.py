"""`edge-lls predict`: class and score per image (edge_lls.predict)."""
from __future__ import annotations

import argparse

from ..precision import PRECISIONS
from .output import EXIT_OK, apply_threads, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
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


def run(args: argparse.Namespace) -> int:
    from ..predict import load_predictor, predict_files
    apply_threads(args.threads)
    predictor = load_predictor(args.model, args.precision)
    labels = [s.strip() for s in args.labels.split(",")] if args.labels else None
    for record in predict_files(predictor, args.images, args.pixels, labels):
        if args.json:
            print_json(record)
        else:
            label = f" ({record['label']})" if record["label"] is not None else ""
            print(f"{record['path']}: class {record['class']}{label}  probability {record['probability']:.4f}  "
                  f"scores {record['scores']}", flush=True)
    return EXIT_OK

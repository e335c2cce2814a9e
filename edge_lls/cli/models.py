"""`edge-lls models`: the model zoo with parameter counts."""
from __future__ import annotations

import argparse

from .output import EXIT_OK, print_json, shape_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list on stdout")


def _zoo_rows() -> list[dict]:
    from ..models import build_model, model_names
    from ..zoo import DEFAULT_INPUT
    rows = []
    for name in model_names():
        model = build_model(name, input_shape=DEFAULT_INPUT[name])
        rows.append({"name": name, "input_shape": list(model.input_shape), "num_classes": model.num_classes,
                     "blocks": len(model.blocks), "params": model.num_params()})
    return rows


def run(args: argparse.Namespace) -> int:
    rows = _zoo_rows()
    if args.json:
        print_json({"models": rows})
        return EXIT_OK
    print(f"{'model':<14}{'default input':>15}{'classes':>9}{'blocks':>8}{'params':>13}")
    for r in rows:
        print(f"{r['name']:<14}{shape_text(r['input_shape']):>15}{r['num_classes']:>9}{r['blocks']:>8}"
              f"{r['params']:>13,}")
    print("Any model takes any input size and class count: --dataset sets them.")
    return EXIT_OK

"""int8 inference arena: the edge-lls planner beside TFLite Micro's smallest arena, per model.

    .venv/bin/python tools/bench_arena.py [MODEL.tflite ...]

Default models: the three in ../shared/models/vww (person_detect is grayscale; TFLM reads its
out-of-range bias `quantized_dimension`, and so does edge-lls). For each model, in one run:

  edge-lls arena      program/memory.plan_program: every activation tensor of the int8
                      program at a 16-byte aligned offset, greedy largest-first over
                      lifetimes; activations only (the firmware's kernel scratch is not in it)
  largest live set    the most bytes alive at once: no planner can do with less
  model image         `edge-lls export --format blob` bytes (what goes to flash)
  TFLM arena          tflm_min_arena: the smallest `arena_size` in which the tflite-micro
                      interpreter allocates (bisected; holds its scratch, tensor structs and
                      persistent buffers too)

and the ratio edge-lls / TFLM. Float models are skipped (the firmware runs int8).
"""
from __future__ import annotations

import argparse
from pathlib import Path

from edge_lls.formats.blob import build_image
from edge_lls.formats.tflite import read_tflite
from edge_lls.program.memory import plan_program
from edge_lls.tflm import tflm_min_arena

VWW = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "vww"
DEFAULT_MODELS = [VWW / "vww_96_int8.tflite", VWW / "person_detect.tflite"]


def measure(path: Path) -> dict:
    program = read_tflite(path)
    plan = plan_program(program)
    image = build_image(program)
    live = max(plan.live_bytes(i) for i in range(len(program.operators)))
    return {"model": path.name, "arena": plan.arena_bytes, "live": live,
            "image": len(image.data), "tflm": tflm_min_arena(path.read_bytes())}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", type=Path, default=DEFAULT_MODELS)
    args = parser.parse_args(argv)
    header = f"{'model':<24}{'edge-lls arena':>16}{'largest live':>14}{'model image':>13}{'TFLM arena':>12}" \
             f"{'ours/TFLM':>11}"
    print(header)
    for path in args.models:
        r = measure(path)
        print(f"{r['model']:<24}{r['arena']:>16,}{r['live']:>14,}{r['image']:>13,}{r['tflm']:>12,}"
              f"{r['arena'] / r['tflm']:>11.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`edge-lls board info|stats|pull|infer --port PORT`: ask a board (or `edge-lls serve`) what it
runs, how it ran, and for its fine-tuned weights (firmware_bridge.board.Board).

    info    HELLO: the board, its memory and kernels, the active model and its trial state
    stats   STATS: the last inference's and training step's ticks / instructions, arena and
            stack high water, samples seen
    pull    GET_WEIGHTS into the model deployed (--model, checked by SHA-256): the fine-tuned
            model as a .tflite (--out X.tflite, MODEL a .tflite) or as a model image (else)
    infer   INFER on raw int8 input files (--input) or on images (--model X.tflite says how to
            turn pixels into the model's input, as `edge-lls predict` does)
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .deploy import add_image_arguments, add_port_arguments, model_image, open_board
from .output import EXIT_OK, print_json

ACTIONS = ("info", "stats", "pull", "infer")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=ACTIONS, metavar="ACTION", help="info, stats, pull or infer")
    p.add_argument("images", metavar="IMAGE", nargs="*",
                   help="infer: image files (with --model), right after ACTION: board infer a.bmp b.bmp --port ...")
    add_port_arguments(p)
    p.add_argument("--model", metavar="MODEL",
                   help="pull: the model deployed to the board (.tflite, .ells or model image); infer: a .tflite "
                        "whose input quantization turns IMAGEs into the board's input")
    p.add_argument("--out", metavar="PATH", help="pull: the fine-tuned model to write (.tflite, or a model image)")
    p.add_argument("--input", metavar="FILE", action="append", default=[],
                   help="infer: a file of the model's raw int8 input (.bin bytes, or a .npy int8 array); repeatable")
    p.add_argument("--pixels", choices=("image", "int8"), default="image",
                   help="infer with IMAGEs: as `edge-lls predict --pixels`")
    add_image_arguments(p)
    p.add_argument("--json", action="store_true", help="print JSON on stdout (one object; infer: one per input)")


def _sha_check(board, image: bytes, model: str) -> None:
    from firmware_bridge.board import check_active_model
    check_active_model(board, image, model)


def _pull(args, board) -> dict:
    from ..formats.model_file import write_bytes_atomic
    from firmware_bridge.board import fine_tuned_program, patched_image
    if not args.model or not args.out:
        raise ConfigError("board pull needs --model (the model deployed) and --out (the file to write)")
    out = Path(args.out)
    image, kind = model_image(args)
    _sha_check(board, image, args.model)
    if out.suffix.lower() == ".tflite" and kind == "image":
        raise ConfigError(f"--out {out}: a .tflite is written from the model the image was exported from "
                          f"(.tflite, .ells or .onnx); {args.model} is a model image: write a model image")
    if not out.parent.is_dir():
        raise ConfigError(f"--out {out}: the folder {out.parent} does not exist")
    weights = board.get_weights()
    if out.suffix.lower() == ".tflite":
        from ..formats.sniff import model_path
        from ..formats.tflite import read_tflite, save_tflite
        if kind == "tflite":
            program = read_tflite(model_path(args.model))
        else:   # the int8 program deploy exported the image from: the same options, the same program
            from ..export import _lowered
            program, _ = _lowered(model_path(args.model), "int8", args.dataset, args.data, args.val_split,
                                  args.calibration_images)
        program = fine_tuned_program(program, image, weights, where=str(args.model))
        size, fmt = save_tflite(program, out), "tflite"
    else:
        data = patched_image(image, weights, where=str(args.model))
        write_bytes_atomic(out, data)
        size, fmt = len(data), "blob"
    return {"out": str(out), "format": fmt, "bytes": size, "ops": sorted(weights),
            "samples_seen": board.info.get("samples_seen", 0)}


def _inputs(args, info) -> list[tuple[str, bytes, object]]:
    """(name, int8 input bytes, predictor or None) per input."""
    if args.images and args.input:
        raise ConfigError("board infer takes IMAGE files (with --model) or --input files, not both")
    out = []
    for name in args.input:
        path = Path(name)
        try:
            data = np.load(path, allow_pickle=False).astype(np.int8).tobytes() if path.suffix == ".npy" \
                else path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"--input {path}: file not found") from None
        except ValueError as e:
            raise DataError(f"--input {path}: not a .npy array ({e})") from None
        out.append((str(path), data, None))
    if args.images:
        if not args.model:
            raise ConfigError("board infer IMAGE needs --model X.tflite (the input quantization of the model "
                              "deployed), or use --input FILE with raw int8 bytes")
        from ..finetune import quantize_pixels
        from ..predict import TflitePredictor, load_image
        from ..formats.sniff import model_kind, model_path
        path = model_path(args.model)
        if model_kind(path) != "tflite":
            raise ConfigError(f"--model {args.model}: board infer reads the input quantization of a .tflite")
        predictor = TflitePredictor(path)
        for image in args.images:
            pixels = load_image(image, predictor.input_shape, args.pixels)
            x = quantize_pixels(pixels[None].astype(np.float32) / np.float32(255.0), predictor.input)
            out.append((image, np.ascontiguousarray(x, np.int8).tobytes(), predictor))
    if not out:
        raise ConfigError("board infer needs IMAGE files (with --model) or --input FILE")
    for name, data, _ in out:
        if len(data) != info["input_bytes"]:
            raise ConfigError(f"{name}: {len(data)} input bytes; the model on the board takes {info['input_bytes']}")
    return out


def run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        raise ConfigError(f"--timeout must be > 0, got {args.timeout}")
    if args.images and args.action != "infer":
        raise ConfigError(f"board {args.action} takes no IMAGE arguments (got {args.images[0]})")
    with open_board(args) as board:
        info = board.info
        if args.action == "info":
            if args.json:
                print_json(info)
            else:
                _print_info(info, args.port)
        elif args.action == "stats":
            stats = board.stats()
            if args.json:
                print_json(stats)
            else:
                _print_stats(stats)
        elif args.action == "pull":
            result = _pull(args, board)
            if args.json:
                print_json(result)
            else:
                print(f"{result['out']}: the fine-tuned model ({result['format']}, {result['bytes']:,} bytes; "
                      f"weights of ops {', '.join(map(str, result['ops']))} after {result['samples_seen']} samples)")
        else:
            if info.get("slot") is None:
                raise ConfigError(f"{args.port}: the board has no model: deploy one first")
            for name, data, predictor in _inputs(args, info):
                answer = board.infer(data)
                raw = answer["output"]
                record = {"input": name, "output": [int(v) for v in raw], "class": int(raw.argmax()),
                          "instructions": answer["instructions"], "ticks": answer["ticks"],
                          "seconds": answer["seconds"]}
                if predictor is not None:
                    k = record["class"]
                    record["probability"] = round(float(predictor.probabilities(raw)[k]), 6)
                    labels = predictor.labels
                    record["label"] = labels[k] if labels is not None and k < len(labels) else None
                if args.json:
                    print_json(record)
                else:
                    label = f" ({record['label']})" if record.get("label") else ""
                    prob = f"  probability {record['probability']:.4f}" if "probability" in record else ""
                    print(f"{name}: class {record['class']}{label}{prob}  output {record['output']}  "
                          f"{answer['ticks']:,} ticks", flush=True)
    return EXIT_OK


def _print_info(info: dict, port: str) -> None:
    from ..devices import format_bytes
    print(f"board      {info['board']} ({info['device']}), {info['firmware']}, on {port}")
    print(f"memory     ram {format_bytes(info['ram_bytes'])}, flash {format_bytes(info['flash_bytes'])}, "
          f"arena up to {format_bytes(info['arena_bytes'])}")
    print(f"protocol   messages v{info['version']}, frames v{info['frame_version']}, payloads up to "
          f"{info['max_payload']} bytes; clock {info['tick_hz']:,} Hz")
    print(f"kernels    {', '.join(info['ops'])}")
    if info["slot"] is None:
        print("model      none (edge-lls deploy MODEL --port ...)")
        return
    print(f"model      slot {info['slot']}, sequence {info['sequence']}, {info['trial']}, "
          f"{info['model_bytes']:,} bytes, sha256 {info['sha256']}")
    print(f"tensors    input {info['input_bytes']:,} bytes, output {info['output_bytes']:,} bytes")
    if info["cut"] is not None:
        print(f"training   features at tensor {info['cut']} ({info['cut_bytes']:,} bytes), {info['classes']} classes, "
              f"{info['samples_seen']} samples seen")
    else:
        print("training   not trainable (export with --train-last N)")


def _print_stats(stats: dict) -> None:
    def when(seconds):
        return f" ({seconds * 1e3:.3f} ms)" if seconds is not None else ""
    print(f"inference  {stats['inferences']} run; last {stats['infer_ticks']:,} ticks{when(stats['infer_seconds'])}, "
          f"{stats['infer_instructions']:,} instructions")
    print(f"training   {stats['samples_seen']} samples; last step {stats['train_ticks']:,} ticks"
          f"{when(stats['train_seconds'])}, {stats['train_instructions']:,} instructions")
    print(f"memory     arena {stats['arena_bytes']:,} bytes (high water {stats['arena_high_water']:,}), "
          f"training buffer {stats['train_buffer_bytes']:,}, stack {stats['stack_high_water']:,} of "
          f"{stats['stack_bytes']:,}, ram high water {stats['ram_high_water']:,}")

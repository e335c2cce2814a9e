"""`edge-lls deploy MODEL --port PORT`: a model onto a board (or `edge-lls serve`), made its
active model (firmware_bridge.board.Board.deploy: chunks to the inactive slot, resumed from
the offset the board names, SHA-256 checked, then COMMIT)."""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from ..evaluate import DEFAULT_CALIBRATION_IMAGES
from .output import EXIT_OK, print_json, stderr


def add_port_arguments(p: argparse.ArgumentParser) -> None:
    """--port and the link's settings, shared with `edge-lls board`."""
    p.add_argument("--port", required=True, metavar="PORT",
                   help="the board: a serial device (/dev/ttyACM0), socket://HOST:PORT or tcp:HOST:PORT "
                        "(QEMU, `edge-lls serve`), loop:// (tests)")
    p.add_argument("--baud", metavar="N", type=int, default=115200, help="serial baud rate (default 115200)")
    p.add_argument("--timeout", metavar="S", type=float, default=2.0,
                   help="seconds to wait for each answer before sending again, 3 attempts (default 2; "
                        "INFER, TRAIN and COMMIT wait 30 times as long)")


def add_image_arguments(p: argparse.ArgumentParser) -> None:
    """How a .tflite / .ells MODEL becomes the firmware's model image (as `export --format blob`)."""
    g = p.add_argument_group("converting a .tflite / .ells MODEL to the model image (as export --format blob)")
    g.add_argument("--train-last", metavar="N", type=int,
                   help="blocks the board trains with LLS (default: as fine-tuned by train --backbone, else 0)")
    g.add_argument("--waveform", default="square", help="LLS basis waveform: square (default) or cosine")
    g.add_argument("--temperature", metavar="T", type=float, default=0.5, help="LLS temperature (default 0.5)")
    g.add_argument("--dataset", metavar="NAME", help="calibration data for a .ells model (default: as trained)")
    g.add_argument("--data", metavar="PATH", help="the dataset's file or folder (default: as trained)")
    g.add_argument("--val-split", metavar="F", type=float, help="held-out fraction (default: as trained)")
    g.add_argument("--calibration-images", metavar="N", type=int, default=DEFAULT_CALIBRATION_IMAGES,
                   help=f"images for the int8 activation ranges (default {DEFAULT_CALIBRATION_IMAGES})")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a .tflite file, a model file (.ells) or a run folder, or a "
                                                  "model image (`edge-lls export --format blob`)")
    add_port_arguments(p)
    add_image_arguments(p)
    p.add_argument("--force", action="store_true", help="send the model even when the board already runs it")
    p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")


def model_image(args: argparse.Namespace) -> tuple[bytes, str]:
    """(the model image's bytes, the kind of MODEL): a blob as it is, anything else through
    `edge-lls export --format blob` (export.export_model) with the given options."""
    from ..formats.blob import open_image
    from ..formats.sniff import model_kind, model_path
    path = model_path(args.model)
    kind = model_kind(path)
    if kind == "image":
        data = path.read_bytes()
        open_image(data, str(path))
        return data, kind
    from ..export import export_model
    with tempfile.TemporaryDirectory(prefix="edge-lls-deploy-") as folder:
        out = Path(folder) / "model.bin"
        export_model(path, "blob", out, dataset=args.dataset, data=args.data, val_split=args.val_split,
                     calibration_images=args.calibration_images, train_last=args.train_last,
                     waveform=args.waveform, temperature=args.temperature)
        return out.read_bytes(), kind


def open_board(args: argparse.Namespace):
    from firmware_bridge.board import Board
    return Board.open(args.port, baudrate=args.baud, timeout=args.timeout, slow_timeout=30 * args.timeout)


def run(args: argparse.Namespace) -> int:
    if not args.timeout > 0:
        from ..errors import ConfigError
        raise ConfigError(f"--timeout must be > 0, got {args.timeout}")
    image, kind = model_image(args)
    bar = None
    if not args.json and sys.stderr.isatty():
        from tqdm import tqdm
        bar = tqdm(total=len(image), unit="B", unit_scale=True, desc="deploy", file=sys.stderr, leave=False)

    def progress(done: int, total: int) -> None:
        if bar is not None:
            bar.n = done
            bar.refresh()

    with open_board(args) as board:
        try:
            result = board.deploy(image, progress, where=str(args.model), force=args.force)
        finally:
            if bar is not None:
                bar.close()
        info = board.info
    record = {"model": str(args.model), "kind": kind, "port": args.port, "board": info.get("board"), **result}
    if args.json:
        print_json(record)
        return EXIT_OK
    if result["unchanged"]:
        print(f"{args.port}: already runs {args.model} ({result['bytes']:,} bytes, sha256 {result['sha256'][:16]}…), "
              f"slot {result['slot']}, sequence {result['sequence']}")
        return EXIT_OK
    resumed = f", resumed at byte {result['resumed_from']:,}" if result["resumed_from"] else ""
    print(f"deployed {args.model} ({result['bytes']:,} bytes, sha256 {result['sha256'][:16]}…) to "
          f"{info.get('board')} on {args.port}: slot {result['slot']}, sequence {result['sequence']}, "
          f"{result['trial']}{resumed}; {result['seconds']:.2f} s")
    if result["resumed_from"]:
        stderr(f"{result['sent_bytes']:,} bytes sent this time")
    return EXIT_OK

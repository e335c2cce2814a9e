"""`edge-lls train`: train a zoo model with a rule (edge_lls.training_run), or fine-tune an
int8 .tflite backbone's last blocks (edge_lls.finetune); --precision int8 / fp16 then adds
the quantized model or the fp16 accuracy (edge_lls.evaluate). With --port the board trains
the model deployed to it (firmware_bridge.remote_train) and this machine evaluates."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ..errors import ConfigError
from ..evaluate import DEFAULT_CALIBRATION_IMAGES
from ..precision import PRECISIONS
from .output import EXIT_OK, apply_threads, print_json, stderr


def add_arguments(p: argparse.ArgumentParser) -> None:
    # Defaults are None so a resumed run can tell what the user actually typed; the real
    # defaults live in edge_lls.training_run.TrainConfig (shown here in the help).
    from ..training_run import TrainConfig as D
    what = p.add_argument_group("what to train")
    what.add_argument("--model", metavar="NAME", help=f"zoo model (`edge-lls models`; default {D.model}) "
                                                      "or a float .onnx model: trained from its weights; with --port: "
                                                      "the model deployed to the board (.tflite, .ells, model image)")
    what.add_argument("--width", metavar="W", type=float,
                      help=f"MobileNetV1 width multiplier (default {D.width})")
    what.add_argument("--rule", metavar="NAME", help="lls, lls-m, lls-mxm, lls-random, local-losses, "
                                                     f"dfa or bp (default {D.rule})")
    what.add_argument("--waveform", metavar="NAME",
                      help=f"LLS basis: square or cosine (default {D.waveform})")
    what.add_argument("--temperature", metavar="T", type=float,
                      help=f"local loss temperature (default {D.temperature})")
    data = p.add_argument_group("data")
    data.add_argument("--dataset", metavar="NAME",
                      help="digits, mnist, fashion-mnist, idx, cifar10, cifar100, folder, vww-coco, "
                           f"mlperf-tiny, npz (default {D.dataset}: built in)")
    data.add_argument("--data", metavar="PATH", help="the dataset's file or folder (not needed for digits)")
    data.add_argument("--val-split", metavar="F", type=float,
                      help="fraction held out for evaluation when the data has no test files "
                           f"(default {D.val_split})")
    opt = p.add_argument_group("optimisation")
    opt.add_argument("--epochs", metavar="N", type=int, help=f"default {D.epochs}")
    opt.add_argument("--batch-size", metavar="N", type=int, help=f"default {D.batch_size}")
    opt.add_argument("--lr", metavar="LR", type=float, help=f"learning rate (default {D.lr})")
    opt.add_argument("--optimizer", metavar="NAME",
                     help=f"sgd, adamw or adamw-sf (schedule-free; default {D.optimizer})")
    opt.add_argument("--weight-decay", metavar="WD", type=float, help=f"default {D.weight_decay}")
    opt.add_argument("--seed", metavar="N", type=int,
                     help=f"weights, data order, rule init (default {D.seed})")
    run = p.add_argument_group("where and how it runs")
    run.add_argument("--device", metavar="NAME",
                     help="host, rpi4 (alias rpi), rpi5: that board's threads and memory budget; "
                          f"cortex-m4/m7: the board trains, over --port (default {D.device})")
    run.add_argument("--threads", metavar="N", type=int,
                     help="threads for kernels and BLAS (default: the device's cores)")
    run.add_argument("--out", metavar="RUN_DIR",
                     help="run folder (default runs/<model>-<dataset>-<rule>-<time>)")
    run.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    run.add_argument("--checkpoint-every", type=int, metavar="N",
                     help="also checkpoint every N steps (default: once per epoch)")
    run.add_argument("--json", action="store_true", help="print one JSON result object on stdout")
    run.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                     help="progress bar on stderr (default: when stderr is a terminal)")
    _precision_arguments(p)
    _board_arguments(p)


def _board_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training on a board (firmware_bridge.remote_train; --model: the model deployed)")
    g.add_argument("--port", metavar="PORT",
                   help="train ON the board (or `edge-lls serve`) at PORT: a serial device, socket://HOST:PORT, "
                        "tcp:HOST:PORT; --model FILE is the model deployed to it (checked by SHA-256)")
    g.add_argument("--classifier-lr", metavar="LR", type=float,
                   help="with --port: the classifier's learning rate (default 0.003; --lr: the blocks', default 0.03)")
    g.add_argument("--features", action=argparse.BooleanOptionalAction, default=None,
                   help="with --port: send the features at the cut, computed here, instead of the images "
                        "(the same weights are learned; a resumed run may switch)")
    g.add_argument("--baud", metavar="N", type=int, help="with --port: serial baud rate (default 115200)")
    g.add_argument("--timeout", metavar="S", type=float,
                   help="with --port: seconds per answer before sending again (default 2; TRAIN waits 30 times "
                        "as long)")


def _precision_arguments(p: argparse.ArgumentParser) -> None:
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
    g.add_argument("--train-last", type=int, metavar="N", help="blocks to train with --backbone (default 2); with "
                                                               "--port, as deployed: how a .tflite / .ells --model "
                                                               "became the board's image")
    g.add_argument("--last-block", choices=("classifier", "lls"),
                   help="with --backbone and a local rule: the last trained block learns from the classifier's "
                        "gradient at its pooled output (classifier, default) or from its own LLS head (lls)")
    g.add_argument("--calibration-images", type=int, metavar="N",
                   help=f"images for int8 activation ranges and batch-norm init (default {DEFAULT_CALIBRATION_IMAGES})")


def _given(args, name, default=None):
    value = getattr(args, name, None)
    return default if value is None else value


def finetune_from_args(args: argparse.Namespace) -> int:
    """`edge-lls train --backbone FILE.tflite --train-last N ...`: writes RUN_DIR/model.tflite
    (int8) and RUN_DIR/result.json, prints the result."""
    from ..data import load_dataset
    from ..finetune import finetune, load_backbone
    from ..formats.model_file import write_bytes_atomic
    from ..formats.tflite import save_tflite
    from ..training_run import TrainConfig as D

    for flag, name in (("--model", "model"), ("--width", "width"), ("--resume", "resume"),
                       ("--checkpoint-every", "checkpoint_every")):
        if getattr(args, name, None) not in (None, False):
            raise ConfigError(f"{flag} does not apply to fine-tuning a --backbone")
    if _given(args, "precision", "int8") != "int8":
        raise ConfigError("--backbone fine-tunes into an int8 model; --precision must be int8 (or left out)")
    if getattr(args, "data", None) is None:
        raise ConfigError("--backbone needs --data: an image folder (one subfolder per class)")
    apply_threads(getattr(args, "threads", None))
    backbone = load_backbone(args.backbone)
    dataset_name = _given(args, "dataset", "folder")
    seed = _given(args, "seed", D.seed)
    data = load_dataset(dataset_name, args.data, input_shape=tuple(backbone.input.shape[1:]),
                        val_split=_given(args, "val_split", D.val_split), seed=seed)
    progress = getattr(args, "progress", None)
    log = stderr if (progress if progress is not None else sys.stderr.isatty()) else None
    program, result = finetune(
        backbone, data, train_last=_given(args, "train_last", 2), epochs=_given(args, "epochs", D.epochs),
        batch_size=_given(args, "batch_size", D.batch_size), lr=_given(args, "lr", D.lr),
        optimizer=_given(args, "optimizer", D.optimizer), weight_decay=_given(args, "weight_decay", D.weight_decay),
        rule=_given(args, "rule", D.rule), seed=seed, last_block=_given(args, "last_block", "classifier"),
        calibration_images=_given(args, "calibration_images", DEFAULT_CALIBRATION_IMAGES), log=log,
        **_rule_options(args))
    out = Path(args.out) if getattr(args, "out", None) else \
        Path("runs") / f"finetune-{Path(args.backbone).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
    out.mkdir(parents=True, exist_ok=True)
    model_path = out / "model.tflite"
    result["model_file"] = str(model_path)
    result["tflite_bytes"] = save_tflite(program, model_path)
    write_bytes_atomic(out / "result.json", (json.dumps(result, indent=1) + "\n").encode())
    if getattr(args, "json", False):
        print_json(result)
    else:
        baseline = result["baseline_int8_accuracy"]
        before = f"before {baseline:.4f}, " if baseline is not None else ""
        print(f"fine-tuned last {result['train_last']} blocks + classifier of {Path(args.backbone).name} on "
              f"{result['train_images']} {result['dataset']} images: accuracy on {result['test_images']} held out: "
              f"{before}fp32 {result['fp32_accuracy']:.4f}, int8 {result['int8_accuracy']:.4f} "
              f"({result['seconds']:.1f} s); model: {model_path}")
    return EXIT_OK


def _rule_options(args) -> dict:
    from ..training_run import TrainConfig as D
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
    from ..evaluate import evaluate_model_file, quantize_model_file
    model_file = Path(result["model_file"])
    if precision == "int8":
        q = quantize_model_file(model_file, out=model_file.with_name("model_int8.tflite"),
                                calibration_images=_given(args, "calibration_images", DEFAULT_CALIBRATION_IMAGES))
        return {**result, "precision": "int8", "int8_model_file": q["tflite"], "int8_accuracy": q["int8_accuracy"]}
    evaluated = evaluate_model_file(model_file, "fp16")
    return {**result, "precision": "fp16", "fp16_accuracy": evaluated["accuracy"]}


BOARD_ONLY = (("--classifier-lr", "classifier_lr"), ("--features", "features"), ("--baud", "baud"),
              ("--timeout", "timeout"))
NOT_ON_BOARD = (("--backbone", "backbone"), ("--width", "width"), ("--rule", "rule"), ("--optimizer", "optimizer"),
                ("--weight-decay", "weight_decay"), ("--checkpoint-every", "checkpoint_every"))


def _on_board(args: argparse.Namespace) -> bool:
    """--port, or --resume of a run on a board: the board trains. A microcontroller --device or a
    board flag without them is an error."""
    if getattr(args, "port", None):
        return True
    if args.resume and args.out:
        from firmware_bridge.remote_train import RunFolder
        if RunFolder(args.out).is_board_run():
            return True
    if args.device is not None:
        from ..devices import get_device
        device = get_device(args.device)
        if not device.runs_locally:
            raise ConfigError(f"device {device.name} is a microcontroller profile for the Cortex-M bridge: it trains "
                              f"on the board, with --port PORT and --model FILE (the model deployed to it)")
    for flag, name in BOARD_ONLY:
        if getattr(args, name, None) is not None:
            raise ConfigError(f"{flag} applies to training on a board: add --port PORT")
    return False


def board_from_args(args: argparse.Namespace) -> int:
    """`edge-lls train --port PORT --model FILE --dataset ... --data ...`: the board trains
    (firmware_bridge.remote_train.train_on_board), the host evaluates; writes the run folder."""
    import hashlib
    from firmware_bridge import remote_train as rt
    from firmware_bridge.board import Board
    from ..training_run import TrainConfig as D
    from .deploy import model_image

    for flag, name in NOT_ON_BOARD:
        if getattr(args, name, None) not in (None, False):
            raise ConfigError(f"{flag} does not apply to training on a board (--port): the board trains the "
                              f"model deployed with LLS")
    if getattr(args, "last_block", None) not in (None, "classifier"):
        raise ConfigError("--last-block: the board's last block learns from the classifier (its only setting)")
    if _given(args, "precision", "int8") != "int8":
        raise ConfigError("a board trains int8 models: --precision must be int8 (or left out)")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout must be > 0, got {args.timeout}")
    apply_threads(args.threads)
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "classifier_lr": args.classifier_lr,
             "seed": args.seed, "mode": {True: "features", False: "images"}.get(args.features), "port": args.port,
             "device": args.device, "dataset": args.dataset, "val_split": args.val_split,
             "data": str(Path(args.data).expanduser().resolve()) if args.data is not None else None}
    # how --model became the image deployed: `edge-lls deploy`'s options (a .ells calibrated as trained)
    image_options = argparse.Namespace(
        model=args.model, dataset=None, data=None, val_split=None, train_last=args.train_last,
        calibration_images=_given(args, "calibration_images", DEFAULT_CALIBRATION_IMAGES),
        waveform=_given(args, "waveform", "square"), temperature=_given(args, "temperature", 0.5))
    program = None
    if args.resume:
        if not args.out:
            raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
        run = rt.RunFolder(args.out)
        config = rt.resumed_config(run.read_config()["config"], given, run.config)
        image = run.epoch_image(0).read_bytes()
        if args.model and hashlib.sha256(model_image(image_options)[0]).hexdigest() != config.model_sha256:
            raise ConfigError(f"--model {args.model}: not the model the run in {run.root} started from")
        if config.port is None:
            raise ConfigError(f"{run.root}: the run has no --port; add --port PORT")
    else:
        if not args.model:
            raise ConfigError("training on a board needs --model FILE: the model deployed to it (.tflite, .ells "
                              "or model image)")
        from ..formats.sniff import model_path
        out = args.out or Path("runs") / f"board-{Path(args.model).stem}-{time.strftime('%Y%m%d-%H%M%S')}"
        run = rt.RunFolder(out)
        if run.holds_run():
            raise ConfigError(f"{run.root} already holds a run; add --resume to continue it or choose another --out")
        image, kind = model_image(image_options)
        if kind == "tflite":
            from ..formats.tflite import read_tflite
            program = read_tflite(model_path(args.model))
        config = rt.new_config(model_path(args.model), kind, image, given, val_split=D.val_split)
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    timeout = 2.0 if args.timeout is None else args.timeout
    with Board.open(config.port, baudrate=args.baud or 115200, timeout=timeout, slow_timeout=30 * timeout) as board:
        if not args.resume:
            rt.check_board(board, image, str(args.model))
        data = rt.load_board_dataset(config, image, str(args.model or config.model))
        result = rt.train_on_board(board, image, data, config, run.root, program=program, resume=args.resume,
                                   progress=progress, where=str(args.model or config.model))
    if args.json:
        print_json(result)
    else:
        tflite = f" and {result['tflite_file']}" if result["tflite_file"] else ""
        epochs = f"{result['epochs']} epoch" + ("s" if result["epochs"] != 1 else "")
        print(f"final eval accuracy {result['eval_accuracy']:.4f} (pretrained {result['pretrained_accuracy']:.4f}; "
              f"{result['dataset']}, {epochs} on {result['board']}, {result['seconds']:.1f} s); "
              f"model: {result['model_file']}{tflite}")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    if _on_board(args):
        return board_from_args(args)
    if args.backbone:
        return finetune_from_args(args)
    if getattr(args, "last_block", None) is not None:
        raise ConfigError("--last-block applies to fine-tuning a --backbone")
    from ..training_run import CONFIG_FIELDS, train
    given = {name: getattr(args, name) for name in CONFIG_FIELDS if getattr(args, name, None) is not None}
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = post_train_precision(args, train(given, args.out, resume=args.resume, progress=progress))
    if args.json:
        print_json(result)
    else:
        epochs = f"{result['epochs']} epoch" + ("s" if result["epochs"] != 1 else "")
        print(f"final eval accuracy {result['eval_accuracy']:.4f} ({result['dataset']}, {epochs}, "
              f"{result['seconds']:.1f} s); model: {result['model_file']}")
        if "fp16_accuracy" in result:
            print(f"fp16 inference (float16 weights and activations): accuracy {result['fp16_accuracy']:.4f}")
        if "int8_accuracy" in result:
            print(f"int8 after quantization: accuracy {result['int8_accuracy']:.4f}; "
                  f"model: {result['int8_model_file']}")
    return EXIT_OK

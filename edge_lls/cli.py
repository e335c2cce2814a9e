"""The `edge-lls` command line.

Every subcommand is a Command in COMMANDS: a name, a one-line summary, a function adding
its options and a function running it (returning the exit status). Adding one (predict,
...) is one table entry and two small functions.

Exit status: 0 success; 2 bad input (unknown name, bad option, missing or corrupt file,
diverged training), reported on ONE line on stderr as `edge-lls: error: ...` with no
traceback; 130 interrupted (Ctrl-C). A traceback means a bug in edge-lls.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from . import cli_ext
from .errors import ConfigError, EdgeLLSError

PROG = "edge-lls"
EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130


@dataclass(frozen=True)
class Command:
    name: str
    summary: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (like every other error) and exit status 2."""

    def error(self, message: str):
        _print_error(f"{message} (see {self.prog} --help)")
        sys.exit(EXIT_BAD_INPUT)


def _print_error(message: str) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def _print_json(record: dict) -> None:
    print(json.dumps(record), flush=True)


# ----------------------------------------------------------------------------- train
def _train_arguments(p: argparse.ArgumentParser) -> None:
    # Defaults are None so a resumed run can tell what the user actually typed; the real
    # defaults live in edge_lls.train.TrainConfig (shown here in the help).
    from .train import TrainConfig as D
    what = p.add_argument_group("what to train")
    what.add_argument("--model", metavar="NAME", help=f"zoo model (`edge-lls models`; default {D.model})")
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
                          f"cortex-m4/m7 are bridge targets (default {D.device})")
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
    cli_ext.add_train_precision_arguments(p)


def _run_train(args: argparse.Namespace) -> int:
    if args.backbone:
        return cli_ext.finetune_from_args(args)
    from .train import CONFIG_FIELDS, train
    given = {name: getattr(args, name) for name in CONFIG_FIELDS if getattr(args, name, None) is not None}
    progress = sys.stderr.isatty() if args.progress is None else args.progress
    result = cli_ext.post_train_precision(args, train(given, args.out, resume=args.resume, progress=progress))
    if args.json:
        _print_json(result)
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


# ------------------------------------------------------------------------------ eval
def _eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a model file (.ells) or a run folder")
    p.add_argument("--dataset", metavar="NAME", help="default: the dataset the model was trained on")
    p.add_argument("--data", metavar="PATH", help="the dataset's file or folder (default: as trained)")
    p.add_argument("--val-split", metavar="F", type=float, help="held-out fraction (default: as trained)")
    p.add_argument("--split", default="test", choices=("test", "train"), help="default test")
    p.add_argument("--batch-size", metavar="N", type=int, default=256, help="default 256")
    p.add_argument("--threads", metavar="N", type=int, help="default: all cores")
    p.add_argument("--json", action="store_true", help="print one JSON result object on stdout")
    cli_ext.add_eval_precision_arguments(p)


def _run_eval(args: argparse.Namespace) -> int:
    if cli_ext.eval_needs_precision(args):
        return cli_ext.eval_from_args(args)
    from .train import evaluate_model_file
    _apply_threads(args.threads)
    result = evaluate_model_file(_model_path(args.model), dataset=args.dataset, data=args.data,
                                 val_split=args.val_split, split=args.split, batch_size=args.batch_size)
    if args.json:
        _print_json(result)
    else:
        print(f"accuracy {result['accuracy']:.4f} on {result['images']} {result['split']} "
              f"{result['dataset']} images ({result['images_per_s']:.0f} img/s)")
    return EXIT_OK


def _model_path(text: str) -> Path:
    """A run folder stands for its model.ells."""
    path = Path(text)
    return path / "model.ells" if path.is_dir() else path


def _apply_threads(threads: int | None) -> None:
    if threads is not None:
        from .runtime import set_threads
        set_threads(threads)


# ---------------------------------------------------------------------------- models
def _models_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list on stdout")


def _zoo_rows() -> list[dict]:
    from .models import build_model, model_names
    from .zoo import DEFAULT_INPUT
    rows = []
    for name in model_names():
        model = build_model(name, input_shape=DEFAULT_INPUT[name])
        rows.append({"name": name, "input_shape": list(model.input_shape), "num_classes": model.num_classes,
                     "blocks": len(model.blocks), "params": model.num_params()})
    return rows


def _run_models(args: argparse.Namespace) -> int:
    rows = _zoo_rows()
    if args.json:
        _print_json({"models": rows})
        return EXIT_OK
    print(f"{'model':<14}{'default input':>15}{'classes':>9}{'blocks':>8}{'params':>13}")
    for r in rows:
        print(f"{r['name']:<14}{_shape(r['input_shape']):>15}{r['num_classes']:>9}{r['blocks']:>8}"
              f"{r['params']:>13,}")
    print("Any model takes any input size and class count: --dataset sets them.")
    return EXIT_OK


def _shape(dims) -> str:
    return "x".join(str(d) for d in dims)


# ------------------------------------------------------------------------------ info
def _info_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL", help="a model file (.ells), a run folder, or a zoo name")
    p.add_argument("--rule", metavar="NAME",
                   help="rule for the training-memory estimate (default: the file's, else lls)")
    p.add_argument("--batch-size", metavar="N", type=int, default=128,
                   help="batch for the memory estimate (default 128)")
    p.add_argument("--width", metavar="W", type=float, help="MobileNetV1 width for a zoo name (default 0.25)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _load_for_info(text: str, width: float | None):
    """-> (model, header or None, file size or None) for a file, run folder or zoo name."""
    from .formats.model_file import load_model, read_header
    from .models import build_model, model_names
    path = _model_path(text)
    if path.exists():
        model, header = load_model(path)
        return model, header, read_header(path)["file_bytes"]
    if text in model_names():
        options = {"width": width} if width is not None and text == "mobilenetv1" else {}
        return build_model(text, **options), None, None
    raise ConfigError(f"{text}: neither a model file, a run folder, nor a zoo model "
                      f"({', '.join(model_names())})")


def model_info(text: str, rule: str | None = None, batch_size: int = 128, width: float | None = None) -> dict:
    from .train import training_footprint
    from .trainer import Trainer
    if isinstance(batch_size, bool) or batch_size < 2:
        raise ConfigError(f"--batch-size must be an integer >= 2, got {batch_size}")
    model, header, file_bytes = _load_for_info(text, width)
    header = header or {}
    rule_config = header.get("rule") or {"rule": rule or "lls"}
    rule_name = rule or rule_config.get("rule", "lls")
    blocks, shape = [], (1, *model.input_shape)
    for block in model.blocks:
        _, a_shape, h_shape = block.shapes(shape)
        blocks.append({"name": block.name, "type": block.spec["type"], "output": list(a_shape[1:]),
                       "passes_on": list(h_shape[1:]), "pool_size": block.pool_size,
                       "params": sum(p.value.size for p in block.params)})
        shape = h_shape
    footprint = training_footprint(Trainer(model, rule=rule_name), batch_size)
    return {"model": model.name, "file": str(_model_path(text)) if file_bytes is not None else None,
            "file_bytes": file_bytes, "input_shape": list(model.input_shape),
            "num_classes": model.num_classes,
            "rule": rule_config if header else None, "precision": header.get("precision", "fp32"),
            "params": model.num_params(), "weights_bytes": model.num_params() * 4,
            "blocks": blocks, "classifier_params": sum(p.value.size for p in model.classifier.params),
            "trained": {k: header[k] for k in ("dataset", "epochs", "eval_accuracy", "optimizer", "train_precision")
                        if k in header},
            "training_memory": {"rule": rule_name, "batch_size": batch_size, "bytes": footprint}}


def _run_info(args: argparse.Namespace) -> int:
    from .devices import format_bytes
    info = model_info(args.model, args.rule, args.batch_size, args.width)
    if args.json:
        _print_json(info)
        return EXIT_OK
    rule = info["rule"]
    options = ", ".join(f"{k} {v}" for k, v in (rule or {}).items() if k != "rule" and v is not None)
    rule_text = f"{rule['rule']} ({options})" if rule else "untrained (zoo spec)"
    print(f"model      {info['model']}" + (f"  ({info['file']}, {format_bytes(info['file_bytes'])})"
                                            if info["file"] else ""))
    print(f"input      {_shape(info['input_shape'])} (H x W x C), {info['num_classes']} classes")
    print(f"rule       {rule_text}")
    print(f"precision  {info['precision']}")
    print(f"params     {info['params']:,} ({format_bytes(info['weights_bytes'])} of fp32 weights)")
    trained = info["trained"]
    if trained:
        ds = trained.get("dataset", {})
        mixed = " (fp16 activations)" if trained.get("train_precision") == "fp16" else ""
        print(f"trained    {trained.get('epochs')} epochs on {ds.get('name')}, {trained.get('optimizer')}{mixed}, "
              f"eval accuracy {trained.get('eval_accuracy', float('nan')):.4f}")
    print(f"\n{'block':<8}{'type':<7}{'output':>12}{'passes on':>12}{'LLS pool':>10}{'params':>12}")
    for b in info["blocks"]:
        print(f"{b['name']:<8}{b['type']:<7}{_shape(b['output']):>12}{_shape(b['passes_on']):>12}"
              f"{b['pool_size']:>10}{b['params']:>12,}")
    print(f"{'classifier':<15}{'':>12}{info['num_classes']:>12}{'':>10}{info['classifier_params']:>12,}")
    mem = info["training_memory"]
    parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in mem["bytes"].items())
    print(f"\ntraining memory ({mem['rule']}, batch {mem['batch_size']}): "
          f"{format_bytes(sum(mem['bytes'].values()))} = {parts}")
    return EXIT_OK


# --------------------------------------------------------------------------- devices
def _devices_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list on stdout")


def _run_devices(args: argparse.Namespace) -> int:
    from .devices import ALIASES, all_devices
    profiles = all_devices()
    if args.json:
        _print_json({"devices": [vars(d) for d in profiles], "aliases": ALIASES})
        return EXIT_OK
    for d in profiles:
        where = "" if d.runs_locally else "  [Cortex-M bridge target]"
        print(d.summary() + where)
    print("aliases: " + ", ".join(f"{a} = {t}" for a, t in ALIASES.items()))
    return EXIT_OK


# --------------------------------------------------------------------------- profile
def _profile_module():
    # Written separately (edge_lls/profile.py); imported only when `profile` is used.
    try:
        from . import profile
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.profile":
            raise
        raise ConfigError("`edge-lls profile` is not available in this installation "
                          "(edge_lls/profile.py is missing)") from None
    return profile


def _profile_arguments(p: argparse.ArgumentParser) -> None:
    _profile_module().add_arguments(p)


def _run_profile(args: argparse.Namespace) -> int:
    return int(_profile_module().run(args) or 0)


# ----------------------------------------------------------------------------- table
COMMANDS: tuple[Command, ...] = (
    Command("train", "train a model (no flags: SmallConv + LLS on the built-in digits)",
            _train_arguments, _run_train),
    Command("eval", "accuracy of a saved model on a dataset", _eval_arguments, _run_eval),
    Command("models", "the model zoo with parameter counts", _models_arguments, _run_models),
    Command("info", "architecture, rule, precision and sizes of a model", _info_arguments, _run_info),
    Command("devices", "device profiles: threads, memory budget, precision",
            _devices_arguments, _run_devices),
    Command("profile", "MACs and memory of a training step, block by block", _profile_arguments, _run_profile),
    Command("predict", "class and score for images (.tflite or .ells model)",
            cli_ext.add_predict_arguments, cli_ext.run_predict),
    Command("quantize", "post-training int8 quantization of a .ells model to .tflite",
            cli_ext.add_quantize_arguments, cli_ext.run_quantize),
)


def build_parser(argv: list[str]) -> Parser:
    """Only the chosen command's options are built, so one command's imports (e.g.
    profile's) never slow down or break another."""
    from . import __version__
    parser = Parser(prog=PROG, description="On-device training with the LLS local learning rule.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for command in COMMANDS:
        p = sub.add_parser(command.name, help=command.summary, description=command.summary)
        p.set_defaults(command=command)
        if command.name == chosen:
            command.add_arguments(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser(argv).parse_args(argv)
        return args.command.run(args)
    except EdgeLLSError as e:
        _print_error(e)
    except OSError as e:          # a user path we could not read or write
        where = f"{e.filename}: " if e.filename else ""
        _print_error(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        _print_error("interrupted")
        return EXIT_INTERRUPTED
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

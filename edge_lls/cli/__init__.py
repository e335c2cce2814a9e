"""The `edge-lls` command line: one module per command, this table, one error handler.

Every command module has `add_arguments(parser)` and `run(args) -> exit status`;
only the chosen command's options are built, so one command's imports never slow down or
break another.

Exit status: 0 success; 2 bad input (unknown name, bad option, missing or corrupt file,
diverged training), reported on ONE line on stderr as `edge-lls: error: ...` with no
traceback; 130 interrupted (Ctrl-C). A traceback means a bug in edge-lls.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from ..errors import EdgeLLSError
from .output import EXIT_BAD_INPUT, EXIT_INTERRUPTED, PROG, print_error

# command name -> module under edge_lls/cli/ (imported only when that command runs)
COMMANDS: dict[str, str] = {
    "train": "train",
    "eval": "eval",
    "models": "models",
    "info": "info",
    "devices": "devices",
    "profile": "profile",
    "predict": "predict",
    "quantize": "quantize",
    "export": "export",
    "deploy": "deploy",
    "board": "board",
    "serve": "serve",
}

SUMMARIES = {
    "train": "train a model (no flags: SmallConv + LLS on the built-in digits)",
    "eval": "accuracy of a saved model on a dataset",
    "models": "the model zoo with parameter counts",
    "info": "architecture, rule, precision and sizes of a model",
    "devices": "device profiles: threads, memory budget, precision",
    "profile": "MACs and memory of a training step, block by block",
    "predict": "class and score for images (.tflite or .ells model)",
    "quantize": "post-training int8 quantization of a .ells model to .tflite",
    "export": "a model as .tflite (fp32 or int8, LiteRT and TFLite Micro), .onnx (fp32 or QDQ int8), or the firmware's C / blob image",
    "deploy": "a model onto a board or `edge-lls serve` over its serial port or TCP, resumed if interrupted",
    "board": "a board's info, stats, fine-tuned weights (pull) or inference (infer) over --port",
    "serve": "answer the board protocol on this machine (Raspberry Pi): TCP or a serial device",
}


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (like every other error) and exit status 2."""

    def error(self, message: str):
        print_error(f"{message} (see {self.prog} --help)")
        sys.exit(EXIT_BAD_INPUT)


def command_module(name: str):
    return importlib.import_module(f"{__name__}.{COMMANDS[name]}")


def build_parser(argv: list[str]) -> Parser:
    from .. import __version__
    parser = Parser(prog=PROG, description="On-device training with the LLS local learning rule.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command_name", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    chosen = next((a for a in argv if not a.startswith("-")), None)
    for name in COMMANDS:
        p = sub.add_parser(name, help=SUMMARIES[name], description=SUMMARIES[name])
        if name == chosen:
            module = command_module(name)
            module.add_arguments(p)
            p.set_defaults(run=module.run)
    return parser


_warned: set[str] = set()


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning is one line too, `edge-lls: warning: ...` on stderr, and said once (a file
    read twice, header then tensors, warns once)."""
    text = " ".join(str(message).split())
    if text not in _warned:
        _warned.add(text)
        print(f"{PROG}: warning: {text}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    warnings.showwarning = _show_warning
    try:
        args = build_parser(argv).parse_args(argv)
        return args.run(args)
    except EdgeLLSError as e:
        print_error(e)
    except OSError as e:          # a user path we could not read or write
        where = f"{e.filename}: " if e.filename else ""
        print_error(f"{where}{e.strerror or e}")
    except KeyboardInterrupt:
        print_error("interrupted")
        return EXIT_INTERRUPTED
    return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())

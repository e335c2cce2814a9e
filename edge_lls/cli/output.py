"""What every command prints and how: one JSON object per line, one-line errors, progress
on stderr; and the --threads option they share."""
from __future__ import annotations

import json
import sys

PROG = "edge-lls"
EXIT_OK, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 2, 130


def print_error(message) -> None:
    print(f"{PROG}: error: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


def print_json(record: dict) -> None:
    print(json.dumps(record), flush=True)


def stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def apply_threads(threads: int | None) -> None:
    if threads is not None:
        from ..runtime import set_threads
        set_threads(threads)


def shape_text(dims) -> str:
    return "x".join(str(d) for d in dims)

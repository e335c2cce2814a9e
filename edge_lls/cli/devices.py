"""`edge-lls devices`: device profiles (threads, memory budget, precision)."""
from __future__ import annotations

import argparse

from .output import EXIT_OK, print_json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="print a JSON list on stdout")


def run(args: argparse.Namespace) -> int:
    from ..devices import ALIASES, all_devices
    profiles = all_devices()
    if args.json:
        print_json({"devices": [vars(d) for d in profiles], "aliases": ALIASES})
        return EXIT_OK
    for d in profiles:
        where = "" if d.runs_locally else "  [Cortex-M bridge target]"
        print(d.summary() + where)
    print("aliases: " + ", ".join(f"{a} = {t}" for a, t in ALIASES.items()))
    return EXIT_OK

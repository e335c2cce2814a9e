"""`edge-lls serve --listen tcp:PORT | --serial DEVICE`: this machine answers the bridge
protocol as a board does (firmware_bridge.agent: the Raspberry Pi path), with A/B model slots
in --state DIR; `edge-lls deploy / board ... --port` drive it like a microcontroller."""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..errors import ConfigError
from .output import EXIT_OK, stderr

LOCAL_DEVICES = ("host", "rpi4", "rpi5")


def default_state() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base) / "edge-lls" / "agent"


def add_arguments(p: argparse.ArgumentParser) -> None:
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--listen", metavar="tcp:PORT",
                       help="serve TCP clients one at a time: tcp:PORT (this machine only), tcp:HOST:PORT "
                            "(tcp:0.0.0.0:PORT: every interface); port 0 picks a free one")
    where.add_argument("--serial", metavar="DEVICE", help="serve a serial device (USB gadget: /dev/ttyGS0)")
    p.add_argument("--state", metavar="DIR", help=f"the model slots and commit records (default {default_state()})")
    p.add_argument("--baud", metavar="N", type=int, default=115200, help="serial baud rate (default 115200)")
    p.add_argument("--board", metavar="NAME", help="the name HELLO reports (default agent@HOSTNAME)")
    p.add_argument("--device", metavar="NAME", default="host", choices=LOCAL_DEVICES,
                   help="the device profile HELLO reports: host (default), rpi4 or rpi5")
    p.add_argument("--slot-bytes", metavar="N", type=int, default=64 << 20,
                   help="the largest model image a slot takes (default 64 MiB)")
    p.add_argument("--threads", metavar="N", type=int, help="default: all cores")


def run(args: argparse.Namespace) -> int:
    from firmware_bridge.agent import Agent, parse_listen, serve_serial, serve_tcp, stderr_log
    from .output import apply_threads
    if args.slot_bytes < 1024:
        raise ConfigError(f"--slot-bytes must be at least 1024, got {args.slot_bytes}")
    apply_threads(args.threads)
    state = Path(args.state) if args.state else default_state()
    if state.exists() and not state.is_dir():
        raise ConfigError(f"--state {state}: not a folder")
    listen = parse_listen(args.listen) if args.listen else None
    agent = Agent(state, board=args.board, device=args.device, slot_bytes=args.slot_bytes, log=stderr_log)
    _stop_on_sigterm()
    if listen is not None:
        def ready(port: int) -> None:
            print(f"listening on tcp:{listen[0]}:{port} (state {state})", flush=True)
            stderr(f"edge-lls serve: drive it with --port tcp:{listen[0]}:{port}")
        serve_tcp(agent, *listen, ready=ready)
    else:
        print(f"serving {args.serial} at {args.baud} baud (state {state})", flush=True)
        serve_serial(agent, args.serial, baudrate=args.baud)
    return EXIT_OK


def _stop_on_sigterm() -> None:
    """SIGTERM (systemd's stop, `kill`) ends the agent as Ctrl-C does: between frames, slots
    and records intact. SIGINT alone would not do for a service: a shell starts background
    jobs with SIGINT ignored, and Python then installs no handler for it."""
    import signal

    def interrupted(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupted)


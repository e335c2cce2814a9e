"""The bridge firmware on QEMU: a board the host reaches as `socket://127.0.0.1:PORT`.

    with Emulator("mps2-an500", flash="state/m7-flash.bin") as emu:
        board = Board.open(emu.port)          # deploy, infer, train, pull as on hardware
        emu.kill(); emu.start()               # a power loss: the flash file stays

`python -m firmware_bridge.emulator --board mps2-an500` (what `make emulator BOARD=...` runs)
builds the firmware when needed, starts QEMU on a free port, prints the `--port` to use and
runs until Ctrl-C. QEMU runs the firmware built with SESSION=1
(firmware_bridge/firmware/build/<board>-session/edge-lls-fw.elf) with
  -serial tcp:127.0.0.1:PORT,server=on,wait=off,nodelay=on   UART0, the protocol's line
                                           (without nodelay every reply waits ~40 ms)
  -semihosting-config enable=on,target=native,arg=edge-lls-fw,arg=flash=FILE
                                           the flash HAL's backing file (boards/mps2/flash.c)
                                           and the firmware's log lines (QEMU's stdout)
  -icount shift=0                          one instruction per ns of virtual time: SysTick
                                           ticks (the replies' *_ticks fields) repeat run to run
The flash file persists the model slots as a real part's flash would: kill QEMU at any
point and start it again on the same file, and it boots what was committed.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from edge_lls.errors import ConfigError

FIRMWARE = Path(__file__).resolve().parent / "firmware"
BOARDS = {"mps2-an386": "cortex-m4", "mps2-an500": "cortex-m7"}
DEVICES = {device: board for board, device in BOARDS.items()}
QEMU = os.environ.get("QEMU", "qemu-system-arm")


def board_name(name: str) -> str:
    """A QEMU board from a board or device name (mps2-an500 or cortex-m7)."""
    if name in BOARDS:
        return name
    if name in DEVICES:
        return DEVICES[name]
    raise ConfigError(f"--board {name}: choose one of {', '.join(list(BOARDS) + list(DEVICES))}")


def firmware_elf(board: str) -> Path:
    return FIRMWARE / "build" / f"{board}-session" / "edge-lls-fw.elf"


def build(board: str) -> Path:
    """make SESSION=1 for the board (a no-op when up to date); the ELF."""
    result = subprocess.run(["make", "-s", "-C", str(FIRMWARE), f"BOARD={board}", "SESSION=1", "firmware"],
                            capture_output=True, text=True)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines() or ["(no output)"]
        raise ConfigError(f"building the {board} bridge firmware failed: {lines[-1]}")
    return firmware_elf(board)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """QEMU running the bridge firmware, its UART0 on a local TCP port."""

    def __init__(self, board: str, flash, *, elf=None, port: int | None = None, log=None):
        self.board = board_name(board)
        self.flash = Path(flash).resolve()
        self.elf = Path(elf) if elf is not None else firmware_elf(self.board)
        self.tcp_port = port
        self.log = log                       # a file for QEMU's output (the firmware's log); None: a pipe
        self.process: subprocess.Popen | None = None

    @property
    def port(self) -> str:
        return f"socket://127.0.0.1:{self.tcp_port}"

    def command(self) -> list[str]:
        return [QEMU, "-machine", self.board, "-display", "none", "-monitor", "none", "-icount", "shift=0",
                "-serial", f"tcp:127.0.0.1:{self.tcp_port},server=on,wait=off,nodelay=on",
                "-semihosting-config", f"enable=on,target=native,arg=edge-lls-fw,arg=flash={self.flash}",
                "-kernel", str(self.elf)]

    def start(self, timeout: float = 10.0) -> "Emulator":
        if not self.elf.exists():
            raise ConfigError(f"{self.elf}: no firmware (make -C firmware_bridge/firmware BOARD={self.board} SESSION=1)")
        self.flash.parent.mkdir(parents=True, exist_ok=True)
        if self.tcp_port is None:
            self.tcp_port = free_port()
        out = self.log if self.log is not None else subprocess.DEVNULL
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:               # QEMU listens once the machine is built
            if self.process.poll() is not None:
                raise ConfigError(f"QEMU ({self.board}) exited with status {self.process.returncode} at start")
            try:
                with socket.create_connection(("127.0.0.1", self.tcp_port), timeout=0.2):
                    pass
                time.sleep(0.05)                         # the probe's connection closes before a client's
                return self
            except OSError:
                time.sleep(0.05)
        self.kill()
        raise ConfigError(f"QEMU ({self.board}) did not listen on port {self.tcp_port} within {timeout:g} s")

    def kill(self) -> None:
        """SIGKILL: a power loss (the flash file keeps what was written)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def __enter__(self) -> "Emulator":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m firmware_bridge.emulator",
                                description="Run the bridge firmware on QEMU and print the --port to use.")
    p.add_argument("--board", default="mps2-an500", help="mps2-an386 (cortex-m4) or mps2-an500 (cortex-m7)")
    p.add_argument("--flash", help="the flash file (default: firmware_bridge/firmware/build/<board>-flash.bin)")
    p.add_argument("--port", type=int, help="the TCP port (default: a free one)")
    args = p.parse_args(argv)
    try:
        board = board_name(args.board)
        elf = build(board)
        flash = Path(args.flash) if args.flash else FIRMWARE / "build" / f"{board}-flash.bin"
        emu = Emulator(board, flash, elf=elf, port=args.port, log=sys.stdout).start()
    except ConfigError as e:
        print(f"edge-lls emulator: {e}", file=sys.stderr)
        return 2
    print(f"{board} ({BOARDS[board]}) on QEMU, flash {flash}\n  --port {emu.port}", flush=True)
    stop = []
    signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
    try:
        while not stop and emu.process.poll() is None:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        emu.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

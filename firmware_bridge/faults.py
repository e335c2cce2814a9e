"""Fault injection for the bridge: a TCP proxy between the host and a board that damages what
it carries, and the boards it can be put in front of (tools/fault_campaign.py drives both).

    target = ServeTarget("state/")                # `edge-lls serve` as a subprocess
    target.start()
    with FaultProxy(target.address, FaultPlan(seed=1, rate=0.1)) as proxy:
        Board.open(proxy.url)                     # the host talks to the board through the proxy
        proxy.arm(target.kill, "COMMIT", delay=0.002)   # kill the board 2 ms after COMMIT passes
        proxy.counts                              # {"drop": 12, "flip": 9, ...}

The proxy listens on a free 127.0.0.1 port and forwards each connection to the target, both
directions. It cuts each direction's byte stream into units at the frame delimiter (0x00;
bytes that sit without one for `idle_flush` seconds are a unit too) and, by a seeded plan,
damages a unit with one fault:

    drop        a run of 1..max_run bytes removed (the delimiter too, at times)
    flip        1 to 3 bits inverted
    duplicate   a run (or the whole unit) sent twice in a row
    reorder     two adjacent runs swapped, or (hold_share of them) the whole unit held back
                behind the next 1 to 3 units of its direction
    truncate    the rest of the unit dropped from a point (its delimiter kept or not)
    cut         the unit's rest dropped and the connection closed, both sides

The board itself is faulted by the caller at chosen points: arm(action, message, nth, delay)
calls action (a Target's kill or reset) `delay` seconds after the nth host frame of that
message type went through, in its own thread. With `reconnect` set, a lost upstream does not
end the host's connection: the proxy waits for the target to come back and reconnects, as a
UART cable stays plugged in while the board resets.

A Target is a board the proxy can stand in front of: start(), kill() (SIGKILL: dead until
restarted), restart(), reset() (the board restarts at once), stop() (clean), alive(), name,
host, port (the TCP port it answers on), address() -> (host, port). ServeTarget runs
`edge-lls serve --listen tcp:127.0.0.1:PORT` over a persistent state folder; QemuTarget the
bridge firmware under QEMU (firmware_bridge/emulator.py) over a persistent flash file.
"""
from __future__ import annotations

import collections
import os
import random
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from edge_lls.errors import ConfigError, EdgeLLSError

from .protocol import MESSAGE_NAMES, MESSAGES, FrameError, decode_frame

UP, DOWN = "host->board", "board->host"
DIRECTIONS = (UP, DOWN)
LINE_KINDS = ("drop", "flip", "duplicate", "reorder", "truncate", "cut")
BOARD_KINDS = ("kill", "reset")
KINDS = LINE_KINDS + BOARD_KINDS
DEFAULT_WEIGHTS = {"drop": 2.0, "flip": 2.0, "duplicate": 2.0, "reorder": 2.0, "truncate": 2.0, "cut": 0.3}


class TargetError(EdgeLLSError):
    """A target that does not start or answer."""


# ------------------------------------------------------------------ the faults
def _run(rng: random.Random, n: int, max_run: int) -> tuple[int, int]:
    """(start, length) of a run of 1..max_run bytes inside n bytes."""
    length = rng.randint(1, max(1, min(max_run, n)))
    return rng.randint(0, n - length), length


def mangle(kind: str, unit: bytes, rng: random.Random, max_run: int = 16) -> tuple[bytes, bool]:
    """One fault of `kind` applied to `unit`: (the bytes to send instead, whether the
    connection is then cut)."""
    data, n = bytes(unit), len(unit)
    if kind not in LINE_KINDS:
        raise ConfigError(f"fault kind {kind!r}: one of {', '.join(LINE_KINDS)}")
    if n == 0:
        return data, kind == "cut"
    if kind == "drop":
        at, length = _run(rng, n, max_run)
        return data[:at] + data[at + length:], False
    if kind == "flip":
        out = bytearray(data)
        bits = rng.sample(range(8 * n), min(8 * n, rng.randint(1, 3)))
        for bit in bits:
            out[bit // 8] ^= 1 << (bit % 8)
        return bytes(out), False
    if kind == "duplicate":
        if rng.random() < 0.3:
            return data + data, False                  # the whole frame, twice
        at, length = _run(rng, n, max_run)
        return data[:at + length] + data[at:], False
    if kind == "reorder":
        if n < 2:
            return data, False
        first = rng.randint(1, max(1, min(max_run, n - 1)))
        second = rng.randint(1, max(1, min(max_run, n - first)))
        at = rng.randint(0, n - first - second)
        a, b = data[at:at + first], data[at + first:at + first + second]
        return data[:at] + b + a + data[at + first + second:], False
    if kind == "truncate":                             # the rest dropped from `at`, a byte at least
        framed = n > 1 and data.endswith(b"\x00")
        at = rng.randint(0, n - 2 if framed else n - 1)
        return data[:at] + (b"\x00" if framed and rng.random() < 0.5 else b""), False
    return data[:rng.randint(0, n - 1)], True          # cut


class FaultPlan:
    """Which unit gets which fault: each unit of a direction in `directions`, with
    probability `rate`, one fault drawn by `weights` (kind -> weight), from a seeded random
    stream per direction. `hold_share` of the reorder faults swap whole frames: the unit is
    held back behind the next 1 to 3 units of its direction (a late copy arrives as a duplicate
    or a stale frame); the others swap two runs inside the unit. script(direction, kinds)
    queues faults (None: none) for the next units before the random ones. enabled = False
    lets everything through."""

    def __init__(self, seed: int = 0, rate: float = 0.1, weights: dict | None = None,
                 directions=DIRECTIONS, max_run: int = 16, hold_share: float = 0.3):
        weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        unknown = sorted(set(weights) - set(LINE_KINDS))
        if unknown:
            raise ConfigError(f"fault kinds {', '.join(unknown)}: the line's are {', '.join(LINE_KINDS)}")
        if not 0 <= rate <= 1:
            raise ConfigError(f"fault rate {rate}: between 0 and 1")
        if any(w < 0 for w in weights.values()) or not any(weights.values()):
            raise ConfigError("fault weights: at least one > 0 and none < 0")
        self.seed, self.rate, self.max_run = seed, float(rate), int(max_run)
        self.kinds = [k for k in LINE_KINDS if weights.get(k, 0) > 0]
        self.weights = [weights[k] for k in self.kinds]
        self.directions = tuple(directions)
        self.rngs = {d: random.Random(f"{seed}:{d}") for d in DIRECTIONS}
        self.hold_share = float(hold_share)
        self.scripts = {d: collections.deque() for d in DIRECTIONS}
        self.enabled = True

    def script(self, direction: str, kinds) -> None:
        for kind in kinds:
            if kind is not None and kind not in LINE_KINDS:
                raise ConfigError(f"fault kind {kind!r}: one of {', '.join(LINE_KINDS)}")
            self.scripts[direction].append(kind)

    def choose(self, direction: str) -> str | None:
        if not self.enabled:
            return None
        if self.scripts[direction]:
            return self.scripts[direction].popleft()
        if direction not in self.directions or not self.rate:
            return None
        rng = self.rngs[direction]
        if rng.random() >= self.rate:
            return None
        return rng.choices(self.kinds, self.weights)[0]

    def apply(self, kind: str, direction: str, unit: bytes) -> tuple[bytes, bool]:
        return mangle(kind, unit, self.rngs[direction], self.max_run)

    def hold(self, direction: str) -> int:
        """For a reorder fault: how many units to hold the unit behind (0: swap inside it)."""
        rng = self.rngs[direction]
        return rng.randint(1, 3) if rng.random() < self.hold_share else 0


# ------------------------------------------------------------------ the proxy
class Trigger:
    """A board fault armed on the proxy: action() once, `delay` s after the nth host frame of
    type `message` went through. fired / done: threading.Events; error: what action raised."""

    def __init__(self, action, message: str, nth: int, delay: float):
        if message not in MESSAGES:
            raise ConfigError(f"message {message!r}: one of {', '.join(MESSAGES)}")
        self.action, self.message, self.nth, self.delay = action, message, int(nth), float(delay)
        self.seen = 0
        self.fired, self.done = threading.Event(), threading.Event()
        self.error: BaseException | None = None
        self.at: float | None = None

    def _fire(self) -> None:
        def run():
            try:
                if self.delay > 0:
                    time.sleep(self.delay)
                self.at = time.monotonic()
                self.action()
            except BaseException as e:        # noqa: BLE001 -- the caller looks at .error
                self.error = e
            finally:
                self.done.set()
        self.fired.set()
        threading.Thread(target=run, daemon=True, name=f"fault-{self.message}").start()


class FaultProxy:
    """The fault-injecting TCP proxy on 127.0.0.1:port in front of `target`: (host, port) or a
    callable returning it (asked at each connection: a target may move)."""

    def __init__(self, target, plan: FaultPlan | None = None, *, host: str = "127.0.0.1",
                 idle_flush: float = 0.02, reconnect_timeout: float = 15.0):
        self.target = target if callable(target) else (lambda: tuple(target))
        self.plan = plan if plan is not None else FaultPlan(rate=0.0)
        self.idle_flush, self.reconnect_timeout = float(idle_flush), float(reconnect_timeout)
        self.reconnect = False
        self.counts: collections.Counter = collections.Counter()
        self.by_direction = {d: collections.Counter() for d in DIRECTIONS}
        self.frames = collections.Counter()          # host frames forwarded, by message name
        self.round_trips = collections.defaultdict(list)   # message -> seconds to the board's next unit
        self.connections = 0
        self._lock = threading.Lock()
        self._triggers: list[Trigger] = []
        self._sessions: set = set()
        self._stop = threading.Event()
        self.server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind((host, 0))
        self.server.listen(4)
        self.server.settimeout(0.1)
        self.host, self.port = host, self.server.getsockname()[1]
        self.url = f"socket://{host}:{self.port}"
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")
        self._thread.start()

    # ---------------------------------------------------------------- control
    @property
    def total(self) -> int:
        with self._lock:
            return sum(self.counts.values())

    def note(self, kind: str, direction: str | None = None) -> None:
        """Count a fault (the caller's board faults: kill, reset)."""
        with self._lock:
            self.counts[kind] += 1
            if direction is not None:
                self.by_direction[direction][kind] += 1

    def arm(self, action, message: str, nth: int = 1, delay: float = 0.0) -> Trigger:
        trigger = Trigger(action, message, nth, delay)
        with self._lock:
            self._triggers.append(trigger)
        return trigger

    def disarm(self) -> None:
        with self._lock:
            self._triggers.clear()

    def drop_connections(self) -> None:
        """Close every open connection (both sides)."""
        for session in list(self._sessions):
            session.closed = True

    def close(self) -> None:
        self._stop.set()
        self.drop_connections()
        self._thread.join(5)
        self.server.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- connections
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.server.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                self.connections += 1
            threading.Thread(target=_Session(self, client).run, daemon=True, name="fault-session").start()

    def _connect(self) -> socket.socket | None:
        try:
            upstream = socket.create_connection(self.target(), timeout=2.0)
        except (OSError, TypeError):
            return None
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        upstream.settimeout(None)
        return upstream

    def _host_frame(self, unit: bytes) -> str | None:
        """The message name of an intact host frame (before any fault), and the triggers it fires."""
        try:
            frame = decode_frame(unit)
        except FrameError:
            return None
        name = MESSAGE_NAMES.get(frame.type)
        if name is None:
            return None
        fire = []
        with self._lock:
            self.frames[name] += 1
            for trigger in self._triggers:
                if trigger.message == name and not trigger.fired.is_set():
                    trigger.seen += 1
                    if trigger.seen >= trigger.nth:
                        fire.append(trigger)
            for trigger in fire:
                self._triggers.remove(trigger)
        for trigger in fire:
            trigger._fire()
        return name

    def _fault(self, direction: str, unit: bytes, can_hold: bool) -> tuple[bytes, bool, int]:
        """(bytes to send, whether to cut the connection, units to hold them behind)."""
        kind = self.plan.choose(direction)
        if kind is None:
            return unit, False, 0
        self.note(kind, direction)
        hold = self.plan.hold(direction) if kind == "reorder" and can_hold else 0
        if hold:
            return unit, False, hold
        out, cut = self.plan.apply(kind, direction, unit)
        return out, cut, 0


class _Session:
    """One host connection and its upstream: a select loop over both sockets."""

    def __init__(self, proxy: FaultProxy, client: socket.socket):
        self.proxy, self.client = proxy, client
        self.upstream = proxy._connect()
        self.closed = self.upstream is None
        self.buffers = {UP: bytearray(), DOWN: bytearray()}
        self.last_data = {UP: time.monotonic(), DOWN: time.monotonic()}
        self.lost_at: float | None = None
        self.waiting: tuple[str, float] | None = None     # (message, when) for a round-trip time
        self.held: dict = {}                              # direction -> [unit, units still to pass]

    def run(self) -> None:
        proxy = self.proxy
        proxy._sessions.add(self)
        try:
            while not self.closed and not proxy._stop.is_set():
                self._step()
        finally:
            proxy._sessions.discard(self)
            for s in (self.client, self.upstream):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def _lose_upstream(self) -> None:
        if self.upstream is not None:
            try:
                self.upstream.close()
            except OSError:
                pass
        self.upstream = None
        self.buffers[DOWN].clear()
        if self.proxy.reconnect:
            self.lost_at = time.monotonic()
        else:
            self.closed = True

    def _step(self) -> None:
        proxy = self.proxy
        if self.upstream is None:                         # the board is restarting: wait for it
            if time.monotonic() - self.lost_at > proxy.reconnect_timeout:
                self.closed = True
                return
            self.upstream = proxy._connect()
            if self.upstream is None:
                time.sleep(0.02)
        sockets = [self.client] + ([self.upstream] if self.upstream is not None else [])
        try:
            ready, _, _ = select.select(sockets, [], [], 0.005)
        except (OSError, ValueError):
            self.closed = True
            return
        now = time.monotonic()
        for s in ready:
            try:
                data = s.recv(65536)
            except OSError:
                data = b""
            if s is self.client:
                if not data:
                    self.closed = True
                    return
                if self.upstream is None:
                    continue                             # bytes into a board that is down: lost
                self.buffers[UP] += data
                self.last_data[UP] = now
            else:
                if not data:
                    self._lose_upstream()
                    return
                self.buffers[DOWN] += data
                self.last_data[DOWN] = now
        for direction in DIRECTIONS:
            buffer = self.buffers[direction]
            while buffer and not self.closed:
                end = buffer.find(0)
                if end < 0:
                    if now - self.last_data[direction] < proxy.idle_flush:
                        break
                    end = len(buffer) - 1
                unit = bytes(buffer[:end + 1])
                del buffer[:end + 1]
                self._forward(direction, unit)

    def _forward(self, direction: str, unit: bytes) -> None:
        proxy = self.proxy
        if direction == UP:
            name = proxy._host_frame(unit)
            if name in ("COMMIT", "PUT_MODEL", "INFER"):
                self.waiting = (name, time.monotonic())
        elif self.waiting is not None:
            name, since = self.waiting
            self.waiting = None
            with proxy._lock:
                proxy.round_trips[name].append(time.monotonic() - since)
        out, cut, hold = proxy._fault(direction, unit, direction not in self.held)
        if hold:
            self.held[direction] = [out, hold]
            return
        self._send(direction, out)
        held = self.held.get(direction)
        if held is not None and not self.closed:
            held[1] -= 1
            if held[1] == 0:                             # the held unit, after the ones it let pass
                del self.held[direction]
                self._send(direction, held[0])
        if cut:
            self.closed = True

    def _send(self, direction: str, out: bytes) -> None:
        sink = self.upstream if direction == UP else self.client
        if sink is None or not out:
            return
        try:
            sink.sendall(out)
        except OSError:
            if sink is self.client:
                self.closed = True
            else:
                self._lose_upstream()


# ------------------------------------------------------------------ targets
class Target:
    """A board behind a TCP port. Subclasses define start() and kill(); the rest follows."""

    name = "target"
    host = "127.0.0.1"
    port: int | None = None

    def start(self) -> None:
        raise NotImplementedError

    def kill(self) -> None:
        """SIGKILL: the board is dead until restart()."""
        raise NotImplementedError

    def alive(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        """A clean stop (the end of a campaign)."""
        self.kill()

    def restart(self) -> None:
        if self.alive():
            self.kill()
        self.start()

    def reset(self) -> None:
        """The board restarts now (power-on reset): killed and started again."""
        self.kill()
        self.start()

    def address(self) -> tuple[str, int]:
        return self.host, self.port

    @property
    def url(self) -> str:
        return f"socket://{self.host}:{self.port}"

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()


LISTENING = re.compile(r"^listening on tcp:([0-9.]+):(\d+)\b", re.M)


class ServeTarget(Target):
    """`edge-lls serve --listen tcp:127.0.0.1:PORT --state DIR` as a subprocess. The first
    start takes a free port (port 0; serve prints "listening on tcp:HOST:PORT"), later ones
    the same port again (a new one if it was taken meanwhile). Its stdout and stderr go to
    `log` (default: serve.log beside the state folder)."""

    name = "serve"

    def __init__(self, state_dir, *, log=None, startup_timeout: float = 60.0, extra_args=(), command=None):
        self.state_dir = Path(state_dir)
        self.log = Path(log) if log is not None else self.state_dir.with_name(self.state_dir.name + ".serve.log")
        self.startup_timeout = float(startup_timeout)
        self.command = list(command) if command is not None else [sys.executable, "-m", "edge_lls.cli"]
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen | None = None
        self.port = None
        self.starts = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.alive():
            return
        for port in ([self.port, 0] if self.port else [0]):
            if self._start(port):
                self.starts += 1
                return
        raise TargetError(f"edge-lls serve did not start ({self._last_line()})")

    def _start(self, port: int) -> bool:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        before = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen([*self.command, "serve", "--listen", f"tcp:{self.host}:{port}",
                                          "--state", str(self.state_dir), "--threads", "1", *self.extra_args],
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            with open(self.log, "rb") as f:
                f.seek(before)
                text = f.read().decode("utf-8", "replace")
            found = LISTENING.search(text)
            if found:
                self.port = int(found.group(2))
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.01)
        self.kill()
        return False

    def _last_line(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return lines[-1] if lines else "no output"

    def kill(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(30)

    def stop(self) -> None:
        """SIGTERM (serve stops between frames), SIGKILL after 10 s."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()


class QemuTarget(Target):
    """The bridge firmware on QEMU (firmware_bridge.emulator.Emulator): UART0 on a TCP port that
    stays the same across restarts, the slots in a flash file that survives a kill (a power
    loss); reset is a kill and a start on the same flash. board: qemu-m4 / cortex-m4 /
    mps2-an386 or qemu-m7 / cortex-m7 / mps2-an500."""

    def __init__(self, board: str, flash, *, log=None, startup_timeout: float = 30.0):
        from .emulator import Emulator, board_name
        name = {"qemu-m4": "mps2-an386", "qemu-m7": "mps2-an500"}.get(board, board)
        self.board = board_name(name)
        self.name = {"mps2-an386": "qemu-m4", "mps2-an500": "qemu-m7"}[self.board]
        self.log_path = Path(log) if log is not None else None
        self._log = None
        self.emulator = Emulator(self.board, flash)
        self.startup_timeout = float(startup_timeout)
        self.starts = 0

    def alive(self) -> bool:
        process = self.emulator.process
        return process is not None and process.poll() is None

    def start(self) -> None:
        if self.alive():
            return
        if self.log_path is not None and self._log is None:
            self._log = open(self.log_path, "ab")
        self.emulator.log = self._log
        try:
            self.emulator.start(timeout=self.startup_timeout)
        except ConfigError as e:
            raise TargetError(str(e)) from None
        self.port = self.emulator.tcp_port
        self.starts += 1

    def kill(self) -> None:
        self.emulator.kill()

    def stop(self) -> None:
        self.emulator.stop()
        if self._log is not None:
            self._log.close()
            self._log = None


__all__ = ["FaultPlan", "FaultProxy", "Trigger", "Target", "ServeTarget", "QemuTarget", "TargetError", "mangle",
           "KINDS", "LINE_KINDS", "BOARD_KINDS", "UP", "DOWN"]

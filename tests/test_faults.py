"""Fault injection (issue 12): firmware_bridge/faults.py's proxy and tools/fault_campaign.py.

Held to: each fault kind does what it says, to the byte (mangle over many seeded draws, and
once each through the proxy over a loopback echo, counted by kind and direction); a plan of
rate 0 passes everything through, frames or not; a board fault armed on a message fires once
on the nth such frame; a lost upstream ends the host's connection unless the proxy is told
to wait for the board to come back; and a campaign of ~100 faults against `edge-lls serve`
(kills and resets mid-transfer and mid-commit included) finds no violation, with 1,000
faults in the long run, and 50 against the bridge firmware under QEMU (M4 and M7, long).
Bad options exit 2 with one line.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import require_tools
from edge_lls.errors import ConfigError
from firmware_bridge import messages as m
from firmware_bridge import protocol as p
from firmware_bridge.faults import DOWN, LINE_KINDS, UP, FaultPlan, FaultProxy, mangle

CAMPAIGN = Path(__file__).resolve().parents[1] / "tools" / "fault_campaign.py"


# ------------------------------------------------------------------ the faults, as functions
def _unit(rng: random.Random, n: int) -> bytes:
    return bytes(rng.randrange(1, 256) for _ in range(n - 1)) + b"\x00"


def _is_drop(unit, out):
    k = len(unit) - len(out)
    return 1 <= k <= 16 and any(unit[:i] + unit[i + k:] == out for i in range(len(out) + 1))


def _is_duplicate(unit, out):
    k = len(out) - len(unit)
    return out == unit + unit or (1 <= k <= 16 and
                                  any(out == unit[:i + k] + unit[i:] for i in range(len(unit) - k + 1)))


def _is_reorder(unit, out):
    n = len(unit)
    return len(out) == n and any(out == unit[:a] + unit[a + x:a + x + y] + unit[a:a + x] + unit[a + x + y:]
                                 for x in range(1, 17) for y in range(1, 17) for a in range(n - x - y + 1))


def _is_truncate(unit, out):
    return len(out) < len(unit) and (unit.startswith(out) or (out.endswith(b"\x00") and unit.startswith(out[:-1])))


CHECKS = {
    "drop": _is_drop,
    "flip": lambda unit, out: len(out) == len(unit) and
    1 <= sum(bin(a ^ b).count("1") for a, b in zip(unit, out)) <= 3,
    "duplicate": _is_duplicate,
    "reorder": _is_reorder,
    "truncate": _is_truncate,
    "cut": lambda unit, out: len(out) < len(unit) and unit.startswith(out),
}


@pytest.mark.parametrize("kind", LINE_KINDS)
def test_each_fault_kind_changes_a_unit_as_it_says(kind):
    rng = random.Random(kind)
    for trial in range(200):
        unit = _unit(rng, rng.choice([2, 3, 5, 17, 40, 300]))
        out, cut = mangle(kind, unit, rng)
        assert CHECKS[kind](unit, out), (kind, unit.hex(), out.hex())
        assert cut == (kind == "cut")


def test_a_plan_is_seeded_by_direction_and_refuses_unknown_kinds():
    a, b = FaultPlan(seed=4, rate=0.5), FaultPlan(seed=4, rate=0.5)
    assert [a.choose(UP) for _ in range(100)] == [b.choose(UP) for _ in range(100)]
    assert {a.choose(DOWN) for _ in range(400)} >= set(LINE_KINDS)
    only_up = FaultPlan(seed=1, rate=1.0, directions=(UP,))
    assert only_up.choose(DOWN) is None and only_up.choose(UP) in LINE_KINDS
    only_up.enabled = False
    assert only_up.choose(UP) is None
    with pytest.raises(ConfigError, match="fault kinds smash"):
        FaultPlan(weights={"smash": 1})
    with pytest.raises(ConfigError, match="fault rate 2"):
        FaultPlan(rate=2)


# ------------------------------------------------------------------ the proxy over a loopback echo
class Echo:
    """A TCP server on a free port that sends back what it receives, one connection at a time."""

    def __init__(self, port: int = 0):
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.connections: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    @staticmethod
    def _echo(conn):
        with conn:
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                conn.sendall(data)

    def close(self):
        try:
            self.server.shutdown(socket.SHUT_RDWR)              # wakes the accept() (Linux)
        except OSError:
            pass
        self.server.close()
        for conn in self.connections:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()


@pytest.fixture
def echo():
    server = Echo()
    yield server
    server.close()


def _exchange(port: int, data: bytes, quiet: float = 0.15, limit: float = 5.0) -> tuple[bytes, bool]:
    """Send data through 127.0.0.1:port; (what comes back until `quiet` s pass without a
    byte, whether the connection was closed)."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(data)
        s.settimeout(quiet)
        got, start = bytearray(), time.monotonic()
        while time.monotonic() - start < limit:
            try:
                piece = s.recv(65536)
            except socket.timeout:
                return bytes(got), False
            except ConnectionResetError:
                return bytes(got), True
            if not piece:
                return bytes(got), True
            got += piece
    raise AssertionError("the echo never went quiet")


def test_without_faults_the_proxy_forwards_every_byte_both_ways(echo):
    rng = random.Random(3)
    data = b"".join(p.build_frame(p.MESSAGES["PUT_MODEL"], k, m.put_model(bytes(32), 9000, 0, rng.randbytes(4096)))
                    for k in range(3)) + b"no delimiter at the end"
    with FaultProxy(("127.0.0.1", echo.port), FaultPlan(rate=0.0)) as proxy:
        got, closed = _exchange(proxy.port, data)
        assert got == data and not closed
        assert proxy.total == 0 and proxy.frames["PUT_MODEL"] == 3 and proxy.connections == 1


@pytest.mark.parametrize("kind", LINE_KINDS)
def test_each_fault_kind_through_the_proxy_on_a_loopback_echo(echo, kind):
    unit = p.build_frame(p.MESSAGES["HELLO"], 7, m.hello(12345))
    plan = FaultPlan(seed=11, rate=1.0, weights={kind: 1.0}, directions=(UP,))
    with FaultProxy(("127.0.0.1", echo.port), plan) as proxy:
        got, closed = _exchange(proxy.port, unit)
        assert CHECKS[kind](unit, got), (unit.hex(), got.hex())
        assert closed == (kind == "cut")
        assert proxy.counts == {kind: 1} and proxy.by_direction[UP] == {kind: 1} and not proxy.by_direction[DOWN]
        assert proxy.frames["HELLO"] == 1                      # judged before the fault


def test_a_reorder_can_hold_a_frame_back_behind_the_next_ones(echo):
    frames = [p.build_frame(p.MESSAGES["PUT_MODEL"], k, m.put_model(bytes(32), 100, k, bytes([k + 1]) * 10))
              for k in range(6)]
    plan = FaultPlan(seed=3, rate=0.0, hold_share=1.0)
    plan.script(UP, ["reorder"])
    behind = FaultPlan(seed=3, hold_share=1.0).hold(UP)           # the same seeded draw: 1 to 3
    with FaultProxy(("127.0.0.1", echo.port), plan) as proxy:
        got, _ = _exchange(proxy.port, b"".join(frames))
        assert proxy.counts == {"reorder": 1}
    assert 1 <= behind <= 3
    assert got == b"".join(frames[1:behind + 1] + [frames[0]] + frames[behind + 1:])


def test_faults_on_the_way_back_are_counted_there(echo):
    unit = p.build_frame(p.MESSAGES["STATS"], 1, m.stats())
    plan = FaultPlan(seed=2, rate=1.0, weights={"flip": 1.0}, directions=(DOWN,))
    with FaultProxy(("127.0.0.1", echo.port), plan) as proxy:
        got, _ = _exchange(proxy.port, unit)
        assert CHECKS["flip"](unit, got) and proxy.by_direction[DOWN] == {"flip": 1}
        with pytest.raises(p.FrameError):
            p.decode_frame(got)


def test_a_board_fault_fires_once_after_the_nth_frame_of_its_message(echo):
    fired = []
    with FaultProxy(("127.0.0.1", echo.port)) as proxy:
        trigger = proxy.arm(lambda: fired.append(time.monotonic()), "COMMIT", nth=2, delay=0.05)
        frames = [p.build_frame(p.MESSAGES[name], k, b"") for k, name in
                  enumerate(["HELLO", "COMMIT", "PUT_MODEL", "COMMIT", "COMMIT"])]
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as s:
            s.sendall(frames[0] + frames[1] + frames[2])
            time.sleep(0.2)
            assert not trigger.fired.is_set()
            sent = time.monotonic()
            s.sendall(frames[3])
            assert trigger.done.wait(5) and trigger.error is None
            s.sendall(frames[4])
            time.sleep(0.2)
        assert len(fired) == 1 and fired[0] - sent >= 0.05
        assert proxy.frames == {"HELLO": 1, "COMMIT": 3, "PUT_MODEL": 1}
        with pytest.raises(ConfigError, match="message 'BOOT'"):
            proxy.arm(lambda: None, "BOOT")


def test_a_lost_board_ends_the_connection_unless_the_proxy_waits_for_it():
    first = Echo()
    port = first.port
    with FaultProxy(("127.0.0.1", port)) as proxy:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as s:
            s.sendall(b"one\x00")
            assert s.recv(100) == b"one\x00"
            first.close()                                        # the board dies
            s.settimeout(2)
            assert s.recv(100) == b""                            # and the host's line with it
        proxy.reconnect = True
        second = Echo(port)
        try:
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=2) as s:
                s.sendall(b"two\x00")
                assert s.recv(100) == b"two\x00"
                second.close()                                   # a reset: the board restarts...
                time.sleep(0.2)
                third = Echo(port)                               # ...on the same port
                try:
                    deadline = time.monotonic() + 5
                    s.settimeout(0.2)
                    while True:                                  # bytes sent while it was down are lost
                        s.sendall(b"three\x00")
                        try:
                            if s.recv(100).endswith(b"three\x00"):
                                break
                        except socket.timeout:
                            pass
                        assert time.monotonic() < deadline
                finally:
                    third.close()
        finally:
            second.close()


# ------------------------------------------------------------------ campaigns against edge-lls serve
def _campaign(*args, timeout=600):
    """The campaign as a command, in its own process group: on a timeout the group (the
    campaign and its `edge-lls serve`) gets SIGKILL."""
    proc = subprocess.Popen([sys.executable, str(CAMPAIGN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _assert_clean(result, faults):
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["verdict"] == "PASS" and report["violations"] == []
    assert report["faults_total"] >= faults
    counts = report["faults"]
    assert all(counts.get(kind, 0) > 0 for kind in ("drop", "flip", "duplicate", "reorder", "truncate"))
    assert counts.get("kill", 0) + counts.get("reset", 0) > 0
    transfers = report["transfers"]
    assert transfers["completed"] > 0 and report["infers"]["ok"] > 0
    assert sum(report["errors"].values()) == transfers["failed"]
    assert "Traceback" not in result.stderr
    return report


def test_a_short_campaign_against_serve_finds_no_violation():
    start = time.monotonic()
    report = _assert_clean(_campaign("--faults", "100", "--seed", "5", "--json", timeout=300), 100)
    assert report["target"] == "serve" and report["target_starts"] >= 2
    assert time.monotonic() - start < 120


@pytest.mark.long
def test_a_thousand_faults_against_serve_find_no_violation():
    report = _assert_clean(_campaign("--faults", "1000", "--seed", "1", "--json", timeout=1800), 1000)
    assert report["faults"].get("cut", 0) > 0 and report["transfers"]["resumed"] > 0
    assert report["board_faults"].get("kill-commit", 0) > 0 and report["board_faults"].get("reset-transfer", 0) > 0


@pytest.mark.long
@pytest.mark.parametrize("target", ["qemu-m4", "qemu-m7"])
def test_a_campaign_against_the_firmware_under_qemu_finds_no_violation(target):
    """The bridge firmware (make SESSION=1) on QEMU: 50 faults, ~1 min each board."""
    require_tools("qemu-system-arm", "arm-none-eabi-gcc", "make")
    from firmware_bridge.emulator import board_name, build
    build(board_name({"qemu-m4": "cortex-m4", "qemu-m7": "cortex-m7"}[target]))
    report = _assert_clean(_campaign("--target", target, "--faults", "50", "--seed", "1", "--timeout", "0.5",
                                     "--slow-timeout", "3", "--json", timeout=900), 50)
    assert report["target"] == target


@pytest.mark.parametrize("args,words", [
    (["--faults", "0"], "--faults must be at least 1, got 0"),
    (["--rate", "1.5"], "--rate must be in (0, 1], got 1.5"),
    (["--chunk", "5000"], "--chunk must be 1 to 4096 bytes, got 5000"),
    (["--state", __file__], "not a folder"),
    (["--target", "pdp11"], "invalid choice: 'pdp11'"),
])
def test_bad_options_exit_2_with_one_line(args, words):
    result = _campaign(*args, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and result.stdout == ""
    assert words in lines[-1] and "Traceback" not in result.stderr
    assert len([line for line in lines if "error" in line]) == 1

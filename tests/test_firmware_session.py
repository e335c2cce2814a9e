"""The bridge firmware (make SESSION=1: main.c's EL_SESSION part, src/bridge/) on QEMU's boards,
driven by the host's Board exactly as the agent is (firmware_bridge/emulator.py starts QEMU with
UART0 on a local TCP port and the flash HAL backed by a file).

Held to, on both boards: HELLO describes the board; a small int8 model deploys into slot 0,
INFERs 20 inputs byte for byte as the Python runtime (TFLM rounding); TRAIN (images, then
features at the cut the host computed) learns exactly the weights edge_lls.board_train's twin
learns, GET_WEIGHTS returns them and INFER runs them; RESET and a SIGKILL of QEMU both come back
with the committed model from the flash file; a deploy killed mid-transfer resumes at the last
complete flash sector and never leaves a half model active; a second model goes to slot 1 with
the next sequence; the flash states a kill leaves (a record in TRIAL, a torn record, an image
that no longer matches its record) boot a valid model by the rules of el_slots.h. The slot records and the transfer record
have the agent's byte layout (one Python layout, one C header), and el_sha256 equals hashlib
under ASan and UBSan for every split of the input. VWW (../shared): the M7 and the M4 take the
fine-tuning image, classify the two samples as the runtime does and train as the twin.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from c_layouts import compile_host, printed_layouts
from conftest import C_SANITIZE, FIRMWARE, MNIST_DIR, SAMPLES_DIR, VWW_DIR, require_tools
from edge_lls.board_train import BoardTrainer
from edge_lls.formats import blob
from firmware_bridge import messages as m
from firmware_bridge.agent import RECORD, RECORD_STATES, TRANSFER, ImageRunner, Record
from firmware_bridge.board import Board, patched_image
from firmware_bridge.emulator import Emulator, build
from firmware_bridge.protocol import build_frame
# the small model, its two images, the TFLM-mode graph, inputs and the twin's features: the agent's tests'
from test_bridge_agent import graph, image, inputs, other_image, program, twin_features  # noqa: F401

QEMU_TOOLS = ("arm-none-eabi-gcc", "qemu-system-arm", "make")
BOARDS = ("mps2-an386", "mps2-an500")
LR, CLASSIFIER_LR = 0.2, 0.1
SECTOR = 4096


class HostSession:
    """tests/session_host.c (the session, the slots and the flash HAL built for the host with
    ASan and UBSan) behind a local TCP port, started, killed and stopped as an Emulator is."""

    board = "host-session"

    def __init__(self, program: Path, flash: Path):
        self.program, self.flash = program, flash
        self.process, self.server = None, None

    @property
    def port(self) -> str:
        return f"socket://127.0.0.1:{self.server.getsockname()[1]}"

    def start(self) -> "HostSession":
        import socket
        import threading
        self.process = subprocess.Popen([str(self.program), str(self.flash)], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
        if self.server is None:
            self.server = socket.create_server(("127.0.0.1", 0))
        process, server, clients = self.process, self.server, []

        def back():                                          # the board's answers to the client
            while (data := os.read(process.stdout.fileno(), 65536)):
                if clients:
                    try:
                        clients[-1].sendall(data)
                    except OSError:
                        pass
            for conn in clients:
                conn.close()

        def serve():                                         # one client at a time, as a UART
            while True:
                try:
                    conn, _ = server.accept()
                except OSError:
                    return
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                clients.append(conn)
                try:
                    while (data := conn.recv(65536)):
                        process.stdin.write(data)
                except (OSError, ValueError):
                    pass
        threading.Thread(target=back, daemon=True).start()
        threading.Thread(target=serve, daemon=True).start()
        return self

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.server.close()
        self.server = None

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            assert self.process.wait(10) == 0, self.process.stderr.read().decode()   # no sanitizer report
        if self.server is not None:
            self.server.close()


@pytest.fixture(scope="module")
def session_host(gcc, tmp_path_factory):
    out = tmp_path_factory.mktemp("session") / "session_host"
    src = FIRMWARE / "src"
    sources = [src / "el_model.c", src / "el_crc32.c", src / "el_runner.c", src / "el_protocol.c",
               *sorted((src / "kernels").glob("el_*.c")), *sorted((src / "lls").glob("*.c")),
               *sorted((src / "bridge").glob("*.c"))]
    return compile_host(gcc, out, Path(__file__).with_name("session_host.c"), *sources,
                        flags=(*C_SANITIZE, "-ffp-contract=off", "-fno-math-errno", '-DEL_FW_VERSION="host"', "-lm"),
                        includes=(FIRMWARE / "boards",))


@pytest.fixture(scope="module", params=("host", *BOARDS))
def elf(request):
    if request.param == "host":
        return "host", request.getfixturevalue("session_host")
    require_tools(*QEMU_TOOLS)
    return request.param, build(request.param)


@pytest.fixture
def emulator(elf, tmp_path):
    board, path = elf
    if board == "host":
        emu = HostSession(path, tmp_path / "flash.bin")
    else:
        emu = Emulator(board, tmp_path / "flash.bin", elf=path, log=open(tmp_path / "qemu.log", "w"))
    yield emu.start()
    emu.stop()


def equal_weights(a, b) -> bool:
    return sorted(a) == sorted(b) and all(np.array_equal(a[op][0], b[op][0]) and np.array_equal(a[op][1], b[op][1])
                                          for op in a)


# ------------------------------------------------------------------ layouts and the hash, on the host
def test_the_slot_records_have_the_agents_layout(gcc, tmp_path):
    numbers = [("EL_RECORD_VERSION", 1), ("EL_RECORD_PENDING", RECORD_STATES["PENDING"]),
               ("EL_RECORD_TRIAL", RECORD_STATES["TRIAL"]), ("EL_RECORD_CONFIRMED", RECORD_STATES["CONFIRMED"]),
               ("EL_RECORD_REVERTED", RECORD_STATES["REVERTED"]), ("EL_RECORD_BYTES", RECORD.size)]
    printed, expected = printed_layouts(gcc, tmp_path, "el_slots.h", [RECORD, TRANSFER], numbers)
    assert printed == expected


def test_sha256_equals_hashlib_for_every_split_under_asan(gcc, tmp_path):
    tool = compile_host(gcc, tmp_path / "sha256", Path(__file__).with_name("sha256_harness.c"),
                        FIRMWARE / "src" / "bridge" / "el_sha256.c", flags=C_SANITIZE)
    rng = np.random.default_rng(7)
    cases = [(b"", ()), (b"abc", ()), (bytes(55), ()), (bytes(56), ()), (bytes(64), ()), (bytes(119), ("1",))]
    cases += [(rng.integers(0, 256, n, dtype=np.uint8).tobytes(), splits)
              for n, splits in ((1000, ("1", "63", "64", "65")), (4097, ("4096",)), (300_001, ("7", "4093")),
                                (1 << 20, ()))]
    for data, splits in cases:
        out = subprocess.run([str(tool), *splits], input=data, capture_output=True, check=True).stdout.decode()
        assert out.strip() == hashlib.sha256(data).hexdigest(), (len(data), splits)


# ------------------------------------------------------------------ the session on QEMU
def test_hello_describes_the_board_and_its_empty_slots(emulator):
    with Board.open(emulator.port) as board:
        info = board.info
    assert info["board"] == emulator.board and info["device"] in ("cortex-m4", "cortex-m7", "host")
    assert info["firmware"].startswith("edge-lls ") and info["tick_hz"] in (25_000_000, 1_000_000)
    assert info["slot"] is None and info["trial"] == "none" and info["sha256"] is None
    assert info["ram_bytes"] in (256 << 10, 1 << 20, 2 << 20) and info["arena_bytes"] < info["ram_bytes"]


def test_deploy_infer_train_and_pull_equal_the_runtime_and_the_twin(emulator, program, image, graph):
    xs, labels = inputs(20), [3, 1, 4, 1, 5, 9, 2]
    twin = BoardTrainer(image, lr=LR, classifier_lr=CLASSIFIER_LR, seed=42)
    steps = [twin.step(f, y) for f, y in zip(twin_features(program, graph, image, xs[:7]), labels)]
    with Board.open(emulator.port) as board:
        result = board.deploy(image)
        assert (result["slot"], result["sequence"], result["trial"]) == (0, 1, "confirmed")
        assert board.info["input_bytes"] == 300 and board.info["classes"] == 10
        for x in xs:                                                 # 20 inputs, every byte
            assert board.infer(x)["output"].tobytes() == graph.run([x])[0].tobytes()
        first = board.train(xs[:3], labels[:3], lr=LR, classifier_lr=CLASSIFIER_LR, seed=42)
        rest = board.train(xs[3:7], labels[3:], lr=LR, classifier_lr=CLASSIFIER_LR, seed=42)
        weights = board.get_weights()
        after = [board.infer(x)["output"].tobytes() for x in xs[:7]]
        stats = board.stats()
    for got, want in zip(first["results"] + rest["results"], steps):
        assert got["loss"] == np.float32(want.loss) and got["predicted"] == want.predicted
    assert equal_weights(weights, twin.weights())
    runner = ImageRunner(patched_image(image, weights))               # INFER runs the learned weights
    assert after == [runner.infer(x.tobytes()) for x in xs[:7]]
    assert stats["samples_seen"] == 7 and stats["inferences"] == 27 and stats["train_buffer_bytes"] > 0
    if emulator.board != "host-session":                               # (the host has no painted stack)
        assert 0 < stats["stack_high_water"] < stats["stack_bytes"] and stats["infer_ticks"] > 0


def test_features_at_the_cut_train_as_images_do(emulator, program, image, graph):
    xs, labels = inputs(5, seed=5), [0, 2, 4, 6, 8]
    features = twin_features(program, graph, image, xs)
    with Board.open(emulator.port) as board:
        board.deploy(image)
        board.train(xs, labels, "images", lr=LR, classifier_lr=CLASSIFIER_LR, seed=9)
        from_images = board.get_weights()
        assert board.info["cut_bytes"] == features[0].size
        board.train(features, labels, "features", lr=LR, classifier_lr=CLASSIFIER_LR, seed=9, restart=True)
        assert equal_weights(board.get_weights(), from_images)


def test_reset_and_a_kill_come_back_with_the_committed_model(emulator, image, other_image, graph):
    x = inputs(1)[0]
    with Board.open(emulator.port) as board:
        board.deploy(other_image)
        second = board.deploy(image)
        assert (second["slot"], second["sequence"]) == (1, 2)
        board.train([x], [3], lr=LR, classifier_lr=CLASSIFIER_LR)
        board.reset()
        info = board.hello()
        assert info["sha256"] == second["sha256"] and info["samples_seen"] == 0 and info["trial"] == "confirmed"
    emulator.kill()                                                   # a power loss
    emulator.start()
    with Board.open(emulator.port) as board:
        assert board.info["sha256"] == second["sha256"] and board.info["sequence"] == 2
        assert board.infer(x)["output"].tobytes() == graph.run([x])[0].tobytes()


class Cut(Exception):
    pass


def _cut_at(done, total):
    if done == total:
        raise Cut


@pytest.mark.parametrize("chunks,resumes_at", [(5, 0), (8, SECTOR)])
def test_a_deploy_killed_mid_transfer_resumes_at_the_last_complete_sector(emulator, image, other_image, chunks,
                                                                         resumes_at):
    with Board.open(emulator.port) as board:
        old = board.deploy(other_image)["sha256"]
        sent = []

        def progress(done, total):
            sent.append(done)
            if len(sent) == chunks:
                raise Cut
        with pytest.raises(Cut):
            board.deploy(image, progress=progress, chunk=512)
    emulator.kill()
    emulator.start()
    with Board.open(emulator.port) as board:
        assert board.info["sha256"] == old                            # the old model, never half a new one
        result = board.deploy(image, chunk=512)
    assert result["resumed_from"] == resumes_at and result["sent_bytes"] == len(image) - resumes_at
    assert (result["slot"], result["sequence"], result["trial"]) == (1, 2, "confirmed")


def _meta(flash: bytes, slot: int) -> int:
    """The offset of a slot's meta sector in the flash file (el_slots.h's geometry)."""
    slot_bytes = (len(flash) // SECTOR - 2) // 2 * SECTOR
    return 2 * slot_bytes + slot * SECTOR


def _append_record(path: Path, record: Record | bytes) -> None:
    """A record appended to its slot's meta sector, as el_slots.c appends one."""
    flash = bytearray(path.read_bytes())
    data = record.pack() if isinstance(record, Record) else record
    slot = record.slot if isinstance(record, Record) else 1
    at = _meta(flash, slot) + 1024
    while flash[at:at + 64] != b"\xff" * 64:
        at += 64
    flash[at:at + len(data)] = data
    path.write_bytes(bytes(flash))


@pytest.mark.parametrize("damage", ["trial", "torn-trial", "image", "pending-bad-image"])
def test_the_boot_rules_on_the_flash_a_kill_would_leave(emulator, image, other_image, graph, damage):
    """The states a kill leaves in the flash, written into the file while QEMU is down:
    a record in TRIAL (the self-check never finished) reverts and the older slot boots; a torn
    record is ignored (the one before stands); a slot whose image no longer matches its latest
    record is skipped."""
    x = inputs(1)[0]
    with Board.open(emulator.port) as board:
        old = board.deploy(other_image)
        new = board.deploy(image)
    emulator.kill()
    path = emulator.flash
    latest = Record(RECORD_STATES["CONFIRMED"], 2, 1, len(image), bytes.fromhex(new["sha256"]))
    expect, trial = new["sha256"], "confirmed"
    if damage == "trial":
        latest.state = RECORD_STATES["TRIAL"]
        _append_record(path, latest)
        expect, trial = old["sha256"], "reverted"
    elif damage == "torn-trial":
        latest.state = RECORD_STATES["TRIAL"]
        _append_record(path, latest.pack()[:40])                        # the write stopped half way
    elif damage == "image":
        flash = bytearray(path.read_bytes())
        flash[(len(flash) // SECTOR - 2) // 2 * SECTOR + 100] ^= 0x01   # slot 1's image, byte 100
        path.write_bytes(bytes(flash))
        expect = old["sha256"]
    else:                              # the slot's latest record names other bytes: the slot is skipped
        latest.state, latest.sequence, latest.sha256 = RECORD_STATES["PENDING"], 3, bytes(32)
        _append_record(path, latest)
        expect = old["sha256"]
    emulator.start()
    with Board.open(emulator.port) as board:
        assert (board.info["sha256"], board.info["trial"]) == (expect, trial)
        assert board.infer(x)["output"].tobytes() == graph.run([x])[0].tobytes()
        board.reset()                                                   # and the next boot agrees
        assert board.hello()["sha256"] == expect


FUZZ_REQUESTS = 5_000


def test_the_session_survives_5000_mutated_requests_under_asan(session_host, tmp_path, image):
    """Requests of every type, valid and then damaged field by field (each with a good CRC, so
    the session, not the frame layer, judges them), interleaved with real transfers: the
    session never crashes or reads out of bounds (ASan, UBSan: the process would die with a
    report), answers every frame, and afterwards still deploys and runs a model."""
    import socket
    rng = np.random.default_rng(2026)
    digest = hashlib.sha256(image).digest()
    t = m.TYPES
    valid = [(t["HELLO"], m.hello(7)), (t["PUT_MODEL"], m.put_model(digest, len(image), 0, image[:4096])),
             (t["PUT_MODEL"], m.put_model(digest, len(image), 4096, image[4096:])),
             (t["COMMIT"], m.commit(digest, len(image))), (t["INFER"], m.infer(300, 0, bytes(300))),
             (t["INFER"], m.infer(300, 100, bytes(150))), (t["GET_WEIGHTS"], m.get_weights(0, 0)),
             (t["GET_WEIGHTS"], m.get_weights(4, 100, 50)),
             (t["TRAIN"], m.train("images", [3, 1], 300, 0, bytes(450), batch=1, lr=0.1, classifier_lr=0.1)),
             (t["TRAIN"], m.train("images", [3, 1], 300, 450, bytes(150), batch=1, lr=0.1, classifier_lr=0.1)),
             (t["TRAIN"], m.train("features", [2], 800, 0, bytes(800), batch=2, lr=0.1, classifier_lr=0.1, cut=2)),
             (t["STATS"], m.stats()), (t["RESET"], m.reset())]
    host = HostSession(session_host, tmp_path / "flash.bin").start()
    try:
        with Board.open(host.port) as board:
            board.deploy(image)                           # a model, so INFER / TRAIN reach their handlers
            sock = board.link.port
            answered = sent = 0
            for k in range(FUZZ_REQUESTS):
                msg_type, payload = valid[int(rng.integers(0, len(valid)))]
                payload, kind = bytearray(payload), int(rng.integers(0, 3))
                if kind == 1:                             # damaged: bytes overwritten
                    for _ in range(int(rng.integers(1, 4))):
                        payload[int(rng.integers(0, len(payload)))] = int(rng.integers(0, 256))
                elif kind == 2:                           # cut short or grown
                    payload = payload[:int(rng.integers(0, len(payload) + 1))] + rng.bytes(int(rng.integers(0, 8)))
                if rng.random() < 0.05:
                    msg_type = int(rng.integers(0, 256))  # any type at all
                if msg_type == t["RESET"] and rng.random() < 0.9:
                    continue                              # (a restart re-reads the flash: rarely)
                sock.write(build_frame(msg_type, (k + 100) & 0xFFFF, bytes(payload)))
                sent += msg_type not in (0x80, 0x81)              # an ACK or a NAK gets no answer
                while answered < sent - 8 or (sock.in_waiting and answered < sent):
                    answered += sock.read(65536).count(0)   # one 0x00 ends each answer
            deadline = time.monotonic() + 30
            while answered < sent and time.monotonic() < deadline:
                answered += sock.read(65536).count(0)
            assert answered == sent and host.process.poll() is None, host.process.stderr.read().decode()
        with Board.open(host.port) as board:              # a new session on the same board
            assert board.deploy(image, force=True)["trial"] == "confirmed"
            x = inputs(1)[0]
            assert board.infer(x)["output"].size == 10
    finally:
        host.stop()


# ------------------------------------------------------------------ VWW
@pytest.mark.long
@pytest.mark.shared(VWW_DIR, SAMPLES_DIR)
def test_vww_deploys_classifies_the_samples_and_trains_as_the_twin(emulator):
    from test_bridge_agent import check_vww_on
    check_vww_on(emulator.port, 2 if emulator.board == "mps2-an500" else 1)


# ------------------------------------------------------------------ make emulator
def test_the_emulator_command_prints_the_port_serves_it_and_stops_on_sigterm(tmp_path, image):
    require_tools(*QEMU_TOOLS)
    import signal
    import sys
    cmd = [sys.executable, "-m", "firmware_bridge.emulator", "--board", "cortex-m4", "--flash", str(tmp_path / "f")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        port = None
        for _ in range(20):
            line = proc.stdout.readline()
            if "--port" in line:
                port = line.split()[-1]
                break
        assert port is not None and port.startswith("socket://127.0.0.1:")
        with Board.open(port) as board:
            assert board.info["board"] == "mps2-an386" and board.deploy(image)["trial"] == "confirmed"
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert (tmp_path / "f").stat().st_size > 4096                        # the flash file stays


def test_the_emulator_refuses_an_unknown_board_with_one_line():
    import sys
    result = subprocess.run([sys.executable, "-m", "firmware_bridge.emulator", "--board", "stm32"],
                            capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--board stm32" in result.stderr


@pytest.mark.long
@pytest.mark.shared(VWW_DIR, MNIST_DIR)
def test_vww_fine_tunes_on_the_m7_from_an_image_folder_to_the_twins_model_and_accuracy(tmp_path, capsys):
    """`edge-lls deploy` + `edge-lls train --device cortex-m7 --port` on an image folder (MNIST
    digits 0-4 / 5-9 at 96x96, the stand-in for a user's VWW folder), once against the firmware
    on QEMU's M7 and once against `edge-lls serve`'s agent, whose TRAIN is the Python twin: the
    same fine-tuned model, byte for byte, and so the same held-out accuracy."""
    import json
    import sys
    require_tools(*QEMU_TOOLS)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from bench_board_accuracy import write_folder
    from firmware_bridge.agent import Agent
    from test_bridge_agent import Server
    from test_cli import run_main
    write_folder(tmp_path / "digits", 48, 24)
    vww = VWW_DIR / "vww_96_int8.tflite"
    common = ["--model", vww, "--train-last", "1", "--dataset", "folder", "--data", tmp_path / "digits",
              "--epochs", "1", "--batch-size", "16", "--features", "--seed", "3", "--json"]
    results = {}
    emu = Emulator("mps2-an500", tmp_path / "flash.bin", elf=build("mps2-an500")).start()
    agent = Server(Agent(tmp_path / "agent"))
    try:
        for name, port in (("m7", emu.port), ("twin", agent.url)):
            code, _, err = run_main(capsys, "deploy", vww, "--port", port, "--train-last", "1")
            assert code == 0, err
            code, out, err = run_main(capsys, "train", "--device", "cortex-m7", "--port", port, *common,
                                      "--out", tmp_path / name)
            assert code == 0, err
            results[name] = json.loads(out.strip().splitlines()[-1])
    finally:
        emu.stop()
        agent.close()
    assert (tmp_path / "m7" / "model.bin").read_bytes() == (tmp_path / "twin" / "model.bin").read_bytes()
    m7, twin = (json.dumps(results[k], sort_keys=True) for k in ("m7", "twin"))
    for key in ("eval_accuracy", "pretrained_accuracy", "train_loss", "train_accuracy"):
        assert results["m7"][key] is not None and results["m7"][key] == results["twin"][key], (key, m7, twin)

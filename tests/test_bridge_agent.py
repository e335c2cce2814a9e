"""The bridge end to end, host and Linux-board agent: firmware_bridge/board.py (Board) driving
firmware_bridge/agent.py (`edge-lls serve`) over TCP on 127.0.0.1, over a serial device (a
pty), and in process (AgentPort).

Held to: HELLO describes the agent and its model; a deployed small int8 model (and VWW from
../shared) INFERs byte for byte as the Python runtime in TFLM rounding; TRAIN (images, and
features at the cut computed by the host) learns exactly the weights edge_lls.board_train's
twin learns on the same samples, and GET_WEIGHTS returns them; a deploy interrupted mid-
transfer resumes from the offset the board names and never leaves a half model active; a
chunk at the wrong offset is answered with the expected offset and writes nothing; the state
directory after a kill at each point of a transfer and a commit (in process, and a real
SIGKILL of `edge-lls serve`) boots a valid model, the previous one until the new one's commit
record is complete; duplicated frames run once; damaged and dropped bytes are retried
through; bad requests get one clear error; the CLI (deploy, board info|stats|pull|infer,
serve) with --json, the pulled .tflite giving the board's outputs, and bad inputs exiting 2
with one line.
"""
from __future__ import annotations

import json
import os
import random
import select
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLES_DIR, VWW_DIR
from edge_lls.board_train import BoardTrainer
from edge_lls.finetune import trainable_tail
from edge_lls.formats import blob
from edge_lls.program.interpreter import prepare
from firmware_bridge import messages as m
from firmware_bridge import protocol as p
from firmware_bridge.agent import (RECORD_STATES, Agent, AgentPort, Crash, ImageRunner, SlotStore, serve_serial,
                                   serve_tcp)
from firmware_bridge.board import Board, fine_tuned_program, patched_image
from test_cli import assert_one_line_error, run_main
from test_firmware_train import _small_program

SCRIPT = Path(sys.executable).with_name("edge-lls")
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "edge_lls.cli"]
LR, CLASSIFIER_LR = 0.2, 0.1


# ------------------------------------------------------------------ models and servers
@pytest.fixture(scope="module")
def program():
    return _small_program()


@pytest.fixture(scope="module")
def image(program):
    """The small int8 model with its last 2 blocks trainable (10 classes, input 10x10x3)."""
    return blob.build_image(program, trainable_tail(program, 2)).data


@pytest.fixture(scope="module")
def other_image(program):
    """The same model, last block trainable: another SHA-256, the 'previous model'."""
    return blob.build_image(program, trainable_tail(program, 1)).data


@pytest.fixture(scope="module")
def graph(program):
    return prepare(program, batch=1, fast=False, requantize="tflm")


def inputs(count, seed=3):
    rng = np.random.default_rng(seed)
    return [rng.integers(-128, 128, (1, 10, 10, 3)).astype(np.int8) for _ in range(count)]


class Server:
    """serve_tcp(agent) in a thread on a free 127.0.0.1 port."""

    def __init__(self, agent):
        self.agent, self.stop, self.port = agent, threading.Event(), None
        ready = threading.Event()

        def bound(port):
            self.port = port
            ready.set()
        self.thread = threading.Thread(target=serve_tcp, args=(agent, "127.0.0.1", 0),
                                       kwargs={"ready": bound, "stop": self.stop}, daemon=True)
        self.thread.start()
        assert ready.wait(10)
        self.url = f"socket://127.0.0.1:{self.port}"

    def close(self):
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def server(tmp_path):
    s = Server(Agent(tmp_path / "state"))
    yield s
    s.close()


def local_board(agent, **options) -> Board:
    board = Board(AgentPort(agent), name="agent", **options)
    board.hello()
    return board


def twin_features(program, graph, image, xs):
    cut = program.operators[blob.open_image(image)["tail"]["blocks"][0]["first_op"]].inputs[0]
    return [graph.run_all([x])[cut] for x in xs]


# ------------------------------------------------------------------ HELLO, deploy, INFER, TRAIN over TCP
def test_hello_over_tcp_describes_the_agent_and_that_it_has_no_model(server):
    with Board.open(server.url) as board:
        info = board.info
    assert info["version"] == m.VERSION and info["frame_version"] == p.VERSION
    assert info["board"].startswith("agent@") and info["firmware"].startswith("edge-lls ")
    assert info["max_payload"] == p.MAX_PAYLOAD and info["tick_hz"] == 1_000_000_000
    assert set(info["ops"]) == set(blob.OPCODES) and info["ram_bytes"] > 1 << 20
    assert info["slot"] is None and info["sha256"] is None and info["trial"] == "none"


def test_deploy_then_infer_equals_the_python_runtime_byte_for_byte(server, program, image, graph):
    with Board.open(server.url) as board:
        done = []
        result = board.deploy(image, progress=lambda d, t: done.append((d, t)))
        assert result["sha256"] == board.info["sha256"] and result["trial"] == "confirmed"
        assert (result["slot"], result["sequence"], result["resumed_from"], result["unchanged"]) == (0, 1, 0, False)
        assert done[-1] == (len(image), len(image)) and result["sent_bytes"] == len(image)
        assert board.info["input_bytes"] == 300 and board.info["output_bytes"] == 10 and board.info["classes"] == 10
        for x in inputs(20):
            answer = board.infer(x)
            assert answer["output"].tobytes() == graph.run([x])[0].tobytes()
            assert answer["ticks"] > 0 and answer["instructions"] == 0
        again = board.deploy(image)
        assert again["unchanged"] and again["chunks"] == 0
        stats = board.stats()
    assert stats["inferences"] == 20 and stats["arena_bytes"] == blob.open_image(image)["header"]["arena_bytes"]
    assert stats["train_buffer_bytes"] > 0 and stats["infer_ticks"] > 0


def test_train_then_get_weights_equal_the_board_twin_and_inference_uses_them(server, program, image, graph):
    xs, labels = inputs(7, seed=11), [3, 1, 4, 1, 5, 9, 2]
    twin = BoardTrainer(image, lr=LR, classifier_lr=CLASSIFIER_LR, seed=42)
    before = twin.weights()
    steps = [twin.step(f, y) for f, y in zip(twin_features(program, graph, image, xs), labels)]
    with Board.open(server.url) as board:
        board.deploy(image)
        first = board.train(xs[:3], labels[:3], lr=LR, classifier_lr=CLASSIFIER_LR, seed=42)
        rest = board.train(xs[3:], labels[3:], lr=LR, classifier_lr=CLASSIFIER_LR, seed=42)
        weights = board.get_weights()
        assert board.hello()["samples_seen"] == 7
        after = [board.infer(x)["output"] for x in xs]
    results = first["results"] + rest["results"]
    assert rest["samples_seen"] == 7 and len(results) == 7
    for got, want in zip(results, steps):
        assert got["loss"] == np.float32(want.loss) and got["predicted"] == want.predicted
        assert got["block_loss"][:2] == [np.float32(v) for v in want.block_loss] and got["block_loss"][2:] == [0, 0]
    twin_weights = twin.weights()
    assert sorted(weights) == sorted(twin_weights) == [1, 2, 3, 4, 6]
    moved = 0
    for op, (w, b) in twin_weights.items():
        assert np.array_equal(weights[op][0], w) and np.array_equal(weights[op][1], b), op
        moved += int(np.count_nonzero(w != before[op][0]))
    assert moved > 10
    # inference after training runs the learned weights: the fine-tuned .tflite in the Python runtime
    tuned = prepare(fine_tuned_program(program, image, weights), batch=1, fast=False, requantize="tflm")
    assert [o.tobytes() for o in after] == [tuned.run([x])[0].tobytes() for x in xs]
    assert any(a.tobytes() != graph.run([x])[0].tobytes() for a, x in zip(after, xs))
    # and the fine-tuned image, run by the agent's runner, gives the same bytes
    runner = ImageRunner(patched_image(image, weights))
    assert [runner.infer(x.tobytes()) for x in xs] == [o.tobytes() for o in after]


def test_features_at_the_cut_train_exactly_as_images(tmp_path, program, image, graph):
    xs, labels = inputs(5, seed=5), [0, 2, 4, 6, 8]
    board = local_board(Agent(tmp_path / "state"))
    board.deploy(image)
    board.train(xs, labels, "images", lr=LR, classifier_lr=CLASSIFIER_LR, seed=9)
    from_images = board.get_weights()
    features = twin_features(program, graph, image, xs)
    assert board.info["cut_bytes"] == features[0].size
    result = board.train(features, labels, "features", lr=LR, classifier_lr=CLASSIFIER_LR, seed=9, restart=True)
    from_features = board.get_weights()
    assert result["samples_seen"] == 10
    for op in from_images:
        assert np.array_equal(from_images[op][0], from_features[op][0])
        assert np.array_equal(from_images[op][1], from_features[op][1])


def test_batches_longer_than_a_frame_and_than_max_batch_train_in_order(tmp_path, image, program, graph):
    """70 samples: two TRAIN batches (64 + 6), each split over several frames, chunks
    straddling samples; the twin's weights after the 70 steps."""
    xs, labels = inputs(70, seed=8), [k % 10 for k in range(70)]
    board = local_board(Agent(tmp_path / "state"))
    board.deploy(image)
    result = board.train(xs, labels, lr=0.05, classifier_lr=0.02, seed=3)
    twin = BoardTrainer(image, lr=0.05, classifier_lr=0.02, seed=3)
    for f, y in zip(twin_features(program, graph, image, xs), labels):
        twin.step(f, y)
    assert result["samples_seen"] == 70 and len(result["results"]) == 70
    got = board.get_weights()
    assert all(np.array_equal(got[op][0], w) and np.array_equal(got[op][1], b) for op, (w, b) in twin.weights().items())


@pytest.mark.shared(VWW_DIR, SAMPLES_DIR)
def check_vww_on(url: str, train_last: int) -> None:
    """VWW with its last `train_last` blocks trainable, on the board at url: the two samples
    classified as the Python runtime does (person, no person), two TRAIN steps learning the
    twin's weights. Shared with tests/test_firmware_session.py (the firmware on QEMU)."""
    from edge_lls.formats.tflite import read_tflite
    from test_firmware_vww import _bench
    vww = read_tflite(VWW_DIR / "vww_96_int8.tflite")
    data = blob.build_image(vww, trainable_tail(vww, train_last)).data
    graph = prepare(vww, batch=1, fast=False, requantize="tflm")
    samples = [x for _, x in _bench().sample_inputs(vww, SAMPLES_DIR)]
    with Board.open(url) as board:
        result = board.deploy(data)
        assert result["chunks"] == -(-len(data) // m.MAX_CHUNK)
        outputs = [board.infer(x)["output"] for x in samples]
        assert [o.tobytes() for o in outputs] == [graph.run([x])[0].tobytes() for x in samples]
        assert [int(o.argmax()) for o in outputs] == [1, 0]           # person, no person
        board.train(samples, [1, 0], lr=0.2, classifier_lr=0.01, seed=12345)
        weights = board.get_weights()
    twin = BoardTrainer(data, lr=0.2, classifier_lr=0.01, seed=12345)
    for f, y in zip(twin_features(vww, graph, data, samples), [1, 0]):
        twin.step(f, y)
    assert sorted(weights) == sorted(twin.weights())
    assert all(np.array_equal(weights[op][0], w) and np.array_equal(weights[op][1], b)
               for op, (w, b) in twin.weights().items())


def test_vww_deploys_classifies_the_samples_as_the_runtime_and_trains_as_the_twin(server):
    check_vww_on(server.url, 2)


# ------------------------------------------------------------------ interrupted deploys
class Cut(Exception):
    pass


def _cut_after(chunks: int):
    def progress(done, total, seen=[]):
        seen.append(done)
        if len(seen) == chunks:
            raise Cut(done)
    return progress


def test_an_interrupted_deploy_resumes_from_the_boards_offset_and_never_runs_half_a_model(tmp_path, image,
                                                                                         other_image):
    agent = Agent(tmp_path / "state")
    board = local_board(agent)
    board.deploy(other_image)
    previous = board.info["sha256"]
    with pytest.raises(Cut) as cut:
        board.deploy(image, progress=_cut_after(3), chunk=512)
    assert cut.value.args[0] == 3 * 512
    info = local_board(agent).hello()
    assert info["sha256"] == previous and info["trial"] == "confirmed"        # the old model still runs
    assert local_board(agent).infer(inputs(1)[0])["output"].size == 10
    fresh = local_board(agent)                                                  # a new session, a new seq
    result = fresh.deploy(image, chunk=512)
    assert result["resumed_from"] == 3 * 512 and result["sent_bytes"] == len(image) - 3 * 512
    assert fresh.info["sha256"] == result["sha256"] != previous and result["slot"] == 1 and result["sequence"] == 2


def test_a_chunk_at_the_wrong_offset_gets_the_expected_offset_and_writes_nothing(tmp_path, image, other_image):
    agent = Agent(tmp_path / "state")
    board = local_board(agent)
    sha, total = board_sha(image), len(image)
    put = lambda offset, data, digest=sha: board._put(digest, total, offset, data)  # noqa: E731
    assert put(0, image[:1000]) == {"state": 0, "next_offset": 1000, "total_bytes": total, "slot": 0}
    part = tmp_path / "state" / "slot0.part"
    for offset in (0, 999, 1001, 3000):
        assert put(offset, image[offset:offset + 10]) == {"state": 1, "next_offset": 1000, "total_bytes": total,
                                                          "slot": 0}
        assert part.read_bytes() == image[:1000]
    assert put(0, b"")["next_offset"] == 1000                                  # a question, no write
    assert put(1000, image[1000:])["state"] == m.XFER["COMPLETE"]
    assert put(0, b"")["state"] == m.XFER["COMPLETE"]                          # already complete: COMMIT it
    # another transfer starts: the verified image stays until that one completes
    other = board_sha(other_image)
    assert board._put(other, len(other_image), 0, other_image[:100])["next_offset"] == 100
    assert put(0, b"")["state"] == m.XFER["COMPLETE"]
    # bytes whose SHA-256 is not the transfer's are found at the end, and nothing is kept
    board = local_board(Agent(tmp_path / "second"))
    bad = bytearray(image)
    bad[5] ^= 1
    assert board._put(sha, total, 0, bytes(bad[:4000]))["next_offset"] == 4000
    with pytest.raises(m.BoardError, match="SHA-256 does not match"):
        board._put(sha, total, 4000, bytes(bad[4000:]))
    assert board._put(sha, total, 0, b"")["next_offset"] == 0
    with pytest.raises(m.BoardError, match="no complete, verified transfer"):
        board._request("COMMIT", m.commit(sha, total))
    assert board.hello()["slot"] is None and not (tmp_path / "second" / "slot0.bin").exists()
    assert (tmp_path / "second" / "slot0.part").read_bytes() == b""      # the question began it again


def board_sha(data: bytes) -> bytes:
    import hashlib
    return hashlib.sha256(data).digest()


CRASH_POINTS = {                     # where the kill comes -> which model the next start runs
    "chunk": "previous", "verified": "previous", "renamed": "previous", "record-before-rename": "previous",
    "record-written": "new", "trial": "previous", "confirmed": "new",
}


@pytest.mark.parametrize("point", list(CRASH_POINTS))
def test_the_state_directory_after_a_kill_boots_a_valid_model(tmp_path, image, other_image, point):
    state = tmp_path / "state"
    board = local_board(Agent(state))
    board.deploy(other_image)
    previous = board.info["sha256"]

    def crash(at, count=[0]):
        if at == point:
            count[0] += 1
            if point != "chunk" or count[0] == 4:
                raise Crash(at)
    victim = Agent(state, crash=crash)
    with pytest.raises(Crash):
        local_board(victim).deploy(image, chunk=1000)
    restarted = Agent(state)                                          # the next start
    info = local_board(restarted).info
    expected = previous if CRASH_POINTS[point] == "previous" else board_sha(image).hex()
    assert info["sha256"] == expected
    assert info["trial"] == ("reverted" if point == "trial" else "confirmed")
    assert local_board(restarted).infer(inputs(1)[0])["output"].size == 10
    records = {n: SlotStore(state).record(n) for n in (0, 1)}
    assert records[0] is not None and records[0].state == RECORD_STATES["CONFIRMED"]
    if point == "trial":
        assert records[1].state == RECORD_STATES["REVERTED"]
    # deploying again completes (resuming the transfer where the kill left it)
    result = local_board(restarted).deploy(image, chunk=1000)
    assert local_board(restarted).info["sha256"] == board_sha(image).hex()
    if point == "chunk":
        assert result["resumed_from"] == 4000
    if point in ("verified",):
        assert result["resumed_from"] == len(image)       # the .part was complete: verified again, renamed
    assert not list(state.glob("*.tmp"))


def _start_serve(state: Path):
    proc = subprocess.Popen([*CLI, "serve", "--listen", "tcp:127.0.0.1:0", "--state", str(state)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    assert line.startswith("listening on tcp:127.0.0.1:"), (line, proc.stderr.read() if proc.poll() else "")
    return proc, f"tcp:127.0.0.1:{int(line.split(':')[2].split()[0])}"


def test_a_real_sigkill_of_serve_mid_transfer_keeps_the_old_model_and_the_deploy_resumes(tmp_path, image,
                                                                                         other_image):
    state = tmp_path / "state"
    proc, port = _start_serve(state)
    try:
        with Board.open(port, timeout=0.5, attempts=2) as board:
            board.deploy(other_image)
            previous = board.info["sha256"]

            def kill(done, total, seen=[]):
                seen.append(done)
                if len(seen) == 3:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(10)
            with pytest.raises(p.ProtocolError):
                board.deploy(image, progress=kill, chunk=512)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()
    proc, port = _start_serve(state)
    try:
        with Board.open(port) as board:
            assert board.info["sha256"] == previous and board.info["trial"] == "confirmed"
            result = board.deploy(image, chunk=512)
            assert result["resumed_from"] == 3 * 512 and board.info["sha256"] == result["sha256"]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
        err = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert "Traceback" not in err and "edge-lls: error: interrupted" in err


# ------------------------------------------------------------------ the frame layer under the agent
class Lossy:
    """A port between host and agent that drops, damages and repeats what it carries."""

    def __init__(self, inner, seed=1, rate=0.08):
        self.inner, self.rng, self.rate = inner, random.Random(seed), rate
        self.faults = 0

    timeout = property(lambda self: self.inner.timeout, lambda self, v: setattr(self.inner, "timeout", v))
    in_waiting = property(lambda self: self.inner.in_waiting)

    def _mangle(self, data: bytes) -> bytes:
        if not data or self.rng.random() > self.rate:
            return data
        self.faults += 1
        kind, data = self.rng.randrange(4), bytearray(data)
        at = self.rng.randrange(len(data))
        if kind == 0:
            return b""                                   # dropped
        if kind == 1:
            data[at] ^= 1 << self.rng.randrange(8)        # flipped
        elif kind == 2:
            del data[at:at + self.rng.randrange(1, 8)]    # bytes lost
        else:
            return bytes(data) + bytes(data)              # repeated
        return bytes(data)

    def write(self, data):
        self.inner.write(self._mangle(data))
        return len(data)

    def read(self, n=1):
        return self._mangle(self.inner.read(n))


def test_deploy_infer_and_train_get_through_a_line_that_drops_flips_and_repeats_bytes(tmp_path, image, graph,
                                                                                      program):
    agent = Agent(tmp_path / "state")
    line = Lossy(AgentPort(agent), seed=4, rate=0.2)
    board = Board(line, timeout=0.3, slow_timeout=0.6, attempts=12)
    board.hello()
    board.deploy(image, chunk=700)
    xs = inputs(5, seed=2)
    assert [board.infer(x)["output"].tobytes() for x in xs] == [graph.run([x])[0].tobytes() for x in xs]
    board.train(xs, [1, 2, 3, 4, 5], lr=LR, classifier_lr=CLASSIFIER_LR, seed=6)
    twin = BoardTrainer(image, lr=LR, classifier_lr=CLASSIFIER_LR, seed=6)
    for f, y in zip(twin_features(program, graph, image, xs), [1, 2, 3, 4, 5]):
        twin.step(f, y)
    got = board.get_weights()
    assert all(np.array_equal(got[op][0], w) for op, (w, _) in twin.weights().items())
    assert board.hello()["samples_seen"] == 5                         # every sample trained once
    assert line.faults > 8 and board.link.stats.retries > 4


def test_a_duplicated_frame_runs_once_and_gets_the_same_answer_flagged(tmp_path, image):
    agent = Agent(tmp_path / "state")
    local_board(agent).deploy(image)
    hello = p.build_frame(p.MESSAGES["HELLO"], 7, m.hello(99))
    agent.feed(hello)
    frame = p.build_frame(p.MESSAGES["TRAIN"], 8, m.train("images", [3], 300, 0, bytes(300), batch=1, lr=0.1,
                                                          classifier_lr=0.1))
    answers = [p.decode_frame(agent.feed(frame)) for _ in range(3)]
    acks = [p.ACK.unpack(a.payload, 0) for a in answers]
    assert [a["flags"] for a in acks] == [0, p.ACK_DUPLICATE, p.ACK_DUPLICATE]
    assert len({a.payload[4:] for a in answers}) == 1 and agent.samples_seen == 1
    assert agent.feed(p.build_frame(p.MESSAGES["STATS"], 4, m.stats())) == b""       # stale: dropped
    # the same HELLO again is a retransmission; a new session's HELLO runs whatever its seq
    assert p.ACK.unpack(p.decode_frame(agent.feed(hello)).payload, 0)["flags"] == 0    # (seq 7 is not the last)
    assert p.ACK.unpack(p.decode_frame(agent.feed(hello)).payload, 0)["flags"] == p.ACK_DUPLICATE
    again = p.decode_frame(agent.feed(p.build_frame(p.MESSAGES["HELLO"], 7, m.hello(100))))
    assert p.ACK.unpack(again.payload, 0)["flags"] == 0


def test_damaged_frames_are_naked_and_bad_messages_refused_with_one_line(tmp_path, image):
    agent = Agent(tmp_path / "state")
    nak = p.decode_frame(agent.feed(b"\x05\x45\x46\x00"))
    assert nak.type == p.MESSAGES["NAK"] and p.NAK.unpack(nak.payload, 0)["reason"] == p.ERRORS["COBS"]
    raw = bytearray(p.cobs_decode(p.build_frame(p.MESSAGES["HELLO"], 1, m.hello(1))[:-1]))
    raw[14] ^= 0x40                                                    # a payload bit: the CRC fails
    events = p.FrameDecoder().feed(agent.feed(p.cobs_encode(bytes(raw)) + b"\x00"))
    assert [p.NAK.unpack(e.payload, 0)["reason"] for e in events] == [p.ERRORS["CRC"]]
    board = local_board(agent)
    with pytest.raises(p.ProtocolError, match=r"^the board refused type 42 \(seq \d+\): unknown type$"):
        board.link.request(42, b"")
    with pytest.raises(p.ProtocolError, match=r"refused PUT_MODEL \(seq \d+\): bad payload$"):
        board.link.request(p.MESSAGES["PUT_MODEL"], m.put_model(bytes(32), 10, 5, bytes(20)))
    # well-formed requests the board cannot carry out: a status, one line each
    refusals = [
        (lambda: board.infer(bytes(300)), "no model is active"),
        (lambda: board._request("TRAIN", m.train("images", [0], 300, 0, bytes(300), batch=1, lr=0.1,
                                                 classifier_lr=0.1)), "no model is active"),
        (lambda: board._request("COMMIT", m.commit(bytes(32), 100)), "no complete, verified transfer"),
        (lambda: board._put(bytes(32), 1 << 30, 0, b""), "larger than a slot (67108864 bytes)"),
    ]
    for call, words in refusals:
        with pytest.raises(m.BoardError) as raised:
            call()
        assert words in str(raised.value) and "\n" not in str(raised.value), (words, raised.value)
    board.deploy(image)
    refusals = [
        (lambda: board._request("INFER", m.infer(299, 0, bytes(299))), "expected 300"),
        (lambda: board._request("TRAIN", m.train("images", [10], 300, 0, bytes(300), batch=5, lr=0.1,
                                                 classifier_lr=0.1)), "expected 10"),
        (lambda: board._request("TRAIN", m.train("features", [1], 800, 0, bytes(800), batch=6, lr=0.1,
                                                 classifier_lr=0.1, cut=3)), "expected 2"),
        (lambda: board._request("GET_WEIGHTS", m.get_weights(5, 0)), "expected 5"),
    ]
    for call, words in refusals:
        with pytest.raises(m.BoardError) as raised:
            call()
        assert words in str(raised.value) and "\n" not in str(raised.value), (words, raised.value)


def test_a_model_without_a_tail_runs_but_does_not_train(tmp_path, program, graph):
    agent = Agent(tmp_path / "state")
    board = local_board(agent)
    board.deploy(blob.build_image(program).data)
    x = inputs(1)[0]
    assert board.infer(x)["output"].tobytes() == graph.run([x])[0].tobytes()
    assert board.info["cut"] is None
    with pytest.raises(m.BoardError, match="no trainable tail"):
        board.train([x], [0], lr=0.1, classifier_lr=0.1)
    with pytest.raises(m.BoardError, match="no trainable tail"):
        board._request("GET_WEIGHTS", m.get_weights(0, 0))


def test_a_model_the_runner_refuses_is_not_committed(tmp_path, image, other_image):
    """A blob with valid CRCs whose op record does not fit its tensors: COMMIT refuses it, the
    previous model keeps running."""
    parsed = blob.open_image(image)
    bad = bytearray(image)
    at = parsed["ops"][2]["record_offset"] + blob.CONV.offsets()["output_dims"] + 12
    bad[at:at + 4] = (99).to_bytes(4, "little")                      # output channels 99
    header = blob.HEADER.unpack(bad, 0)
    header["payload_crc32"] = blob.crc32(bytes(bad[blob.HEADER.size:]))
    bad[:blob.HEADER.size] = blob.HEADER.pack(header)
    header["header_crc32"] = blob.crc32(bytes(bad[:blob.HEADER_CRC_BYTES]))
    bad[:blob.HEADER.size] = blob.HEADER.pack(header)
    blob.open_image(bytes(bad))
    agent = Agent(tmp_path / "state")
    board = local_board(agent)
    board.deploy(other_image)
    with pytest.raises(m.BoardError, match=r"refused by the board's checks \(op or tensor 2\)"):
        board.deploy(bytes(bad))
    assert board.hello()["sha256"] == board_sha(other_image).hex()
    assert local_board(Agent(tmp_path / "state")).info["sha256"] == board_sha(other_image).hex()


def test_reset_restarts_the_board_and_forgets_what_it_learned(tmp_path, image):
    agent = Agent(tmp_path / "state")
    board = local_board(agent)
    board.deploy(image)
    board.train(inputs(3), [1, 2, 3], lr=LR, classifier_lr=CLASSIFIER_LR)
    learned = board.get_weights()
    info = board.reset()
    assert info["samples_seen"] == 0 and info["sha256"] == board_sha(image).hex() and info["trial"] == "confirmed"
    original = board.get_weights()
    parsed = blob.open_image(image)
    from firmware_bridge.board import image_weights
    assert all(np.array_equal(original[op][0], w) for op, (w, _) in image_weights(image, parsed).items())
    assert any(not np.array_equal(original[op][0], learned[op][0]) for op in learned)


def test_loop_with_no_board_behind_it_fails_with_one_clear_error():
    start = time.monotonic()
    with pytest.raises(p.ProtocolError, match=r"^no answer to HELLO \(seq \d+\) after 2 attempts of 0.2 s each"):
        Board.open("loop://", timeout=0.2, attempts=2)
    assert time.monotonic() - start < 3


def test_the_agent_serves_a_serial_device(tmp_path, image, graph):
    """serve_serial on a pty's device; the host drives the other end of it."""
    master, slave = os.openpty()
    device = os.ttyname(slave)
    stop = threading.Event()
    agent = Agent(tmp_path / "state")
    thread = threading.Thread(target=serve_serial, args=(agent, device), kwargs={"stop": stop}, daemon=True)
    thread.start()

    class PtyPort:
        timeout = 0.01

        @property
        def in_waiting(self):
            return 1 if select.select([master], [], [], 0)[0] else 0

        def read(self, n=1):
            if not select.select([master], [], [], self.timeout)[0]:
                return b""
            return os.read(master, max(n, 1))

        def write(self, data):
            os.write(master, data)
            return len(data)

    try:
        time.sleep(0.3)
        board = Board(PtyPort(), name=device)
        board.hello()
        board.deploy(image)
        x = inputs(1)[0]
        assert board.infer(x)["output"].tobytes() == graph.run([x])[0].tobytes()
    finally:
        stop.set()
        thread.join(5)
        os.close(master)
        os.close(slave)


# ------------------------------------------------------------------ the command line
@pytest.fixture(scope="module")
def model_file(tmp_path_factory, program):
    from edge_lls.formats.tflite import save_tflite
    path = tmp_path_factory.mktemp("cli") / "small.tflite"
    save_tflite(program, path)
    return path


def _json(out):
    return [json.loads(line) for line in out.strip().splitlines()]


def test_deploy_and_board_info_stats_infer_pull_with_json(server, model_file, capsys, tmp_path, program, graph):
    port = f"tcp:127.0.0.1:{server.port}"
    code, out, err = run_main(capsys, "deploy", model_file, "--port", port, "--train-last", "2", "--json")
    assert code == 0, err
    (deployed,) = _json(out)
    assert deployed["kind"] == "tflite" and deployed["trial"] == "confirmed" and not deployed["unchanged"]
    code, out, _ = run_main(capsys, "board", "info", "--port", port, "--json")
    (info,) = _json(out)
    assert info["sha256"] == deployed["sha256"] and info["input_bytes"] == 300 and info["cut"] == 2
    code, out, _ = run_main(capsys, "board", "info", "--port", port)
    assert code == 0 and "confirmed" in out and deployed["sha256"] in out
    xs = inputs(3, seed=21)
    for k, x in enumerate(xs):
        np.save(tmp_path / f"x{k}.npy", x)
    (tmp_path / "raw.bin").write_bytes(xs[0].tobytes())
    code, out, err = run_main(capsys, "board", "infer", "--port", port, "--input", tmp_path / "x0.npy",
                              "--input", tmp_path / "raw.bin", "--json")
    assert code == 0, err
    records = _json(out)
    assert [r["output"] for r in records] == [graph.run([xs[0]])[0].reshape(-1).tolist()] * 2
    # learn on the board, then pull the fine-tuned model as a .tflite and as a model image
    with Board.open(port) as board:
        board.train(xs, [1, 2, 3], lr=LR, classifier_lr=CLASSIFIER_LR, seed=2)
        tuned_outputs = [board.infer(x)["output"].tobytes() for x in xs]
    code, out, _ = run_main(capsys, "board", "stats", "--port", port, "--json")
    (stats,) = _json(out)
    assert stats["samples_seen"] == 3 and stats["train_ticks"] > 0 and stats["inferences"] >= 5
    for suffix, fmt in ((".tflite", "tflite"), (".bin", "blob")):
        out_path = tmp_path / f"tuned{suffix}"
        code, out, err = run_main(capsys, "board", "pull", "--port", port, "--model", model_file, "--train-last", "2",
                                  "--out", out_path, "--json")
        assert code == 0, err
        (pulled,) = _json(out)
        assert pulled["format"] == fmt and pulled["ops"] == [1, 2, 3, 4, 6] and pulled["samples_seen"] == 3
    from edge_lls.formats.tflite import read_tflite
    tuned = prepare(read_tflite(tmp_path / "tuned.tflite"), batch=1, fast=False, requantize="tflm")
    assert [tuned.run([x])[0].tobytes() for x in xs] == tuned_outputs
    runner = ImageRunner((tmp_path / "tuned.bin").read_bytes())
    assert [runner.infer(x.tobytes()) for x in xs] == tuned_outputs
    # the pulled image deploys as any other model and runs with the board's outputs
    code, out, err = run_main(capsys, "deploy", tmp_path / "tuned.bin", "--port", port, "--json")
    assert code == 0 and _json(out)[0]["kind"] == "image", err
    code, out, _ = run_main(capsys, "board", "infer", "--port", port, "--input", tmp_path / "x1.npy", "--json")
    assert bytes(np.array(_json(out)[0]["output"], np.int8)) == tuned_outputs[1]


def test_the_pulled_tflite_runs_in_litert_with_the_boards_outputs(server, model_file, tmp_path, program):
    """LiteRT rounds FULLY_CONNECTED once where TFLM and the board round twice: its outputs
    may differ from the board's by one code there; every other byte is the board's."""
    litert = pytest.importorskip("ai_edge_litert.interpreter")
    xs = inputs(20, seed=30)
    with Board.open(server.url) as board:
        from edge_lls.export import export_model
        export_model(model_file, "blob", tmp_path / "m.bin", train_last=2)
        image = (tmp_path / "m.bin").read_bytes()
        board.deploy(image)
        board.train(xs[:5], [1, 2, 3, 4, 5], lr=LR, classifier_lr=CLASSIFIER_LR, seed=2)
        outputs = [board.infer(x)["output"] for x in xs]
        weights = board.get_weights()
    from edge_lls.formats.tflite import read_tflite, save_tflite
    save_tflite(fine_tuned_program(read_tflite(model_file), image, weights), tmp_path / "tuned.tflite")
    interpreter = litert.Interpreter(model_path=str(tmp_path / "tuned.tflite"))
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    differences = []
    for x, board_out in zip(xs, outputs):
        interpreter.set_tensor(inp["index"], x)
        interpreter.invoke()
        lite = interpreter.get_tensor(out["index"]).reshape(-1)
        differences.append(int(np.abs(lite.astype(int) - board_out.astype(int)).max()))
    assert max(differences) <= 1, differences


def test_serve_from_the_command_line_with_deploy_and_board_info(tmp_path, model_file):
    proc, port = _start_serve(tmp_path / "state")
    try:
        result = subprocess.run([*CLI, "deploy", str(model_file), "--port", port, "--train-last", "1", "--json"],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr
        info = subprocess.run([*CLI, "board", "info", "--port", port, "--json"], capture_output=True, text=True,
                              timeout=60)
        assert json.loads(info.stdout)["sha256"] == json.loads(result.stdout)["sha256"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


BAD = [
    (["deploy", "missing.tflite", "--port", "loop://"], "missing.tflite: file not found"),
    (["deploy", "{model}", "--port", "tcp:nope"], "--port tcp:nope: expected tcp:HOST:PORT"),
    (["deploy", "{model}", "--port", "socket://127.0.0.1:1", "--train-last", "2"], "socket://127.0.0.1:1: cannot open"),
    (["deploy", "{model}", "--port", "{port}", "--timeout", "0"], "--timeout must be > 0, got 0.0"),
    (["deploy", "{corrupt}", "--port", "{port}"], "corrupt.bin: payload CRC-32 mismatch"),
    (["deploy", "{model}", "--port", "{port}", "--train-last", "9"], "train-last"),
    (["board", "frobnicate", "--port", "{port}"], "argument ACTION: invalid choice: 'frobnicate'"),
    (["board", "infer", "--port", "{port}", "--input", "{short}"], "short.bin: 7 input bytes; the model on the board "
                                                                   "takes 300"),
    (["board", "infer", "--port", "{port}", "--input", "nothere.bin"], "--input nothere.bin: file not found"),
    (["board", "infer", "image.png", "--port", "{port}"], "board infer IMAGE needs --model"),
    (["board", "pull", "--port", "{port}", "--out", "x.bin"], "board pull needs --model"),
    (["board", "pull", "--port", "{port}", "--model", "{model}", "--train-last", "1", "--out", "x.bin"],
     "not the model on"),
    (["board", "pull", "--port", "{port}", "--model", "{model}", "--train-last", "2", "--out", "no/such/dir/x.bin"],
     "the folder no/such/dir does not exist"),
    (["board", "info", "stray", "--port", "{port}"], "board info takes no IMAGE arguments (got stray)"),
    (["board", "infer", "--port", "{port}", "late.png"], "unrecognized arguments: late.png"),
    (["serve", "--listen", "udp:5"], "--listen udp:5: expected tcp:PORT or tcp:HOST:PORT"),
    (["serve"], "one of the arguments --listen --serial is required"),
    (["serve", "--listen", "tcp:1", "--state", "{model}"], "not a folder"),
]


@pytest.mark.parametrize("args,words", BAD, ids=[" ".join(a[:2]) + f" {k}" for k, (a, _) in enumerate(BAD)])
def test_bad_input_is_one_line_and_exit_2(server, model_file, tmp_path, capsys, args, words, image):
    if any("{port}" in a for a in args):
        local = Board.open(server.url)
        local.deploy(image)
        local.close()
    corrupt = tmp_path / "corrupt.bin"
    corrupt.write_bytes(image[:-1] + bytes([image[-1] ^ 1]))
    (tmp_path / "short.bin").write_bytes(bytes(7))
    values = {"model": str(model_file), "port": f"tcp:127.0.0.1:{server.port}", "corrupt": str(corrupt),
              "short": str(tmp_path / "short.bin")}
    code, out, err = run_main(capsys, *[a.format(**values) for a in args])
    assert_one_line_error(code, err, words)
    assert out == ""


def test_pull_writes_a_tflite_from_a_deployed_ells_that_runs_as_the_board(server, tmp_path, capsys):
    """A float .ells deploys through the exporter (int8 by calibration on --data); pull, given the
    same options, lowers it again to the same int8 program and writes the fine-tuned .tflite,
    which the Python runtime (TFLM rounding) runs to the board's output bytes."""
    from PIL import Image
    from edge_lls.formats import model_file as mf
    from edge_lls.formats.tflite import read_tflite
    from edge_lls.models import build_model
    rng = np.random.default_rng(8)
    model = build_model("mobilenetv1", 4, (32, 32, 3), seed=0, act="relu6")   # (the firmware trains ReLU6 blocks)
    model.forward(rng.random((8, 32, 32, 3)).astype(np.float32), training=True)
    mf.save_model(tmp_path / "m.ells", model, {})
    for c in range(4):
        (tmp_path / "data" / f"class{c}").mkdir(parents=True)
        for k in range(6):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "data" / f"class{c}" / f"{k}.png")
    options = ["--dataset", "folder", "--data", tmp_path / "data", "--train-last", "1"]
    code, _, err = run_main(capsys, "deploy", tmp_path / "m.ells", "--port", server.url, *options)
    assert code == 0, err
    xs = [rng.integers(-128, 128, (1, 32, 32, 3)).astype(np.int8) for _ in range(6)]
    with Board.open(server.url) as board:
        board.train(xs[:4], [0, 1, 2, 3], lr=LR, classifier_lr=CLASSIFIER_LR, seed=3)
        outputs = [board.infer(x)["output"].tobytes() for x in xs]
    code, _, err = run_main(capsys, "board", "pull", "--port", server.url, "--model", tmp_path / "m.ells", *options,
                            "--out", tmp_path / "tuned.tflite")
    assert code == 0, err
    tuned = prepare(read_tflite(tmp_path / "tuned.tflite"), batch=1, fast=False, requantize="tflm")
    assert [tuned.run([x])[0].tobytes() for x in xs] == outputs
    code, _, err = run_main(capsys, "board", "pull", "--port", server.url, "--model", tmp_path / "m.ells",
                            "--dataset", "folder", "--data", tmp_path / "data", "--train-last", "2",
                            "--out", tmp_path / "other.tflite")                 # other options: another model
    assert_one_line_error(code, err, "not the model on")

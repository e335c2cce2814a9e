"""The Linux-board agent: `edge-lls serve` answers the bridge protocol with the Python runtime,
so a Raspberry Pi (USB gadget serial or TCP) is driven exactly like a microcontroller.

    agent = Agent("state/")                       # boots the newest valid slot
    serve_tcp(agent, "127.0.0.1", 5000)           # one client at a time
    serve_serial(agent, "/dev/ttyGS0")
    Board(AgentPort(agent))                       # in process, for tests: no socket

What it computes is what the firmware computes:
  * INFER runs the model image through ImageRunner, the Python twin of el_runner.c: the
    TFLite-exact int8 kernels (edge_lls/kernels/int8/literal.py) in TFLM rounding, so the
    output bytes equal the firmware's and the Python runtime's (requantize="tflm");
  * TRAIN runs the frozen prefix through ImageRunner (images mode) or takes the host's
    features at the cut, then edge_lls.board_train.BoardTrainer, the bit-exact twin of the
    firmware's el_train_step: a Pi learns exactly what a Cortex-M learns;
  * GET_WEIGHTS answers from BoardTrainer.weights() (the image's weights before any TRAIN).

A/B slots in the state directory (SlotStore), as on the board:
    slot0.bin, slot1.bin         model images; a transfer writes slotN.part of the inactive
                                 slot (its SHA-256 and size in slotN.part.hdr), is fsynced and
                                 checked against its SHA-256, then renamed to slotN.bin
    slot0.rec, slot1.rec         commit records (64 bytes: magic "ELCR", version, state,
                                 sequence, slot, size, SHA-256, CRC-32), written last, each by
                                 write-temporary, fsync, rename, fsync of the folder
At start (and on RESET) the newest record whose CRC, file size and SHA-256 check is booted:
PENDING (committed, never booted) becomes TRIAL, runs a self-check inference and becomes
CONFIRMED; a record found in TRIAL (a start that died before its self-check) is REVERTED and
the next one boots. So a kill at any point leaves a valid model running: the previous one,
or the new one once its record is complete.
"""
from __future__ import annotations

import contextlib
import hashlib
import os
import platform
import socket
import sys
import threading
import time
import traceback
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_lls.errors import ConfigError, EdgeLLSError, FormatError
from edge_lls.formats import blob
from edge_lls.formats.blob import Layout

from . import messages as m
from .board import image_weights, trainable_ops
from .protocol import (MAX_PAYLOAD, MESSAGES, VERSION as FRAME_VERSION, Frame, FrameDecoder, FrameError, Sequencer,
                       ack_payload, build_frame, nak_payload)

MiB = 1 << 20
TICK_HZ = 1_000_000_000                # the agent's ticks are nanoseconds (time.perf_counter_ns)
RECORD = Layout("el_commit_record", (
    ("magic", "4s"), ("version", "H"), ("state", "H"), ("sequence", "I"), ("slot", "I"), ("model_bytes", "I"),
    ("sha256", "32s"), ("reserved", "2I"), ("crc32", "I")))
RECORD_MAGIC, RECORD_VERSION = b"ELCR", 1
RECORD_STATES = {"PENDING": 1, "TRIAL": 2, "CONFIRMED": 3, "REVERTED": 4}
TRANSFER = Layout("el_transfer_record", (("magic", "4s"), ("total_bytes", "I"), ("sha256", "32s"), ("crc32", "I")))
TRANSFER_MAGIC = b"ELTR"


def _u32(value: int) -> int:
    return max(0, min(int(value), 0xFFFFFFFF))


class ModelRefused(FormatError):
    """A model image the runner will not run; `index` names the op (or tensor) at fault."""

    def __init__(self, message: str, index: int = m.NONE):
        self.index = index
        super().__init__(message)


# ====================================================================================
# ImageRunner: el_runner.c on the host
# ====================================================================================

def _volume(dims) -> int:
    v = 1
    for d in dims:
        v *= int(d)
    return v


@dataclass
class _Op:
    index: int
    name: str
    record: dict
    weights: np.ndarray | None = None
    bias: np.ndarray | None = None
    multiplier: np.ndarray | None = None
    shift: np.ndarray | None = None


class ImageRunner:
    """A model image's ops, in order, through the TFLite-exact int8 kernels, as el_runner.c
    runs them (the same records, the same checks of each record against its tensors)."""

    def __init__(self, image: bytes, where: str = "<image>"):
        self.image, self.where = bytes(image), where
        parsed = blob.open_image(self.image, where)
        self.parsed, self.header, self.tensors = parsed, parsed["header"], parsed["tensors"]
        self.ops: list[_Op] = []
        for i, op in enumerate(parsed["ops"]):
            name, r = blob.OPCODE_NAMES[op["opcode"]], op["record"]
            self._check(i, name, r)
            entry = _Op(i, name, r)
            if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED"):
                channels = r["output_dims"][3] if name != "FULLY_CONNECTED" else r["filter_dims"][3]
                shape = tuple(r["filter_dims"]) if name != "FULLY_CONNECTED" else \
                    (r["filter_dims"][3], r["filter_dims"][0])
                entry.weights = np.frombuffer(self.image, np.int8, _volume(shape), r["weights"]).reshape(shape)
                entry.bias = np.frombuffer(self.image, "<i4", channels, r["bias"]).astype(np.int32)
                entry.multiplier = np.frombuffer(self.image, "<i4", channels, r["multiplier"]).astype(np.int32)
                entry.shift = np.frombuffer(self.image, "<i4", channels, r["shift"]).astype(np.int32)
            self.ops.append(entry)
        for role in ("input_tensor", "output_tensor"):
            t = self.tensors[self.header[role]]
            if t["flags"] & blob.TENSOR_CONSTANT or t["type"] != blob.TYPE_CODES["INT8"]:
                raise ModelRefused(f"{where}: the model's {role.split('_')[0]} is not an int8 runtime tensor",
                                   self.header[role])
        self.input_bytes = self.tensors[self.header["input_tensor"]]["bytes"]
        self.output_bytes = self.tensors[self.header["output_tensor"]]["bytes"]

    def _fits(self, index: int, elements: int, dims=None) -> bool:
        if index >= len(self.tensors):
            return False
        t = self.tensors[index]
        if t["flags"] & blob.TENSOR_CONSTANT or t["type"] != blob.TYPE_CODES["INT8"] or elements < 1 or \
                t["bytes"] != elements:
            return False
        return dims is None or t["rank"] != 4 or tuple(t["dims"]) == tuple(dims)

    def _check(self, i: int, name: str, r: dict) -> None:
        """el_runner.c check_record: the record against its input and output tensors."""
        if name in ("CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "MAX_POOL_2D", "PAD"):
            ok = self._fits(r["input"], _volume(r["input_dims"]), r["input_dims"]) and \
                self._fits(r["output"], _volume(r["output_dims"]), r["output_dims"])
        elif name == "FULLY_CONNECTED":
            ok = self._fits(r["input"], _volume(r["input_dims"])) and self._fits(r["output"], _volume(r["output_dims"]))
        elif name == "SOFTMAX":
            n = r["rows"] * r["depth"] if r["rows"] >= 1 and r["depth"] >= 1 else -1
            ok = self._fits(r["input"], n) and self._fits(r["output"], n)
        else:                                               # RESHAPE, LEAKY_RELU
            ok = self._fits(r["input"], r["size"]) and self._fits(r["output"], r["size"])
        if ok and name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            f, o = r["filter_dims"], r["output_dims"]
            ok = f[3 if name == "DEPTHWISE_CONV_2D" else 0] == o[3] and \
                (name == "DEPTHWISE_CONV_2D" or f[3] == r["input_dims"][3])
        if ok and name == "FULLY_CONNECTED":
            ok = r["filter_offset"] == 0 and r["input_dims"][3] == r["filter_dims"][0] and \
                r["output_dims"][3] == r["filter_dims"][3]
        if not ok:
            raise ModelRefused(f"{self.where}: op {i} ({name}): its record does not fit its tensors", i)

    def run(self, x: bytes, end: int | None = None, weights: dict | None = None) -> dict[int, np.ndarray]:
        """Every runtime tensor's values after ops [0, end) on input x (bytes); weights:
        {op: (int8, int32)} read instead of the image's (the trainer's SRAM copies)."""
        from edge_lls.kernels.int8 import literal
        if len(x) != self.input_bytes:
            raise ConfigError(f"an input of {len(x)} bytes; the model takes {self.input_bytes}")
        values = {self.header["input_tensor"]: np.frombuffer(bytes(x), np.int8).copy()}
        for op in self.ops[:len(self.ops) if end is None else end]:
            r = op.record
            x_in = values[r["input"]]
            out = np.empty(self.tensors[r["output"]]["bytes"], np.int8)
            w, b = op.weights, op.bias
            if weights is not None and op.index in weights:
                w = np.ascontiguousarray(weights[op.index][0], np.int8).reshape(op.weights.shape)
                b = np.ascontiguousarray(weights[op.index][1], np.int32)
            if op.name in ("CONV_2D", "DEPTHWISE_CONV_2D"):
                x4, o4 = x_in.reshape(r["input_dims"]), out.reshape(r["output_dims"])
                geometry = (r["stride_h"], r["stride_w"], r["pad_h"], r["pad_w"], r["dilation_h"], r["dilation_w"])
                tail = (-r["input_offset"], r["output_offset"], op.multiplier, op.shift, r["act_min"], r["act_max"])
                if op.name == "CONV_2D":
                    literal.conv2d_s8(x4, w, b, o4, *geometry, *tail)
                else:
                    literal.depthwise_conv2d_s8(x4, w, b, o4, *geometry, r["ch_mult"], *tail)
            elif op.name == "FULLY_CONNECTED":
                rows = _volume(r["input_dims"]) // r["filter_dims"][0]
                literal.fully_connected_s8(x_in.reshape(rows, -1), w, b, out.reshape(rows, -1), -r["input_offset"],
                                           r["output_offset"], op.multiplier, op.shift, r["act_min"], r["act_max"],
                                           False)           # TFLM: two roundings, as the firmware
            elif op.name in ("AVERAGE_POOL_2D", "MAX_POOL_2D"):
                kernel = literal.avg_pool2d_s8 if op.name == "AVERAGE_POOL_2D" else literal.max_pool2d_s8
                kernel(x_in.reshape(r["input_dims"]), out.reshape(r["output_dims"]), r["filter_h"], r["filter_w"],
                       r["stride_h"], r["stride_w"], r["pad_h"], r["pad_w"], r["act_min"], r["act_max"])
            elif op.name == "SOFTMAX":
                literal.softmax_s8(x_in.reshape(r["rows"], r["depth"]), out.reshape(r["rows"], r["depth"]),
                                   r["input_multiplier"], r["input_left_shift"], r["diff_min"])
            elif op.name == "PAD":
                literal.pad_s8(x_in.reshape(r["input_dims"]), out.reshape(r["output_dims"]),
                               np.array(r["before"], np.int64), r["pad_value"])
            elif op.name == "LEAKY_RELU":
                literal.leaky_relu_s8(x_in, out, r["input_zero_point"], r["output_zero_point"],
                                      r["identity_multiplier"], r["identity_shift"], r["alpha_multiplier"],
                                      r["alpha_shift"])
            else:                                           # RESHAPE
                out[:] = x_in[:r["size"]]
            values[r["output"]] = out
        return values

    def infer(self, x: bytes, weights: dict | None = None) -> bytes:
        return self.run(x, weights=weights)[self.header["output_tensor"]].tobytes()


# ====================================================================================
# SlotStore: A/B slots, commit records, trial boots
# ====================================================================================

class Crash(BaseException):
    """Raised by a test's crash hook: the agent stops where a kill would have stopped it."""


@dataclass
class Record:
    state: int
    sequence: int
    slot: int
    model_bytes: int
    sha256: bytes

    def pack(self) -> bytes:
        values = {"magic": RECORD_MAGIC, "version": RECORD_VERSION, "state": self.state, "sequence": self.sequence,
                  "slot": self.slot, "model_bytes": self.model_bytes, "sha256": self.sha256, "reserved": (0, 0),
                  "crc32": 0}
        head = RECORD.pack(values)[:RECORD.size - 4]
        return head + zlib.crc32(head).to_bytes(4, "little")

    @classmethod
    def unpack(cls, data: bytes, slot: int):
        if len(data) != RECORD.size or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
            return None
        f = RECORD.unpack(data, 0)
        if f["magic"] != RECORD_MAGIC or f["version"] != RECORD_VERSION or f["slot"] != slot or \
                f["state"] not in RECORD_STATES.values():
            return None
        return cls(f["state"], f["sequence"], f["slot"], f["model_bytes"], f["sha256"])


@dataclass
class Booted:
    slot: int
    record: Record
    image: bytes
    runner: ImageRunner


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class SlotStore:
    """The state directory: two slots, their commit records, one transfer in progress.
    crash(point) is called at each step a kill could interrupt (tests raise Crash or exit)."""

    POINTS = ("chunk", "verified", "renamed", "record-written", "trial", "confirmed")

    def __init__(self, folder, *, slot_bytes: int = 64 * MiB, crash=None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.slot_bytes = int(slot_bytes)
        self.crash = crash or (lambda point: None)
        self.transfer = None          # (slot, sha256, total) of the .part being written
        self.ready = None             # (slot, sha256, total): a verified image with no record
        for stale in self.folder.glob("*.tmp"):
            with contextlib.suppress(OSError):
                stale.unlink()

    def path(self, slot: int, suffix: str) -> Path:
        return self.folder / f"slot{slot}{suffix}"

    # ---------------------------------------------------------------- records
    def record(self, slot: int) -> Record | None:
        try:
            return Record.unpack(self.path(slot, ".rec").read_bytes(), slot)
        except OSError:
            return None

    def _write_atomic(self, path: Path, data: bytes, point: str | None = None) -> None:
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if point:
            self.crash(point + "-before-rename")
        os.replace(tmp, path)
        _fsync_dir(self.folder)

    def write_record(self, record: Record, point: str | None = None) -> None:
        self._write_atomic(self.path(record.slot, ".rec"), record.pack(), point)

    def _image_if_valid(self, record: Record) -> bytes | None:
        try:
            data = self.path(record.slot, ".bin").read_bytes()
        except OSError:
            return None
        if len(data) != record.model_bytes or hashlib.sha256(data).digest() != record.sha256:
            return None
        return data

    # ---------------------------------------------------------------- boot
    def boot(self, check) -> tuple[Booted | None, bool]:
        """The newest record whose CRC, size and SHA-256 check, booted: (Booted or None,
        whether a trial was reverted). check(image, where) -> ImageRunner runs the self-check
        and raises for a model that does not run."""
        records = [r for r in (self.record(0), self.record(1)) if r is not None]
        reverted = False
        for record in sorted(records, key=lambda r: r.sequence, reverse=True):
            if record.state == RECORD_STATES["REVERTED"]:
                continue
            image = self._image_if_valid(record)
            if image is None:
                continue
            if record.state == RECORD_STATES["TRIAL"]:       # booted once, never confirmed
                record.state = RECORD_STATES["REVERTED"]
                self.write_record(record)
                reverted = True
                continue
            if record.state == RECORD_STATES["PENDING"]:
                record.state = RECORD_STATES["TRIAL"]
                self.write_record(record)
                self.crash("trial")
                try:
                    runner = check(image, str(self.path(record.slot, ".bin")))
                except (EdgeLLSError, ValueError, IndexError):
                    record.state = RECORD_STATES["REVERTED"]
                    self.write_record(record)
                    reverted = True
                    continue
                record.state = RECORD_STATES["CONFIRMED"]
                self.write_record(record)
                self.crash("confirmed")
            else:
                try:
                    runner = check(image, str(self.path(record.slot, ".bin")))
                except (EdgeLLSError, ValueError, IndexError):
                    continue                                  # confirmed once, not runnable now
            self._recover_transfer(1 - record.slot)
            return Booted(record.slot, record, image, runner), reverted
        self._recover_transfer(0)
        return None, reverted

    def next_sequence(self) -> int:
        return max([r.sequence for r in (self.record(0), self.record(1)) if r is not None], default=0) + 1

    # ---------------------------------------------------------------- transfers into the inactive slot
    def _recover_transfer(self, slot: int) -> None:
        """After a start, the inactive slot: a .part with a valid header is the transfer to
        resume; else an image without a record (verified and renamed, never committed) is
        ready for COMMIT as it is (its SHA-256 computed again)."""
        self.transfer = self.ready = None
        header = self._transfer_header(slot)
        if header is not None:
            sha, total = header
            part = self.path(slot, ".part")
            if part.exists() and part.stat().st_size <= total:
                self.transfer = (slot, sha, total)
                return
        # a verified image renamed into place but never committed: ready, if it checks
        image = self.path(slot, ".bin")
        if image.exists() and self.record(slot) is None:
            data = image.read_bytes()
            self.ready = (slot, hashlib.sha256(data).digest(), len(data))

    def _transfer_header(self, slot: int):
        try:
            data = self.path(slot, ".part.hdr").read_bytes()
        except OSError:
            return None
        if len(data) != TRANSFER.size or zlib.crc32(data[:-4]) != int.from_bytes(data[-4:], "little"):
            return None
        f = TRANSFER.unpack(data, 0)
        return (f["sha256"], f["total_bytes"]) if f["magic"] == TRANSFER_MAGIC else None

    def received(self) -> int:
        if self.transfer is None:
            return 0
        try:
            return self.path(self.transfer[0], ".part").stat().st_size
        except OSError:
            return 0

    def begin(self, slot: int, sha: bytes, total: int) -> None:
        """A new transfer into `slot` (a previous unfinished one is dropped)."""
        self.abandon()
        head = TRANSFER.pack({"magic": TRANSFER_MAGIC, "total_bytes": total, "sha256": sha, "crc32": 0})[:-4]
        self._write_atomic(self.path(slot, ".part.hdr"), head + zlib.crc32(head).to_bytes(4, "little"))
        with open(self.path(slot, ".part"), "wb"):
            pass
        self.transfer = (slot, sha, total)

    def abandon(self) -> None:
        if self.transfer is not None:
            for suffix in (".part", ".part.hdr"):
                with contextlib.suppress(OSError):
                    self.path(self.transfer[0], suffix).unlink()
        self.transfer = None

    def append(self, data: bytes) -> int:
        """data at the end of the .part; the bytes received."""
        slot = self.transfer[0]
        with open(self.path(slot, ".part"), "ab") as f:
            f.write(data)
        self.crash("chunk")
        return self.received()

    def finish(self) -> bool:
        """The .part complete: fsync, check its SHA-256, rename it over the slot's image (the
        slot's old record removed first). False (and the transfer dropped) on a mismatch."""
        slot, sha, total = self.transfer
        part = self.path(slot, ".part")
        with open(part, "rb+") as f:
            os.fsync(f.fileno())
            data = f.read()
        if len(data) != total or hashlib.sha256(data).digest() != sha:
            self.abandon()
            return False
        self.crash("verified")
        with contextlib.suppress(FileNotFoundError):
            self.path(slot, ".rec").unlink()
        _fsync_dir(self.folder)
        os.replace(part, self.path(slot, ".bin"))
        _fsync_dir(self.folder)
        self.crash("renamed")
        with contextlib.suppress(OSError):
            self.path(slot, ".part.hdr").unlink()
        self.transfer = None
        self.ready = (slot, sha, total)
        return True

    def commit(self, slot: int, sha: bytes, total: int) -> Record:
        """The commit record of the verified image in `slot`, written last (PENDING)."""
        record = Record(RECORD_STATES["PENDING"], self.next_sequence(), slot, total, sha)
        self.write_record(record, point="record")
        self.crash("record-written")
        self.ready = None
        return record


# ====================================================================================
# The agent: messages in, answers out
# ====================================================================================

@dataclass
class _Staging:
    key: tuple
    total: int
    data: bytearray = field(default_factory=bytearray)


class _Reply(Exception):
    """A handler's early answer: a status other than OK."""

    def __init__(self, status: str, detail: int = 0):
        self.status, self.detail = m.STATUS[status], _u32(detail)


def _host_memory() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 0


def _ram_high_water() -> int:
    try:
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    except (ImportError, OSError):
        return 0


class Agent:
    """The board side of the protocol over any byte stream: feed(bytes) -> bytes to send."""

    def __init__(self, state_dir, *, board: str | None = None, device: str = "host", slot_bytes: int = 64 * MiB,
                 arena_bytes: int = 256 * MiB, crash=None, log=None):
        from edge_lls import __version__
        self.store = SlotStore(state_dir, slot_bytes=slot_bytes, crash=crash)
        self.board = (board or f"agent@{platform.node() or 'linux'}")[:31]
        self.device, self.firmware = device[:15], f"edge-lls {__version__}"[:15]
        self.arena_limit = int(arena_bytes)
        self.log = log or (lambda line: None)
        self.out_seq = Sequencer(first=int.from_bytes(os.urandom(2), "little"))
        self.after_reply = None
        self.reboot()

    # ---------------------------------------------------------------- boot and session
    def _check(self, image: bytes, where: str) -> ImageRunner:
        """A model the agent will run: the runner's checks, the trainer's, and the self-check
        inference (an input of zeros runs to the end)."""
        runner = ImageRunner(image, where)
        if runner.header["arena_bytes"] > self.arena_limit:
            raise ModelRefused(f"{where}: an arena of {runner.header['arena_bytes']} bytes; the agent runs "
                               f"{self.arena_limit}")
        if runner.parsed["tail"] is not None:
            from edge_lls.board_train import train_layout
            train_layout(image, where)
        out = runner.infer(bytes(runner.input_bytes))
        if len(out) != runner.output_bytes:
            raise ModelRefused(f"{where}: the self-check inference gave {len(out)} bytes")
        return runner

    def reboot(self) -> None:
        """A start: boot the newest valid slot (trial rules), forget RAM state and the session."""
        self.active, reverted = self.store.boot(self._check)
        self.trial = m.TRIAL["NONE"] if self.active is None else \
            m.TRIAL["REVERTED"] if reverted else m.TRIAL["CONFIRMED"]
        self._model_state()
        self.new_session()
        self.counters = {"inferences": 0, "infer_ticks": 0, "train_ticks": 0, "arena_high_water": 0}
        if self.active is not None:
            r = self.active.record
            self.log(f"booted slot {self.active.slot} (sequence {r.sequence}, {r.model_bytes} bytes, "
                     f"sha256 {r.sha256.hex()[:16]}…){' after reverting a trial' if reverted else ''}")
        else:
            self.log("no model" + (" (a trial was reverted)" if reverted else ""))

    def _model_state(self) -> None:
        self.trainer = None
        self.samples_seen = 0
        self.infer_stage = self.train_stage = None
        self.batch_results, self.batch_ticks = [], 0
        self.summary = None
        if self.active is not None:
            parsed = self.active.runner.parsed
            tail = parsed["tail"]
            cut = parsed["ops"][tail["blocks"][0]["first_op"]]["record"]["input"] if tail else m.NONE
            self.summary = {"input_bytes": self.active.runner.input_bytes,
                            "output_bytes": self.active.runner.output_bytes, "cut": cut,
                            "cut_bytes": parsed["tensors"][cut]["bytes"] if tail else 0,
                            "classes": tail["num_classes"] if tail else 0,
                            "first_op": tail["blocks"][0]["first_op"] if tail else 0,
                            "ops": trainable_ops(parsed)}

    def new_session(self) -> None:
        """A new client (a TCP connection): the line starts clean."""
        self.decoder = FrameDecoder()
        self.history = Sequencer()
        self.session = None
        self.last = None               # (seq, ("ACK", data) | ("NAK", reason)) for duplicates

    # ---------------------------------------------------------------- frames
    def feed(self, data: bytes) -> bytes:
        """Bytes from the line -> bytes to write back (answers in order)."""
        out = bytearray()
        for event in self.decoder.feed(data):
            if isinstance(event, FrameError):
                out += build_frame(MESSAGES["NAK"], self.out_seq.next(), nak_payload(0, event.reason))
                continue
            out += self._frame(event)
        return bytes(out)

    def _answer(self, seq: int, answer, duplicate: bool = False) -> bytes:
        kind, value = answer
        if kind == "NAK":
            return build_frame(MESSAGES["NAK"], self.out_seq.next(), nak_payload(seq, value))
        return build_frame(MESSAGES["ACK"], self.out_seq.next(), ack_payload(seq, duplicate, value))

    def _frame(self, frame: Frame) -> bytes:
        if frame.type in (MESSAGES["ACK"], MESSAGES["NAK"]):
            return b""
        if frame.type == MESSAGES["HELLO"] and len(frame.payload) == m.HELLO.size:
            session = m.HELLO.unpack(frame.payload, 0)["session"]
            if self.last is not None and self.last[0] == frame.seq and session == self.session:
                return self._answer(frame.seq, self.last[1], duplicate=True)
            self.history = Sequencer()              # HELLO starts the session's numbering
            self.history.seen(frame.seq)
            self.session = session
        else:
            verdict = self.history.seen(frame.seq)
            if verdict == "stale":
                return b""
            if verdict == "duplicate" and self.last is not None and self.last[0] == frame.seq:
                return self._answer(frame.seq, self.last[1], duplicate=True)
        try:
            request = m.check_request(frame.type, frame.payload)
        except m.MessageError as e:
            answer = ("NAK", e.reason)
        else:
            answer = ("ACK", self._dispatch(frame.type, request))
        self.last = (frame.seq, answer)
        return self._answer(frame.seq, answer)

    def take_after_reply(self):
        action, self.after_reply = self.after_reply, None
        return action

    def _dispatch(self, type: int, request: dict) -> bytes:
        name = m.TYPE_NAMES[type]
        try:
            fields, tail = getattr(self, f"_{name.lower()}")(request)
        except _Reply as early:
            return m.reply(name, status=early.status, detail=early.detail)
        except OSError as e:
            self.log(f"{name}: storage error: {e}")
            return m.reply(name, status=m.STATUS["STORAGE"], detail=_u32(e.errno or 0))
        return m.reply(name, fields, tail)

    # ---------------------------------------------------------------- the messages
    def _require_model(self):
        if self.active is None:
            raise _Reply("NO_MODEL")
        return self.active

    def _hello(self, request: dict):
        a, s = self.active, self.summary or {}
        none = a is None
        fields = {"version": m.VERSION, "frame_version": FRAME_VERSION, "board": self.board.encode(),
                  "firmware": self.firmware.encode(), "device": self.device.encode(),
                  "ram_bytes": _host_memory(), "flash_bytes": 2 * self.store.slot_bytes,
                  "arena_bytes": _u32(self.arena_limit), "max_payload": MAX_PAYLOAD,
                  "ops": m.ops_bitmap(n for n, _ in blob.OPCODES.values()), "tick_hz": TICK_HZ,
                  "slot": m.NONE if none else a.slot, "sequence": 0 if none else a.record.sequence,
                  "trial": self.trial, "model_bytes": 0 if none else a.record.model_bytes,
                  "sha256": bytes(32) if none else a.record.sha256,
                  "input_bytes": s.get("input_bytes", 0), "output_bytes": s.get("output_bytes", 0),
                  "cut": s.get("cut", m.NONE), "cut_bytes": s.get("cut_bytes", 0), "classes": s.get("classes", 0),
                  "samples_seen": self.samples_seen}
        return fields, b""

    def _inactive(self) -> int:
        return 0 if self.active is None else 1 - self.active.slot

    def _put_model(self, r: dict):
        sha, total, store = r["sha256"], r["total_bytes"], self.store
        if total > store.slot_bytes:
            raise _Reply("TOO_BIG", store.slot_bytes)
        slot = self._inactive()

        def state(kind, offset):
            return {"state": m.XFER[kind], "next_offset": offset, "total_bytes": total, "slot": slot}, b""

        if store.ready is not None and store.ready == (slot, sha, total):
            return state("COMPLETE", total)
        if store.transfer != (slot, sha, total):
            store.begin(slot, sha, total)
        received = store.received()
        if received == total:                                    # every byte came before a restart
            if not store.finish():
                raise _Reply("HASH_MISMATCH")
            return state("COMPLETE", total)
        if not r["data"]:                                        # a question: where do we stand?
            return state("RECEIVING", received)
        if r["offset"] != received:                              # nothing written: resume at `received`
            return state("WRONG_OFFSET", received)
        received = store.append(r["data"])
        if received < total:
            return state("RECEIVING", received)
        if not store.finish():
            raise _Reply("HASH_MISMATCH")
        return state("COMPLETE", total)

    def _commit(self, r: dict):
        sha, total, store = r["sha256"], r["total_bytes"], self.store
        slot = self._inactive()
        if store.ready != (slot, sha, total):
            raise _Reply("NO_TRANSFER")
        image = store.path(slot, ".bin").read_bytes()
        if hashlib.sha256(image).digest() != sha:                # re-verified: the file is what commits
            store.ready = None
            raise _Reply("NO_TRANSFER")
        self._model_state()                        # the firmware opens the new model in the active
        try:                                       # one's RAM: what it learned is gone either way
            self._check(image, str(store.path(slot, ".bin")))
        except ModelRefused as e:
            self.log(f"COMMIT refused: {e}")
            raise _Reply("MODEL_REFUSED", e.index) from None
        except (EdgeLLSError, ValueError, IndexError) as e:
            self.log(f"COMMIT refused: {e}")
            raise _Reply("MODEL_REFUSED", m.NONE) from None
        record = store.commit(slot, sha, total)
        self.active, reverted = store.boot(self._check)
        self._model_state()
        if self.active is None or self.active.record.sha256 != sha:
            self.trial = m.TRIAL["REVERTED"] if self.active is not None else m.TRIAL["NONE"]
            raise _Reply("MODEL_REFUSED", m.NONE)
        self.trial = m.TRIAL["CONFIRMED"]
        self.log(f"committed slot {slot} (sequence {record.sequence})")
        return {"slot": slot, "sequence": record.sequence, "trial": self.trial}, b""

    def _accept(self, stage, key, total: int, offset: int, data: bytes, restart_at_zero: bool):
        """(stage, state, next_offset) for one chunk of a staged INFER or TRAIN."""
        if stage is None or stage.key != key:
            if offset != 0:
                return stage, "WRONG_OFFSET", 0
            stage = _Staging(key, total)
        elif offset == 0 and restart_at_zero:
            stage = _Staging(key, total)
        if offset != len(stage.data):
            return stage, "WRONG_OFFSET", len(stage.data)
        stage.data += data
        return stage, ("COMPLETE" if len(stage.data) == total else "RECEIVING"), len(stage.data)

    def _infer(self, r: dict):
        active = self._require_model()
        s = self.summary
        if r["total_bytes"] != s["input_bytes"]:
            raise _Reply("BAD_INPUT", s["input_bytes"])
        if s["output_bytes"] > m.MAX_OUTPUT:
            raise _Reply("BAD_INPUT", m.MAX_OUTPUT)
        if self.train_stage is not None:          # the firmware stages both in the arena: an INFER
            size = self.train_stage.key[4]         # chunk drops a TRAIN sample not yet complete
            del self.train_stage.data[len(self.batch_results) * size:]
        self.infer_stage, state, offset = self._accept(self.infer_stage, ("infer", r["total_bytes"]),
                                                       r["total_bytes"], r["offset"], r["data"], True)
        fields = {"state": m.XFER[state], "next_offset": offset, "output_bytes": 0, "instructions": 0, "ticks": 0}
        if state != "COMPLETE":
            return fields, b""
        x, self.infer_stage = bytes(self.infer_stage.data), None
        weights = self.trainer.weights() if self.trainer is not None else None
        start = time.perf_counter_ns()
        out = active.runner.infer(x, weights)
        ticks = time.perf_counter_ns() - start
        self.counters["inferences"] += 1
        self.counters["infer_ticks"] = ticks
        self.counters["arena_high_water"] = max(self.counters["arena_high_water"], active.runner.header["arena_bytes"])
        return {**fields, "output_bytes": len(out), "ticks": ticks}, out

    def _train(self, r: dict):
        from edge_lls.board_train import BoardTrainer
        active = self._require_model()
        s = self.summary
        if active.runner.parsed["tail"] is None:
            raise _Reply("NOT_TRAINABLE")
        features = r["mode"] == m.TRAIN_MODES["features"]
        if features and r["cut"] != s["cut"]:
            raise _Reply("BAD_INPUT", s["cut"])
        expected = s["cut_bytes"] if features else s["input_bytes"]
        if r["sample_bytes"] != expected:
            raise _Reply("BAD_INPUT", expected)
        if any(label >= s["classes"] for label in r["labels"]):
            raise _Reply("BAD_INPUT", s["classes"])
        self.infer_stage = None                    # (the arena is the trainer's: el_session.c)
        key = ("train", r["batch"], r["mode"], r["count"], r["sample_bytes"], r["cut"], r["seed"],
               np.float32(r["lr"]).tobytes(), np.float32(r["classifier_lr"]).tobytes(), r["flags"], tuple(r["labels"]))
        stage = self.train_stage
        fresh = stage is None or stage.key != key
        stage, state, offset = self._accept(stage, key, r["count"] * r["sample_bytes"], r["offset"], r["data"], False)
        self.train_stage = stage
        if fresh and state != "WRONG_OFFSET":                     # a new batch starts
            self.batch_results, self.batch_ticks = [], 0
            if self.trainer is None or r["flags"] & m.TRAIN_RESTART:
                self.trainer = BoardTrainer(active.image, lr=r["lr"], classifier_lr=r["classifier_lr"],
                                            seed=r["seed"], where=f"slot {active.slot}")
            self.trainer.lr, self.trainer.classifier_lr = np.float32(r["lr"]), np.float32(r["classifier_lr"])
        if state != "WRONG_OFFSET":
            size = r["sample_bytes"]
            while len(self.batch_results) < len(stage.data) // size:
                k = len(self.batch_results)
                sample = bytes(stage.data[k * size:(k + 1) * size])
                start = time.perf_counter_ns()
                if features:
                    x = np.frombuffer(sample, np.int8)
                else:
                    x = active.runner.run(sample, end=s["first_op"])[s["cut"]]
                step = self.trainer.step(x, r["labels"][k])
                ticks = time.perf_counter_ns() - start
                self.batch_ticks += ticks
                self.counters["train_ticks"] = ticks
                self.samples_seen += 1
                losses = (step.block_loss + [0.0] * 4)[:4]
                self.batch_results.append({"block_loss": losses, "loss": step.loss, "predicted": step.predicted})
        fields = {"state": m.XFER[state], "next_offset": offset, "samples_seen": self.samples_seen, "count": 0,
                  "instructions": 0, "ticks": 0}
        if state != "COMPLETE":
            return fields, b""
        self.train_stage = None
        results = b"".join(m.TRAIN_RESULT.pack(x) for x in self.batch_results)
        return {**fields, "count": len(self.batch_results), "ticks": self.batch_ticks}, results

    def _weights(self) -> dict:
        active = self._require_model()
        if self.trainer is not None:
            return self.trainer.weights()
        return image_weights(active.image, active.runner.parsed)

    def _get_weights(self, r: dict):
        active = self._require_model()
        ops = self.summary["ops"]
        if active.runner.parsed["tail"] is None:
            raise _Reply("NOT_TRAINABLE")
        if r["index"] >= len(ops):
            raise _Reply("BAD_INPUT", len(ops))
        op = ops[r["index"]]
        w, b = self._weights()[op]
        wb, bb = np.ascontiguousarray(w, np.int8).tobytes(), np.ascontiguousarray(b, "<i4").tobytes()
        data = wb + bb
        if r["offset"] > len(data):
            raise _Reply("BAD_INPUT", len(data))
        page = data[r["offset"]:r["offset"] + (r["max_bytes"] or m.MAX_PAGE)]
        return {"index": r["index"], "count": len(ops), "op": op, "weight_bytes": len(wb), "bias_bytes": len(bb),
                "offset": r["offset"], "length": len(page), "weights_crc32": zlib.crc32(wb),
                "bias_crc32": zlib.crc32(bb), "samples_seen": self.samples_seen}, page

    def _stats(self, r: dict):
        a, c = self.active, self.counters
        train_buffer = 0
        if a is not None and a.runner.parsed["tail"] is not None:
            from edge_lls.board_train import train_layout
            train_buffer = train_layout(a.image)["total"]
        return {"arena_bytes": 0 if a is None else a.runner.header["arena_bytes"],
                "arena_high_water": c["arena_high_water"], "stack_bytes": 0, "stack_high_water": 0,
                "ram_high_water": _u32(_ram_high_water()), "train_buffer_bytes": train_buffer,
                "samples_seen": self.samples_seen, "inferences": _u32(c["inferences"]), "tick_hz": TICK_HZ,
                "infer_instructions": 0, "infer_ticks": c["infer_ticks"], "train_instructions": 0,
                "train_ticks": c["train_ticks"]}, b""

    def _reset(self, r: dict):
        self.after_reply = self.reboot
        return None, b""


# ====================================================================================
# Serving
# ====================================================================================

class AgentPort:
    """The agent as an in-process port (write / read / in_waiting / timeout), for a Board
    without a socket: Board(AgentPort(agent))."""

    def __init__(self, agent: Agent):
        self.agent, self.timeout, self.buffer = agent, 0.01, bytearray()
        self.lock = threading.Lock()

    def write(self, data: bytes) -> int:
        with self.lock:
            self.buffer += self.agent.feed(data)
            action = self.agent.take_after_reply()
        if action is not None:
            action()
        return len(data)

    @property
    def in_waiting(self) -> int:
        return len(self.buffer)

    def read(self, n: int = 1) -> bytes:
        with self.lock:
            if self.buffer:
                out = bytes(self.buffer[:n])
                del self.buffer[:n]
                return out
        time.sleep(min(self.timeout or 0.001, 0.005))     # nothing yet: as a port's read timeout
        return b""

    def close(self) -> None:
        pass


def parse_listen(text: str) -> tuple[str, int]:
    """--listen tcp:PORT (this machine only) or tcp:HOST:PORT (0.0.0.0: every interface)."""
    if not text.startswith("tcp:"):
        raise ConfigError(f"--listen {text}: expected tcp:PORT or tcp:HOST:PORT")
    host, _, port = text[4:].rpartition(":")
    if not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"--listen {text}: the port must be a number 0-65535 (0: any free port)")
    return host or "127.0.0.1", int(port)


def _serve_connection(agent: Agent, conn: socket.socket, stop: threading.Event) -> None:
    agent.new_session()
    conn.settimeout(0.2)
    while not stop.is_set():
        try:
            data = conn.recv(65536)
        except socket.timeout:
            continue
        except OSError:
            return
        if not data:
            return
        out = agent.feed(data)
        if out:
            conn.sendall(out)
        action = agent.take_after_reply()
        if action is not None:
            action()


def serve_tcp(agent: Agent, host: str, port: int, *, ready=None, stop: threading.Event | None = None) -> None:
    """Serve one client at a time on host:port until stop is set; ready(bound_port) once listening."""
    stop = stop or threading.Event()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            server.bind((host, port))
        except OSError as e:
            raise ConfigError(f"--listen tcp:{host}:{port}: cannot listen ({e.strerror or e})") from None
        server.listen(1)
        server.settimeout(0.2)
        bound = server.getsockname()[1]
        if ready is not None:
            ready(bound)
        while not stop.is_set():
            try:
                conn, peer = server.accept()
            except socket.timeout:
                continue
            agent.log(f"client {peer[0]}:{peer[1]}")
            with conn:
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                try:
                    _serve_connection(agent, conn, stop)
                except (OSError, EdgeLLSError):
                    agent.log(f"connection ended: {traceback.format_exc(limit=1).strip().splitlines()[-1]}")
            agent.log(f"client {peer[0]}:{peer[1]} left")


def serve_serial(agent: Agent, device: str, *, baudrate: int = 115200, stop: threading.Event | None = None) -> None:
    """Serve the protocol on a serial device (pyserial URL) until stop is set."""
    import serial
    stop = stop or threading.Event()
    try:
        port = serial.serial_for_url(device, baudrate=baudrate, timeout=0.1)
    except (serial.SerialException, ValueError, OSError) as e:
        raise ConfigError(f"--serial {device}: cannot open ({' '.join(str(e).split())})") from None
    with port:
        while not stop.is_set():
            data = port.read(port.in_waiting or 1)
            if not data:
                continue
            out = agent.feed(data)
            if out:
                port.write(out)
                port.flush()
            action = agent.take_after_reply()
            if action is not None:
                action()


def stderr_log(line: str) -> None:
    print(f"edge-lls serve: {line}", file=sys.stderr, flush=True)


__all__ = ["Agent", "AgentPort", "ImageRunner", "SlotStore", "Record", "Crash", "serve_tcp", "serve_serial",
           "parse_listen", "trainable_ops", "image_weights", "RECORD", "RECORD_STATES"]

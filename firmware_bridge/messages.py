"""The bridge's message layer, version 1: the payloads the frames of protocol.py carry; the
host side of firmware/include/el_messages.h.

One byte layout, two sides, as for the frames: every struct below is one
edge_lls.formats.blob.Layout whose fields are the C struct's in order (little-endian, no
padding: tests/test_messages.py compiles the header and compares every size and offset),
and tests/messages_harness.c parses what Python writes and writes what Python parses.
docs/protocol.md has each payload's layout and a byte-level example.

A request is the frame of its message type; its answer is the payload of the ACK after
el_frame_ack: an 8-byte el_msg_result (status, detail), then, when the status is OK, the
message's reply struct and its trailing bytes. A payload that does not fit its message is
refused with NAK 17 (bad payload), a type the receiver does not know with NAK 16; the
checks are check_request() / check_reply() here and el_msg_check_request() /
el_msg_check_reply() in C, the same rules in the same order.

    check_request(type, payload) -> dict      fields (+ "data", "labels"), or MessageError
    check_reply(type, payload) -> Reply       status, detail, fields (+ "data", "output", "results")
    request(name, fields, tail) / reply(name, fields, tail, status, detail) -> bytes
    put_model(...), train(...), ... -> bytes  the requests, fields by name
    BoardError                                a status other than OK, as one clear line
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field

from edge_lls.errors import EdgeLLSError
from edge_lls.formats.blob import Layout

from .protocol import ERRORS, MAX_PAYLOAD, MESSAGES, ProtocolError

VERSION = 1                      # EL_MSG_VERSION: the message layer's version (HELLO carries it)
MAX_CHUNK = 4096                 # EL_MSG_MAX_CHUNK: data bytes in one PUT_MODEL / INFER / TRAIN frame
MAX_BATCH = 64                   # EL_MSG_MAX_BATCH: samples in one TRAIN batch
NONE = 0xFFFFFFFF                # EL_MSG_NONE: no slot, no tensor
SHA_BYTES = 32

RESULT = Layout("el_msg_result", (("status", "H"), ("reserved", "H"), ("detail", "I")))

HELLO = Layout("el_msg_hello", (("version", "I"), ("session", "I")))
HELLO_REPLY = Layout("el_msg_hello_reply", (
    ("version", "I"), ("frame_version", "I"), ("board", "32s"), ("firmware", "16s"), ("device", "16s"),
    ("ram_bytes", "Q"), ("flash_bytes", "Q"), ("arena_bytes", "I"), ("max_payload", "I"), ("ops", "I"),
    ("tick_hz", "I"), ("slot", "I"), ("sequence", "I"), ("trial", "I"), ("model_bytes", "I"),
    ("sha256", "32s"), ("input_bytes", "I"), ("output_bytes", "I"), ("cut", "I"), ("cut_bytes", "I"),
    ("classes", "I"), ("samples_seen", "I")))
PUT_MODEL = Layout("el_msg_put_model", (
    ("sha256", "32s"), ("total_bytes", "I"), ("offset", "I"), ("length", "I"), ("flags", "I")))
PUT_MODEL_REPLY = Layout("el_msg_put_model_reply", (
    ("state", "I"), ("next_offset", "I"), ("total_bytes", "I"), ("slot", "I")))
COMMIT = Layout("el_msg_commit", (("sha256", "32s"), ("total_bytes", "I"), ("flags", "I")))
COMMIT_REPLY = Layout("el_msg_commit_reply", (("slot", "I"), ("sequence", "I"), ("trial", "I"), ("reserved", "I")))
INFER = Layout("el_msg_infer", (("total_bytes", "I"), ("offset", "I"), ("length", "I"), ("flags", "I")))
INFER_REPLY = Layout("el_msg_infer_reply", (
    ("state", "I"), ("next_offset", "I"), ("output_bytes", "I"), ("reserved", "I"), ("instructions", "Q"),
    ("ticks", "Q")))
TRAIN = Layout("el_msg_train", (
    ("mode", "H"), ("count", "H"), ("sample_bytes", "I"), ("cut", "I"), ("batch", "I"), ("seed", "I"),
    ("lr", "f"), ("classifier_lr", "f"), ("flags", "I"), ("offset", "I"), ("length", "I")))
TRAIN_REPLY = Layout("el_msg_train_reply", (
    ("state", "I"), ("next_offset", "I"), ("samples_seen", "I"), ("count", "I"), ("instructions", "Q"),
    ("ticks", "Q")))
TRAIN_RESULT = Layout("el_msg_train_result", (("block_loss", "4f"), ("loss", "f"), ("predicted", "I")))
GET_WEIGHTS = Layout("el_msg_get_weights", (("index", "I"), ("offset", "I"), ("max_bytes", "I"), ("reserved", "I")))
GET_WEIGHTS_REPLY = Layout("el_msg_get_weights_reply", (
    ("index", "I"), ("count", "I"), ("op", "I"), ("weight_bytes", "I"), ("bias_bytes", "I"), ("offset", "I"),
    ("length", "I"), ("weights_crc32", "I"), ("bias_crc32", "I"), ("samples_seen", "I")))
STATS = Layout("el_msg_stats", (("flags", "I"),))
STATS_REPLY = Layout("el_msg_stats_reply", (
    ("arena_bytes", "I"), ("arena_high_water", "I"), ("stack_bytes", "I"), ("stack_high_water", "I"),
    ("ram_high_water", "I"), ("train_buffer_bytes", "I"), ("samples_seen", "I"), ("inferences", "I"),
    ("tick_hz", "I"), ("reserved", "I"), ("infer_instructions", "Q"), ("infer_ticks", "Q"),
    ("train_instructions", "Q"), ("train_ticks", "Q")))
RESET = Layout("el_msg_reset", (("flags", "I"), ("reserved", "I")))

LAYOUTS = (RESULT, HELLO, HELLO_REPLY, PUT_MODEL, PUT_MODEL_REPLY, COMMIT, COMMIT_REPLY, INFER, INFER_REPLY,
           TRAIN, TRAIN_REPLY, TRAIN_RESULT, GET_WEIGHTS, GET_WEIGHTS_REPLY, STATS, STATS_REPLY, RESET)

# message name -> (request layout, reply layout or None: the reply is the result alone)
SPECS = {"HELLO": (HELLO, HELLO_REPLY), "PUT_MODEL": (PUT_MODEL, PUT_MODEL_REPLY), "COMMIT": (COMMIT, COMMIT_REPLY),
         "INFER": (INFER, INFER_REPLY), "TRAIN": (TRAIN, TRAIN_REPLY), "GET_WEIGHTS": (GET_WEIGHTS, GET_WEIGHTS_REPLY),
         "STATS": (STATS, STATS_REPLY), "RESET": (RESET, None)}
TYPES = {name: MESSAGES[name] for name in SPECS}
TYPE_NAMES = {number: name for name, number in TYPES.items()}

# The largest reply bodies a frame carries (after el_frame_ack and el_msg_result).
REPLY_ROOM = MAX_PAYLOAD - 4 - RESULT.size
MAX_OUTPUT = REPLY_ROOM - INFER_REPLY.size          # EL_MSG_MAX_OUTPUT: INFER output bytes
MAX_PAGE = REPLY_ROOM - GET_WEIGHTS_REPLY.size      # EL_MSG_MAX_PAGE: GET_WEIGHTS data bytes

# el_msg_result.status: what the board did with a well-formed request (detail: a number
# that completes the sentence, as STATUS_TEXT says)
STATUS = {"OK": 0, "NO_MODEL": 1, "NO_TRANSFER": 2, "HASH_MISMATCH": 3, "TOO_BIG": 4, "MODEL_REFUSED": 5,
          "NOT_TRAINABLE": 6, "BAD_INPUT": 7, "STORAGE": 8}
STATUS_NAMES = {number: name for name, number in STATUS.items()}
STATUS_TEXT = {
    1: "no model is active (deploy one first)",
    2: "no complete, verified transfer of that model in the inactive slot (send it with PUT_MODEL first)",
    3: "the received model's SHA-256 does not match the transfer's; the slot was cleared",
    4: "the model is larger than a slot ({detail} bytes)",
    5: "the model was refused by the board's checks (op or tensor {detail})",
    6: "the active model has no trainable tail (export it with --train-last N)",
    7: "the request does not fit the active model (expected {detail})",
    8: "the board could not write its storage (error {detail})",
}

# el_msg_put_model_reply.state, el_msg_infer_reply.state, el_msg_train_reply.state
XFER = {"RECEIVING": 0, "WRONG_OFFSET": 1, "COMPLETE": 2}
XFER_NAMES = {number: name for name, number in XFER.items()}
# el_msg_hello_reply.trial / el_msg_commit_reply.trial: the active model's boot state
TRIAL = {"NONE": 0, "CONFIRMED": 1, "TRIAL": 2, "REVERTED": 3}
TRIAL_NAMES = {number: name.lower() for name, number in TRIAL.items()}
# el_msg_train.mode and .flags
TRAIN_MODES = {"images": 1, "features": 2}
TRAIN_MODE_NAMES = {number: name for name, number in TRAIN_MODES.items()}
TRAIN_RESTART = 1                # start the trainer again from the image's weights, with this seed


class MessageError(ProtocolError):
    """A payload that does not fit its message; `reason` is the NAK reason it earns (16 an
    unknown type, 17 a bad payload)."""

    def __init__(self, message: str, reason: int = ERRORS["BAD_PAYLOAD"]):
        self.reason = reason
        super().__init__(message)


class BoardError(EdgeLLSError):
    """The board answered a well-formed request with a status other than OK."""

    def __init__(self, message_name: str, status: int, detail: int):
        self.message_name, self.status, self.detail = message_name, status, detail
        text = STATUS_TEXT.get(status, "status {status}").format(detail=detail, status=status)
        super().__init__(f"the board refused {message_name}: {text}")


@dataclass
class Reply:
    status: int
    detail: int
    fields: dict = field(default_factory=dict)   # the reply struct's, + "data" / "output" / "results"

    @property
    def ok(self) -> bool:
        return self.status == STATUS["OK"]


def _pad4(n: int) -> int:
    return -(-n // 4) * 4


def _finite(value: float) -> bool:
    return not (math.isnan(value) or math.isinf(value))


def _pack(layout: Layout, values: dict) -> bytes:
    """layout.pack with 'flags' and 'reserved' 0 when not given; struct errors as MessageError."""
    full = {name: values.get(name, 0 if name in ("flags", "reserved") else None) for name, _ in layout.fields}
    missing = [name for name, value in full.items() if value is None]
    if missing:
        raise MessageError(f"{layout.name}: no value for {', '.join(missing)}")
    try:
        return layout.pack(full)
    except (struct.error, TypeError) as e:
        raise MessageError(f"{layout.name}: {e}") from None


def request(name: str, fields: dict, tail: bytes = b"") -> bytes:
    """The payload of a `name` request: its struct, then tail (chunk data, labels + data)."""
    return _pack(SPECS[name][0], fields) + bytes(tail)


def reply(name: str, fields: dict | None = None, tail: bytes = b"", status: int = 0, detail: int = 0) -> bytes:
    """An answer's data (after el_frame_ack): el_msg_result, then, for OK, the reply struct and tail."""
    head = RESULT.pack({"status": status, "reserved": 0, "detail": detail})
    layout = SPECS[name][1]
    if status != STATUS["OK"] or layout is None:
        return head
    return head + _pack(layout, fields or {}) + bytes(tail)


# ------------------------------------------------------------------ the requests, by field
def hello(session: int) -> bytes:
    return request("HELLO", {"version": VERSION, "session": session & 0xFFFFFFFF})


def put_model(sha256: bytes, total_bytes: int, offset: int, data: bytes = b"") -> bytes:
    return request("PUT_MODEL", {"sha256": sha256, "total_bytes": total_bytes, "offset": offset,
                                 "length": len(data)}, data)


def commit(sha256: bytes, total_bytes: int) -> bytes:
    return request("COMMIT", {"sha256": sha256, "total_bytes": total_bytes})


def infer(total_bytes: int, offset: int, data: bytes) -> bytes:
    return request("INFER", {"total_bytes": total_bytes, "offset": offset, "length": len(data)}, data)


def train(mode: str, labels, sample_bytes: int, offset: int, data: bytes, *, batch: int, lr: float,
          classifier_lr: float, seed: int = 1, cut: int = NONE, flags: int = 0) -> bytes:
    labels = bytes(int(label) for label in labels)
    fields = {"mode": TRAIN_MODES[mode], "count": len(labels), "sample_bytes": sample_bytes, "cut": cut,
              "batch": batch & 0xFFFFFFFF, "seed": seed & 0xFFFFFFFF, "lr": lr, "classifier_lr": classifier_lr,
              "flags": flags, "offset": offset, "length": len(data)}
    return request("TRAIN", fields, labels + bytes(_pad4(len(labels)) - len(labels)) + bytes(data))


def get_weights(index: int, offset: int, max_bytes: int = 0) -> bytes:
    return request("GET_WEIGHTS", {"index": index, "offset": offset, "max_bytes": max_bytes})


def stats() -> bytes:
    return request("STATS", {})


def reset() -> bytes:
    return request("RESET", {})


# ------------------------------------------------------------------ checks: el_msg_check_request
def _fail(name: str, why: str):
    raise MessageError(f"bad {name} payload: {why}")


def _head(name: str, layout: Layout, payload: bytes, exact: bool) -> dict:
    if len(payload) < layout.size or (exact and len(payload) != layout.size):
        _fail(name, f"{len(payload)} bytes, {layout.name} is {layout.size}")
    return layout.unpack(payload, 0)


def _chunk(name: str, f: dict, payload: bytes, at: int, total: int) -> bytes:
    """A chunk's data: length bytes after `at`, at most MAX_CHUNK, inside [0, total)."""
    if f["length"] > MAX_CHUNK:
        _fail(name, f"a chunk of {f['length']} bytes, at most {MAX_CHUNK}")
    if len(payload) != at + f["length"]:
        _fail(name, f"{len(payload)} bytes, the header says {at + f['length']}")
    if f["offset"] + f["length"] > total:
        _fail(name, f"bytes [{f['offset']}, {f['offset'] + f['length']}) pass the end ({total})")
    return bytes(payload[at:])


def check_request(type: int, payload: bytes) -> dict:
    """The fields of a request (+ 'data', 'labels'), or MessageError with the NAK reason."""
    payload = bytes(payload)
    name = TYPE_NAMES.get(type)
    if name is None:
        raise MessageError(f"unknown message type {type}", ERRORS["UNKNOWN_TYPE"])
    layout = SPECS[name][0]
    if name == "PUT_MODEL":
        f = _head(name, layout, payload, exact=False)
        if f["total_bytes"] == 0:
            _fail(name, "a model of 0 bytes")
        f["data"] = _chunk(name, f, payload, layout.size, f["total_bytes"])
    elif name == "INFER":
        f = _head(name, layout, payload, exact=False)
        if f["total_bytes"] == 0:
            _fail(name, "an input of 0 bytes")
        f["data"] = _chunk(name, f, payload, layout.size, f["total_bytes"])
    elif name == "TRAIN":
        f = _head(name, layout, payload, exact=False)
        if f["mode"] not in TRAIN_MODE_NAMES:
            _fail(name, f"mode {f['mode']}, not 1 (images) or 2 (features)")
        if not 1 <= f["count"] <= MAX_BATCH:
            _fail(name, f"a batch of {f['count']} samples, 1 to {MAX_BATCH}")
        if f["sample_bytes"] == 0:
            _fail(name, "samples of 0 bytes")
        if f["mode"] == TRAIN_MODES["images"] and f["cut"] != NONE:
            _fail(name, f"cut {f['cut']} in images mode (0xffffffff: the model's input)")
        if not (_finite(f["lr"]) and _finite(f["classifier_lr"]) and f["lr"] >= 0 and f["classifier_lr"] >= 0):
            _fail(name, f"learning rates {f['lr']}, {f['classifier_lr']}: finite and >= 0")
        at = layout.size + _pad4(f["count"])
        if len(payload) < at:
            _fail(name, f"{len(payload)} bytes, the header and {f['count']} labels take {at}")
        if any(payload[layout.size + f["count"]:at]):
            _fail(name, "the labels' padding is not zero")
        f["labels"] = list(payload[layout.size:layout.size + f["count"]])
        f["data"] = _chunk(name, f, payload, at, f["count"] * f["sample_bytes"])
    else:
        f = _head(name, layout, payload, exact=True)
        if name == "HELLO" and f["version"] == 0:
            _fail(name, "message version 0")
        if name == "COMMIT" and f["total_bytes"] == 0:
            _fail(name, "a model of 0 bytes")
        if name == "GET_WEIGHTS" and f["max_bytes"] > MAX_PAGE:
            _fail(name, f"pages of {f['max_bytes']} bytes, at most {MAX_PAGE}")
    return f


# ------------------------------------------------------------------ checks: el_msg_check_reply
def check_reply(type: int, payload: bytes) -> Reply:
    """An answer's data parsed: Reply(status, detail, fields); MessageError when it does not fit."""
    payload = bytes(payload)
    name = TYPE_NAMES.get(type)
    if name is None:
        raise MessageError(f"an answer to unknown message type {type}", ERRORS["UNKNOWN_TYPE"])
    what = f"{name} reply"
    if len(payload) < RESULT.size:
        _fail(what, f"{len(payload)} bytes, el_msg_result is {RESULT.size}")
    result = RESULT.unpack(payload, 0)
    status, detail = result["status"], result["detail"]
    layout = SPECS[name][1]
    if status != STATUS["OK"] or layout is None:
        if len(payload) != RESULT.size:
            _fail(what, f"{len(payload)} bytes, a result without a body is {RESULT.size}")
        return Reply(status, detail)
    body = payload[RESULT.size:]
    if len(body) < layout.size:
        _fail(what, f"a body of {len(body)} bytes, {layout.name} is {layout.size}")
    f = layout.unpack(body, 0)
    tail = body[layout.size:]
    expected = 0
    if name in ("PUT_MODEL", "INFER", "TRAIN") and f["state"] not in XFER_NAMES:
        _fail(what, f"state {f['state']}")
    if name == "PUT_MODEL" and f["next_offset"] > f["total_bytes"]:
        _fail(what, f"next offset {f['next_offset']} past the model's {f['total_bytes']} bytes")
    elif name == "INFER":
        if f["output_bytes"] > MAX_OUTPUT or (f["output_bytes"] and f["state"] != XFER["COMPLETE"]):
            _fail(what, f"{f['output_bytes']} output bytes in state {XFER_NAMES[f['state']]}")
        expected = f["output_bytes"]
    elif name == "TRAIN":
        if f["count"] > MAX_BATCH or (f["count"] and f["state"] != XFER["COMPLETE"]):
            _fail(what, f"{f['count']} results in state {XFER_NAMES[f['state']]}")
        expected = f["count"] * TRAIN_RESULT.size
    elif name == "GET_WEIGHTS":
        if f["index"] >= f["count"] or f["bias_bytes"] % 4 or f["length"] > MAX_PAGE or \
                f["offset"] + f["length"] > f["weight_bytes"] + f["bias_bytes"]:
            _fail(what, f"op {f['index']} of {f['count']}, bytes [{f['offset']}, {f['offset'] + f['length']}) of "
                        f"{f['weight_bytes']} + {f['bias_bytes']}")
        expected = f["length"]
    elif name == "HELLO":
        for key in ("board", "firmware", "device"):
            f[key] = f[key].split(b"\x00", 1)[0].decode("ascii", "replace")
    if len(tail) != expected:
        _fail(what, f"{len(tail)} bytes after {layout.name}, {expected} expected")
    if name == "INFER":
        f["output"] = bytes(tail)
    elif name == "TRAIN":
        f["results"] = [TRAIN_RESULT.unpack(tail, k * TRAIN_RESULT.size) for k in range(f["count"])]
    elif name == "GET_WEIGHTS":
        f["data"] = bytes(tail)
    return Reply(status, detail, f)


def ops_bitmap(opcodes) -> int:
    """el_msg_hello_reply.ops: bit n set for EL_OP n."""
    bits = 0
    for number in opcodes:
        bits |= 1 << int(number)
    return bits


__all__ = ["VERSION", "MAX_CHUNK", "MAX_BATCH", "NONE", "LAYOUTS", "SPECS", "TYPES", "STATUS", "XFER", "TRIAL",
           "TRAIN_MODES", "MessageError", "BoardError", "Reply", "check_request", "check_reply", "request", "reply"]

"""The bridge's frame layer, version 1: the host side of firmware/include/el_protocol.h.

One byte layout, two sides (tests/test_protocol.py checks every size, offset and number of
the C header against the ones here, and has each side parse the other's frames); the rules
and a byte-level example are in docs/protocol.md.

    cobs_encode(data) / cobs_decode(data)     Consistent Overhead Byte Stuffing (no 0x00 out)
    build_frame(type, seq, payload) -> bytes  the wire bytes: COBS(header, payload, CRC-32), 0x00
    FrameDecoder().feed(data) -> [event]      Frame or FrameError per frame, as el_frame_feed
    decode_frame(wire) -> Frame               one frame's bytes, or FrameError
    Sequencer                                 new / duplicate / stale, as el_frame_seen
    Link(port).request(type, payload)         send, wait for the ACK; retry, then ProtocolError

A frame (little-endian): "EF", version 1, type, seq u16, flags (0), reserved (0), payload
length u32, the payload, and zlib's CRC-32 of all of that.
"""
from __future__ import annotations

import collections
import time
import zlib
from dataclasses import dataclass

from edge_lls.errors import EdgeLLSError
from edge_lls.formats.blob import Layout

MAGIC = b"EF"
VERSION = 1
MAX_PAYLOAD = 4352                       # a 4 KB chunk and room for its message's header
HEADER = Layout("el_frame_header", (
    ("magic", "2s"), ("version", "B"), ("type", "B"), ("seq", "H"), ("flags", "B"), ("reserved", "B"),
    ("length", "I")))
ACK = Layout("el_frame_ack", (("seq", "H"), ("flags", "H")))
NAK = Layout("el_frame_nak", (("seq", "H"), ("reason", "H")))
LAYOUTS = (HEADER, ACK, NAK)
HEADER_BYTES = HEADER.size               # 12
CRC_BYTES = 4
OVERHEAD = HEADER_BYTES + CRC_BYTES
MAX_BYTES = MAX_PAYLOAD + OVERHEAD       # a decoded frame
SEQ_WINDOW = 256                         # up to this many behind the last seq: stale

# message types, as el_protocol.h's EL_MSG_*
MESSAGES = {"HELLO": 1, "PUT_MODEL": 2, "COMMIT": 3, "INFER": 4, "TRAIN": 5, "GET_WEIGHTS": 6,
            "STATS": 7, "RESET": 8, "ACK": 0x80, "NAK": 0x81}
MESSAGE_NAMES = {number: name for name, number in MESSAGES.items()}
ACK_DUPLICATE = 1                        # el_frame_ack.flags: acknowledged again, not run again

# el_frame_error: the decoder's reasons (also NAK reasons 1-8), then a receiver's (16+);
# the names are el_frame_error_name()'s
ERRORS = {"OVERLONG": 1, "COBS": 2, "SHORT": 3, "MAGIC": 4, "VERSION": 5, "LENGTH": 6, "CRC": 7,
          "HEADER": 8, "UNKNOWN_TYPE": 16, "BAD_PAYLOAD": 17}
ERROR_NAMES = {1: "overlong", 2: "bad COBS", 3: "short", 4: "bad magic", 5: "bad version",
               6: "length mismatch", 7: "bad CRC", 8: "bad header", 16: "unknown type", 17: "bad payload"}
FRAME_REASONS = frozenset(range(1, 9))   # the frame did not arrive intact: send it again


def cobs_max_encoded(n: int) -> int:
    """EL_COBS_MAX_ENCODED(n)."""
    return n + n // 254 + 1


def wire_bytes(n: int) -> int:
    """EL_FRAME_WIRE_BYTES(n): the most wire bytes a frame of n payload bytes takes."""
    return cobs_max_encoded(n + OVERHEAD) + 1


MAX_WIRE = wire_bytes(MAX_PAYLOAD)


class ProtocolError(EdgeLLSError):
    """The link failed: no valid answer within the retries, or the board refused a frame."""


class FrameError(ProtocolError):
    """Bytes between two 0x00 delimiters that are no frame; `reason` is an ERRORS number."""

    def __init__(self, reason: int, detail: str = ""):
        self.reason = reason
        super().__init__(f"frame refused: {ERROR_NAMES[reason]}" + (f" ({detail})" if detail else ""))

    def __eq__(self, other):
        return isinstance(other, FrameError) and other.reason == self.reason

    def __hash__(self):
        return hash(self.reason)


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes = b""
    flags: int = 0

    @property
    def name(self) -> str:
        return MESSAGE_NAMES.get(self.type, f"type {self.type}")


# ------------------------------------------------------------------ COBS
def cobs_encode(data: bytes) -> bytes:
    """COBS as el_cobs_encode writes it: a code byte per block, a block ending at a 0x00
    (the code then says where it was) or after 254 other bytes; no 0x00 in the result."""
    out = bytearray()
    for part in bytes(data).split(b"\x00"):
        while len(part) >= 254:
            out.append(0xFF)
            out += part[:254]
            part = part[254:]
        out.append(len(part) + 1)
        out += part
    return bytes(out)


def cobs_decode(data: bytes) -> bytes:
    """The inverse of cobs_encode (no delimiter in data); FrameError(COBS) when data holds a
    0x00 or ends inside a block."""
    out = bytearray()
    at, n = 0, len(data)
    while at < n:
        code = data[at]
        if code == 0 or at + code > n or 0 in data[at + 1:at + code]:
            raise FrameError(ERRORS["COBS"], f"block at byte {at}")
        out += data[at + 1:at + code]
        at += code
        if code != 0xFF and at < n:
            out.append(0)
    return bytes(out)


# ------------------------------------------------------------------ frames
def build_frame(type: int, seq: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """The wire bytes of one frame, as el_frame_build writes them (flags 0 there)."""
    payload = bytes(payload)
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"a frame payload holds at most {MAX_PAYLOAD} bytes, not {len(payload)}")
    body = HEADER.pack({"magic": MAGIC, "version": VERSION, "type": type, "seq": seq & 0xFFFF, "flags": flags,
                        "reserved": 0, "length": len(payload)}) + payload
    return cobs_encode(body + zlib.crc32(body).to_bytes(4, "little")) + b"\x00"


def check_frame(raw: bytes) -> Frame:
    """A decoded frame's checks, in el_protocol.c's order: size, magic, version, length, CRC,
    reserved byte."""
    if len(raw) < OVERHEAD:
        raise FrameError(ERRORS["SHORT"], f"{len(raw)} bytes, a frame has at least {OVERHEAD}")
    header = HEADER.unpack(raw, 0)
    if header["magic"] != MAGIC:
        raise FrameError(ERRORS["MAGIC"], f"{header['magic']!r}, not {MAGIC!r}")
    if header["version"] != VERSION:
        raise FrameError(ERRORS["VERSION"], f"version {header['version']}, this host speaks {VERSION}")
    if header["length"] != len(raw) - OVERHEAD:
        raise FrameError(ERRORS["LENGTH"], f"length says {header['length']}, {len(raw) - OVERHEAD} payload bytes came")
    stored, computed = int.from_bytes(raw[-4:], "little"), zlib.crc32(raw[:-4])
    if stored != computed:
        raise FrameError(ERRORS["CRC"], f"frame says {stored:08x}, bytes give {computed:08x}")
    if header["reserved"] != 0:
        raise FrameError(ERRORS["HEADER"], f"reserved byte {header['reserved']}")
    return Frame(header["type"], header["seq"], bytes(raw[HEADER_BYTES:-4]), header["flags"])


def decode_frame(wire: bytes) -> Frame:
    """One frame from its wire bytes (the trailing 0x00 optional); FrameError otherwise."""
    wire = bytes(wire)
    if wire.endswith(b"\x00"):
        wire = wire[:-1]
    events = FrameDecoder().feed(wire + b"\x00")
    if len(events) != 1:
        raise FrameError(ERRORS["COBS"], f"{len(events)} frames in one")
    if isinstance(events[0], FrameError):
        raise events[0]
    return events[0]


class FrameDecoder:
    """el_frame_decoder on the host: bytes in any pieces, events out in order. feed() never
    raises for bad input: each stretch of bytes ending at a 0x00 that is no frame becomes a
    FrameError event (an overlong one at once, its rest skipped to the next 0x00); a 0x00
    with nothing before it is idle."""

    def __init__(self):
        self._restart()
        self.discarding = False

    def _restart(self):
        self.buf = bytearray()
        self.remaining = 0
        self.pending_zero = False
        self.started = False

    def feed(self, data: bytes) -> list:
        events, data, at, n = [], bytes(data), 0, len(data)
        while at < n:
            if self.discarding:
                end = data.find(0, at)
                if end < 0:
                    break
                self.discarding = False
                self._restart()
                at = end + 1
                continue
            byte = data[at]
            if byte == 0:
                if self.started:
                    events.append(self._finish())
                self._restart()
                at += 1
            elif self.remaining == 0:                 # a code byte
                if self.pending_zero:
                    if len(self.buf) == MAX_BYTES:
                        events.append(self._overlong())
                        continue
                    self.buf.append(0)
                self.started = True
                self.remaining = byte - 1
                self.pending_zero = byte != 0xFF
                at += 1
            else:                                     # data of the block, up to a 0x00
                part = data[at:at + self.remaining]
                zero = part.find(0)
                if zero >= 0:
                    part = part[:zero]
                if len(self.buf) + len(part) > MAX_BYTES:
                    events.append(self._overlong())
                    continue
                self.buf += part
                self.remaining -= len(part)
                at += len(part)
        return events

    def _overlong(self) -> FrameError:
        self.discarding = True
        self._restart()
        return FrameError(ERRORS["OVERLONG"], f"more than {MAX_BYTES} bytes before a 0x00")

    def _finish(self):
        if self.remaining:
            return FrameError(ERRORS["COBS"], f"the 0x00 came {self.remaining} bytes before the block's end")
        try:
            return check_frame(bytes(self.buf))
        except FrameError as error:
            return error


class Sequencer:
    """Sequence numbers, as el_frame_seen: a sender takes next(); a receiver asks seen(seq)
    of each decoded frame: 'duplicate' (the last one again: answer again, do not run again),
    'stale' (1..SEQ_WINDOW behind the last, modulo 2^16: drop) or 'new' (becomes the last)."""

    def __init__(self, first: int = 0):
        self.next_seq = first & 0xFFFF
        self.last = None

    def next(self) -> int:
        seq = self.next_seq
        self.next_seq = (seq + 1) & 0xFFFF
        return seq

    def seen(self, seq: int) -> str:
        if self.last is not None:
            behind = (self.last - seq) & 0xFFFF
            if behind == 0:
                return "duplicate"
            if behind <= SEQ_WINDOW:
                return "stale"
        self.last = seq & 0xFFFF
        return "new"


def ack_payload(seq: int, duplicate: bool = False, data: bytes = b"") -> bytes:
    """An ACK's payload: el_frame_ack, then the answer's data."""
    return ACK.pack({"seq": seq & 0xFFFF, "flags": ACK_DUPLICATE if duplicate else 0}) + bytes(data)


def nak_payload(seq: int, reason: int) -> bytes:
    return NAK.pack({"seq": seq & 0xFFFF, "reason": reason})


# ------------------------------------------------------------------ the host's link
@dataclass
class LinkStats:
    sent: int = 0            # frames written, retransmissions included
    retries: int = 0         # retransmissions
    timeouts: int = 0        # attempts that ended with no answer
    naks: int = 0            # NAKs for a frame that arrived damaged
    bad_frames: int = 0      # received bytes that were no frame
    ignored: int = 0         # valid frames that answered nothing outstanding (late, duplicated)


class Link:
    """Stop-and-wait requests over any port with write(bytes) and read(n) (pyserial's
    serial_for_url: a tty, socket://, loop://). request() sends one frame and waits for the
    ACK of its seq: up to `attempts` transmissions, each given `timeout` seconds; a NAK saying
    the frame arrived damaged sends it again at once. Late or duplicated answers (an ACK of
    an earlier seq, a second ACK) and damaged bytes are skipped. After the last attempt, or
    when the board refuses the frame itself (NAK 16 and up), one ProtocolError.

    read(n) must return within a short time when nothing arrives: a port with a `timeout`
    attribute gets `poll` seconds (pyserial's read timeout)."""

    def __init__(self, port, timeout: float = 1.0, attempts: int = 3, first_seq: int = 0, poll: float = 0.01):
        if attempts < 1 or timeout <= 0:
            raise ProtocolError(f"a link needs at least 1 attempt and a timeout > 0, not {attempts} and {timeout}")
        self.port, self.timeout, self.attempts = port, float(timeout), int(attempts)
        self.sequencer = Sequencer(first_seq)
        self.decoder = FrameDecoder()
        self.stats = LinkStats()
        self._events = collections.deque()
        if hasattr(port, "timeout"):
            port.timeout = min(poll, self.timeout)

    def request(self, type: int, payload: bytes = b"") -> Frame:
        """The ACK frame answering one `type` frame (its payload: el_frame_ack, then data)."""
        seq = self.sequencer.next()
        wire = build_frame(type, seq, payload)
        name = MESSAGE_NAMES.get(type, f"type {type}")
        for attempt in range(self.attempts):
            if attempt:
                self.stats.retries += 1
            self.port.write(wire)
            self.stats.sent += 1
            answer = self._await(seq, name)
            if answer is not None:
                return answer
        raise ProtocolError(f"no answer to {name} (seq {seq}) after {self.attempts} attempts of "
                            f"{self.timeout:g} s each ({self.stats.timeouts} timeouts, {self.stats.naks} NAKs, "
                            f"{self.stats.bad_frames} damaged frames received)")

    def _await(self, seq: int, name: str):
        """The ACK of seq; None to send again (a timeout, or a NAK of a damaged frame)."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            if not self._events:
                data = self.port.read(getattr(self.port, "in_waiting", 0) or 1)
                self._events.extend(self.decoder.feed(data) if data else ())
            resend = False
            while self._events:     # events after an ACK stay for the next request
                event = self._events.popleft()
                if isinstance(event, FrameError):
                    self.stats.bad_frames += 1
                elif event.type == MESSAGES["ACK"] and len(event.payload) >= ACK.size and \
                        ACK.unpack(event.payload, 0)["seq"] == seq:
                    return event
                elif event.type == MESSAGES["NAK"] and len(event.payload) >= NAK.size:
                    nak = NAK.unpack(event.payload, 0)
                    if nak["reason"] in FRAME_REASONS:    # a damaged frame's seq is untrusted: ours, perhaps
                        self.stats.naks += 1
                        resend = True
                    elif nak["seq"] == seq:
                        why = ERROR_NAMES.get(nak["reason"], f"reason {nak['reason']}")
                        raise ProtocolError(f"the board refused {name} (seq {seq}): {why}")
                    else:
                        self.stats.ignored += 1
                else:
                    self.stats.ignored += 1
            if resend:
                return None
        self.stats.timeouts += 1
        return None

"""The bridge's frame layer: firmware_bridge/protocol.py and el_protocol.h / el_protocol.c.

One layout, checked from both sides: the C header compiles strictly and gives every struct
the sizes and offsets of the Python layouts, and every number (messages, reasons, limits)
the Python one; frames written by Python are parsed by C and frames written by C by Python
(tests/protocol_harness.c, built with ASan and UBSan); every error reason, resynchronisation
after garbage, duplicate and stale sequence numbers across the 16-bit wrap; the host Link's
timeouts and bounded retries over pyserial's loop:// against a fake board that drops, NAKs,
repeats and damages its answers; `hypothesis` properties of the Python decoder; and the
C decoder under a seeded mutation fuzzer for 100,000 inputs.
"""
import os
import random
import shutil
import subprocess
import zlib
from pathlib import Path

import pytest
import serial
from hypothesis import HealthCheck, given, settings, strategies as st

from c_layouts import compile_host, compile_time_checks, printed_layouts
from conftest import C_SANITIZE as SANITIZE, C_STRICT as STRICT, FIRMWARE
from firmware_bridge import protocol as p

HARNESS = Path(__file__).with_name("protocol_harness.c")
SOURCES = [FIRMWARE / "src" / "el_protocol.c", FIRMWARE / "src" / "el_crc32.c"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
ARM_CPUS = {"cortex-m4": "fpv4-sp-d16", "cortex-m7": "fpv5-d16"}


_compile = compile_host


@pytest.fixture(scope="module")
def harness(gcc, tmp_path_factory):
    return _compile(gcc, tmp_path_factory.mktemp("protocol") / "protocol_harness", HARNESS, *SOURCES, flags=SANITIZE)


def _run(harness, *args, timeout=60) -> subprocess.CompletedProcess:
    return subprocess.run([str(harness), *map(str, args)], capture_output=True, text=True, timeout=timeout, env=ENV)


def c_decode(harness, tmp_path, wire: bytes) -> list[str]:
    (tmp_path / "wire.bin").write_bytes(wire)
    result = _run(harness, "decode", tmp_path / "wire.bin", tmp_path / "events.txt")
    assert result.returncode == 0, result.stderr
    return (tmp_path / "events.txt").read_text().splitlines()


def c_encode(harness, tmp_path, frames) -> subprocess.CompletedProcess:
    records = b"".join(bytes([t]) + s.to_bytes(2, "little") + len(pl).to_bytes(4, "little") + pl for t, s, pl in frames)
    (tmp_path / "records.bin").write_bytes(records)
    return _run(harness, "encode", tmp_path / "records.bin", tmp_path / "encoded.bin")


def describe(events) -> list[str]:
    """Python events as the harness prints C's."""
    return [f"frame {e.type} {e.seq} {e.flags} {len(e.payload)} {e.payload.hex()}" if isinstance(e, p.Frame)
            else f"error {p.ERROR_NAMES[e.reason]}" for e in events]


def forge(type=1, seq=0, payload=b"", magic=p.MAGIC, version=p.VERSION, flags=0, reserved=0, length=None,
          crc=None) -> bytes:
    """Wire bytes of a frame with any header, its CRC right unless crc is given."""
    body = p.HEADER.pack({"magic": magic, "version": version, "type": type, "seq": seq, "flags": flags,
                          "reserved": reserved, "length": len(payload) if length is None else length}) + payload
    crc = zlib.crc32(body) if crc is None else crc
    return p.cobs_encode(body + crc.to_bytes(4, "little")) + b"\x00"


def _payload(rng: random.Random, n: int, style: int) -> bytes:
    if style == 0:
        return bytes(rng.randrange(256) for _ in range(n))
    if style == 1:
        return bytes(rng.choice((0, 0, 0, rng.randrange(256))) for _ in range(n))
    return bytes(rng.randrange(1, 256) for _ in range(n))


SIZES = [0, 1, 2, 237, 238, 239, 240, 241, 242, 253, 254, 255, 492, 508, 1000, 4096, p.MAX_PAYLOAD - 1, p.MAX_PAYLOAD]


def sample_frames(seed=7):
    rng = random.Random(seed)
    frames = [(number, seq, b"") for number, seq in zip(p.MESSAGES.values(), (0, 1, 255, 256, 0x7FFF, 0x8000,
                                                                              0xFFFE, 0xFFFF, 42, 4242))]
    for i, n in enumerate(SIZES):
        for style in range(3):
            frames.append((rng.randrange(256), rng.randrange(65536), _payload(rng, n, style)))
    return frames


# ------------------------------------------------------------------ one layout, two sides
NUMBERS = ([(f"EL_MSG_{name}", number) for name, number in p.MESSAGES.items()] +
           [("EL_FRAME_ERR_" + name, number) for name, number in p.ERRORS.items() if number < 16] +
           [("EL_NAK_" + name, number) for name, number in p.ERRORS.items() if number >= 16] +
           [("EL_FRAME_VERSION", p.VERSION), ("EL_FRAME_HEADER_BYTES", p.HEADER_BYTES),
            ("EL_FRAME_CRC_BYTES", p.CRC_BYTES), ("EL_FRAME_OVERHEAD", p.OVERHEAD),
            ("EL_FRAME_MAX_PAYLOAD", p.MAX_PAYLOAD), ("EL_FRAME_MAX_BYTES", p.MAX_BYTES),
            ("EL_FRAME_MAX_WIRE", p.MAX_WIRE), ("EL_FRAME_SEQ_WINDOW", p.SEQ_WINDOW),
            ("EL_ACK_DUPLICATE", p.ACK_DUPLICATE), ("EL_COBS_MAX_ENCODED(1000u)", p.cobs_max_encoded(1000)),
            ("EL_FRAME_WIRE_BYTES(0u)", p.wire_bytes(0)), ("EL_FRAME_WIRE_BYTES(300u)", p.wire_bytes(300))])


def test_the_c_header_has_the_python_layouts_numbers_and_names(gcc, tmp_path):
    printed, expected = printed_layouts(
        gcc, tmp_path, "el_protocol.h", p.LAYOUTS, NUMBERS, sources=SOURCES,
        extra_c=['    printf("magic %s\\n", EL_FRAME_MAGIC);'] +
                [f'    printf("name {n} %s\\n", el_frame_error_name((el_frame_error){n}));' for n in p.ERROR_NAMES],
        extra_expected=[f"magic {p.MAGIC.decode()}"] + [f"name {n} {name}" for n, name in p.ERROR_NAMES.items()])
    assert printed == expected
    assert p.HEADER.size == 12 and p.MAX_PAYLOAD >= 4096 + 64


@pytest.mark.parametrize("cpu", list(ARM_CPUS))
def test_el_protocol_compiles_for_cortex_m_calling_only_memcpy_memset_and_el_crc32(arm_gcc, cpu, tmp_path):
    """-Os, strict flags, no diagnostics, every layout offset asserted at compile time; the
    object calls nothing but string.h's memcpy and memset and el_crc32 (no libc, no heap)."""
    checks = compile_time_checks("el_protocol.h", p.LAYOUTS)
    (tmp_path / "layout.c").write_text("\n".join(checks) + "\n")
    objects = []
    for source in (SOURCES[0], tmp_path / "layout.c"):
        obj = tmp_path / (source.stem + ".o")
        cmd = [arm_gcc, f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=hard", f"-mfpu={ARM_CPUS[cpu]}", "-Os", *STRICT,
               f"-I{FIRMWARE / 'include'}", "-c", str(source), "-o", str(obj)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        objects.append(obj)
    nm = shutil.which("arm-none-eabi-nm")
    if nm is not None:
        listed = subprocess.run([nm, "-u", str(objects[0])], capture_output=True, text=True, check=True).stdout
        undefined = {line.split()[-1] for line in listed.splitlines() if line.strip() and not line.endswith(":")}
        assert undefined <= {"memcpy", "memset", "el_crc32"}, undefined


# ------------------------------------------------------------------ each side parses the other's frames
def test_frames_written_by_python_are_parsed_by_c(harness, tmp_path):
    frames = sample_frames()
    wire = b"".join(p.build_frame(t, s, pl) for t, s, pl in frames)
    assert c_decode(harness, tmp_path, wire) == describe([p.Frame(t, s, pl) for t, s, pl in frames])


def test_frames_written_by_c_are_pythons_bytes_and_parse_in_python(harness, tmp_path):
    frames = sample_frames(seed=8)
    result = c_encode(harness, tmp_path, frames)
    assert result.returncode == 0, result.stderr
    wire = (tmp_path / "encoded.bin").read_bytes()
    assert wire == b"".join(p.build_frame(t, s, pl) for t, s, pl in frames)
    assert p.FrameDecoder().feed(wire) == [p.Frame(t, s, pl) for t, s, pl in frames]
    for t, s, pl in frames:
        assert len(p.build_frame(t, s, pl)) <= p.wire_bytes(len(pl))


def test_both_refuse_a_payload_over_the_limit(harness, tmp_path):
    result = c_encode(harness, tmp_path, [(1, 0, bytes(p.MAX_PAYLOAD + 1))])
    assert result.returncode == 3 and result.stderr.strip() == f"el_frame_build: refused a payload of {p.MAX_PAYLOAD + 1} bytes"
    with pytest.raises(p.ProtocolError, match=f"at most {p.MAX_PAYLOAD} bytes, not {p.MAX_PAYLOAD + 1}"):
        p.build_frame(1, 0, bytes(p.MAX_PAYLOAD + 1))


def test_cobs_in_c_is_pythons_and_decodes_back(harness, tmp_path):
    rng = random.Random(3)
    cases = [b"", b"\x00", b"\x00\x00", b"\x01", bytes(range(1, 255)), bytes(range(1, 256)), bytes(range(256)),
             b"\xff" * 253, b"\xff" * 254, b"\xff" * 255, b"\xff" * 508, b"\x11\x22\x00\x33"]
    cases += [_payload(rng, n, style) for n in (1, 254, 700, 5000) for style in range(3)]
    for data in cases:
        (tmp_path / "in.bin").write_bytes(data)
        result = _run(harness, "cobs", tmp_path / "in.bin", tmp_path / "out.bin")
        assert result.returncode == 0, result.stderr
        encoded = (tmp_path / "out.bin").read_bytes()
        assert encoded == p.cobs_encode(data) and 0 not in encoded
        assert len(encoded) <= p.cobs_max_encoded(len(data))
        assert p.cobs_decode(encoded) == data
    assert p.cobs_encode(b"\x11\x22\x00\x33") == bytes.fromhex("03112202 33")   # the classic example
    assert p.cobs_encode(b"\x00") == b"\x01\x01"


# ------------------------------------------------------------------ errors and resynchronisation
HELLO = p.build_frame(p.MESSAGES["HELLO"], 5)
REASON_CASES = {
    "OVERLONG": p.cobs_encode(b"\x01" * (p.MAX_BYTES + 1)) + b"\x00",
    "COBS": b"\x05\x45\x46\x00",                                   # the block promised 4 bytes, 2 came
    "SHORT": p.cobs_encode(b"EF\x01\x01") + b"\x00",
    "MAGIC": forge(magic=b"EX"),
    "VERSION": forge(version=2),
    "LENGTH": forge(payload=b"abc", length=4),
    "CRC": forge(payload=b"abc", crc=zlib.crc32(b"not it")),
    "HEADER": forge(reserved=1),
}


@pytest.mark.parametrize("reason", list(REASON_CASES))
def test_each_error_reason_is_reported_by_both_sides_and_the_next_frame_still_decodes(harness, reason, tmp_path):
    wire = REASON_CASES[reason] + HELLO
    events = p.FrameDecoder().feed(wire)
    assert events == [p.FrameError(p.ERRORS[reason]), p.Frame(p.MESSAGES["HELLO"], 5)]
    assert c_decode(harness, tmp_path, wire) == describe(events)
    message = str(events[0])
    assert "\n" not in message and message.startswith(f"frame refused: {p.ERROR_NAMES[p.ERRORS[reason]]}")
    with pytest.raises(p.FrameError, match=p.ERROR_NAMES[p.ERRORS[reason]]):
        p.decode_frame(REASON_CASES[reason])


def test_flags_pass_through_and_an_idle_delimiter_is_no_frame(harness, tmp_path):
    wire = b"\x00\x00" + forge(type=3, seq=9, flags=0x40, payload=b"\x00x") + b"\x00"
    events = p.FrameDecoder().feed(wire)
    assert events == [p.Frame(3, 9, b"\x00x", 0x40)]
    assert c_decode(harness, tmp_path, wire) == describe(events)


def test_the_decoder_resynchronises_after_garbage(harness, tmp_path):
    rng = random.Random(11)
    frames = [p.Frame(rng.choice(list(p.MESSAGES.values())), rng.randrange(65536), _payload(rng, n, n % 3))
              for n in (0, 3, 254, 600, 4352)]
    wire = bytearray()
    for i, frame in enumerate(frames):
        garbage = bytes(rng.randrange(1, 256) for _ in range((0, 7, 300, 6000, 2)[i]))
        if garbage:     # noise, then the delimiter a sender puts before a frame after silence
            wire += garbage + b"\x00"
        wire += p.build_frame(frame.type, frame.seq, frame.payload)
    # noise run straight into a frame (no 0x00 between): that frame is lost, the next one is not
    wire += b"\x07\x01\x02" + p.build_frame(1, 1) + p.build_frame(2, 2)
    events = p.FrameDecoder().feed(bytes(wire))
    assert [e for e in events if isinstance(e, p.Frame)] == frames + [p.Frame(2, 2)]
    errors = [e.reason for e in events if not isinstance(e, p.Frame)]
    assert len(errors) == 5 and p.ERRORS["OVERLONG"] in errors
    assert c_decode(harness, tmp_path, bytes(wire)) == describe(events)
    # the same bytes in any pieces give the same events
    decoder, pieced, at = p.FrameDecoder(), [], 0
    while at < len(wire):
        step = rng.choice((1, 2, 5, 100, 3000))
        pieced += decoder.feed(bytes(wire[at:at + step]))
        at += step
    assert pieced == events


def _mutated_stream(rng: random.Random, count: int) -> bytes:
    """count frames, each mutated 0-3 times (bit flip, insert, delete, truncate, a repeated
    stretch), back to back; _mutated_stream.built: the (type, seq, payload) they came from."""
    out = bytearray()
    _mutated_stream.built = []
    for _ in range(count):
        spec = (rng.randrange(256), rng.randrange(65536),
                _payload(rng, rng.choice((0, 5, 40, 253, 254, 300, 1200)), rng.randrange(3)))
        _mutated_stream.built.append(spec)
        frame = bytearray(p.build_frame(*spec))
        for _ in range(rng.randrange(4)):
            if not frame:
                break
            kind, at = rng.randrange(5), rng.randrange(len(frame))
            if kind == 0:
                frame[at] ^= 1 << rng.randrange(8)
            elif kind == 1:
                frame.insert(at, rng.randrange(256))
            elif kind == 2:
                del frame[at]
            elif kind == 3:
                del frame[at:]
            else:
                frame[at:at] = frame[:rng.randrange(len(frame) + 1)]
        out += frame
    return bytes(out)


def test_c_and_python_decoders_report_the_same_events_on_mutated_streams(harness, tmp_path):
    wire = _mutated_stream(random.Random(2024), 3000)
    events = p.FrameDecoder().feed(wire)
    assert len({type(e) for e in events}) == 2 and len({e.reason for e in events if isinstance(e, p.FrameError)}) >= 5
    assert c_decode(harness, tmp_path, wire) == describe(events)


# ------------------------------------------------------------------ sequence numbers
SEQ_CASES = [  # (seq, verdict) on one history
    (5, "new"), (5, "duplicate"), (4, "stale"), (6, "new"), (5, "stale"), (6, "duplicate"),
    (6 - p.SEQ_WINDOW & 0xFFFF, "stale"), (6 - p.SEQ_WINDOW - 1 & 0xFFFF, "new"),        # far behind: a new session
    (65534, "new"), (65535, "new"), (65535, "duplicate"), (0, "new"), (65535, "stale"), (65534, "stale"),
    (0, "duplicate"), (1, "new"), (1 - p.SEQ_WINDOW & 0xFFFF, "stale"), (300, "new"), (300 + 0x7FFF, "new"),
]


def test_duplicates_and_stale_frames_across_the_wrap_in_python_and_c(harness):
    seqs = [seq for seq, _ in SEQ_CASES]
    sequencer = p.Sequencer()
    assert [sequencer.seen(seq) for seq in seqs] == [verdict for _, verdict in SEQ_CASES]
    result = _run(harness, "seen", *seqs)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [verdict for _, verdict in SEQ_CASES]
    rng = random.Random(5)
    walk, seq = [], 65000
    for _ in range(3000):   # a sender's walk over the wrap with repeats and late frames
        seq = (seq + rng.choice((1, 1, 1, 0, -1, -3, -300, 2))) & 0xFFFF
        walk.append(seq)
    sequencer = p.Sequencer()
    result = _run(harness, "seen", *walk)
    assert result.stdout.split() == [sequencer.seen(s) for s in walk]


def test_a_sender_counts_across_the_wrap():
    sequencer = p.Sequencer(first=65534)
    assert [sequencer.next() for _ in range(4)] == [65534, 65535, 0, 1]


# ------------------------------------------------------------------ the host's link over loop://
class FakeBoard:
    """A board behind the link: decodes what the host writes, runs each new frame once, and
    answers into a pyserial loop:// port that the host reads. `script` says what becomes of
    each successive answer: 'ok', 'drop', 'nak-crc' (a NAK for a damaged frame), 'refuse'
    (NAK unknown type), 'twice' (the ACK sent two times) or 'damage' (a bit flipped)."""

    def __init__(self, script=()):
        self.loop = serial.serial_for_url("loop://", timeout=0.01)
        self.decoder = p.FrameDecoder()
        self.history = p.Sequencer()
        self.board_seq = p.Sequencer(first=0x100)
        self.script = list(script)
        self.received, self.executed = [], []

    # the port the host's Link sees
    @property
    def timeout(self):
        return self.loop.timeout

    @timeout.setter
    def timeout(self, value):
        self.loop.timeout = value

    @property
    def in_waiting(self):
        return self.loop.in_waiting

    def read(self, n):
        return self.loop.read(n)

    def write(self, data):
        for frame in self.decoder.feed(data):
            assert isinstance(frame, p.Frame)
            self.received.append(frame)
            verdict = self.history.seen(frame.seq)
            if verdict == "new":
                self.executed.append(frame)
            if verdict == "stale":
                continue
            self._answer(frame, verdict == "duplicate")
        return len(data)

    def _answer(self, frame, duplicate):
        what = self.script.pop(0) if self.script else "ok"
        ack = p.build_frame(p.MESSAGES["ACK"], self.board_seq.next(),
                            p.ack_payload(frame.seq, duplicate, data=b"hi:" + frame.payload))
        if what == "drop":
            return
        if what == "nak-crc":
            self.loop.write(p.build_frame(p.MESSAGES["NAK"], self.board_seq.next(),
                                          p.nak_payload(0xDEAD, p.ERRORS["CRC"])))
        elif what == "refuse":
            self.loop.write(p.build_frame(p.MESSAGES["NAK"], self.board_seq.next(),
                                          p.nak_payload(frame.seq, p.ERRORS["UNKNOWN_TYPE"])))
        elif what == "twice":
            self.loop.write(ack + ack)
        elif what == "damage":
            self.loop.write(ack[:5] + bytes([ack[5] ^ 0x10]) + ack[6:])
        else:
            self.loop.write(ack)


def _ack(frame):
    return p.ACK.unpack(frame.payload, 0), frame.payload[p.ACK.size:]


def test_the_link_retries_when_the_first_answers_are_lost_and_the_board_runs_the_frame_once():
    board = FakeBoard(["drop", "drop"])
    link = p.Link(board, timeout=0.2, attempts=3)
    answer = link.request(p.MESSAGES["INFER"], b"x")
    fields, data = _ack(answer)
    assert fields == {"seq": 0, "flags": p.ACK_DUPLICATE} and data == b"hi:x"
    assert len(board.received) == 3 and board.executed == [p.Frame(p.MESSAGES["INFER"], 0, b"x")]
    assert (link.stats.sent, link.stats.retries, link.stats.timeouts) == (3, 2, 2)
    fields, _ = _ack(link.request(p.MESSAGES["STATS"]))        # the next request: the next seq
    assert fields == {"seq": 1, "flags": 0} and len(board.executed) == 2


def test_the_link_gives_up_after_its_attempts_with_one_clear_error():
    import time
    board = FakeBoard(["drop"] * 3)
    link = p.Link(board, timeout=0.15, attempts=3)
    start = time.monotonic()
    with pytest.raises(p.ProtocolError) as raised:
        link.request(p.MESSAGES["HELLO"])
    elapsed = time.monotonic() - start
    assert str(raised.value) == ("no answer to HELLO (seq 0) after 3 attempts of 0.15 s each "
                                 "(3 timeouts, 0 NAKs, 0 damaged frames received)")
    assert 0.4 < elapsed < 2.0 and len(board.received) == 3 and len(board.executed) == 1


def test_a_nak_for_a_damaged_frame_resends_at_once_and_a_refusal_is_final():
    import time
    board = FakeBoard(["nak-crc"])
    link = p.Link(board, timeout=5.0, attempts=3)
    start = time.monotonic()
    fields, _ = _ack(link.request(p.MESSAGES["COMMIT"]))
    assert time.monotonic() - start < 2.0 and link.stats.naks == 1 and link.stats.retries == 1
    assert fields["seq"] == 0
    board.script = ["refuse"]
    with pytest.raises(p.ProtocolError, match=r"^the board refused TRAIN \(seq 1\): unknown type$"):
        link.request(p.MESSAGES["TRAIN"])


def test_late_duplicated_and_damaged_answers_are_skipped():
    board = FakeBoard(["twice", "damage"])
    link = p.Link(board, timeout=0.2, attempts=3)
    assert _ack(link.request(p.MESSAGES["PUT_MODEL"], b"1"))[0]["seq"] == 0
    # the second copy of seq 0's ACK waits in the port; then seq 1's first answer is damaged
    assert _ack(link.request(p.MESSAGES["PUT_MODEL"], b"2"))[0] == {"seq": 1, "flags": p.ACK_DUPLICATE}
    assert link.stats.ignored == 1 and link.stats.bad_frames == 1 and link.stats.retries == 1
    assert [f.payload for f in board.executed] == [b"1", b"2"]


def test_the_link_refuses_nonsense_settings():
    with pytest.raises(p.ProtocolError, match="at least 1 attempt"):
        p.Link(FakeBoard(), attempts=0)


# ------------------------------------------------------------------ hypothesis: the Python decoder
FUZZ = settings(max_examples=400, deadline=None, database=None,   # no .hypothesis/ folder in the checkout
                suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.lists(st.binary(max_size=300), max_size=8))
def test_random_bytes_give_only_frames_and_frame_errors(pieces):
    decoder = p.FrameDecoder()
    for piece in pieces:
        for event in decoder.feed(piece):
            assert isinstance(event, (p.Frame, p.FrameError)) and "\n" not in str(event)
    try:
        p.decode_frame(b"".join(pieces))
    except p.FrameError:
        pass
    try:
        p.cobs_decode(b"".join(pieces))
    except p.FrameError:
        pass


payloads = st.one_of(st.binary(max_size=600), st.sampled_from(SIZES).flatmap(
    lambda n: st.binary(min_size=n, max_size=n)))


@FUZZ
@given(st.integers(0, 255), st.integers(0, 65535), payloads)
def test_build_then_decode_gives_the_frame_back(type, seq, payload):
    wire = p.build_frame(type, seq, payload)
    assert 0 not in wire[:-1] and wire[-1] == 0 and len(wire) <= p.wire_bytes(len(payload))
    assert p.decode_frame(wire) == p.Frame(type, seq, payload)
    assert p.cobs_decode(p.cobs_encode(payload)) == payload


mutation = st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "truncate", "repeat"]),
                     st.integers(0, 1 << 16), st.integers(0, 255))


@FUZZ
@given(st.integers(0, 255), st.integers(0, 65535), st.binary(max_size=400), st.lists(mutation, min_size=1, max_size=6))
def test_a_corrupted_frame_is_detected_or_is_the_original(type, seq, payload, mutations):
    original = p.Frame(type, seq, payload)
    wire = bytearray(p.build_frame(type, seq, payload))
    for kind, where, value in mutations:
        at = where % len(wire) if wire else 0
        if kind == "flip" and wire:
            wire[at] ^= 1 << (value % 8)
        elif kind == "set" and wire:
            wire[at] = value
        elif kind == "insert":
            wire.insert(at, value)
        elif kind == "delete" and wire:
            del wire[at]
        elif kind == "truncate":
            del wire[at:]
        elif kind == "repeat":
            wire[at:at] = wire[at:at + value % 32]
    events = p.FrameDecoder().feed(bytes(wire) + b"\x00" + p.build_frame(1, 77))
    assert events[-1] == p.Frame(1, 77)       # and the line is in step again
    assert all(e == original for e in events[:-1] if isinstance(e, p.Frame))


# ------------------------------------------------------------------ the C decoder under a mutation fuzzer
def test_the_c_decoder_survives_100000_mutated_inputs_under_asan_and_ubsan(harness):
    result = _run(harness, "fuzz", 12345, 100_000, timeout=300)    # a hang fails by the timeout
    assert result.returncode == 0 and result.stderr == "", result.stderr
    words = result.stdout.split()
    counts = dict(zip(words[0:8:2], map(int, words[1:8:2])))
    assert counts["inputs"] == 100_000 and counts["frames"] > 10_000 and counts["intact"] > 5_000
    reasons = dict(item.split("=") for item in " ".join(words[8:]).replace("bad ", "bad_").replace("length ", "length_")
                   .split())
    assert set(reasons) == {"overlong", "bad_COBS", "short", "bad_magic", "bad_version", "length_mismatch",
                            "bad_CRC", "bad_header"}
    assert all(int(n) > 0 for n in reasons.values()), reasons


# ------------------------------------------------------------------ docs/protocol.md
def test_the_documented_byte_level_example_is_what_the_code_writes():
    text = DOCS.read_text()
    hello = p.build_frame(p.MESSAGES["HELLO"], 1)
    ack = p.build_frame(p.MESSAGES["ACK"], 0x100, p.ack_payload(1))
    nak = p.build_frame(p.MESSAGES["NAK"], 0x101, p.nak_payload(2, p.ERRORS["CRC"]))
    assert nak.hex(" ") in text
    for wire in (hello, ack):
        assert wire.hex(" ") in text
        frame = p.decode_frame(wire)
        raw = p.cobs_decode(wire[:-1])
        assert raw.hex(" ") in text and p.check_frame(raw) == frame


def test_the_python_decoder_survives_100000_mutated_inputs():
    """The C fuzzer's counterpart for protocol.py (the hypothesis properties above search
    for counterexamples; this covers volume): seeded mutations of valid frames, one decoder
    for all of them, every accepted frame one that was built."""
    rng, decoder = random.Random(99), p.FrameDecoder()
    built, frames, errors = [set(), set()], 0, set()
    for index in range(0, 100_000, 500):
        wire = _mutated_stream(rng, 500)
        built = [built[1], set(_mutated_stream.built)]
        for event in decoder.feed(wire):
            if isinstance(event, p.Frame):
                frames += 1
                assert (event.type, event.seq, event.payload) in built[0] | built[1]
            else:
                errors.add(event.reason)
    assert frames > 15_000 and errors >= {1, 2, 3, 4, 6, 7}

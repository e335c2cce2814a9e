"""The bridge's message layer: firmware_bridge/messages.py and el_messages.h.

One layout, checked from both sides, as tests/test_protocol.py does for the frames: the C
header compiles strictly (host and Cortex-M) with every struct of the Python layouts' size
and offsets and every number the Python one; payloads written by Python, valid and damaged,
get the same verdict from el_msg_check_request / el_msg_check_reply as from check_request /
check_reply, and the C side reads the same field values from them; payloads written through
the C structs (tests/messages_harness.c) are Python's bytes and parse in Python. hypothesis:
the parsers turn any bytes into fields or one MessageError, never another exception, and
what a builder writes parses back to its fields. docs/protocol.md's examples are what the
code writes.
"""
import math
import os
import random
import struct
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from c_layouts import compile_host, compile_time_checks, printed_layouts
from conftest import C_SANITIZE as SANITIZE, C_STRICT as STRICT, FIRMWARE
from firmware_bridge import messages as m
from firmware_bridge import protocol as p

HARNESS = Path(__file__).with_name("messages_harness.c")
SOURCES = [FIRMWARE / "src" / "el_protocol.c", FIRMWARE / "src" / "el_crc32.c"]
DOCS = Path(__file__).resolve().parents[1] / "docs" / "protocol.md"
ENV = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
ARM_CPUS = {"cortex-m4": "fpv4-sp-d16", "cortex-m7": "fpv5-d16"}
NAMES = list(m.SPECS)


def _compile(gcc, out: Path, *sources, flags=()):
    return compile_host(gcc, out, *sources, flags=flags, includes=[HARNESS.parent])


@pytest.fixture(scope="module")
def harness(gcc, tmp_path_factory):
    return _compile(gcc, tmp_path_factory.mktemp("messages") / "messages_harness", HARNESS, *SOURCES, flags=SANITIZE)


def _run(harness, *args) -> subprocess.CompletedProcess:
    return subprocess.run([str(harness), *map(str, args)], capture_output=True, text=True, timeout=60, env=ENV)


# ------------------------------------------------------------------ one layout, two sides
NUMBERS = ([("EL_MSG_VERSION", m.VERSION), ("EL_MSG_MAX_CHUNK", m.MAX_CHUNK), ("EL_MSG_MAX_BATCH", m.MAX_BATCH),
            ("EL_MSG_NONE", m.NONE), ("EL_MSG_SHA256_BYTES", m.SHA_BYTES), ("EL_MSG_REPLY_ROOM", m.REPLY_ROOM),
            ("EL_MSG_MAX_OUTPUT", m.MAX_OUTPUT), ("EL_MSG_MAX_PAGE", m.MAX_PAGE),
            ("EL_TRAIN_RESTART", m.TRAIN_RESTART)] +
           [(f"EL_STATUS_{name}", n) for name, n in m.STATUS.items()] +
           [(f"EL_XFER_{name}", n) for name, n in m.XFER.items()] +
           [(f"EL_TRIAL_{name}", n) for name, n in m.TRIAL.items()] +
           [(f"EL_TRAIN_MODE_{name.upper()}", n) for name, n in m.TRAIN_MODES.items()] +
           [(f"EL_MSG_{name}", n) for name, n in m.TYPES.items()])


def test_the_c_header_has_the_python_layouts_and_numbers(gcc, tmp_path):
    printed, expected = printed_layouts(gcc, tmp_path, "el_messages.h", m.LAYOUTS, NUMBERS, sources=SOURCES,
                                        includes=[HARNESS.parent])
    assert printed == expected
    # a full frame carries the largest chunk with its header, and the largest replies
    assert m.PUT_MODEL.size + m.MAX_CHUNK <= p.MAX_PAYLOAD
    assert m.TRAIN.size + m.MAX_BATCH + m.MAX_CHUNK <= p.MAX_PAYLOAD
    assert 4 + m.RESULT.size + m.TRAIN_REPLY.size + m.MAX_BATCH * m.TRAIN_RESULT.size <= p.MAX_PAYLOAD
    assert m.MAX_OUTPUT > 1000 and m.MAX_PAGE >= m.MAX_CHUNK


@pytest.mark.parametrize("cpu", list(ARM_CPUS))
def test_el_messages_compiles_for_cortex_m_with_the_same_offsets(arm_gcc, cpu, tmp_path):
    """-Os, strict flags, no diagnostics; every size and offset asserted at compile time on
    the board's ABI (where uint64_t is 8-aligned, as the layouts place it)."""
    checks = compile_time_checks("el_messages.h", m.LAYOUTS)
    checks.append("int check(const uint8_t *p, uint32_t n);")
    checks.append("int check(const uint8_t *p, uint32_t n) { return (int)el_msg_check_request(p[0], p + 1, n - 1) + "
                  "(int)el_msg_check_reply(p[0], p + 1, n - 1); }")
    (tmp_path / "layout.c").write_text("\n".join(checks) + "\n")
    cmd = [arm_gcc, f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=hard", f"-mfpu={ARM_CPUS[cpu]}", "-Os", *STRICT,
           f"-I{FIRMWARE / 'include'}", "-c", str(tmp_path / "layout.c"), "-o", str(tmp_path / "layout.o")]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr


# ------------------------------------------------------------------ payloads: random, valid and damaged
def _f32(rng) -> float:
    return struct.unpack("<f", struct.pack("<f", rng.choice([0.0, 1e-3, 0.5, 3.0, rng.uniform(0, 10)])))[0]


def _bytes(rng, n) -> bytes:
    return bytes(rng.randrange(256) for _ in range(n))


def _chunk(rng, limit=None):
    length = rng.choice([0, 1, 17, 255, 1000, m.MAX_CHUNK])
    total = max(length, 1) + rng.choice([0, 0, 3, 100_000, rng.randrange(1 << 31)])
    if limit is not None:
        total = limit
        length = min(length, total)
    return total, rng.randrange(total - length + 1), _bytes(rng, length)


def random_request(rng, name):
    """(fields, tail) of a valid request."""
    u32 = lambda: rng.randrange(1 << 32)  # noqa: E731
    if name == "HELLO":
        return {"version": rng.randrange(1, 1 << 32), "session": u32()}, b""
    if name in ("PUT_MODEL", "INFER"):
        total, offset, data = _chunk(rng)
        fields = {"total_bytes": total, "offset": offset, "length": len(data), "flags": rng.choice([0, u32()])}
        if name == "PUT_MODEL":
            fields["sha256"] = _bytes(rng, 32)
        return fields, data
    if name == "COMMIT":
        return {"sha256": _bytes(rng, 32), "total_bytes": rng.randrange(1, 1 << 32), "flags": 0}, b""
    if name == "TRAIN":
        mode = rng.choice([1, 2])
        count = rng.choice([1, 2, 3, 5, 64, rng.randrange(1, 65)])
        sample = rng.choice([1, 7, 300, 27648, rng.randrange(1, 10_000)])
        total = count * sample
        length = min(rng.choice([0, 1, 100, m.MAX_CHUNK]), total)
        labels = _bytes(rng, count)
        fields = {"mode": mode, "count": count, "sample_bytes": sample, "cut": m.NONE if mode == 1 else u32(),
                  "batch": u32(), "seed": u32(), "lr": _f32(rng), "classifier_lr": _f32(rng),
                  "flags": rng.choice([0, 1]), "offset": rng.randrange(total - length + 1), "length": length}
        return fields, labels + bytes(-count % 4) + _bytes(rng, length)
    if name == "GET_WEIGHTS":
        return {"index": rng.randrange(20), "offset": u32(), "max_bytes": rng.choice([0, 100, m.MAX_PAGE]),
                "reserved": 0}, b""
    if name == "STATS":
        return {"flags": rng.choice([0, u32()])}, b""
    return {"flags": 0, "reserved": rng.choice([0, u32()])}, b""      # RESET


def random_reply(rng, name):
    """(result, fields or None, tail) of a valid reply."""
    u32 = lambda: rng.randrange(1 << 32)  # noqa: E731
    status = 0 if rng.random() < 0.8 else rng.choice(list(m.STATUS.values())[1:] + [200])
    result = {"status": status, "reserved": 0, "detail": rng.choice([0, u32()])}
    layout = m.SPECS[name][1]
    if status or layout is None:
        return result, None, b""
    fields, tail = {}, b""
    for field, code in layout.fields:
        fields[field] = _bytes(rng, int(code[:-1])) if code.endswith("s") else \
            rng.randrange(1 << 64) if code == "Q" else u32()
    if name == "PUT_MODEL":
        fields["state"] = rng.randrange(3)
        fields["next_offset"] = rng.randrange(fields["total_bytes"] + 1)
    elif name == "INFER":
        fields["state"] = rng.randrange(3)
        fields["output_bytes"] = rng.choice([1, 2, 10, m.MAX_OUTPUT]) if fields["state"] == 2 else 0
        tail = _bytes(rng, fields["output_bytes"])
    elif name == "TRAIN":
        fields["state"] = rng.randrange(3)
        fields["count"] = rng.choice([1, 3, m.MAX_BATCH]) if fields["state"] == 2 else 0
        tail = b"".join(m.TRAIN_RESULT.pack({"block_loss": [_f32(rng) for _ in range(4)], "loss": _f32(rng),
                                             "predicted": rng.randrange(64)}) for _ in range(fields["count"]))
    elif name == "GET_WEIGHTS":
        fields["count"] = rng.randrange(1, 10)
        fields["index"] = rng.randrange(fields["count"])
        fields["weight_bytes"], fields["bias_bytes"] = rng.randrange(100_000), 4 * rng.randrange(1000)
        whole = fields["weight_bytes"] + fields["bias_bytes"]
        fields["length"] = min(rng.choice([0, 5, m.MAX_PAGE]), whole)
        fields["offset"] = rng.randrange(whole - fields["length"] + 1)
        tail = _bytes(rng, fields["length"])
    return result, fields, tail


def damage(rng, payload: bytes) -> bytes:
    """One change a parser must judge: a byte cut or added, a field byte overwritten."""
    data = bytearray(payload)
    kind = rng.randrange(4)
    if kind == 0 and data:
        del data[rng.randrange(len(data)):]
    elif kind == 1:
        data += bytes([rng.randrange(256)])
    elif data:
        at = rng.randrange(min(len(data), 64))
        data[at] = rng.choice([0, 0xFF, rng.randrange(256)])
    return bytes(data)


def perturbed(layout, payload: bytes, at: int):
    """payload with each integer field of the struct at `at` set, in turn, to 0, 1, its value
    -1 and +1, the largest value, and each float to -1, NaN and infinity: every rule on a
    field meets a value just inside and just outside it."""
    offsets = layout.offsets()
    for name, code in layout.fields:
        where = at + offsets[name]
        if code.endswith("s") or where + struct.calcsize("<" + code) > len(payload):
            continue
        if code == "f":
            values = [struct.pack("<f", v) for v in (-1.0, math.nan, math.inf)]
        else:
            width = struct.calcsize("<" + code)
            value = int.from_bytes(payload[where:where + width], "little")
            top = (1 << 8 * width) - 1
            values = [v.to_bytes(width, "little") for v in {0, 1, (value - 1) & top, (value + 1) & top, top}]
        for raw in values:
            yield payload[:where] + raw + payload[where + len(raw):]


def cases(seed=1, per_message=40):
    """(type, direction, payload): valid requests and replies of every message, damaged
    ones (each field perturbed, bytes cut, added, overwritten), unknown types and garbage."""
    rng, out = random.Random(seed), []
    for name in NAMES:
        t = m.TYPES[name]
        request_layout, reply_layout = m.SPECS[name]
        for k in range(per_message):
            fields, tail = random_request(rng, name)
            request = m.request(name, fields, tail)
            result, body, rtail = random_reply(rng, name)
            reply = m.reply(name, body, rtail, result["status"], result["detail"])
            out += [(t, 0, request), (t, 1, reply)]
            if k % 2:
                out += [(t, 0, damage(rng, request)), (t, 1, damage(rng, reply))]
            if k < 4:
                out += [(t, 0, x) for x in perturbed(request_layout, request, 0)]
                out += [(t, 1, x) for x in perturbed(m.RESULT, reply, 0)]
                if body is not None:
                    out += [(t, 1, x) for x in perturbed(reply_layout, reply, m.RESULT.size)]
        if name == "TRAIN":                       # the labels' padding, byte by byte
            fields, tail = random_request(rng, name)
            fields["count"] = 1
            request = m.request(name, {**fields, "length": 0, "offset": 0}, bytes([3, 0, 0, 0]))
            out += [(t, 0, request[:m.TRAIN.size + i] + b"\x01" + request[m.TRAIN.size + i + 1:]) for i in range(4)]
    out += [(t, d, _bytes(rng, rng.randrange(60))) for t in (0, 9, 0x80, 0x81, 255) for d in (0, 1)]
    out += [(rng.randrange(1, 9), rng.randrange(2), _bytes(rng, rng.randrange(200))) for _ in range(200)]
    return out


def _fields_text(layout, payload: bytes, at: int) -> str:
    """ name=value per field, as the harness prints them (floats as their bits)."""
    offsets, parts = layout.offsets(), []
    for name, code in layout.fields:
        where = at + offsets[name]
        if code.endswith("s"):
            parts.append(f" {name}={payload[where:where + int(code[:-1])].hex()}")
        elif code.endswith("f"):
            count = int(code[:-1] or 1)
            bits = struct.unpack_from(f"<{count}I", payload, where)
            parts.append(f" {name}=" + ",".join(f"0x{b:08x}" for b in bits))
        else:
            parts.append(f" {name}={struct.unpack_from('<' + code, payload, where)[0]}")
    return "".join(parts)


def describe(type: int, direction: int, payload: bytes) -> str:
    """Python's verdict and fields of one payload, in the harness's words."""
    try:
        (m.check_request if direction == 0 else m.check_reply)(type, payload)
    except m.MessageError as e:
        return p.ERROR_NAMES[e.reason]
    name = m.TYPE_NAMES[type]
    if direction == 0:
        layout = m.SPECS[name][0]
        return f"ok {layout.name}{_fields_text(layout, payload, 0)} tail={payload[layout.size:].hex()}"
    text = f"ok {m.RESULT.name}{_fields_text(m.RESULT, payload, 0)}"
    layout = m.SPECS[name][1]
    if m.RESULT.unpack(payload, 0)["status"] == 0 and layout is not None:
        at = m.RESULT.size
        text += f" {layout.name}{_fields_text(layout, payload, at)}"
        if name == "TRAIN":
            count = layout.unpack(payload, at)["count"]
            for k in range(count):
                text += " result" + _fields_text(m.TRAIN_RESULT, payload, at + layout.size + k * m.TRAIN_RESULT.size)
        else:
            text += f" tail={payload[at + layout.size:].hex()}"
    return text


def test_payloads_written_by_python_get_the_same_verdict_and_fields_in_c(harness, tmp_path):
    all_cases = cases()
    records = b"".join(bytes([t, d]) + len(pl).to_bytes(4, "little") + pl for t, d, pl in all_cases)
    (tmp_path / "in.bin").write_bytes(records)
    result = _run(harness, "check", tmp_path / "in.bin", tmp_path / "out.txt")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    printed = (tmp_path / "out.txt").read_text().splitlines()
    expected = [describe(t, d, pl) for t, d, pl in all_cases]
    assert len(printed) == len(expected)
    for k, (c, py) in enumerate(zip(printed, expected)):
        assert c == py, f"case {k} {all_cases[k][:2]}: C says {c[:200]!r}, Python {py[:200]!r}"
    verdicts = {line.split()[0] for line in expected}
    assert verdicts == {"ok", "bad", "unknown"}
    assert sum(line.startswith("ok") for line in expected) > 700
    assert sum(line.startswith("bad") for line in expected) > 150


def _spec_values(layout, fields) -> list[str]:
    out = []
    for name, code in layout.fields:
        value = fields[name]
        if code.endswith("s"):
            out.append(value.hex())
        elif code == "f":
            out.append(f"0x{struct.unpack('<I', struct.pack('<f', value))[0]:08x}")
        else:
            out.append(str(value))
    return out


def test_payloads_written_through_the_c_structs_are_pythons_bytes_and_parse_in_python(harness, tmp_path):
    rng, lines, expected, parsed_as = random.Random(2), [], [], []
    for name in NAMES:
        t = m.TYPES[name]
        for _ in range(30):
            fields, tail = random_request(rng, name)
            lines.append(" ".join([str(t), "0", *_spec_values(m.SPECS[name][0], fields), tail.hex() or "-"]))
            expected.append(m.request(name, fields, tail))
            parsed_as.append((t, 0, fields))
            result, body, rtail = random_reply(rng, name)
            values = _spec_values(m.RESULT, result) + (_spec_values(m.SPECS[name][1], body) if body else [])
            lines.append(" ".join([str(t), "1", *values, rtail.hex() or "-"]))
            expected.append(m.reply(name, body, rtail, result["status"], result["detail"]))
            parsed_as.append((t, 1, (result, body)))
    (tmp_path / "spec.txt").write_text("\n".join(lines) + "\n")
    result = _run(harness, "build", tmp_path / "spec.txt", tmp_path / "built.bin")
    assert result.returncode == 0 and result.stderr == "", result.stderr
    raw, at, built = (tmp_path / "built.bin").read_bytes(), 0, []
    while at < len(raw):
        n = int.from_bytes(raw[at:at + 4], "little")
        built.append(raw[at + 4:at + 4 + n])
        at += 4 + n
    assert built == expected
    for payload, (t, direction, want) in zip(built, parsed_as):
        if direction == 0:
            got = m.check_request(t, payload)
            assert {k: got[k] for k in want} == want
        else:
            result, body = want
            reply = m.check_reply(t, payload)
            assert (reply.status, reply.detail) == (result["status"], result["detail"])
            if body is not None:
                raw_fields = m.SPECS[m.TYPE_NAMES[t]][1].unpack(payload, m.RESULT.size)
                assert raw_fields == body


def test_a_bad_harness_line_is_refused(harness, tmp_path):
    (tmp_path / "spec.txt").write_text("2 0 nothex 1 2 3 4 -\n")
    result = _run(harness, "build", tmp_path / "spec.txt", tmp_path / "built.bin")
    assert result.returncode == 2 and "line 1 is malformed" in result.stderr


# ------------------------------------------------------------------ the rules, by example
def test_the_request_checks_name_what_is_wrong():
    sha = bytes(range(32))
    good = m.put_model(sha, 10_000, 4096, b"x" * 4096)
    assert m.check_request(m.TYPES["PUT_MODEL"], good)["data"] == b"x" * 4096
    train = dict(batch=1, lr=0.1, classifier_lr=0.1)
    refusals = [
        ("a chunk of 4097 bytes", "PUT_MODEL", m.request("PUT_MODEL", {"sha256": sha, "total_bytes": 10_000,
                                                                       "offset": 0, "length": 4097}, bytes(4097))),
        ("pass the end", "PUT_MODEL", m.put_model(sha, 100, 90, bytes(20))),
        ("the header says", "PUT_MODEL", good[:-1]),
        ("a model of 0 bytes", "COMMIT", m.commit(sha, 0)),
        ("mode 3", "TRAIN", m.request("TRAIN", {"mode": 3, "count": 1, "sample_bytes": 1, "cut": m.NONE, "batch": 0,
                                                "seed": 0, "lr": 0.1, "classifier_lr": 0.1, "offset": 0,
                                                "length": 0}, bytes(4))),
        ("a batch of 65 samples", "TRAIN", m.train("images", [0] * 65, 1, 0, b"", **train)),
        ("learning rates nan", "TRAIN", m.train("images", [0], 1, 0, b"", batch=1, lr=math.nan, classifier_lr=0.1)),
        ("cut 5 in images mode", "TRAIN", m.train("images", [0], 1, 0, b"", cut=5, **train)),
        ("padding is not zero", "TRAIN", m.train("images", [0, 1], 3, 0, b"", **train)[:-1] + b"\x01"),
        ("pages of 9999 bytes", "GET_WEIGHTS", m.request("GET_WEIGHTS", {"index": 0, "offset": 0, "max_bytes": 9999})),
        ("7 bytes, el_msg_hello is 8", "HELLO", m.hello(5)[:7]),
        ("message version 0", "HELLO", m.request("HELLO", {"version": 0, "session": 1})),
    ]
    for words, name, payload in refusals:
        with pytest.raises(m.MessageError) as raised:
            m.check_request(m.TYPES[name], payload)
        assert raised.value.reason == p.ERRORS["BAD_PAYLOAD"] and words in str(raised.value), (words, raised.value)
        assert "\n" not in str(raised.value) and str(raised.value).startswith(f"bad {name} payload: ")
    with pytest.raises(m.MessageError) as raised:
        m.check_request(42, b"")
    assert raised.value.reason == p.ERRORS["UNKNOWN_TYPE"]


def test_a_status_is_one_clear_line_for_the_user():
    for status in list(m.STATUS.values())[1:]:
        error = m.BoardError("INFER", status, 27648)
        assert str(error).startswith("the board refused INFER: ") and "\n" not in str(error)
        assert "{" not in str(error)
    assert "expected 27648" in str(m.BoardError("INFER", m.STATUS["BAD_INPUT"], 27648))
    assert "status 99" in str(m.BoardError("STATS", 99, 0))
    reply = m.check_reply(m.TYPES["INFER"], m.reply("INFER", status=m.STATUS["NO_MODEL"]))
    assert not reply.ok and reply.status == 1 and reply.fields == {}


# ------------------------------------------------------------------ hypothesis
FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(st.integers(0, 255), st.binary(max_size=300))
def test_any_bytes_give_fields_or_one_message_error(type, payload):
    for check in (m.check_request, m.check_reply):
        try:
            check(type, payload)
        except m.MessageError as e:
            assert e.reason in (16, 17) and "\n" not in str(e)


@FUZZ
@given(st.sampled_from(NAMES), st.integers(0, 1 << 30), st.lists(st.tuples(st.integers(0, 400), st.integers(0, 255)),
                                                                  max_size=4), st.integers(0, 3))
def test_a_damaged_valid_payload_parses_or_is_refused_cleanly(name, seed, edits, cut):
    rng = random.Random(seed)
    fields, tail = random_request(rng, name)
    result, body, rtail = random_reply(rng, name)
    for direction, payload, check in ((0, m.request(name, fields, tail), m.check_request),
                                      (1, m.reply(name, body, rtail, result["status"], result["detail"]),
                                       m.check_reply)):
        data = bytearray(payload)
        for at, value in edits:
            if data:
                data[at % len(data)] = value
        data = bytes(data[:len(data) - cut])
        try:
            check(m.TYPES[name], data)
        except m.MessageError as e:
            assert e.reason == p.ERRORS["BAD_PAYLOAD"]


@FUZZ
@given(st.sampled_from(NAMES), st.integers(0, 1 << 30))
def test_what_a_builder_writes_parses_back_to_its_fields(name, seed):
    rng = random.Random(seed)
    fields, tail = random_request(rng, name)
    got = m.check_request(m.TYPES[name], m.request(name, fields, tail))
    assert {k: got[k] for k in fields} == fields
    if name in ("PUT_MODEL", "INFER"):
        assert got["data"] == tail
    result, body, rtail = random_reply(rng, name)
    reply = m.check_reply(m.TYPES[name], m.reply(name, body, rtail, result["status"], result["detail"]))
    assert (reply.status, reply.detail) == (result["status"], result["detail"])
    if body is not None:
        keys = [k for k in body if name != "HELLO" or k not in ("board", "firmware", "device")]
        assert {k: reply.fields[k] for k in keys} == {k: body[k] for k in keys}


# ------------------------------------------------------------------ docs/protocol.md
def doc_examples() -> dict[str, bytes]:
    """The payloads docs/protocol.md shows byte by byte, as the code writes them."""
    sha = bytes.fromhex("5c3405e368004729fcea904c95c5ffec6bbd512db0726269a0a5dbd3420b2a02")
    hello_reply = {"version": 1, "frame_version": 1, "board": b"agent@pi", "firmware": b"edge-lls 0.1.0",
                   "device": b"rpi4", "ram_bytes": 4 << 30, "flash_bytes": 128 << 20, "arena_bytes": 256 << 20,
                   "max_payload": 4352, "ops": 0x3FE, "tick_hz": 1_000_000_000, "slot": 0, "sequence": 1,
                   "trial": 1, "model_bytes": 4576, "sha256": sha, "input_bytes": 300, "output_bytes": 10, "cut": 2,
                   "cut_bytes": 800, "classes": 10, "samples_seen": 0}
    return {
        "HELLO": m.hello(0x12345678),
        "HELLO reply": m.reply("HELLO", hello_reply),
        "PUT_MODEL": m.put_model(sha, 4576, 4096, bytes(range(4)) * 120),
        "PUT_MODEL reply": m.reply("PUT_MODEL", {"state": 0, "next_offset": 4096, "total_bytes": 4576, "slot": 0}),
        "COMMIT": m.commit(sha, 4576),
        "COMMIT reply": m.reply("COMMIT", {"slot": 0, "sequence": 1, "trial": 1}),
        "INFER": m.infer(4, 0, bytes([0x80, 0xff, 0x00, 0x7f])),
        "INFER reply": m.reply("INFER", {"state": 2, "next_offset": 4, "output_bytes": 2, "instructions": 0,
                                         "ticks": 133018}, bytes([0x9d, 0x97])),
        "TRAIN": m.train("features", [1, 0, 1], 2, 0, bytes([1, 2, 3, 4, 5, 6]), batch=7, lr=0.25,
                         classifier_lr=0.125, seed=1, cut=2),
        "TRAIN reply": m.reply("TRAIN", {"state": 2, "next_offset": 6, "samples_seen": 3, "count": 1,
                                         "instructions": 0, "ticks": 80010},
                               m.TRAIN_RESULT.pack({"block_loss": [1.5, 0.75, 0, 0], "loss": 2.25, "predicted": 1})),
        "GET_WEIGHTS": m.get_weights(1, 0),
        "GET_WEIGHTS reply": m.reply("GET_WEIGHTS", {"index": 1, "count": 5, "op": 2, "weight_bytes": 3,
                                                     "bias_bytes": 4, "offset": 0, "length": 7,
                                                     "weights_crc32": 0x55BC801D, "bias_crc32": 0x99F8B879,
                                                     "samples_seen": 3}, bytes([1, 2, 3, 1, 0, 0, 0])),
        "STATS": m.stats(),
        "STATS reply": m.reply("STATS", {"arena_bytes": 1104, "arena_high_water": 1104, "stack_bytes": 0,
                                         "stack_high_water": 0, "ram_high_water": 228261888,
                                         "train_buffer_bytes": 3856, "samples_seen": 5, "inferences": 1,
                                         "tick_hz": 1_000_000_000, "infer_instructions": 0, "infer_ticks": 133018,
                                         "train_instructions": 0, "train_ticks": 80010}),
        "RESET": m.reset(),
        "RESET reply": m.reply("RESET"),
        "BAD_INPUT reply": m.reply("INFER", status=m.STATUS["BAD_INPUT"], detail=300),
    }


def test_the_documented_payloads_are_what_the_code_writes():
    text = " ".join(DOCS.read_text().split())
    for label, payload in doc_examples().items():
        name = label.split()[0]
        if label.endswith("reply"):
            m.check_reply(m.TYPES.get(name, m.TYPES["INFER"]), payload)
        else:
            m.check_request(m.TYPES[name], payload)
        shown = payload if len(payload) <= 64 else payload[:64]
        assert shown.hex(" ") in text, f"{label}: {shown.hex(' ')} is not in docs/protocol.md"
    wire = p.build_frame(m.TYPES["INFER"], 2, doc_examples()["INFER"])
    assert wire.hex(" ") in text and p.decode_frame(wire).payload == doc_examples()["INFER"]
    crc = __import__("zlib").crc32
    assert crc(bytes([1, 2, 3])) == 0x55BC801D and crc(bytes([1, 0, 0, 0])) == 0x99F8B879

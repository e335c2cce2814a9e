"""The host's session with a board: the messages of messages.py over protocol.py's Link.

    with Board.open("socket://127.0.0.1:5000") as board:     # or /dev/ttyACM0, loop://, tcp:HOST:PORT
        board.info                      # the HELLO reply (open() says HELLO first)
        board.deploy(image_bytes)       # PUT_MODEL chunks (resumed where the board stopped), COMMIT
        board.infer(x)                  # {"output": int8 array, "instructions", "ticks", "seconds"}
        board.train(x, labels, mode="images" | "features", lr=..., classifier_lr=...)
        board.get_weights()             # {op: (int8 weights, int32 bias)}, CRC-32 checked
        board.stats(); board.reset()

Every failure is one line: ProtocolError (the link: no answer, a refused frame, a reply that
does not parse), BoardError (the board's status: no model, wrong input size, ...), or
FormatError / ConfigError for what the host refuses before sending anything.
"""
from __future__ import annotations

import hashlib
import os
import random
import time
import zlib

import numpy as np

from edge_lls.errors import ConfigError, FormatError
from edge_lls.formats import blob

from . import messages as m
from .protocol import MESSAGES, Link, ProtocolError

DEFAULT_BAUD = 115200
TIMEOUT = 2.0               # seconds per attempt for quick messages
SLOW_TIMEOUT = 60.0         # INFER, TRAIN, COMMIT, RESET: the board computes or writes flash first


def sha256(data: bytes) -> bytes:
    return hashlib.sha256(bytes(data)).digest()


def port_url(port: str) -> str:
    """pyserial's URL for a --port: a device path, socket://HOST:PORT, loop://, or the
    shorthand tcp:HOST:PORT (tcp:PORT: this machine)."""
    text = str(port)
    if text.startswith("tcp:"):
        rest = text[4:]
        host, _, number = rest.rpartition(":")
        if not number.isdigit() or not 0 < int(number) < 65536:
            raise ConfigError(f"--port {text}: expected tcp:HOST:PORT or tcp:PORT with a port number 1-65535")
        return f"socket://{host or '127.0.0.1'}:{number}"
    return text


def check_active_model(board: "Board", image: bytes, where: str) -> None:
    """ConfigError (one line) unless the board's active model, as its last HELLO reported it,
    is exactly `image` (by SHA-256): `board pull --model` and `train --port --model`."""
    digest = hashlib.sha256(bytes(image)).hexdigest()
    active = board.info.get("sha256")
    if active is None:
        raise ConfigError(f"{board.name} has no model: deploy {where} first")
    if active != digest:
        raise ConfigError(f"--model {where}: not the model on {board.name} (its SHA-256 is {digest[:16]}…, the "
                          f"board runs {active[:16]}…); pass the file that was deployed, with the same options")


def model_summary(image: bytes, where: str = "<image>") -> dict:
    """What the host checks of a model image before sending it: its sizes, ops and tail."""
    parsed = blob.open_image(image, where)
    header, tensors = parsed["header"], parsed["tensors"]
    tail = parsed["tail"]
    cut, cut_bytes = m.NONE, 0
    if tail is not None and tail["blocks"]:
        cut = parsed["ops"][tail["blocks"][0]["first_op"]]["record"]["input"]
        cut_bytes = tensors[cut]["bytes"]
    return {"bytes": len(image), "sha256": sha256(image), "arena_bytes": header["arena_bytes"],
            "opcodes": sorted({op["opcode"] for op in parsed["ops"]}),
            "input_bytes": tensors[header["input_tensor"]]["bytes"],
            "output_bytes": tensors[header["output_tensor"]]["bytes"],
            "cut": cut, "cut_bytes": cut_bytes,
            "classes": tail["num_classes"] if tail is not None else 0, "parsed": parsed}


class Board:
    """One session with a board over a port with write(bytes) / read(n) (a pyserial port)."""

    def __init__(self, port, *, name: str | None = None, timeout: float = TIMEOUT,
                 slow_timeout: float = SLOW_TIMEOUT, attempts: int = 3, session: int | None = None):
        self.port, self.name = port, name or getattr(port, "port", None) or "the board"
        self.timeout, self.slow_timeout = float(timeout), float(slow_timeout)
        rng = random.Random(os.urandom(8))
        self.session = rng.getrandbits(32) if session is None else session & 0xFFFFFFFF
        self.link = Link(port, timeout=self.timeout, attempts=attempts, first_seq=rng.getrandbits(16))
        self.info: dict = {}
        self._batch = rng.getrandbits(32)

    @classmethod
    def open(cls, port: str, *, baudrate: int = DEFAULT_BAUD, hello: bool = True, **options) -> "Board":
        """A session over pyserial's serial_for_url(port); HELLO first (unless hello=False)."""
        import serial
        url = port_url(port)
        try:
            handle = serial.serial_for_url(url, baudrate=baudrate, timeout=0.01)
        except (serial.SerialException, ValueError, OSError) as e:
            raise ProtocolError(f"{port}: cannot open the port ({' '.join(str(e).split())})") from None
        board = cls(handle, name=str(port), **options)
        if hello:
            try:
                board.hello()
            except BaseException:
                board.close()
                raise
        return board

    def close(self) -> None:
        close = getattr(self.port, "close", None)
        if close is not None:
            close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---------------------------------------------------------------- one request
    def _request(self, name: str, payload: bytes, slow: bool = False) -> m.Reply:
        """The board's reply to one message, checked; BoardError for a status other than OK."""
        import serial
        self.link.timeout = self.slow_timeout if slow else self.timeout
        try:
            frame = self.link.request(MESSAGES[name], payload)
        except serial.SerialException as e:
            raise ProtocolError(f"{self.name}: the link failed during {name} ({' '.join(str(e).split())})") from None
        except OSError as e:
            raise ProtocolError(f"{self.name}: the link failed during {name} ({e.strerror or e})") from None
        answer = m.check_reply(MESSAGES[name], frame.payload[4:])
        if not answer.ok:
            raise m.BoardError(name, answer.status, answer.detail)
        return answer

    # ---------------------------------------------------------------- HELLO
    def hello(self) -> dict:
        f = self._request("HELLO", m.hello(self.session)).fields
        if f["version"] != m.VERSION:
            raise ProtocolError(f"{self.name} speaks message version {f['version']}; this host speaks {m.VERSION}")
        info = {k: v for k, v in f.items() if k != "sha256"}
        info["sha256"] = f["sha256"].hex() if f["slot"] != m.NONE else None
        info["trial"] = m.TRIAL_NAMES.get(f["trial"], str(f["trial"]))
        info["ops"] = [blob.OPCODE_NAMES[n] for n in sorted(blob.OPCODE_NAMES) if f["ops"] >> n & 1]
        for key in ("slot", "cut"):
            info[key] = None if f[key] == m.NONE else f[key]
        self.info = info
        return info

    # ---------------------------------------------------------------- deploy
    def deploy(self, image: bytes, progress=None, *, chunk: int = m.MAX_CHUNK, where: str = "<image>",
               force: bool = False) -> dict:
        """Send a model image and make it the active model. The board writes its inactive slot
        and switches on COMMIT, after checking the SHA-256, so an interrupted deploy leaves
        the previous model running; deploying again resumes from the offset the board names.
        progress(done, total) is called after every chunk."""
        image = bytes(image)
        summary = model_summary(image, where)
        info = self.info or self.hello()
        missing = [blob.OPCODE_NAMES[n] for n in summary["opcodes"] if blob.OPCODE_NAMES[n] not in info["ops"]]
        if missing:
            raise ConfigError(f"{where}: {self.name} has no kernel for {', '.join(missing)}")
        if summary["arena_bytes"] > info["arena_bytes"]:
            raise ConfigError(f"{where}: the model needs an arena of {summary['arena_bytes']:,} bytes; "
                              f"{self.name} has {info['arena_bytes']:,}")
        if not 1 <= chunk <= m.MAX_CHUNK:
            raise ConfigError(f"chunk size {chunk}: 1 to {m.MAX_CHUNK} bytes")
        digest, total = summary["sha256"], len(image)
        start = time.monotonic()
        result = {"sha256": digest.hex(), "bytes": total, "resumed_from": 0, "sent_bytes": 0, "chunks": 0}
        if not force and info.get("sha256") == digest.hex() and info["trial"] == "confirmed":
            return {**result, "slot": info["slot"], "sequence": info["sequence"], "trial": info["trial"],
                    "unchanged": True, "seconds": time.monotonic() - start}
        state = self._put(digest, total, 0, b"")                 # where does the board stand?
        offset, result["resumed_from"] = state["next_offset"], state["next_offset"]
        mismatches, wrong, rounds = 0, 0, 0
        while state["state"] != m.XFER["COMPLETE"]:
            rounds += 1
            if rounds > 4 * (total // chunk + 4) or offset >= total:
                raise ProtocolError(f"{self.name} did not complete the transfer (it expects offset "
                                    f"{state['next_offset']} of {total} bytes)")
            data = image[offset:offset + chunk]
            try:
                state = self._put(digest, total, offset, data)
            except m.BoardError as e:
                if e.status != m.STATUS["HASH_MISMATCH"] or mismatches:
                    raise
                mismatches += 1                                  # the board cleared the slot: once more
                state, offset = {"state": m.XFER["RECEIVING"], "next_offset": 0}, 0
                continue
            result["chunks"] += 1
            if state["state"] == m.XFER["WRONG_OFFSET"]:
                wrong += 1
                if wrong > 8:
                    raise ProtocolError(f"{self.name} keeps asking for other offsets ({state['next_offset']}); "
                                        f"another host may be deploying to it")
            else:
                wrong = 0
                result["sent_bytes"] += len(data)
            offset = state["next_offset"]
            if progress is not None:
                progress(offset, total)
        try:
            reply = self._request("COMMIT", m.commit(digest, total), slow=True).fields
        except m.BoardError as e:
            # a board that reset after committing, before its answer came, gets the COMMIT again
            # and has no transfer left to commit: it runs the model, which is what HELLO says
            if e.status != m.STATUS["NO_TRANSFER"] or self.hello()["sha256"] != digest.hex():
                raise
            reply = {"slot": self.info["slot"], "sequence": self.info["sequence"],
                     "trial": m.TRIAL.get(self.info["trial"].upper(), m.TRIAL["NONE"])}
        after = self.hello()
        if after["sha256"] != digest.hex():
            raise ProtocolError(f"{self.name} committed the model but runs {after['sha256']}, not {digest.hex()}")
        return {**result, "slot": reply["slot"], "sequence": reply["sequence"],
                "trial": m.TRIAL_NAMES.get(reply["trial"], str(reply["trial"])), "unchanged": False,
                "seconds": time.monotonic() - start}

    def _put(self, digest: bytes, total: int, offset: int, data: bytes) -> dict:
        return self._request("PUT_MODEL", m.put_model(digest, total, offset, data)).fields

    # ---------------------------------------------------------------- INFER
    def _model(self) -> dict:
        info = self.info or self.hello()
        if info.get("slot") is None:
            raise m.BoardError("INFER", m.STATUS["NO_MODEL"], 0)
        return info

    def infer(self, x) -> dict:
        """One inference of the active model on x (its int8 input: bytes or an array)."""
        data = _int8_bytes(x)
        info = self._model()
        if len(data) != info["input_bytes"]:
            raise ConfigError(f"an input of {len(data)} bytes; the model on {self.name} takes {info['input_bytes']}")
        offset, f = 0, None
        for _ in range(4 * (len(data) // m.MAX_CHUNK + 2)):
            piece = data[offset:offset + m.MAX_CHUNK]
            f = self._request("INFER", m.infer(len(data), offset, piece), slow=True).fields
            if f["state"] == m.XFER["COMPLETE"]:
                break
            offset = f["next_offset"]
        else:
            raise ProtocolError(f"{self.name} did not complete the inference's input")
        ticks = f["ticks"]
        hz = info.get("tick_hz") or 0
        return {"output": np.frombuffer(f["output"], np.int8).copy(), "instructions": f["instructions"],
                "ticks": ticks, "seconds": ticks / hz if hz else None}

    # ---------------------------------------------------------------- TRAIN
    def train(self, batch, labels, mode: str = "images", *, lr: float, classifier_lr: float, seed: int = 1,
              restart: bool = False) -> dict:
        """LLS steps on the board, one per sample, in order: batch (N, ...) int8 samples (the
        model's input, or the features at the cut HELLO names for mode 'features'), labels (N,).
        Batches longer than MAX_BATCH go as several. -> {"results": [...], "samples_seen"}."""
        if mode not in m.TRAIN_MODES:
            raise ConfigError(f"training mode {mode!r}: images or features")
        info = self._model()
        if info.get("cut") is None:
            raise m.BoardError("TRAIN", m.STATUS["NOT_TRAINABLE"], 0)
        size = info["input_bytes"] if mode == "images" else info["cut_bytes"]
        samples = [_int8_bytes(x) for x in batch]
        labels = [int(label) for label in labels]
        if len(samples) != len(labels):
            raise ConfigError(f"{len(samples)} samples and {len(labels)} labels")
        for k, (sample, label) in enumerate(zip(samples, labels)):
            if len(sample) != size:
                raise ConfigError(f"sample {k} has {len(sample)} bytes; the model on {self.name} takes {size} "
                                  f"in {mode} mode")
            if not 0 <= label < info["classes"]:
                raise ConfigError(f"label {label} of sample {k} is not one of the model's {info['classes']} classes")
        cut = m.NONE if mode == "images" else info["cut"]
        results, seen, ticks, instructions = [], info.get("samples_seen", 0), 0, 0
        for start in range(0, len(samples), m.MAX_BATCH):
            group, group_labels = samples[start:start + m.MAX_BATCH], labels[start:start + m.MAX_BATCH]
            data = b"".join(group)
            self._batch = (self._batch + 1) & 0xFFFFFFFF
            offset, f = 0, None
            for _ in range(4 * (len(data) // m.MAX_CHUNK + 2)):
                piece = data[offset:offset + m.MAX_CHUNK]
                flags = m.TRAIN_RESTART if restart and start == 0 else 0
                f = self._request("TRAIN", m.train(mode, group_labels, size, offset, piece, batch=self._batch,
                                                   lr=lr, classifier_lr=classifier_lr, seed=seed, cut=cut,
                                                   flags=flags), slow=True).fields
                if f["state"] == m.XFER["COMPLETE"]:
                    break
                offset = f["next_offset"]
            else:
                raise ProtocolError(f"{self.name} did not complete the training batch")
            if len(f["results"]) != len(group):
                raise ProtocolError(f"{self.name} trained {len(f['results'])} of the batch's {len(group)} samples")
            results += [{"block_loss": list(r["block_loss"]), "loss": r["loss"], "predicted": r["predicted"]}
                        for r in f["results"]]
            seen, ticks, instructions = f["samples_seen"], ticks + f["ticks"], instructions + f["instructions"]
        self.info["samples_seen"] = seen
        return {"results": results, "samples_seen": seen, "ticks": ticks, "instructions": instructions}

    # ---------------------------------------------------------------- GET_WEIGHTS
    def get_weights(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """Every trainable op's int8 weights and int32 biases as the board holds them."""
        out, index, count = {}, 0, 1
        while index < count:
            for attempt in range(2):
                pages, offset, first = [], 0, None
                while True:
                    f = self._request("GET_WEIGHTS", m.get_weights(index, offset)).fields
                    if first is None:
                        first = f
                    elif (f["op"], f["weight_bytes"], f["bias_bytes"]) != \
                            (first["op"], first["weight_bytes"], first["bias_bytes"]):
                        raise ProtocolError(f"{self.name}: trainable op {index} changed while it was read")
                    if f["offset"] != offset:
                        raise ProtocolError(f"{self.name} answered offset {f['offset']} to a request for {offset}")
                    pages.append(f["data"])
                    offset += f["length"]
                    if offset >= f["weight_bytes"] + f["bias_bytes"] or not f["length"]:
                        break
                data = b"".join(pages)
                w, b = data[:first["weight_bytes"]], data[first["weight_bytes"]:]
                ok = len(data) == first["weight_bytes"] + first["bias_bytes"] and \
                    zlib.crc32(w) == first["weights_crc32"] and zlib.crc32(b) == first["bias_crc32"]
                if ok:
                    break
            else:
                raise ProtocolError(f"{self.name}: the weights of op {first['op']} do not match their CRC-32")
            out[first["op"]] = (np.frombuffer(w, np.int8).copy(), np.frombuffer(b, "<i4").astype(np.int32))
            count, index = first["count"], index + 1
        return out

    # ---------------------------------------------------------------- STATS, RESET
    def stats(self) -> dict:
        f = self._request("STATS", m.stats()).fields
        hz = f["tick_hz"] or 0
        f["infer_seconds"] = f["infer_ticks"] / hz if hz else None
        f["train_seconds"] = f["train_ticks"] / hz if hz else None
        return f

    def reset(self) -> dict:
        """RESET: the board restarts (a trial model that was not confirmed reverts); then HELLO."""
        self._request("RESET", m.reset(), slow=True)
        deadline = time.monotonic() + self.slow_timeout
        while True:
            try:
                return self.hello()
            except ProtocolError:
                if time.monotonic() > deadline:
                    raise


def _int8_bytes(x) -> bytes:
    if isinstance(x, (bytes, bytearray, memoryview)):
        return bytes(x)
    return np.ascontiguousarray(x, np.int8).tobytes()


# ------------------------------------------------------------------ the fine-tuned image
def trainable_ops(parsed: dict) -> list[int]:
    """The trainable ops in GET_WEIGHTS order: each block's ops, then the classifier."""
    tail = parsed["tail"]
    if tail is None:
        return []
    return [b["first_op"] + j for b in tail["blocks"] for j in range(b["op_count"])] + [tail["classifier_op"]]


def image_weights(image: bytes, parsed: dict) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{op: (int8 weights, int32 bias)} of the trainable ops as the image holds them."""
    out = {}
    for op in trainable_ops(parsed):
        entry = parsed["ops"][op]
        layout = blob.OPCODES[blob.OPCODE_NAMES[entry["opcode"]]][1]
        r = entry["record"]
        counts = {name: count(r) for name, _, count in blob.ARRAYS[layout.name]}
        out[op] = (np.frombuffer(image, np.int8, counts["weights"], r["weights"]).copy(),
                   np.frombuffer(image, "<i4", counts["bias"], r["bias"]).astype(np.int32))
    return out


def fine_tuned_program(program, image: bytes, weights: dict, where: str = "<model>"):
    """A copy of `program` (the .tflite the deployed image was built from) with its trainable
    ops' weight and bias tensors replaced by the board's: the fine-tuned model as a .tflite.
    The image's ops and original weights must be the program's (FormatError otherwise)."""
    import copy
    parsed = blob.open_image(image, where)
    if len(parsed["ops"]) != len(program.operators):
        raise FormatError(f"{where}: {len(program.operators)} ops; the image deployed has {len(parsed['ops'])}")
    original = image_weights(image, parsed)
    new = copy.deepcopy(program)
    users: dict[int, int] = {}
    for operator in new.operators:
        for t in operator.inputs:
            users[t] = users.get(t, 0) + 1
    for op, (w, b) in weights.items():
        operator = new.operators[op] if 0 <= op < len(new.operators) else None
        if operator is None or op not in original or \
                operator.opcode != blob.OPCODE_NAMES[parsed["ops"][op]["opcode"]]:
            raise FormatError(f"{where}: op {op} is not a trainable op of both the image and the model")
        w = np.ascontiguousarray(w, np.int8).reshape(-1)
        b = np.ascontiguousarray(b, np.int32).reshape(-1)
        wt = new.tensors[operator.inputs[1]]
        if wt.data is None or wt.data.size != w.size or users.get(wt.index, 0) != 1 or \
                not np.array_equal(wt.data.reshape(-1).astype(np.int8), original[op][0]):
            raise FormatError(f"{where}: op {op}'s weights are not those of the image deployed")
        wt.data = w.reshape(wt.data.shape).astype(wt.data.dtype)
        has_bias = len(operator.inputs) > 2 and operator.inputs[2] >= 0
        if has_bias:
            bt = new.tensors[operator.inputs[2]]
            if bt.data is None or bt.data.size != b.size or users.get(bt.index, 0) != 1 or \
                    not np.array_equal(bt.data.reshape(-1).astype(np.int32), original[op][1]):
                raise FormatError(f"{where}: op {op}'s bias is not that of the image deployed")
            bt.data = b.reshape(bt.data.shape).astype(np.int32)
        elif np.any(b):
            raise FormatError(f"{where}: op {op} has no bias tensor to hold the biases the board learned")
    return new


def patched_image(image: bytes, weights: dict, where: str = "<image>") -> bytes:
    """The model image with the trainable ops' weights and biases replaced by `weights`
    ({op: (int8, int32)}, GET_WEIGHTS' result) and both CRC-32s recomputed: the fine-tuned
    model, which any board or the agent runs as it ran with those weights."""
    parsed = blob.open_image(image, where)
    data = bytearray(image)
    for op, (w, b) in weights.items():
        if not 0 <= op < len(parsed["ops"]):
            raise FormatError(f"{where}: the board sent weights for op {op}; the model has {len(parsed['ops'])} ops")
        record = parsed["ops"][op]["record"]
        arrays = {name: count(record) for name, _, count in blob.ARRAYS.get(
            blob.OPCODES[blob.OPCODE_NAMES[parsed["ops"][op]["opcode"]]][1].name, ())}
        w = np.ascontiguousarray(w, np.int8).reshape(-1)
        b = np.ascontiguousarray(b, np.int32).reshape(-1)
        if "weights" not in arrays or w.size != arrays["weights"] or b.size != arrays["bias"]:
            raise FormatError(f"{where}: op {op} takes {arrays.get('weights')} weights and {arrays.get('bias')} "
                              f"biases; the board sent {w.size} and {b.size}")
        data[record["weights"]:record["weights"] + w.size] = w.tobytes()
        data[record["bias"]:record["bias"] + 4 * b.size] = b.astype("<i4").tobytes()
    header = blob.HEADER.unpack(data, 0)
    header["payload_crc32"] = blob.crc32(bytes(data[blob.HEADER.size:]))
    data[:blob.HEADER.size] = blob.HEADER.pack(header)
    header["header_crc32"] = blob.crc32(bytes(data[:blob.HEADER_CRC_BYTES]))
    data[:blob.HEADER.size] = blob.HEADER.pack(header)
    blob.open_image(bytes(data), where)
    return bytes(data)


__all__ = ["Board", "port_url", "model_summary", "patched_image", "fine_tuned_program", "image_weights",
           "trainable_ops", "sha256", "ProtocolError", "check_active_model"]

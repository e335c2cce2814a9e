"""Our model and checkpoint file (.ells): a JSON header and raw arrays. Never pickle.

Byte layout (every integer little-endian):

    offset     size  field
    0          4     magic b"ELLS"
    4          4     u32 format version (2)
    8          4     u32 header length L, in bytes
    12         4     u32 CRC-32 (zlib / IEEE 802.3) of the L header bytes
    16         L     header: a UTF-8 JSON object (see below)
    16 + L     pad   zero bytes up to D = the next multiple of 64
    D + off_i  n_i   tensor i: raw little-endian, C order; off_i a multiple of 64

The header holds "kind" ("model" or "checkpoint"), the model "spec" (models/*.py), and
"tensors": a table of {"name", "dtype", "shape", "offset", "nbytes", "crc32"}, offsets
relative to D, crc32 the CRC-32 of the tensor's bytes. Version 1 (no checksums: a 12-byte
preamble, no "crc32") still loads, with a FormatWarning; a flipped bit in its tensor data
goes unseen. A model travels over serial lines and SD cards: version 2 detects that. A model file stores the weights and batch-norm running statistics; a checkpoint adds
the learning rule's parameters, every optimizer's state and the training position.
Readers check every field against the file's size before reading a byte of tensor data
and raise FormatError naming the field, so a truncated or edited file never loads; and
load_model checks the spec (check_spec) before building a model from it, so that a corrupt
size is refused rather than allocated.

Files are written atomically: a temporary file in the same folder, fsync, rename. A crash
leaves either the old file or the new one, never half of one.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import struct
import tempfile
import warnings
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ..errors import ConfigError, FormatError, FormatWarning

MAGIC = b"ELLS"
VERSION = 2                               # what this edge-lls writes
READS = (1, 2)                            # what it reads
ALIGN = 64                                # bytes: tensors start on cache-line boundaries
START = struct.Struct("<4sI")             # magic, version: the same in every version
PREAMBLES = {1: struct.Struct("<4sII"),   # magic, version, header length
             2: struct.Struct("<4sIII")}  # ... and the header's CRC-32
PREAMBLE = PREAMBLES[VERSION]
DTYPES = ("float32", "float64", "float16", "int8", "uint8", "int16", "int32", "int64")
KINDS = ("model", "checkpoint")
TEMP_SUFFIX = ".tmp"
# Limits against absurd sizes, checked before anything is allocated (a corrupt size would
# otherwise be allocated first and refused after): a header nested deeper than any writer
# nests it, a tensor rank numpy cannot hold, and 1 GiB of float32 for any one tensor of a
# model (a weight, or one sample's activation), which no model this runtime trains nears.
MAX_HEADER_DEPTH = 32
MAX_RANK = 32
MAX_TENSOR_VALUES = 1 << 28


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


# ---------------------------------------------------------------------------- atomic writes
def _file_mode() -> int:
    """0666 minus the umask: what open() would give (mkstemp's files are 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Write path through write(f) on a temporary file in the same folder, fsync it, then
    rename it over path (atomic on POSIX). On any failure the temporary file is removed
    and path is untouched."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ConfigError(f"{path}: the folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    write_atomic(path, lambda f: f.write(data))


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it keeps the new file)."""
    with contextlib.suppress(OSError):                 # not every OS can open a folder
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def stale_temp_files(folder: str | Path) -> list[Path]:
    """Temporary files a killed writer left in folder (safe to delete: never renamed)."""
    return sorted(Path(folder).glob(f".*{TEMP_SUFFIX}"))


# ------------------------------------------------------------------------- the container
def write_file(path: str | Path, header: dict, tensors: dict[str, np.ndarray]) -> int:
    """Write header (JSON-able, must hold 'kind') and tensors; returns the file size."""
    if header.get("kind") not in KINDS:
        raise ValueError(f"header kind must be one of {KINDS}, got {header.get('kind')!r}")
    arrays, table, cursor = [], [], 0
    for name, array in tensors.items():
        a = np.asarray(array, order="C")          # (ascontiguousarray would make a 0-d array 1-d)
        if a.dtype.name not in DTYPES:
            raise ValueError(f"tensor {name!r}: dtype {a.dtype} is not storable ({', '.join(DTYPES)})")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        table.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape),
                      "offset": cursor, "nbytes": a.nbytes, "crc32": zlib.crc32(a.reshape(-1).view(np.uint8))})
        arrays.append(a)
        cursor = _aligned(cursor + a.nbytes)
    text = json.dumps({**header, "tensors": table}, separators=(",", ":")).encode("utf-8")
    data_start = _aligned(PREAMBLE.size + len(text))

    def write(f: BinaryIO) -> None:
        f.write(PREAMBLE.pack(MAGIC, VERSION, len(text), zlib.crc32(text)))
        f.write(text)
        f.write(b"\0" * (data_start - PREAMBLE.size - len(text)))
        position = 0
        for entry, a in zip(table, arrays):
            f.write(b"\0" * (entry["offset"] - position))
            f.write(a.reshape(-1).view(np.uint8).data)
            position = entry["offset"] + entry["nbytes"]

    write_atomic(path, write)
    return data_start + (table[-1]["offset"] + table[-1]["nbytes"] if table else 0)


def read_file(path: str | Path, kind: str | None = None) -> tuple[dict, dict[str, np.ndarray]]:
    """-> (header, {name: array}). kind: the expected header kind, or None for either."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header, data_start = _read_header(f, path, kind)
            tensors = {e["name"]: _read_tensor(f, data_start, e, path) for e in header["tensors"]}
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: expected a model file, found a folder") from None
    return header, tensors


def read_header(path: str | Path, kind: str | None = None) -> dict:
    """The validated header alone (no tensor data is read), plus 'file_bytes'."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            header, _ = _read_header(f, path, kind)
            header["file_bytes"] = os.fstat(f.fileno()).st_size
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: expected a model file, found a folder") from None
    return header


def _read_header(f: BinaryIO, path: Path, kind: str | None) -> tuple[dict, int]:
    size = os.fstat(f.fileno()).st_size
    if size < START.size:
        raise FormatError(f"{path}: truncated: {size} bytes, shorter than the {START.size}-byte "
                          f"magic and version")
    magic, version = START.unpack(f.read(START.size))
    if magic != MAGIC:
        raise FormatError(f"{path}: magic {magic!r} is not {MAGIC!r}: not an edge-lls model file")
    if version not in READS:
        raise FormatError(f"{path}: format version {version} is not supported "
                          f"(this edge-lls reads {', '.join(map(str, READS))})")
    preamble = PREAMBLES[version]
    if size < preamble.size:
        raise FormatError(f"{path}: truncated: {size} bytes, shorter than the {preamble.size}-byte "
                          f"version {version} preamble")
    f.seek(0)
    _, _, length, *stored_crc = preamble.unpack(f.read(preamble.size))
    if preamble.size + length > size:
        raise FormatError(f"{path}: header length {length} runs past the end of the file "
                          f"({size} bytes): truncated")
    text = f.read(length)
    if stored_crc and zlib.crc32(text) != stored_crc[0]:
        raise FormatError(f"{path}: header CRC-32 {zlib.crc32(text):#010x} does not match the stored "
                          f"{stored_crc[0]:#010x}: the file is corrupt")
    if version == 1:
        warnings.warn(f"{path}: format version 1 has no checksums, corruption would go unseen; "
                      f"saving the model again writes version {VERSION}", FormatWarning, stacklevel=4)
    try:
        header = json.loads(text.decode("utf-8"))
    except ValueError as e:         # JSONDecodeError, UnicodeDecodeError, an over-long integer
        raise FormatError(f"{path}: header is not valid JSON ({' '.join(str(e).split())[:200]})") from None
    except RecursionError:          # the decoder's own nesting limit
        raise FormatError(f"{path}: header is not valid JSON (nested too deeply)") from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: header is a JSON {type(header).__name__}, expected an object")
    if _depth(header) > MAX_HEADER_DEPTH:
        raise FormatError(f"{path}: header is nested more than {MAX_HEADER_DEPTH} levels deep")
    found = header.get("kind")
    if found not in KINDS:
        raise FormatError(f"{path}: header field 'kind' is {found!r}, expected one of {', '.join(KINDS)}")
    if kind is not None and found != kind:
        hint = " (a run's model is RUN_DIR/model.ells)" if kind == "model" else ""
        raise FormatError(f"{path}: header field 'kind' is {found!r}, expected {kind!r}{hint}")
    if not isinstance(header.get("spec"), dict):
        raise FormatError(f"{path}: header field 'spec' is missing or not an object")
    data_start = _aligned(preamble.size + length)
    _check_table(header.get("tensors"), max(size - data_start, 0), path, checksums=version >= 2)
    return header, data_start


def _depth(value: object) -> int:
    """How deeply lists and objects nest in a parsed JSON value (iteratively: no recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
        if children is not None:
            deepest = max(deepest, depth)
            if depth <= MAX_HEADER_DEPTH:
                stack.extend((child, depth + 1) for child in children)
    return deepest


def _check_table(table: object, data_bytes: int, path: Path, checksums: bool) -> None:
    """Every entry well formed (with its CRC-32 when the version has them), inside the
    file, 64-byte aligned and not overlapping."""
    if not isinstance(table, list):
        raise FormatError(f"{path}: header field 'tensors' is missing or not a list")
    names, spans = set(), []
    for i, e in enumerate(table):
        field = f"tensors[{i}]"
        if not isinstance(e, dict):
            raise FormatError(f"{path}: header field '{field}' is not an object")
        name = e.get("name")
        if not isinstance(name, str) or not name or name in names:
            raise FormatError(f"{path}: header field '{field}.name' is {name!r}: "
                              f"empty, not a string, or repeated")
        names.add(name)
        field = f"tensors[{i}] ({name})"
        if e.get("dtype") not in DTYPES:
            raise FormatError(f"{path}: '{field}.dtype' is {e.get('dtype')!r}, "
                              f"expected one of {', '.join(DTYPES)}")
        shape = e.get("shape")
        if not isinstance(shape, list) or len(shape) > MAX_RANK or \
                not all(_is_count(d) and d <= MAX_TENSOR_VALUES for d in shape):
            raise FormatError(f"{path}: '{field}.shape' is {shape!r:.100}, expected at most {MAX_RANK} "
                              f"integers in 0 .. {MAX_TENSOR_VALUES}")
        expected = math.prod(shape) * np.dtype(e["dtype"]).itemsize
        if e.get("nbytes") != expected:
            raise FormatError(f"{path}: '{field}.nbytes' is {e.get('nbytes')!r}, but shape {shape} of "
                              f"{e['dtype']} takes {expected} bytes")
        offset = e.get("offset")
        if not _is_count(offset) or offset % ALIGN:
            raise FormatError(f"{path}: '{field}.offset' is {offset!r}, expected a multiple of {ALIGN} >= 0")
        if offset + expected > data_bytes:
            raise FormatError(f"{path}: '{field}' (offset {offset}, {expected} bytes) runs past the end of "
                              f"the data ({data_bytes} bytes): truncated file")
        crc = e.get("crc32")
        if checksums and not (_is_count(crc) and crc < 1 << 32):
            raise FormatError(f"{path}: '{field}.crc32' is {crc!r}, expected a 32-bit unsigned integer")
        spans.append((offset, offset + expected, name))
    spans.sort()
    for (_, end, a), (start, _, b) in zip(spans, spans[1:]):
        if start < end:
            raise FormatError(f"{path}: tensors {a!r} and {b!r} overlap in the file")


def _is_count(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _read_tensor(f: BinaryIO, data_start: int, entry: dict, path: Path) -> np.ndarray:
    stored = np.dtype(entry["dtype"]).newbyteorder("<")
    array = np.empty(entry["shape"], dtype=stored)
    if array.nbytes:
        f.seek(data_start + entry["offset"])
        got = f.readinto(array.reshape(-1).view(np.uint8).data)
        if got != array.nbytes:      # the file shrank after its size was checked
            raise FormatError(f"{path}: tensor {entry['name']!r} is truncated "
                              f"({got} of {array.nbytes} bytes)")
    if "crc32" in entry:
        crc = zlib.crc32(array.reshape(-1).view(np.uint8))
        if crc != entry["crc32"]:
            raise FormatError(f"{path}: tensor {entry['name']!r}: CRC-32 {crc:#010x} does not match the "
                              f"stored {entry['crc32']:#010x}: the file is corrupt")
    return array.astype(array.dtype.newbyteorder("="), copy=False)


# ------------------------------------------------------------------------------- models
def model_tensors(model) -> dict[str, np.ndarray]:
    """A model's whole state: its parameters and every batch norm's running statistics
    (the latter are not parameters, but inference uses them)."""
    out = {p.name: p.value for p in model.params}
    for bn in model.batch_norms():
        out[f"{bn.name}.running_mean"] = bn.running_mean
        out[f"{bn.name}.running_var"] = bn.running_var
    return out


def save_model(path: str | Path, model, meta: dict) -> int:
    """meta: JSON-able facts about the model (rule, precision, dataset, accuracy, ...)."""
    return write_file(path, {"kind": "model", "spec": model.spec, **meta}, model_tensors(model))


def build_from_spec(spec: dict, path: Path):
    from ..nn.model import Model
    try:
        return Model(spec, seed=0)
    except ConfigError as e:
        raise FormatError(f"{path}: header field 'spec' does not describe a model ({e})") from None
    except (KeyError, TypeError, ValueError, IndexError) as e:
        raise FormatError(f"{path}: header field 'spec' does not describe a model "
                          f"({type(e).__name__}: {' '.join(str(e).split())})") from None


def check_spec(spec: dict, file_values: int, path: Path) -> None:
    """What building a model from spec allocates, checked before it is built: the fields
    that size it (input shape, filters, units, kernels, strides, paddings, post-block
    pooling, classes) have the types Model reads, no activation of one sample holds more
    than MAX_TENSOR_VALUES values, and its weights do not outnumber the file_values the
    file's tensors hold. Everything else about the spec Model itself checks."""
    from ..kernels.geometry import resolve_window

    def fail(field: str, message: str):
        raise FormatError(f"{path}: header field 'spec.{field}' {message}")

    def count(value, field: str) -> int:
        if not (_is_count(value) and 1 <= value <= MAX_TENSOR_VALUES):
            fail(field, f"is {value!r:.60}, expected an integer in 1 .. {MAX_TENSOR_VALUES}")
        return value

    def pair(value, field: str):
        if isinstance(value, list) and len(value) == 2:
            return [count(v, f"{field}[{i}]") for i, v in enumerate(value)]
        return count(value, field)

    def padding(value, field: str):
        if value in ("same", "valid"):
            return value
        items = value if isinstance(value, list) and len(value) in (2, 4) else [value]
        if all(_is_count(v) and v <= MAX_TENSOR_VALUES for v in items):
            return tuple(value) if isinstance(value, list) else value
        fail(field, f"is {value!r:.60}, expected 'same', 'valid', or 1, 2 or 4 integers >= 0")

    def window(shape, field: str, kernel, stride, pad, channels: int):
        if len(shape) != 4:
            fail(field, "follows a dense block, but needs an image (H, W, C) input")
        try:
            win = resolve_window(shape[1:3], kernel, stride, pad)
        except ValueError as e:                          # the window does not fit its input
            fail(field, f"does not fit its input {list(shape[1:])}: {e}")
        return activation((1, win.out_h, win.out_w, channels), field)

    def activation(shape, field: str):
        if math.prod(shape[1:]) > MAX_TENSOR_VALUES:
            fail(field, f"makes an activation of shape {list(shape[1:])}, more than {MAX_TENSOR_VALUES} values")
        return shape

    def flag(value, field: str) -> None:
        if not isinstance(value, bool):
            fail(field, f"is {value!r:.60}, expected true or false")

    if not isinstance(spec.get("name"), str):
        fail("name", "is missing or not a string")
    shape = spec.get("input_shape")
    if not isinstance(shape, list) or len(shape) != 3:
        fail("input_shape", f"is {shape!r:.60}, expected [H, W, C]")
    shape = activation((1, *(count(d, f"input_shape[{i}]") for i, d in enumerate(shape))), "input_shape")
    blocks = spec.get("blocks")
    if not isinstance(blocks, list):
        fail("blocks", "is missing or not a list")
    classes = count(spec.get("num_classes"), "num_classes")
    weights = 0
    for i, b in enumerate(blocks):
        field = f"blocks[{i}]"
        if not isinstance(b, dict):
            fail(field, "is not an object")
        kind, cin = b.get("type"), shape[-1]
        pool = count(b.get("pool_size"), f"{field}.pool_size")
        flag(b.get("bias", True), f"{field}.bias")
        if not isinstance(b.get("act", "leaky_relu"), str):
            fail(f"{field}.act", "is not a string")
        if kind in ("conv", "dwsep"):
            filters = count(b.get("filters"), f"{field}.filters")
            kernel = pair(b.get("kernel", 3), f"{field}.kernel")
            taps = math.prod(kernel) if isinstance(kernel, list) else kernel * kernel
            stride = pair(b.get("stride", 1), f"{field}.stride")
            pad = padding(b.get("padding", 1 if kind == "conv" else "same"), f"{field}.padding")
            weights += filters * taps * cin if kind == "conv" else cin * taps + filters * cin
            shape = window(shape, field, kernel, stride, pad, filters)
        elif kind == "dense":
            units = count(b.get("units"), f"{field}.units")
            weights += units * math.prod(shape[1:])
            shape = (1, units)
        else:
            return                                     # Model names the unknown block type
        # the block's LLS head: a basis of num_classes x (pool x pool x C, or pool) values
        if classes * (pool * pool * shape[-1] if len(shape) == 4 else pool) > MAX_TENSOR_VALUES:
            fail(f"{field}.pool_size", f"is {pool}: the LLS basis of {classes} classes it implies exceeds "
                                       f"{MAX_TENSOR_VALUES} values")
        post = b.get("post", [])
        if not isinstance(post, list) or not all(isinstance(p, dict) for p in post):
            fail(f"{field}.post", "is not a list of objects")
        for j, p in enumerate(post):
            where = f"{field}.post[{j}]"
            if p.get("type") in ("maxpool", "avgpool"):
                kernel = pair(p.get("kernel", 2), f"{where}.kernel")
                stride = pair(p["stride"], f"{where}.stride") if p.get("stride") else kernel   # as Model
                shape = window(shape, where, kernel, stride, padding(p.get("padding", 0), f"{where}.padding"),
                               shape[-1])
            elif p.get("type") == "adaptive_avgpool":
                if len(shape) != 4:
                    fail(where, "follows a dense block, but needs an image (H, W, C) input")
                size = pair(p.get("size"), f"{where}.size")
                shape = activation((1, *(size if isinstance(size, list) else (size, size)), shape[-1]), where)
            else:
                return                                 # Model names the unknown op type
    if not isinstance(spec.get("classifier", {}), dict):
        fail("classifier", "is not an object")
    flag(spec.get("classifier", {}).get("bias", True), "classifier.bias")
    weights += classes * math.prod(shape[1:])
    if weights > file_values:
        raise FormatError(f"{path}: header field 'spec' describes a model of {weights} weights, but the file's "
                          f"tensors hold {file_values} values")


def load_model(path: str | Path):
    """-> (Model, header). The model holds exactly the stored weights and statistics."""
    path = Path(path)
    header, tensors = read_file(path, kind="model")
    check_spec(header["spec"], sum(a.size for a in tensors.values()), path)
    model = build_from_spec(header["spec"], path)
    assign(model_tensors(model), tensors, path, exact=True)
    return model, header


def assign(targets: dict[str, np.ndarray], tensors: dict[str, np.ndarray], path: Path,
           *, exact: bool) -> None:
    """Copy tensors into targets (same names, same shapes). exact: no tensor may be left
    over (a model file holds nothing else; a checkpoint's other tensors are assigned by
    their own owners)."""
    for name, target in targets.items():
        if name not in tensors:
            raise FormatError(f"{path}: tensor {name!r} is missing (the file does not match its spec)")
        source = tensors[name]
        if source.shape != target.shape:
            raise FormatError(f"{path}: tensor {name!r} has shape {list(source.shape)}, "
                              f"the model needs {list(target.shape)}")
        target[...] = source
    if exact:
        extra = sorted(set(tensors) - set(targets))
        if extra:
            raise FormatError(f"{path}: unexpected tensor {extra[0]!r} (not part of the model's spec)")


# -------------------------------------------------------------------------- checkpoints
def _rule_tensors(trainer) -> dict[str, np.ndarray]:
    return {f"rule/{p.name}": p.value
            for i in range(len(trainer.model.blocks)) for p in trainer.rule.block_params(i)}


def _optimizer_tensors(trainer) -> dict[str, np.ndarray]:
    return {f"optim{i}/{name}": a for i, opt in enumerate(trainer.optimizers)
            for name, a in opt.state_arrays().items()}


def save_checkpoint(path: str | Path, trainer, train_state: dict) -> int:
    """Everything a resumed run needs to continue bit for bit: weights, batch-norm
    statistics, rule parameters, each optimizer's arrays and scalars, and train_state
    (the position in the data, metrics so far, the run's config)."""
    header = {"kind": "checkpoint", "spec": trainer.model.spec, "rule": trainer.rule.config(),
              "optimizers": [{"kind": o.kind, "scalars": o.state_scalars()} for o in trainer.optimizers],
              "train": train_state}
    tensors = {**model_tensors(trainer.model), **_rule_tensors(trainer), **_optimizer_tensors(trainer)}
    return write_file(path, header, tensors)


def read_checkpoint(path: str | Path) -> tuple[dict, dict[str, np.ndarray]]:
    header, tensors = read_file(path, kind="checkpoint")
    for field in ("rule", "optimizers", "train"):
        if field not in header:
            raise FormatError(f"{path}: header field {field!r} is missing")
    if not isinstance(header["optimizers"], list) or not all(
            isinstance(o, dict) and isinstance(o.get("scalars"), dict) for o in header["optimizers"]):
        raise FormatError(f"{path}: header field 'optimizers' must be a list of {{kind, scalars}}")
    return header, tensors


def restore_checkpoint(trainer, header: dict, tensors: dict[str, np.ndarray], path: str | Path) -> None:
    """Load a checkpoint read by read_checkpoint into a trainer built from the same config."""
    path = Path(path)
    if header["spec"] != trainer.model.spec:
        raise FormatError(f"{path}: the checkpoint's model spec differs from the run's model")
    if header["rule"].get("rule") != trainer.rule.name:
        raise FormatError(f"{path}: the checkpoint was trained with rule {header['rule'].get('rule')!r}, "
                          f"not {trainer.rule.name!r}")
    saved = header["optimizers"]
    kinds = [o.get("kind") for o in saved]
    if kinds != [o.kind for o in trainer.optimizers]:
        raise FormatError(f"{path}: header field 'optimizers' is {kinds}, the run uses "
                          f"{len(trainer.optimizers)} x {trainer.optimizers[0].kind}")
    assign({**model_tensors(trainer.model), **_rule_tensors(trainer), **_optimizer_tensors(trainer)},
           tensors, path, exact=True)
    for i, (opt, state) in enumerate(zip(trainer.optimizers, saved)):
        arrays = {name: tensors[f"optim{i}/{name}"] for name in opt.state_arrays()}
        try:
            opt.load_state(arrays, state["scalars"])
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{path}: header field 'optimizers[{i}].scalars' is incomplete "
                              f"({type(e).__name__}: {e})") from None

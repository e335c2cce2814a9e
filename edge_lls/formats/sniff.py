"""What kind of model a path names (.tflite, .ells, .onnx, the firmware's model image), read
from its first bytes, and where a run folder keeps its model. Every command that accepts
"MODEL" resolves it here, once."""
from __future__ import annotations

from pathlib import Path

from ..errors import FormatError
from .model_file import MAGIC as ELLS_MAGIC

TFLITE_IDENTIFIER = b"TFL3"      # flatbuffer file identifier, bytes 4..8 of every .tflite
RUN_MODEL_FILE = "model.ells"    # the model a run folder holds (edge_lls.training_run.RunDir)
IMAGE_MAGIC = b"ELMB"            # the firmware's model image (formats/blob.py), bytes 0..4
# An ONNX ModelProto opens with field 1 (ir_version) as a varint: tag (1 << 3) | 0 = 0x08.
ONNX_FIRST_BYTE = b"\x08"


def model_path(path: str | Path) -> Path:
    """A run folder stands for its model.ells; any other path for itself."""
    path = Path(path)
    return path / RUN_MODEL_FILE if path.is_dir() else path


def model_kind(path: str | Path) -> str:
    """'tflite', 'ells', 'onnx' or 'image' (the firmware's model image, `export --format
    blob`) for the file at path (a run folder: its model.ells), from its first eight bytes
    (an .onnx file also by its suffix, so that a truncated one reaches the ONNX reader's own
    error); a clear FormatError for a missing file or anything else."""
    path = model_path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    if head[4:8] == TFLITE_IDENTIFIER:
        return "tflite"
    if head[:4] == ELLS_MAGIC:
        return "ells"
    if head[:4] == IMAGE_MAGIC:
        return "image"
    if head[:1] == ONNX_FIRST_BYTE or path.suffix.lower() == ".onnx":
        return "onnx"
    raise FormatError(f"{path}: neither a .tflite file (identifier TFL3), an edge-lls model file "
                      f"(magic {head[:4]!r} is not {ELLS_MAGIC!r}), a model image (magic {IMAGE_MAGIC!r}) "
                      f"nor an ONNX model (first byte 0x08)")


def is_tflite(path: str | Path) -> bool:
    """True for a readable file carrying the TFL3 identifier (no error for anything else)."""
    try:
        with open(model_path(path), "rb") as f:
            return f.read(8)[4:8] == TFLITE_IDENTIFIER
    except OSError:
        return False


def is_image(path: str | Path) -> bool:
    """True for a readable file opening with the model image's magic (no error otherwise)."""
    try:
        with open(model_path(path), "rb") as f:
            return f.read(4) == IMAGE_MAGIC
    except OSError:
        return False

"""File access shared by the readers: every OS or gzip failure becomes a one-line DataError."""
from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from edge_lls.errors import DataError

GZIP_MAGIC = b"\x1f\x8b"


def one_line(error: BaseException) -> str:
    """An exception's message squeezed onto one line (the CLI prints errors on one line)."""
    return " ".join(str(error).split()) or type(error).__name__


def require_dir(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if not path.is_dir():
        raise DataError(f"{path}: {what} must be a folder, found a file")
    return path


def require_file(path: Path, what: str) -> Path:
    if not path.exists():
        raise DataError(f"{path}: {what} not found")
    if not path.is_file():
        raise DataError(f"{path}: {what} must be a file, found a folder")
    return path


def read_bytes(path: Path) -> bytes:
    """The whole file, gunzipped when it starts with the gzip magic (whatever its name)."""
    try:
        with open(path, "rb") as f:
            head = f.read(2)
            f.seek(0)
            if head == GZIP_MAGIC:
                with gzip.GzipFile(fileobj=f) as g:
                    return g.read()
            return f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: expected a file, found a folder") from None
    except (gzip.BadGzipFile, EOFError, zlib.error) as e:
        raise DataError(f"{path}: corrupt or truncated gzip data ({one_line(e)})") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({one_line(e)})") from None


def is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(2) == GZIP_MAGIC
    except OSError as e:
        raise DataError(f"{path}: cannot read ({one_line(e)})") from None

"""Numba's on-disk kernel cache, kept honest across edits and upgrades.

Numba checks a cached kernel against its own source file only. A kernel that inlines a
helper from another file (every float16 kernel inlines kernels/half.py; conv inlines
norm.pooled_grad_input_rows; quantize inlines kernels/fixedpoint.py) keeps its stale machine
code when only the helper changes: once here it ran 5x slow, and it could as well
compute with an old rounding rule. So at import the package hashes the sources of
every module that defines jitted code; when the hash differs from the one stored next
to the cache, it deletes the cached kernels (*.nbi, *.nbc) before any is loaded, and
Numba compiles afresh. A read-only install keeps whatever it has.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
STAMP = "edge_lls_sources.sha256"


_JIT_MARKERS = (b"njit", b"@intrinsic", b"@overload")


def compiled_sources(package: Path = PACKAGE) -> dict[Path, bytes]:
    """The files whose code can end up in a cached kernel (they define jitted functions,
    intrinsics or overloads), with their contents; found by reading, not listed, so a
    new kernel module is covered without anyone remembering to add it."""
    found = {}
    for path in sorted(package.rglob("*.py")):
        if path.name == Path(__file__).name and path.parent == package:
            continue                             # this file names the markers itself
        text = path.read_bytes()
        if any(marker in text for marker in _JIT_MARKERS):
            found[path] = text
    return found


def sources_digest(sources: dict[Path, bytes]) -> str:
    h = hashlib.sha256()
    for path, text in sources.items():
        h.update(path.name.encode())
        h.update(text)
    return h.hexdigest()


def _cache_root(package: Path) -> Path:
    """Where Numba keeps this package's cached kernels: in __pycache__ folders next to the
    sources, or under NUMBA_CACHE_DIR, which mirrors the source path."""
    custom = os.environ.get("NUMBA_CACHE_DIR")
    return Path(custom) / str(package).lstrip(os.sep) if custom else package


def drop_stale_kernel_caches(package: Path = PACKAGE) -> bool:
    """Delete the cached kernels if the compiled sources changed since the stamp was
    written, then stamp the current sources. Returns True when it deleted something."""
    try:
        digest = sources_digest(compiled_sources(package))
        root = _cache_root(package)
        stamp = root / "__pycache__" / STAMP
        if stamp.exists() and stamp.read_text().strip() == digest:
            return False
        cached = [f for pattern in ("*.nbi", "*.nbc") for f in root.rglob(pattern)] if root.exists() else []
        for f in cached:
            f.unlink(missing_ok=True)
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest + "\n")
        return bool(cached)
    except OSError:                      # read-only install, or files vanishing under us
        return False

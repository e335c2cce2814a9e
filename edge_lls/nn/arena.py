"""One allocation per (model, batch shape, rule): every activation, gradient and scratch
buffer a training step touches is a view into it, so a step allocates nothing.

Each buffer belongs to a *stage* (a block, or the classifier) and has a *role*:
    out   what the stage passes on to the next stage
    keep  what the stage's own backward needs (its intermediates)
    grad  gradients of the stage's activations
    tmp   scratch used inside one kernel call (im2col columns)

The layout is where local learning pays off:
    local   (LLS family)  every stage's keep+grad share ONE region, and outs alternate
                          between two slots: memory = the largest block, not the sum.
    global  (BP, DFA)     every stage's keep and out live until the backward pass reaches
                          it: memory grows with depth. grads alternate between two
                          regions (stage l reads its own, writes stage l-1's).
    infer   forward only: keep and grad are dropped to the shared region, no grads.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALIGN = 64  # bytes: one cache line / AVX-512 vector


@dataclass(frozen=True)
class Buf:
    name: str
    shape: tuple
    role: str            # 'out' | 'keep' | 'grad' | 'tmp'
    dtype: type = np.float32

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def aligned(n: int) -> int:
    """n bytes rounded up to the arena's alignment."""
    return -(-n // ALIGN) * ALIGN


@dataclass(frozen=True)
class Layout:
    """Where every buffer goes, computed without allocating anything."""
    placement: list          # (stage, Buf, region, offset within the region)
    region_bytes: dict       # region name -> bytes
    nbytes: int


def plan(stages: list[list[Buf]], mode: str) -> Layout:
    """The layout an Arena over these stages has (see the module doc for the rules)."""
    if mode not in ("local", "global", "infer"):
        raise ValueError(f"arena mode {mode!r}")
    placement, regions = [], {}
    for stage, bufs in enumerate(stages):
        cursor: dict[str, int] = {}
        for buf in bufs:
            if mode == "infer" and buf.role == "grad":
                continue
            region = _region(stage, buf.role, mode)
            offset = cursor.get(region, 0)
            placement.append((stage, buf, region, offset))
            cursor[region] = offset + aligned(buf.nbytes)
            regions[region] = max(regions.get(region, 0), cursor[region])
    return Layout(placement, regions, sum(regions.values()))


def _region(stage: int, role: str, mode: str) -> str:
    if role == "tmp":
        return "tmp"
    if role == "out":
        return f"out{stage % 2}" if mode != "global" else f"out@{stage:04d}"
    if role == "keep":
        return "work" if mode != "global" else f"keep@{stage:04d}"
    if role == "grad":
        return "work" if mode == "local" else f"grad{stage % 2}"
    raise ValueError(f"buffer role {role!r}")


class Arena:
    def __init__(self, stages: list[list[Buf]], mode: str, memory: np.ndarray | None = None):
        """memory: a uint8 buffer to lay the views over instead of allocating (another
        arena's, when the two are never in use at the same time); used if large enough."""
        layout = plan(stages, mode)
        self.mode = mode
        self.nbytes = layout.nbytes
        self.region_bytes = dict(layout.region_bytes)
        base, offset = {}, 0
        for region in sorted(layout.region_bytes):
            base[region] = offset
            offset += layout.region_bytes[region]
        need = max(offset, ALIGN)
        self.borrowed = memory is not None and memory.nbytes >= need
        self.memory = memory if self.borrowed else np.empty(need, np.uint8)
        self.views: list[dict[str, np.ndarray]] = [dict() for _ in stages]
        for stage, buf, region, off in layout.placement:
            start = base[region] + off
            raw = self.memory[start:start + buf.nbytes]
            self.views[stage][buf.name] = raw.view(buf.dtype).reshape(buf.shape)

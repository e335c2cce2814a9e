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


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class Arena:
    def __init__(self, stages: list[list[Buf]], mode: str):
        if mode not in ("local", "global", "infer"):
            raise ValueError(f"arena mode {mode!r}")
        self.mode = mode
        placement = []          # (stage, buf, region, offset)
        regions: dict[str, int] = {}

        def place(region, cursor, buf):
            placement.append((stage, buf, region, cursor[region]))
            cursor[region] += _aligned(buf.nbytes)
            regions[region] = max(regions.get(region, 0), cursor[region])

        for stage, bufs in enumerate(stages):
            cursor: dict[str, int] = {}
            for buf in bufs:
                if mode == "infer" and buf.role == "grad":
                    continue
                region = self._region(stage, buf.role, mode)
                cursor.setdefault(region, 0)
                place(region, cursor, buf)

        base, offset = {}, 0
        for region in sorted(regions):
            base[region] = offset
            offset += regions[region]
        self.nbytes = offset
        self.region_bytes = dict(regions)
        self._memory = np.empty(max(offset, ALIGN), np.uint8)
        self.views: list[dict[str, np.ndarray]] = [dict() for _ in stages]
        for stage, buf, region, off in placement:
            start = base[region] + off
            raw = self._memory[start:start + buf.nbytes]
            self.views[stage][buf.name] = raw.view(buf.dtype).reshape(buf.shape)

    @staticmethod
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

"""One allocation per (model, batch shape, rule): every activation, gradient and scratch
buffer a training step touches is a view into it, so a step allocates nothing.

Each buffer belongs to a *stage* (a block, or the classifier) and has a *role*:
    out    what the stage passes on to the next stage
    outkeep  both: a block output with no pooling after it, which its own backward reads
    keep   what the stage's own backward needs (its intermediates)
    grad   gradients of the stage's activations
    ograd  (backprop) the gradient of the stage's output, written by the next stage
    tmp    scratch used inside one kernel call (im2col columns)

A rule's *schedule* says when each stage runs forward and backward, hence how long
each buffer lives; the planner then packs buffers whose lifetimes do not overlap into
the same bytes (largest first, lowest free offset: TFLite Micro's greedy planner):
    local     (LLS family)  block l trains right after its forward: its buffers die
                            before block l+1 starts, so memory = the largest block.
    backprop  (BP)          every block runs forward, then backward in reverse: each
                            block's buffers live until the backward pass reaches it.
    feedback  (DFA)         every block runs forward, then each block updates in order.
    infer     forward only, no gradients.
Scratch (tmp) is used inside single kernel calls and has a region of its own.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ALIGN = 64  # bytes: one cache line / AVX-512 vector


@dataclass(frozen=True)
class Buf:
    name: str
    shape: tuple
    role: str            # 'out' | 'outkeep' | 'keep' | 'grad' | 'ograd' | 'tmp'
    dtype: type = np.float32

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def aligned(n: int) -> int:
    """n bytes rounded up to the arena's alignment."""
    return -(-n // ALIGN) * ALIGN


SCHEDULES = ("local", "local-last-late", "backprop", "feedback", "infer")


@dataclass(frozen=True)
class Layout:
    """Where every buffer goes, computed without allocating anything."""
    placement: list          # (stage, Buf, region, offset within the region)
    region_bytes: dict       # 'live' (planned buffers) and 'tmp' (scratch) -> bytes
    nbytes: int


def backward_time(stage: int, stages: int, mode: str) -> int:
    """When stage s learns. Time s is stage s's forward; the classifier (the last stage,
    L) runs forward and backward at time L; blocks then learn in reverse (BP), in order
    (DFA), or right after their own forward (local rules, inference); 'local-last-late': a
    local rule whose last block learns from the classifier's signal, so that block's buffers
    stay live until the classifier has run (LocalRule(last_block="classifier"))."""
    last = stages - 1
    if mode == "backprop":
        return 2 * last - stage
    if mode == "feedback":
        return last if stage == last else last + 1 + stage
    if mode == "local-last-late" and stage == last - 1:
        return last
    return stage


def lifetime(stage: int, role: str, stages: int, mode: str) -> tuple[int, int]:
    """First and last time step at which a buffer of this role is used."""
    def bwd(s):
        return backward_time(s, stages, mode)

    if role == "keep":
        return stage, bwd(stage)
    if role == "out":                          # the next stage's input, forward and backward
        return stage, max(stage + 1, bwd(stage + 1))
    if role == "outkeep":                      # ... and read by this stage's own backward
        return stage, max(stage + 1, bwd(stage + 1), bwd(stage))
    if role == "ograd":                        # written by the next stage's backward
        return bwd(stage + 1), bwd(stage)
    if role == "grad":
        return bwd(stage), bwd(stage)
    raise ValueError(f"buffer role {role!r}")


def _planned(stages: list[list[Buf]], mode: str):
    """(stage, Buf, lifetime) of every buffer the planner places (not scratch)."""
    for stage, bufs in enumerate(stages):
        for buf in bufs:
            if buf.role == "tmp" or (mode == "infer" and buf.role in ("grad", "ograd")):
                continue
            yield stage, buf, lifetime(stage, buf.role, len(stages), mode)


def live_bytes(stages: list[list[Buf]], mode: str, time: int) -> int:
    """Bytes of planned buffers in use at this time step (scratch excluded)."""
    return sum(aligned(buf.nbytes) for _, buf, (first, last) in _planned(stages, mode) if first <= time <= last)


def greedy_offsets(blocks: list[tuple[int, int, int]]) -> tuple[list[int], int]:
    """TFLite Micro's greedy planner: blocks (size, first, last use) placed in the given
    order, each at the lowest offset free of every placed block whose lifetime overlaps
    its own. Returns (offset per block, bytes spanned). Callers order largest first."""
    placed, offsets, peak = [], [], 0
    for size, first, last in blocks:
        busy = sorted((off, off + n) for off, n, a, b in placed if a <= last and first <= b)
        offset = 0
        for start, end in busy:
            if offset + size <= start:
                break
            offset = max(offset, end)
        placed.append((offset, size, first, last))
        offsets.append(offset)
        peak = max(peak, offset + size)
    return offsets, peak


def plan(stages: list[list[Buf]], mode: str) -> Layout:
    """The layout an Arena over these stages has, for this schedule."""
    if mode not in SCHEDULES:
        raise ValueError(f"arena schedule {mode!r}; one of {', '.join(SCHEDULES)}")
    items = list(_planned(stages, mode))
    tmp = [(stage, buf) for stage, bufs in enumerate(stages) for buf in bufs if buf.role == "tmp"]
    # Largest first; ties in a fixed order so the layout is reproducible.
    items.sort(key=lambda it: (-aligned(it[1].nbytes), it[2][0], it[0], it[1].name))
    offsets, live = greedy_offsets([(aligned(buf.nbytes), first, last) for _, buf, (first, last) in items])
    placement = [(stage, buf, "live", offset) for (stage, buf, _), offset in zip(items, offsets)]
    # A stage's scratch buffers can be used together (the fused pooled backward uses its
    # columns and its dz slices at once): consecutive within a stage, shared across stages.
    scratch, cursor = 0, {}
    for stage, buf in tmp:
        offset = cursor.get(stage, 0)
        placement.append((stage, buf, "tmp", offset))
        cursor[stage] = offset + aligned(buf.nbytes)
        scratch = max(scratch, cursor[stage])
    return Layout(placement, {"live": live, "tmp": scratch}, live + scratch)


class Arena:
    def __init__(self, stages: list[list[Buf]], mode: str, memory: np.ndarray | None = None):
        """memory: a uint8 buffer to lay the views over instead of allocating (another
        arena's, when the two are never in use at the same time); used if large enough."""
        layout = plan(stages, mode)
        self.mode = mode
        self.nbytes = layout.nbytes
        self.region_bytes = dict(layout.region_bytes)
        base = {"live": 0, "tmp": layout.region_bytes["live"]}
        need = max(layout.nbytes, ALIGN)
        self.borrowed = memory is not None and memory.nbytes >= need
        self.memory = memory if self.borrowed else np.empty(need, np.uint8)
        self.views: list[dict[str, np.ndarray]] = [dict() for _ in stages]
        for stage, buf, region, off in layout.placement:
            start = base[region] + off
            raw = self.memory[start:start + buf.nbytes]
            self.views[stage][buf.name] = raw.view(buf.dtype).reshape(buf.shape)

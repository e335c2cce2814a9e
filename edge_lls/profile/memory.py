"""Bytes of a training step: the arena laid out from the same buffer lists and by the same
rules as nn/arena.py, retyped for a precision, and the small transients outside it."""
from __future__ import annotations

import numpy as np

from ..nn.arena import Buf, aligned, plan
from ..nn.layers import BatchNorm

# ------------------------------------------------------------------------- the layout
def layout_bytes(stages: list[list[Buf]], mode: str) -> tuple[int, dict[str, int]]:
    """(total bytes, bytes per region) of an Arena over these stages, without allocating."""
    layout = plan(stages, mode)
    return layout.nbytes, dict(layout.region_bytes)


def _retype(bufs: list[Buf], itemsize: int) -> list[Buf]:
    """Float buffers at another width (fp16: float16, int8: int8); integer ones unchanged."""
    if itemsize == 4:
        return list(bufs)
    dtype = {2: np.float16, 1: np.int8}[itemsize]
    return [Buf(b.name, b.shape, b.role, dtype) if np.dtype(b.dtype).kind == "f" else b for b in bufs]


def _role_bytes(bufs, *roles) -> int:
    return sum(aligned(b.nbytes) for b in bufs if b.role in roles)



def _bn_state_bytes(bn: BatchNorm) -> int:
    return sum(a.nbytes for a in (bn.running_mean, bn.running_var, bn.mean, bn.inv_std, bn._scratch))


def _head_transient(head, n: int, k: int) -> int:
    d, r = head.dim, head.basis.shape[0]
    small = 4 * n * max(r, k) * 8                       # logits, CE temporaries (float64)
    est = r * d * 4 + small                             # the basis gradient (always computed)
    if head.modulation_kind == "mxm":
        est += r * k * 4 + n * r * 4
    if head.learned is not None:
        est += r * d * 16                               # column pooling of the learned basis
    return est


def _ce_transient(n: int, k: int) -> int:
    return 6 * n * k * 8 + n * 8




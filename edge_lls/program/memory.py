"""The inference arena of a program: where every runtime tensor lives, planned once.

A tensor lives from the op that writes it (the graph input: from the start) to the last
op that reads it (a graph output: to the end). Tensors whose lifetimes do not overlap
share bytes, placed largest first at the lowest free offset (nn/arena.greedy_offsets,
TFLite Micro's greedy planner), each on a 16-byte boundary (what TFLM and CMSIS-NN
align to). A RESHAPE's output is its input's bytes, as in TFLM. This is the activation
arena only: kernel scratch, which depends on the kernels a target runs, is not in it.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..nn.arena import greedy_offsets
from .ir import Program

ALIGN = 16
ALIASES = ("RESHAPE",)


@dataclass(frozen=True)
class ProgramPlan:
    offsets: dict[int, int]                  # runtime tensor index -> byte offset
    lifetimes: dict[int, tuple[int, int]]    # tensor index -> (first op, last op)
    sizes: dict[int, int]                    # tensor index -> bytes (aligned)
    arena_bytes: int

    def live_bytes(self, op: int) -> int:
        """Bytes of the tensors in use while op runs (a lower bound on any arena)."""
        return sum(self.sizes[t] for t, (a, b) in self.lifetimes.items() if a <= op <= b)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def plan_program(program: Program, batch: int = 1) -> ProgramPlan:
    tensors = program.tensors
    last_op = len(program.operators)
    root = {}                                # an alias's tensor -> the tensor owning its bytes
    first, last = {}, {}
    for index in program.inputs:
        first[index] = last[index] = -1
    for i, op in enumerate(program.operators):
        for t in op.inputs:
            if t >= 0 and tensors[t].data is None:
                t = root.get(t, t)
                last[t] = max(last.get(t, i), i)
        for t in op.outputs:
            if op.opcode in ALIASES and tensors[op.inputs[0]].data is None:
                root[t] = root.get(op.inputs[0], op.inputs[0])
                continue
            first.setdefault(t, i)
            last[t] = max(last.get(t, i), i)
    for t in program.outputs:
        last[root.get(t, t)] = last_op
    sizes = {t: _aligned(batch * int(np.prod(tensors[t].shape[1:], dtype=np.int64)) * tensors[t].dtype.itemsize)
             for t in first}
    order = sorted(first, key=lambda t: (-sizes[t], first[t], t))       # largest first, reproducible
    offsets, peak = greedy_offsets([(sizes[t], first[t], last[t]) for t in order])
    placed = dict(zip(order, offsets))
    for alias, owner in root.items():
        placed[alias] = placed[owner]
    return ProgramPlan(placed, {t: (first[t], last[t]) for t in first}, sizes, peak)

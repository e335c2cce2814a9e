"""A block: one or more units (conv/dense -> batch norm -> activation), trained as one
unit by its own learning signal, then optional pooling that feeds the next block.

    x --unit 0--> y0 --unit 1--> y1 ... --> a (block output: the learning signal's input)
                                             `--post ops (max/avg pool)--> h (passed on)

Buffer names in the step arena (see arena.py), for unit k and post op j:
    z{k}  op output, pre-norm   keep        y{k}  activation output   keep
    g{k}  dL/dy{k}, then dL/dz{k} in place  grad
    s     conv scratch (im2col)             tmp
    p{j}  post op output (last one: 'out')  arg{j} max-pool argmax (BP only)
    dh    dL/dh, written by the next stage  (BP only; is g{last} when there is no post op)
"""
from __future__ import annotations

import numpy as np

from .arena import Buf
from .layers import BatchNorm, Conv2d


class DeferredOutput:
    """A block output that is never stored: y = act(z * scale + shift) of the block's
    batch norm, applied on the fly by whatever reads it (pooling, the LLS head)."""

    def __init__(self, z, bn):
        self.z, self.bn = z, bn

    @property
    def shape(self):
        return self.z.shape

    @property
    def bn_act(self):
        return self.bn.scale, self.bn.shift, self.bn.act


class Unit:
    def __init__(self, op, bn: BatchNorm):
        self.op, self.bn = op, bn

    @property
    def params(self):
        return self.op.params + self.bn.params


class Block:
    def __init__(self, name: str, units: list[Unit], post: list, pool_size: int, spec: dict):
        self.name, self.units, self.post, self.pool_size, self.spec = name, units, post, pool_size, spec

    @property
    def params(self):
        return [p for u in self.units for p in u.params]

    # ------------------------------------------------------------------ shapes and buffers
    def shapes(self, in_shape):
        """Returns (unit output shapes, a's shape, h's shape)."""
        unit_shapes, s = [], tuple(in_shape)
        for u in self.units:
            s = u.op.out_shape(s)
            unit_shapes.append(s)
        a_shape = s
        for p in self.post:
            s = p.out_shape(s)
        return unit_shapes, a_shape, s

    def accepts_pooled_grad(self) -> bool:
        """Can backward take dL/da as an adaptive-pooled gradient (never materialising
        the full-size dL/da)? Needs a conv last unit whose input gradient, if another
        unit precedes it, is a plain GEMM (pointwise)."""
        last = self.units[-1].op
        return isinstance(last, Conv2d) and last.groups == 1 and (len(self.units) == 1 or last.is_pointwise())

    def defers_output(self) -> bool:
        """Can local training skip storing the block output y? One conv unit whose only
        reader is one pooling op that applies batch norm + activation as it reads; the
        LLS head pools it the same way, and the pooled backward needs only z."""
        return (self.accepts_pooled_grad() and len(self.units) == 1 and len(self.post) == 1
                and self.post[0].fuses_bn_act)

    def buffers(self, in_shape, *, backprop: bool, pooled_grad: bool = False,
                storage=np.float32) -> list[Buf]:
        """pooled_grad: dL/da arrives pooled (see backward_pooled), so the last unit has
        no full-size gradient buffer, only a slice of rows 'dzr' in scratch.
        storage: dtype of the activations z, y and p (float16 in mixed precision);
        gradients and scratch are float32."""
        unit_shapes, _, _ = self.shapes(in_shape)
        last = len(self.units) - 1
        half = np.dtype(storage) == np.float16
        bufs, shape = [], tuple(in_shape)
        scratch = 1
        for k, (u, out_shape) in enumerate(zip(self.units, unit_shapes)):
            scratch = max(scratch, u.op.scratch_floats(shape, input_grad=backprop, half=half))
            bufs.append(Buf(f"z{k}", out_shape, "keep", storage))
            if not (k == last and pooled_grad and self.defers_output()):
                # Without pooling, y of the last unit is what the next stage reads and what
                # this block's batch-norm backward reads: it lives until both are done (DFA
                # runs a block's backward long after the next stage's).
                y_role = "outkeep" if (k == last and not self.post) else "keep"
                bufs.append(Buf(f"y{k}", out_shape, y_role, storage))
            if k == last and pooled_grad:
                cols, dz = u.op.pooled_scratch(shape, half)
                scratch = max(scratch, cols)
                bufs.append(Buf("dzr", (max(dz, 1),), "tmp"))
            else:
                # In backprop the next stage writes dL/dy of the last unit when no pooling follows.
                role = "ograd" if backprop and k == last and not self.post else "grad"
                bufs.append(Buf(f"g{k}", out_shape, role))
            shape = out_shape
        bufs.append(Buf("s", (scratch,), "tmp"))
        for j, p in enumerate(self.post):
            out_shape = p.out_shape(shape)
            bufs.append(Buf(f"p{j}", out_shape, "out" if j == len(self.post) - 1 else "keep", storage))
            if backprop:
                if p.needs_argmax:
                    bufs.append(Buf(f"arg{j}", out_shape, "keep", dtype=np.int32))
                is_out = j == len(self.post) - 1
                bufs.append(Buf("dh" if is_out else f"pg{j}", out_shape, "ograd" if is_out else "grad"))
            shape = out_shape
        return bufs

    def output_grad_name(self) -> str:
        """The buffer the next stage writes dL/dh into (backprop only)."""
        return "dh" if self.post else f"g{len(self.units) - 1}"

    # ---------------------------------------------------------------------- computation
    def forward(self, x, V, training: bool, backprop: bool = False, defer: bool = False):
        """Returns (a, h): the block output and what is passed on (same array if no post).
        defer (local training, defers_output()): a is a DeferredOutput, never stored."""
        if defer:
            u, post = self.units[0], self.post[0]
            u.op.forward(x, V["z0"], V["s"])
            u.bn.stats(V["z0"])
            a = DeferredOutput(V["z0"], u.bn)
            post.forward(a.z, V["p0"], None, a.bn_act)
            return a, V["p0"]
        inp = x
        for k, u in enumerate(self.units):
            u.op.forward(inp, V[f"z{k}"], V["s"])
            u.bn.forward(V[f"z{k}"], V[f"y{k}"], training)
            inp = V[f"y{k}"]
        a = h = inp
        for j, p in enumerate(self.post):
            p.forward(h, V[f"p{j}"], V.get(f"arg{j}") if backprop else None)
            h = V[f"p{j}"]
        return a, h

    def backward(self, x, V, dx=None):
        """Parameter gradients from dL/da, which must already be in V[g{last}].

        Gradients stay inside the block: through each activation and batch norm, through
        the ops, but out of the block's input only when dx is given (backprop baseline).
        """
        self._backward_units(x, V, len(self.units) - 1, dx)

    def _backward_units(self, x, V, top: int, dx):
        for k in range(top, -1, -1):
            u, g = self.units[k], V[f"g{k}"]
            u.bn.backward(g, V[f"y{k}"], V[f"z{k}"], g)           # g: dL/dy -> dL/dz in place
            inp = x if k == 0 else V[f"y{k - 1}"]
            u.op.grad_weight(inp, g, V["s"])
            if k > 0:
                u.op.grad_input(g, V[f"g{k - 1}"], V["s"])
            elif dx is not None:
                u.op.grad_input(g, dx, V["s"])

    def backward_pooled(self, x, V, dv_area):
        """Parameter gradients when dL/da is the adaptive-pool upsampling of dv_area
        (N, P, Q, C) (the pooled gradient divided by window areas). Batch norm reads
        dv_area directly and dL/dz of the last unit exists one task of rows at a time,
        inside the weight-gradient kernel: no full-size dL/da or dL/dz."""
        last = len(self.units) - 1
        u = self.units[last]
        inp = x if last == 0 else V[f"y{last - 1}"]
        gprev = V[f"g{last - 1}"] if last > 0 else None
        u.op.grad_weight_pooled(inp, dv_area, V[f"z{last}"], u.bn, V["s"], V["dzr"], gprev)
        self._backward_units(x, V, last - 1, None)

    def post_backward(self, V):
        """dL/dh (in V['dh']) back through the pooling to dL/da in V[g{last}]."""
        last = len(self.units) - 1
        d = V.get("dh")
        for j in range(len(self.post) - 1, -1, -1):
            target = V[f"g{last}"] if j == 0 else V[f"pg{j - 1}"]
            self.post[j].backward(d, target, V.get(f"arg{j}"))
            d = target

"""The analytic profile of a training step: per block MACs and live bytes, the step's
peak, and the ratios of a rule to BP."""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from ..errors import ConfigError
from ..kernels.reduce import SLICES
from ..nn.arena import backward_time, live_bytes
from ..nn.model import Model
from .counting import (BN_INPUT_GRAD_OPS, PRECISION_BYTES, _bias_adds, _prod, batchnorm_backward_ops, batchnorm_ops, head_signal_macs, op_macs, optimizer_ops_per_element, pool_backward_macs, pool_macs)
from .memory import _bn_state_bytes, _ce_transient, _head_transient, _retype, _role_bytes, layout_bytes

# ---------------------------------------------------------------------------- results
@dataclass
class BlockProfile:
    name: str
    kind: str                       # conv | dwsep | dense | classifier
    input_shape: tuple
    output_shape: tuple             # a: the block output the learning signal is about
    forward_macs: int = 0
    forward_other_ops: int = 0
    learning_signal_macs: int = 0
    learning_signal_path_macs: int = 0
    weight_grad_macs: int = 0
    optimizer_macs: int = 0
    weight_bytes: int = 0
    grad_bytes: int = 0
    optimizer_bytes: int = 0
    rule_param_bytes: int = 0
    activation_bytes: int = 0       # live while this stage trains (see the module doc)
    scratch_bytes: int = 0
    own_bytes: int = 0              # this stage's own buffers in the arena (no scratch)
    transient_bytes: int = 0
    buffers: list = field(default_factory=list)     # (name, shape, role, bytes)

    @property
    def total_macs(self) -> int:
        return (self.forward_macs + self.forward_other_ops + self.learning_signal_macs
                + self.weight_grad_macs + self.optimizer_macs)

    def to_dict(self) -> dict:
        return {
            "name": self.name, "type": self.kind,
            "input_shape": list(self.input_shape), "output_shape": list(self.output_shape),
            "forward_macs": self.forward_macs, "forward_other_ops": self.forward_other_ops,
            "learning_signal_macs": self.learning_signal_macs,
            "learning_signal_path_macs": self.learning_signal_path_macs,
            "weight_grad_macs": self.weight_grad_macs, "optimizer_macs": self.optimizer_macs,
            "total_macs": self.total_macs,
            "weight_bytes": self.weight_bytes, "grad_bytes": self.grad_bytes,
            "optimizer_bytes": self.optimizer_bytes, "rule_param_bytes": self.rule_param_bytes,
            "activation_bytes": self.activation_bytes, "scratch_bytes": self.scratch_bytes,
            "own_bytes": self.own_bytes, "transient_bytes": self.transient_bytes,
            "buffers": [{"name": n, "shape": list(s), "role": r, "bytes": b} for n, s, r, b in self.buffers],
        }


@dataclass
class Profile:
    model: str
    rule: str
    mode: str                       # local | global
    batch: int
    input_shape: tuple              # (H, W, C)
    num_classes: int
    optimizer: str
    precision: str
    blocks: list[BlockProfile]      # every block, then the classifier
    arena_bytes: int
    arena_regions: dict
    input_bytes: int
    transient_bytes: int
    measured: dict | None = None
    device: dict | None = None

    # ----------------------------------------------------------------- totals
    def _sum(self, attr) -> int:
        return sum(getattr(b, attr) for b in self.blocks)

    @property
    def forward_macs(self):
        return self._sum("forward_macs")

    @property
    def forward_macs_per_sample(self):
        return self.forward_macs // self.batch

    @property
    def learning_signal_full_macs(self):
        """BP: the whole backward pass of the error from the loss to block 0's output,
        every later block's batch-norm and intra-block input gradients included (what a
        layer-by-layer count calls BP's learning signal). Other rules: learning_signal_macs."""
        if self.rule == "bp" and len(self.blocks) > 1:
            return self.blocks[0].learning_signal_path_macs
        return self.learning_signal_macs

    @property
    def forward_other_ops(self):
        return self._sum("forward_other_ops")

    @property
    def learning_signal_macs(self):
        return self._sum("learning_signal_macs")

    @property
    def weight_grad_macs(self):
        return self._sum("weight_grad_macs")

    @property
    def optimizer_macs(self):
        return self._sum("optimizer_macs")

    @property
    def total_macs(self):
        return self._sum("total_macs")

    @property
    def weight_bytes(self):
        return self._sum("weight_bytes")

    @property
    def grad_bytes(self):
        return self._sum("grad_bytes")

    @property
    def optimizer_bytes(self):
        return self._sum("optimizer_bytes")

    @property
    def rule_param_bytes(self):
        return self._sum("rule_param_bytes")

    @property
    def persistent_bytes(self):
        """What exists before any step: weights, gradients, optimizer state, rule tensors."""
        return self.weight_bytes + self.grad_bytes + self.optimizer_bytes + self.rule_param_bytes

    @property
    def scratch_bytes(self):
        return self.arena_regions.get("tmp", 0)

    @property
    def activation_bytes(self):
        """The arena without its scratch: activations, their gradients, head buffers."""
        return self.arena_bytes - self.scratch_bytes

    @property
    def step_bytes(self):
        """What a step allocates: the arena (on the first step) and its temporaries."""
        return self.arena_bytes + self.transient_bytes

    @property
    def peak_memory_bytes(self):
        return self.persistent_bytes + self.step_bytes + self.input_bytes

    @property
    def peak_block(self) -> BlockProfile:
        """Local rules: the block whose live set is largest (it sizes the shared region).
        BP / DFA: the arena holds every block's buffers at once; the largest holder."""
        if self.mode == "local":
            return max(self.blocks, key=lambda b: b.activation_bytes + b.scratch_bytes)
        return max(self.blocks, key=lambda b: b.own_bytes)

    @property
    def min_activation_bytes(self):
        """The largest live set of activations + scratch: what a perfect allocator would
        need for this rule's schedule (the arena may take more: its regions are each
        sized by their own largest stage)."""
        return max(b.activation_bytes + b.scratch_bytes for b in self.blocks)

    @property
    def analytic_only(self) -> bool:
        return self.precision == "int8"

    def memory(self) -> dict:
        return {"weights": self.weight_bytes, "grads": self.grad_bytes,
                "optimizer_state": self.optimizer_bytes, "rule_params": self.rule_param_bytes,
                "activations": self.activation_bytes, "scratch": self.scratch_bytes,
                "transient": self.transient_bytes, "input": self.input_bytes}

    def to_dict(self) -> dict:
        out = {
            "model": self.model, "rule": self.rule, "mode": self.mode, "batch": self.batch,
            "input_shape": list(self.input_shape), "num_classes": self.num_classes,
            "optimizer": self.optimizer, "precision": self.precision,
            "analytic_only": self.analytic_only,
            "forward_macs": self.forward_macs, "forward_macs_per_sample": self.forward_macs_per_sample,
            "forward_other_ops": self.forward_other_ops,
            "learning_signal_macs": self.learning_signal_macs,
            "learning_signal_full_macs": self.learning_signal_full_macs,
            "weight_grad_macs": self.weight_grad_macs, "optimizer_macs": self.optimizer_macs,
            "total_macs": self.total_macs,
            "peak_memory_bytes": self.peak_memory_bytes, "peak_block": self.peak_block.name,
            "memory": self.memory(),
            "persistent_bytes": self.persistent_bytes, "step_bytes": self.step_bytes,
            "arena_bytes": self.arena_bytes, "arena_regions": dict(self.arena_regions),
            "min_activation_bytes": self.min_activation_bytes,
            "blocks": [b.to_dict() for b in self.blocks],
        }
        if self.measured is not None:
            out["measured"] = dict(self.measured)
        if self.device is not None:
            out["device"] = dict(self.device)
        return out


def ratios(lls: Profile, bp: Profile) -> dict:
    return {"learning_signal_macs": lls.learning_signal_macs / bp.learning_signal_macs,
            "learning_signal_vs_full_backward": lls.learning_signal_macs / bp.learning_signal_full_macs,
            "total_macs": lls.total_macs / bp.total_macs,
            "peak_memory": lls.peak_memory_bytes / bp.peak_memory_bytes,
            "step_memory": lls.step_bytes / bp.step_bytes}



def profile_model(model: Model, rule="lls", batch: int = 64, *, optimizer: str = "adamw-sf",
                  precision: str = "fp32", trainer=None, **rule_options) -> Profile:
    """Count MACs and bytes of one training step of model under rule with this batch.

    A Trainer is built (or pass one) so that the rule's heads, its extra parameters and
    the optimizer state are the real ones; no step runs and no arena is allocated.
    """
    from ..trainer import Trainer

    if precision not in PRECISION_BYTES:
        raise ConfigError(f"unknown precision {precision!r}; choose fp32, fp16 or int8")
    if batch < 2:
        raise ConfigError("a training batch needs at least 2 samples (batch norm statistics)")
    if trainer is None:
        trainer = Trainer(model, rule=rule, optimizer=optimizer, precision="fp16" if precision == "fp16" else "fp32",
                          **rule_options)
    elif precision == "fp16" and model.activation_dtype != np.float16:
        raise ConfigError("profile_model(precision='fp16') needs a trainer built with precision='fp16'")
    rule_obj, opt_kind = trainer.rule, trainer.optimizers[0].kind
    # int8 is analytic (every buffer retyped to one byte); fp16 is what the runtime
    # plans: its arena's activation buffers are float16 already, the rest float32.
    item = PRECISION_BYTES[precision] if precision == "int8" else 4
    scale = item / 4.0
    n, k = batch, model.num_classes
    mode = rule_obj.mode
    shapes, cls_in = model.stage_shapes(batch)
    heads = getattr(rule_obj, "heads", None) if mode == "local" else None
    head_bufs = rule_obj.head_buffers(model, batch) if mode == "local" else None

    # ---- buffers and the layout, exactly as Model.arena builds them
    stages = [_retype(bufs, item) for bufs in model.stages(batch, mode, head_bufs, rule_obj.pooled_grad)]
    arena_bytes, regions = layout_bytes(stages, mode)

    profiles: list[BlockProfile] = []
    for i, (block, (in_shape, a_shape, h_shape)) in enumerate(zip(model.blocks, shapes)):
        prof = BlockProfile(block.name, block.spec["type"], tuple(in_shape[1:]), tuple(a_shape[1:]))
        shape = in_shape
        for u_index, unit in enumerate(block.units):
            out = unit.op.out_shape(shape)
            macs = op_macs(unit.op, shape)
            prof.forward_macs += macs
            prof.forward_other_ops += batchnorm_ops(out, unit.bn.act_name, training=True)
            prof.weight_grad_macs += macs + _bias_adds(unit.op, out) + batchnorm_backward_ops(out)
            if u_index > 0:
                prof.weight_grad_macs += macs                 # input gradient to the unit before
            shape = out
        for post in block.post:
            prof.forward_other_ops += pool_macs(post, shape)
            shape = post.out_shape(shape)
        profiles.append(prof)

    cls = BlockProfile("classifier", "classifier", tuple(cls_in[1:]), (k,))
    cls.forward_macs = op_macs(model.classifier, cls_in)
    cls.weight_grad_macs = cls.forward_macs + _bias_adds(model.classifier, (n, k))
    cls.learning_signal_macs = 2 * n * k + (n * k if rule_obj.name == "dfa" else 0)
    cls.learning_signal_path_macs = cls.learning_signal_macs
    profiles.append(cls)

    # ---- learning signal
    nb = len(model.blocks)
    if mode == "local":
        for i, head in enumerate(heads):
            profiles[i].learning_signal_macs = head_signal_macs(head, n, k)
    elif rule_obj.name == "dfa":
        for i, (_, a_shape, _) in enumerate(shapes):
            profiles[i].learning_signal_macs = n * k * _prod(a_shape[1:])
    else:                                               # bp: one backward step per boundary
        for i, (block, (in_shape, a_shape, _)) in enumerate(zip(model.blocks, shapes)):
            nxt = model.classifier if i == nb - 1 else model.blocks[i + 1].units[0].op
            nxt_in = cls_in if i == nb - 1 else shapes[i + 1][0]
            macs = op_macs(nxt, nxt_in)
            s = a_shape
            for post in block.post:
                macs += pool_backward_macs(post, s)
                s = post.out_shape(s)
            profiles[i].learning_signal_macs = macs
    # the path from the loss down to each block's output
    if mode == "backprop":
        path = cls.learning_signal_macs
        for i in range(nb - 1, -1, -1):
            path += profiles[i].learning_signal_macs
            profiles[i].learning_signal_path_macs = path
            block, s = model.blocks[i], shapes[i][0]
            for u_index, unit in enumerate(block.units):   # this block's BN + intra-block
                out = unit.op.out_shape(s)                 # input gradients, on the way down
                path += BN_INPUT_GRAD_OPS * _prod(out)
                if u_index > 0:
                    path += op_macs(unit.op, s)
                s = out
    else:
        for p in profiles[:nb]:
            p.learning_signal_path_macs = p.learning_signal_macs

    # ---- optimizer and persistent memory
    for i, p in enumerate(profiles):
        opt = trainer.optimizers[i]
        elements = sum(q.value.size for q in opt.params)
        p.optimizer_macs = optimizer_ops_per_element(opt) * elements
        p.optimizer_bytes = sum(a.nbytes for a in opt.state_arrays().values())
        params = model.blocks[i].params if i < nb else model.classifier.params
        p.weight_bytes = int(sum(q.value.nbytes for q in params) * scale)
        p.grad_bytes = int(sum(q.grad.nbytes for q in params) * scale)
        if i < nb:
            p.weight_bytes += int(sum(_bn_state_bytes(u.bn) for u in model.blocks[i].units) * scale)
            rule_bytes = 0
            if heads is not None:
                h = heads[i]
                rule_bytes += sum(q.value.nbytes + q.grad.nbytes for q in h.params) * scale
                rule_bytes += h.basis.nbytes * scale + h._perm.nbytes
            elif rule_obj.name == "dfa":
                rule_bytes += rule_obj.feedback[i].nbytes * scale
            p.rule_param_bytes = int(rule_bytes)

    # ---- activations live per stage, transients
    aligned_out = [_role_bytes(b, "out") for b in stages]
    keep = [_role_bytes(b, "keep") for b in stages]
    grad = [_role_bytes(b, "grad", "ograd") for b in stages]
    tmp = [_role_bytes(b, "tmp") for b in stages]
    for i, p in enumerate(profiles):
        # What the arena's schedule holds while stage i learns (nn/arena.py lifetimes).
        p.activation_bytes = live_bytes(stages, mode, backward_time(i, len(stages), mode))
        p.scratch_bytes = tmp[i]
        p.own_bytes = keep[i] + grad[i] + aligned_out[i]
        p.buffers = [(b.name, tuple(b.shape), b.role, b.nbytes) for b in stages[i]]
        if i < nb:
            widest = max(u.bn.channels for u in model.blocks[i].units)
            # The reductions' float64 slice sums (reduce.slice_partials): allocated at the
            # first step for each channel count, then reused.
            t = 2 * SLICES * widest * 8
            if heads is not None:
                t = max(t, _head_transient(heads[i], n, k))
            if rule_obj.name == "dfa":
                t = max(t, n * k * 12)
            p.transient_bytes = t
        else:
            p.transient_bytes = _ce_transient(n, k)

    transient = int(max(p.transient_bytes for p in profiles) * scale)
    # Each conv layer that takes its gradient pooled allocates its per-thread rows at its
    # first backward (float64 bias partials, float32 dL/dz rows) and keeps them.
    threads = numba.config.NUMBA_NUM_THREADS
    for block, pooled in zip(model.blocks, rule_obj.pooled_grad or [False] * nb):
        if pooled:
            transient += threads * block.units[-1].op.cout * (8 + 4 * 4)
    h, w, c = model.input_shape
    input_bytes = n * h * w * c * item + n * 8
    return Profile(model.name, rule_obj.name, mode, batch, tuple(model.input_shape), k, opt_kind,
                   precision, profiles, arena_bytes, regions, input_bytes, transient)



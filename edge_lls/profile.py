"""`edge-lls profile`: where a training step's multiply-accumulates and memory go.

    edge-lls profile --model vgg8 --input 32x32x3 --classes 10 --rule lls --batch 64 --compare
    python -m edge_lls.profile --model smallconv --input 32x32x3 --rule lls --measure --json

Everything is derived from the objects a real training run uses: the model is built, a
Trainer is attached with the rule and optimizer, and the step's activation memory comes
from the same buffer lists (`Block.buffers`, the heads' `buffers`, the classifier's) laid
out by the same rules as `nn/arena.py` (`layout_bytes` equals `Arena(...).nbytes`; a test
holds them together). `--measure` then runs real steps under tracemalloc.

Counting conventions (per training step of a batch of N):
- A MAC is one multiply-add. `forward_macs` counts convolutions (depthwise included) and
  fully connected layers only, as MLPerf Tiny does (MobileNetV1-0.25 at 96x96x3 with 2
  classes: 7,489,664 per sample).
- `forward_other_ops`: batch norm in training mode (3 per element: sum, squared deviation,
  scale-and-shift), the activation (1 per element), pooling (1 per input tap in a window:
  adds for average pooling, compares for max pooling; the average's scale is folded in).
- `learning_signal_macs`: what the rule spends to deliver each block's error dL/da, the
  gradient of its output.
    LLS family: the head, forward and backward: adaptive pooling (taps), normalisation
      (2·D forward: squares and the division; 3·D backward), projection on the basis (N·D·R,
      and N·R·D back), modulation (LLS-M: N·K, twice back; LLS-MxM: N·R·K, twice back),
      softmax cross-entropy (N·K forward, N·K back).
    LocalLosses / LLS-Random: the same without normalisation; LocalLosses adds its basis
      gradient (N·R·D) and the column pooling of its learned basis (R·hidden, twice).
    BP: for block l, the input gradient of the stage after it (the transposed conv / FC:
      as many MACs as that op's forward) and the backward of block l's own pooling; summed
      over the blocks this is the whole backward pass through every later block, each
      part counted once. (`learning_signal_path_macs` in --json: the full path from the
      loss down to a_l, later blocks' batch-norm input gradients included.)
    DFA: N·K·|a_l| per block (the fixed random projection of the output error).
    Classifier (every rule): softmax cross-entropy, N·K forward and N·K back (DFA: + N·K,
      it recomputes the output error).
  Work inside a block that every rule needs to get the block's own weight gradients
  (batch-norm backward, the input gradient between the two units of a separable block)
  is weight-gradient work, not learning signal.
- `weight_grad_macs`: the op's weight gradient (as many MACs as its forward), bias sums
  (1 per output element), batch norm + activation backward (6 per element: dgamma,
  dbeta, activation gradient, input gradient), and the intra-block input gradient.
- `optimizer_macs`: per parameter element per step: SGD 2 (4 with momentum), AdamW 10,
  schedule-free AdamW 10 (a square root or a division counts 1).

Memory (bytes):
- weights: parameters + batch-norm buffers (running mean/var, batch mean/inv_std, a
  3·C scratch); grads: the parameter gradients (persistent, allocated with the params);
  optimizer state; rule: the rule's own parameters (LLS-M m, LLS-MxM M, LocalLosses
  basis, each with its gradient) and fixed tensors (the LLS basis, DFA feedback
  matrices, the heads' permutation indices).
- activations: the step arena (every activation, gradient and head buffer), and
  scratch: its 'tmp' region (im2col columns). Per block, `activation_bytes` is what is
  live while that block trains (local rules) or when the backward pass reaches it (BP),
  or while DFA updates it: the largest of these sets the peak and names the block.
- transient: what a step allocates outside the arena (the reductions' float64 slice
  sums at the first step, the heads' and the loss's small matrices): an estimate.
- input: the batch x (N,H,W,C) and its int64 labels.
Peak training memory = weights + grads + optimizer + rule + arena + transient + input.

Precision: fp32, or fp16 as the runtime trains it (mixed precision: the arena's
activation buffers at 2 bytes; gradients, scratch, weights, optimizer state and the
input batch at 4), both measurable with --measure. --precision int8 gives analytic
figures only (weights, gradients, rule tensors, activations and the input at 1 byte;
optimizer state and int32 indices stay 4 bytes), marked "analytic, not yet measurable":
training runs in float, int8 is for inference and the frozen part of a fine-tuned model.
"""
from __future__ import annotations

import argparse
import gc
import json
import sys
import tracemalloc
from dataclasses import dataclass, field

import numba
import numpy as np

from .errors import ConfigError, EdgeLLSError
from .kernels.reduce import SLICES
from .nn.arena import Buf, aligned, backward_time, live_bytes, plan
from .nn.layers import AdaptiveAvgPool2d, BatchNorm, Conv2d, Dense, MaxPool2d
from .nn.model import Model

PRECISION_BYTES = {"fp32": 4, "fp16": 2, "int8": 1}
BN_FORWARD_OPS = 3          # per element, training mode: sum, squared deviation, scale-shift
BN_EVAL_OPS = 1             # per element, inference: scale-shift
ACT_OPS = 1                 # per element
BN_BACKWARD_OPS = 6         # per element: dgamma, dbeta, activation gradient, input gradient (3)
BN_INPUT_GRAD_OPS = 3       # of which the input gradient
OPTIMIZER_OPS = {"sgd": 2, "sgd-momentum": 4, "adamw": 10, "adamw-sf": 10}
MEASURE_TOLERANCE = 0.20


# --------------------------------------------------------------------------- counting
def _prod(shape) -> int:
    return int(np.prod(shape, dtype=np.int64))


def op_macs(op, in_shape) -> int:
    """Forward MACs of a Conv2d (any stride, padding, groups: N·OH·OW·Cout·KH·KW·Cin/groups)
    or a Dense (N·in·out) on an input of in_shape (batch first)."""
    if isinstance(op, (Conv2d, Dense)):
        return int(op.macs(tuple(in_shape)))
    raise TypeError(f"no MAC count for {type(op).__name__}")


def _window_taps(size: int, kernel: int, stride: int, pad_before: int, out: int) -> int:
    """Input positions, summed over the outputs, that fall inside the input (padding excluded)."""
    total = 0
    for o in range(out):
        lo = o * stride - pad_before
        total += max(0, min(lo + kernel, size) - max(lo, 0))
    return total


def _adaptive_taps(size_in: int, size_out: int) -> int:
    """Sum of PyTorch adaptive-pooling window lengths (windows overlap when size_out does
    not divide size_in)."""
    return sum(-((-(i + 1) * size_in) // size_out) - (i * size_in) // size_out for i in range(size_out))


def pool_macs(op, in_shape) -> int:
    """Forward ops of a pooling layer: one add (average) or compare (max) per input tap in
    a window, padding taps excluded, summed over every output element."""
    n, h, w, c = in_shape
    if isinstance(op, AdaptiveAvgPool2d):
        p, q = op.size
        return n * c * _adaptive_taps(h, p) * _adaptive_taps(w, q)
    win = op.window(in_shape)
    rows = _window_taps(h, win.kh, win.sh, win.pad_top, win.out_h)
    cols = _window_taps(w, win.kw, win.sw, win.pad_left, win.out_w)
    return n * c * rows * cols


def pool_backward_macs(op, in_shape) -> int:
    """Gradient of a pooling layer: max pooling scatters one add per output element
    (through the argmax); average pooling spreads each output over its taps again."""
    if isinstance(op, MaxPool2d):
        return _prod(op.out_shape(in_shape))
    return pool_macs(op, in_shape)


def adaptive_pool1d_macs(n: int, features: int, size: int) -> int:
    return n * _adaptive_taps(features, size)


def batchnorm_ops(shape, act: str = "leaky_relu", training: bool = True) -> int:
    per = (BN_FORWARD_OPS if training else BN_EVAL_OPS) + (ACT_OPS if act != "none" else 0)
    return per * _prod(shape)


def batchnorm_backward_ops(shape) -> int:
    return BN_BACKWARD_OPS * _prod(shape)


def _bias_adds(op, out_shape) -> int:
    return _prod(out_shape) if op.b is not None else 0


def head_signal_macs(head, batch: int, num_classes: int) -> int:
    """MACs of one local head (ProjectionHead), forward and backward, for a batch."""
    n, d, k = batch, head.dim, num_classes
    r = head.basis.shape[0]
    total = 0
    if not head._identity_pool:
        if len(head.a_shape) == 3:
            taps = pool_macs(AdaptiveAvgPool2d(head.pool), (n, *head.a_shape))
        else:
            taps = adaptive_pool1d_macs(n, head.a_shape[0], head.pool)
        total += 2 * taps                                   # pool, and its gradient
    if head.normalize:
        total += 2 * n * d + 3 * n * d                      # norm + divide; radial, subtract, divide
    total += 2 * n * d * r                                  # z B^T, and dz = ds B
    if head.modulation_kind == "m":
        total += n * k + 2 * n * k                          # y = s*m; dm, ds
    elif head.modulation_kind == "mxm":
        total += n * r * k + 2 * n * r * k                  # y = s M; dM, ds
    total += 2 * n * k                                      # softmax CE, and its gradient
    if head.learned is not None:
        hidden = head.learned.value.shape[1]
        total += n * r * d + 2 * r * hidden                 # dB; column pooling of B and its grad
    return total


def optimizer_ops_per_element(optimizer) -> int:
    kind = optimizer.kind
    if kind == "sgd" and getattr(optimizer, "momentum", 0):
        kind = "sgd-momentum"
    return OPTIMIZER_OPS[kind]


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


# --------------------------------------------------------------------------- profiling
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


def profile_model(model: Model, rule="lls", batch: int = 64, *, optimizer: str = "adamw-sf",
                  precision: str = "fp32", trainer=None, **rule_options) -> Profile:
    """Count MACs and bytes of one training step of model under rule with this batch.

    A Trainer is built (or pass one) so that the rule's heads, its extra parameters and
    the optimizer state are the real ones; no step runs and no arena is allocated.
    """
    from .trainer import Trainer

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


# ------------------------------------------------------------------------- measurement
def _build(model_name, num_classes, input_shape, model_options, seed=0):
    from .models import build_model
    return build_model(model_name, num_classes=num_classes, input_shape=input_shape, seed=seed,
                       **(model_options or {}))


def measure_step(model_name: str, rule: str, batch: int, *, num_classes: int = 10, input_shape=None,
                 optimizer: str = "adamw-sf", model_options=None, rule_options=None, seed: int = 0,
                 precision: str = "fp32") -> dict:
    """Traced allocations (tracemalloc) of building a model + Trainer and of its first
    training step, after a warm-up step on another Trainer so that Numba compiles (and
    caches settle) outside the measurement.

    Returns bytes: input (the batch), persistent (model + trainer, before any step),
    step_peak (the step's peak above that: its arena and temporaries), peak (all of it).
    """
    from .trainer import Trainer

    rule_options = rule_options or {}
    probe = _build(model_name, num_classes, input_shape, model_options, seed)
    shape = probe.input_shape
    del probe
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = (np.arange(batch) % num_classes).astype(np.int64)
    warm = Trainer(_build(model_name, num_classes, shape, model_options, seed), rule=rule,
                   optimizer=optimizer, precision=precision, **rule_options)
    warm.step(x, y)
    del warm
    gc.collect()
    if tracemalloc.is_tracing():
        raise ConfigError("tracemalloc is already tracing in this process; --measure needs it to itself")
    tracemalloc.start()
    try:
        xb, yb = x.copy(), y.copy()
        input_bytes = tracemalloc.get_traced_memory()[0]
        model = _build(model_name, num_classes, shape, model_options, seed)
        trainer = Trainer(model, rule=rule, optimizer=optimizer, precision=precision, **rule_options)
        persistent = tracemalloc.get_traced_memory()[0] - input_bytes
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        trainer.step(xb, yb)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"input_bytes": input_bytes, "persistent_bytes": persistent,
            "step_peak_bytes": peak - before, "step_retained_bytes": current - before,
            "peak_bytes": peak, "arena_bytes": trainer.arena(batch).nbytes}


def attach_measurement(profile: Profile, measured: dict) -> dict:
    """Put the measured figures next to the analytic ones (relative differences)."""
    def rel(m, a):
        return (m - a) / a if a else 0.0
    out = dict(measured)
    out.update({
        "analytic_step_bytes": profile.step_bytes,
        "analytic_persistent_bytes": profile.persistent_bytes,
        "analytic_peak_bytes": profile.peak_memory_bytes,
        "step_rel_diff": rel(measured["step_peak_bytes"], profile.step_bytes),
        "persistent_rel_diff": rel(measured["persistent_bytes"], profile.persistent_bytes),
        "peak_rel_diff": rel(measured["peak_bytes"], profile.peak_memory_bytes),
        "arena_matches": measured["arena_bytes"] == profile.arena_bytes,
    })
    profile.measured = out
    return out


# ------------------------------------------------------------------------------ output
def format_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{int(n)}"


def format_bytes(n: float) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def _shape_str(shape) -> str:
    return "x".join(str(s) for s in shape)


_COLUMNS = ["block", "type", "output", "fwd MACs", "fwd other", "signal", "wgrad", "optim",
            "total", "weights", "grads", "opt state", "rule", "act live", "scratch"]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = []
    for index, r in enumerate(rows):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2])]
        cells += [c.rjust(w) for c, w in zip(r[3:], widths[3:])]
        lines.append("  ".join(cells).rstrip())
        if index == 0 or index == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(profile: Profile) -> str:
    p = profile
    head = (f"{p.model} {_shape_str(p.input_shape)}, {p.num_classes} classes, rule {p.rule} "
            f"({p.mode}), batch {p.batch}, {p.precision}, optimizer {p.optimizer}")
    if p.analytic_only:
        head += f"  [{p.precision}: analytic, not yet measurable: training runs in float]"
    rows = [_COLUMNS]
    for b in p.blocks:
        rows.append([b.name, b.kind, _shape_str(b.output_shape), format_count(b.forward_macs),
                     format_count(b.forward_other_ops), format_count(b.learning_signal_macs),
                     format_count(b.weight_grad_macs), format_count(b.optimizer_macs),
                     format_count(b.total_macs), format_bytes(b.weight_bytes),
                     format_bytes(b.grad_bytes), format_bytes(b.optimizer_bytes),
                     format_bytes(b.rule_param_bytes), format_bytes(b.activation_bytes),
                     format_bytes(b.scratch_bytes)])
    rows.append(["total", "", "", format_count(p.forward_macs), format_count(p.forward_other_ops),
                 format_count(p.learning_signal_macs), format_count(p.weight_grad_macs),
                 format_count(p.optimizer_macs), format_count(p.total_macs),
                 format_bytes(p.weight_bytes), format_bytes(p.grad_bytes),
                 format_bytes(p.optimizer_bytes), format_bytes(p.rule_param_bytes),
                 format_bytes(p.activation_bytes) + "*", format_bytes(p.scratch_bytes)])
    peak = p.peak_block
    big = sorted(peak.buffers, key=lambda t: -t[3])[:4]
    biggest = ", ".join(f"{name} {_shape_str(shape)} {format_bytes(nb)}" for name, shape, _, nb in big)
    live = {"local": "while the block trains", "bp": "when the backward pass reaches the block",
            "dfa": "while DFA updates the block (all blocks ran forward first)"}
    when = live["local"] if p.mode == "local" else live.get(p.rule, live["bp"])
    lines = [head, f"MACs per step of {p.batch} samples (forward: conv/FC only, "
                   f"{format_count(p.forward_macs_per_sample)} per sample); "
                   f"bytes held; 'act live' = activations live {when}", "",
             _table(rows), "  * total act: the step arena without scratch (allocated once, buffers "
                           "packed by lifetime: not a sum)", "",
             f"peak training memory  {format_bytes(p.peak_memory_bytes)}  ({p.peak_memory_bytes:,} B) = "
             f"weights {format_bytes(p.weight_bytes)} + grads {format_bytes(p.grad_bytes)} + optimizer "
             f"{format_bytes(p.optimizer_bytes)} + rule {format_bytes(p.rule_param_bytes)} + activations "
             f"{format_bytes(p.activation_bytes)} + scratch {format_bytes(p.scratch_bytes)} + transient "
             f"{format_bytes(p.transient_bytes)} (est.) + input {format_bytes(p.input_bytes)}",
             (f"set by {peak.name}: {format_bytes(peak.activation_bytes + peak.scratch_bytes)} of activations "
              f"and scratch live while it trains (largest: {biggest})" if p.mode == "local" else
              f"set by all blocks at once: {p.rule} holds every block's activations until its backward "
              f"pass; largest holder {peak.name} with {format_bytes(peak.own_bytes)} ({biggest})"),
             f"activations + scratch: arena {format_bytes(p.arena_bytes)}; least possible for this "
             f"schedule {format_bytes(p.min_activation_bytes)} (largest live set)"]
    if p.measured:
        m = p.measured
        lines.append(
            f"measured (tracemalloc, one real step): step peak {format_bytes(m['step_peak_bytes'])} vs "
            f"analytic {format_bytes(m['analytic_step_bytes'])} ({m['step_rel_diff']:+.1%}); "
            f"model+trainer {format_bytes(m['persistent_bytes'])} vs {format_bytes(m['analytic_persistent_bytes'])} "
            f"({m['persistent_rel_diff']:+.1%}); total peak {format_bytes(m['peak_bytes'])} vs "
            f"{format_bytes(m['analytic_peak_bytes'])} ({m['peak_rel_diff']:+.1%})")
    if p.device:
        d = p.device
        verdict = (f"fits, {format_bytes(d['margin_bytes'])} to spare" if d["fits"]
                   else f"does NOT fit: over by {format_bytes(-d['margin_bytes'])}")
        note = ""
        if d["device_precision"] != d["profiled_precision"]:
            note = (f"; {d['name']} trains in {d['device_precision']}: see --precision "
                    f"{d['device_precision']}")
        lines.append(f"device {d['name']} (budget {format_bytes(d['budget_bytes'])}): {verdict} "
                     f"({d['used_fraction']:.1%} of the budget){note}")
    return "\n".join(lines)


def render_compare(profile: Profile, bp: Profile, r: dict) -> str:
    return "\n".join([
        render(profile), "", "compared with backpropagation (same runtime, model, batch):", "",
        render(bp), "",
        f"ratios {profile.rule}/bp: learning-signal MACs {r['learning_signal_macs']:.4g} "
        f"(bp/{profile.rule} = {1 / r['learning_signal_macs']:.0f}x; against BP's whole error backward "
        f"pass, batch-norm and intra-block input gradients included: {r['learning_signal_vs_full_backward']:.4g}, "
        f"{1 / r['learning_signal_vs_full_backward']:.0f}x), total training MACs "
        f"{r['total_macs']:.3f}, peak training memory {r['peak_memory']:.3f}, step memory "
        f"(arena + temporaries) {r['step_memory']:.3f}"])


def render_summary(profiles: list[Profile], bp: Profile | None) -> str:
    p0 = profiles[0]
    rows = [["rule", "fwd MACs", "signal", "wgrad", "optim", "total MACs", "signal/BP", "signal/BPfull", "total/BP",
             "weights+grads+opt+rule", "act+scratch", "peak memory", "peak/BP", "peak set by"]]
    for p in profiles:
        rows.append([p.rule, format_count(p.forward_macs), format_count(p.learning_signal_macs),
                     format_count(p.weight_grad_macs), format_count(p.optimizer_macs),
                     format_count(p.total_macs),
                     f"{p.learning_signal_macs / bp.learning_signal_macs:.4f}" if bp else "-",
                     f"{p.learning_signal_macs / bp.learning_signal_full_macs:.4f}" if bp else "-",
                     f"{p.total_macs / bp.total_macs:.3f}" if bp else "-",
                     format_bytes(p.persistent_bytes), format_bytes(p.arena_bytes),
                     format_bytes(p.peak_memory_bytes),
                     f"{p.peak_memory_bytes / bp.peak_memory_bytes:.3f}" if bp else "-", p.peak_block.name])
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    out = [f"{p0.model} {_shape_str(p0.input_shape)}, {p0.num_classes} classes, batch {p0.batch}, "
           f"{p0.precision}, optimizer {p0.optimizer}"]
    for index, r in enumerate(rows):
        out.append("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


# --------------------------------------------------------------------------------- CLI
def parse_input_shape(text: str) -> tuple:
    try:
        dims = tuple(int(v) for v in str(text).lower().replace("×", "x").split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise ConfigError(f"--input must be HxWxC, e.g. 32x32x3; got {text!r}")
    return dims


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="zoo model: smallconv, smallconv-l, vgg8, mobilenetv1")
    parser.add_argument("--input", default=None, metavar="HxWxC",
                        help="input shape, e.g. 32x32x3 (default: the model's own)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes K (default 10)")
    parser.add_argument("--rule", default="lls",
                        help="learning rule (lls, lls-m, lls-mxm, lls-random, local-losses, dfa, bp); "
                             "a comma-separated list or 'all' prints one summary row per rule")
    parser.add_argument("--batch", type=int, default=64, help="batch size N (default 64)")
    parser.add_argument("--precision", choices=sorted(PRECISION_BYTES), default="fp32",
                        help="fp32 (default); fp16: mixed-precision training as the runtime does it "
                             "(float16 activations); int8: analytic only (training runs in float)")
    parser.add_argument("--optimizer", default="adamw-sf", help="sgd, adamw, adamw-sf (default)")
    parser.add_argument("--width", type=float, default=None, help="MobileNetV1 width multiplier (default 0.25)")
    parser.add_argument("--reduced-rows", type=int, default=None,
                        help="LLS-MxM basis rows R < K (reduced LLS-MxM)")
    parser.add_argument("--device", default=None,
                        help="device profile (host, rpi4, rpi5, cortex-m4, cortex-m7): does the peak fit its budget?")
    parser.add_argument("--compare", action="store_true",
                        help="profile BP alongside and print the ratios rule/BP")
    parser.add_argument("--measure", action="store_true",
                        help="also run real training steps and report the traced peak (tracemalloc)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _device_report(name: str, profile: Profile) -> dict:
    from .devices import get_device          # lazily: the device table lives with the CLI
    dev = get_device(name)
    budget = int(dev.memory_budget)
    need = profile.peak_memory_bytes
    return {"name": dev.name, "budget_bytes": budget, "peak_memory_bytes": need,
            "device_precision": dev.precision, "profiled_precision": profile.precision,
            "fits": need <= budget, "margin_bytes": budget - need, "used_fraction": need / budget}


def _rule_list(text: str) -> list[str]:
    from .rules import RULES
    names = list(RULES) if text == "all" else [r.strip() for r in text.split(",") if r.strip()]
    for r in names:
        if r not in RULES:
            raise ConfigError(f"unknown rule {r!r}; choose one of: {', '.join(RULES)}, or all")
    return names


def profile_zoo(model_name: str, rule: str, batch: int, *, num_classes: int = 10, input_shape=None,
                optimizer: str = "adamw-sf", precision: str = "fp32", width=None, reduced_rows=None,
                measure: bool = False) -> Profile:
    """profile_model on a zoo model by name (what the command runs)."""
    model_options = {"width": width} if width is not None else {}
    if width is not None and model_name != "mobilenetv1":
        raise ConfigError("--width applies to mobilenetv1 only")
    rule_options = {"reduced_rows": reduced_rows} if reduced_rows else {}
    if measure and precision == "int8":
        raise ConfigError("--measure needs fp32 or fp16: int8 training does not exist "
                          "(its figures are analytic only)")
    model = _build(model_name, num_classes, input_shape, model_options)
    profile = profile_model(model, rule, batch, optimizer=optimizer, precision=precision, **rule_options)
    if measure:
        measured = measure_step(model_name, rule, batch, num_classes=num_classes,
                                input_shape=model.input_shape, optimizer=optimizer,
                                model_options=model_options, rule_options=rule_options, precision=precision)
        attach_measurement(profile, measured)
    return profile


def run(args) -> int:
    if args.batch < 2:
        raise ConfigError(f"--batch must be at least 2 (batch norm statistics), got {args.batch}")
    if args.classes < 2:
        raise ConfigError(f"--classes must be at least 2, got {args.classes}")
    shape = parse_input_shape(args.input) if args.input else None
    rules = _rule_list(args.rule)
    common = dict(num_classes=args.classes, input_shape=shape, optimizer=args.optimizer,
                  precision=args.precision, width=args.width, reduced_rows=args.reduced_rows,
                  measure=args.measure)
    cache: dict[str, Profile] = {}

    def get(rule):
        if rule not in cache:
            cache[rule] = profile_zoo(args.model, rule, args.batch, **common)
            if args.device:
                cache[rule].device = _device_report(args.device, cache[rule])
        return cache[rule]

    if len(rules) > 1:
        profiles = [get(r) for r in rules]
        bp = get("bp") if (args.compare or "bp" in rules) else None
        if args.json:
            print(json.dumps({"profiles": [p.to_dict() for p in profiles],
                              "bp": bp.to_dict() if bp else None}, indent=2))
        else:
            print(render_summary(profiles, bp))
        return 0
    profile = get(rules[0])
    bp = get("bp") if args.compare else None
    r = ratios(profile, bp) if bp else None
    if args.json:
        out = profile.to_dict()
        if bp:
            out["bp"] = bp.to_dict()
            out["ratios"] = r
        print(json.dumps(out, indent=2))
    else:
        print(render_compare(profile, bp, r) if bp else render(profile))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="edge-lls profile", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except EdgeLLSError as e:
        print(f"edge-lls profile: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

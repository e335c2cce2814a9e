"""Where a training step's multiply-accumulates and memory go (`edge-lls profile`).

    edge-lls profile --model vgg8 --input 32x32x3 --classes 10 --rule lls --batch 64 --compare

counting.py counts operations, memory.py lays out bytes, analytic.py assembles the
per-block profile, measure.py runs real steps; the command and its rendering live in
edge_lls/cli/profile.py.

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

from ..errors import ConfigError
from .analytic import BlockProfile, Profile, profile_model, ratios
from .counting import (PRECISION_BYTES, adaptive_pool1d_macs, batchnorm_backward_ops, batchnorm_ops,
                       head_signal_macs, op_macs, optimizer_ops_per_element, pool_backward_macs, pool_macs)
from .measure import MEASURE_TOLERANCE, _build, attach_measurement, measure_step
from .memory import layout_bytes


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


__all__ = ["BlockProfile", "Profile", "profile_model", "profile_zoo", "ratios", "PRECISION_BYTES",
           "MEASURE_TOLERANCE", "adaptive_pool1d_macs", "batchnorm_backward_ops", "batchnorm_ops",
           "head_signal_macs", "op_macs", "optimizer_ops_per_element", "pool_backward_macs", "pool_macs",
           "attach_measurement", "measure_step", "layout_bytes"]

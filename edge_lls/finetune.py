"""LLS fine-tuning of an imported int8 TFLite backbone (MobileNet-style, sequential).

    backbone = load_backbone("vww_96_int8.tflite")      # blocks found in the op list
    tuner = FineTuner(backbone, train_last=2, num_classes=2)
    feats = tuner.features(x)                # x (N,H,W,C) pixels in [0,1] -> int8 features
    tuner.start(feats[:512])                 # float tail initialised, optimizers created
    tuner.step(feats_batch, labels)          # one LLS step of the last blocks + classifier
    program = tuner.export(calibration_feats, refresh)  # int8 model: frozen prefix + new tail

Design (docs/int8.md has the measurements):
  * The op list is cut into blocks: DEPTHWISE_CONV_2D + 1x1 CONV_2D = a "dwsep" block, any
    other CONV_2D a "conv" block, a FULLY_CONNECTED before the head a "dense" block; the
    head is [global AVERAGE_POOL_2D | MEAN] [RESHAPE] classifier (FULLY_CONNECTED, or a 1x1
    CONV_2D on a 1x1 map) [RESHAPE] [SOFTMAX].
  * The frozen prefix (every op before the last N blocks) stays int8 and runs on the
    TFLite-exact kernels; it turns each image into int8 features once (cached in memory
    when they fit), never re-run per epoch.
  * The trainable tail is an edge_lls Model (dwsep / conv / dense blocks + classifier)
    trained by the Trainer with any rule (LLS by default).  Its float *master* weights start
    as the dequantized int8 weights.  TFLite folded the batch norms away, but LLS trains
    blocks with batch norm, so each unit gets a fresh BatchNorm initialised to the identity
    function on the data: gamma = sqrt(var + eps), beta = mean, running statistics = the
    mean and variance of the unit's pre-norm output on a calibration sample.  At the
    start the tail computes what the int8 tail computed (up to quantization error).
  * Export: with the schedule-free averaged weights and refreshed batch-norm statistics,
    batch norm is folded back into the conv weights and biases, and the tail is
    re-quantized exactly like post-training quantization (edge_lls/program/ptq.py): per-channel
    int8 weights, int32 biases, per-tensor activation ranges calibrated on the sample.  The
    tail's input keeps the prefix's output quantization, so the int8 model is the untouched
    prefix followed by the new tail: a standard .tflite file.
  * The classifier is initialised from the backbone's when the class count matches, fresh
    otherwise (its output tensor and softmax are resized).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_lls.errors import ConfigError, FormatError
from edge_lls.kernels.fixedpoint import quantize
from edge_lls.formats.blob import Tail, TailBlock
from edge_lls.formats.tflite import read_tflite
from edge_lls.program.edit import splice, subprogram
from edge_lls.program.ir import Program
from edge_lls.program.lower import float_program
from edge_lls.program.ptq import quantize_program
from edge_lls.program.runner import Int8Model

TRAINABLE_KINDS = ("dwsep", "conv", "dense")
ACTIVATIONS = {"NONE": "none", "RELU": "relu", "RELU6": "relu6"}
DEFAULT_CACHE_BYTES = 256 << 20
BN_INITS = ("identity", "standard")
METADATA_KEY = "edge_lls"          # .tflite metadata entry: JSON {"classes": [...], "pixel_range": [lo, hi], ...}


@dataclass
class BackboneBlock:
    kind: str                 # "dwsep", "conv", "dense", or "op" (anything else: not trainable)
    ops: tuple[int, ...]      # operator indices, in order
    name: str


@dataclass
class Head:
    pool: int | None          # global AVERAGE_POOL_2D / MEAN op
    classifier: int           # FULLY_CONNECTED or 1x1 CONV_2D op
    softmax: int | None
    first: int                # first op of the head (everything from here on is the head)
    after_pool: int           # first op after the pool (the cut for train_last=0)


def pixel_range(tensor) -> tuple[float, float]:
    """Real range [0, 1] or [-1, 1] that pixels are scaled to for a model input tensor.

    An int8 input covers reals s*(-128-zp) .. s*(127-zp); when that range reaches below
    -0.5 (person_detect: scale 2/255, zero point -1, about [-1, 1]) pixels go to [-1, 1],
    otherwise (vww_96_int8: scale 1/255, zero point -128, [0, 1]) to [0, 1].  Float inputs
    take [0, 1]."""
    if tensor.dtype != np.int8 or tensor.scales is None:
        return 0.0, 1.0
    low = tensor.scale * (-128 - tensor.zero_point)
    return (-1.0, 1.0) if low < -0.5 else (0.0, 1.0)


def quantize_pixels(x01: np.ndarray, tensor) -> np.ndarray:
    """[0,1] pixels -> the input tensor's values: scaled to pixel_range, then quantized."""
    low, high = pixel_range(tensor)
    real = np.asarray(x01, np.float32) if (low, high) == (0.0, 1.0) else \
        (np.float32(low) + np.asarray(x01, np.float32) * np.float32(high - low)).astype(np.float32)
    if tensor.dtype != np.int8:
        return real
    return quantize(real, tensor.scale, tensor.zero_point)


class Backbone:
    """A sequential int8 .tflite model cut into blocks and a head."""

    def __init__(self, program: Program, where: str):
        self.program, self.where = program, where
        ops = program.operators
        if len(program.inputs) != 1 or len(program.outputs) != 1:
            raise FormatError(f"{where}: a backbone needs one input and one output tensor")
        self.input = program.tensors[program.inputs[0]]
        if self.input.dtype != np.int8:
            raise ConfigError(f"{where}: input tensor '{self.input.name}' is {self.input.type_name}; "
                              f"fine-tuning needs an int8 model")
        previous = program.inputs[0]
        for op in ops:
            if op.inputs[0] != previous:
                raise FormatError(f"{where}: op {op.index} ({op.opcode}) does not read the previous op's output: "
                                  f"only sequential models can be fine-tuned")
            previous = op.outputs[0]
        if previous != program.outputs[0]:
            raise FormatError(f"{where}: the last op does not produce the model output")
        self.head = self._find_head()
        self.blocks = self._find_blocks()

    # ------------------------------------------------------------------ structure
    def _tensor(self, op_index: int, position: int):
        return self.program.tensors[self.program.operators[op_index].inputs[position]]

    def _out(self, op_index: int):
        return self.program.tensors[self.program.operators[op_index].outputs[0]]

    def _find_head(self) -> Head:
        ops = self.program.operators
        j = len(ops) - 1
        softmax = None
        if j >= 0 and ops[j].opcode == "SOFTMAX":
            softmax, j = j, j - 1
        if j >= 0 and ops[j].opcode == "RESHAPE":
            j -= 1
        if j < 0 or not self._is_classifier(j):
            raise FormatError(f"{self.where}: no classifier (FULLY_CONNECTED or 1x1 CONV_2D on a 1x1 map) "
                              f"before the output")
        if ops[j].options.get("activation", "NONE") != "NONE":
            raise FormatError(f"{self.where}: op {j} ({ops[j].opcode}): a classifier with a fused activation "
                              f"is not supported")
        classifier, j = j, j - 1
        after_pool = classifier
        if j >= 0 and ops[j].opcode == "RESHAPE":
            after_pool, j = j, j - 1
        pool = None
        if j >= 0 and self._is_global_pool(j):
            pool, j = j, j - 1
        return Head(pool=pool, classifier=classifier, softmax=softmax, first=j + 1, after_pool=after_pool)

    def _is_classifier(self, i: int) -> bool:
        op = self.program.operators[i]
        if op.opcode == "FULLY_CONNECTED":
            return True
        if op.opcode == "CONV_2D":
            w, x = self._tensor(i, 1), self._tensor(i, 0)
            return w.shape[1:3] == (1, 1) and len(x.shape) == 4 and x.shape[1:3] == (1, 1)
        return False

    def _is_global_pool(self, i: int) -> bool:
        op = self.program.operators[i]
        x, out = self._tensor(i, 0), self._out(i)
        if len(x.shape) != 4:
            return False
        if op.opcode == "AVERAGE_POOL_2D":
            return (op.options["filter_h"], op.options["filter_w"]) == x.shape[1:3] and out.shape[1:3] == (1, 1)
        if op.opcode == "MEAN":
            axes = sorted(int(a) % 4 for a in self._tensor(i, 1).data.reshape(-1))
            return axes == [1, 2]
        return False

    def _find_blocks(self) -> list[BackboneBlock]:
        ops, blocks, i = self.program.operators, [], 0
        while i < self.head.first:
            op = ops[i]
            if (op.opcode == "DEPTHWISE_CONV_2D" and i + 1 < self.head.first and ops[i + 1].opcode == "CONV_2D"
                    and self._tensor(i + 1, 1).shape[1:3] == (1, 1)
                    and (ops[i + 1].options["stride_h"], ops[i + 1].options["stride_w"]) == (1, 1)):
                blocks.append(BackboneBlock("dwsep", (i, i + 1), f"ops {i}-{i + 1}"))
                i += 2
                continue
            kind = {"CONV_2D": "conv", "FULLY_CONNECTED": "dense"}.get(op.opcode, "op")
            blocks.append(BackboneBlock(kind, (i,), f"op {i}"))
            i += 1
        return blocks

    @property
    def trainable_blocks(self) -> list[BackboneBlock]:
        return [b for b in self.blocks if b.kind in TRAINABLE_KINDS]

    @property
    def num_classes(self) -> int:
        return int(self._out(self.head.classifier).shape[-1])

    def cut(self, train_last: int) -> int:
        """Index of the first op that trains with train_last blocks (the head's classifier
        for 0); every op before it is the frozen prefix."""
        trainable = self.trainable_blocks
        if isinstance(train_last, bool) or not isinstance(train_last, int) or not 0 <= train_last <= len(trainable):
            raise ConfigError(f"--train-last must be an integer from 0 to {len(trainable)} "
                              f"({self.where} has {len(trainable)} trainable blocks), got {train_last!r}")
        if train_last == 0:
            return self.head.after_pool
        first = trainable[-train_last]
        tail = self.blocks[self.blocks.index(first):]
        for block in tail:
            if block.kind not in TRAINABLE_KINDS:
                op = self.program.operators[block.ops[0]]
                raise ConfigError(f"{self.where}: op {op.index} ({op.opcode}) lies inside the last {train_last} "
                                  f"blocks and cannot be trained; use a smaller --train-last")
        return first.ops[0]

    def describe(self) -> list[dict]:
        rows = []
        for b in self.blocks:
            out = self._out(b.ops[-1])
            rows.append({"kind": b.kind, "ops": list(b.ops), "output": list(out.shape[1:]),
                         "opcodes": [self.program.operators[i].opcode for i in b.ops]})
        return rows


def load_backbone(path) -> Backbone:
    return Backbone(read_tflite(path), str(path))


def trainable_tail(program: Program, train_last: int, *, waveform: str = "square", temperature: float = 0.5,
                   where: str | None = None) -> Tail:
    """The last ``train_last`` blocks of an int8 model as the firmware trains them: each
    block's ops, the tensor its LLS head pools, its pool size (as FineTuner chooses it) and
    its fixed basis with columns in NHWC pooled order (rules/basis.py), for the model image."""
    from edge_lls.rules.basis import lls_basis, nhwc_to_channel_major
    from edge_lls.rules.heads import pooled_shape

    backbone = Backbone(program, where or program.name)
    backbone.cut(train_last)                              # validates train_last
    trainable = backbone.trainable_blocks
    index0 = len(trainable) - train_last
    blocks = []
    for k, block in enumerate(trainable[index0:]):
        output = program.operators[block.ops[-1]].outputs[0]
        shape = program.tensors[output].shape
        pool = _pool_size(block.kind, index0 + k, shape)
        pooled = pooled_shape(tuple(shape[1:]) if block.kind != "dense" else (int(shape[-1]),), pool)
        basis = lls_basis(backbone.num_classes, int(np.prod(pooled)), waveform)
        blocks.append(TailBlock(block.kind, tuple(block.ops), output, pool,
                                np.ascontiguousarray(basis[:, nhwc_to_channel_major(pooled)])))
    return Tail(tuple(blocks), backbone.num_classes, waveform, float(temperature), backbone.head.classifier)


# ====================================================================================
# The trainable tail
# ====================================================================================

def _dequantized(tensor, axis: int | None) -> np.ndarray:
    """float32 reals of an int8 weight tensor (per-channel scales along axis)."""
    scales = np.asarray(tensor.scales, np.float64)
    codes = tensor.data.astype(np.float64)
    if scales.size > 1:
        shape = [1] * codes.ndim
        shape[axis] = -1
        scales = scales.reshape(shape)
    return (codes * scales).astype(np.float32)


def _dequantized_bias(program: Program, op) -> np.ndarray:
    weights, x = program.tensors[op.inputs[1]], program.tensors[op.inputs[0]]
    out_c = program.tensors[op.outputs[0]].shape[-1]
    if len(op.inputs) < 3 or op.inputs[2] < 0:
        return np.zeros(out_c, np.float32)
    bias = program.tensors[op.inputs[2]].data.astype(np.float64).reshape(-1)
    w_scales = np.broadcast_to(np.asarray(weights.scales, np.float64), (out_c,))
    return (bias * float(np.float32(x.scale)) * w_scales).astype(np.float32)


def _pool_size(kind: str, index: int, out_shape: tuple) -> int:
    """LLS pool size per block, following the reference MobileNetV1 table: 8 for a stem at
    48x48 and more, 4 down to 24x24, 2 down to 6x6, then 1; dense blocks: their width."""
    if kind == "dense":
        return int(out_shape[-1])
    size = out_shape[1]
    if index == 0 and size >= 48:
        return 8
    return 4 if size >= 24 else 2 if size >= 6 else 1


class FineTuner:
    """The frozen int8 prefix and the trainable float tail of a backbone."""

    def __init__(self, backbone: Backbone, train_last: int, num_classes: int | None = None, *, seed: int = 0,
                 feature_batch: int = 64):
        self.backbone, self.train_last, self.seed = backbone, train_last, seed
        self.num_classes = backbone.num_classes if num_classes is None else int(num_classes)
        if self.num_classes < 2:
            raise ConfigError(f"fine-tuning needs at least 2 classes, got {self.num_classes}")
        self.cut_op = backbone.cut(train_last)
        program = backbone.program
        self.cut_tensor = program.tensors[program.operators[self.cut_op].inputs[0]]
        self.prefix = Int8Model(subprogram(program, 0, self.cut_op), batch_size=feature_batch) \
            if self.cut_op > 0 else None
        shape = tuple(self.cut_tensor.shape[1:])
        self.feature_shape = (1,) * (3 - len(shape)) + shape
        self.tail_blocks = backbone.trainable_blocks[len(backbone.trainable_blocks) - train_last:] if train_last else []
        self.model = self._build_tail()
        self.trainer = None

    # ------------------------------------------------------------------ tail model
    def _spec(self) -> dict:
        program, ops = self.backbone.program, self.backbone.program.operators
        blocks, index0 = [], len(self.backbone.trainable_blocks) - self.train_last
        for k, block in enumerate(self.tail_blocks):
            first, last = ops[block.ops[0]], ops[block.ops[-1]]
            out_shape = program.tensors[last.outputs[0]].shape
            act = {}
            for i in block.ops:
                name = ops[i].options.get("activation", "NONE")
                if name not in ACTIVATIONS:
                    raise ConfigError(f"{self.backbone.where}: op {i} ({ops[i].opcode}): fused activation {name} "
                                      f"cannot be trained")
                act[i] = ACTIVATIONS[name]
            if len(set(act.values())) != 1:
                raise ConfigError(f"{self.backbone.where}: ops {block.ops} use different activations")
            spec = {"act": act[block.ops[0]], "bias": True, "post": [],
                    "pool_size": _pool_size(block.kind, index0 + k, out_shape)}
            if block.kind == "dense":
                spec.update(type="dense", units=int(out_shape[-1]))
            else:
                o = first.options
                if (o["stride_h"] != o["stride_w"] or o.get("dilation_h", 1) != 1 or o.get("dilation_w", 1) != 1):
                    raise ConfigError(f"{self.backbone.where}: op {first.index} ({first.opcode}): unequal strides "
                                      f"or dilation cannot be trained")
                if first.opcode == "DEPTHWISE_CONV_2D" and program.tensors[first.inputs[1]].shape[3] != \
                        program.tensors[first.inputs[0]].shape[3]:
                    raise ConfigError(f"{self.backbone.where}: op {first.index}: depth multiplier > 1 cannot be trained")
                kernel = program.tensors[first.inputs[1]].shape[1:3]
                spec.update(type=block.kind, filters=int(out_shape[-1]), kernel=list(kernel), stride=o["stride_h"],
                            padding=o["padding"].lower())
            blocks.append(spec)
        if blocks and self.backbone.head.pool is not None:
            blocks[-1]["post"] = [{"type": "adaptive_avgpool", "size": [1, 1]}]
        return {"name": f"finetune-{self.train_last}", "input_shape": list(self.feature_shape),
                "num_classes": self.num_classes, "blocks": blocks, "classifier": {"bias": True}}

    def _build_tail(self):
        from edge_lls.nn.model import Model
        model = Model(self._spec(), seed=self.seed)
        program, ops = self.backbone.program, self.backbone.program.operators
        for block, source in zip(model.blocks, self.tail_blocks):
            for unit, i in zip(block.units, source.ops):
                op = ops[i]
                weights = program.tensors[op.inputs[1]]
                if op.opcode == "DEPTHWISE_CONV_2D":
                    unit.op.w.value[...] = _dequantized(weights, 3).transpose(3, 1, 2, 0)
                elif op.opcode == "CONV_2D":
                    unit.op.w.value[...] = _dequantized(weights, 0)
                else:
                    unit.op.w.value[...] = _dequantized(weights, 0)
                unit.op.b.value[...] = _dequantized_bias(program, op)
        head = ops[self.backbone.head.classifier]
        if self.num_classes == self.backbone.num_classes:
            weights = program.tensors[head.inputs[1]]
            w = _dequantized(weights, 0).reshape(self.num_classes, -1)
            if w.shape == model.classifier.w.value.shape:
                model.classifier.w.value[...] = w
                if model.classifier.b is not None:
                    model.classifier.b.value[...] = _dequantized_bias(program, head)
        return model

    # ------------------------------------------------------------------ features
    def features(self, x01: np.ndarray) -> np.ndarray:
        """int8 features (N, *feature_shape) of images with pixels in [0, 1]."""
        x = quantize_pixels(x01, self.backbone.input)
        if x.shape[1:] != tuple(self.backbone.input.shape[1:]):
            raise ConfigError(f"images of shape {x.shape[1:]} do not fit {self.backbone.where}'s input "
                              f"{tuple(self.backbone.input.shape[1:])}")
        out = self.prefix.run(x) if self.prefix is not None else x
        return out.reshape(len(x), *self.feature_shape)

    def dequantize(self, features: np.ndarray) -> np.ndarray:
        t = self.cut_tensor
        return (np.float32(t.scale) * (features.astype(np.float32) - np.float32(t.zero_point))).astype(np.float32)

    # ------------------------------------------------------------------ training
    def init_batchnorm(self, sample: np.ndarray, mode: str = "identity") -> None:
        """Running statistics of every unit's batch norm from the sample's pre-norm outputs.
        mode "identity": gamma = sqrt(var + eps), beta = mean, so the unit computes what the
        imported one did; "standard": gamma 1, beta 0 (a freshly normalised unit)."""
        if mode not in BN_INITS:
            raise ConfigError(f"batch-norm init must be one of {', '.join(BN_INITS)}, got {mode!r}")
        h = self.dequantize(sample)
        for block in self.model.blocks:
            x = h
            for unit in block.units:
                z = np.empty(unit.op.out_shape(x.shape), np.float32)
                scratch = np.empty(max(unit.op.scratch_floats(x.shape), 1), np.float32)
                unit.op.forward(x, z, scratch)
                flat = z.reshape(-1, z.shape[-1]).astype(np.float64)
                mean, var = flat.mean(axis=0), flat.var(axis=0)
                bn = unit.bn
                bn.gamma.value[...] = np.sqrt(var + bn.eps) if mode == "identity" else 1.0
                bn.beta.value[...] = mean if mode == "identity" else 0.0
                bn.running_mean[...] = mean
                bn.running_var[...] = var
                x = np.empty_like(z)
                bn.forward(z, x, training=False)
            for post in block.post:
                out = np.empty(post.out_shape(x.shape), np.float32)
                post.forward(x, out, None)
                x = out
            h = x

    def start(self, sample: np.ndarray, *, rule: str = "lls", optimizer: str = "adamw-sf", lr: float = 5e-3,
              weight_decay: float = 0.0, bn_init: str = "identity", block_lr_scale: float = 1.0,
              last_block: str = "classifier", **rule_options) -> None:
        """Initialise batch norm on an int8 feature sample and create the trainer.

        last_block: the last trained block's learning signal under a local rule (LLS):
        "classifier", the default, is the classifier's cross-entropy gradient at the block's
        pooled output (rules/local.py); "lls" its own LLS head, as the rule is published.
        Measured (docs/int8.md, "Which blocks to train"): with its LLS head, training the last
        block pulls its output away from what the pretrained classifier reads and loses
        accuracy; with the classifier's signal it gains. BP ignores it (its last block learns
        from the classifier anyway).

        block_lr_scale: the trained blocks' learning rate is ``lr * block_lr_scale``, the
        classifier's stays ``lr`` (the board has the same two rates).  1.0, the default, is one
        rate for all.  A smaller scale keeps imported blocks closer to the features the imported
        classifier reads.  Measured on the BP-adapted MNIST proxies of docs/int8.md ("Which
        blocks to train", tools/bench_finetune_plans.py, 3 seeds): 0.1 turns the last block's
        loss against the classifier alone from -1.0 / -6.3 pt (500 images) into +0.0 / -0.5, and
        from -1.5 / -0.8 (2,000 images) into -0.6 / -0.5 -- a tie at best, never a gain, and it
        costs two blocks 1.5 pt on the 10-class proxy at 2,000 images -- so it is not the
        default."""
        from edge_lls.trainer import Trainer
        if len(sample) < 2:
            raise ConfigError("fine-tuning needs at least 2 calibration images")
        if isinstance(block_lr_scale, bool) or not isinstance(block_lr_scale, (int, float)) \
                or not 0 < block_lr_scale < float("inf"):
            raise ConfigError(f"block learning-rate scale must be a number > 0, got {block_lr_scale!r}")
        from edge_lls.rules import LOCAL_RULES
        if last_block not in ("lls", "classifier"):
            raise ConfigError(f"unknown last-block signal {last_block!r}; choose lls or classifier")
        self.init_batchnorm(sample, bn_init)
        if rule in LOCAL_RULES:
            rule_options = {**rule_options, "last_block": last_block}
        self.trainer = Trainer(self.model, rule=rule, optimizer=optimizer, lr=lr, weight_decay=weight_decay,
                               seed=self.seed, **rule_options)
        for block_optimizer in self.trainer.optimizers[:-1]:    # one per block; the last is the classifier's
            block_optimizer.lr = float(lr) * float(block_lr_scale)

    def step(self, features: np.ndarray, labels: np.ndarray):
        return self.trainer.step(self.dequantize(features), labels)

    # ------------------------------------------------------------------ export
    def export(self, calibration: np.ndarray, batch_size: int = 64, metadata: dict | None = None) -> Program:
        """The fine-tuned int8 model (prefix + re-quantized tail), from the model's CURRENT
        weights: call it inside trainer.averaged_weights(...) for schedule-free training."""
        head = self.backbone.head
        fp = float_program(self.model, softmax=head.softmax is not None, name="tail")
        batches = (self.dequantize(calibration[i:i + batch_size]) for i in range(0, len(calibration), batch_size))
        tail = quantize_program(fp, batches, input_quant=(self.cut_tensor.scale, self.cut_tensor.zero_point))
        if self.feature_shape != tuple(self.cut_tensor.shape[1:]):   # a (1, C) cut: the tail reads it as (1,1,1,C)
            tail.tensors[tail.inputs[0]].shape = tuple(self.cut_tensor.shape)
        name = self.backbone.program.name
        return splice(self.backbone.program, self.cut_op, tail, name=name,
                      description=f"edge-lls fine-tuned: last {self.train_last} blocks + classifier of {name}",
                      metadata=self.backbone.program.metadata | (metadata or {}))

    def tail_model(self, program: Program) -> Int8Model:
        """The int8 tail of an exported program (input: int8 features)."""
        return Int8Model(subprogram(program, self.cut_op))


# ====================================================================================
# The whole run on a dataset
# ====================================================================================

class FeatureSet:
    """int8 features of a split: computed once and kept in memory (cached=True), or
    recomputed batch by batch from the images (large sets, augmentation).  Both give the same
    batches: the order of epoch e is the permutation Split.batch_order draws for (seed, e)."""

    def __init__(self, tuner: FineTuner, split, cached: bool, chunk: int = 64):
        self.tuner, self.split, self.cached, self.chunk = tuner, split, cached, chunk
        if cached:
            self.x = np.empty((len(split), *tuner.feature_shape), np.int8)
            self.y = np.empty(len(split), np.int64)
            start = 0
            for x, y in split.batches(chunk):
                self.x[start:start + len(x)] = tuner.features(x)
                self.y[start:start + len(x)] = y
                start += len(x)

    def __len__(self) -> int:
        return len(self.split)

    def batches(self, batch: int, *, shuffle: bool = False, seed: int = 0, epoch: int = 0, minimum: int = 1):
        """(int8 features, labels) batches; batches smaller than ``minimum`` are skipped."""
        if not self.cached:
            for x, y in self.split.batches(batch, shuffle=shuffle, seed=seed, epoch=epoch):
                if len(x) >= minimum:
                    yield self.tuner.features(x), y
            return
        order = self.split.batch_order(shuffle=shuffle, seed=seed, epoch=epoch)
        for start in range(0, len(order), batch):
            index = order[start:start + batch]
            if len(index) >= minimum:
                yield self.x[index], self.y[index]

    def sample(self, count: int, seed: int) -> np.ndarray:
        """Features of ``count`` images drawn without replacement (seeded), unaugmented."""
        chosen = np.sort(np.random.default_rng(seed).permutation(len(self.split))[:count])
        if self.cached:
            return self.x[chosen]
        parts = [self.tuner.features(self.split.subset(chosen[i:i + self.chunk]).arrays()[0])
                 for i in range(0, len(chosen), self.chunk)]
        return np.concatenate(parts)


def finetune(backbone_path, dataset, *, train_last: int = 2, epochs: int = 1, batch_size: int = 128,
             lr: float = 5e-3, optimizer: str = "adamw-sf", weight_decay: float = 0.0, rule: str = "lls",
             seed: int = 0, calibration_images: int = 512, cache_bytes: int = DEFAULT_CACHE_BYTES,
             bn_init: str = "identity", log=None, block_lr_scale: float = 1.0, last_block: str = "classifier",
             **rule_options) -> tuple[Program, dict]:
    """Fine-tune the last ``train_last`` blocks and the classifier of an int8 .tflite
    backbone on ``dataset`` (an edge_lls Dataset with pixels in [0, 1] at the backbone's
    input size); the blocks train at ``lr * block_lr_scale``, the classifier at ``lr``
    (FineTuner.start); the last block learns from the classifier's signal unless
    ``last_block="lls"`` (FineTuner.start).  The frozen prefix's int8 features are computed once and kept when they
    take at most ``cache_bytes`` (and the training split is not augmented), else recomputed
    every epoch.  Returns (int8 program, result record)."""
    started = time.perf_counter()
    log = log or (lambda line: None)
    backbone = load_backbone(backbone_path) if not isinstance(backbone_path, Backbone) else backbone_path
    expected = tuple(backbone.input.shape[1:])
    if tuple(dataset.input_shape) != expected:
        raise ConfigError(f"{dataset.name}: images are {dataset.input_shape}, {backbone.where} takes {expected}")
    for name, value, minimum in (("epochs", epochs, 1), ("batch-size", batch_size, 2),
                                 ("calibration-images", calibration_images, 2)):
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"--{name} must be an integer >= {minimum}, got {value!r}")
    tuner = FineTuner(backbone, train_last, dataset.num_classes, seed=seed)
    if len(dataset.train) < 2:
        raise ConfigError(f"{dataset.name}: {len(dataset.train)} training images; fine-tuning needs at least 2")
    feature_bytes = int(np.prod(tuner.feature_shape)) * (len(dataset.train) + len(dataset.test))
    cached = feature_bytes <= cache_bytes and dataset.train.augmenter is None
    log(f"backbone {backbone.where}: {len(backbone.trainable_blocks)} blocks, training the last {train_last} "
        f"+ classifier on int8 features {'x'.join(map(str, tuner.feature_shape))} "
        f"({'cached' if cached else 'recomputed every epoch'}, {feature_bytes >> 20} MiB)")
    t0 = time.perf_counter()
    train, test = FeatureSet(tuner, dataset.train, cached), FeatureSet(tuner, dataset.test, cached)
    calibration = train.sample(calibration_images, seed)
    feature_seconds = time.perf_counter() - t0
    tuner.start(calibration, rule=rule, optimizer=optimizer, lr=lr, weight_decay=weight_decay, bn_init=bn_init,
                block_lr_scale=block_lr_scale, last_block=last_block, **rule_options)

    def int8_accuracy(program: Program) -> float:
        tail = tuner.tail_model(program)
        hits = sum(int((tail.run(x).reshape(len(x), -1).argmax(1) == y).sum()) for x, y in test.batches(256))
        return hits / len(test)

    baseline = int8_accuracy(backbone.program) if tuner.num_classes == backbone.num_classes else None
    batch = min(batch_size, len(train))
    history = []
    for epoch in range(epochs):
        loss_sum, correct, seen = 0.0, 0, 0
        for x, y in train.batches(batch, shuffle=True, seed=seed, epoch=epoch, minimum=2):
            stats = tuner.step(x, y)
            loss_sum += stats.loss * len(y)
            correct += stats.correct
            seen += len(y)
        history.append({"epoch": epoch + 1, "loss": loss_sum / max(seen, 1), "train_accuracy": correct / max(seen, 1)})
        log(f"epoch {epoch + 1}/{epochs}: loss {history[-1]['loss']:.4f}, train accuracy "
            f"{history[-1]['train_accuracy']:.4f}")

    refresh = ((tuner.dequantize(x), y) for x, y in train.batches(batch, shuffle=True, seed=seed, epoch=epochs,
                                                                   minimum=2))
    with tuner.trainer.averaged_weights(refresh):
        fp32_correct = sum(int((tuner.model.predict(tuner.dequantize(x)) == y).sum()) for x, y in test.batches(256))
        info = {"classes": list(dataset.class_names), "pixel_range": list(pixel_range(backbone.input)),
                "fine_tuned": {"backbone": Path(str(backbone.where)).name, "train_last": train_last, "rule": rule}}
        program = tuner.export(calibration, metadata={METADATA_KEY: json.dumps(info).encode()})
    result = {
        "backbone": str(backbone.where), "train_last": train_last,
        "trainable_ops": [list(b.ops) for b in tuner.tail_blocks], "frozen_ops": tuner.cut_op,
        "feature_shape": list(tuner.feature_shape), "features_cached": cached, "num_classes": tuner.num_classes,
        "classes": list(dataset.class_names), "dataset": dataset.name,
        "train_images": len(train), "test_images": len(test),
        "rule": rule, "last_block": tuner.trainer.rule.config().get("last_block", "classifier"),
        "optimizer": optimizer, "lr": lr, "block_lr": lr * block_lr_scale, "epochs": epochs,
        "batch_size": batch, "bn_init": bn_init,
        "calibration_images": len(calibration), "history": history,
        "baseline_int8_accuracy": baseline,
        "fp32_accuracy": fp32_correct / len(test),
        "int8_accuracy": int8_accuracy(program),
        "feature_seconds": round(feature_seconds, 3), "seconds": round(time.perf_counter() - started, 3),
        "pixel_range": list(pixel_range(backbone.input)),
    }
    return program, result


__all__ = ["Backbone", "BackboneBlock", "FineTuner", "FeatureSet", "load_backbone", "finetune", "pixel_range",
           "quantize_pixels"]

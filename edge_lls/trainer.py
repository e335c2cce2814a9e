"""The Python API in one object: a model, a rule, one optimizer per block.

    model = build_model("smallconv", num_classes=10)
    trainer = Trainer(model, rule="lls", optimizer="adamw-sf", lr=5e-3)
    stats = trainer.step(x, y)                 # x (N,H,W,C) float32, y (N,) int
    acc = trainer.evaluate(x_test, y_test, refresh=train_batches)

precision="fp16" is mixed precision: every activation a step stores (and evaluation's)
is float16, the weights, their gradients and the optimizer state stay float32 (updates
smaller than a float16 weight's spacing would be lost), and all math is float32.
"""
from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from .errors import ConfigError
from .nn.model import Model
from .optim import make_optimizer
from .precision import TRAIN_PRECISIONS
from .rules import Rule, StepStats, make_rule

BN_REFRESH_BATCHES = 50  # the reference's batch-norm refresh before a schedule-free eval


class Trainer:
    def __init__(self, model: Model, rule: str | Rule = "lls", optimizer: str = "adamw-sf",
                 lr: float = 5e-3, weight_decay: float = 0.0, seed: int = 0, precision: str = "fp32",
                 **rule_options):
        if precision not in TRAIN_PRECISIONS:
            raise ConfigError(f"training precision {precision!r}; one of {', '.join(TRAIN_PRECISIONS)}")
        self.model = model
        model.set_activation_dtype(np.float16 if precision == "fp16" else np.float32)
        self.rule = make_rule(rule, **rule_options) if isinstance(rule, str) else rule
        self.rule.attach(model, np.random.default_rng([seed, 1]))
        groups = [b.params + self.rule.block_params(i) for i, b in enumerate(model.blocks)]
        groups.append(model.classifier.params)
        self.optimizers = [make_optimizer(optimizer, g, lr, weight_decay) for g in groups]
        self._arenas: dict[int, object] = {}

    @property
    def precision(self) -> str:
        """'fp16' when the model stores activations in float16 (read from the model)."""
        return "fp16" if self.model.activation_dtype == np.float16 else "fp32"

    # ------------------------------------------------------------------------ training
    def arena(self, batch: int):
        """The step's memory for this batch size, allocated on first use."""
        arena = self._arenas.get(batch)
        if arena is None:
            if len(self._arenas) >= 2:      # a full batch and a last partial one at most
                self._arenas.pop(next(iter(self._arenas)))
            arena = self.rule.arena(self.model, batch)
            self._arenas[batch] = arena
            largest = max(self._arenas.values(), key=lambda a: a.nbytes)
            self.model.lend_memory(largest.memory)
        return arena

    def step(self, x: np.ndarray, labels: np.ndarray) -> StepStats:
        """One training step on a batch: x (N,H,W,C) float32, labels (N,) int in [0, K)."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        labels = np.ascontiguousarray(labels, dtype=np.int64)
        if x.shape[1:] != self.model.input_shape or len(labels) != len(x):
            raise ConfigError(f"batch of shape {x.shape} / {labels.shape} does not fit the model's "
                              f"input {self.model.input_shape}")
        if len(x) < 2:
            raise ConfigError("a training batch needs at least 2 samples (batch norm statistics)")
        for opt in self.optimizers:
            opt.train()
        return self.rule.train_step(self.model, self.arena(len(x)), x, labels, self.optimizers)

    # ---------------------------------------------------------------------- evaluation
    @contextmanager
    def averaged_weights(self, refresh_batches=None):
        """Evaluate with schedule-free averaged weights, as the reference does: swap them
        in, run up to 50 training batches forward in training mode (no update) so the
        batch-norm running statistics match them, yield, swap back."""
        for opt in self.optimizers:
            opt.eval()
        try:
            if refresh_batches is not None and any(o.kind == "adamw-sf" for o in self.optimizers):
                for i, (x, _) in enumerate(refresh_batches):
                    if i >= BN_REFRESH_BATCHES:
                        break
                    self.model.forward(x, training=True)
            yield self.model
        finally:
            for opt in self.optimizers:
                opt.train()

    def evaluate(self, x, labels, batch_size: int = 256, refresh=None) -> float:
        """Top-1 accuracy. refresh: an iterable of training batches (x, y) for the
        batch-norm refresh of schedule-free evaluation."""
        with self.averaged_weights(refresh):
            predictions = self.model.predict(x, batch_size)
        return float((predictions == np.asarray(labels)).mean())

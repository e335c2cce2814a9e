"""What every learning rule shares: the classifier stage and the step's result."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .losses import softmax_cross_entropy


@dataclass
class StepStats:
    loss: float                                   # classifier cross-entropy
    correct: int                                  # classifier hits in the batch
    block_losses: list[float] = field(default_factory=list)   # local losses (local rules)


class Rule:
    """A learning rule. Its mode is the step's schedule (nn/arena.py): 'local', blocks
    learn one at a time from their own signal; 'backprop' and 'feedback' (DFA) run every
    block forward first and keep its activations until its backward."""
    name = "rule"
    mode = "local"
    schedule = None         # the arena's schedule (nn/arena.py) when it is not the mode's own

    def attach(self, model, rng: np.random.Generator) -> None:
        self.model = model

    def block_params(self, index: int) -> list:
        return []

    def head_buffers(self, model, batch: int):
        return None

    pooled_grad = None      # per block: gradient arrives pooled (local rules with 2-D heads)

    def arena(self, model, batch: int):
        """The memory of one training step of this rule at this batch size."""
        return model.arena(batch, self.schedule or self.mode, self.head_buffers(model, batch), self.pooled_grad)

    def plan(self, model, batch: int):
        """That memory's layout (arena.Layout), computed without allocating it."""
        from ..nn.arena import plan
        schedule = self.schedule or self.mode
        return plan(model.stages(batch, schedule, self.head_buffers(model, batch), self.pooled_grad), schedule)

    def config(self) -> dict:
        return {"rule": self.name}

    def train_step(self, model, arena, x, labels, optimizers) -> StepStats:
        raise NotImplementedError


def classifier_step(model, V, h, labels, optimizer, dh=None):
    """Cross-entropy on the classifier; dh (the last block's output grad) only for BP."""
    logits, dlogits = V["logits"], V["dlogits"]
    model.classifier.forward(h, logits, V.get("s"))
    loss, _ = softmax_cross_entropy(logits, labels, dlogits=dlogits)
    correct = int((logits.argmax(axis=1) == labels).sum())
    model.classifier.grad_weight(h, dlogits, V.get("s"))
    if dh is not None:
        model.classifier.grad_input(dlogits, dh)
    optimizer.step()
    return loss, correct, logits

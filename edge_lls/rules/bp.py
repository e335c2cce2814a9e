"""End-to-end backpropagation through the same kernels: the baseline every claim of
LLS is measured against. Every block's activations are kept for the backward pass."""
from __future__ import annotations

from .base import Rule, StepStats, classifier_step


class BP(Rule):
    name = "bp"
    mode = "backprop"

    def train_step(self, model, arena, x, labels, optimizers):
        inputs, h = [], x
        for block, V in zip(model.blocks, arena.views):
            inputs.append(h)
            _, h = block.forward(h, V, training=True, backprop=True)
        last = model.blocks[-1]
        dh = arena.views[len(model.blocks) - 1][last.output_grad_name()]
        loss, correct, _ = classifier_step(model, arena.views[-1], h, labels, optimizers[-1], dh=dh)
        for i in range(len(model.blocks) - 1, -1, -1):
            block, V = model.blocks[i], arena.views[i]
            block.post_backward(V)
            dx = None
            if i > 0:
                prev = model.blocks[i - 1]
                dx = arena.views[i - 1][prev.output_grad_name()]
            block.backward(inputs[i], V, dx)
            optimizers[i].step()
        return StepStats(loss, correct)

"""Direct feedback alignment (baseline): the classifier's output error e = softmax(y) -
onehot reaches every block output through a fixed random matrix, dL/da_l = e B_l.

As in the reference: B_l = 1e-4 * U(0, 1) of shape (K, C, H, W) (we permute it once to
NHWC), e is not divided by the batch size, and the classifier learns by cross-entropy.
All blocks run forward before any learns, so activations of every block are kept.
"""
from __future__ import annotations

import numpy as np

from .base import Rule, StepStats, classifier_step
from .basis import nhwc_to_channel_major


class DFA(Rule):
    name = "dfa"
    mode = "feedback"

    def attach(self, model, rng):
        self.model = model
        shapes, _ = model.stage_shapes(1)
        self.feedback = []
        for _, a_shape, _ in shapes:
            per_sample = a_shape[1:]
            b_cm = (1e-4 * rng.random((model.num_classes, int(np.prod(per_sample))))).astype(np.float32)
            perm = nhwc_to_channel_major(per_sample) if len(per_sample) == 3 else np.arange(per_sample[0])
            self.feedback.append(np.ascontiguousarray(b_cm[:, perm]))    # (K, D) NHWC order

    def train_step(self, model, arena, x, labels, optimizers):
        inputs, h = [], x
        for block, V in zip(model.blocks, arena.views):
            inputs.append(h)
            _, h = block.forward(h, V, training=True)
        loss, correct, logits = classifier_step(model, arena.views[-1], h, labels, optimizers[-1])
        # The classifier stepped already; e uses the logits of this forward pass.
        z = logits.astype(np.float64)
        p = np.exp(z - z.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        p[np.arange(len(labels)), labels] -= 1.0
        err = p.astype(np.float32)                                          # (N, K)
        for i, (block, V) in enumerate(zip(model.blocks, arena.views)):
            da = V[f"g{len(block.units) - 1}"]
            np.matmul(err, self.feedback[i], out=da.reshape(len(err), -1))
            block.backward(inputs[i], V)
            optimizers[i].step()
        return StepStats(loss, correct)

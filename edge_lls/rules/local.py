"""Local rules: LLS (square / sine), LLS-M, LLS-MxM, reduced LLS-MxM, LLS-Random, LocalLosses.

A step is a single pass over the blocks. Block l runs forward, its head turns its output
into dL/da, the block's weight gradients follow, its optimizer steps, and its (detached)
output moves on. Block l's intermediates are dead after that: the arena reuses them for
block l+1, which is why training memory is that of the largest block.
"""
from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import Rule, StepStats, classifier_step
from .heads import ProjectionHead


class LocalRule(Rule):
    mode = "local"
    basis_kind = "lls"
    modulation_kind = None

    def __init__(self, *, waveform="square", temperature=0.5, label_smoothing=0.0, reduced_rows=None,
                 last_block="lls"):
        """last_block: the last block's learning signal. 'lls' (the rule as published): its own
        head, like every block. 'classifier': the classifier's cross-entropy, whose gradient
        with respect to the classifier's input -- the last block's globally pooled output -- is
        the one vector the block's head would otherwise have produced. Still local: the error
        passes through one linear layer into one block and stops there. For fine-tuning a
        pretrained model, where the LLS head pulls the last block's output towards fixed basis
        directions the imported classifier does not read (docs/int8.md, "Which blocks to train")."""
        if waveform not in ("square", "cosine", "sine"):
            raise ConfigError(f"unknown waveform {waveform!r}; choose square or cosine")
        if last_block not in ("lls", "classifier"):
            raise ConfigError(f"unknown last-block signal {last_block!r}; choose lls or classifier")
        self.last_block = last_block
        # The last block's buffers must outlive the classifier's stage, which runs before
        # that block's update (the arena would otherwise lay the logits over them).
        self.schedule = "local-last-late" if last_block == "classifier" else None
        self.waveform, self.temperature = waveform, float(temperature)
        self.label_smoothing, self.reduced_rows = float(label_smoothing), reduced_rows
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.heads: list[ProjectionHead] = []

    def config(self):
        return {"rule": self.name, "waveform": self.waveform, "temperature": self.temperature,
                "label_smoothing": self.label_smoothing, "reduced_rows": self.reduced_rows,
                "last_block": self.last_block}

    def attach(self, model, rng):
        self.model = model
        shapes, _ = model.stage_shapes(1)
        self.heads = [
            ProjectionHead(block.name, a_shape[1:], block.pool_size, model.num_classes,
                           basis_kind=self.basis_kind, waveform=self.waveform,
                           modulation_kind=self.modulation_kind, reduced_rows=self.reduced_rows,
                           hidden_dim=block.spec.get("hidden_dim"), temperature=self.temperature,
                           label_smoothing=self.label_smoothing, rng=rng)
            for block, (_, a_shape, _) in zip(model.blocks, shapes)]

        # Conv blocks take their signal pooled: their full-size dL/da is never stored, and
        # where a pooling op follows, neither is their output a (Block.defers_output).
        self.pooled_grad = [head.pools_2d and block.accepts_pooled_grad()
                            for head, block in zip(self.heads, model.blocks)]
        self.deferred = [pg and block.defers_output() for pg, block in zip(self.pooled_grad, model.blocks)]
        if self.last_block == "classifier" and self.heads:
            head, (_, a_shape, h_shape) = self.heads[-1], shapes[-1]
            globally_pooled = head.pshape[:-1] == (1, 1) if head.pools_2d else head._identity_pool
            if not (globally_pooled and int(np.prod(h_shape[1:])) == head.dim):
                raise ConfigError(f"last-block signal 'classifier' needs the classifier to read the last block's "
                                  f"globally pooled output; block {model.blocks[-1].name} gives {tuple(a_shape[1:])} "
                                  f"-> {tuple(h_shape[1:])}, its head pools to {head.pshape}")

    def block_params(self, index):
        return self.heads[index].params

    def head_buffers(self, model, batch):
        return [head.buffers(batch, model.activation_dtype) for head in self.heads]

    def train_step(self, model, arena, x, labels, optimizers):
        losses, h = [], x
        last = len(model.blocks) - 1 if self.last_block == "classifier" else None
        for i, block in enumerate(model.blocks):
            V = arena.views[i]
            a, h_next = block.forward(h, V, training=True, defer=self.deferred[i])
            if i == last:
                return self._last_from_classifier(model, arena, h, h_next, labels, optimizers, losses)
            if self.pooled_grad[i]:
                loss, dv_area = self.heads[i].pooled_gradient(a, labels, V)
                block.backward_pooled(h, V, dv_area)
            else:
                loss = self.heads[i](a, labels, V, V[f"g{len(block.units) - 1}"])
                block.backward(h, V)
            losses.append(loss)
            optimizers[i].step()
            h = h_next
        loss, correct, _ = classifier_step(model, arena.views[-1], h, labels, optimizers[-1])
        return StepStats(loss, correct, losses)

    def _last_from_classifier(self, model, arena, x, h, labels, optimizers, losses):
        """The last block (input x, pooled output h, forward done) learns from the classifier:
        dL/dh, computed from the classifier's weights before its step, goes into the buffer the
        head's dL/dv uses (the same (N, D) vector, so the arena is unchanged)."""
        i, block, head = len(model.blocks) - 1, model.blocks[-1], self.heads[-1]
        V = arena.views[i]
        dv = V["hdz"]                                                    # (N, D) float32
        loss, correct, _ = classifier_step(model, arena.views[-1], h, labels, optimizers[-1],
                                           dh=dv.reshape(h.shape))
        if self.pooled_grad[i]:
            block.backward_pooled(x, V, head.area_weighted(dv))
        else:
            head.spread(dv, V[f"g{len(block.units) - 1}"])
            block.backward(x, V)
        optimizers[i].step()
        losses.append(loss)
        return StepStats(loss, correct, losses)


class LLS(LocalRule):
    name = "lls"


class LLSM(LocalRule):
    name = "lls-m"
    modulation_kind = "m"


class LLSMxM(LocalRule):
    """LLS-MxM; with reduced_rows=R < K, reduced LLS-MxM (R-row basis, R x K matrix)."""
    name = "lls-mxm"
    modulation_kind = "mxm"


class LLSRandom(LocalRule):
    name = "lls-random"
    basis_kind = "random"


class LocalLosses(LocalRule):
    name = "local-losses"
    basis_kind = "learned"

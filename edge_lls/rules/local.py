"""Local rules: LLS (square / sine), LLS-M, LLS-MxM, reduced LLS-MxM, LLS-Random, LocalLosses.

A step is a single pass over the blocks. Block l runs forward, its head turns its output
into dL/da, the block's weight gradients follow, its optimizer steps, and its (detached)
output moves on. Block l's intermediates are dead after that: the arena reuses them for
block l+1, which is why training memory is that of the largest block.
"""
from __future__ import annotations

from ..errors import ConfigError
from .base import Rule, StepStats, classifier_step
from .heads import ProjectionHead


class LocalRule(Rule):
    mode = "local"
    basis_kind = "lls"
    modulation_kind = None

    def __init__(self, *, waveform="square", temperature=0.5, label_smoothing=0.0, reduced_rows=None):
        if waveform not in ("square", "cosine", "sine"):
            raise ConfigError(f"unknown waveform {waveform!r}; choose square or cosine")
        self.waveform, self.temperature = waveform, float(temperature)
        self.label_smoothing, self.reduced_rows = float(label_smoothing), reduced_rows
        if self.temperature <= 0:
            raise ConfigError(f"temperature must be > 0, got {temperature}")
        self.heads: list[ProjectionHead] = []

    def config(self):
        return {"rule": self.name, "waveform": self.waveform, "temperature": self.temperature,
                "label_smoothing": self.label_smoothing, "reduced_rows": self.reduced_rows}

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

    def block_params(self, index):
        return self.heads[index].params

    def head_buffers(self, model, batch):
        return [head.buffers(batch, model.activation_dtype) for head in self.heads]

    def train_step(self, model, arena, x, labels, optimizers):
        losses, h = [], x
        for i, block in enumerate(model.blocks):
            V = arena.views[i]
            a, h_next = block.forward(h, V, training=True, defer=self.deferred[i])
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

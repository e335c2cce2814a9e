"""Optimizers, one per block (as the LLS reference does): SGD, AdamW, schedule-free AdamW.

Updates are fused Numba loops over each parameter's flat memory, in place: a step
allocates nothing. Semantics follow torch.optim.SGD / torch.optim.AdamW and the
reference's AdamWScheduleFree (Defazio et al. 2024). State is plain arrays and scalars,
so checkpoints need no pickle.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .errors import ConfigError


@njit(parallel=True, cache=True)
def _sgd(p, g, buf, lr, momentum, dampening, wd, nesterov, first):
    for i in prange(p.size):
        d = g[i] + wd * p[i]
        if momentum != 0.0:
            b = d if first else momentum * buf[i] + (1.0 - dampening) * d
            buf[i] = b
            d = d + momentum * b if nesterov else b
        p[i] -= lr * d


@njit(parallel=True, cache=True)
def _adamw(p, g, m, v, lr, b1, b2, eps, wd, bc1, bc2_sqrt):
    step = lr / bc1
    for i in prange(p.size):
        p[i] *= 1.0 - lr * wd
        m[i] = b1 * m[i] + (1.0 - b1) * g[i]
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i]
        p[i] -= step * m[i] / (math.sqrt(v[i]) / bc2_sqrt + eps)


@njit(parallel=True, cache=True)
def _adamw_sf(y, g, z, v, lr, b1, b2, eps, wd, ckp1):
    # y: the parameter as stored during training (the gradient point); z: the base
    # iterate; the averaged x is implicit: y = (1 - b1) z + b1 x.
    for i in prange(y.size):
        v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i]
        d = g[i] / (math.sqrt(v[i]) + eps) + wd * y[i]
        y[i] += ckp1 * (z[i] - y[i])
        y[i] += lr * (b1 * (1.0 - ckp1) - 1.0) * d
        z[i] -= lr * d


@njit(parallel=True, cache=True)
def _lerp(p, end, weight):
    for i in prange(p.size):
        p[i] += weight * (end[i] - p[i])


class Optimizer:
    kind = "base"

    def __init__(self, params, lr: float, weight_decay: float = 0.0):
        self.params = list(params)
        self.lr, self.weight_decay = float(lr), float(weight_decay)
        self.steps = 0

    def zero_grad(self):
        for p in self.params:
            p.grad[...] = 0.0

    def state_arrays(self) -> dict[str, np.ndarray]:
        return {}

    def state_scalars(self) -> dict:
        return {"steps": self.steps}

    def load_state(self, arrays: dict, scalars: dict):
        for name, arr in self.state_arrays().items():
            arr[...] = arrays[name]
        self.steps = int(scalars["steps"])

    # Schedule-free optimizers swap in their averaged weights for evaluation.
    def eval(self):
        pass

    def train(self):
        pass

    @staticmethod
    def _flat(a):
        return a.reshape(-1)


class SGD(Optimizer):
    kind = "sgd"

    def __init__(self, params, lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        super().__init__(params, lr, weight_decay)
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ConfigError("Nesterov momentum requires momentum > 0 and dampening 0")
        self.momentum, self.dampening, self.nesterov = momentum, dampening, nesterov
        self.buffers = [np.zeros_like(p.value) for p in self.params] if momentum else []

    def step(self):
        for i, p in enumerate(self.params):
            buf = self.buffers[i] if self.momentum else p.grad
            _sgd(self._flat(p.value), self._flat(p.grad), self._flat(buf), self.lr, self.momentum,
                 self.dampening, self.weight_decay, self.nesterov, self.steps == 0)
        self.steps += 1

    def state_arrays(self):
        return {f"{p.name}.momentum": b for p, b in zip(self.params, self.buffers)}


class AdamW(Optimizer):
    kind = "adamw"

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, weight_decay)
        self.betas, self.eps = betas, eps
        self.m = [np.zeros_like(p.value) for p in self.params]
        self.v = [np.zeros_like(p.value) for p in self.params]

    def step(self):
        self.steps += 1
        b1, b2 = self.betas
        bc1, bc2_sqrt = 1.0 - b1 ** self.steps, math.sqrt(1.0 - b2 ** self.steps)
        for p, m, v in zip(self.params, self.m, self.v):
            _adamw(self._flat(p.value), self._flat(p.grad), self._flat(m), self._flat(v),
                   self.lr, b1, b2, self.eps, self.weight_decay, bc1, bc2_sqrt)

    def state_arrays(self):
        out = {f"{p.name}.m": m for p, m in zip(self.params, self.m)}
        out.update({f"{p.name}.v": v for p, v in zip(self.params, self.v)})
        return out


class AdamWScheduleFree(Optimizer):
    """Schedule-free AdamW (no warmup, r = 0, weight_lr_power = 2), as in the reference.

    Training stores y in the parameters; eval() switches them to the averaged x,
    train() back to y. Evaluate only between eval() and train().
    """
    kind = "adamw-sf"

    def __init__(self, params, lr=0.0025, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 weight_lr_power=2.0):
        super().__init__(params, lr, weight_decay)
        self.betas, self.eps, self.weight_lr_power = betas, eps, weight_lr_power
        self.z = [p.value.copy() for p in self.params]
        self.v = [np.zeros_like(p.value) for p in self.params]
        self.weight_sum = 0.0
        self.lr_max = -1.0
        self.train_mode = True

    def step(self):
        if not self.train_mode:
            raise RuntimeError("schedule-free optimizer stepped in eval mode")
        b1, b2 = self.betas
        k = self.steps
        lr = self.lr * math.sqrt(1.0 - b2 ** (k + 1))
        self.lr_max = max(lr, self.lr_max)
        weight = self.lr_max ** self.weight_lr_power
        self.weight_sum += weight
        ckp1 = weight / self.weight_sum
        for p, z, v in zip(self.params, self.z, self.v):
            _adamw_sf(self._flat(p.value), self._flat(p.grad), self._flat(z), self._flat(v),
                      lr, b1, b2, self.eps, self.weight_decay, ckp1)
        self.steps = k + 1

    def eval(self):
        if self.train_mode:
            for p, z in zip(self.params, self.z):
                _lerp(self._flat(p.value), self._flat(z), 1.0 - 1.0 / self.betas[0])
            self.train_mode = False

    def train(self):
        if not self.train_mode:
            for p, z in zip(self.params, self.z):
                _lerp(self._flat(p.value), self._flat(z), 1.0 - self.betas[0])
            self.train_mode = True

    def state_arrays(self):
        out = {f"{p.name}.z": z for p, z in zip(self.params, self.z)}
        out.update({f"{p.name}.v": v for p, v in zip(self.params, self.v)})
        return out

    def state_scalars(self):
        return {"steps": self.steps, "weight_sum": self.weight_sum, "lr_max": self.lr_max,
                "train_mode": self.train_mode}

    def load_state(self, arrays, scalars):
        super().load_state(arrays, scalars)
        self.weight_sum, self.lr_max = float(scalars["weight_sum"]), float(scalars["lr_max"])
        self.train_mode = bool(scalars["train_mode"])


OPTIMIZERS = {"sgd": SGD, "adamw": AdamW, "adamw-sf": AdamWScheduleFree}


def make_optimizer(kind: str, params, lr: float, weight_decay: float = 0.0, **options) -> Optimizer:
    if kind not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {kind!r}; choose one of: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[kind](params, lr=lr, weight_decay=weight_decay, **options)

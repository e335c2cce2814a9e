"""A trainable tensor and its gradient, allocated together once."""
from __future__ import annotations

import numpy as np


class Param:
    __slots__ = ("name", "value", "grad")

    def __init__(self, name: str, value: np.ndarray):
        self.name = name
        self.value = np.ascontiguousarray(value, dtype=np.float32)
        self.grad = np.zeros_like(self.value)

    def __repr__(self):
        return f"Param({self.name}, {self.value.shape})"


def uniform_fan_in(rng: np.random.Generator, shape, fan_in: int) -> np.ndarray:
    """PyTorch's default Conv/Linear init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight
    (kaiming_uniform with a=sqrt(5)) and bias alike."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, size=shape).astype(np.float32)

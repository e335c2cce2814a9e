"""The numeric precisions edge-lls runs a model at, named once for every module and command.

    fp32  float32 weights and activations (training and inference)
    fp16  float16 storage, float32 math: activations only when training (mixed precision,
          docs/fp16.md), weights and activations for inference (edge_lls.fp16)
    int8  TFLite integer semantics (per-channel int8 weights, int8 activations)
"""
from __future__ import annotations

from .errors import ConfigError

PRECISIONS = ("fp32", "fp16", "int8")
TRAIN_PRECISIONS = ("fp32", "fp16")      # what a training step can store activations in


def check_precision(value: str, allowed: tuple[str, ...] = PRECISIONS, flag: str = "--precision") -> str:
    if value not in allowed:
        raise ConfigError(f"{flag} must be {', '.join(allowed[:-1])} or {allowed[-1]}, got {value!r}")
    return value

"""Measured training steps (tracemalloc), and how they compare with the analytic profile."""
from __future__ import annotations

import gc
import tracemalloc

import numpy as np

from ..errors import ConfigError
from .analytic import Profile

MEASURE_TOLERANCE = 0.20

def _build(model_name, num_classes, input_shape, model_options, seed=0):
    from ..models import build_model
    return build_model(model_name, num_classes=num_classes, input_shape=input_shape, seed=seed,
                       **(model_options or {}))


def measure_step(model_name: str, rule: str, batch: int, *, num_classes: int = 10, input_shape=None,
                 optimizer: str = "adamw-sf", model_options=None, rule_options=None, seed: int = 0,
                 precision: str = "fp32") -> dict:
    """Traced allocations (tracemalloc) of building a model + Trainer and of its first
    training step, after a warm-up step on another Trainer so that Numba compiles (and
    caches settle) outside the measurement.

    Returns bytes: input (the batch), persistent (model + trainer, before any step),
    step_peak (the step's peak above that: its arena and temporaries), peak (all of it).
    """
    from ..trainer import Trainer

    rule_options = rule_options or {}
    probe = _build(model_name, num_classes, input_shape, model_options, seed)
    shape = probe.input_shape
    del probe
    rng = np.random.default_rng(seed)
    x = rng.random((batch, *shape), dtype=np.float32)
    y = (np.arange(batch) % num_classes).astype(np.int64)
    warm = Trainer(_build(model_name, num_classes, shape, model_options, seed), rule=rule,
                   optimizer=optimizer, precision=precision, **rule_options)
    warm.step(x, y)
    del warm
    gc.collect()
    if tracemalloc.is_tracing():
        raise ConfigError("tracemalloc is already tracing in this process; --measure needs it to itself")
    tracemalloc.start()
    try:
        xb, yb = x.copy(), y.copy()
        input_bytes = tracemalloc.get_traced_memory()[0]
        model = _build(model_name, num_classes, shape, model_options, seed)
        trainer = Trainer(model, rule=rule, optimizer=optimizer, precision=precision, **rule_options)
        persistent = tracemalloc.get_traced_memory()[0] - input_bytes
        tracemalloc.reset_peak()
        before = tracemalloc.get_traced_memory()[0]
        trainer.step(xb, yb)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"input_bytes": input_bytes, "persistent_bytes": persistent,
            "step_peak_bytes": peak - before, "step_retained_bytes": current - before,
            "peak_bytes": peak, "arena_bytes": trainer.arena(batch).nbytes}


def attach_measurement(profile: Profile, measured: dict) -> dict:
    """Put the measured figures next to the analytic ones (relative differences)."""
    def rel(m, a):
        return (m - a) / a if a else 0.0
    out = dict(measured)
    out.update({
        "analytic_step_bytes": profile.step_bytes,
        "analytic_persistent_bytes": profile.persistent_bytes,
        "analytic_peak_bytes": profile.peak_memory_bytes,
        "step_rel_diff": rel(measured["step_peak_bytes"], profile.step_bytes),
        "persistent_rel_diff": rel(measured["persistent_bytes"], profile.persistent_bytes),
        "peak_rel_diff": rel(measured["peak_bytes"], profile.peak_memory_bytes),
        "arena_matches": measured["arena_bytes"] == profile.arena_bytes,
    })
    profile.measured = out
    return out



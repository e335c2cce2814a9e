"""No backward graph is kept: an LLS step's peak traced memory does not grow with depth,
while backpropagation's grows with every block added.

The step's memory is what tracemalloc sees during the first training step of a fresh
Trainer (it allocates the step arena); weights and optimizer state exist before.
"""
import numpy as np
import pytest

from conftest import traced_peak
from edge_lls.nn.model import Model
from edge_lls.trainer import Trainer


def _stack(depth):
    block = {"type": "conv", "filters": 16, "kernel": 3, "stride": 1, "padding": 1,
             "bias": True, "act": "leaky_relu", "pool_size": 2, "post": []}
    return {"name": f"stack{depth}", "input_shape": [16, 16, 16], "num_classes": 10,
            "blocks": [dict(block) for _ in range(depth)], "classifier": {"bias": True}}


def _step_peak(rule, depth):
    model = Model(_stack(depth), seed=0)
    trainer = Trainer(model, rule=rule, optimizer="adamw-sf", lr=1e-3)
    rng = np.random.default_rng(0)
    x = rng.random((32, 16, 16, 16), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    trainer.step(x, y)                        # compile kernels outside the measurement
    trainer = Trainer(Model(_stack(depth), seed=0), rule=rule, optimizer="adamw-sf", lr=1e-3)
    return traced_peak(lambda: trainer.step(x, y))


DEPTHS = (2, 4, 8)


@pytest.mark.parametrize("rule", ["lls", "lls-mxm", "local-losses"])
def test_local_rule_step_memory_does_not_grow_with_depth(rule):
    peaks = [_step_peak(rule, d) for d in DEPTHS]
    assert max(peaks) <= 1.10 * min(peaks), f"{rule} step peaks by depth {DEPTHS}: {peaks}"


def test_backprop_step_memory_grows_with_every_block():
    peaks = [_step_peak("bp", d) for d in DEPTHS]
    assert all(b > a for a, b in zip(peaks, peaks[1:])), f"bp peaks by depth {DEPTHS}: {peaks}"
    # Each block keeps its pre-norm and activation outputs (2 x 32*16*16*16 floats).
    per_block = 2 * 32 * 16 * 16 * 16 * 4
    assert peaks[-1] - peaks[0] >= (DEPTHS[-1] - DEPTHS[0]) * per_block


def test_lls_arena_is_smaller_than_bp_arena():
    lls = Trainer(Model(_stack(8)), rule="lls").arena(32)
    bp = Trainer(Model(_stack(8)), rule="bp").arena(32)
    assert lls.nbytes < 0.5 * bp.nbytes, (lls.nbytes, bp.nbytes)


@pytest.mark.parametrize("rule", ["lls", "bp"])
def test_evaluation_lays_its_buffers_over_the_training_arena(rule):
    # Training steps and evaluation never run at once, so inference needs no memory of
    # its own: its arena is laid over the training arena's buffer.
    model = Model(_stack(4), seed=0)
    trainer = Trainer(model, rule=rule, optimizer="adamw", lr=1e-3)
    rng = np.random.default_rng(0)
    x = rng.random((32, 16, 16, 16), dtype=np.float32)
    trainer.step(x, rng.integers(0, 10, 32))
    model.forward(x)                                   # compile outside the measurement
    model.lend_memory(trainer.arena(32).memory)        # as a fresh trainer would
    peak = traced_peak(lambda: model.forward(x))
    assert np.shares_memory(model.forward(x), trainer.arena(32).memory)
    assert peak < 0.05 * trainer.arena(32).nbytes, (peak, trainer.arena(32).nbytes)


@pytest.mark.parametrize("rule", ["lls", "bp", "dfa"])
@pytest.mark.parametrize("name", ["smallconv", "vgg8", "mobilenetv1"])
def test_planner_packs_the_zoo_into_its_largest_live_set(name, rule):
    # Greedy packing can leave holes in general; for the zoo's schedules it must not.
    from edge_lls.models import build_model
    from edge_lls.nn.arena import live_bytes, plan
    model = build_model(name, num_classes=10, input_shape={"vgg8": (32, 32, 3)}.get(name))
    trainer = Trainer(model, rule=rule)
    stages = model.stages(8, trainer.rule.mode, trainer.rule.head_buffers(model, 8), trainer.rule.pooled_grad)
    layout = plan(stages, trainer.rule.mode)
    peak_live = max(live_bytes(stages, trainer.rule.mode, t) for t in range(2 * len(stages)))
    assert layout.region_bytes["live"] == peak_live


ZOO = {"smallconv": (28, 28, 1), "vgg8": (32, 32, 3), "mobilenetv1": (96, 96, 3)}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("rule", ["lls", "lls-m", "local-losses", "bp", "dfa"])
@pytest.mark.parametrize("name", sorted(ZOO))
def test_sharing_the_arena_never_changes_a_step(name, rule, precision):
    # The planner may lay two buffers over the same bytes only if their lifetimes never
    # overlap. Check it the direct way: a step in the packed arena equals, bit for bit,
    # a step where every buffer has memory of its own. (This caught DFA reading a
    # no-pooling block's output after the planner had handed its bytes on.)
    from edge_lls.models import build_model
    rng = np.random.default_rng(0)
    x = rng.random((4, *ZOO[name]), dtype=np.float32)
    y = np.arange(4) % 4
    grads = []
    for private in (False, True):
        trainer = Trainer(build_model(name, num_classes=4, input_shape=ZOO[name], seed=0), rule=rule,
                          optimizer="sgd", lr=0.0, precision=precision)
        arena = trainer.arena(len(x))
        if private:
            for views in arena.views:
                for key, view in views.items():
                    views[key] = np.full_like(view, np.nan) if view.dtype.kind == "f" else np.zeros_like(view)
        trainer.step(x, y)
        grads.append([p.grad.copy() for p in trainer.model.params])
    for a, b in zip(*grads):
        np.testing.assert_array_equal(a, b)


_NRT_PROBE = """
import sys, numpy as np
from numba.core.runtime import rtsys
from edge_lls.models import build_model
from edge_lls.trainer import Trainer
name, rule, precision = sys.argv[1:4]
shape = {"smallconv": (28, 28, 1), "mobilenetv1": (96, 96, 3)}[name]
counts = []
for batch in (8, 32):
    rng = np.random.default_rng(0)
    x, y = rng.random((batch, *shape), dtype=np.float32), np.arange(batch) % 10
    trainer = Trainer(build_model(name, num_classes=10, input_shape=shape, seed=0), rule=rule, precision=precision)
    trainer.step(x, y)
    before = rtsys.get_allocation_stats().alloc
    trainer.step(x, y)
    counts.append(rtsys.get_allocation_stats().alloc - before)
print(*counts)
"""


@pytest.mark.parametrize("name,rule,precision", [("smallconv", "lls", "fp32"), ("smallconv", "bp", "fp16"),
                                                 ("mobilenetv1", "lls", "fp16")])
def test_kernel_allocations_per_step_do_not_grow_with_the_batch(name, rule, precision):
    # Counted, not weighed: a temporary allocated and freed per row barely moves a traced
    # peak. A step may make a fixed number of Numba allocations per kernel call
    # (parallel-loop bookkeeping), never one per row or per task: once, `dst[r] += b` in
    # the conv forward allocated per output pixel, 130k times a SmallConv step.
    import os
    import subprocess
    import sys
    env = {**os.environ, "NUMBA_NRT_STATS": "1"}
    out = subprocess.run([sys.executable, "-c", _NRT_PROBE, name, rule, precision], env=env, check=True,
                         capture_output=True, text=True).stdout.split()
    small, large = (int(v) for v in out)
    assert small == large, (small, large)
    assert large < 2000, large


@pytest.mark.parametrize("rule", ["lls", "bp"])
@pytest.mark.parametrize("name,batch", [("smallconv", 64), ("vgg8", 16)])
def test_a_steady_step_allocates_only_class_sized_arrays(name, rule, batch):
    # After its first step a trainer reuses everything: the arena, per-thread rows, the
    # reductions' slice sums (reduce.slice_partials). What is left is the heads' and the
    # loss's (N, K) arrays and per-sample norms: tens of KiB, whatever the channel count
    # (VGG8's 512-channel batch norms once allocated 260 KiB of float64 partials a call).
    from edge_lls.models import build_model
    shape = ZOO[name]
    rng = np.random.default_rng(0)
    x, y = rng.random((batch, *shape), dtype=np.float32), np.arange(batch) % 10
    trainer = Trainer(build_model(name, num_classes=10, input_shape=shape, seed=0), rule=rule)
    trainer.step(x, y)
    peak = traced_peak(lambda: trainer.step(x, y))
    assert peak < 64 * 1024, peak

"""fp16 inference: float16 storage of weights and activations, float32 math, within the
documented tolerance of fp32 (docs/int8.md)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import MNIST_DIR, require_shared
from edge_lls.errors import ConfigError
from edge_lls.fp16 import Fp16Model
from edge_lls.models import build_model
from edge_lls.program.ptq import quantize_model

# Documented tolerances (docs/int8.md), per sample: max |logit difference| / max |fp32 logit|.
FP16_RELATIVE = 1e-2
INT8_RELATIVE = 0.1


@pytest.fixture(scope="module")
def mnist_smallconv():
    """SmallConv after a few LLS steps on MNIST (enough for structured logits), and test images."""
    from edge_lls.data import load_dataset
    from edge_lls.trainer import Trainer
    data = load_dataset("mnist", require_shared(MNIST_DIR), val_split=0.2)
    model = build_model("smallconv", 10, (28, 28, 1), seed=0)
    trainer = Trainer(model, rule="lls", optimizer="adamw", lr=2e-3, temperature=0.5)
    for step, (x, y) in enumerate(data.train.batches(64, shuffle=True)):
        trainer.step(x, y)
        if step == 5:
            break
    x, y = data.test.arrays()
    return model, data, x[:512], y[:512]


def per_sample_relative(a, b):
    return (np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)).max()


def test_fp16_smallconv_within_tolerance_of_fp32(mnist_smallconv):
    model, _, x, _ = mnist_smallconv
    fp32 = model.forward(x).copy()
    fp16 = Fp16Model(model).forward(x)
    assert per_sample_relative(fp16, fp32) <= FP16_RELATIVE
    assert (fp16.argmax(1) == fp32.argmax(1)).mean() >= 0.99


def test_int8_smallconv_within_tolerance_of_fp32(mnist_smallconv):
    model, data, x, _ = mnist_smallconv
    from edge_lls.program.ptq import calibration_sample
    fp32 = model.forward(x).copy()
    int8 = quantize_model(model, calibration_sample(data.train, 256)).outputs(x)
    assert per_sample_relative(int8, fp32) <= INT8_RELATIVE
    assert (int8.argmax(1) == fp32.argmax(1)).mean() >= 0.97


def test_fp16_stores_half_precision_and_allocates_once_per_batch_size(mnist_smallconv):
    model, _, x, _ = mnist_smallconv
    half = Fp16Model(model)
    for layer in half.layers:
        assert layer.w is None or (layer.w.dtype == np.float16 and layer.b.dtype == np.float16)
    fp32_weights = sum(u.op.w.value.nbytes + u.op.b.value.nbytes for b in model.blocks for u in b.units) \
        + model.classifier.w.value.nbytes + model.classifier.b.value.nbytes
    assert half.weight_bytes * 2 == fp32_weights
    first = half.forward(x[:32])
    plan = half._plans[32]
    buffers = [id(v) for v in plan.values() if isinstance(v, np.ndarray)]
    assert all(b.dtype == np.float16 for b in plan["act"])
    again = half.forward(x[:32])
    assert half._plans[32] is plan and [id(v) for v in plan.values() if isinstance(v, np.ndarray)] == buffers
    assert np.array_equal(first, again)


def test_fp16_dwsep_model_within_tolerance():
    """The first 4 MobileNetV1 blocks (stride 2 'same', depthwise).  Random weights: deeper
    random stacks amplify rounding noise (docs/int8.md), trained ones do not."""
    from edge_lls.models import model_spec
    from edge_lls.nn.model import Model
    spec = model_spec("mobilenetv1", 3, (32, 32, 3))
    spec["blocks"] = spec["blocks"][:4]
    spec["blocks"][-1]["post"] = [{"type": "adaptive_avgpool", "size": [1, 1]}]
    model = Model(spec, seed=0)
    rng = np.random.default_rng(0)
    for bn in model.batch_norms():
        bn.momentum = 1.0
    model.forward(rng.random((32, 32, 32, 3)).astype(np.float32), training=True)
    x = rng.random((8, 32, 32, 3)).astype(np.float32)
    fp32 = model.forward(x).copy()
    assert per_sample_relative(Fp16Model(model).forward(x), fp32) <= FP16_RELATIVE


def test_fp16_rejects_weights_out_of_range_and_wrong_shapes():
    model = build_model("smallconv", 10, (28, 28, 1), seed=0)
    with pytest.raises(ConfigError, match="input shape"):
        Fp16Model(model).forward(np.zeros((2, 32, 32, 1), np.float32))
    model.classifier.w.value[0, 0] = 1e6
    with pytest.raises(ConfigError, match="float16 range"):
        Fp16Model(model)


@pytest.mark.parametrize("name,shape", [("smallconv", (28, 28, 1)), ("mobilenetv1", (32, 32, 3))])
def test_fp16_runs_the_lowered_program_not_a_second_walk_of_the_model(name, shape):
    # One layer per compute op of the program every backend reads (program/lower.py): a
    # PAD becomes its convolution's padding, a LEAKY_RELU the activation of the op before.
    from edge_lls.program.lower import float_program
    model = build_model(name, 4, shape, seed=0)
    program = float_program(model)
    compute = [op for op in program.operators if op.opcode not in ("PAD", "LEAKY_RELU")]
    half = Fp16Model(model)
    assert len(half.layers) == len(compute)
    for layer, op in zip(half.layers, compute):
        assert layer.out_shape == program.tensors[op.outputs[0]].shape
        if op.opcode in ("CONV_2D", "FULLY_CONNECTED"):
            np.testing.assert_array_equal(layer.w, program.tensors[op.inputs[1]].data.astype(np.float16))

"""Post-training int8 quantization: the float export equals the model, the int8 programs are
bit-exact against LiteRT's reference kernels and our NumPy reference kernels, and accuracy holds."""
from __future__ import annotations

import types

import numpy as np
import pytest

from conftest import MNIST_DIR, require_shared
from edge_lls.program import interpreter as graph_module
from edge_lls.errors import ConfigError, FormatError
from edge_lls.formats.tflite import read_tflite, write_tflite
from edge_lls.kernels.int8 import leaky_relu_s8
from edge_lls.kernels.ref import int8 as ref_int8
from edge_lls.kernels.ref.int8 import leaky_relu_s8 as leaky_relu_s8_reference
from edge_lls.models import build_model
from edge_lls.nn.model import Model
from edge_lls.program.interpreter import load_tflite, prepare
from edge_lls.program.lower import float_program
from edge_lls.program.ptq import activation_quant, quantize_model, weight_quant
from edge_lls.program.runner import Int8Model
from edge_lls.program.interpreter import leaky_relu_params

import ai_edge_litert.interpreter as litert  # noqa: E402  (a test dependency)


def with_statistics(model, rng, inputs: int = 64):
    """Random batch-norm parameters and running statistics from a few training-mode passes."""
    for bn in model.batch_norms():
        bn.gamma.value[...] = rng.uniform(0.5, 1.5, bn.gamma.value.shape)
        bn.beta.value[...] = rng.normal(0, 0.1, bn.beta.value.shape)
        bn.momentum = 1.0
    x = rng.random((inputs, *model.input_shape)).astype(np.float32)
    model.forward(x, training=True)
    return model


def small_dwsep_model(rng) -> Model:
    """Depthwise-separable blocks with SAME stride 2, an explicit padding TFLite cannot express
    (padding 1 at stride 2 on an even size: a PAD op), relu6 and relu, and a dense block."""
    spec = {"name": "mini", "input_shape": [16, 16, 3], "num_classes": 4, "blocks": [
        {"type": "conv", "filters": 8, "kernel": 3, "stride": 2, "padding": 1, "bias": False, "act": "relu6",
         "pool_size": 2, "post": []},
        {"type": "dwsep", "filters": 16, "kernel": 3, "stride": 2, "padding": "same", "act": "relu",
         "pool_size": 2, "post": [{"type": "maxpool", "kernel": 2, "stride": 2}]},
        {"type": "dwsep", "filters": 16, "kernel": 3, "stride": 1, "padding": "same", "act": "leaky_relu",
         "pool_size": 1, "post": [{"type": "adaptive_avgpool", "size": [1, 1]}]},
        {"type": "dense", "units": 12, "act": "leaky_relu", "pool_size": 12},
    ]}
    return with_statistics(Model(spec, seed=3), rng)


@pytest.fixture(scope="module")
def models():
    rng = np.random.default_rng(0)
    return {"smallconv": with_statistics(build_model("smallconv", 10, (28, 28, 1), seed=1), rng),
            "mini": small_dwsep_model(rng)}


def litert_reference(model_bytes: bytes):
    interpreter = litert.Interpreter(model_content=model_bytes, num_threads=1, experimental_preserve_all_tensors=True,
                                     experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    return interpreter


def run_litert(interpreter, x):
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
    interpreter.invoke()


def reference_kernels():
    """A stand-in for edge_lls.kernels.int8 whose kernels are the NumPy twins."""
    return types.SimpleNamespace(**{name: getattr(ref_int8, name) for name in dir(ref_int8) if name.endswith("_s8")
                                    or name in ("quantize_f32_to_s8", "dequantize_s8")})


# ------------------------------------------------------------------ float export

@pytest.mark.parametrize("name", ["smallconv", "mini"])
def test_float_program_equals_the_model(models, name):
    model = models[name]
    x = np.random.default_rng(5).random((16, *model.input_shape)).astype(np.float32)
    expected = model.forward(x).copy()
    got = prepare(float_program(model), batch=16).run([x])[0]
    assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


def test_export_uses_pad_for_padding_tflite_cannot_express(models):
    opcodes = [op.opcode for op in float_program(models["mini"]).operators]
    assert opcodes[:2] == ["PAD", "CONV_2D"]
    assert "DEPTHWISE_CONV_2D" in opcodes and "LEAKY_RELU" in opcodes and "MAX_POOL_2D" in opcodes


# ------------------------------------------------------------------ LEAKY_RELU

def test_leaky_relu_kernel_equals_numpy_twin():
    rng = np.random.default_rng(7)
    for _ in range(50):
        s_in, s_out = rng.uniform(0.001, 0.2, 2)
        alpha = rng.choice([0.01, 0.2, 0.5, 1.5])
        zp_in, zp_out = (int(v) for v in rng.integers(-128, 128, 2))
        x = rng.integers(-128, 128, 257).astype(np.int8)
        params = leaky_relu_params(s_in, s_out, alpha)
        ours, twin = np.empty_like(x), np.empty_like(x)
        leaky_relu_s8(x, ours, zp_in, zp_out, *params)
        leaky_relu_s8_reference(x, twin, zp_in, zp_out, *params)
        assert np.array_equal(ours, twin)


# ------------------------------------------------------------------ int8 programs vs LiteRT and references

@pytest.fixture(scope="module")
def quantized(models):
    rng = np.random.default_rng(11)
    out = {}
    for name, model in models.items():
        calibration = rng.random((48, *model.input_shape)).astype(np.float32)
        out[name] = quantize_model(model, calibration, batch_size=16)
    return out


@pytest.mark.parametrize("name", ["smallconv", "mini"])
def test_int8_program_bit_exact_against_litert_on_every_tensor(quantized, name):
    q = quantized[name]
    interpreter = litert_reference(write_tflite(q.program))
    rng = np.random.default_rng(13)
    for fast in (True, False):
        graph = prepare(q.program, 1, fast)
        for trial in range(6):
            x = rng.integers(-128, 128, (1, *q.input_shape)).astype(np.int8)
            ours = graph.run_all([x])
            run_litert(interpreter, x)
            for index, value in ours.items():
                theirs = interpreter.get_tensor(index).reshape(value.shape)
                assert np.array_equal(value, theirs), f"{name} tensor {index} '{graph.tensors[index].name}'"


@pytest.mark.parametrize("name", ["smallconv", "mini"])
def test_int8_program_equals_numpy_reference_kernels(quantized, name, monkeypatch):
    q = quantized[name]
    x = np.random.default_rng(17).integers(-128, 128, (3, *q.input_shape)).astype(np.int8)
    fast = prepare(q.program, 3, fast=True).run_all([x])
    monkeypatch.setattr(graph_module, "kernels", reference_kernels())
    reference = prepare(q.program, 3, fast=False).run_all([x])
    for index, value in fast.items():
        assert np.array_equal(value, reference[index]), f"tensor {index}"


def test_tflite_file_round_trip(quantized, tmp_path):
    q = quantized["mini"]
    q.program.metadata["edge_lls"] = b'{"classes": ["a", "b", "c", "d"]}'
    path = tmp_path / "mini.tflite"
    q.save(path)
    back = read_tflite(path)
    assert back.metadata == {"edge_lls": b'{"classes": ["a", "b", "c", "d"]}'}
    assert [op.opcode for op in back.operators] == [op.opcode for op in q.program.operators]
    assert back.operators[-4].options == q.program.operators[-4].options
    for a, b in zip(back.tensors, q.program.tensors):
        assert a.shape == b.shape and a.dtype == b.dtype and a.quantized_dimension == b.quantized_dimension
        assert (a.data is None and b.data is None) or np.array_equal(a.data, b.data)
        assert (a.scales is None and b.scales is None) or np.array_equal(a.scales, b.scales)
    x = np.random.default_rng(19).random((5, *q.input_shape)).astype(np.float32)
    assert np.array_equal(Int8Model(back).run(q.quantize_input(x)), q.run(q.quantize_input(x)))


ZOO = {"smallconv": (28, 28, 1), "vgg8": (32, 32, 3), "mobilenetv1": (32, 32, 3)}


@pytest.mark.parametrize("name", sorted(ZOO))
def test_every_zoo_model_quantize_writes_reads_back_through_the_one_reader(name, tmp_path):
    # What `edge-lls quantize` writes for each zoo model (leaky ReLU: a LEAKY_RELU op per
    # unit) is opened by the one reader and runs to the same bytes.
    rng = np.random.default_rng(8)
    model = with_statistics(build_model(name, 4, ZOO[name], seed=0), rng, inputs=8)
    q = quantize_model(model, rng.random((16, *ZOO[name])).astype(np.float32))
    q.save(tmp_path / "m.tflite")
    back = read_tflite(tmp_path / "m.tflite")
    assert "LEAKY_RELU" in [op.opcode for op in back.operators]
    assert [op.options for op in back.operators] == [op.options for op in q.program.operators]
    x = rng.integers(-128, 128, (1, *ZOO[name])).astype(np.int8)
    np.testing.assert_array_equal(load_tflite(tmp_path / "m.tflite").run([x])[0], q.run(x))


def test_relu_only_models_load_with_the_plain_tflite_loader(tmp_path):
    model = with_statistics(build_model("mobilenetv1", 3, (32, 32, 3), seed=0, act="relu"), np.random.default_rng(2))
    q = quantize_model(model, np.random.default_rng(3).random((32, 32, 32, 3)).astype(np.float32))
    q.save(tmp_path / "m.tflite")
    graph = load_tflite(tmp_path / "m.tflite")
    x = np.random.default_rng(4).integers(-128, 128, (1, 32, 32, 3)).astype(np.int8)
    assert np.array_equal(graph.run([x])[0], q.run(x))


# ------------------------------------------------------------------ the quantization scheme

def test_activation_quant_follows_tflite_converter():
    assert activation_quant(0.0, 1.0) == (pytest.approx(1 / 255), -128)       # [0, 1] pixels: q = 255 x - 128
    scale, zp = activation_quant(-1.0, 3.0)
    assert scale == pytest.approx(4 / 255) and zp == round(-128 + 1 / scale)
    assert activation_quant(0.5, 2.0)[1] == -128                               # range widened to contain 0
    assert activation_quant(-3.0, -1.0)[1] == 127


def test_weight_quant_is_symmetric_per_channel():
    w = np.array([[1.0, -0.5], [0.0, 0.0], [-2.0, 0.25]], np.float32)
    codes, scales = weight_quant(w, axis=0)
    assert codes.tolist() == [[127, -64], [0, 0], [-127, 16]]
    assert np.allclose(scales, [1 / 127, 1.0, 2 / 127])
    codes, scales = weight_quant(w, axis=None)
    assert scales.shape == (1,) and codes.max() <= 127 and codes.min() == -127


def test_bad_input_is_reported():
    model = build_model("smallconv", 10, (28, 28, 1))
    with pytest.raises(ConfigError, match="empty"):
        quantize_model(model, np.zeros((0, 28, 28, 1), np.float32))
    uneven = build_model("smallconv", 10, (28, 28, 1))
    uneven.blocks[2].post[0].size = (4, 4)                      # 7 -> 4 adaptive windows: lengths 2, 3, 3, 2
    with pytest.raises(ConfigError, match="uneven windows"):
        float_program(uneven)


def test_read_tflite_rejects_non_tflite(tmp_path):
    path = tmp_path / "x.tflite"
    path.write_bytes(b"not a flatbuffer at all")
    with pytest.raises(FormatError, match="identifier"):
        read_tflite(path)


# ------------------------------------------------------------------ accuracy on MNIST

@pytest.mark.long
def test_ptq_of_mnist_smallconv_loses_at_most_half_a_point():
    """SmallConv, LLS, 2 epochs on 8k MNIST (batch 128, adamw-sf 5e-3, T 0.5), then PTQ with
    512 calibration images: int8 accuracy on the 2k held out within 0.5 pt of fp32."""
    from edge_lls.data import load_dataset
    from edge_lls.fp16 import Fp16Model
    from edge_lls.program.ptq import calibration_sample
    from edge_lls.trainer import Trainer
    data = load_dataset("mnist", require_shared(MNIST_DIR), val_split=0.2)
    model = build_model("smallconv", 10, (28, 28, 1), seed=0)
    trainer = Trainer(model, rule="lls", optimizer="adamw-sf", lr=5e-3, temperature=0.5)
    for epoch in range(2):
        for x, y in data.train.batches(128, shuffle=True, epoch=epoch):
            trainer.step(x, y)
    x_test, y_test = data.test.arrays()
    with trainer.averaged_weights(data.train.batches(128, shuffle=True, epoch=2)):
        fp32 = float((model.predict(x_test) == y_test).mean())
        int8 = float((quantize_model(model, calibration_sample(data.train, 512)).predict(x_test) == y_test).mean())
        fp16 = float((Fp16Model(model).predict(x_test) == y_test).mean())
    assert fp32 > 0.95
    assert int8 >= fp32 - 0.005, (fp32, int8)
    assert abs(fp16 - fp32) <= 0.002, (fp32, fp16)

"""LLS fine-tuning of imported int8 backbones: structure, initialisation, the end-to-end CLI
path on an image folder, and bit-exactness of the fine-tuned model (our fast kernels, plain
kernels, NumPy reference kernels, LiteRT's reference kernels)."""
from __future__ import annotations

import argparse
import json
import types

import numpy as np
import pytest
from PIL import Image

from conftest import VWW_DIR
from edge_lls.cli import train as train_command
from edge_lls.program import interpreter as graph_module
from edge_lls.errors import ConfigError
from edge_lls.finetune import FineTuner, load_backbone, quantize_pixels
from edge_lls.formats.tflite import read_tflite, write_tflite
from edge_lls.kernels.fixedpoint import dequantize
from edge_lls.kernels.ref import int8 as ref_int8
from edge_lls.program.interpreter import load_tflite
from edge_lls.program.runner import Int8Model

VWW_INT8 = VWW_DIR / "vww_96_int8.tflite"
PERSON_DETECT = VWW_DIR / "person_detect.tflite"
VWW_FLOAT = VWW_DIR / "vww_96_float.tflite"

pytestmark = pytest.mark.shared(VWW_DIR)


def make_image_folder(root, per_class: int = 12, classes=("horizontal", "vertical"), size: int = 96, gray=False):
    """Stripes: horizontal vs vertical (vs diagonal), random period, phase and noise."""
    rng = np.random.default_rng(0)
    for name in classes:
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            period, phase = int(rng.integers(6, 16)), int(rng.integers(0, 16))
            rows, cols = np.mgrid[0:size, 0:size]
            coordinate = {"horizontal": rows, "vertical": cols, "diagonal": rows + cols}[name]
            image = np.where((coordinate + phase) % period < period // 2, 200.0, 40.0)
            image = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
            pixels = image if gray else np.stack([image, image * 0.8, image * 0.6], -1).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i:03d}.png")
    return root


def train_args(*argv: str) -> argparse.Namespace:
    """`edge-lls train` options exactly as edge_lls/cli/train.py defines them (precision group included)."""
    parser = argparse.ArgumentParser()
    train_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def litert_reference(path):
    import ai_edge_litert.interpreter as litert
    interpreter = litert.Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True,
                                     experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    return interpreter


def reference_kernels():
    return types.SimpleNamespace(**{name: getattr(ref_int8, name) for name in dir(ref_int8)
                                    if name.endswith("_s8") or name in ("quantize_f32_to_s8", "dequantize_s8")})


@pytest.fixture(scope="module")
def vww():
    return load_backbone(VWW_INT8)


# ------------------------------------------------------------------ structure

def test_vww_backbone_blocks_and_head(vww):
    assert [b.kind for b in vww.blocks] == ["conv"] + ["dwsep"] * 13
    assert (vww.head.pool, vww.head.classifier, vww.head.softmax) == (27, 29, 30)
    assert vww.num_classes == 2
    assert vww.cut(2) == 23 and vww.cut(1) == 25 and vww.cut(14) == 0 and vww.cut(0) == 28
    for bad in (15, -1, 1.5):
        with pytest.raises(ConfigError, match="--train-last"):
            vww.cut(bad)


def test_person_detect_head_is_a_1x1_convolution():
    backbone = load_backbone(PERSON_DETECT)
    assert backbone.program.operators[backbone.head.classifier].opcode == "CONV_2D"
    tuner = FineTuner(backbone, 2, 2)
    assert [b["act"] for b in tuner.model.spec["blocks"]] == ["relu6", "relu6"]
    assert tuner.feature_shape == (6, 6, 128)


def test_float_backbone_is_refused():
    with pytest.raises(ConfigError, match="int8"):
        load_backbone(VWW_FLOAT)


def test_tail_starts_as_the_imported_tail(vww):
    """Dequantized weights + identity batch norm: before training, the float tail and the
    re-quantized export compute what the original int8 tail did (up to quantization)."""
    tuner = FineTuner(vww, 2, 2)
    rng = np.random.default_rng(0)
    x = np.clip(rng.random((1, 96, 96, 3)) * 0.3 + rng.random((24, 96, 96, 3)) * 0.7, 0, 1).astype(np.float32)
    features = tuner.features(x)
    tuner.start(features)
    original = Int8Model(read_tflite(VWW_INT8))
    expected = dequantize(original.run(quantize_pixels(x, vww.input)), 1 / 256, -128)
    logits = tuner.model.forward(tuner.dequantize(features)).astype(np.float64)
    probabilities = np.exp(logits - logits.max(1, keepdims=True))
    probabilities /= probabilities.sum(1, keepdims=True)
    assert np.abs(probabilities - expected).max() < 0.05
    exported = Int8Model(tuner.export(features))
    codes, original_codes = exported.run(quantize_pixels(x, vww.input)), original.run(quantize_pixels(x, vww.input))
    assert np.abs(codes.astype(int) - original_codes).max() <= 12            # within 0.05 in probability


# ------------------------------------------------------------------ end to end

@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    root = tmp_path_factory.mktemp("finetune")
    folder = make_image_folder(root / "stripes")
    args = train_args("--backbone", str(VWW_INT8), "--train-last", "2", "--data", str(folder), "--epochs", "2",
                      "--batch-size", "8", "--out", str(root / "run"), "--json", "--calibration-images", "16")
    assert train_command.finetune_from_args(args) == 0
    return root / "run", folder


def test_finetune_writes_an_int8_model_and_result(finetuned, capsys):
    run, _ = finetuned
    result = json.loads((run / "result.json").read_text())
    assert result["train_last"] == 2 and result["trainable_ops"] == [[23, 24], [25, 26]]
    assert result["classes"] == ["horizontal", "vertical"] and result["train_images"] == 20
    assert 0 <= result["int8_accuracy"] <= 1 and 0 <= result["fp32_accuracy"] <= 1
    program = read_tflite(run / "model.tflite")
    assert all(t.dtype != np.float32 for t in program.tensors)
    assert json.loads(program.metadata["edge_lls"])["classes"] == ["horizontal", "vertical"]


def test_frozen_prefix_is_unchanged_and_tail_is_trained(finetuned, vww):
    run, _ = finetuned
    tuned = read_tflite(run / "model.tflite")
    assert [op.opcode for op in tuned.operators] == [op.opcode for op in vww.program.operators[:28]] + \
        ["FULLY_CONNECTED", "SOFTMAX"]
    for i in range(23):
        for a, b in zip(tuned.operators[i].inputs, vww.program.operators[i].inputs):
            ta, tb = tuned.tensors[a], vww.program.tensors[b]
            assert ta.shape == tb.shape and ta.scale == tb.scale and ta.zero_point == tb.zero_point
            assert (ta.data is None and tb.data is None) or np.array_equal(ta.data, tb.data)
    changed = [not np.array_equal(tuned.tensors[tuned.operators[i].inputs[1]].data,
                                  vww.program.tensors[vww.program.operators[i].inputs[1]].data) for i in range(23, 27)]
    assert all(changed)


def test_finetuned_model_is_bit_exact_on_every_kernel_path(finetuned, monkeypatch):
    run, folder = finetuned
    images = sorted(folder.glob("*/*.png"))[::5]
    x = np.stack([np.asarray(Image.open(p).convert("RGB"), np.float32) / 255 for p in images])
    codes = quantize_pixels(x, load_backbone(run / "model.tflite").input)
    fast, plain = load_tflite(run / "model.tflite"), load_tflite(run / "model.tflite", fast=False)
    interpreter = litert_reference(run / "model.tflite")
    fast_tensors = [fast.run_all([c[None]]) for c in codes]
    monkeypatch.setattr(graph_module, "kernels", reference_kernels())
    reference = load_tflite(run / "model.tflite", fast=False)
    for c, ours in zip(codes, fast_tensors):
        plain_tensors, reference_tensors = plain.run_all([c[None]]), reference.run_all([c[None]])
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], c[None])
        interpreter.invoke()
        for index, value in ours.items():
            assert np.array_equal(value, plain_tensors[index]), f"plain kernels, tensor {index}"
            assert np.array_equal(value, reference_tensors[index]), f"NumPy reference kernels, tensor {index}"
            assert np.array_equal(value, interpreter.get_tensor(index).reshape(value.shape)), f"LiteRT, tensor {index}"


def test_finetune_to_another_class_count_and_a_grayscale_backbone(tmp_path, capsys):
    folder = make_image_folder(tmp_path / "three", per_class=6, classes=("diagonal", "horizontal", "vertical"),
                               gray=True)
    args = train_args("--backbone", str(PERSON_DETECT), "--train-last", "1", "--data", str(folder), "--epochs", "1",
                      "--batch-size", "6", "--out", str(tmp_path / "run"), "--calibration-images", "8")
    assert train_command.finetune_from_args(args) == 0
    assert "fine-tuned last 1 blocks" in capsys.readouterr().out
    graph = load_tflite(tmp_path / "run" / "model.tflite")
    assert graph.output_details[0]["shape"] == (1, 3) and graph.input_details[0]["shape"] == (1, 96, 96, 1)


@pytest.mark.parametrize("argv, message", [
    (["--precision", "fp32"], "--precision must be int8"),
    (["--model", "smallconv"], "--model does not apply"),
    (["--train-last", "20"], "--train-last must be"),
])
def test_bad_fine_tuning_options(tmp_path, argv, message):
    folder = make_image_folder(tmp_path / "f", per_class=3)
    args = train_args("--backbone", str(VWW_INT8), "--data", str(folder), "--out", str(tmp_path / "run"), *argv)
    with pytest.raises(ConfigError, match=message):
        train_command.finetune_from_args(args)


def test_last_block_reaches_finetune_and_is_refused_without_a_backbone(tmp_path, monkeypatch):
    seen = {}

    def fake_finetune(backbone, data, **options):
        seen.update(options)
        raise ConfigError("stop here")
    monkeypatch.setattr("edge_lls.finetune.finetune", fake_finetune)
    folder = make_image_folder(tmp_path / "f", per_class=3)
    for argv, expected in (([], "classifier"), (["--last-block", "lls"], "lls")):
        with pytest.raises(ConfigError, match="stop here"):
            train_command.finetune_from_args(train_args("--backbone", str(VWW_INT8), "--data", str(folder), *argv))
        assert seen["last_block"] == expected
    with pytest.raises(ConfigError, match="--last-block applies to fine-tuning a --backbone"):
        train_command.run(train_args("--last-block", "lls"))


def test_fine_tuning_needs_data():
    with pytest.raises(ConfigError, match="--data"):
        train_command.finetune_from_args(train_args("--backbone", str(VWW_INT8)))


def test_streamed_features_give_the_same_model_as_cached_ones(tmp_path, vww):
    from edge_lls.data import load_dataset
    from edge_lls.finetune import finetune
    folder = make_image_folder(tmp_path / "s", per_class=5)
    data = load_dataset("folder", folder, input_shape=(96, 96, 3))
    cached, a = finetune(vww, data, train_last=1, epochs=2, batch_size=4, calibration_images=6)
    streamed, b = finetune(vww, data, train_last=1, epochs=2, batch_size=4, calibration_images=6, cache_bytes=0)
    assert a["features_cached"] and not b["features_cached"]
    assert write_tflite(cached) == write_tflite(streamed)
    assert (a["fp32_accuracy"], a["int8_accuracy"]) == (b["fp32_accuracy"], b["int8_accuracy"])

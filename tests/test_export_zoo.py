"""`edge-lls export` of LLS-trained zoo models and of a fine-tuned VWW model (issue 10).

VGG8 and MobileNetV1 are trained with LLS by `edge-lls train` on a subset of the real MNIST
test set (../shared/data/mnist, written as IDX train/t10k files), exported with
`edge-lls export RUN --format tflite --precision int8|fp32`, then:

* int8: every tensor (input, every intermediate, output) bit for bit equal between edge-lls
  in LiteRT mode and LiteRT's reference kernels (BUILTIN_REF, every tensor preserved), and
  between edge-lls in TFLM mode (`requantize="tflm"`) and the TFLite Micro interpreter
  (kPreserveAllTensors: `GetTensor(i)` gives every tensor, not only the outputs); on random
  int8 inputs and on MNIST images the model never trained on, quantized with the model's
  input scale and zero point; fast and plain-kernel paths.
* fp32: LiteRT's and TFLM's outputs (and edge-lls's own run of the file) within 1e-5 of the
  largest |logit| of `Model.forward` on the same images.

The fine-tuned model is `edge-lls train --backbone vww_96_int8.tflite --train-last 2` on an
image folder built from the two VWW sample images (augmented copies), then exported
(`edge-lls export RUN/model.tflite --format tflite`) and held to LiteRT and TFLM on every
tensor for the real sample images and random images. SmallConv is tests/test_export.py's.
"""
from __future__ import annotations

import json
import platform

import numpy as np
import pytest
from PIL import Image

from conftest import MNIST_DIR, SAMPLES_DIR, VWW_DIR, require_shared, shared_mnist_test_set, write_mnist_folder
from edge_lls.cli import main
from edge_lls.formats.model_file import load_model
from edge_lls.formats.tflite import read_tflite
from edge_lls.kernels.fixedpoint import quantize
from edge_lls.predict import load_image
from edge_lls.program.interpreter import load_tflite

if platform.machine() != "x86_64":
    pytest.importorskip("tflite_micro", reason="tflite-micro has no wheel for this machine")
import ai_edge_litert.interpreter as litert  # noqa: E402

from edge_lls.tflm import tflm_interpreter  # noqa: E402

VWW_INT8 = VWW_DIR / "vww_96_int8.tflite"
TRAIN_IMAGES, TEST_IMAGES = 512, 128          # the first MNIST test images train, the next evaluate
REAL_FROM = 9000                               # real inputs for the comparisons: never trained on
# zoo model -> (extra `edge-lls train` options, random inputs, real inputs)
ZOO = {
    "mobilenetv1": (["--width", "0.25", "--epochs", "3", "--lr", "0.02"], 8, 8),
    "vgg8": (["--epochs", "1"], 4, 4),
}


@pytest.fixture(scope="module")
def mnist_subset(tmp_path_factory):
    """An MNIST folder (`--dataset mnist`) holding 512 training and 128 test images."""
    images, labels = shared_mnist_test_set()
    end = TRAIN_IMAGES + TEST_IMAGES
    return write_mnist_folder(tmp_path_factory.mktemp("mnist"), (images[:TRAIN_IMAGES], labels[:TRAIN_IMAGES]),
                              (images[TRAIN_IMAGES:end], labels[TRAIN_IMAGES:end]))


def _export(source, out, *extra):
    assert main(["export", str(source), "--format", "tflite", "--out", str(out), *extra]) == 0
    return out


@pytest.fixture(scope="module", params=["mobilenetv1", pytest.param("vgg8", marks=pytest.mark.long)])
def zoo(request, mnist_subset, tmp_path_factory):
    """(name, run folder, int8 .tflite, fp32 .tflite) of a zoo model trained with LLS."""
    name = request.param
    root = tmp_path_factory.mktemp(name)
    options, _, _ = ZOO[name]
    assert main(["train", "--model", name, "--rule", "lls", "--dataset", "mnist", "--data", str(mnist_subset),
                 "--batch-size", "64", "--out", str(root / "run"), "--json", *options]) == 0
    int8 = _export(root / "run", root / "int8.tflite", "--precision", "int8", "--calibration-images", "128")
    fp32 = _export(root / "run", root / "fp32.tflite", "--precision", "fp32")
    return name, root / "run", int8, fp32


def _litert(path):
    interpreter = litert.Interpreter(model_path=str(path), num_threads=1, experimental_preserve_all_tensors=True,
                                     experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    return interpreter


def _random_codes(rng, shape, count):
    """Half uniform noise, half blocky images (noise upsampled 4x: smooth regions and edges)."""
    out = []
    for i in range(count):
        if i % 2 == 0:
            out.append(rng.integers(-128, 128, (1, *shape)).astype(np.int8))
        else:
            h, w, c = shape
            coarse = rng.integers(-128, 128, (1, -(-h // 4), -(-w // 4), c))
            out.append(coarse.repeat(4, 1).repeat(4, 2)[:, :h, :w].astype(np.int8))
    return out


def _real_mnist(count):
    images, _ = shared_mnist_test_set()
    return images[REAL_FROM:REAL_FROM + count, :, :, None].astype(np.float32) / np.float32(255)


def _assert_every_tensor(path, inputs, plain_inputs=2):
    """edge-lls (LiteRT mode, fast and plain) == LiteRT BUILTIN_REF and edge-lls (TFLM mode)
    == TFLite Micro, on every tensor of every input."""
    ours, ours_tflm = load_tflite(path), load_tflite(path, requantize="tflm")
    plain, plain_tflm = load_tflite(path, fast=False), load_tflite(path, fast=False, requantize="tflm")
    reference = _litert(path)
    micro = tflm_interpreter(path.read_bytes(), arena_size=8 << 20)
    names = {t.index: t.name for t in ours.tensors}
    for k, x in enumerate(inputs):
        mine, mine_tflm = ours.run_all([x]), ours_tflm.run_all([x])
        assert len(mine) == len(ours.tensors) - sum(t.data is not None for t in ours.tensors)
        reference.set_tensor(reference.get_input_details()[0]["index"], x)
        reference.invoke()
        micro.set_input(x, 0)
        micro.invoke()
        for index, value in mine.items():
            np.testing.assert_array_equal(value, reference.get_tensor(index).reshape(value.shape),
                                          err_msg=f"input {k}: LiteRT tensor {index} {names[index]}")
        for index, value in mine_tflm.items():
            np.testing.assert_array_equal(value.reshape(-1), micro.GetTensor(index, 0)["tensor_data"].reshape(-1),
                                          err_msg=f"input {k}: TFLM tensor {index} {names[index]}")
        if k < plain_inputs:
            for graph, want, mode in ((plain, mine, "LiteRT"), (plain_tflm, mine_tflm, "TFLM")):
                for index, value in graph.run_all([x]).items():
                    np.testing.assert_array_equal(value, want[index],
                                                  err_msg=f"input {k}: plain kernels, {mode} mode, tensor {index}")


# ------------------------------------------------------------------------------ zoo models
@pytest.mark.shared(MNIST_DIR)
def test_int8_zoo_export_is_bit_exact_with_litert_and_tflm_on_every_tensor(zoo):
    name, run, int8, _ = zoo
    program = read_tflite(int8)
    x_t = program.tensors[program.inputs[0]]
    assert x_t.dtype == np.int8 and x_t.shape == (1, 28, 28, 1)
    assert (float(x_t.scale), int(x_t.zero_point)) == (np.float32(1 / 255), -128)
    opcodes = {op.opcode for op in program.operators}
    assert {"CONV_2D", "FULLY_CONNECTED", "LEAKY_RELU"} <= opcodes
    assert ("DEPTHWISE_CONV_2D" in opcodes) == (name == "mobilenetv1")
    assert ("MAX_POOL_2D" in opcodes) == (name == "vgg8")
    _, random_count, real_count = ZOO[name]
    real = quantize(_real_mnist(real_count), x_t.scale, x_t.zero_point)
    inputs = [real[i:i + 1] for i in range(real_count)] + \
        _random_codes(np.random.default_rng(7), x_t.shape[1:], random_count)
    _assert_every_tensor(int8, inputs)


@pytest.mark.shared(MNIST_DIR)
def test_fp32_zoo_export_runs_in_litert_and_tflm_within_1e5_of_edge_lls(zoo):
    name, run, _, fp32 = zoo
    model, _ = load_model(run / "model.ells")
    _, random_count, real_count = ZOO[name]
    rng = np.random.default_rng(8)
    x = np.concatenate([_real_mnist(real_count), rng.random((random_count, 28, 28, 1)).astype(np.float32)])
    want = model.forward(x).copy()
    reference = _litert(fp32)
    micro = tflm_interpreter(fp32.read_bytes(), arena_size=8 << 20)
    ours = load_tflite(fp32)
    # As tests/test_export.py: 1e-5 of the largest |logit| over the images. Measured (MobileNetV1,
    # 16 images): at most 6.2e-6 absolute, 3.4e-6 of that largest logit; per image up to 1.2e-5 of
    # its own largest logit, as small logits (0.4) come out of normalised activations of order 1.
    bound = 1e-5 * np.abs(want).max()
    for i in range(len(x)):
        reference.set_tensor(reference.get_input_details()[0]["index"], x[i:i + 1])
        reference.invoke()
        micro.set_input(x[i:i + 1], 0)
        micro.invoke()
        for engine, got in (("LiteRT", reference.get_tensor(reference.get_output_details()[0]["index"])),
                            ("TFLM", micro.get_output(0)), ("edge-lls", ours.run([x[i:i + 1]])[0])):
            error = np.abs(got.reshape(-1) - want[i]).max()
            assert error <= bound, f"{name} image {i}: {engine} off by {error:.3g} > {bound:.3g}"


# ------------------------------------------------------------------------------ fine-tuned VWW
@pytest.fixture(scope="module")
def finetuned(tmp_path_factory):
    """(run folder, exported .tflite) of vww_96_int8 fine-tuned (last 2 blocks) with LLS on an
    image folder of the two sample images: 8 augmented copies each (flip, shift, gain, noise)."""
    require_shared(VWW_INT8)
    require_shared(SAMPLES_DIR)
    root = tmp_path_factory.mktemp("vww")
    rng = np.random.default_rng(0)
    for name, pixels in (("no_person", "image"), ("person", "int8")):     # person.bmp holds int8 codes
        grey = load_image(SAMPLES_DIR / f"{name}.bmp", (96, 96, 3), pixels).astype(np.float32)
        (root / "data" / name).mkdir(parents=True)
        for i in range(8):
            image = grey[:, ::-1] if i % 2 else grey
            image = np.roll(image, (int(rng.integers(-6, 7)), int(rng.integers(-6, 7))), (0, 1))
            image = np.clip(image * rng.uniform(0.8, 1.2) + rng.normal(0, 8, image.shape), 0, 255)
            Image.fromarray(image.astype(np.uint8)).save(root / "data" / name / f"{i:02d}.png")
    assert main(["train", "--backbone", str(VWW_INT8), "--train-last", "2", "--data", str(root / "data"),
                 "--epochs", "2", "--batch-size", "8", "--calibration-images", "16", "--out", str(root / "run"),
                 "--json"]) == 0
    exported = _export(root / "run" / "model.tflite", root / "exported.tflite")
    return root / "run", exported


@pytest.mark.shared(VWW_DIR, SAMPLES_DIR)
def test_finetuned_vww_export_is_bit_exact_with_litert_and_tflm_on_every_tensor(finetuned):
    run, exported = finetuned
    result = json.loads((run / "result.json").read_text())
    assert result["train_last"] == 2 and result["classes"] == ["no_person", "person"]
    tuned, backbone = read_tflite(exported), read_tflite(VWW_INT8)
    assert [op.opcode for op in tuned.operators] == [op.opcode for op in backbone.operators][:28] + \
        ["FULLY_CONNECTED", "SOFTMAX"]
    assert any(not np.array_equal(tuned.tensors[tuned.operators[i].inputs[1]].data,
                                  backbone.tensors[backbone.operators[i].inputs[1]].data) for i in range(23, 27))
    x_t = tuned.tensors[tuned.inputs[0]]
    samples = [quantize(load_image(SAMPLES_DIR / f"{name}.bmp", (96, 96, 3), pixels) / np.float32(255),
                        x_t.scale, x_t.zero_point)[None]
               for name, pixels in (("person", "int8"), ("no_person", "image"))]
    _assert_every_tensor(exported, samples + _random_codes(np.random.default_rng(9), x_t.shape[1:], 12))
    scores = [load_tflite(exported).run([s])[0].reshape(-1) for s in samples]
    assert scores[0].argmax() == 1 and scores[1].argmax() == 0         # it learnt its two images

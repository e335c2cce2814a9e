"""`edge-lls predict`: preprocessing per model input, the sample BMPs, JSON lines, our model files."""
from __future__ import annotations

import argparse
import json
import struct

import numpy as np
import pytest
from PIL import Image

from conftest import SAMPLES_DIR, VWW_DIR
from edge_lls.cli import predict as predict_command
from edge_lls.errors import ConfigError, DataError, FormatError
from edge_lls.finetune import pixel_range, quantize_pixels
from edge_lls.formats.model_file import save_model
from edge_lls.models import build_model
from edge_lls.predict import load_image, load_predictor, predict_files

VWW_INT8 = VWW_DIR / "vww_96_int8.tflite"
PERSON_DETECT = VWW_DIR / "person_detect.tflite"
VWW_FLOAT = VWW_DIR / "vww_96_float.tflite"
PERSON, NO_PERSON = SAMPLES_DIR / "person.bmp", SAMPLES_DIR / "no_person.bmp"

pytestmark = pytest.mark.shared(VWW_DIR, SAMPLES_DIR)


def predict_args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    predict_command.add_arguments(parser)
    return parser.parse_args(list(argv))


def one(model, image, pixels="image"):
    return next(predict_files(load_predictor(model), [image], pixels))


# ------------------------------------------------------------------ the sample images (docs/tflite.md)

def test_vww_int8_samples():
    person = one(VWW_INT8, PERSON, "int8")              # person.bmp stores int8 codes
    assert (person["class"], person["scores"], person["probability"]) == (1, [-95, 95], pytest.approx(0.871, abs=1e-3))
    no_person = one(VWW_INT8, NO_PERSON)
    assert no_person["class"] == 0 and no_person["probability"] == pytest.approx(0.73, abs=0.01)
    assert all(isinstance(v, int) for v in no_person["scores"])


def test_person_detect_samples():
    assert one(PERSON_DETECT, PERSON, "int8")["probability"] == pytest.approx(0.94, abs=0.01)
    assert one(PERSON_DETECT, PERSON, "int8")["class"] == 1
    assert one(PERSON_DETECT, NO_PERSON)["class"] == 0


def test_float_tflite_sample():
    record = one(VWW_FLOAT, PERSON, "int8")
    assert record["class"] == 1 and record["probability"] == pytest.approx(0.86, abs=0.01)
    assert all(isinstance(v, float) for v in record["scores"])


def test_preprocessing_follows_the_input_quantization():
    vww, person_detect = load_predictor(VWW_INT8), load_predictor(PERSON_DETECT)
    assert pixel_range(vww.input) == (0.0, 1.0) and pixel_range(person_detect.input) == (-1.0, 1.0)
    grey = np.arange(256, dtype=np.float32) / 255
    assert np.array_equal(quantize_pixels(grey, vww.input), np.arange(256) - 128)            # exactly pixel - 128
    assert np.abs(quantize_pixels(grey, person_detect.input).astype(int) - (np.arange(256) - 128)).max() <= 1


def test_bmp_rows_stored_bottom_up_come_back_top_row_first(tmp_path):
    pixels = np.zeros((4, 6), np.uint8)
    pixels[0] = 255
    Image.fromarray(pixels).save(tmp_path / "x.bmp")
    raw = (tmp_path / "x.bmp").read_bytes()
    height = struct.unpack_from("<i", raw, 22)[0]
    offset = struct.unpack_from("<I", raw, 10)[0]
    assert height > 0 and raw[offset + 3 * 8] == 255            # positive height: the top row is stored last
    loaded = load_image(tmp_path / "x.bmp", (4, 6, 1))
    assert loaded[0, :, 0].tolist() == [255] * 6 and loaded[1:].max() == 0


def test_int8_pixel_format(tmp_path):
    codes = np.array([[0x80, 0x00, 0x7F, 0xFF]], np.uint8)         # int8 codes 0, -128... as stored bytes
    Image.fromarray(codes).save(tmp_path / "codes.png")
    assert load_image(tmp_path / "codes.png", (1, 4, 1), "int8")[0, :, 0].tolist() == [0, 128, 255, 127]
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="single-channel"):
        load_image(tmp_path / "rgb.png", (4, 4, 3), "int8")


# ------------------------------------------------------------------ the CLI hook

def test_run_predict_json_lines(capsys):
    assert predict_command.run(predict_args(str(VWW_INT8), str(NO_PERSON), str(PERSON), "--json",
                                            "--labels", "no_person,person")) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["path"] for r in records] == [str(NO_PERSON), str(PERSON)]
    assert set(records[0]) == {"path", "class", "label", "probability", "scores"}
    assert records[0]["label"] == "no_person" and len(records[0]["scores"]) == 2


def test_run_predict_text(capsys):
    predict_command.run(predict_args(str(PERSON_DETECT), str(PERSON), "--pixels", "int8"))
    out = capsys.readouterr().out
    assert f"{PERSON}: class 1" in out and "probability 0.9375" in out


def test_our_model_file_at_fp32_and_fp16(tmp_path):
    model = build_model("smallconv", 3, (28, 28, 1), seed=0)
    save_model(tmp_path / "model.ells", model, {"dataset": {"name": "folder", "class_names": ["a", "b", "c"]}})
    rng = np.random.default_rng(0)
    paths = []
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (28, 28), dtype=np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(tmp_path / f"{i}.png")
    fp32 = list(predict_files(load_predictor(tmp_path / "model.ells"), paths))
    fp16 = list(predict_files(load_predictor(tmp_path, "fp16"), paths))      # a run folder stands for model.ells
    for a, b in zip(fp32, fp16):
        assert a["label"] in ("a", "b", "c") and a["class"] == b["class"]
        assert np.allclose(a["scores"], b["scores"], atol=1e-2 * np.abs(a["scores"]).max())
    x = np.stack([np.asarray(Image.open(p), np.float32) / 255 for p in paths])[..., None]
    assert np.allclose(model.forward(x), [r["scores"] for r in fp32])
    with pytest.raises(ConfigError, match="edge-lls quantize"):
        load_predictor(tmp_path / "model.ells", "int8")


def test_bad_input(tmp_path):
    with pytest.raises(DataError, match="not found"):
        list(predict_files(load_predictor(VWW_INT8), [tmp_path / "missing.png"]))
    (tmp_path / "junk.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="unreadable"):
        list(predict_files(load_predictor(VWW_INT8), [tmp_path / "junk.png"]))
    with pytest.raises(FormatError, match="neither"):
        load_predictor(tmp_path / "junk.png")
    with pytest.raises(FormatError, match="not found"):
        load_predictor(tmp_path / "missing.tflite")
    with pytest.raises(ConfigError, match="own precision"):
        load_predictor(VWW_INT8, "fp16")

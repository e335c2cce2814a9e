"""Dataset readers, splits, batching, normalisation and augmentation (edge_lls.data).

Every reader is exercised on small files written into tmp_path; the real MNIST test set in
shared/data/mnist is read once (skipped when shared/ is not beside the repository).
"""
from __future__ import annotations

import gzip
import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import MNIST_DIR, require_shared

from edge_lls.data import DATASET_NAMES, Dataset, Split, load_dataset
from edge_lls.data import stores as stores_module
from edge_lls.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
from edge_lls.data.vww_coco import read_vww_labels
from edge_lls.errors import ConfigError, DataError

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------
# file writers
# --------------------------------------------------------------------------------------
def write_idx(path: Path, array: np.ndarray, magic: int, gz: bool = False) -> Path:
    data = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape) + array.astype(np.uint8).tobytes()
    if gz:
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def idx_pair(folder: Path, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    suffix = ".gz" if gz else ""
    write_idx(folder / f"{split}-images-idx3-ubyte{suffix}", images, IMAGES_MAGIC, gz)
    write_idx(folder / f"{split}-labels-idx1-ubyte{suffix}", labels, LABELS_MAGIC, gz)


def rng_images(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)


def cifar_records(chw: np.ndarray, labels: list[list[int]]) -> bytes:
    """chw (N,3,32,32) uint8; labels per record: [label] or [coarse, fine]."""
    out = bytearray()
    for img, lab in zip(chw, labels):
        out += bytes(lab) + img.tobytes()
    return bytes(out)


def solid(path: Path, size: tuple[int, int], color, mode="RGB", fmt=None) -> Path:
    Image.new(mode, size, color).save(path, format=fmt)
    return path


# --------------------------------------------------------------------------------------
# IDX
# --------------------------------------------------------------------------------------
@pytest.fixture
def idx_dir(tmp_path: Path) -> tuple[Path, dict]:
    train_x, train_y = rng_images((12, 5, 4), 1), np.arange(12) % 10
    test_x, test_y = rng_images((6, 5, 4), 2), np.array([9, 8, 7, 6, 5, 4])
    idx_pair(tmp_path, "train", train_x, train_y, gz=True)
    idx_pair(tmp_path, "t10k", test_x, test_y, gz=False)
    return tmp_path, dict(train_x=train_x, train_y=train_y, test_x=test_x, test_y=test_y)


def test_idx_gz_and_raw_pairs_give_train_and_test(idx_dir):
    folder, ref = idx_dir
    ds = load_dataset("mnist", folder)
    assert isinstance(ds, Dataset) and not ds.test_is_holdout
    assert ds.input_shape == (5, 4, 1) and ds.num_classes == 10
    x, y = ds.train.arrays()
    assert x.shape == (12, 5, 4, 1) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(x[..., 0], ref["train_x"] / np.float32(255))
    np.testing.assert_array_equal(y, ref["train_y"])
    xt, yt = ds.test.arrays()
    np.testing.assert_array_equal(xt[..., 0], ref["test_x"] / np.float32(255))
    np.testing.assert_array_equal(yt, ref["test_y"])


def test_idx_generic_counts_classes_and_fashion_names(idx_dir):
    folder, _ = idx_dir
    assert load_dataset("idx", folder).num_classes == 10  # max label 9 + 1
    assert load_dataset("fashion_mnist", folder).class_names[9] == "Ankle boot"


def test_idx_single_pair_holds_out_last_fraction(tmp_path):
    images, labels = rng_images((10, 3, 3)), np.arange(10) % 10
    idx_pair(tmp_path, "t10k", images, labels, gz=True)
    ds = load_dataset("mnist", tmp_path, val_split=0.3)
    assert ds.test_is_holdout and (len(ds.train), len(ds.test)) == (7, 3)
    np.testing.assert_array_equal(ds.train.labels, labels[:7])
    np.testing.assert_array_equal(ds.test.labels, labels[7:])
    np.testing.assert_array_equal(ds.test.arrays()[0][..., 0], images[7:] / np.float32(255))


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated_file_names_file_and_byte_counts(tmp_path, gz):
    idx_pair(tmp_path, "train", rng_images((4, 3, 3)), np.zeros(4), gz=False)
    path = tmp_path / "train-images-idx3-ubyte"
    data = path.read_bytes()[:-5]
    if gz:
        path.unlink()
        path = tmp_path / "train-images-idx3-ubyte.gz"
        data = gzip.compress(data)
    path.write_bytes(data)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*truncated.*52 bytes, file has 47"):
        load_dataset("mnist", tmp_path)


def test_idx_truncated_gzip_stream(tmp_path):
    idx_pair(tmp_path, "train", rng_images((20, 8, 8)), np.zeros(20), gz=True)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:60])
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz.*gzip"):
        load_dataset("mnist", tmp_path)


def test_idx_wrong_magic(tmp_path):
    idx_pair(tmp_path, "train", rng_images((2, 3, 3)), np.zeros(2), gz=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", rng_images((2, 3, 3)), IMAGES_MAGIC)  # images where labels go
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte.*magic 0x00000803, expected 0x00000801"):
        load_dataset("mnist", tmp_path)


def test_idx_missing_files(tmp_path):
    with pytest.raises(DataError, match="no IDX files"):
        load_dataset("mnist", tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", rng_images((2, 3, 3)), IMAGES_MAGIC)
    with pytest.raises(DataError, match="train-labels-idx1-ubyte"):
        load_dataset("mnist", tmp_path)
    with pytest.raises(DataError, match="nowhere.*not found"):
        load_dataset("mnist", tmp_path / "nowhere")


def test_idx_label_out_of_range_and_count_mismatch(tmp_path):
    idx_pair(tmp_path, "train", rng_images((3, 3, 3)), np.array([1, 10, 2]), gz=False)
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: label 10 at index 1 is outside \[0, 10\)"):
        load_dataset("mnist", tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.array([1, 2]), LABELS_MAGIC)
    with pytest.raises(DataError, match="2 labels but train-images-idx3-ubyte has 3 images"):
        load_dataset("mnist", tmp_path)


def test_idx_fixed_size_rejects_other_input_shape(idx_dir):
    with pytest.raises(DataError, match="5x4x1.*28x28x1"):
        load_dataset("mnist", idx_dir[0], input_shape=(28, 28, 1))


# --------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------
def test_cifar10_batches_chw_to_hwc(tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    chw = rng_images((12, 3, 32, 32), 3)
    for k in range(5):
        recs = cifar_records(chw[2 * k:2 * k + 2], [[k], [9 - k]])
        (folder / f"data_batch_{k + 1}.bin").write_bytes(recs)
    (folder / "test_batch.bin").write_bytes(cifar_records(chw[10:], [[3], [4]]))
    ds = load_dataset("cifar10", tmp_path)  # the parent of the extracted folder works too
    assert (len(ds.train), len(ds.test), ds.input_shape) == (10, 2, (32, 32, 3))
    assert ds.class_names[0] == "airplane"
    x, y = ds.train.arrays()
    np.testing.assert_array_equal(y, [0, 9, 1, 8, 2, 7, 3, 6, 4, 5])
    np.testing.assert_array_equal(x, chw[:10].transpose(0, 2, 3, 1) / np.float32(255))
    assert x[1, 5, 7, 2] == np.float32(chw[1, 2, 5, 7] / np.float32(255))  # channel from its own plane
    np.testing.assert_array_equal(ds.test.labels, [3, 4])


def test_cifar10_bad_inputs(tmp_path):
    rec = cifar_records(rng_images((1, 3, 32, 32)), [[1]])
    (tmp_path / "data_batch_1.bin").write_bytes(rec)
    (tmp_path / "data_batch_3.bin").write_bytes(rec)
    with pytest.raises(DataError, match="data_batch_2.bin: not found"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "data_batch_3.bin").unlink()
    (tmp_path / "test_batch.bin").write_bytes(rec[:-10])
    with pytest.raises(DataError, match="test_batch.bin: 3063 bytes is not a whole number of 3073-byte"):
        load_dataset("cifar10", tmp_path)
    (tmp_path / "test_batch.bin").write_bytes(cifar_records(rng_images((1, 3, 32, 32)), [[10]]))
    with pytest.raises(DataError, match="test_batch.bin: label 10 at index 0"):
        load_dataset("cifar10", tmp_path)


def test_cifar100_uses_fine_label(tmp_path):
    chw = rng_images((3, 3, 32, 32), 4)
    (tmp_path / "train.bin").write_bytes(cifar_records(chw, [[1, 42], [2, 99], [3, 0]]))
    ds = load_dataset("cifar100", tmp_path, val_split=1 / 3)
    assert ds.num_classes == 100 and ds.test_is_holdout
    np.testing.assert_array_equal(ds.train.labels, [42, 99])
    np.testing.assert_array_equal(ds.test.arrays()[0][0], chw[2].transpose(1, 2, 0) / np.float32(255))
    (tmp_path / "test.bin").write_bytes(cifar_records(chw[:1], [[0, 100]]))
    with pytest.raises(DataError, match="test.bin: label 100"):
        load_dataset("cifar100", tmp_path)


# --------------------------------------------------------------------------------------
# Image folders
# --------------------------------------------------------------------------------------
def make_folder(root: Path, per_class: int = 5) -> None:
    """3 classes, one format each, every image a different size."""
    specs = {"bird": ((255, 0, 0), "png"), "cat": ((0, 0, 255), "bmp"), "dog": ((0, 255, 0), "jpg")}
    for c, (name, (color, ext)) in enumerate(specs.items()):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            solid(root / name / f"{i}.{ext}", (10 + i + c, 7 + 2 * i), color)
    (root / "bird" / "notes.txt").write_text("not an image, ignored")


def test_folder_resizes_formats_and_holds_out_per_class(tmp_path):
    make_folder(tmp_path)
    ds = load_dataset("folder", tmp_path, input_shape=(6, 8, 3), val_split=0.2)
    assert ds.class_names == ("bird", "cat", "dog") and ds.num_classes == 3
    assert (len(ds.train), len(ds.test)) == (12, 3)
    np.testing.assert_array_equal(ds.test.labels, [0, 1, 2])  # the last file of each class
    x, y = ds.train.arrays()
    assert x.shape == (12, 6, 8, 3)
    np.testing.assert_array_equal(np.bincount(y), [4, 4, 4])
    np.testing.assert_allclose(x[y == 0].mean(axis=(0, 1, 2)), [1, 0, 0], atol=1e-6)  # PNG: exact
    np.testing.assert_allclose(x[y == 1].mean(axis=(0, 1, 2)), [0, 0, 1], atol=1e-6)  # BMP: exact
    np.testing.assert_allclose(x[y == 2].mean(axis=(0, 1, 2)), [0, 1, 0], atol=0.02)  # JPEG: lossy


def test_folder_grayscale_default_shape_and_train_val_subfolders(tmp_path):
    for split, n in (("train", 3), ("val", 1)):
        for name in ("a", "b"):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                solid(tmp_path / split / name / f"{i}.png", (9, 4), 128 if name == "a" else 255, mode="L")
    ds = load_dataset("folder", tmp_path)
    assert not ds.test_is_holdout and ds.input_shape == (4, 9, 1)  # first image: 9 wide, 4 high, gray
    assert (len(ds.train), len(ds.test)) == (6, 2)
    xt, yt = ds.test.arrays()
    np.testing.assert_array_equal(yt, [0, 1])
    np.testing.assert_array_equal(xt[:, 0, 0, 0], np.array([128, 255], np.float32) / np.float32(255))
    (tmp_path / "val" / "zebra").mkdir()
    with pytest.raises(DataError, match="zebra: class folder not present"):
        load_dataset("folder", tmp_path)


def test_folder_unreadable_and_truncated_images(tmp_path):
    make_folder(tmp_path, per_class=2)
    bad = tmp_path / "cat" / "broken.png"
    bad.write_bytes(b"this is not a png")
    with pytest.raises(DataError, match="broken.png: unreadable image"):
        load_dataset("folder", tmp_path, input_shape=(4, 4, 3))
    bad.unlink()
    # A valid header with missing pixel data is only found when its batch is decoded.
    big = tmp_path / "cat" / "z_truncated.png"
    Image.fromarray(rng_images((64, 64, 3))).save(big)
    big.write_bytes(big.read_bytes()[:200])
    ds = load_dataset("folder", tmp_path, input_shape=(4, 4, 3), val_split=0.5)
    with pytest.raises(DataError, match="z_truncated.png: unreadable image"):
        list(ds.test.batches(2))


def test_folder_empty_and_missing(tmp_path):
    with pytest.raises(DataError, match="no class subfolders"):
        load_dataset("folder", tmp_path)
    (tmp_path / "a").mkdir()
    with pytest.raises(DataError, match="no .png/.jpg/.jpeg/.bmp images"):
        load_dataset("folder", tmp_path)


def test_folder_start_batch_skips_without_decoding(tmp_path, monkeypatch):
    make_folder(tmp_path, per_class=4)
    ds = load_dataset("folder", tmp_path, input_shape=(4, 4, 3))
    calls = []
    real = stores_module.decode_image
    monkeypatch.setattr(stores_module, "decode_image", lambda *a: calls.append(a[0]) or real(*a))
    batches = list(ds.train.batches(3, shuffle=True, seed=1, epoch=0, start_batch=2))
    assert len(batches) == 1 and len(calls) == 3  # 9 train images: only the last batch decoded


# --------------------------------------------------------------------------------------
# Visual Wake Words from COCO
# --------------------------------------------------------------------------------------
def coco_doc(names: list[str]) -> dict:
    """Images are 100x100 (area 10000); the threshold is 0.5 % = 50 px^2."""
    images = [{"id": 10 + i, "file_name": n, "width": 100, "height": 100} for i, n in enumerate(names)]
    anns = [
        {"id": 1, "image_id": 10, "category_id": 1, "bbox": [5, 5, 10, 10], "area": 100},   # 1.0 %: person
        {"id": 2, "image_id": 11, "category_id": 1, "bbox": [5, 5, 5, 5], "area": 25},      # 0.25 %: too small
        {"id": 3, "image_id": 12, "category_id": 18, "bbox": [0, 0, 90, 90], "area": 8100}, # a big dog
        {"id": 4, "image_id": 13, "category_id": 1, "bbox": [0, 0, 10, 8], "area": 40},     # box 0.8 %, mask 0.4 %
        {"id": 5, "image_id": 14, "category_id": 1, "bbox": [0, 0, 10, 5], "area": 50},     # exactly 0.5 %
    ]
    cats = [{"id": 1, "name": "person"}, {"id": 18, "name": "dog"}]
    return {"images": images, "annotations": anns, "categories": cats}


def make_coco(root: Path, split: str, count: int = 5) -> list[str]:
    (root / "annotations").mkdir(exist_ok=True)
    (root / split).mkdir()
    names = [f"{split}_{i}.jpg" for i in range(count)]
    for i, n in enumerate(names):
        solid(root / split / n, (100, 100), (20 * i, 100, 200))
    (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(coco_doc(names)))
    return names


def test_vww_coco_labels_splits_and_resize(tmp_path):
    make_coco(tmp_path, "train2017")
    make_coco(tmp_path, "val2017")
    ds = load_dataset("vww-coco", tmp_path, input_shape=(16, 12, 3))
    assert not ds.test_is_holdout and ds.class_names == ("no-person", "person")
    np.testing.assert_array_equal(ds.train.labels, [1, 0, 0, 0, 0])  # pyvww: mask area, strictly > 0.5 %
    x, _ = ds.test.arrays()
    assert x.shape == (5, 16, 12, 3)
    np.testing.assert_allclose(x[3, 0, 0], np.array([60, 100, 200]) / 255, atol=0.02)


def test_vww_bbox_rule_and_single_json_holdout(tmp_path):
    make_coco(tmp_path, "val2014")
    json_path = tmp_path / "annotations" / "instances_val2014.json"
    _, labels = read_vww_labels(json_path, area_rule="bbox")  # bbox w*h, >= 0.5 %
    np.testing.assert_array_equal(labels, [1, 0, 0, 1, 1])
    ds = load_dataset("vww-coco", json_path, val_split=0.4)
    assert ds.input_shape == (96, 96, 3) and (len(ds.train), len(ds.test)) == (3, 2)


def test_vww_bad_annotations(tmp_path):
    names = make_coco(tmp_path, "train2017")
    ann = tmp_path / "annotations" / "instances_train2017.json"
    ann.write_text('{"images": [')
    with pytest.raises(DataError, match="instances_train2017.json: malformed JSON at line 1"):
        load_dataset("vww-coco", tmp_path)
    ann.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match="field 'images' missing"):
        load_dataset("vww-coco", tmp_path)
    doc = coco_doc(names)
    del doc["images"][2]["width"]
    ann.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"images\[2\] field 'width'"):
        load_dataset("vww-coco", tmp_path)
    doc = coco_doc(names)
    doc["annotations"][1]["image_id"] = [11]
    ann.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"annotations\[1\] image_id \[11\] is not in images"):
        load_dataset("vww-coco", tmp_path)
    doc = coco_doc(names)
    doc["annotations"][0]["bbox"] = [1, 2]
    ann.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=r"annotations\[0\] field 'bbox'"):
        load_dataset("vww-coco", tmp_path)
    (tmp_path / "train2017" / names[4]).unlink()
    ann.write_text(json.dumps(coco_doc(names)))
    with pytest.raises(DataError, match="train2017_4.jpg' not found"):
        load_dataset("vww-coco", tmp_path)


# --------------------------------------------------------------------------------------
# MLPerf Tiny / EEMBC perf format
# --------------------------------------------------------------------------------------
def make_tiny(root: Path, labels=(1, 1, 0, 0, 1, 0)) -> np.ndarray:
    pixels = rng_images((len(labels), 4, 4, 3), 5)
    rows = []
    for i, lab in enumerate(labels):
        (root / f"img_{i}.bin").write_bytes(pixels[i].tobytes())
        rows.append(f"  img_{i}.bin ,  2 , {lab}  ")
    rows.insert(2, "")
    (root / "y_labels.csv").write_text("\n".join(rows) + "\n")
    return pixels


def test_mlperf_tiny_reads_bins_and_labels(tmp_path):
    pixels = make_tiny(tmp_path)
    ds = load_dataset("mlperf-tiny", tmp_path, val_split=1 / 3)
    assert ds.input_shape == (4, 4, 3) and ds.num_classes == 2  # shape inferred from 48 bytes
    # the hold-out is the last third of each class (rows 4 and 5), kept in file order
    np.testing.assert_array_equal(ds.test.labels, [1, 0])
    x, y = ds.train.arrays()
    np.testing.assert_array_equal(y, [1, 1, 0, 0])
    np.testing.assert_array_equal(x, pixels[:4] / np.float32(255))
    assert load_dataset("mlperf-tiny", tmp_path, input_shape=(4, 4, 3)).input_shape == (4, 4, 3)


@pytest.mark.parametrize("row, message", [
    ("img_0.bin, 2", r"y_labels.csv line 8: expected 'file name, number of classes, label'"),
    ("img_0.bin, 2, x", r"y_labels.csv line 8: label 'x' is not an integer"),
    ("img_0.bin, 2, 2", r"y_labels.csv line 8: label 2 for img_0.bin is outside \[0, 2\)"),
    ("gone.bin, 2, 0", r"gone.bin: listed in y_labels.csv but not found"),
    ("img_0.bin, 3, 0", r"rows disagree on the number of classes"),
    ("img_0.bin, 2, 1", r"y_labels.csv: img_0.bin is listed more than once"),
])
def test_mlperf_tiny_bad_rows(tmp_path, row, message):
    make_tiny(tmp_path)
    with open(tmp_path / "y_labels.csv", "a") as f:
        f.write(row + "\n")
    with pytest.raises(DataError, match=message):
        load_dataset("mlperf-tiny", tmp_path)


def test_mlperf_tiny_wrong_byte_count_and_missing_csv(tmp_path):
    make_tiny(tmp_path)
    (tmp_path / "img_3.bin").write_bytes(b"\0" * 47)
    with pytest.raises(DataError, match="img_3.bin: 47 bytes, expected 48 for a 4x4x3"):
        load_dataset("mlperf-tiny", tmp_path)
    (tmp_path / "img_3.bin").write_bytes(b"\0" * 48)
    (tmp_path / "extra.bin").write_bytes(b"\0" * 48)
    with pytest.raises(DataError, match="extra.bin: has no row in y_labels.csv"):
        load_dataset("mlperf-tiny", tmp_path)
    (tmp_path / "y_labels.csv").unlink()
    with pytest.raises(DataError, match="y_labels.csv: not found"):
        load_dataset("mlperf-tiny", tmp_path)


# --------------------------------------------------------------------------------------
# NPZ
# --------------------------------------------------------------------------------------
def test_npz_uint8_hw_and_float_test(tmp_path):
    x = rng_images((5, 3, 2))
    x_test = np.random.default_rng(0).random((2, 3, 2, 1)).astype(np.float32)
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=np.array([0, 1, 2, 0, 1]), x_test=x_test, y_test=np.array([2, 2]))
    ds = load_dataset("npz", path)
    assert ds.input_shape == (3, 2, 1) and ds.num_classes == 3 and not ds.test_is_holdout
    np.testing.assert_array_equal(ds.train.arrays()[0][..., 0], x / np.float32(255))
    np.testing.assert_array_equal(ds.test.arrays()[0], x_test)  # float pixels used as they are


def test_npz_bad_inputs(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=rng_images((2, 3, 3)))
    with pytest.raises(DataError, match="d.npz: missing array 'y'"):
        load_dataset("npz", path)
    np.savez(path, x=np.array([None, None], dtype=object), y=np.array([0, 1]))
    with pytest.raises(DataError, match="d.npz: array 'x' cannot be loaded without pickle"):
        load_dataset("npz", path)
    np.savez(path, x=rng_images((2, 3, 3)), y=np.array([0, 2]), class_names=np.array(["a", "b"]))
    with pytest.raises(DataError, match=r"d.npz 'y': label 2 at index 1 is outside \[0, 2\)"):
        load_dataset("npz", path)
    np.savez(path, x=rng_images((2, 3, 3)), y=np.array([0, 1, 1]))
    with pytest.raises(DataError, match=r"'y' must be \(2,\)"):
        load_dataset("npz", path)
    path.write_bytes(b"PK garbage")
    with pytest.raises(DataError, match="d.npz: not a readable .npz"):
        load_dataset("npz", path)
    with pytest.raises(DataError, match="missing.npz: NPZ file not found"):
        load_dataset("npz", tmp_path / "missing.npz")


# --------------------------------------------------------------------------------------
# Built-in digits, registry and option validation
# --------------------------------------------------------------------------------------
def test_digits_builtin():
    ds = load_dataset("digits")
    assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert (len(ds.train), len(ds.test)) == (1438, 359)  # last 20 % of 1797, rounded
    x, y = ds.test.arrays()
    assert x.min() == 0.0 and x.max() == 1.0 and set(np.unique(y)) == set(range(10))


def test_registry_rejects_bad_names_and_options(tmp_path):
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'.*mnist, fashion-mnist, idx, cifar10"):
        load_dataset("imagenet", tmp_path)
    assert set(DATASET_NAMES) == {"mnist", "fashion-mnist", "idx", "cifar10", "cifar100", "folder",
                                  "vww-coco", "mlperf-tiny", "npz", "digits"}
    for bad in (0, 1, 1.5, -0.1, "x"):
        with pytest.raises(ConfigError, match="val_split"):
            load_dataset("digits", val_split=bad)
    with pytest.raises(ConfigError, match="needs a path"):
        load_dataset("mnist")
    with pytest.raises(ConfigError, match="input_shape"):
        load_dataset("digits", input_shape=(8, 8))
    with pytest.raises(ConfigError, match="unknown augment option.*flip"):
        load_dataset("digits", augment={"flip": True})
    with pytest.raises(ConfigError, match="normalize"):
        load_dataset("digits", normalize="imagenet")
    with pytest.raises(ConfigError, match="std"):
        load_dataset("digits", normalize=((0.5,), (0.0,)))


# --------------------------------------------------------------------------------------
# Batching: determinism, resume, augmentation, normalisation
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_dataset("digits", seed=3)


def as_list(batches):
    return [(x.copy(), y.copy()) for x, y in batches]


def test_shuffle_is_a_function_of_seed_and_epoch(digits):
    train = digits.train
    first = as_list(train.batches(100, shuffle=True, seed=7, epoch=2))
    again = as_list(train.batches(100, shuffle=True, seed=7, epoch=2))
    assert len(first) == train.num_batches(100) == 15
    for (x1, y1), (x2, y2) in zip(first, again):
        assert x1.tobytes() == x2.tobytes() and y1.tobytes() == y2.tobytes()
    seen = np.concatenate([y for _, y in first])
    np.testing.assert_array_equal(np.sort(seen), np.sort(train.labels))  # each sample once
    other_epoch = np.concatenate([y for _, y in train.batches(100, shuffle=True, seed=7, epoch=3)])
    assert not np.array_equal(seen, other_epoch)
    default_seed = np.concatenate([y for _, y in train.batches(100, shuffle=True, epoch=2)])
    seed3 = np.concatenate([y for _, y in train.batches(100, shuffle=True, seed=3, epoch=2)])
    np.testing.assert_array_equal(default_seed, seed3)  # load_dataset(seed=3) is the default
    in_order = np.concatenate([y for _, y in train.batches(100)])
    np.testing.assert_array_equal(in_order, train.labels)


def test_start_batch_resumes_mid_epoch_and_drop_last(digits):
    full = as_list(digits.train.batches(64, shuffle=True, seed=1, epoch=5))
    resumed = as_list(digits.train.batches(64, shuffle=True, seed=1, epoch=5, start_batch=9))
    assert len(resumed) == len(full) - 9
    for (x1, y1), (x2, y2) in zip(full[9:], resumed):
        assert x1.tobytes() == x2.tobytes() and np.array_equal(y1, y2)
    dropped = list(digits.train.batches(64, drop_last=True))
    assert len(dropped) == 1438 // 64 and all(len(y) == 64 for _, y in dropped)
    assert len(full[-1][1]) == 1438 % 64
    assert list(digits.train.batches(64, start_batch=len(full))) == []
    with pytest.raises(ConfigError, match="start_batch"):
        digits.train.batches(64, start_batch=len(full) + 1)
    with pytest.raises(ConfigError, match="batch_size"):
        digits.train.batches(0)


def crops_of(image: np.ndarray, pad: int) -> list[np.ndarray]:
    """Every zero-padded crop and its mirror image: the outputs CropFlip may produce."""
    h, w, _ = image.shape
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = padded[dy:dy + h, dx:dx + w]
            out += [crop, crop[:, ::-1]]
    return out


def test_augmentation_is_deterministic_train_only_and_a_crop_flip(digits):
    ds = load_dataset("digits", augment={"crop_padding": 2, "hflip": True})
    plain_x = digits.train.arrays()[0]
    runs = [as_list(ds.train.batches(50, shuffle=True, seed=4, epoch=1)) for _ in range(2)]
    for (x1, _), (x2, _) in zip(*runs):
        assert x1.tobytes() == x2.tobytes()
    resumed = as_list(ds.train.batches(50, shuffle=True, seed=4, epoch=1, start_batch=3))
    assert resumed[0][0].tobytes() == runs[0][3][0].tobytes()  # same augmentation after resume
    other = as_list(ds.train.batches(50, shuffle=True, seed=4, epoch=2))
    assert any(a[0].tobytes() != b[0].tobytes() for a, b in zip(runs[0], other))

    order = ds.train.batch_order(shuffle=True, seed=4, epoch=1)
    x, _ = runs[0][0]
    changed = 0
    for row in range(len(x)):
        source = plain_x[order[row]]
        assert any(np.array_equal(x[row], c) for c in crops_of(source, 2))
        changed += not np.array_equal(x[row], source)
    assert changed > len(x) // 2
    np.testing.assert_array_equal(next(ds.test.batches(359))[0], ds.test.arrays()[0])  # test untouched
    np.testing.assert_array_equal(ds.test.arrays()[0], digits.test.arrays()[0])


def test_normalize_explicit_and_from_training_split(tmp_path):
    x = rng_images((40, 4, 4, 3), 6)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 4)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 2.0)
    ds = load_dataset("npz", tmp_path / "d.npz", normalize=(mean, std))
    expected = (x[:32] / np.float32(255) - np.float32(mean)) / np.float32(std)
    np.testing.assert_allclose(ds.train.arrays()[0], expected, rtol=1e-6, atol=1e-6)
    assert ds.normalization[0] == pytest.approx(mean) and ds.normalization[1] == pytest.approx(std)
    stats = load_dataset("npz", tmp_path / "d.npz", normalize="dataset")
    xt = stats.train.arrays()[0]
    np.testing.assert_allclose(xt.mean(axis=(0, 1, 2)), 0, atol=1e-5)
    np.testing.assert_allclose(xt.std(axis=(0, 1, 2)), 1, atol=1e-4)
    raw_test = x[32:] / np.float32(255)
    np.testing.assert_allclose(stats.test.arrays()[0],
                               (raw_test - np.float32(stats.normalization[0])) / np.float32(stats.normalization[1]),
                               rtol=1e-5, atol=1e-5)


def test_batches_are_float32_views_of_uint8_storage(digits):
    x, y = next(digits.train.batches(32))
    assert x.dtype == np.float32 and x.shape == (32, 8, 8, 1) and y.dtype == np.int64
    assert isinstance(digits.train, Split) and repr(digits.train) == "Split(1438 images of 8x8x1)"
    store = digits.train._store  # the raw array stays in its source dtype
    assert store._pixels.dtype == np.uint8


def test_no_pickle_anywhere_in_the_data_package():
    for source in (REPO / "edge_lls" / "data").glob("*.py"):
        text = source.read_text()
        assert "import pickle" not in text and "allow_pickle=True" not in text, source


# --------------------------------------------------------------------------------------
# The real MNIST test set in shared/
# --------------------------------------------------------------------------------------
def shared_mnist() -> Path:
    return require_shared(MNIST_DIR)


def test_real_mnist_8000_train_2000_test():
    folder = shared_mnist()
    ds = load_dataset("mnist", folder, val_split=0.2)
    assert (len(ds.train), len(ds.test), ds.input_shape, ds.num_classes) == (8000, 2000, (28, 28, 1), 10)
    assert ds.test_is_holdout
    assert ds.describe() == "mnist: 8000 train / 2000 held out, 28x28x1, 10 classes"
    np.testing.assert_array_equal(ds.train.labels[:10], [7, 2, 1, 0, 4, 1, 4, 9, 5, 9])  # MNIST test set start
    all_labels = read_idx(folder / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC)
    np.testing.assert_array_equal(ds.test.labels, all_labels[8000:])  # the last 2,000, in file order
    x, y = ds.test.arrays()
    assert x.min() == 0.0 and x.max() == 1.0
    counts = np.bincount(y, minlength=10)
    assert counts.sum() == 2000 and counts.min() > 120 and counts.max() < 300  # ~200 each
    assert 0.10 < float(x.mean()) < 0.16  # MNIST mean intensity is about 0.13

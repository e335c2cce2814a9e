"""Visual Wake Words labels computed from a local COCO copy (instances_*.json + images).

Label 1 (person) when some person annotation covers more than 0.5 % of the image, else 0.
Rule "pyvww" (default) is what pyvww's create_visualwakewords_annotations.py and TF-slim's
build_visualwakewords_data do: the annotation's "area" field (COCO's segmentation area)
divided by width*height, strictly greater than 0.005 (bbox w*h when "area" is absent).
Rule "bbox" uses bbox w*h and >= 0.005.
"""
from __future__ import annotations

import json
import re
from numbers import Real
from pathlib import Path

import numpy as np

from edge_lls.errors import ConfigError, DataError
from edge_lls.data.checks import Shape3
from edge_lls.data.files import read_bytes
from edge_lls.data.source import Source
from edge_lls.data.split import Split
from edge_lls.data.stores import FileStore

PERSON_AREA_FRACTION = 0.005
AREA_RULES = ("pyvww", "bbox")
DEFAULT_SHAPE = (96, 96, 3)  # the MLPerf Tiny VWW model's input
CLASS_NAMES = ("no-person", "person")
_COCO_NAME = re.compile(r"COCO_([A-Za-z]+\d*)_\d+")  # COCO_val2014_000000000042.jpg -> val2014


def _is_number(value: object) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def _annotation_files(path: Path) -> dict[str, Path]:
    """{"train": json} or {"train": json, "test": json}."""
    if path.is_file():
        return {"train": path}
    if not path.is_dir():
        raise DataError(f"{path}: COCO folder or instances_*.json not found")
    found = sorted(path.glob("instances_*.json")) + sorted((path / "annotations").glob("instances_*.json"))
    if not found:
        raise DataError(f"{path}: no instances_*.json here or in {path / 'annotations'}")
    if len(found) == 1:
        return {"train": found[0]}
    train = [f for f in found if "train" in f.stem]
    test = [f for f in found if "val" in f.stem or "test" in f.stem]
    if len(train) != 1 or len(test) > 1:
        names = ", ".join(f.name for f in found)
        raise DataError(f"{path}: cannot tell train from test among {names}; pass one instances_*.json as the path")
    return {"train": train[0], **({"test": test[0]} if test else {})}


def _image_dirs(json_path: Path) -> list[Path]:
    """Folders that may hold this annotation file's images, most specific first."""
    split = json_path.stem.removeprefix("instances_")
    json_dir = json_path.parent
    root = json_dir.parent if json_dir.name == "annotations" else json_dir
    candidates = [root / split, root / "images" / split, json_dir / split, root / "all2014",
                  root / "images", root, json_dir]
    unique = list(dict.fromkeys(candidates))
    return [d for d in unique if d.is_dir()]


def _resolve(file_name: str, dirs: list[Path], json_path: Path, root_hint: Path) -> str:
    m = _COCO_NAME.match(Path(file_name).name)
    search = ([root_hint / m.group(1)] if m else []) + dirs
    for folder in search:
        candidate = folder / file_name
        if candidate.is_file():
            return str(candidate)
    where = ", ".join(str(d) for d in dict.fromkeys(search)) or "(no image folder found)"
    raise DataError(f"{json_path}: image file {file_name!r} not found in {where}")


def _load_json(json_path: Path) -> dict:
    try:
        doc = json.loads(read_bytes(json_path))
    except json.JSONDecodeError as e:
        raise DataError(f"{json_path}: malformed JSON at line {e.lineno} column {e.colno}: {e.msg}") from None
    except UnicodeDecodeError:
        raise DataError(f"{json_path}: not UTF-8 text") from None
    if not isinstance(doc, dict):
        raise DataError(f"{json_path}: top level must be a JSON object with images and annotations")
    for field in ("images", "annotations"):
        if not isinstance(doc.get(field), list):
            raise DataError(f"{json_path}: field '{field}' missing or not a list")
    return doc


def _person_category(doc: dict, json_path: Path) -> int:
    categories = doc.get("categories", [])
    if not isinstance(categories, list):
        raise DataError(f"{json_path}: field 'categories' is not a list")
    for i, cat in enumerate(categories):
        if isinstance(cat, dict) and cat.get("name") == "person":
            if not isinstance(cat.get("id"), int):
                raise DataError(f"{json_path}: categories[{i}] (person) field 'id' missing or not an integer")
            return cat["id"]
    return 1  # COCO's id for person


def _image_records(doc: dict, json_path: Path) -> tuple[list[str], list[int], dict[int, float]]:
    """-> file names, ids in file order, image area (width*height) by id."""
    names, ids, areas = [], [], {}
    for i, rec in enumerate(doc["images"]):
        if not isinstance(rec, dict):
            raise DataError(f"{json_path}: images[{i}] is not an object")
        if not isinstance(rec.get("id"), int) or isinstance(rec.get("id"), bool):
            raise DataError(f"{json_path}: images[{i}] field 'id' missing or not an integer")
        if not isinstance(rec.get("file_name"), str) or not rec["file_name"]:
            raise DataError(f"{json_path}: images[{i}] field 'file_name' missing or not a string")
        for field in ("width", "height"):
            if not _is_number(rec.get(field)) or rec[field] <= 0:
                raise DataError(f"{json_path}: images[{i}] field '{field}' missing or not a positive number")
        if rec["id"] in areas:
            raise DataError(f"{json_path}: images[{i}] repeats image id {rec['id']}")
        names.append(rec["file_name"])
        ids.append(rec["id"])
        areas[rec["id"]] = float(rec["width"]) * float(rec["height"])
    return names, ids, areas


def _person_images(doc: dict, json_path: Path, areas: dict[int, float], area_rule: str) -> set[int]:
    """Ids of images with at least one person annotation above the area threshold."""
    person = _person_category(doc, json_path)
    positive: set[int] = set()
    for j, ann in enumerate(doc["annotations"]):
        if not isinstance(ann, dict):
            raise DataError(f"{json_path}: annotations[{j}] is not an object")
        if ann.get("category_id") != person:
            continue
        image_id = ann.get("image_id")
        if not isinstance(image_id, int) or image_id not in areas:
            raise DataError(f"{json_path}: annotations[{j}] image_id {image_id!r} is not in images")
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise DataError(f"{json_path}: annotations[{j}] field 'bbox' must be [x, y, width, height] numbers")
        box_area = float(bbox[2]) * float(bbox[3])
        if area_rule == "pyvww":
            area = ann.get("area", box_area)
            if not _is_number(area):
                raise DataError(f"{json_path}: annotations[{j}] field 'area' is not a number")
            if area / areas[image_id] > PERSON_AREA_FRACTION:
                positive.add(image_id)
        elif box_area / areas[image_id] >= PERSON_AREA_FRACTION:
            positive.add(image_id)
    return positive


def read_vww_labels(json_path: Path, area_rule: str = "pyvww") -> tuple[list[str], np.ndarray]:
    """-> resolved image paths, labels (N,) int64 in the JSON's image order."""
    if area_rule not in AREA_RULES:
        raise ConfigError(f"unknown VWW area rule {area_rule!r}; valid: {', '.join(AREA_RULES)}")
    doc = _load_json(json_path)
    names, ids, areas = _image_records(doc, json_path)
    positive = _person_images(doc, json_path, areas, area_rule)
    del doc  # COCO train JSON is hundreds of MB as Python objects; keep only names and labels
    dirs = _image_dirs(json_path)
    root = json_path.parent.parent if json_path.parent.name == "annotations" else json_path.parent
    paths = [_resolve(name, dirs, json_path, root) for name in names]
    labels = np.fromiter((1 if i in positive else 0 for i in ids), dtype=np.int64, count=len(ids))
    if not paths:
        raise DataError(f"{json_path}: field 'images' is empty")
    return paths, labels


def read_vww_coco(path: Path, input_shape: Shape3 | None, *, area_rule: str = "pyvww") -> Source:
    shape = input_shape or DEFAULT_SHAPE
    files = _annotation_files(path)
    splits = {}
    for role, json_path in files.items():
        paths, labels = read_vww_labels(json_path, area_rule)
        splits[role] = Split(FileStore(paths, shape), labels)
    return Source(train=splits["train"], test=splits.get("test"), num_classes=2,
                  class_names=CLASS_NAMES, input_shape=shape, where=str(path))

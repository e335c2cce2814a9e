"""`edge-lls info`: architecture, rule, precision, sizes and training memory of a model; for
the firmware's model image (`export --format blob`), its header, tensors, ops and tail."""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError, FormatError
from ..formats.sniff import is_image, model_path
from .output import EXIT_OK, print_json, shape_text


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="a model file (.ells), a run folder, an ONNX model, a model image (.bin), "
                        "or a zoo name")
    p.add_argument("--rule", metavar="NAME",
                   help="rule for the training-memory estimate (default: the file's, else lls)")
    p.add_argument("--batch-size", metavar="N", type=int, default=128,
                   help="batch for the memory estimate (default 128)")
    p.add_argument("--width", metavar="W", type=float, help="MobileNetV1 width for a zoo name (default 0.25)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")


def _load_for_info(text: str, width: float | None):
    """-> (model, header or None, file size or None) for a file, run folder or zoo name."""
    from ..formats.model_file import load_model, read_header
    from ..models import build_model, model_names
    from ..formats.onnx_import import load_onnx
    path = model_path(text)
    if path.is_file() and _sniffed(path) == "onnx":
        model, _ = load_onnx(path)                 # an imported model: no training facts
        return model, None, path.stat().st_size
    if path.exists():
        model, header = load_model(path)
        _check_facts(header, path)
        return model, header, read_header(path)["file_bytes"]
    if text in model_names():
        options = {"width": width} if width is not None and text == "mobilenetv1" else {}
        return build_model(text, **options), None, None
    raise ConfigError(f"{text}: neither a model file, a run folder, nor a zoo model "
                      f"({', '.join(model_names())})")


def _sniffed(path: Path) -> str | None:
    """The file's kind, or None when it is none we know: load_model then says what is wrong."""
    from ..formats.sniff import model_kind
    try:
        return model_kind(path)
    except FormatError:
        return None


def _check_facts(header: dict, path: Path) -> None:
    """The training facts info prints have the types it prints them as (the header is the
    file's: a corrupt one is named, not a traceback)."""
    from ..rules import RULES
    rule = header.get("rule")
    if rule and not (isinstance(rule, dict) and isinstance(rule.get("rule"), str) and rule["rule"] in RULES):
        raise FormatError(f"{path}: header field 'rule' is {rule!r:.80}, expected an object whose 'rule' is one "
                          f"of {', '.join(RULES)}")
    if "dataset" in header and not isinstance(header["dataset"], dict):
        raise FormatError(f"{path}: header field 'dataset' is {header['dataset']!r:.80}, expected an object")
    accuracy = header.get("eval_accuracy")
    if accuracy is not None and (isinstance(accuracy, bool) or not isinstance(accuracy, (int, float))):
        raise FormatError(f"{path}: header field 'eval_accuracy' is {accuracy!r:.80}, expected a number")


def image_info(path: Path) -> dict:
    """A model image's size and its description, one line per header, tensor, op and array
    (blob.describe_image, what the firmware's el_model_dump prints)."""
    from ..formats.blob import describe_image
    data = path.read_bytes()
    return {"file": str(path), "kind": "model image", "file_bytes": len(data),
            "description": describe_image(data, str(path)).splitlines()}


def model_info(text: str, rule: str | None = None, batch_size: int = 128, width: float | None = None) -> dict:
    from ..trainer import Trainer
    from ..training_run import training_footprint
    if isinstance(batch_size, bool) or batch_size < 2:
        raise ConfigError(f"--batch-size must be an integer >= 2, got {batch_size}")
    model, header, file_bytes = _load_for_info(text, width)
    header = header or {}
    rule_config = header.get("rule") or {"rule": rule or "lls"}
    rule_name = rule or rule_config.get("rule", "lls")
    blocks, shape = [], (1, *model.input_shape)
    for block in model.blocks:
        _, a_shape, h_shape = block.shapes(shape)
        blocks.append({"name": block.name, "type": block.spec["type"], "output": list(a_shape[1:]),
                       "passes_on": list(h_shape[1:]), "pool_size": block.pool_size,
                       "params": sum(p.value.size for p in block.params)})
        shape = h_shape
    footprint = training_footprint(Trainer(model, rule=rule_name), batch_size)
    return {"model": model.name, "file": str(model_path(text)) if file_bytes is not None else None,
            "file_bytes": file_bytes, "input_shape": list(model.input_shape),
            "num_classes": model.num_classes,
            "rule": rule_config if header else None, "precision": header.get("precision", "fp32"),
            "params": model.num_params(), "weights_bytes": model.num_params() * 4,
            "blocks": blocks, "classifier_params": sum(p.value.size for p in model.classifier.params),
            "trained": {k: header[k] for k in ("dataset", "epochs", "eval_accuracy", "optimizer", "train_precision")
                        if k in header},
            "training_memory": {"rule": rule_name, "batch_size": batch_size, "bytes": footprint}}


def run(args: argparse.Namespace) -> int:
    from ..devices import format_bytes
    path = model_path(args.model)
    if path.is_file() and is_image(path):
        info = image_info(path)
        if args.json:
            print_json(info)
        else:
            print(f"model image  {info['file']}, {format_bytes(info['file_bytes'])}")
            print("\n".join(info["description"]))
        return EXIT_OK
    info = model_info(args.model, args.rule, args.batch_size, args.width)
    if args.json:
        print_json(info)
        return EXIT_OK
    rule = info["rule"]
    options = ", ".join(f"{k} {v}" for k, v in (rule or {}).items() if k != "rule" and v is not None)
    rule_text = f"{rule['rule']} ({options})" if rule else "none recorded (a zoo spec or an imported ONNX model)"
    print(f"model      {info['model']}" + (f"  ({info['file']}, {format_bytes(info['file_bytes'])})"
                                            if info["file"] else ""))
    print(f"input      {shape_text(info['input_shape'])} (H x W x C), {info['num_classes']} classes")
    print(f"rule       {rule_text}")
    print(f"precision  {info['precision']}")
    print(f"params     {info['params']:,} ({format_bytes(info['weights_bytes'])} of fp32 weights)")
    trained = info["trained"]
    if trained:
        ds = trained.get("dataset", {})
        mixed = " (fp16 activations)" if trained.get("train_precision") == "fp16" else ""
        print(f"trained    {trained.get('epochs')} epochs on {ds.get('name')}, {trained.get('optimizer')}{mixed}, "
              f"eval accuracy {trained.get('eval_accuracy', float('nan')):.4f}")
    print(f"\n{'block':<8}{'type':<7}{'output':>12}{'passes on':>12}{'LLS pool':>10}{'params':>12}")
    for b in info["blocks"]:
        print(f"{b['name']:<8}{b['type']:<7}{shape_text(b['output']):>12}{shape_text(b['passes_on']):>12}"
              f"{b['pool_size']:>10}{b['params']:>12,}")
    print(f"{'classifier':<15}{'':>12}{info['num_classes']:>12}{'':>10}{info['classifier_params']:>12,}")
    mem = info["training_memory"]
    parts = ", ".join(f"{k} {format_bytes(v)}" for k, v in mem["bytes"].items())
    print(f"\ntraining memory ({mem['rule']}, batch {mem['batch_size']}): "
          f"{format_bytes(sum(mem['bytes'].values()))} = {parts}")
    return EXIT_OK

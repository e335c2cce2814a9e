"""Accuracy of the precision paths (the numbers in docs/int8.md).

    .venv/bin/python tools/bench_precision.py ptq        # SmallConv on MNIST: fp32 vs fp16 vs int8 PTQ
    .venv/bin/python tools/bench_precision.py finetune   # vww_96_int8 fine-tuned on MNIST at 96x96x3
    .venv/bin/python tools/bench_precision.py fp16       # fp16 training and inference (docs/fp16.md)
    .venv/bin/python tools/bench_precision.py all

Data: shared/data/mnist (the 10k MNIST test set: first 8k train, last 2k held out) and
shared/models/vww, read in place.  Fine-tuning writes MNIST as 28x28 PNG files into a
temporary image folder (train/ and test/, one subfolder per digit) and goes through the same
path as `edge-lls train --backbone`: the folder reader resizes them to 96x96 RGB.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"
MNIST_DIR = SHARED / "data" / "mnist"
VWW_INT8 = SHARED / "models" / "vww" / "vww_96_int8.tflite"


def train_smallconv(epochs: int, seed: int = 0):
    from edge_lls.data import load_dataset
    from edge_lls.models import build_model
    from edge_lls.trainer import Trainer
    data = load_dataset("mnist", MNIST_DIR, val_split=0.2, seed=seed)
    model = build_model("smallconv", 10, (28, 28, 1), seed=seed)
    trainer = Trainer(model, rule="lls", optimizer="adamw-sf", lr=5e-3, temperature=0.5, seed=seed)
    for epoch in range(epochs):
        for x, y in data.train.batches(128, shuffle=True, epoch=epoch):
            trainer.step(x, y)
    return data, model, trainer


def bench_ptq(args) -> dict:
    from edge_lls.fp16 import Fp16Model
    from edge_lls.program.ptq import calibration_sample, quantize_model
    started = time.perf_counter()
    data, model, trainer = train_smallconv(args.epochs)
    train_seconds = time.perf_counter() - started
    x_test, y_test = data.test.arrays()
    results = []
    with trainer.averaged_weights(data.train.batches(128, shuffle=True, epoch=args.epochs)):
        logits32 = np.concatenate([model.forward(x_test[i:i + 256]).copy() for i in range(0, len(x_test), 256)])
        half = Fp16Model(model)
        logits16 = np.concatenate([half.forward(x_test[i:i + 256]) for i in range(0, len(x_test), 256)])
        for images in args.calibration:
            q = quantize_model(model, calibration_sample(data.train, images, seed=0))
            logits8 = q.outputs(x_test)
            results.append({"calibration_images": images, "int8_accuracy": float((logits8.argmax(1) == y_test).mean()),
                            "int8_argmax_agreement": float((logits8.argmax(1) == logits32.argmax(1)).mean()),
                            "int8_max_abs_logit_error": float(np.abs(logits8 - logits32).max()),
                            "int8_mean_abs_logit_error": float(np.abs(logits8 - logits32).mean()),
                            "int8_error_per_sample_scale_p50_p99_max": [
                                float(v) for v in np.percentile(np.abs(logits8 - logits32).max(axis=1)
                                                                / np.abs(logits32).max(axis=1), [50, 99, 100])]})
    scale = np.abs(logits32).max(axis=1)
    return {"task": "ptq", "model": "smallconv", "epochs": args.epochs, "train_seconds": round(train_seconds, 1),
            "max_abs_logit": float(np.abs(logits32).max()),
            "fp32_accuracy": float((logits32.argmax(1) == y_test).mean()),
            "fp16_accuracy": float((logits16.argmax(1) == y_test).mean()),
            "fp16_argmax_agreement": float((logits16.argmax(1) == logits32.argmax(1)).mean()),
            "fp16_max_abs_logit_error": float(np.abs(logits16 - logits32).max()),
            "fp16_max_error_per_sample_scale": float((np.abs(logits16 - logits32).max(axis=1) / scale).max()),
            "int8": results}


def mnist_accuracy(rule: str, precision: str, epochs: int) -> float:
    """SmallConv on MNIST 8k/2k as tests/test_training.py trains it, at a training precision."""
    from edge_lls.data import load_dataset
    from edge_lls.models import build_model
    from edge_lls.trainer import Trainer
    data = load_dataset("mnist", MNIST_DIR, val_split=0.2)
    trainer = Trainer(build_model("smallconv", 10, (28, 28, 1), seed=0), rule=rule, optimizer="adamw-sf", lr=5e-3,
                      temperature=0.5, seed=0, precision=precision)
    for epoch in range(epochs):
        for x, y in data.train.batches(128, shuffle=True, seed=0, epoch=epoch):
            trainer.step(x, y)
    x_test, y_test = data.test.arrays()
    return trainer.evaluate(x_test, y_test, refresh=data.train.batches(128, shuffle=True, seed=0, epoch=epochs))


def gradient_cosines(rule: str, batch: int) -> dict:
    """One step of MobileNetV1-0.25 (96x96x3, 4 classes) from initialisation at fp32 and at
    fp16: the smallest per-tensor cosine between the two steps' gradients, over batch-norm
    gammas and over all tensors (biases before batch norm, whose true gradient is zero,
    left out)."""
    from edge_lls.models import build_model
    from edge_lls.trainer import Trainer
    rng = np.random.default_rng(1234)
    x = rng.random((batch, 96, 96, 3), dtype=np.float32)
    y = np.arange(batch) % 4
    grads = []
    for precision in ("fp32", "fp16"):
        trainer = Trainer(build_model("mobilenetv1", 4, (96, 96, 3), seed=0), rule=rule, optimizer="sgd", lr=0.0,
                          precision=precision)
        trainer.step(x, y)
        grads.append({p.name: p.grad.astype(np.float64) for p in trainer.model.params
                      if not (p.name.endswith(".b") and not p.name.startswith("classifier"))})
    cos = {k: float((g * grads[1][k]).sum() / (np.linalg.norm(g) * np.linalg.norm(grads[1][k])))
           for k, g in grads[0].items()}
    return {"rule": rule, "batch": batch, "min_cosine_bn_gamma": min(v for k, v in cos.items() if k.endswith("gamma")),
            "min_cosine_all": min(cos.values())}


def random_slice_fp16_error(blocks: int) -> float:
    """Fp16Model against fp32 on the first `blocks` blocks of a random-weight MobileNetV1
    (tests/test_fp16.py's construction): the largest per-sample |logit error| / max |logit|."""
    from edge_lls.fp16 import Fp16Model
    from edge_lls.models import model_spec
    from edge_lls.nn.model import Model
    spec = model_spec("mobilenetv1", 3, (32, 32, 3))
    spec["blocks"] = spec["blocks"][:blocks]
    spec["blocks"][-1]["post"] = [{"type": "adaptive_avgpool", "size": [1, 1]}]
    model = Model(spec, seed=0)
    rng = np.random.default_rng(0)
    for bn in model.batch_norms():
        bn.momentum = 1.0
    model.forward(rng.random((32, 32, 32, 3)).astype(np.float32), training=True)
    x = rng.random((8, 32, 32, 3)).astype(np.float32)
    fp32 = model.forward(x).copy()
    fp16 = Fp16Model(model).forward(x)
    return float((np.abs(fp16 - fp32).max(axis=1) / np.abs(fp32).max(axis=1)).max())


def conversion_ms(n: int = 10_000_000) -> dict:
    """Milliseconds to widen and to round n values with each float16 conversion the kernels
    can use (kernels/half.py; 'native' only where the target has the instructions)."""
    import numba
    from edge_lls.kernels import half
    impls = {"integer": (half._half_to_f32_soft, half._f32_to_half_soft)}
    if half.NATIVE_HALF:
        impls["native"] = (half._half_to_f32_native, half._f32_to_half_native)
    x = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    h = x.astype(np.float16).view(np.uint16)
    out32, out16 = np.empty_like(x), np.empty_like(h)
    result = {}
    for name, (to_f32, to_half) in impls.items():
        @numba.njit
        def widen(h, out):
            for i in range(h.size):
                out[i] = to_f32(h[i])

        @numba.njit
        def narrow(x, out):
            for i in range(x.size):
                out[i] = to_half(x[i])
        for label, fn, args in (("widen", widen, (h, out32)), ("round", narrow, (x, out16))):
            fn(*args)
            best = min(_timed(fn, args) for _ in range(5))
            result[f"{label}_{name}_ms"] = round(best * 1e3, 2)
    return result


def _timed(fn, args) -> float:
    started = time.perf_counter()
    fn(*args)
    return time.perf_counter() - started


def bench_fp16(args) -> dict:
    return {"task": "fp16", "epochs": args.epochs,
            "mnist_smallconv_accuracy": {f"{rule} {precision}": mnist_accuracy(rule, precision, args.epochs)
                                         for rule in ("lls", "bp") for precision in ("fp32", "fp16")},
            "mobilenetv1_gradient_cosines": [gradient_cosines(rule, batch) for rule in ("bp", "lls")
                                             for batch in (8, 32)],
            "random_mobilenet_slice_fp16_inference_error": {blocks: random_slice_fp16_error(blocks)
                                                            for blocks in (2, 4, 8, 14)},
            "half_conversion_10M": conversion_ms()}


def write_mnist_folder(root: Path) -> None:
    from PIL import Image
    from edge_lls.data.idx import read_idx, IMAGES_MAGIC, LABELS_MAGIC
    images = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC)
    for i, (image, label) in enumerate(zip(images, labels)):
        part = "train" if i < 8000 else "test"
        folder = root / part / str(int(label))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(image)).save(folder / f"{i:05d}.png")


def bench_finetune(args) -> list[dict]:
    from edge_lls.data import load_dataset
    from edge_lls.finetune import finetune, load_backbone
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "mnist"
        write_mnist_folder(root)
        backbone = load_backbone(VWW_INT8)
        data = load_dataset("folder", root, input_shape=(96, 96, 3), seed=0)
        for train_last in args.train_last:
            for lr in args.lr:
                for bn_init in args.bn_init:
                    for rule in args.rule:
                        options = {} if rule in ("bp", "dfa") else {"temperature": 0.5}
                        _, result = finetune(backbone, data, train_last=train_last, epochs=args.epochs,
                                             batch_size=128, lr=lr, seed=0, calibration_images=512, bn_init=bn_init,
                                             rule=rule, log=lambda line: print(line, file=sys.stderr, flush=True),
                                             **options)
                        rows.append(result)
                        print(json.dumps({k: result[k] for k in ("train_last", "rule", "lr", "bn_init", "epochs",
                                                                 "fp32_accuracy", "int8_accuracy", "seconds")}),
                              file=sys.stderr, flush=True)
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=("ptq", "finetune", "fp16", "all"))
    parser.add_argument("--epochs", type=int, default=2, help="training epochs (default 2)")
    parser.add_argument("--calibration", type=int, nargs="+", default=[64, 512], help="PTQ calibration sizes")
    parser.add_argument("--train-last", type=int, nargs="+", default=[0, 2, 4], help="fine-tuned blocks")
    parser.add_argument("--lr", type=float, nargs="+", default=[5e-3], help="fine-tuning learning rates")
    parser.add_argument("--bn-init", nargs="+", default=["identity"], choices=("identity", "standard"),
                        help="batch-norm initialisation of the fine-tuned blocks")
    parser.add_argument("--rule", nargs="+", default=["lls"], help="learning rules to fine-tune with")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        from edge_lls.runtime import set_threads
        set_threads(args.threads)
    if args.task in ("ptq", "all"):
        print(json.dumps(bench_ptq(args)), flush=True)
    if args.task in ("fp16", "all"):
        print(json.dumps(bench_fp16(args)), flush=True)
    if args.task in ("finetune", "all"):
        for row in bench_finetune(args):
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

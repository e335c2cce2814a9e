"""What the board's arithmetic learns: LLS fine-tuning through the Python twin of the
firmware's update (edge_lls/board_train.py: int8 weights, stochastic rounding, batch 1 SGD)
beside the host's float fine-tuning (edge_lls/finetune.py: float master weights, batch norm,
schedule-free AdamW) on the same images, the same frozen int8 prefix, the same held-out split.

    .venv/bin/python tools/bench_board_accuracy.py [--train 2000] [--test 1000] [--epochs 3]
        [--train-last 1,2] [--seeds 0,1,2] [--last-block classifier,lls] [--schedule constant|linear]
        [--lr-grid default|wide]

Data: a real image set at the board's input size: the MNIST test digits of ../shared (the only
MNIST here), 96x96 RGB through the folder reader, split into two balanced classes (0-4 / 5-9)
so that vww_96_int8's pretrained 2-class classifier starts the head, as on a VWW board. The first
--train images train, the last --test images (never trained on, never used to choose a learning
rate) evaluate. The board's learning rates are chosen on a validation split (the last 20 % of
the training images, trained on the first 80 %), then the run is repeated on all of them.

The last block's learning signal (--last-block) is set alike on both sides: 'classifier' (the
board's default, BoardTrainer(last_block=...); the host's finetune(..., last_block="classifier"))
or 'lls' (its own LLS head). Prints per plan (blocks trained), signal and seed: the pretrained int8 accuracy, the host's float
(fp32) and exported int8 accuracy with its defaults (schedule-free AdamW) and the host's fp32
accuracy with plain SGD (lr HOST_SGD_LR, batch 32: the board's optimizer, float arithmetic
and batch norm), the board twin's int8 accuracy, the same update with float
master weights instead of stochastic rounding (the accuracy cost of int8 weights), and
board - host fp32.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from edge_lls.board_train import BoardTrainer  # noqa: E402
from edge_lls.finetune import FeatureSet, FineTuner, finetune, load_backbone, trainable_tail  # noqa: E402
from edge_lls.formats import blob  # noqa: E402

SHARED = REPO.parent / "shared"
VWW_INT8 = SHARED / "models" / "vww" / "vww_96_int8.tflite"
MNIST = SHARED / "data" / "mnist"
LR_GRID = tuple((lr, classifier_lr) for lr in (0.003, 0.01, 0.03, 0.1) for classifier_lr in (0.003, 0.01, 0.03))
LR_GRIDS = {"default": LR_GRID,
            "wide": tuple((lr, classifier_lr) for lr in (0.03, 0.1, 0.3, 1.0) for classifier_lr in (0.01, 0.03, 0.1, 0.3)),
            # RMSprop's block step is lr * g / sqrt(v): about lr per weight, so smaller rates
            "rmsprop": tuple((lr, classifier_lr) for lr in (0.0003, 0.001, 0.003) for classifier_lr in (0.003, 0.01, 0.03))}
HOST_SGD_LR = 0.03                  # the host with plain SGD (batch 32): the board's optimizer, float arithmetic


def write_folder(root: Path, train: int, test: int) -> None:
    """MNIST t10k digits as a two-class image folder: train/{0-4,5-9}, test/{0-4,5-9}."""
    from PIL import Image
    from edge_lls.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
    images = read_idx(MNIST / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)
    labels = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC)
    picks = list(range(train)) + list(range(len(images) - test, len(images)))
    for n, i in enumerate(picks):
        folder = root / ("train" if n < train else "test") / ("digits_0_4" if labels[i] < 5 else "digits_5_9")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(images[i])).save(folder / f"{i:05d}.png")


def lr_scale(schedule: str, step: int, total: int, batch: int = 64) -> float:
    """The learning-rate factor of a step, set per TRAIN batch of `batch` samples (the host
    sends each batch's learning rate: the board needs no change for a schedule): 1
    (constant), linear decay to 0, half a cosine to 0, or 1 then 0.1 for the last third."""
    done = (step // batch) * batch / total
    if schedule == "constant":
        return 1.0
    if schedule == "linear":
        return 1.0 - done
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * done))
    return 1.0 if done < 2 / 3 else 0.1


def board_run(image: bytes, x, y, epochs: int, lr: float, classifier_lr: float, seed: int,
              master_weights: bool = False, last_block: str = "classifier", schedule: str = "constant",
              fractions: bool = False, optimizer: str = "sgd") -> BoardTrainer:
    """The board's training: one sample per step, a fresh seeded order per epoch (fractions:
    the board with 16-bit masters, el_train_config.fractions = 1)."""
    trainer = BoardTrainer(image, lr=lr, classifier_lr=classifier_lr, seed=seed + 1, master_weights=master_weights,
                           last_block=last_block, fractions=fractions, optimizer=optimizer)
    rng = np.random.default_rng(seed)
    step, total = 0, epochs * len(x)
    for _ in range(epochs):
        for i in rng.permutation(len(x)):
            if schedule != "constant":
                scale = lr_scale(schedule, step, total)
                trainer.lr, trainer.classifier_lr = np.float32(lr * scale), np.float32(classifier_lr * scale)
            trainer.step(x[i], int(y[i]))
            step += 1
    return trainer


def accuracy(trainer: BoardTrainer, x, y) -> float:
    return float(np.mean([trainer.predict(f).argmax() == label for f, label in zip(x, y)]))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=2000)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train-last", default="1,2")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--host-batch", type=int, default=32)
    parser.add_argument("--json", type=Path, default=None, help="also write the rows here")
    parser.add_argument("--last-block", default="classifier,lls",
                        help="the last block's learning signal(s), on the board and the host: classifier (the "
                             "board's default: the classifier's gradient at its input) and / or lls (its own head)")
    parser.add_argument("--schedule", default="constant", choices=("constant", "linear", "cosine", "step"),
                        help="the board's learning rates over the run (set per 64-sample TRAIN batch): constant, "
                             "linear or cosine decay to 0, or step (x0.1 for the last third)")
    parser.add_argument("--optimizer", default="sgd", choices=("sgd", "rmsprop", "rmsprop-factored"),
                        help="the blocks' update in the board columns (el_train_config.optimizer): sgd (the "
                             "default), rmsprop (a float32 second moment per block weight and bias) or "
                             "rmsprop-factored (the moment of each weight matrix as row and column sums)")
    parser.add_argument("--lr-grid", default=None, choices=sorted(LR_GRIDS),
                        help="the board's learning rates tried on the validation split: default (0.003-0.1 x "
                             "0.003-0.03) or wide (0.03-1.0 x 0.01-0.3)")
    args = parser.parse_args(argv)
    grid = LR_GRIDS[args.lr_grid or ("default" if args.optimizer == "sgd" else "rmsprop")]
    opt = {"optimizer": args.optimizer}
    from edge_lls.data import load_dataset
    backbone = load_backbone(VWW_INT8)
    rows = []
    with tempfile.TemporaryDirectory(prefix="board-acc-") as tmp:
        root = Path(tmp) / "mnist2"
        write_folder(root, args.train, args.test)
        data = load_dataset("folder", root, input_shape=(96, 96, 3), seed=0)
        for train_last in (int(v) for v in args.train_last.split(",")):
            tuner = FineTuner(backbone, train_last, data.num_classes)
            t0 = time.perf_counter()
            train, test = FeatureSet(tuner, data.train, True), FeatureSet(tuner, data.test, True)
            feature_s = time.perf_counter() - t0
            image = blob.build_image(backbone.program, trainable_tail(backbone.program, train_last)).data
            # the folder reader lists images class by class: a seeded permutation splits fairly
            order = np.random.default_rng(1234).permutation(len(train.x))
            fit, held = order[:int(0.8 * len(order))], order[int(0.8 * len(order)):]
            pretrained = accuracy(BoardTrainer(image, lr=0.0, classifier_lr=0.0), test.x, test.y)
            for seed, signal in ((int(v), sig) for v in args.seeds.split(",") for sig in args.last_block.split(",")):
                t0 = time.perf_counter()
                scores = {pair: accuracy(board_run(image, train.x[fit], train.y[fit], args.epochs, *pair, seed,
                                                   last_block=signal, schedule=args.schedule, **opt),
                                         train.x[held], train.y[held])
                          for pair in grid}
                lr, classifier_lr = max(grid, key=lambda pair: scores[pair])
                board = accuracy(board_run(image, train.x, train.y, args.epochs, lr, classifier_lr, seed,
                                           last_block=signal, schedule=args.schedule, **opt), test.x, test.y)
                board_s = time.perf_counter() - t0
                # the same update with float master weights instead of stochastic rounding: the
                # accuracy cost of keeping the block weights int8 (same learning rates)
                master = accuracy(board_run(image, train.x, train.y, args.epochs, lr, classifier_lr, seed, True,
                                            last_block=signal, schedule=args.schedule, **opt), test.x, test.y)
                # the board with 16-bit masters (an int8 fraction per block weight): its own
                # learning rates, chosen on the same validation split
                wide = {pair: accuracy(board_run(image, train.x[fit], train.y[fit], args.epochs, *pair, seed,
                                                 last_block=signal, schedule=args.schedule, fractions=True, **opt),
                                       train.x[held], train.y[held])
                        for pair in grid}
                wide_lr = max(grid, key=lambda pair: wide[pair])
                board16 = accuracy(board_run(image, train.x, train.y, args.epochs, *wide_lr, seed, last_block=signal,
                                             schedule=args.schedule, fractions=True, **opt), test.x, test.y)
                t0 = time.perf_counter()
                _, host = finetune(backbone, data, train_last=train_last, epochs=args.epochs,
                                   batch_size=args.host_batch, seed=seed, calibration_images=512, last_block=signal)
                _, host_sgd = finetune(backbone, data, train_last=train_last, epochs=args.epochs,
                                       batch_size=args.host_batch, seed=seed, calibration_images=512,
                                       optimizer="sgd", lr=HOST_SGD_LR, last_block=signal)
                row = {"train_last": train_last, "last_block": signal, "schedule": args.schedule, "optimizer": args.optimizer, "seed": seed, "pretrained_int8": pretrained,
                       "host_fp32": host["fp32_accuracy"], "host_int8": host["int8_accuracy"],
                       "host_sgd_fp32": host_sgd["fp32_accuracy"], "board_int8": board, "float_master_int8": master,
                       "board16_int8": board16, "board16_lr": list(wide_lr),
                       "board_lr": lr, "board_classifier_lr": classifier_lr,
                       "validation": {f"{a:g}/{b:g}": s for (a, b), s in scores.items()},
                       "board_minus_host_fp32_pt": round(100 * (board - host["fp32_accuracy"]), 2),
                       "board_minus_host_sgd_pt": round(100 * (board - host_sgd["fp32_accuracy"]), 2),
                       "seconds": {"features": round(feature_s, 1), "board": round(board_s, 1),
                                   "host": round(time.perf_counter() - t0, 1)}}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
    print(f"vww_96_int8 fine-tuned on MNIST 0-4 / 5-9 at 96x96: {args.train} train / {args.test} held-out test "
          f"images, {args.epochs} epochs; host batch {args.host_batch}, board batch 1")
    print("| blocks | last block's signal | seed | pretrained int8 | host fp32 (AdamW-SF, BN) | host int8 | host fp32 (SGD, BN) "
          "| board (twin) int8 | same with float masters | board lr / classifier lr | board - host | board - host SGD "
          "| board 16-bit masters | its lr / classifier lr | 16-bit - host | 16-bit - float masters |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['train_last']} | {r['last_block']} | {r['seed']} | {100 * r['pretrained_int8']:.2f}% | {100 * r['host_fp32']:.2f}% | "
              f"{100 * r['host_int8']:.2f}% | {100 * r['host_sgd_fp32']:.2f}% | {100 * r['board_int8']:.2f}% | "
              f"{100 * r['float_master_int8']:.2f}% | "
              f"{r['board_lr']:g} / "
              f"{r['board_classifier_lr']:g} | {r['board_minus_host_fp32_pt']:+.2f} pt | "
              f"{r['board_minus_host_sgd_pt']:+.2f} pt | {100 * r['board16_int8']:.2f}% | "
              f"{r['board16_lr'][0]:g} / {r['board16_lr'][1]:g} | {100 * (r['board16_int8'] - r['host_fp32']):+.2f} pt | "
              f"{100 * (r['board16_int8'] - r['float_master_int8']):+.2f} pt |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Which blocks to fine-tune (issue 11): train_last 0 / 1 / 2 and the candidate causes of the
last block's loss, on MNIST proxies of the VWW fine-tuning the issue measured.

    .venv/bin/python tools/bench_finetune_plans.py                # the full grid (docs/int8.md)
    .venv/bin/python tools/bench_finetune_plans.py --quick        # 4 plans, 2 tasks, 2 seeds
    .venv/bin/python tools/bench_finetune_plans.py --tasks adapted-lohi --plans "0,1 lls head,1" --seeds 0

The issue's protocol on every task: 500 training images, 500 others held out, 10 epochs, batch
32, LLS (square basis, T 0.5), schedule-free AdamW lr 5e-3, 512 calibration images, the
exported int8 model evaluated on the int8 kernels, seeds 0, 1, 2 (the seed draws the
calibration sample, the batch order and a fresh classifier; the images are the same).

Data: the MNIST t10k digits of ../shared/data/mnist (read in place), turned into 96x96 RGB
exactly as the folder reader turns a 28x28 PNG into the backbone's input (Pillow convert RGB,
bilinear resize), held in memory instead of written to a folder. No VWW training images
exist here, so these are PROXIES, not VWW:

  vww-lohi          vww_96_int8 as shipped, digits 0-4 vs 5-9: 2 classes, so the pretrained
                    person classifier starts the head (as on VWW), but it is at chance here.
  vww-digits10      vww_96_int8 as shipped, 10 digits: a fresh classifier.
  adapted-lohi      vww_96_int8 first adapted to 0-4 vs 5-9 with BP (last 4 blocks +
                    classifier, 4,000 other images, 6 epochs, exported int8 like any fine-tuned
                    model): an int8 backbone whose BP-trained features and classifier are
                    already good (about 88 % on the held-out 500, the VWW model's 85 % on VWW),
                    then fine-tuned by the issue's protocol on 500 images it never saw.
  adapted-digits10  the same for 10 digits (pretrained about 76 %).

Images: a fixed permutation of the first 8,000 digits; adaptation uses its first 4,000,
fine-tuning draws its training images from the other 4,000, and every test set comes from
digits 9,000-9,999 (never used for adaptation or training). With --large (part of the full
run) the adapted tasks are also run with 2,000 training / 1,000 test images.

Plans (train_last first): "0" the classifier alone; "1" the last block + classifier, "2" the
last two, as fine-tuning runs by default: every trained block but the last learns from its LLS
head, the last from the classifier's gradient at its pooled output (finetune(last_block=
"classifier")); "1 lls head" / "2 lls heads" the last block with its own LLS head too, the rule
as published (last_block="lls"); "1 bp" / "2 bp" backpropagation through the trained blocks.
The "1 lls head, ..." variants change one thing each of the LLS-head plan, the candidate causes
of its loss: the LLS pool size of a block whose map is <= 3x3 (1, the default: global; 2:
PyTorch's overlapping adaptive windows on 3x3; 3: no pooling), batch-norm init, learning rate,
LLS temperature, the blocks' learning rate relative to the classifier's
(finetune(block_lr_scale=...)), the block frozen for the first epoch, a 10x faster classifier.
"No batch norm at all" is not in the grid: every unit of an edge_lls Model has a batch norm
that normalises with batch statistics in training.

Prints one markdown table per split (mean, min, max int8 accuracy per plan and task, and the
mean minus plan 0's) and then one JSON object with every run. --probe adds, per run, a ridge
probe of the fine-tuned model's classifier input (the class information left in it, whatever
the classifier), the relative change of the last block's pointwise weights and the training
loss of the first and last epoch (the diagnosis table of docs/int8.md:
`--plans "0,1 lls head,1,1 bp,2 lls heads,2,2 bp" --probe --large`). Runs are seeded and repeat
exactly on one machine.

Time on 2 shared cores: the full grid (285 runs) about 9 minutes, --quick about 1.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import edge_lls.finetune as finetune_module  # noqa: E402
from edge_lls.finetune import FineTuner, finetune, load_backbone  # noqa: E402
from edge_lls.finetune import Backbone  # noqa: E402

SHARED = REPO.parent / "shared"
VWW_INT8 = SHARED / "models" / "vww" / "vww_96_int8.tflite"
MNIST = SHARED / "data" / "mnist"

PROTOCOL = dict(epochs=10, batch_size=32, lr=5e-3, calibration_images=512, temperature=0.5)
ADAPTATION = dict(train_last=4, rule="bp", epochs=6, batch_size=128, lr=5e-3, seed=0, calibration_images=512)
TASKS = ("adapted-lohi", "adapted-digits10", "vww-lohi", "vww-digits10")

# name -> (train_last, finetune keyword overrides, extra: {"small_map_pool": p} / {"freeze_epochs": 1})
LLS_HEAD = {"last_block": "lls"}          # the last block learns from its own LLS head, as published
PLANS = {
    "0": (0, {}, {}),
    "0 lr 1e-3": (0, {"lr": 1e-3}, {}),
    "1 lls head": (1, LLS_HEAD, {}),
    "1 lls head, pool 2": (1, LLS_HEAD, {"small_map_pool": 2}),
    "1 lls head, pool 3": (1, LLS_HEAD, {"small_map_pool": 3}),
    "1 lls head, bn standard": (1, LLS_HEAD | {"bn_init": "standard"}, {}),
    "1 lls head, lr 1e-3": (1, LLS_HEAD | {"lr": 1e-3}, {}),
    "1 lls head, lr 5e-4": (1, LLS_HEAD | {"lr": 5e-4}, {}),
    "1 lls head, T 1.0": (1, LLS_HEAD | {"temperature": 1.0}, {}),
    "1 lls head, T 0.1": (1, LLS_HEAD | {"temperature": 0.1}, {}),
    "1 lls head, block lr x0.3": (1, LLS_HEAD | {"block_lr_scale": 0.3}, {}),
    "1 lls head, block lr x0.1": (1, LLS_HEAD | {"block_lr_scale": 0.1}, {}),
    "1 lls head, block lr x0.02": (1, LLS_HEAD | {"block_lr_scale": 0.02}, {}),
    "1 lls head, block frozen epoch 1": (1, LLS_HEAD, {"freeze_epochs": 1}),
    "1 lls head, classifier lr x10": (1, LLS_HEAD | {"lr": 5e-2, "block_lr_scale": 0.1}, {}),  # block 5e-3
    "1": (1, {}, {}),                            # the default: the last block learns from the classifier
    "1 bp": (1, {"rule": "bp"}, {}),
    "2 lls heads": (2, LLS_HEAD, {}),
    "2 lls heads, block lr x0.1": (2, LLS_HEAD | {"block_lr_scale": 0.1}, {}),
    "2": (2, {}, {}),
    "2 bp": (2, {"rule": "bp"}, {}),
}
LARGE_PLANS = ("0", "0 lr 1e-3", "1 lls head", "1 lls head, lr 1e-3", "1 lls head, block lr x0.1", "1", "1 bp",
               "2 lls heads", "2 lls heads, block lr x0.1", "2", "2 bp")
QUICK = dict(tasks=("adapted-lohi", "vww-lohi"), plans=("0", "1 lls head", "1", "2"), seeds=(0, 1))


# ------------------------------------------------------------------ data
class Digits:
    """MNIST t10k as 96x96 RGB uint8, converted on first use, and the fixed image split."""

    def __init__(self):
        from edge_lls.data.idx import IMAGES_MAGIC, LABELS_MAGIC, read_idx
        self.images = read_idx(MNIST / "t10k-images-idx3-ubyte.gz", IMAGES_MAGIC)
        self.labels = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz", LABELS_MAGIC).astype(np.int64)
        self.order = np.random.default_rng(7).permutation(8000)
        self._pixels: dict[int, np.ndarray] = {}

    def pixels(self, i: int) -> np.ndarray:
        """What edge_lls.data.images.decode_image returns for this digit saved as a PNG."""
        from PIL import Image
        if i not in self._pixels:
            image = Image.fromarray(np.asarray(self.images[i])).convert("RGB").resize((96, 96), Image.BILINEAR)
            self._pixels[i] = np.asarray(image, dtype=np.uint8)
        return self._pixels[i]

    def dataset(self, classes: str, train: np.ndarray, test: np.ndarray, name: str):
        from edge_lls.data.dataset import Dataset
        from edge_lls.data.split import Split
        from edge_lls.data.stores import ArrayStore
        labels, names = (self.labels, tuple(map(str, range(10)))) if classes == "digits10" else \
            ((self.labels >= 5).astype(np.int64), ("digits_0_4", "digits_5_9"))
        index = np.concatenate([train, test])
        store = ArrayStore(np.stack([self.pixels(int(i)) for i in index]), 255.0)
        y = labels[index]
        return Dataset(name, Split(store, y, np.arange(len(train))), Split(store, y, np.arange(len(train), len(index))),
                       len(names), (96, 96, 3), names)

    def small_split(self, classes: str, train: int, test: int, name: str):
        """`train` images from the 4,000 not used for adaptation, `test` from digits 9,000-9,999."""
        rng = np.random.default_rng(100)
        return self.dataset(classes, rng.permutation(self.order[4000:])[:train], 9000 + rng.permutation(1000)[:test],
                            name)


def backbone_for(task: str, digits: Digits, cache: dict, log) -> Backbone:
    kind, classes = task.split("-", 1)
    if kind == "vww":
        return cache.setdefault("vww", load_backbone(VWW_INT8))
    if task not in cache:
        started = time.perf_counter()
        adaptation = digits.dataset(classes, digits.order[:4000], 8000 + np.arange(1000), f"{classes}-adaptation")
        program, result = finetune(cache.setdefault("vww", load_backbone(VWW_INT8)), adaptation, **ADAPTATION)
        cache[task] = Backbone(program, f"vww_96_int8 adapted to {classes}")
        log(f"{task}: BP adaptation of the last 4 blocks: int8 {result['int8_accuracy']:.4f} on digits 8000-8999 "
            f"({time.perf_counter() - started:.0f} s)")
    return cache[task]


# ------------------------------------------------------------------ variants the API has no option for
@contextlib.contextmanager
def small_map_pool(size: int | None):
    """LLS pool size `size` for every conv block whose output map is <= 3x3 (FineTuner and
    trainable_tail both read finetune._pool_size)."""
    if size is None:
        yield
        return
    original = finetune_module._pool_size

    def pool_size(kind, index, out_shape):
        return size if kind != "dense" and out_shape[1] <= 3 else original(kind, index, out_shape)
    finetune_module._pool_size = pool_size
    try:
        yield
    finally:
        finetune_module._pool_size = original


@contextlib.contextmanager
def frozen_blocks(steps: int):
    """The blocks' optimizers take no step for the first `steps` training steps (the classifier
    trains alone), then their usual learning rate."""
    if not steps:
        yield
        return
    start, step = FineTuner.start, FineTuner.step

    def frozen_start(self, *args, **kwargs):
        start(self, *args, **kwargs)
        self._frozen_left = steps
        self._block_step = [o.step for o in self.trainer.optimizers[:-1]]
        for o in self.trainer.optimizers[:-1]:
            o.step = lambda: None

    def frozen_step(self, features, labels):
        if self._frozen_left == 0:
            for o, original in zip(self.trainer.optimizers[:-1], self._block_step):
                o.step = original
        self._frozen_left -= 1
        return step(self, features, labels)
    FineTuner.start, FineTuner.step = frozen_start, frozen_step
    try:
        yield
    finally:
        FineTuner.start, FineTuner.step = start, step


def linear_probe(program, data) -> float:
    """Held-out accuracy of a ridge classifier (one-hot targets, lambda 10, standardised
    inputs) fitted on the training images' globally pooled features of `program`: how
    much class information the classifier's input holds, whatever the classifier is."""
    tuner = FineTuner(Backbone(program, "probe"), 0, data.num_classes)

    def pooled(split):
        x = np.concatenate([tuner.dequantize(tuner.features(x)) for x, _ in split.batches(128)])
        return x.reshape(len(split), -1).astype(np.float64), split.labels
    (x, y), (x_test, y_test) = pooled(data.train), pooled(data.test)
    mean, std = x.mean(0), x.std(0) + 1e-6
    design = np.c_[(x - mean) / std, np.ones(len(x))]
    w = np.linalg.solve(design.T @ design + 10 * np.eye(design.shape[1]), design.T @ np.eye(data.num_classes)[y])
    return float(((np.c_[(x_test - mean) / std, np.ones(len(x_test))] @ w).argmax(1) == y_test).mean())


def weight_change(program, backbone) -> float:
    """||W - W0|| / ||W0|| of the last block's pointwise weights (batch norm folded in)."""
    op = backbone.trainable_blocks[-1].ops[-1]
    new, old = (p.tensors[p.operators[op].inputs[1]] for p in (program, backbone.program))
    new, old = (t.data.astype(np.float64) * np.asarray(t.scales, np.float64).reshape(-1, 1, 1, 1) for t in (new, old))
    return float(np.linalg.norm(new - old) / np.linalg.norm(old))


def run_plan(backbone, data, plan: str, seed: int, probe: bool = False) -> dict:
    train_last, overrides, extra = PLANS[plan]
    options = PROTOCOL | overrides
    batch = options["batch_size"]
    steps_per_epoch = len(data.train) // batch + (1 if len(data.train) % batch >= 2 else 0)
    with small_map_pool(extra.get("small_map_pool")), frozen_blocks(extra.get("freeze_epochs", 0) * steps_per_epoch):
        program, result = finetune(backbone, data, train_last=train_last, seed=seed, **options)
    row = {"plan": plan, "seed": seed, "train_last": train_last, "pretrained": result["baseline_int8_accuracy"],
           "fp32": result["fp32_accuracy"], "int8": result["int8_accuracy"], "lr": result["lr"],
           "block_lr": result["block_lr"], "seconds": result["seconds"],
           "train_loss_first_epoch": result["history"][0]["loss"],
           "train_loss_last_epoch": result["history"][-1]["loss"]}
    if probe:
        row |= {"probe": linear_probe(program, data), "probe_pretrained": linear_probe(backbone.program, data),
                "last_pointwise_change": weight_change(program, backbone)}
    return row


def diagnosis(rows: list[dict]) -> str:
    lines = ["| task | plan | seed | int8 | ridge probe on the classifier's input (pretrained) | last pointwise "
             "weights moved | classifier train loss, epoch 1 -> last |", "|---" * 7 + "|"]
    for r in rows:
        if "probe" in r:
            lines.append(f"| {r['task']} | {r['plan']} | {r['seed']} | {100 * r['int8']:.1f} | {100 * r['probe']:.1f} "
                         f"({100 * r['probe_pretrained']:.1f}) | {100 * r['last_pointwise_change']:.0f} % | "
                         f"{r['train_loss_first_epoch']:.3f} -> {r['train_loss_last_epoch']:.3f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------ report
def table(rows: list[dict], tasks: list[str], plans: list[str]) -> str:
    def cell(task, plan):
        accs = [r["int8"] for r in rows if r["task"] == task and r["plan"] == plan]
        base = [r["int8"] for r in rows if r["task"] == task and r["plan"] == "0"]
        if not accs:
            return "–"
        text = f"{100 * np.mean(accs):.1f} ({100 * min(accs):.1f}–{100 * max(accs):.1f})"
        if base and plan != "0":
            text += f" {100 * (np.mean(accs) - np.mean(base)):+.1f}"
        return text
    lines = ["| plan (train_last, change) | " + " | ".join(tasks) + " |", "|---" * (len(tasks) + 1) + "|"]
    pretrained = []
    for task in tasks:
        values = {r["pretrained"] for r in rows if r["task"] == task and r["pretrained"] is not None}
        pretrained.append(f"{100 * values.pop():.1f}" if values else "– (fresh classifier)")
    lines.append("| pretrained int8 | " + " | ".join(pretrained) + " |")
    for plan in plans:
        lines.append(f"| {plan} | " + " | ".join(cell(task, plan) for task in tasks) + " |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("--quick", action="store_true", help="plans 0, 1 lls head, 1, 2 on 2 tasks, seeds 0-1")
    parser.add_argument("--tasks", default=None, help=f"comma-separated, from {', '.join(TASKS)}")
    parser.add_argument("--plans", default=None, help="comma-separated plan names (see PLANS)")
    parser.add_argument("--seeds", default=None, help="comma-separated (default 0,1,2)")
    parser.add_argument("--train", type=int, default=500, help="training images (default 500, the issue's)")
    parser.add_argument("--test", type=int, default=500, help="held-out images (default 500)")
    parser.add_argument("--large", action=argparse.BooleanOptionalAction, default=None,
                        help="also the adapted tasks at 2,000 / 1,000 images (default: on for the full grid)")
    parser.add_argument("--probe", action="store_true",
                        help="also a ridge probe of the fine-tuned classifier input, the last block's weight change "
                             "and the training loss per run (diagnosis; about 1-2 s more per run)")
    parser.add_argument("--json", type=Path, default=None, help="also write the rows to this file")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        from edge_lls.runtime import set_threads
        set_threads(args.threads)
    tasks = list(QUICK["tasks"] if args.quick else TASKS) if args.tasks is None else args.tasks.split(",")
    plans = list(QUICK["plans"] if args.quick else PLANS) if args.plans is None else args.plans.split(",")
    seeds = list(QUICK["seeds"] if args.quick else (0, 1, 2)) if args.seeds is None else \
        [int(s) for s in args.seeds.split(",")]
    for name in tasks:
        if name not in TASKS:
            parser.error(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
    for name in plans:
        if name not in PLANS:
            parser.error(f"unknown plan {name!r}; choose from {', '.join(PLANS)}")
    large = (not args.quick and args.tasks is None and args.plans is None) if args.large is None else args.large
    splits = [(args.train, args.test, tasks, plans)]
    if large:
        splits.append((2000, 1000, [t for t in tasks if t.startswith("adapted")],
                       [p for p in plans if p in LARGE_PLANS]))

    def log(line):
        print(line, file=sys.stderr, flush=True)
    started = time.perf_counter()
    digits, backbones, rows = Digits(), {}, []
    for train, test, split_tasks, split_plans in splits:
        for task in split_tasks:
            backbone = backbone_for(task, digits, backbones, log)
            data = digits.small_split(task.split("-", 1)[1], train, test, f"{task}-{train}")
            for plan in split_plans:
                for seed in seeds:
                    row = {"task": task, "train_images": train, "test_images": test} | run_plan(backbone, data, plan,
                                                                                              seed, args.probe)
                    rows.append(row)
                    log(json.dumps(row))
    total = time.perf_counter() - started
    for train, test, split_tasks, split_plans in splits:
        if split_tasks and split_plans:
            print(f"\n{train} training / {test} held-out images, seeds {','.join(map(str, seeds))}: int8 accuracy %, "
                  f"mean (min–max) and mean − plan 0\n")
            print(table([r for r in rows if r["train_images"] == train], split_tasks, split_plans))
    if args.probe:
        print("\nDiagnosis per run\n")
        print(diagnosis(rows))
    print(f"\n{len(rows)} runs in {total / 60:.1f} minutes\n")
    record = {"protocol": PROTOCOL, "adaptation": ADAPTATION, "seconds": round(total, 1), "rows": rows}
    print(json.dumps(record))
    if args.json:
        args.json.write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The training loop behind `edge-lls train`: epochs, evaluation, checkpoints, progress,
metrics, resume.

    result = train(given={"dataset": "digits", "epochs": 5}, out="runs/a")
    result = train(given={"epochs": 8}, out="runs/a", resume=True)      # continue it

A run directory holds config.json, metrics.jsonl, model.ells (the evaluated model),
checkpoint.ells (the last training state) and curves.png. Nothing is written until the
dataset, model, rule, device and memory budget have all been checked, so bad input
leaves no file behind.

Resume is exact: the data order is a pure function of (seed, epoch), the checkpoint
holds every array and scalar a step reads (weights, batch-norm statistics, rule
parameters, optimizer state) and the position (epoch, batch) to continue from, so for a
fixed seed and thread count a resumed run ends with the same bits as an uninterrupted one.
No other random state exists in the loop.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from . import __version__
from .devices import DeviceProfile, check_footprint, get_device, require_local
from .errors import ConfigError, DivergedError, FormatError
from .evaluate import check_label_range, require_int
from .precision import PRECISIONS
from .formats import model_file



# ------------------------------------------------------------------------------- config
@dataclass
class TrainConfig:
    """Everything that defines a run; saved as config.json and in every checkpoint."""
    model: str = "smallconv"
    width: float = 0.25               # MobileNetV1 width multiplier (mobilenetv1 only)
    rule: str = "lls"
    waveform: str = "square"
    temperature: float = 0.5
    dataset: str = "digits"
    data: str | None = None           # the dataset's file or folder, absolute
    val_split: float = 0.2
    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-3
    optimizer: str = "adamw-sf"
    weight_decay: float = 0.0
    seed: int = 0
    threads: int | None = None        # None: the device profile's cores
    device: str = "host"
    checkpoint_every: int = 0         # also checkpoint every N steps (0: only each epoch)
    precision: str = "fp32"           # fp16: float16 activations (mixed precision); int8: fp32, quantized after

    def validate(self) -> TrainConfig:
        require_int(self.epochs, "epochs", 1)
        require_int(self.batch_size, "batch-size", 2)   # batch norm needs two samples
        require_int(self.seed, "seed", 0)
        require_int(self.checkpoint_every, "checkpoint-every", 0)
        if self.threads is not None:
            require_int(self.threads, "threads", 1)
        for name in ("lr", "temperature", "width"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise ConfigError(f"--{name} must be a number > 0, got {value!r}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ConfigError(f"--weight-decay must be a number >= 0, got {self.weight_decay!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"--precision {self.precision!r}; choose fp32, fp16 or int8")
        _check_names(self)
        return self


def _check_names(config: TrainConfig) -> None:
    """Unknown names fail here, before the dataset is read (which can take a while).
    Datasets and devices are checked by their own registries, also before any file is written."""
    from .models import model_names
    from .optim import OPTIMIZERS
    from .rules import RULES

    for flag, value, choices in (("model", config.model, model_names()), ("rule", config.rule, list(RULES)),
                                 ("optimizer", config.optimizer, list(OPTIMIZERS))):
        if flag == "model" and is_onnx_model(value):
            continue                  # read (and checked) in prepare(), before any file is written
        if value not in choices:
            raise ConfigError(f"unknown {flag} {value!r}; choose one of: {', '.join(choices)}")


# What a resumed run may change: how long, how and where it runs, never what it learns
# (--data: the same dataset at a new path, e.g. after copying a run to the board).
RESUMABLE = frozenset({"epochs", "threads", "device", "checkpoint_every", "data"})
CONFIG_FIELDS = frozenset(f.name for f in fields(TrainConfig))


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def new_config(given: dict) -> TrainConfig:
    """A fresh run's config: defaults overridden by the options the user gave."""
    given = _absolute_data(given)
    if "width" in given and given.get("model", TrainConfig.model) != "mobilenetv1":
        raise ConfigError("--width applies to mobilenetv1 only")
    return TrainConfig(**given).validate()


def resumed_config(saved: dict, given: dict, where: Path) -> TrainConfig:
    """The saved config, with the options a resumed run may change. Any other option the
    user repeats must equal the saved value: resuming never silently changes a run."""
    unknown = sorted(set(saved) - CONFIG_FIELDS)
    if unknown:
        raise FormatError(f"{where}: saved config has unknown field {unknown[0]!r}")
    config = TrainConfig(**saved)
    for name, value in _absolute_data(given).items():
        if name in RESUMABLE:
            setattr(config, name, value)
        elif value != saved.get(name):
            raise ConfigError(f"{_flag(name)} {value} differs from the run's {saved.get(name)} "
                              f"({where}); a resumed run keeps its config (only "
                              f"{', '.join(sorted(_flag(n) for n in RESUMABLE))} may change)")
    return config.validate()


def _absolute_data(given: dict) -> dict:
    """Store the data path (and an ONNX --model's) absolute, so a run resumes from any
    working directory."""
    given = dict(given)
    if given.get("data") is not None:
        given["data"] = str(Path(given["data"]).expanduser().resolve())
    if given.get("model") is not None and is_onnx_model(given["model"]):
        given["model"] = str(Path(given["model"]).expanduser().resolve())
    return given


def is_onnx_model(name: str) -> bool:
    """--model names an ONNX file rather than a zoo model: a zoo name never does; a path
    does by its .onnx suffix or, for an existing file, by its first byte."""
    from .formats.sniff import model_kind
    from .models import model_names

    if name in model_names():
        return False
    if str(name).lower().endswith(".onnx"):
        return True
    try:
        return Path(name).is_file() and model_kind(name) == "onnx"
    except FormatError:
        return False


# ---------------------------------------------------------------------------- run folder
class RunDir:
    CONFIG, METRICS, MODEL, CHECKPOINT, CURVES = (
        "config.json", "metrics.jsonl", "model.ells", "checkpoint.ells", "curves.png")
    FILES = (CONFIG, METRICS, MODEL, CHECKPOINT, CURVES)

    def __init__(self, root: str | Path):
        self.root = Path(root)

    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def metrics(self) -> Path:
        return self.root / self.METRICS

    @property
    def model(self) -> Path:
        return self.root / self.MODEL

    @property
    def checkpoint(self) -> Path:
        return self.root / self.CHECKPOINT

    @property
    def curves(self) -> Path:
        return self.root / self.CURVES

    def holds_run(self) -> bool:
        return any((self.root / f).exists() for f in (self.CONFIG, self.CHECKPOINT, self.MODEL))

    def remove_own_files(self, remove_root: bool) -> None:
        """Undo a run that failed before its first checkpoint (nothing worth keeping)."""
        for f in (*self.FILES, *model_file.stale_temp_files(self.root)):
            with contextlib.suppress(OSError):
                (self.root / f).unlink()
        if remove_root:
            with contextlib.suppress(OSError):
                self.root.rmdir()                # only if empty: never delete user files


def default_run_dir(config: TrainConfig) -> Path:
    """runs/<model>-<dataset>-<rule>-<YYYYmmdd-HHMMSS>, unique in this folder."""
    model = Path(config.model).stem if is_onnx_model(config.model) else config.model
    base = Path("runs") / f"{model}-{config.dataset}-{config.rule}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while path.exists():
        n += 1
        path = base.with_name(f"{base.name}-{n}")
    return path


# ------------------------------------------------------------------------------ session
@dataclass
class Session:
    """What a run trains with, built and checked before any file is written."""
    config: TrainConfig
    device: DeviceProfile
    threads: int
    data: object                  # edge_lls.data.Dataset
    trainer: object               # edge_lls.trainer.Trainer
    batch_size: int               # the effective batch: at most the training set
    drop_last: bool
    footprint: dict

    @property
    def model(self):
        return self.trainer.model


def prepare(config: TrainConfig) -> Session:
    from .data import load_dataset
    from .models import build_model
    from .runtime import set_threads
    from .trainer import Trainer

    device = require_local(get_device(config.device))
    threads = set_threads(config.threads or device.cores)   # capped at this machine's cores
    imported = None
    if is_onnx_model(config.model):          # an ONNX file: its weights, shapes and classes
        from .formats.onnx_import import load_onnx
        imported, _ = load_onnx(config.model)
    data = load_dataset(config.dataset, config.data, val_split=config.val_split, seed=config.seed,
                        input_shape=None if imported is None else imported.input_shape)
    if len(data.train) < 2:
        raise ConfigError(f"{data.name}: {len(data.train)} training images; training needs at least 2")
    if imported is not None:
        check_label_range(data, imported.num_classes)
        model = imported
    else:
        options = {"width": config.width} if config.model == "mobilenetv1" else {}
        model = build_model(config.model, num_classes=data.num_classes, input_shape=data.input_shape,
                            seed=config.seed, **options)
    trainer = Trainer(model, rule=config.rule, optimizer=config.optimizer, lr=config.lr,
                      weight_decay=config.weight_decay, seed=config.seed,
                      precision="fp16" if config.precision == "fp16" else "fp32",
                      waveform=config.waveform, temperature=config.temperature)
    batch = min(config.batch_size, len(data.train))
    footprint = training_footprint(trainer, batch, len(data.train))
    check_footprint(device, footprint, f"{config.model} with {config.rule} at batch {batch}")
    try:
        trainer.arena(batch)                     # allocated once, after the budget check
    except MemoryError:
        raise ConfigError(f"{config.model} with {config.rule} at batch {batch}: the step's memory "
                          f"cannot be allocated on this machine; lower --batch-size") from None
    # A last batch of one sample cannot be batch-normalised: skip it (same in every epoch).
    drop_last = len(data.train) % batch == 1
    return Session(config, device, threads, data, trainer, batch, drop_last, footprint)


def training_footprint(trainer, batch: int, train_size: int | None = None) -> dict[str, int]:
    """Bytes a training run holds, by part: everything but the dataset itself. Computed
    from the arena layouts, before anything of step size is allocated."""
    from .nn.arena import plan

    model = trainer.model
    rule_params = [p for i in range(len(model.blocks)) for p in trainer.rule.block_params(i)]
    weights = sum(p.value.nbytes for p in model.params + rule_params)
    stats = sum(bn.running_mean.nbytes + bn.running_var.nbytes for bn in model.batch_norms())
    step = trainer.rule.plan(model, batch).nbytes
    parts = {
        "weights": weights + stats,
        "gradients": weights,
        "optimizer state": sum(a.nbytes for o in trainer.optimizers for a in o.state_arrays().values()),
        "step arena": step,
    }
    rest = train_size % batch if train_size else 0
    if rest >= 2:                                # the epoch's last, smaller batch has its own
        parts["last-batch arena"] = trainer.rule.plan(model, rest).nbytes
    # Evaluation (and the batch-norm refresh) runs forward only, at the same batch size,
    # in an arena laid over the training arena's memory; only what does not fit is extra.
    infer = plan(model.stages(batch, "infer"), "infer").nbytes
    if infer > step:
        parts["inference arena"] = infer
    parts["input batch"] = batch * (int(np.prod(model.input_shape)) * 4 + 8)
    return parts


# ---------------------------------------------------------------------------- the loop
@dataclass
class EpochSums:
    """Running totals of the epoch in progress (saved in mid-epoch checkpoints so the
    epoch's record after a resume equals the uninterrupted one)."""
    loss: float = 0.0
    correct: int = 0
    images: int = 0
    block_losses: list | None = None
    seconds: float = 0.0

    def add(self, stats, n: int) -> None:
        self.loss += stats.loss * n
        self.correct += stats.correct
        self.images += n
        local = [v * n for v in stats.block_losses]
        if self.block_losses is not None:
            local = [a + b for a, b in zip(self.block_losses, local)]
        self.block_losses = local

    def means(self) -> tuple[float, float, list[float]]:
        n = max(self.images, 1)
        return self.loss / n, self.correct / n, [v / n for v in (self.block_losses or [])]


class TrainingRun:
    def __init__(self, session: Session, run: RunDir, *, state: dict | None, progress: bool, log):
        self.s, self.run, self.log, self.progress = session, run, log, progress
        state = state or {}
        self.epoch = int(state.get("epoch", 0))             # epoch in progress (0-based)
        self.step = int(state.get("step", 0))               # batches done in that epoch
        self.steps_done = int(state.get("steps_done", 0))   # batches done in the whole run
        self.sums = EpochSums(**state.get("epoch_sums", {}))
        self.metrics: list[dict] = list(state.get("metrics", []))
        self.totals = dict(state.get("totals", {"train_seconds": 0.0, "images": 0, "seconds": 0.0,
                                                "peak_step_bytes": 0}))
        self.last_checkpoint = run.checkpoint if state else None
        self.steps_this_process = 0
        self._clock = time.perf_counter()

    # -------------------------------------------------------------------- public
    def run_all(self) -> dict:
        cfg = self.s.config
        self._clock = time.perf_counter()
        while self.epoch < cfg.epochs:
            self._train_epoch()
            self._finish_epoch()
        self._tick()
        return self.result()

    def _tick(self) -> None:
        """Add the wall time since the last tick to the run's total (kept in checkpoints,
        so a resumed run's `seconds` covers every session up to its last checkpoint)."""
        now = time.perf_counter()
        self.totals["seconds"] += now - self._clock
        self._clock = now

    def result(self) -> dict:
        last = self.metrics[-1] if self.metrics else {}
        t = self.totals
        return {
            "eval_accuracy": last.get("eval_accuracy"),
            "train_loss": last.get("train_loss"),
            "epochs": len(self.metrics),
            "images_per_s": round(t["images"] / t["train_seconds"], 1) if t["train_seconds"] else None,
            "peak_memory_bytes": self.peak_memory_bytes(),
            "seconds": round(t["seconds"], 3),
            "model": self.s.config.model, "rule": self.s.config.rule, "precision": self.s.config.precision,
            "dataset": self.s.data.name,
            "params": self.s.model.num_params(), "threads": self.s.threads, "device": self.s.device.name,
            "run_dir": str(self.run.root), "model_file": str(self.run.model),
        }

    def peak_memory_bytes(self) -> int:
        """The footprint (training state, arenas, input batch: analytic) + the traced peak
        of what one steady-state step allocates beyond it (tracemalloc)."""
        return int(sum(self.s.footprint.values()) + self.totals["peak_step_bytes"])

    # -------------------------------------------------------------------- epochs
    def _train_epoch(self) -> None:
        cfg, train = self.s.config, self.s.data.train
        batches = train.batches(self.s.batch_size, shuffle=True, seed=cfg.seed, epoch=self.epoch,
                                drop_last=self.s.drop_last, start_batch=self.step)
        total = train.num_batches(self.s.batch_size, drop_last=self.s.drop_last)
        bar = self._bar(total)
        try:
            # Training time covers loading the batch and the step, not checkpoint writes.
            started = time.perf_counter()
            for x, y in batches:
                stats = self._step(x, y)
                self.sums.add(stats, len(y))
                self.step += 1
                self.steps_done += 1
                self.sums.seconds += time.perf_counter() - started
                bar.update(len(y))
                bar.set_postfix_str(self._postfix(), refresh=False)
                if cfg.checkpoint_every and self.steps_done % cfg.checkpoint_every == 0:
                    self._checkpoint()
                started = time.perf_counter()
        finally:
            bar.set_postfix_str(self._postfix(), refresh=False)
            bar.refresh()            # the epoch's final throughput and losses, then cleared
            bar.close()

    def _step(self, x, y):
        # One steady-state step (the second of this process: the first allocates the
        # arena and loads compiled kernels) is traced for peak_memory_bytes.
        traced = self.steps_this_process == 1
        if traced:
            tracemalloc.start()
        try:
            # Overflow shows up as a non-finite loss, reported below on one line; NumPy's
            # own warnings about it would only be noise before that message.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                stats = self.s.trainer.step(x, y)
        finally:
            if traced:
                self.totals["peak_step_bytes"] = max(self.totals["peak_step_bytes"],
                                                     tracemalloc.get_traced_memory()[1])
                tracemalloc.stop()
        self.steps_this_process += 1
        losses = [("loss", stats.loss)]
        losses += [(f"block {i} local loss", v) for i, v in enumerate(stats.block_losses)]
        for what, value in losses:
            if not math.isfinite(value):
                self._diverged(f"{what} became {value}")
        return stats

    def _diverged(self, what: str, when: str | None = None):
        when = when or f"at epoch {self.epoch + 1} step {self.step + 1}"
        last = self.last_checkpoint or "none (the run diverged before its first checkpoint)"
        raise DivergedError(f"{what} {when}; last good checkpoint: {last}")

    def _finish_epoch(self) -> None:
        started = time.perf_counter()
        accuracy = self._evaluate_and_save_model()
        eval_seconds = time.perf_counter() - started
        loss, train_acc, local = self.sums.means()
        throughput = self.sums.images / self.sums.seconds if self.sums.seconds else 0.0
        record = {"epoch": self.epoch + 1, "train_loss": loss, "train_accuracy": train_acc,
                  "block_losses": local, "eval_accuracy": accuracy, "images": self.sums.images,
                  "train_seconds": round(self.sums.seconds, 4), "eval_seconds": round(eval_seconds, 4),
                  "images_per_s": round(throughput, 1)}
        self.metrics.append(record)
        self.totals["train_seconds"] += self.sums.seconds
        self.totals["images"] += self.sums.images
        self.epoch, self.step, self.sums = self.epoch + 1, 0, EpochSums()
        self._checkpoint()
        write_metrics(self.run.metrics, self.metrics)
        plot_curves(self.run.curves, self.metrics)
        self.log(f"epoch {record['epoch']}/{self.s.config.epochs}  train loss {loss:.4f}  "
                 f"train acc {train_acc:.4f}  eval acc {accuracy:.4f}  "
                 f"{record['train_seconds'] + eval_seconds:.1f} s  {throughput:.0f} img/s")

    def _evaluate_and_save_model(self) -> float:
        """Accuracy on the test split with the weights inference uses (for schedule-free
        AdamW: the averaged weights, batch norm refreshed on training batches); the same
        weights are saved as model.ells, so the file is what the accuracy measured."""
        cfg, trainer, data = self.s.config, self.s.trainer, self.s.data
        refresh = data.train.batches(self.s.batch_size, shuffle=True, seed=cfg.seed,
                                     epoch=self.epoch + 1, drop_last=self.s.drop_last)
        with trainer.averaged_weights(refresh) as model, np.errstate(all="ignore"):
            self._require_finite_weights()
            correct = sum(self._correct(model, x, y) for x, y in data.test.batches(self.s.batch_size))
            accuracy = correct / len(data.test)
            model_file.save_model(self.run.model, model, self._model_meta(accuracy))
        return accuracy

    def _correct(self, model, x, y) -> int:
        logits = model.forward(x)
        if not np.isfinite(logits).all():     # finite but huge weights overflow here
            self._diverged("evaluation outputs became non-finite", f"after epoch {self.epoch + 1}")
        return int((logits.argmax(axis=1) == y).sum())

    def _model_meta(self, accuracy: float) -> dict:
        cfg, data = self.s.config, self.s.data
        return {"rule": self.s.trainer.rule.config(), "precision": "fp32", "train_precision": cfg.precision,
                "optimizer": cfg.optimizer,
                "dataset": {"name": data.name, "path": cfg.data, "val_split": cfg.val_split,
                            "class_names": list(data.class_names)},
                "epochs": self.epoch + 1, "eval_accuracy": accuracy, "seed": cfg.seed,
                "created_by": f"edge-lls {__version__}"}

    # -------------------------------------------------------------------- checkpoints
    def _checkpoint(self) -> None:
        self._require_finite_weights()
        self._tick()
        state = {"config": asdict(self.s.config), "epoch": self.epoch, "step": self.step,
                 "steps_done": self.steps_done, "epoch_sums": asdict(self.sums),
                 "metrics": self.metrics, "totals": self.totals, "rng": None,
                 "created_by": f"edge-lls {__version__}"}
        model_file.save_checkpoint(self.run.checkpoint, self.s.trainer, state)
        self.last_checkpoint = self.run.checkpoint

    def _require_finite_weights(self) -> None:
        """Never save a diverged state over the last good one (a step can leave non-finite
        weights behind a finite loss: the update comes after the loss)."""
        trainer = self.s.trainer
        params = trainer.model.params + [p for i in range(len(trainer.model.blocks))
                                         for p in trainer.rule.block_params(i)]
        for p in params:
            if not np.isfinite(p.value).all():
                self._diverged(f"weights of {p.name} became non-finite")

    # -------------------------------------------------------------------- progress
    def _bar(self, total_batches: int):
        from tqdm import tqdm
        images = len(self.s.data.train) if not self.s.drop_last else total_batches * self.s.batch_size
        return tqdm(total=images, initial=self.sums.images, unit="img", unit_scale=True,
                    desc=f"epoch {self.epoch + 1}/{self.s.config.epochs}", leave=False,
                    file=sys.stderr, disable=not self.progress, dynamic_ncols=True, mininterval=0.5)

    def _postfix(self) -> str:
        loss, _, local = self.sums.means()
        blocks = " ".join(f"{v:.3f}" for v in local)
        return f"loss {loss:.3f}" + (f" | local {blocks}" if blocks else "")


# ---------------------------------------------------------------------------- outputs
def write_metrics(path: Path, metrics: list[dict]) -> None:
    """All records, rewritten atomically: after a crash the file matches the checkpoint."""
    text = "".join(json.dumps(m) + "\n" for m in metrics)
    model_file.write_bytes_atomic(path, text.encode())


def plot_curves(path: Path, metrics: list[dict]) -> None:
    """Loss (classifier and each block's local loss) and accuracy per epoch."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [m["epoch"] for m in metrics]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_loss.plot(epochs, [m["train_loss"] for m in metrics], "o-", label="classifier (train)")
    for i in range(len(metrics[0]["block_losses"])):
        ax_loss.plot(epochs, [m["block_losses"][i] for m in metrics], "--", label=f"block {i} local")
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_loss.legend(fontsize="small")
    ax_acc.plot(epochs, [m["train_accuracy"] for m in metrics], "o-", label="train")
    ax_acc.plot(epochs, [m["eval_accuracy"] for m in metrics], "s-", label="eval")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy", ylim=(0, 1.0))
    ax_acc.legend(fontsize="small")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    model_file.write_bytes_atomic(path, buffer.getvalue())


def write_config(path: Path, config: TrainConfig, session: Session) -> None:
    data = session.data
    payload = {**asdict(config), "resolved": {
        "threads": session.threads, "device": session.device.summary(), "batch_size": session.batch_size,
        "num_classes": data.num_classes, "input_shape": list(data.input_shape),
        "dataset": data.describe(), "params": session.model.num_params(),
        "footprint_bytes": session.footprint, "edge_lls": __version__}}
    model_file.write_bytes_atomic(path, (json.dumps(payload, indent=2) + "\n").encode())


# ---------------------------------------------------------------------------- entry point
def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train(given: dict, out: str | Path | None = None, *, resume: bool = False,
          progress: bool = True, log=_stderr) -> dict:
    """Train (or resume) a run. given: the TrainConfig fields the user set. Returns the
    result record (what `--json` prints)."""
    given = {k: v for k, v in given.items() if v is not None}
    unknown = sorted(set(given) - CONFIG_FIELDS)
    if unknown:
        raise ConfigError(f"unknown training option {unknown[0]!r}")
    if resume:
        return _resume(given, out, progress, log)
    config = new_config(given)
    run = RunDir(out if out is not None else default_run_dir(config))
    if run.holds_run():
        raise ConfigError(f"{run.root} already holds a run; add --resume to continue it or "
                          f"choose another --out")
    session = prepare(config)
    created = not run.root.exists()
    run.root.mkdir(parents=True, exist_ok=True)
    try:
        write_config(run.config, config, session)
        log(f"{session.data.describe()}; {config.model} ({session.model.num_params():,} params), "
            f"{config.rule}, {config.optimizer} lr {config.lr}, batch {session.batch_size}, "
            f"{_threads_text(session)} -> {run.root}")
        return TrainingRun(session, run, state=None, progress=progress, log=log).run_all()
    except BaseException as e:
        if not run.checkpoint.exists():
            run.remove_own_files(remove_root=created)
        elif isinstance(e, KeyboardInterrupt):
            _resume_hint(run, log)
        raise


def _resume_hint(run: RunDir, log) -> None:
    log(f"stopped; the last checkpoint is {run.checkpoint}: continue with "
        f"`edge-lls train --out {run.root} --resume`")


def _resume(given: dict, out, progress: bool, log) -> dict:
    if out is None:
        raise ConfigError("--resume needs --out RUN_DIR (the run to continue)")
    run = RunDir(out)
    if not run.checkpoint.exists():
        raise ConfigError(f"{run.root}: no {RunDir.CHECKPOINT} to resume from")
    header, tensors = model_file.read_checkpoint(run.checkpoint)
    state = header["train"]
    if not isinstance(state, dict) or not isinstance(state.get("config"), dict):
        raise FormatError(f"{run.checkpoint}: header field 'train.config' is missing")
    config = resumed_config(state["config"], given, run.checkpoint)
    session = prepare(config)
    model_file.restore_checkpoint(session.trainer, header, tensors, run.checkpoint)
    del tensors
    _check_state(state, session, run.checkpoint)
    if state["epoch"] > config.epochs or (state["epoch"] == config.epochs and state["step"]):
        raise ConfigError(f"{run.root} has trained {state['epoch']} epochs; "
                          f"--epochs {config.epochs} is fewer")
    for stale in model_file.stale_temp_files(run.root):     # left by a killed writer
        with contextlib.suppress(OSError):
            stale.unlink()
    write_config(run.config, config, session)
    write_metrics(run.metrics, state.get("metrics", []))   # drop records past the checkpoint
    if state["epoch"] == config.epochs and state["step"] == 0:
        log(f"{run.root}: all {config.epochs} epochs are trained; raise --epochs to continue")
    else:
        log(f"resuming {run.root} at epoch {state['epoch'] + 1} batch {state['step']}, "
            f"{_threads_text(session)}")
    try:
        return TrainingRun(session, run, state=state, progress=progress, log=log).run_all()
    except KeyboardInterrupt:
        _resume_hint(run, log)
        raise


def _threads_text(session: Session) -> str:
    wanted = session.config.threads or session.device.cores
    capped = f", {wanted} asked: this machine has fewer cores" if session.threads < wanted else ""
    return f"{session.threads} threads ({session.device.name}{capped})"


def _check_state(state: dict, session: Session, path: Path) -> None:
    """The checkpoint's position and records are well formed (a hand-edited header must
    fail with a message, not a traceback)."""
    total = session.data.train.num_batches(session.batch_size, drop_last=session.drop_last)
    for name in ("epoch", "step", "steps_done"):
        if not _count(state.get(name)):
            raise FormatError(f"{path}: header field 'train.{name}' is {state.get(name)!r}, "
                              f"expected an integer >= 0")
    if state["step"] > total:
        raise FormatError(f"{path}: header field 'train.step' is {state['step']}, "
                          f"past the epoch's {total} batches")
    shapes = {"metrics": list, "epoch_sums": dict, "totals": dict}
    for name, kind in shapes.items():
        if not isinstance(state.get(name), kind):
            raise FormatError(f"{path}: header field 'train.{name}' is missing or not a {kind.__name__}")
    fields_of = {"epoch_sums": {f.name for f in fields(EpochSums)},
                 "totals": {"train_seconds", "images", "seconds", "peak_step_bytes"}}
    for name, expected in fields_of.items():
        if set(state[name]) != expected:
            raise FormatError(f"{path}: header field 'train.{name}' has keys {sorted(state[name])}, "
                              f"expected {sorted(expected)}")


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


__all__ = ["TrainConfig", "RunDir", "Session", "prepare", "train", "training_footprint"]

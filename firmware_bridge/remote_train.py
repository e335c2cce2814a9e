"""Training ON the board: `edge-lls train --device cortex-m4 --port PORT --model FILE --dataset ... --data ...`.

The board already runs a fine-tuning model (`edge-lls deploy MODEL --train-last N`); the host
streams the training set to it in TRAIN batches, the board learns (el_train_step, one LLS step
per sample), the host pulls the weights (GET_WEIGHTS) and measures the held-out accuracy itself.

    trainer = RemoteTrainer(board, image, data, lr=0.03, classifier_lr=0.003, seed=0)
    record, tuned = trainer.train_epoch(0, image)   # epoch 1 from `image`: TRAIN ..., GET_WEIGHTS
    trainer.evaluate(tuned)                         # held-out accuracy of the fine-tuned image
    result = train_on_board(board, image, data, config, out="runs/b")   # a run folder, resumable

What one epoch is (and why a resumed run equals an uninterrupted one bit for bit):
  * the board runs the epoch's starting image: the deployed model for epoch 1, the image of
    epoch e's pulled weights (patched_image) for epoch e + 1, deployed (PUT_MODEL, COMMIT) at
    the end of epoch e, so the board's flash always holds the last completed epoch;
  * the first TRAIN of the epoch has RESTART: the board's trainer starts again from that
    image's weights with the epoch's seed, SeedSequence((seed, epoch)) (epoch from 0);
  * the samples come in the order Split.batch_order draws for (seed, epoch), batch_size per
    TRAIN (batch_size changes nothing the board computes: it steps sample by sample);
  * at the end, GET_WEIGHTS: the fine-tuned image, written to the run folder as a checkpoint.
The board's trainer state is more than the int8 weights GET_WEIGHTS returns: the classifier
keeps float32 master weights and biases (its int8 codes are them rounded) and the stochastic
rounding has an xorshift32 state. Neither can be read or written over the protocol, so the
only state a host can re-establish is "an image's weights, a seed": starting every epoch from
that state makes epoch e + 1 a function of the checkpoint alone, and --resume (deploy the
checkpoint, train epoch e + 1 with RESTART) repeats exactly what the uninterrupted run did.
The cost: one deploy per epoch, and the classifier's masters re-start from their codes at
each epoch boundary (what a continuous trainer would have kept below half a code is dropped,
as it is from every model image anyway).

Evaluation runs on the host: the fine-tuned image through firmware_bridge.agent.ImageRunner
(the firmware runner's Python twin, byte for byte), argmax of the int8 output. Images become
the model's int8 input as `edge-lls predict` makes them: [0, 1] pixels scaled to the input's
pixel range, quantized with the input tensor's scale and zero point (finetune.quantize_pixels),
read from the model image itself, so a .tflite, a .ells and a model image give the same bytes.
"""
from __future__ import annotations

import contextlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from edge_lls.errors import ConfigError, DivergedError, EdgeLLSError, FormatError

from . import messages as m
from .board import check_active_model, patched_image, sha256
from .protocol import ProtocolError

DEFAULT_LR = 0.03               # tools/bench_board_accuracy.py's validation picks for the last block with
DEFAULT_CLASSIFIER_LR = 0.003   # the classifier's signal: 0.01-0.03 / 0.003-0.01 (docs/firmware.md)
DEFAULT_EPOCHS = 3
DEFAULT_BATCH = 16
MODES = ("images", "features")
EVAL_CHUNK = 256


# ====================================================================================
# The input the board takes
# ====================================================================================

def _f32(bits: int) -> float:
    return float(np.array([bits], np.uint32).view(np.float32)[0])


def image_input(image: bytes, where: str = "<image>") -> dict:
    """The model image's input: shape (H, W, C), and a tensor-like quantization
    (dtype, scale, zero_point, scales) for finetune.quantize_pixels."""
    from edge_lls.formats import blob
    parsed = blob.open_image(image, where)
    t = parsed["tensors"][parsed["header"]["input_tensor"]]
    if t["type"] != blob.TYPE_CODES["INT8"]:
        raise ConfigError(f"{where}: the model's input is not int8")
    dims = tuple(int(d) for d in t["dims"][:t["rank"]])
    if len(dims) != 4 or dims[0] != 1:
        raise ConfigError(f"{where}: the model's input {dims} is not one image (1, H, W, C)")
    scale = _f32(t["scale"])
    quant = SimpleNamespace(dtype=np.int8, scale=scale, zero_point=int(t["zero_point"]),
                            scales=np.array([scale], np.float32))
    return {"shape": dims[1:], "quantization": quant, "bytes": t["bytes"]}


def quantize_images(x01: np.ndarray, quantization) -> np.ndarray:
    """(N, H, W, C) pixels in [0, 1] -> the model's int8 input, as `edge-lls predict` does."""
    from edge_lls.finetune import quantize_pixels
    return np.ascontiguousarray(quantize_pixels(np.asarray(x01, np.float32), quantization), np.int8)


def epoch_seed(seed: int, epoch: int) -> int:
    """The board's stochastic-rounding seed for epoch `epoch` (from 0): a u32, never 0."""
    value = int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, np.uint32)[0])
    return value or 1


# ====================================================================================
# The trainer: one board, one dataset
# ====================================================================================

class RemoteTrainer:
    """Epochs of LLS training on `board` (a firmware_bridge.board.Board whose HELLO names the
    active model) over `data` (an edge_lls.data Dataset), evaluation on the host."""

    def __init__(self, board, image: bytes, data, *, lr: float = DEFAULT_LR,
                 classifier_lr: float = DEFAULT_CLASSIFIER_LR, seed: int = 0, batch_size: int = DEFAULT_BATCH,
                 mode: str = "images", where: str = "<model>", progress: bool = False):
        from edge_lls.evaluate import check_label_range
        from edge_lls.formats import blob
        from .agent import ImageRunner
        self.board, self.image, self.data, self.where = board, bytes(image), data, where
        self.lr, self.classifier_lr, self.seed = float(lr), float(classifier_lr), int(seed)
        self.batch_size, self.mode, self.progress = int(batch_size), mode, progress
        check_settings(lr=self.lr, classifier_lr=self.classifier_lr, seed=self.seed, batch_size=self.batch_size,
                       mode=mode)
        info = check_board(board, self.image, where)
        self.classes = int(info["classes"])
        check_label_range(data, self.classes)
        if not len(data.train) or not len(data.test):
            raise ConfigError(f"{data.describe()}: training on a board needs training and held-out images")
        self.input = image_input(self.image, where)
        if tuple(data.input_shape) != self.input["shape"]:
            raise ConfigError(f"{data.name}: images of {'x'.join(map(str, data.input_shape))}; the model on "
                              f"{board.name} takes {'x'.join(map(str, self.input['shape']))}")
        parsed = blob.open_image(self.image, where)
        self.blocks = len(parsed["tail"]["blocks"])
        self.first_op = parsed["tail"]["blocks"][0]["first_op"]
        self.cut = parsed["ops"][self.first_op]["record"]["input"]
        self.runner = ImageRunner(self.image, where)      # the frozen prefix: features mode
        self.tick_hz = info.get("tick_hz") or 0

    # ---------------------------------------------------------------- data
    def samples(self, x01: np.ndarray) -> list[bytes]:
        """What the board takes for images in [0, 1]: the model's int8 input (images mode) or the
        int8 features at the cut the host computes with the runner (features mode)."""
        x = quantize_images(x01, self.input["quantization"])
        inputs = [row.tobytes() for row in x]
        if self.mode == "images":
            return inputs
        return [self.runner.run(row, end=self.first_op)[self.cut].tobytes() for row in inputs]

    def order(self, epoch: int):
        """The epoch's (x01, labels) TRAIN batches, in the order of (seed, epoch)."""
        return self.data.train.batches(self.batch_size, shuffle=True, seed=self.seed, epoch=epoch)

    # ---------------------------------------------------------------- one epoch
    def ensure_deployed(self, image: bytes, where: str) -> float:
        """The board runs `image` (deployed if it does not): the seconds the deploy took."""
        start = time.monotonic()
        self.board.hello()
        if self.board.info.get("sha256") != sha256(image).hex() or self.board.info.get("trial") != "confirmed":
            self.board.deploy(image, where=where)
        return time.monotonic() - start

    def train_epoch(self, epoch: int, start_image: bytes, *, epochs: int | None = None,
                    on_batch=None) -> tuple[dict, bytes]:
        """Epoch `epoch` (from 0) from `start_image` (the board runs it: ensure_deployed first).
        -> (its record, the fine-tuned image after it). on_batch(done, total, mean loss);
        epochs: the run's, for the progress bar."""
        from tqdm import tqdm
        seed = epoch_seed(self.seed, epoch)
        total = len(self.data.train)
        losses, block_losses, correct, done = [], [], 0, 0
        ticks = instructions = 0
        seen = None
        start = time.monotonic()
        bar = tqdm(total=total, unit="img", desc=f"epoch {epoch + 1}" + (f"/{epochs}" if epochs else ""),
                   leave=False, file=sys.stderr, disable=not self.progress, dynamic_ncols=True, mininterval=0.5)
        try:
            for x01, labels in self.order(epoch):
                batch = self.samples(x01)
                reply = self.board.train(batch, labels, self.mode, lr=self.lr, classifier_lr=self.classifier_lr,
                                         seed=seed, restart=seen is None)
                if (seen is None and reply["samples_seen"] < len(batch)) or \
                        (seen is not None and reply["samples_seen"] != seen + len(batch)):
                    raise ProtocolError(f"{self.board.name} restarted during epoch {epoch + 1} (it counts "
                                        f"{reply['samples_seen']} samples since its model became active); what it "
                                        f"learned in RAM is gone: continue with --resume")
                seen = reply["samples_seen"]
                for k, (result, label) in enumerate(zip(reply["results"], labels)):
                    if not math.isfinite(result["loss"]):
                        raise DivergedError(f"loss became {result['loss']} at epoch {epoch + 1} sample "
                                            f"{done + k + 1}")
                    losses.append(result["loss"])
                    block_losses.append(result["block_loss"][:self.blocks])
                    correct += int(result["predicted"] == int(label))
                done += len(batch)
                ticks, instructions = ticks + reply["ticks"], instructions + reply["instructions"]
                running = math.fsum(losses) / len(losses)
                bar.update(len(batch))
                bar.set_postfix_str(f"loss {running:.4f}", refresh=False)
                if on_batch is not None:
                    on_batch(done, total, running)
        finally:
            bar.close()
        weights = self.board.get_weights()
        tuned = patched_image(start_image, weights, where=self.where)
        record = {"epoch": epoch + 1, "train_loss": float(np.mean(losses)),
                  "block_losses": [float(v) for v in np.mean(block_losses, axis=0)],
                  "train_accuracy": correct / done, "samples": done, "seed": seed,
                  "board_seconds": ticks / self.tick_hz if self.tick_hz else None, "board_instructions": instructions,
                  "train_seconds": round(time.monotonic() - start, 4), "sha256": sha256(tuned).hex()}
        return record, tuned

    # ---------------------------------------------------------------- evaluation
    def predictions(self, image: bytes) -> np.ndarray:
        """The class the image predicts for every held-out sample (ImageRunner, int8 argmax)."""
        from .agent import ImageRunner
        runner = ImageRunner(image, self.where)
        out = []
        for x01, _ in self.data.test.batches(EVAL_CHUNK):
            for row in quantize_images(x01, self.input["quantization"]):
                out.append(int(np.frombuffer(runner.infer(row.tobytes()), np.int8).argmax()))
        return np.array(out, np.int64)

    def evaluate(self, image: bytes) -> float:
        """Held-out accuracy of a model image on the host."""
        if not len(self.data.test):
            raise ConfigError(f"{self.data.name}: no held-out images to evaluate on")
        return float(np.mean(self.predictions(image) == self.data.test.labels))


def check_board(board, image: bytes, where: str) -> dict:
    """The board's HELLO, if it runs exactly `image` (by SHA-256) and can train it; else one
    ConfigError line."""
    info = board.info or board.hello()
    check_active_model(board, image, where)
    if info.get("cut") is None or not info.get("classes"):
        raise ConfigError(f"{where}: the model on {board.name} has no trainable tail; deploy it with "
                          f"--train-last N (edge-lls deploy MODEL --train-last 1 --port ...)")
    return info


def check_settings(*, lr, classifier_lr, seed, batch_size, mode, epochs=1) -> None:
    for name, value in (("lr", lr), ("classifier-lr", classifier_lr)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ConfigError(f"--{name} must be a finite number >= 0, got {value!r}")

    def integer(value) -> bool:
        return not isinstance(value, bool) and isinstance(value, (int, np.integer))

    if not integer(batch_size) or not 1 <= batch_size <= m.MAX_BATCH:
        raise ConfigError(f"--batch-size must be an integer 1 to {m.MAX_BATCH} (the samples of one TRAIN "
                          f"message), got {batch_size!r}")
    for name, value in (("seed", seed), ("epochs", epochs)):
        if not integer(value) or value < (0 if name == "seed" else 1):
            raise ConfigError(f"--{name} must be an integer >= {0 if name == 'seed' else 1}, got {value!r}")
    if mode not in MODES:
        raise ConfigError(f"training mode {mode!r}: images or features")


# ====================================================================================
# The run folder
# ====================================================================================

@dataclass
class BoardTrainConfig:
    """What defines a run on a board; saved as config.json."""
    model: str                        # the file deployed (absolute), for the record
    model_kind: str                   # tflite, ells, image
    model_sha256: str                 # of the model image the board ran at the start
    dataset: str
    data: str | None = None           # absolute
    val_split: float = 0.2
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = DEFAULT_BATCH
    lr: float = DEFAULT_LR
    classifier_lr: float = DEFAULT_CLASSIFIER_LR
    seed: int = 0
    mode: str = "images"
    port: str | None = None
    device: str | None = None

    def validate(self) -> "BoardTrainConfig":
        check_settings(lr=self.lr, classifier_lr=self.classifier_lr, seed=self.seed, batch_size=self.batch_size,
                       mode=self.mode, epochs=self.epochs)
        return self


# What a resumed run may change: how long and how the samples travel, never what is learned
# (the batch size and the mode change nothing the board computes; tests/test_remote_train.py).
RESUMABLE = frozenset({"epochs", "batch_size", "mode", "port", "device", "data"})
CONFIG_FIELDS = frozenset(f.name for f in fields(BoardTrainConfig))


class RunFolder:
    """RUN_DIR of a board run:
        config.json          BoardTrainConfig (kind "board")
        metrics.jsonl        one record per completed epoch
        checkpoint.json      the last completed epoch: its image, SHA-256, the run's totals
        checkpoints/epoch-000.bin   the model image the board ran at the start
        checkpoints/epoch-NNN.bin   the image with the weights pulled after epoch NNN (.tflite too,
                                    when the model deployed was a .tflite: base.tflite is its copy)
        model.bin, model.tflite     the latest of them: the fine-tuned model
        result.json          at the end"""

    KIND = "board"

    def __init__(self, root):
        self.root = Path(root)
        self.config, self.metrics = self.root / "config.json", self.root / "metrics.jsonl"
        self.checkpoint, self.result = self.root / "checkpoint.json", self.root / "result.json"
        self.images, self.base_tflite = self.root / "checkpoints", self.root / "base.tflite"
        self.model, self.model_tflite = self.root / "model.bin", self.root / "model.tflite"

    def epoch_image(self, epoch: int, suffix: str = ".bin") -> Path:
        return self.images / f"epoch-{epoch:03d}{suffix}"

    def holds_run(self) -> bool:
        return self.config.exists() or self.checkpoint.exists() or (self.root / "checkpoint.ells").exists()

    def is_board_run(self) -> bool:
        try:
            return json.loads(self.config.read_text()).get("kind") == self.KIND
        except (OSError, ValueError, AttributeError):
            return False

    def write_json(self, path: Path, record: dict) -> None:
        from edge_lls.formats.model_file import write_bytes_atomic
        write_bytes_atomic(path, (json.dumps(record, indent=1) + "\n").encode())

    def write_metrics(self, records: list[dict]) -> None:
        from edge_lls.formats.model_file import write_bytes_atomic
        write_bytes_atomic(self.metrics, "".join(json.dumps(r) + "\n" for r in records).encode())

    def read_config(self) -> dict:
        try:
            saved = json.loads(self.config.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{self.root}: no config.json of a run on a board to resume") from None
        except ValueError as e:
            raise FormatError(f"{self.config}: not JSON ({e})") from None
        if not isinstance(saved, dict) or saved.get("kind") != self.KIND or not isinstance(saved.get("config"), dict):
            raise ConfigError(f"{self.root}: not a run on a board (its config.json is not one)")
        unknown = sorted(set(saved["config"]) - CONFIG_FIELDS)
        if unknown:
            raise FormatError(f"{self.config}: unknown field {unknown[0]!r}")
        return saved

    def read_checkpoint(self) -> dict:
        """{"epoch": 0, ...} before the first epoch completed."""
        if not self.checkpoint.exists():
            return {"epoch": 0, "sha256": None, "seconds": 0.0}
        try:
            state = json.loads(self.checkpoint.read_text())
            int(state["epoch"])
        except (ValueError, KeyError, TypeError) as e:
            raise FormatError(f"{self.checkpoint}: not a checkpoint record ({e})") from None
        return state

    def remove_own_files(self, remove_root: bool) -> None:
        for path in (self.config, self.metrics, self.checkpoint, self.result, self.base_tflite, self.model,
                     self.model_tflite):
            with contextlib.suppress(OSError):
                path.unlink()
        if self.images.exists():
            shutil.rmtree(self.images, ignore_errors=True)
        if remove_root:
            with contextlib.suppress(OSError):
                self.root.rmdir()


def new_config(model, kind: str, image: bytes, given: dict, *, dataset: str = "folder",
               val_split: float = 0.2) -> BoardTrainConfig:
    """A fresh run's config: defaults overridden by the options given (None: not given)."""
    settings = {"dataset": dataset, "val_split": val_split, **{k: v for k, v in given.items() if v is not None}}
    return BoardTrainConfig(model=str(Path(model).resolve()), model_kind=kind, model_sha256=sha256(image).hex(),
                            **settings).validate()


def resumed_config(saved: dict, given: dict, where: Path) -> BoardTrainConfig:
    """The saved config with what a resumed run may change; any other option repeated must
    equal the saved value."""
    config = BoardTrainConfig(**saved)
    for name, value in given.items():
        if value is None:
            continue
        if name in RESUMABLE:
            setattr(config, name, value)
        elif value != saved.get(name):
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} {value} differs from the run's {saved.get(name)} ({where}); a resumed run "
                              f"keeps its config (only --batch-size, --data, --device, --epochs, --features, --port "
                              f"may change)")
    return config.validate()


def load_board_dataset(config: BoardTrainConfig, image: bytes, where: str = "<model>"):
    """The run's dataset at the model's input size."""
    from edge_lls.data import load_dataset
    shape = image_input(image, where)["shape"]
    return load_dataset(config.dataset, config.data, input_shape=shape, val_split=config.val_split, seed=config.seed)


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def train_on_board(board, image: bytes, data, config: BoardTrainConfig, out, *, program=None, resume: bool = False,
                   progress: bool = False, log=_stderr, where: str | None = None, after_epoch=None) -> dict:
    """A run on the board in the folder `out`: config.json, then per epoch the pulled model
    (checkpoints/epoch-NNN.bin, .tflite when `program` — the .tflite the image was built
    from — is given), metrics.jsonl, checkpoint.json; then result.json. Returns the result.

    image: the model image of epoch 0 (what was deployed); with resume=True the run's own
    checkpoints/epoch-000.bin must be that image. after_epoch(epoch) is called after each
    epoch's checkpoint (tests stop a run there)."""
    from edge_lls.formats.model_file import write_bytes_atomic
    from edge_lls.formats.tflite import save_tflite
    from .board import fine_tuned_program
    where = where or config.model
    config.validate()
    run = RunFolder(out)
    image = bytes(image)
    if sha256(image).hex() != config.model_sha256:
        raise ConfigError(f"{where}: its model image is not the run's (SHA-256 {sha256(image).hex()[:16]}…, the "
                          f"run's {config.model_sha256[:16]}…)")
    if resume:
        state = run.read_checkpoint()
        done = int(state["epoch"])
        if done > config.epochs:
            raise ConfigError(f"{run.root} has trained {done} epochs; --epochs {config.epochs} is fewer")
        start_image = run.epoch_image(done).read_bytes() if done else image
        if done and sha256(start_image).hex() != state["sha256"]:
            raise FormatError(f"{run.epoch_image(done)}: not the image checkpoint.json names (SHA-256)")
        metrics = [r for r in _read_metrics(run) if r.get("epoch", 0) <= done]
        if len(metrics) != done:
            raise FormatError(f"{run.metrics}: {len(metrics)} epoch records for {done} completed epochs")
        pretrained = state.get("pretrained_accuracy")
        seconds = float(state.get("seconds", 0.0))
        created = False
    else:
        if run.holds_run():
            raise ConfigError(f"{run.root} already holds a run; add --resume to continue it or choose another --out")
        done, start_image, metrics, pretrained, seconds = 0, image, [], None, 0.0
        created = not run.root.exists()
        if run.images.exists():
            raise ConfigError(f"{run.images} exists; choose another --out")
    if resume:                                   # the board runs the checkpoint's image, deployed if not
        board.hello()
        if board.info.get("sha256") != sha256(start_image).hex() or board.info.get("trial") != "confirmed":
            log(f"deploying {run.epoch_image(done).name} to {board.name}: the image of epoch {done}")
            board.deploy(start_image, where=str(run.epoch_image(done)))
    trainer = RemoteTrainer(board, start_image, data, lr=config.lr, classifier_lr=config.classifier_lr,
                            seed=config.seed, batch_size=config.batch_size, mode=config.mode, where=where,
                            progress=progress)
    info = board.info
    record_config = {"kind": RunFolder.KIND, "config": asdict(config),
                     "resolved": {"board": info.get("board"), "board_device": info.get("device"),
                                  "firmware": info.get("firmware"), "classes": trainer.classes,
                                  "input_shape": list(trainer.input["shape"]), "cut": info.get("cut"),
                                  "cut_bytes": info.get("cut_bytes"), "trainable_blocks": trainer.blocks,
                                  "dataset": data.describe(), "train_images": len(data.train),
                                  "test_images": len(data.test)}}
    try:
        if not resume:
            run.images.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(run.epoch_image(0), image)
            if program is not None:
                save_tflite(program, run.base_tflite)
        run.write_json(run.config, record_config)
        run.write_metrics(metrics)
        if run.base_tflite.exists():          # fresh and resumed runs write their .tflite from the same copy
            from edge_lls.formats.tflite import read_tflite
            program = read_tflite(run.base_tflite)
            program.name = Path(config.model).name
        if resume and done == config.epochs:
            log(f"{run.root}: all {config.epochs} epochs are trained; raise --epochs to continue")
        elif resume:
            log(f"resuming {run.root} at epoch {done + 1} of {config.epochs}: {board.name} runs the image of epoch "
                f"{done} ({'the model deployed' if not done else run.epoch_image(done).name})")
        else:
            log(f"{data.describe()}; training on {info.get('board')} ({info.get('device')}) over {board.name}: "
                f"{config.mode}, lr {config.lr:g}, classifier lr {config.classifier_lr:g}, batch {config.batch_size}, "
                f"seed {config.seed} -> {run.root}")
        if pretrained is None:
            pretrained = trainer.evaluate(image)
        for epoch in range(done, config.epochs):
            t0 = time.monotonic()
            deploy_s = trainer.ensure_deployed(start_image, str(run.epoch_image(epoch)) if epoch else where)
            record, tuned = trainer.train_epoch(epoch, start_image, epochs=config.epochs)
            t1 = time.monotonic()
            accuracy = trainer.evaluate(tuned)
            record.update(eval_accuracy=accuracy, eval_seconds=round(time.monotonic() - t1, 4),
                          deploy_seconds=round(deploy_s, 4))
            write_bytes_atomic(run.epoch_image(epoch + 1), tuned)
            write_bytes_atomic(run.model, tuned)
            if program is not None:
                tuned_program = fine_tuned_program(program, image, board_weights(tuned), where=where)
                save_tflite(tuned_program, run.epoch_image(epoch + 1, ".tflite"))
                save_tflite(tuned_program, run.model_tflite)
            seconds += time.monotonic() - t0
            metrics.append(record)
            run.write_metrics(metrics)
            run.write_json(run.checkpoint, {"epoch": epoch + 1, "image": str(run.epoch_image(epoch + 1).name),
                                            "sha256": record["sha256"], "pretrained_accuracy": pretrained,
                                            "seconds": round(seconds, 4)})
            board_s = f"  board {record['board_seconds']:.3g} s" if record["board_seconds"] is not None else ""
            log(f"epoch {epoch + 1}/{config.epochs}  train loss {record['train_loss']:.4f}  train acc "
                f"{record['train_accuracy']:.4f}  eval acc {accuracy:.4f}{board_s}  {time.monotonic() - t0:.1f} s")
            start_image = tuned
            if after_epoch is not None:
                after_epoch(epoch + 1)
        final = start_image
        trainer.ensure_deployed(final, str(run.model))            # the board keeps the fine-tuned model
    except BaseException as e:
        if not run.checkpoint.exists() and not resume:
            run.remove_own_files(remove_root=created)
        elif isinstance(e, (KeyboardInterrupt, EdgeLLSError)):
            log(f"stopped after {len(metrics)} completed epochs ({run.checkpoint}): continue with "
                f"`edge-lls train --out {run.root} --resume`")
        raise
    last = metrics[-1] if metrics else {}
    board_seconds = [r["board_seconds"] for r in metrics if r.get("board_seconds") is not None]
    result = {"eval_accuracy": last.get("eval_accuracy", pretrained), "pretrained_accuracy": pretrained,
              "train_loss": last.get("train_loss"), "train_accuracy": last.get("train_accuracy"),
              "epochs": len(metrics), "samples": sum(r["samples"] for r in metrics),
              "seconds": round(seconds, 4), "board_seconds": round(sum(board_seconds), 6) if board_seconds else None,
              "board": info.get("board"), "board_device": info.get("device"), "device": config.device,
              "port": config.port, "mode": config.mode, "lr": config.lr, "classifier_lr": config.classifier_lr,
              "batch_size": config.batch_size, "seed": config.seed, "dataset": data.name,
              "train_images": len(data.train), "test_images": len(data.test),
              "model": config.model, "model_sha256": config.model_sha256, "sha256": sha256(final).hex(),
              "run_dir": str(run.root), "model_file": str(run.model),
              "tflite_file": str(run.model_tflite) if program is not None else None}
    if not metrics:
        result["model_file"] = None
    run.write_json(run.result, result)
    return result


def board_weights(image: bytes) -> dict:
    """{op: (int8 weights, int32 bias)} of the trainable ops an image holds."""
    from edge_lls.formats import blob
    from .board import image_weights
    return image_weights(image, blob.open_image(image))


def _read_metrics(run: RunFolder) -> list[dict]:
    try:
        return [json.loads(line) for line in run.metrics.read_text().splitlines() if line.strip()]
    except FileNotFoundError:
        return []
    except ValueError as e:
        raise FormatError(f"{run.metrics}: not JSON lines ({e})") from None


__all__ = ["RemoteTrainer", "BoardTrainConfig", "check_board", "RunFolder", "train_on_board", "new_config",
           "resumed_config", "load_board_dataset", "image_input", "quantize_images", "epoch_seed", "board_weights",
           "DEFAULT_LR", "DEFAULT_CLASSIFIER_LR", "DEFAULT_EPOCHS", "DEFAULT_BATCH", "RESUMABLE"]

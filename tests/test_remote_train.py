"""Training ON the board (firmware_bridge/remote_train.py, `edge-lls train --port`), against
the agent (the firmware's protocol, BoardTrainer's arithmetic) in process, over TCP in a
thread, `edge-lls serve` in a subprocess, and the bridge firmware on QEMU (both boards).

Held to: the weights the board learns over several epochs equal BoardTrainer's on the same
samples in the same order, epoch by epoch from the previous epoch's image with the epoch's
seed, bit for bit; images mode and features mode, and any TRAIN batch size, learn the same
bits; the held-out accuracy is that of the pulled model in the Python runtime (TFLM rounding),
reproducibly; the run folder holds each epoch's image and .tflite; a run stopped after an
epoch, in the middle of one, or moved to a wiped board resumes to the uninterrupted run's
final bits, as does the firmware on QEMU after a power loss (SIGKILL) mid-epoch; a board that
restarts mid-epoch is noticed; the CLI end to end (--json, files, the board left running the
fine-tuned model) and every bad input is one line, exit 2, no file left behind.
"""
from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest

from edge_lls.board_train import BoardTrainer
from edge_lls.data import load_dataset
from edge_lls.finetune import quantize_pixels, trainable_tail
from edge_lls.formats import blob
from edge_lls.formats.tflite import read_tflite
from edge_lls.program.interpreter import prepare
from firmware_bridge import remote_train as rt
from firmware_bridge.agent import Agent, AgentPort, ImageRunner
from firmware_bridge.board import Board, patched_image
from firmware_bridge.protocol import ProtocolError
from test_bridge_agent import CLI, Server, _start_serve, image, model_file, program  # noqa: F401  (fixtures)
from test_cli import _npz, assert_one_line_error, run_main

LR, CLASSIFIER_LR = 0.05, 0.02


# ------------------------------------------------------------------ data, boards, runs
@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    """60 images of 10x10x3 (4 classes, the last quarter held out)."""
    return _npz(tmp_path_factory.mktemp("data") / "q.npz", n=60, classes=4, side=10, channels=3)


def agent_board(state) -> Board:
    board = Board(AgentPort(Agent(state)), name="agent")
    board.hello()
    return board


def config(image, data_path, **options) -> rt.BoardTrainConfig:
    settings = {"dataset": "npz", "data": str(data_path), "val_split": 0.25, "epochs": 3, "batch_size": 8,
                "lr": LR, "classifier_lr": CLASSIFIER_LR, "seed": 4, **options}
    return rt.BoardTrainConfig(model="small", model_kind="image", model_sha256=rt.sha256(image).hex(),
                               **settings).validate()


def run_on(board, image, cfg, out, program=None, **options) -> dict:
    data = rt.load_board_dataset(cfg, image)
    return rt.train_on_board(board, image, data, cfg, out, program=program, log=lambda line: None, **options)


def weights_of(path) -> dict:
    return rt.board_weights(Path(path).read_bytes())


def same_weights(a: dict, b: dict) -> bool:
    return sorted(a) == sorted(b) and all(np.array_equal(a[k][0], b[k][0]) and np.array_equal(a[k][1], b[k][1])
                                          for k in a)


def twin_run(program, image, cfg) -> tuple[list[bytes], list[list]]:
    """The board's epochs on the host, independently of remote_train's data path: the .tflite's
    input quantization, the Python runtime's features at the cut, BoardTrainer from each epoch's
    starting image with SeedSequence((seed, epoch)). -> (image after each epoch, losses)."""
    data = load_dataset(cfg.dataset, cfg.data, input_shape=(10, 10, 3), val_split=cfg.val_split, seed=cfg.seed)
    graph = prepare(program, batch=1, fast=False, requantize="tflm")
    parsed = blob.open_image(image)
    cut = program.operators[parsed["tail"]["blocks"][0]["first_op"]].inputs[0]
    x_in = program.tensors[program.inputs[0]]
    images, losses, start = [], [], image
    for epoch in range(cfg.epochs):
        seed = int(np.random.SeedSequence([cfg.seed, epoch]).generate_state(1, np.uint32)[0]) or 1
        twin = BoardTrainer(start, lr=cfg.lr, classifier_lr=cfg.classifier_lr, seed=seed)
        epoch_losses = []
        for i in data.train.batch_order(shuffle=True, seed=cfg.seed, epoch=epoch):
            x01, y = data.train.subset(np.array([i])).arrays()
            x = quantize_pixels(x01, x_in)
            epoch_losses.append(twin.step(graph.run_all([x])[cut], int(y[0])).loss)
        start = patched_image(start, twin.weights())
        images.append(start)
        losses.append(epoch_losses)
    return images, losses


# ------------------------------------------------------------------ what the board learns
def test_the_boards_epochs_equal_board_trainer_bit_for_bit_and_the_run_folder_holds_them(tmp_path, program, image,
                                                                                         npz):
    board = agent_board(tmp_path / "state")
    board.deploy(image)
    cfg = config(image, npz)
    result = run_on(board, image, cfg, tmp_path / "run", program=program)
    twin_images, twin_losses = twin_run(program, image, cfg)
    run = rt.RunFolder(tmp_path / "run")
    metrics = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    assert [r["epoch"] for r in metrics] == [1, 2, 3] and result["epochs"] == 3 and result["samples"] == 3 * 45
    for epoch, (want, losses) in enumerate(zip(twin_images, twin_losses), 1):
        got = run.epoch_image(epoch).read_bytes()
        assert got == want, epoch                                       # every weight, every bias, both CRCs
        record = metrics[epoch - 1]
        assert record["sha256"] == rt.sha256(want).hex() and record["samples"] == 45
        assert record["train_loss"] == pytest.approx(float(np.mean(losses)), rel=1e-12)
        assert len(record["block_losses"]) == 2
        # the epoch's .tflite is the pulled weights in the deployed .tflite: exported for the
        # board with the same options (deploy --train-last 2), it is the epoch's image itself
        tuned = read_tflite(run.epoch_image(epoch, ".tflite"))
        assert blob.build_image(tuned, trainable_tail(tuned, 2)).data == want
    assert run.model.read_bytes() == twin_images[-1] and run.epoch_image(0).read_bytes() == image
    assert same_weights(weights_of(run.model), board.get_weights())
    assert board.hello()["sha256"] == result["sha256"] == rt.sha256(twin_images[-1]).hex()   # the board keeps it
    assert json.loads(run.result.read_text()) == result
    saved = json.loads(run.config.read_text())
    assert saved["kind"] == "board" and saved["config"]["lr"] == LR and saved["resolved"]["trainable_blocks"] == 2
    assert not any(np.array_equal(a[0], b[0]) for a, b in zip(rt.board_weights(image).values(),
                                                              rt.board_weights(twin_images[-1]).values()))


def test_the_held_out_accuracy_is_the_pulled_models_in_the_runtime_and_reproducible(tmp_path, program, image, npz):
    board = agent_board(tmp_path / "state")
    board.deploy(image)
    cfg = config(image, npz, epochs=2)
    first = run_on(board, image, cfg, tmp_path / "a", program=program)
    data = load_dataset("npz", npz, input_shape=(10, 10, 3), val_split=0.25, seed=cfg.seed)
    x01, y = data.test.arrays()
    x = quantize_pixels(x01, program.tensors[program.inputs[0]])
    metrics = [json.loads(line) for line in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    for epoch, record in enumerate(metrics, 1):
        tuned = read_tflite(tmp_path / "a" / "checkpoints" / f"epoch-{epoch:03d}.tflite")
        graph = prepare(tuned, batch=1, fast=False, requantize="tflm")
        predicted = np.array([int(graph.run([row[None]])[0].argmax()) for row in x])
        assert record["eval_accuracy"] == float(np.mean(predicted == y)), epoch
    graph = prepare(program, batch=1, fast=False, requantize="tflm")
    assert first["pretrained_accuracy"] == float(np.mean([int(graph.run([row[None]])[0].argmax()) == label
                                                          for row, label in zip(x, y)]))
    # the same run again, on another board: the same bits and the same numbers
    again = agent_board(tmp_path / "state2")
    again.deploy(image)
    second = run_on(again, image, cfg, tmp_path / "b", program=program)
    keys = ("eval_accuracy", "pretrained_accuracy", "train_loss", "train_accuracy", "sha256", "samples")
    assert {k: first[k] for k in keys} == {k: second[k] for k in keys}
    # the .tflite written and the image run alike: outputs byte for byte (TFLM rounding)
    runner = ImageRunner((tmp_path / "a" / "model.bin").read_bytes())
    tuned = prepare(read_tflite(tmp_path / "a" / "model.tflite"), batch=1, fast=False, requantize="tflm")
    assert all(runner.infer(row.tobytes()) == tuned.run([row[None]])[0].tobytes() for row in x)


def test_the_image_input_quantization_is_the_tflites(program, image, npz):
    data = load_dataset("npz", npz, input_shape=(10, 10, 3), val_split=0.25)
    x01, _ = data.train.arrays()
    from_image = rt.quantize_images(x01, rt.image_input(image)["quantization"])
    assert np.array_equal(from_image, quantize_pixels(x01, program.tensors[program.inputs[0]]))
    assert rt.image_input(image)["shape"] == (10, 10, 3)


def test_features_mode_and_any_batch_size_learn_the_same_bits(tmp_path, image, npz):
    results = []
    for k, options in enumerate(({"batch_size": 8}, {"batch_size": 1, "mode": "features"},
                                 {"batch_size": 64, "mode": "features"}, {"batch_size": 64})):
        board = agent_board(tmp_path / f"state{k}")
        board.deploy(image)
        results.append(run_on(board, image, config(image, npz, epochs=2, **options), tmp_path / f"run{k}"))
    assert len({r["sha256"] for r in results}) == 1
    assert len({(r["eval_accuracy"], r["train_loss"]) for r in results}) == 1
    assert results[1]["mode"] == "features" and results[0]["tflite_file"] is None


# ------------------------------------------------------------------ resume
class Stop(Exception):
    pass


def _stop_after(epoch):
    def hook(done):
        if done == epoch:
            raise Stop(done)
    return hook


class FlakyBoard(Board):
    """A Board whose host stops (Ctrl-C) at the n-th TRAIN batch."""

    def __init__(self, *args, stop_at, **kwargs):
        super().__init__(*args, **kwargs)
        self.batches, self.stop_at = 0, stop_at

    def train(self, *args, **kwargs):
        self.batches += 1
        if self.batches == self.stop_at:
            raise KeyboardInterrupt
        return super().train(*args, **kwargs)


def test_a_run_stopped_after_an_epoch_or_mid_epoch_or_moved_to_a_wiped_board_resumes_to_the_same_bits(tmp_path,
                                                                                                       program, image,
                                                                                                       npz):
    cfg = config(image, npz)
    board = agent_board(tmp_path / "whole")
    board.deploy(image)
    whole = run_on(board, image, cfg, tmp_path / "whole-run", program=program)
    # stopped after epoch 1's checkpoint; resumed on the same board
    board = agent_board(tmp_path / "a")
    board.deploy(image)
    with pytest.raises(Stop):
        run_on(board, image, cfg, tmp_path / "a-run", program=program, after_epoch=_stop_after(1))
    assert rt.RunFolder(tmp_path / "a-run").read_checkpoint()["epoch"] == 1
    resumed = run_on(agent_board(tmp_path / "a"), image, cfg, tmp_path / "a-run", resume=True)
    # stopped in the middle of epoch 2 (the board holds half an epoch in RAM); resumed
    agent = Agent(tmp_path / "b")
    board = FlakyBoard(AgentPort(agent), name="agent", stop_at=6 + 3)        # 6 batches an epoch
    board.hello()
    board.deploy(image)
    with pytest.raises(KeyboardInterrupt):
        run_on(board, image, cfg, tmp_path / "b-run", program=program)
    assert rt.RunFolder(tmp_path / "b-run").read_checkpoint()["epoch"] == 1
    assert len((tmp_path / "b-run" / "metrics.jsonl").read_text().splitlines()) == 1
    mid = run_on(Board(AgentPort(agent), name="agent"), image, cfg, tmp_path / "b-run", resume=True)
    # stopped after epoch 2; resumed on a board that was wiped (the checkpoint is deployed)
    board = agent_board(tmp_path / "c")
    board.deploy(image)
    with pytest.raises(Stop):
        run_on(board, image, cfg, tmp_path / "c-run", program=program, after_epoch=_stop_after(2))
    wiped = agent_board(tmp_path / "c-wiped")
    assert wiped.info["sha256"] is None
    moved = run_on(wiped, image, cfg, tmp_path / "c-run", resume=True)
    assert wiped.hello()["sha256"] == whole["sha256"]
    keys = ("sha256", "eval_accuracy", "train_loss", "pretrained_accuracy", "epochs", "samples")
    for other in (resumed, mid, moved):
        assert {k: other[k] for k in keys} == {k: whole[k] for k in keys}
    for name in ("a-run", "b-run", "c-run"):
        got = [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
        want = [json.loads(line) for line in (tmp_path / "whole-run" / "metrics.jsonl").read_text().splitlines()]
        drop = ("train_seconds", "eval_seconds", "deploy_seconds", "board_seconds")
        assert [{k: v for k, v in r.items() if k not in drop} for r in got] == \
            [{k: v for k, v in r.items() if k not in drop} for r in want], name
        assert (tmp_path / name / "model.tflite").read_bytes() == (tmp_path / "whole-run" / "model.tflite").read_bytes()
    # more epochs later: --epochs may grow
    longer = run_on(agent_board(tmp_path / "a"), image, config(image, npz, epochs=4), tmp_path / "a-run",
                    resume=True)
    assert longer["epochs"] == 4 and longer["sha256"] != whole["sha256"]


def test_a_board_that_restarts_mid_epoch_is_noticed(tmp_path, image, npz):
    agent = Agent(tmp_path / "state")

    class Resetting(Board):
        calls = 0

        def train(self, *args, **kwargs):
            Resetting.calls += 1
            if Resetting.calls == 3:
                agent.reboot()                     # power cut: RAM gone, the model still in flash
            return super().train(*args, **kwargs)

    board = Resetting(AgentPort(agent), name="agent")
    board.hello()
    board.deploy(image)
    with pytest.raises(ProtocolError, match="agent restarted during epoch 1 .*continue with --resume"):
        run_on(board, image, config(image, npz), tmp_path / "run")
    assert not (tmp_path / "run").exists()                 # nothing checkpointed: nothing left


@pytest.mark.parametrize("qemu_board", ["mps2-an386", "mps2-an500"])
def test_the_firmware_on_qemu_trains_as_the_twin_and_resumes_after_a_power_loss_mid_epoch(tmp_path, qemu_board,
                                                                                          program, image, npz):
    """The bridge firmware (make SESSION=1) on QEMU: QEMU is killed (SIGKILL: RAM gone, the flash
    file kept) in the middle of epoch 2; started again, the run resumes to the twin's bits."""
    from conftest import require_tools
    from firmware_bridge.emulator import Emulator, build
    require_tools("arm-none-eabi-gcc", "qemu-system-arm", "make")
    emu = Emulator(qemu_board, tmp_path / "flash.bin", elf=build(qemu_board), log=open(tmp_path / "qemu.log", "w"))
    emu.start()

    class PowerLoss(Board):
        batches = 0

        def train(self, *args, **kwargs):
            PowerLoss.batches += 1
            if PowerLoss.batches == 6 + 3:                         # 6 batches an epoch
                emu.kill()
            return super().train(*args, **kwargs)

    try:
        board = PowerLoss(_serial(emu.port), name=emu.port, timeout=2.0, slow_timeout=30.0, attempts=2)
        board.hello()
        board.deploy(image)
        cfg = config(image, npz)
        with pytest.raises(ProtocolError):
            run_on(board, image, cfg, tmp_path / "run", program=program)
        board.close()
        assert rt.RunFolder(tmp_path / "run").read_checkpoint()["epoch"] == 1
        emu.start()
        with Board.open(emu.port) as board:
            assert board.info["device"] == {"mps2-an386": "cortex-m4", "mps2-an500": "cortex-m7"}[qemu_board]
            assert board.info["sha256"] == rt.sha256((tmp_path / "run" / "checkpoints" / "epoch-001.bin")
                                                     .read_bytes()).hex()      # deployed after epoch 1
            result = run_on(board, image, cfg, tmp_path / "run", resume=True)
            assert board.hello()["sha256"] == result["sha256"]
    finally:
        emu.stop()
    twin_images, _ = twin_run(program, image, cfg)
    assert [(tmp_path / "run" / "checkpoints" / f"epoch-{e:03d}.bin").read_bytes() for e in (1, 2, 3)] == twin_images


def _serial(port):
    import serial
    return serial.serial_for_url(port, baudrate=115200, timeout=0.01)


# ------------------------------------------------------------------ the command line
@pytest.fixture
def server(tmp_path):
    s = Server(Agent(tmp_path / "state"))
    yield s
    s.close()


def _train_args(port, model, npz, out, *extra):
    return ["train", "--device", "cortex-m4", "--port", port, "--model", model, "--train-last", "2",
            "--dataset", "npz", "--data", npz, "--val-split", "0.25", "--epochs", "2", "--batch-size", "8",
            "--lr", str(LR), "--classifier-lr", str(CLASSIFIER_LR), "--seed", "4", "--out", out, *extra]


def test_the_cli_trains_on_the_board_over_tcp_and_resumes(server, model_file, npz, tmp_path, capsys, program,
                                                          image):
    port = f"tcp:127.0.0.1:{server.port}"
    code, out, err = run_main(capsys, "deploy", model_file, "--port", port, "--train-last", "2", "--json")
    assert code == 0, err
    code, out, err = run_main(capsys, *_train_args(port, model_file, npz, tmp_path / "run", "--json", "--progress"))
    assert code == 0, err
    result = json.loads(out)
    assert result["epochs"] == 2 and result["device"] == "cortex-m4" and result["port"] == port
    assert result["model_file"] == str(tmp_path / "run" / "model.bin")
    assert result["tflite_file"] == str(tmp_path / "run" / "model.tflite")
    assert "epoch 1/2  train loss" in err and "eval acc" in err and "img" in err       # log lines, the bar
    twin_images, _ = twin_run(program, image, config(image, npz, epochs=2))
    assert (tmp_path / "run" / "model.bin").read_bytes() == twin_images[-1]
    with Board.open(port) as board:
        assert board.info["sha256"] == result["sha256"]                                 # the board keeps it
    # resume: the run is complete; two more epochs; a changed learning rate is refused
    code, out, err = run_main(capsys, "train", "--out", tmp_path / "run", "--resume", "--epochs", "3", "--json")
    assert code == 0, err
    more = json.loads(out)
    assert more["epochs"] == 3 and "resuming" in err and more["port"] == port
    twin_images, _ = twin_run(program, image, config(image, npz, epochs=3))
    assert (tmp_path / "run" / "model.bin").read_bytes() == twin_images[-1]
    code, out, err = run_main(capsys, "train", "--out", tmp_path / "run", "--resume", "--lr", "0.5")
    assert_one_line_error(code, err, "--lr 0.5 differs from the run's 0.05")
    # the plain line
    code, out, err = run_main(capsys, "train", "--out", tmp_path / "run", "--resume", "--epochs", "3",
                              "--no-progress")
    assert code == 0 and out.startswith("final eval accuracy") and "model.tflite" in out, err


def test_the_cli_takes_a_model_image_as_model(server, npz, tmp_path, capsys, program, image):
    (tmp_path / "m.bin").write_bytes(image)
    with Board.open(server.url) as board:
        board.deploy(image)
    args = _train_args(f"tcp:127.0.0.1:{server.port}", tmp_path / "m.bin", npz, tmp_path / "run", "--epochs", "1",
                       "--json")
    at = args.index("--train-last")
    code, out, err = run_main(capsys, *args[:at], *args[at + 2:])                 # an image takes no --train-last
    assert code == 0, err
    result = json.loads(out)
    assert result["tflite_file"] is None and not (tmp_path / "run" / "model.tflite").exists()
    twin_images, _ = twin_run(program, image, config(image, npz, epochs=1))
    assert (tmp_path / "run" / "model.bin").read_bytes() == twin_images[0]


def test_the_cli_against_edge_lls_serve_in_a_subprocess(tmp_path, model_file, npz, image, program):
    proc, port = _start_serve(tmp_path / "state")
    try:
        deployed = subprocess.run([*CLI, "deploy", str(model_file), "--port", port, "--train-last", "2"],
                                  capture_output=True, text=True, timeout=120)
        assert deployed.returncode == 0, deployed.stderr
        args = [str(a) for a in _train_args(port, model_file, npz, tmp_path / "run", "--features", "--json")]
        trained = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=300)
        assert trained.returncode == 0, trained.stderr
        result = json.loads(trained.stdout)
        assert result["mode"] == "features" and result["board"].startswith("agent@")
        twin_images, _ = twin_run(program, image, config(image, npz, epochs=2))
        assert result["sha256"] == rt.sha256(twin_images[-1]).hex()
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        proc.stdout.close()
        proc.stderr.close()


def _labels_npz(path):
    return _npz(path, n=60, classes=4, side=10, channels=3, y=np.arange(60) % 12)


BAD = [
    (["train", "--device", "cortex-m4", "--model", "{model}", "--dataset", "npz", "--data", "{npz}", "--out", "{out}"],
     "device cortex-m4 is a microcontroller profile for the Cortex-M bridge: it trains on the board, with --port"),
    (["train", "--classifier-lr", "0.1", "--out", "{out}"], "--classifier-lr applies to training on a board"),
    (["train", "--features", "--out", "{out}"], "--features applies to training on a board: add --port PORT"),
    (["train", "--port", "{port}", "--dataset", "npz", "--data", "{npz}", "--out", "{out}"],
     "training on a board needs --model FILE"),
    (["train", "--port", "socket://127.0.0.1:1", "--model", "{model}", "--train-last", "2", "--dataset", "npz",
      "--data", "{npz}", "--out", "{out}"], "socket://127.0.0.1:1: cannot open the port"),
    (["train", "--port", "{port}", "--model", "{model}", "--train-last", "1", "--dataset", "npz", "--data", "{npz}",
      "--out", "{out}"], "not the model on"),
    (["train", "--port", "{port}", "--model", "{untrainable}", "--dataset", "npz", "--data", "{npz}",
      "--out", "{out}", "--deploy-first"], "has no trainable tail; deploy it with --train-last N"),
    (["train", "--port", "{port}", "--model", "{model}", "--train-last", "2", "--dataset", "npz", "--data",
      "{labels}", "--out", "{out}"], "labels go up to 11, out of range for a model with 10 classes"),
    (["train", "--port", "{port}", "--model", "{model}", "--train-last", "2", "--dataset", "npz", "--data", "{npz}",
      "--batch-size", "65", "--out", "{out}"], "--batch-size must be an integer 1 to 64"),
    (["train", "--port", "{port}", "--model", "{model}", "--train-last", "2", "--dataset", "npz", "--data", "{npz}",
      "--rule", "bp", "--out", "{out}"], "--rule does not apply to training on a board"),
    (["train", "--port", "{port}", "--model", "{model}", "--train-last", "2", "--dataset", "npz", "--data", "{npz}",
      "--lr", "-1", "--out", "{out}"], "--lr must be a finite number >= 0"),
    (["train", "--port", "{port}", "--model", "{model}", "--train-last", "2", "--dataset", "mnist",
      "--out", "{out}"], "dataset 'mnist' needs a path"),
    (["train", "--port", "{port}", "--model", "{model}", "--train-last", "2", "--dataset", "npz", "--data", "{npz}",
      "--out", "{taken}"], "already holds a run; add --resume"),
    (["train", "--port", "{port}", "--resume", "--out", "{out}"], "no config.json of a run on a board to resume"),
]


@pytest.mark.parametrize("args,words", BAD, ids=[f"{k}" for k in range(len(BAD))])
def test_bad_input_is_one_line_exit_2_and_leaves_no_file(server, model_file, npz, tmp_path, capsys, args, words,
                                                         image, program):
    untrainable = tmp_path / "plain.bin"
    untrainable.write_bytes(blob.build_image(program).data)
    local = Board.open(server.url)
    local.deploy(untrainable.read_bytes() if "--deploy-first" in args else image)
    local.close()
    args = [a for a in args if a != "--deploy-first"]
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "config.json").write_text("{}")
    values = {"model": str(model_file), "port": f"tcp:127.0.0.1:{server.port}", "npz": str(npz),
              "out": str(tmp_path / "run"), "untrainable": str(untrainable), "taken": str(taken),
              "labels": str(_labels_npz(tmp_path / "l.npz"))}
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_main(capsys, *[a.format(**values) for a in args])
    assert_one_line_error(code, err, words)
    assert out == "" and not (tmp_path / "run").exists()
    assert sorted(tmp_path.rglob("*")) == before

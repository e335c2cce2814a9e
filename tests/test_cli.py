"""The `edge-lls` command: every bad input is one line on stderr, exit status 2, no
traceback and no file left behind; a run killed with SIGKILL mid-epoch resumes to the
same bits; the default `edge-lls train` (make train) and the MNIST run reach their accuracy."""
import gzip
import json
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import MNIST_DIR, require_shared
from edge_lls.cli import main
from edge_lls.formats import model_file as mf

SCRIPT = Path(sys.executable).with_name("edge-lls")
CLI = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "edge_lls.cli"]


def run_main(capsys, *args):
    """main() in this process -> (exit status, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:               # argparse exits itself (after our one-line message)
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, words):
    lines = err.strip().splitlines()
    errors = [line for line in lines if line.startswith("edge-lls: error:")]
    assert code == 2, err
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert words in errors[0], errors[0]
    assert "Traceback" not in err


def _no_temporaries(folder: Path):
    return not [p for p in folder.rglob("*") if p.name.endswith(".tmp")]


# ------------------------------------------------------------------------ data makers
def _npz(path, n=100, classes=4, side=8, channels=1, **extra):
    rng = np.random.default_rng(0)
    y = np.arange(n) % classes
    x = rng.integers(0, 60, (n, side, side, channels), dtype=np.uint8)
    for i, c in enumerate(y):                     # class c lights up quadrant c
        r, q = divmod(int(c) % 4, 2)
        h = side // 2
        x[i, h * r:h * r + h, h * q:h * q + h] += 180
    np.savez(path, x=x, y=extra.pop("y", y), **extra)
    return path


def _idx(folder, n=20, side=28, truncate=0):
    folder.mkdir()
    images = struct.pack(">IIII", 0x803, n, side, side) + bytes(n * side * side - truncate)
    (folder / "t10k-images-idx3-ubyte").write_bytes(images)
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 0x801, n) + bytes(i % 10 for i in range(n)))
    return folder


def _mlperf(folder, rows, sizes):
    folder.mkdir()
    for name, size in sizes.items():
        (folder / name).write_bytes(bytes(size))
    (folder / "y_labels.csv").write_text("".join(r + "\n" for r in rows))
    return folder


def _image_folder(folder):
    from PIL import Image
    for cls in ("cat", "dog"):
        (folder / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("L", (8, 8), 40 * i).save(folder / cls / f"{i}.png")
    (folder / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png")
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A model trained for one epoch on a 4-class 8x8 NPZ (in process, ~1 s)."""
    root = tmp_path_factory.mktemp("trained")
    data = _npz(root / "quadrants.npz")
    code = main(["train", "--dataset", "npz", "--data", str(data), "--epochs", "1", "--batch-size", "16",
                 "--out", str(root / "run"), "--no-progress"])
    assert code == 0
    return root / "run" / "model.ells"


# ------------------------------------------------------------------------- bad input
def _run(tmp: Path):
    return ["--out", tmp / "run", "--epochs", "1"]


def _truncated(source: Path, target: Path) -> Path:
    raw = source.read_bytes()
    target.write_bytes(raw[: len(raw) - 1000])
    return target


# name -> (tmp folder, trained model) -> (arguments, words the error line must contain).
# Each case builds its own bad data when its test runs.
CASES = {
    "unknown model": lambda t, m: (["train", "--model", "resnet50", *_run(t)], "unknown model 'resnet50'; choose one of"),
    "unknown rule": lambda t, m: (["train", "--rule", "hebb", *_run(t)], "unknown rule 'hebb'; choose one of: lls, lls-m"),
    "unknown dataset": lambda t, m: (["train", "--dataset", "imagenet", *_run(t)], "unknown dataset 'imagenet'; valid:"),
    "unknown optimizer": lambda t, m: (["train", "--optimizer", "lion", *_run(t)], "unknown optimizer 'lion'"),
    "unknown device": lambda t, m: (["train", "--device", "esp32", *_run(t)], "unknown device 'esp32'"),
    "missing data folder": lambda t, m: (["train", "--dataset", "mnist", "--data", t / "nowhere", *_run(t)],
                                         "nowhere: IDX dataset folder not found"),
    "missing data path": lambda t, m: (["train", "--dataset", "mnist", *_run(t)], "needs a path"),
    "truncated IDX": lambda t, m: (["train", "--dataset", "mnist", "--data", _idx(t / "idx", truncate=100), *_run(t)],
                                   "truncated IDX file"),
    "unreadable image": lambda t, m: (["train", "--dataset", "folder", "--data", _image_folder(t / "imgs"), *_run(t)],
                                      "broken.png: unreadable image"),
    "wrong y_labels.csv": lambda t, m: (["train", "--dataset", "mlperf-tiny", "--data",
                                         _mlperf(t / "csv", ["a.bin, 2"], {"a.bin": 64}), *_run(t)],
                                        "line 1: expected 'file name, number of classes, label'"),
    "images of different sizes": lambda t, m: (["train", "--dataset", "mlperf-tiny", "--data",
                                                _mlperf(t / "sizes", ["a.bin, 2, 0", "b.bin, 2, 1"],
                                                        {"a.bin": 64, "b.bin": 60}), *_run(t)],
                                               "b.bin: 60 bytes, expected 64 for a 8x8x1 uint8 image"),
    "label out of range (csv)": lambda t, m: (["train", "--dataset", "mlperf-tiny", "--data",
                                               _mlperf(t / "range", ["a.bin, 2, 0", "b.bin, 2, 5"],
                                                       {"a.bin": 64, "b.bin": 64}), *_run(t)],
                                              "label 5 for b.bin is outside [0, 2)"),
    "label out of range (npz)": lambda t, m: (["train", "--dataset", "npz", "--data",
                                               _npz(t / "labels.npz", y=np.arange(100) % 6,
                                                    class_names=np.array(["a", "b", "c", "d"])), *_run(t)],
                                              "label 4 at index 4 is outside [0, 4)"),
    "diverging loss": lambda t, m: (["train", "--dataset", "npz", "--data", _npz(t / "ok.npz"), "--optimizer", "sgd",
                                     "--lr", "1e30", "--batch-size", "16", *_run(t)],
                                    "loss became nan at epoch 1 step 2; last good checkpoint: none"),
    "bad batch size": lambda t, m: (["train", "--batch-size", "1", *_run(t)], "--batch-size must be an integer >= 2"),
    "bad val split": lambda t, m: (["train", "--val-split", "1.5", *_run(t)], "val_split must be strictly between 0 and 1"),
    "not an int": lambda t, m: (["train", "--epochs", "two", *_run(t)], "argument --epochs: invalid int value: 'two'"),
    "unknown flag": lambda t, m: (["train", "--colour", "red", *_run(t)], "unrecognized arguments: --colour red"),
    "cortex-m locally": lambda t, m: (["train", "--device", "cortex-m4", *_run(t)],
                                      "microcontroller profile for the Cortex-M bridge"),
    # VGG8 at batch 256 trains in 0.99 GiB with LLS but needs 2.2 GiB with BP.
    "over the device budget": lambda t, m: (["train", "--device", "rpi", "--model", "vgg8", "--rule", "bp",
                                             "--dataset", "npz", "--data",
                                             _npz(t / "rgb.npz", n=320, side=32, channels=3), "--batch-size", "256",
                                             *_run(t)],
                                            "but the rpi4 budget is 1.0 GiB; lower --batch-size"),
    "resume without a run": lambda t, m: (["train", "--resume", "--out", t / "run"], "no checkpoint.ells to resume"),
    "missing model file": lambda t, m: (["eval", t / "none.ells"], "none.ells: file not found"),
    "not a model file": lambda t, m: (["eval", _npz(t / "ok.npz")], "magic b'PK\\x03\\x04' is not b'ELLS'"),
    "truncated model file": lambda t, m: (["eval", _truncated(m, t / "cut.ells")], "truncated"),
    "eval images of the wrong size": lambda t, m: (["eval", m, "--dataset", "mnist", "--data", _idx(t / "mnist28")],
                                                   "images are 28x28x1 (H x W x C) but input_shape asks for 8x8x1"),
    "eval labels out of range": lambda t, m: (["eval", m, "--dataset", "digits"],
                                              "labels go up to 9, out of range for a model with 4 classes"),
    "info of nothing": lambda t, m: (["info", "nothing"], "neither a model file, a run folder, nor a zoo model"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_and_leaves_no_file(case, tmp_path, trained, capsys):
    args, words = CASES[case](tmp_path, trained)
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run_main(capsys, *args)
    assert_one_line_error(code, err, words)
    assert not (tmp_path / "run").exists()
    assert sorted(tmp_path.rglob("*")) == before and _no_temporaries(tmp_path)


def test_the_installed_command_reports_errors_on_one_line(tmp_path):
    for args, words in ((["train", "--model", "resnet50"], "unknown model"),
                        (["train", "--epochs", "x"], "invalid int value"),
                        (["eval", str(tmp_path / "m.ells")], "file not found")):
        p = subprocess.run(CLI + args, capture_output=True, text=True, cwd=tmp_path, timeout=120)
        assert p.returncode == 2 and p.stdout == "", p
        assert p.stderr.startswith("edge-lls: error:") and p.stderr.count("\n") == 1, p.stderr
        assert words in p.stderr
    assert list(tmp_path.iterdir()) == []
    p = subprocess.run([sys.executable, "-m", "edge_lls.cli", "--version"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout.startswith("edge-lls ")


# ----------------------------------------------------------------------- the commands
def test_train_json_prints_one_object_on_stdout(tmp_path, capsys):
    data = _npz(tmp_path / "q.npz")
    code, out, err = run_main(capsys, "train", "--dataset", "npz", "--data", data, "--epochs", "2",
                              "--batch-size", "16", "--out", tmp_path / "run", "--json", "--progress")
    assert code == 0
    result = json.loads(out)
    for key in ("eval_accuracy", "epochs", "images_per_s", "peak_memory_bytes", "seconds"):
        assert key in result
    assert result["epochs"] == 2 and result["peak_memory_bytes"] > 0
    assert "img/s" in err and "local" in err          # the progress bar: throughput, local losses
    assert "epoch 2/2  train loss" in err and "eval acc" in err


def test_eval_defaults_to_the_dataset_the_model_was_trained_on(trained, capsys):
    code, out, _ = run_main(capsys, "eval", trained.parent, "--json")
    assert code == 0
    result = json.loads(out)
    header = mf.read_header(trained)
    assert result["accuracy"] == header["eval_accuracy"] and result["split"] == "held-out"
    code, out, _ = run_main(capsys, "eval", trained)
    assert code == 0 and out.startswith("accuracy ")


def test_models_lists_the_zoo_with_parameter_counts(capsys):
    code, out, _ = run_main(capsys, "models")
    assert code == 0
    assert "smallconv" in out and "361,930" in out and "mobilenetv1" in out and "vgg8" in out
    code, out, _ = run_main(capsys, "models", "--json")
    rows = {r["name"]: r for r in json.loads(out)["models"]}
    assert rows["smallconv"]["params"] == 361930


def test_info_shows_architecture_rule_precision_and_sizes(trained, capsys):
    code, out, _ = run_main(capsys, "info", trained)
    assert code == 0
    for words in ("model      smallconv", "input      8x8x1", "rule       lls (waveform square",
                  "precision  fp32", "params", "block3", "training memory (lls, batch 128)"):
        assert words in out, out
    code, out, _ = run_main(capsys, "info", "mobilenetv1", "--width", "0.5", "--json")
    info = json.loads(out)
    assert info["rule"] is None and info["params"] > 215_642 and len(info["blocks"]) == 14


def test_devices_lists_the_profiles(capsys):
    code, out, _ = run_main(capsys, "devices")
    assert code == 0 and "rpi4" in out and "cortex-m7" in out and "rpi = rpi4" in out


def test_profile_is_wired_as_a_subcommand(capsys):
    code, out, _ = run_main(capsys, "profile", "--help")
    assert code == 0 and "--model" in out


# ------------------------------------------------------------------- kill and resume
def test_sigkill_mid_epoch_then_resume_ends_with_identical_weights(tmp_path):
    flags = ["--model", "smallconv-l", "--batch-size", "32", "--epochs", "2", "--checkpoint-every", "10",
             "--threads", "1"]
    straight_dir, victim_dir = tmp_path / "straight", tmp_path / "victim"

    def start(out):
        log = open(tmp_path / f"{out.name}.log", "w")
        return subprocess.Popen(CLI + ["train", *flags, "--out", str(out)], stdout=log, stderr=log, cwd=tmp_path)

    straight, victim = start(straight_dir), start(victim_dir)
    checkpoint = victim_dir / "checkpoint.ells"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert victim.poll() is None, (tmp_path / "victim.log").read_text()
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(victim.pid, signal.SIGKILL)
    assert victim.wait(timeout=60) == -signal.SIGKILL
    header = mf.read_header(checkpoint)
    assert (header["train"]["epoch"], header["train"]["step"]) == (0, 10), "killed in the middle of epoch 1"
    assert not (victim_dir / "model.ells").exists()

    resumed = subprocess.run(CLI + ["train", "--out", str(victim_dir), "--resume", "--json"],
                             capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and json.loads(resumed.stdout)["epochs"] == 2
    assert straight.wait(timeout=600) == 0, (tmp_path / "straight.log").read_text()
    for name in ("model.ells", "checkpoint.ells"):
        a, b = mf.read_file(straight_dir / name)[1], mf.read_file(victim_dir / name)[1]
        assert a.keys() == b.keys()
        different = [k for k in a if a[k].tobytes() != b[k].tobytes()]
        assert not different, f"{name}: {different}"
    assert _no_temporaries(victim_dir)


# ------------------------------------------------------------------- end to end runs
def _final_accuracy(stdout: str) -> float:
    line = stdout.strip().splitlines()[-1]
    assert line.startswith("final eval accuracy "), stdout
    return float(line.split()[3])


def test_edge_lls_train_with_no_flags_trains_digits_past_90_percent(tmp_path):
    """What `make train` runs: SmallConv + LLS on the built-in digits, ~10 s on 2 cores."""
    p = subprocess.run(CLI + ["train"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert _final_accuracy(p.stdout) >= 0.9, p.stdout
    (run,) = (tmp_path / "runs").iterdir()
    assert sorted(f.name for f in run.iterdir()) == sorted(
        ["config.json", "metrics.jsonl", "model.ells", "checkpoint.ells", "curves.png"])
    assert "epoch 10/10" in p.stderr


@pytest.mark.long
def test_smallconv_lls_on_mnist_reaches_98_percent_from_the_command_line(tmp_path):
    p = subprocess.run(CLI + ["train", "--model", "smallconv", "--rule", "lls", "--dataset", "mnist",
                              "--data", str(require_shared(MNIST_DIR)), "--epochs", "2", "--json"],
                       capture_output=True, text=True, timeout=1800, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    result = json.loads(p.stdout)
    assert result["eval_accuracy"] >= 0.98, result
    assert result["epochs"] == 2 and result["images_per_s"] > 0 and result["seconds"] > 0

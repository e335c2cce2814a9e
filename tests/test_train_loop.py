"""The training loop in process: what a run folder holds, exact resume, divergence,
device profiles and thread control. (The CLI and the SIGKILL test are in test_cli.py.)"""
import json

import numpy as np
import pytest

from edge_lls import runtime
from edge_lls.devices import DeviceProfile, check_footprint, get_device, require_local
from edge_lls.errors import ConfigError, DataError, DivergedError
from edge_lls.formats import model_file as mf
from edge_lls.rules import StepStats
from edge_lls.evaluate import evaluate_model_file
from edge_lls.training_run import RunDir, TrainingRun, train
from edge_lls.trainer import Trainer


def _tiny_npz(path, n=100, classes=4, seed=0):
    """n 8x8 grayscale images: class c lights up quadrant c (plus noise): learnable fast."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    x = rng.integers(0, 60, (n, 8, 8), dtype=np.uint8)
    for i, c in enumerate(y):
        r, q = divmod(int(c), 2)
        x[i, 4 * r:4 * r + 4, 4 * q:4 * q + 4] += 180
    np.savez(path, x=x, y=y)
    return path


@pytest.fixture
def npz(tmp_path):
    return _tiny_npz(tmp_path / "tiny.npz")


def _train(out, data, resume=False, **given):
    options = {"dataset": "npz", "data": str(data), "epochs": 2, "batch_size": 16, **given}
    if resume:
        options = given
    logs = []
    return train(options, out, resume=resume, progress=False, log=logs.append), logs


def _arrays(path):
    return mf.read_file(path)[1]


def _same_bits(a, b):
    assert a.keys() == b.keys()
    return all(a[k].tobytes() == b[k].tobytes() for k in a)


def test_a_run_folder_holds_config_metrics_model_checkpoint_and_curves(tmp_path, npz):
    out = tmp_path / "run"
    result, logs = _train(out, npz, epochs=3)
    run = RunDir(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(RunDir.FILES)   # no temporaries
    config = json.loads(run.config.read_text())
    assert (config["model"], config["rule"], config["epochs"]) == ("smallconv", "lls", 3)
    assert config["data"] == str(npz)
    records = _records(run.metrics)
    assert [r["epoch"] for r in records] == [1, 2, 3]
    assert {"train_loss", "eval_accuracy", "block_losses", "train_seconds", "images_per_s"} <= set(records[0])
    assert len(records[0]["block_losses"]) == 4
    assert run.curves.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result["epochs"] == 3 and result["eval_accuracy"] == records[-1]["eval_accuracy"]
    assert result["eval_accuracy"] >= 0.9, records           # quadrants are easy
    for key in ("images_per_s", "peak_memory_bytes", "seconds"):
        assert result[key] > 0
    # The saved model is exactly what the accuracy measured.
    assert evaluate_model_file(run.model)["accuracy"] == result["eval_accuracy"]
    assert sum("eval acc" in line for line in logs) == 3


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def _crash_after(monkeypatch, steps):
    """Make the run stop abruptly (like a kill) once `steps` steps are done."""
    original = TrainingRun._step

    def step(self, x, y):
        if self.steps_done >= steps:
            raise KeyboardInterrupt
        return original(self, x, y)

    monkeypatch.setattr(TrainingRun, "_step", step)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_resume_mid_epoch_ends_with_the_same_bits(tmp_path, npz, monkeypatch, precision):
    # 80 training images / 16 = 5 steps an epoch: the checkpoint of step 6 is mid epoch 2.
    _train(tmp_path / "straight", npz, epochs=3, checkpoint_every=3, precision=precision)
    with monkeypatch.context() as m:
        _crash_after(m, 7)
        with pytest.raises(KeyboardInterrupt):
            _train(tmp_path / "crashed", npz, epochs=3, checkpoint_every=3, precision=precision)
    header = mf.read_header(tmp_path / "crashed" / "checkpoint.ells")
    assert (header["train"]["epoch"], header["train"]["step"]) == (1, 1)
    result, logs = _train(tmp_path / "crashed", npz, resume=True)
    assert "resuming" in logs[0] and result["epochs"] == 3
    for name in ("model.ells", "checkpoint.ells"):
        assert _same_bits(_arrays(tmp_path / "straight" / name), _arrays(tmp_path / "crashed" / name)), name
    straight, resumed = (_records(tmp_path / d / "metrics.jsonl") for d in ("straight", "crashed"))
    strip = ("train_seconds", "eval_seconds", "images_per_s")
    assert [{k: v for k, v in r.items() if k not in strip} for r in straight] == \
           [{k: v for k, v in r.items() if k not in strip} for r in resumed]


def test_more_epochs_on_resume_equal_a_longer_run(tmp_path, npz):
    _train(tmp_path / "long", npz, epochs=3)
    _train(tmp_path / "grown", npz, epochs=1)
    _train(tmp_path / "grown", npz, resume=True, epochs=3)
    assert _same_bits(_arrays(tmp_path / "long" / "model.ells"), _arrays(tmp_path / "grown" / "model.ells"))


def test_resume_keeps_the_run_config(tmp_path, npz):
    out = tmp_path / "run"
    _train(out, npz, epochs=2)
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(ConfigError, match=r"--lr 0.1 differs from the run's 0.005"):
        _train(out, npz, resume=True, lr=0.1)
    with pytest.raises(ConfigError, match="trained 2 epochs; --epochs 1 is fewer"):
        _train(out, npz, resume=True, epochs=1)
    with pytest.raises(ConfigError, match="already holds a run; add --resume"):
        _train(out, npz)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files      # refusals change nothing
    with pytest.raises(ConfigError, match="no checkpoint.ells to resume"):
        _train(tmp_path / "nothing", npz, resume=True)


def test_resume_finds_moved_data_through_data(tmp_path, npz):
    out = tmp_path / "run"
    _train(out, npz, epochs=1)
    moved = npz.rename(tmp_path / "moved.npz")
    with pytest.raises(DataError, match="tiny.npz: NPZ file not found"):
        _train(out, npz, resume=True, epochs=2)
    result = train({"epochs": 2, "data": str(moved)}, out, resume=True, progress=False, log=print)
    assert result["epochs"] == 2


def test_a_corrupt_checkpoint_is_refused_on_resume(tmp_path, npz):
    out = tmp_path / "run"
    _train(out, npz, epochs=1)
    raw = (out / "checkpoint.ells").read_bytes()
    (out / "checkpoint.ells").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(Exception, match="truncated"):
        _train(out, npz, resume=True, epochs=2)


def _diverge_at(monkeypatch, call):
    original, calls = Trainer.step, []

    def step(self, x, y):
        calls.append(1)
        stats = original(self, x, y)
        return StepStats(float("nan"), 0, stats.block_losses) if len(calls) == call else stats

    monkeypatch.setattr(Trainer, "step", step)


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, npz, monkeypatch):
    out = tmp_path / "run"
    _train(out, npz, epochs=1)
    good = {f: (out / f).read_bytes() for f in ("checkpoint.ells", "model.ells", "metrics.jsonl")}
    _diverge_at(monkeypatch, 3)
    with pytest.raises(DivergedError) as e:
        _train(out, npz, resume=True, epochs=3, checkpoint_every=1)
    last = out / "checkpoint.ells"
    assert str(e.value) == f"loss became nan at epoch 2 step 3; last good checkpoint: {last}"
    # The checkpoint now holds step 2 of epoch 2 (finite), never the diverged state.
    header, tensors = mf.read_checkpoint(out / "checkpoint.ells")
    assert (header["train"]["epoch"], header["train"]["step"]) == (1, 2)
    assert all(np.isfinite(a).all() for a in tensors.values())
    assert (out / "model.ells").read_bytes() == good["model.ells"]
    assert not mf.stale_temp_files(out)


def test_divergence_before_any_checkpoint_leaves_no_files(tmp_path, npz, monkeypatch):
    _diverge_at(monkeypatch, 2)
    with pytest.raises(DivergedError, match="before its first checkpoint"):
        _train(tmp_path / "run", npz)
    assert not (tmp_path / "run").exists()


def test_a_last_batch_of_one_sample_is_skipped(tmp_path):
    data = _tiny_npz(tmp_path / "odd.npz", n=41)    # 33 train / 8 held out: 33 = 2 x 16 + 1
    result, _ = _train(tmp_path / "run", data, epochs=1)
    assert result["epochs"] == 1


# ---------------------------------------------------------------------------- devices
def test_device_profiles_and_aliases():
    assert get_device("rpi") == get_device("rpi4") and get_device("RPI5").name == "rpi5"
    pi = get_device("rpi4")
    assert (pi.cores, pi.memory_budget, pi.precision) == (4, 1 << 30, "fp32")
    assert get_device("host").cores == runtime.available_cores()
    for name in ("cortex-m4", "cortex-m7"):
        assert get_device(name).precision == "int8"
        with pytest.raises(ConfigError, match="Cortex-M bridge"):
            require_local(get_device(name))
    with pytest.raises(ConfigError, match="unknown device 'esp32'"):
        get_device("esp32")


def test_a_footprint_over_budget_is_refused_naming_its_parts():
    tiny = DeviceProfile("tiny", "a test board", 1, 1000, "fp32", True)
    check_footprint(tiny, {"weights": 600, "step arena": 400}, "m")
    with pytest.raises(ConfigError, match=r"m needs 1001 B to train \(weights 600 B, step arena 401 B\) "
                                          r"but the tiny budget is 1000 B"):
        check_footprint(tiny, {"weights": 600, "step arena": 401}, "m")


def test_a_run_on_a_device_over_its_budget_writes_nothing(tmp_path, npz, monkeypatch):
    import edge_lls.training_run as train_module
    tiny = DeviceProfile("tiny", "a test board", 1, 64 << 10, "fp32", True)
    monkeypatch.setattr(train_module, "get_device", lambda name: tiny)
    with pytest.raises(ConfigError, match="the tiny budget is 64.0 KiB"):
        _train(tmp_path / "run", npz, device="tiny")
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------------------- threads
def test_set_threads_sets_numba_and_keeps_every_blas_single_threaded():
    # All parallel work runs in Numba's pool (GEMMs included, kernels/blas.py), so the
    # BLAS libraries must stay at one thread whatever n is.
    import numba
    from threadpoolctl import threadpool_info
    try:
        for n in (1, runtime.max_threads()):
            assert runtime.set_threads(n) == n
            assert numba.get_num_threads() == n
            blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
            assert blas and all(pool["num_threads"] == 1 for pool in blas), blas
        assert runtime.set_threads(10_000) == runtime.max_threads()      # capped, not an error
    finally:
        runtime.set_threads(runtime.max_threads())
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ConfigError, match="threads must be an integer >= 1"):
            runtime.set_threads(bad)

"""Mixed-precision training (Trainer(precision="fp16"), train --precision fp16): every
activation a step stores is float16, weights / gradients / optimizer state float32.

What is held here: the arena really stores half (its activation views are float16 and its
planned bytes drop); an fp16 step is, bit for bit, the fp32 step with every stored
activation rounded to half (every rule that stores differently, three zoo models); its
gradients point like the fp32 step's on SmallConv (cosine >= 0.99 per tensor); every
rule trains every zoo model; steps allocate nothing more than fp32 steps and are
reproducible; the CLI records the precision and reports a smaller footprint; and on
real MNIST 8k/2k, LLS and BP reach 98 % in fp16 as in fp32 (long).
"""
import contextlib
import json

import numpy as np
import pytest

from conftest import MNIST_DIR, require_shared, traced_peak
from edge_lls.cli import main
from edge_lls.data import load_dataset
from edge_lls.errors import ConfigError
from edge_lls.models import build_model
from edge_lls.nn import layers as L
from edge_lls.rules import RULES
from edge_lls.trainer import Trainer
from test_training import ZOO_SHAPES

F16 = np.float16


def _trainer(name, rule, precision, classes=10, **options):
    model = build_model(name, num_classes=classes, input_shape=ZOO_SHAPES[name], seed=0)
    return Trainer(model, rule=rule, optimizer="adamw", lr=1e-3, precision=precision, seed=0, **options)


@pytest.mark.parametrize("rule", ["lls", "bp"])
def test_fp16_arena_stores_activations_in_half_and_gradients_in_float32(rule):
    fp32, fp16 = (_trainer("smallconv", rule, p).arena(16) for p in ("fp32", "fp16"))
    for views32, views16 in zip(fp32.views, fp16.views):
        for name, v in views16.items():
            kind = name.rstrip("0123456789")
            if kind in ("z", "y", "p"):
                assert v.dtype == F16, name
            else:       # gradients, scratch, heads (one more to widen a half dense output), logits, argmax
                assert v.dtype == (views32[name].dtype if name in views32 else np.float32), name
    # LLS's live set is activations (halved); BP's also holds float32 activation gradients.
    bound = {"lls": 0.55, "bp": 0.7}[rule]
    assert fp16.region_bytes["live"] < bound * fp32.region_bytes["live"]


@contextlib.contextmanager
def _rounded_float32_storage():
    """The reference: the float32 runtime, with every activation a layer stores rounded to
    float16 values in place (the classifier's logits stay float32, as in fp16 mode)."""
    saved = []

    def rounding(cls):
        forward = cls.forward

        def wrapped(self, x, out, *args, **kwargs):
            result = forward(self, x, out, *args, **kwargs)
            if out.dtype == np.float32 and getattr(self, "name", "") != "classifier":
                out[...] = out.astype(F16)
            return result
        saved.append((cls, forward))
        cls.forward = wrapped

    for cls in (L.Conv2d, L.Dense, L.BatchNorm, L.MaxPool2d, L.AvgPool2d, L.AdaptiveAvgPool2d):
        rounding(cls)
    try:
        yield
    finally:
        for cls, forward in saved:
            cls.forward = forward


@pytest.mark.fixed_order       # both steps' GEMMs sum in one order (tests/test_fixed_order.py)
@pytest.mark.parametrize("rule", ["lls", "lls-mxm", "local-losses", "dfa", "bp"])
@pytest.mark.parametrize("name", ["smallconv", "vgg8", "mobilenetv1"])
def test_fp16_step_equals_float32_step_with_activations_rounded_where_stored(name, rule, rng):
    # End to end, the float16 runtime is the float32 runtime with stored activations
    # rounded, bit for bit. The two paths split their GEMMs differently (the float16 one
    # multiplies widened copies, the float32 one rows in place), so this holds when every
    # sgemm sums in one order; with an optimized BLAS a last-bit difference in one GEMM
    # can round one stored activation to the neighbouring half and move later gradients
    # by far more than a derivable bound (MobileNetV1 block 13 by 0.3 of its largest).
    x = rng.random((8, *ZOO_SHAPES[name]), dtype=np.float32).astype(F16).astype(np.float32)
    y = np.arange(8) % 4
    grads = []
    for precision in ("fp32", "fp16"):
        trainer = _trainer(name, rule, precision, classes=4)
        with _rounded_float32_storage() if precision == "fp32" else contextlib.nullcontext():
            stats = trainer.step(x, y)
        assert np.isfinite(stats.loss)
        grads.append({p.name: p.grad.copy() for p in trainer.model.params})
    for pname, want in grads[0].items():
        np.testing.assert_array_equal(grads[1][pname], want, err_msg=pname)


@pytest.mark.parametrize("rule", ["lls", "bp"])
def test_fp16_step_gradients_point_like_the_fp32_step(rule, rng):
    # How far rounding activations moves a step from fp32 (SmallConv, batch 32).
    x = rng.random((32, 28, 28, 1), dtype=np.float32)
    y = np.arange(32) % 10
    grads = []
    for precision in ("fp32", "fp16"):
        trainer = _trainer("smallconv", rule, precision)
        trainer.step(x, y)
        grads.append({p.name: p.grad.astype(np.float64) for p in trainer.model.params})
    for pname, g32 in grads[0].items():
        if pname.endswith(".b") and not pname.startswith("classifier"):
            continue        # a bias before batch norm: its true gradient is zero (rounding noise)
        g16 = grads[1][pname]
        cosine = float((g32 * g16).sum() / (np.linalg.norm(g32) * np.linalg.norm(g16)))
        assert cosine >= 0.99, f"{pname}: cosine {cosine:.4f}"


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("model_name", sorted(ZOO_SHAPES))
def test_every_rule_trains_every_zoo_model_in_fp16(model_name, rule, rng):
    trainer = _trainer(model_name, rule, "fp16", classes=4)
    x = rng.random((4, *ZOO_SHAPES[model_name]), dtype=np.float32)
    before = [p.value.copy() for p in trainer.model.params]
    stats = trainer.step(x, np.array([0, 1, 2, 3]))
    assert np.isfinite(stats.loss) and all(np.isfinite(v) for v in stats.block_losses)
    changed = [not np.array_equal(b, p.value) for b, p in zip(before, trainer.model.params)]
    assert all(changed), [p.name for p, c in zip(trainer.model.params, changed) if not c]


def _second_step_peak(trainer, x, y) -> int:
    trainer.step(x, y)                                  # allocates the arena
    return traced_peak(lambda: trainer.step(x, y))


@pytest.mark.parametrize("rule", ["lls", "bp"])
def test_fp16_steps_allocate_no_more_than_fp32_steps_and_are_reproducible(rule, rng):
    x = rng.random((16, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    peak32 = _second_step_peak(_trainer("smallconv", rule, "fp32"), x, y)
    weights = []
    for _ in range(2):
        trainer = _trainer("smallconv", rule, "fp16")
        # Widening and rounding use the arena's scratch and buffers allocated once.
        assert _second_step_peak(trainer, x, y) <= peak32 + 4096
        weights.append([p.value.copy() for p in trainer.model.params])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_evaluation_runs_in_the_training_precision(rng):
    trainer = _trainer("smallconv", "lls", "fp16")
    x = rng.random((4, 28, 28, 1), dtype=np.float32)
    logits = trainer.model.forward(x)
    assert logits.dtype == np.float32
    arena = next(iter(trainer.model._infer_arenas.values()))
    assert arena.views[0]["z0"].dtype == F16


def test_unknown_training_precision_is_a_config_error():
    with pytest.raises(ConfigError, match="bf16"):
        _trainer("smallconv", "lls", "bf16")


def test_cli_train_fp16_records_precision_and_a_smaller_footprint(tmp_path, capsys):
    results = {}
    for precision in ("fp32", "fp16"):
        out = tmp_path / precision
        assert main(["train", "--epochs", "1", "--batch-size", "64", "--out", str(out), "--json",
                     "--precision", precision]) == 0
        results[precision] = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    r16, r32 = results["fp16"], results["fp32"]
    assert r16["precision"] == "fp16" and 0.0 <= r16["fp16_accuracy"] <= 1.0
    assert r32["precision"] == "fp32"
    config = json.loads((tmp_path / "fp16" / "config.json").read_text())
    assert config["precision"] == "fp16"
    arena16, arena32 = (json.loads((tmp_path / p / "config.json").read_text())["resolved"]["footprint_bytes"]
                        ["step arena"] for p in ("fp16", "fp32"))
    assert arena16 < arena32          # digits is 8x8: the scratch, the same in both, weighs a lot
    assert r16["peak_memory_bytes"] < r32["peak_memory_bytes"]
    assert r16["eval_accuracy"] > 0.5
    assert main(["info", str(tmp_path / "fp16" / "model.ells"), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["precision"] == "fp32" and info["trained"]["train_precision"] == "fp16"   # fp32 master weights


def test_cli_resume_keeps_the_training_precision(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--batch-size", "64", "--out", str(out), "--precision", "fp16"]) == 0
    capsys.readouterr()
    assert main(["train", "--epochs", "2", "--out", str(out), "--resume", "--precision", "fp32"]) == 2
    assert "--precision fp32 differs from the run's fp16" in capsys.readouterr().err


def _train_mnist(rule, precision, epochs=2):
    data = load_dataset("mnist", require_shared(MNIST_DIR), val_split=0.2)
    model = build_model("smallconv", num_classes=10, input_shape=(28, 28, 1), seed=0)
    trainer = Trainer(model, rule=rule, optimizer="adamw-sf", lr=5e-3, temperature=0.5, seed=0,
                      precision=precision)
    for epoch in range(epochs):
        for x, y in data.train.batches(128, shuffle=True, seed=0, epoch=epoch):
            trainer.step(x, y)
    x_test, y_test = data.test.arrays()
    return trainer.evaluate(x_test, y_test, refresh=data.train.batches(128, shuffle=True, seed=0, epoch=epochs))


@pytest.mark.long
@pytest.mark.parametrize("rule", ["lls", "bp"])
def test_fp16_training_reaches_98_percent_on_real_mnist(rule):
    accuracy = _train_mnist(rule, "fp16")
    assert accuracy >= 0.98, f"{rule} fp16: {accuracy:.4f}"


def test_cli_train_fp16_prints_the_half_precision_accuracy(tmp_path, capsys):
    assert main(["train", "--epochs", "1", "--batch-size", "64", "--out", str(tmp_path / "r"),
                 "--precision", "fp16", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "final eval accuracy" in out and "fp16 inference (float16 weights and activations): accuracy" in out

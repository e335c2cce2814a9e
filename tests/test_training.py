"""Training end to end: every rule on every zoo model runs; steps are deterministic;
and on real MNIST (8,000 train / 2,000 held out) LLS and BP reach 98 % (long)."""
import numpy as np
import pytest

from conftest import MNIST_DIR, require_shared
from edge_lls.data import load_dataset
from edge_lls.models import build_model
from edge_lls.rules import RULES
from edge_lls.trainer import Trainer

ZOO_SHAPES = {"smallconv": (28, 28, 1), "smallconv-l": (28, 28, 1), "vgg8": (32, 32, 3),
              "mobilenetv1": (96, 96, 3)}


@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("model_name", sorted(ZOO_SHAPES))
def test_every_rule_trains_every_zoo_model(model_name, rule, rng):
    model = build_model(model_name, num_classes=4, input_shape=ZOO_SHAPES[model_name], seed=0)
    trainer = Trainer(model, rule=rule, optimizer="adamw", lr=1e-3)
    x = rng.random((4, *ZOO_SHAPES[model_name]), dtype=np.float32)
    y = np.array([0, 1, 2, 3])
    before = [p.value.copy() for p in model.params]
    stats = trainer.step(x, y)
    assert np.isfinite(stats.loss)
    assert all(np.isfinite(v) for v in stats.block_losses)
    changed = [not np.array_equal(b, p.value) for b, p in zip(before, model.params)]
    assert all(changed), [p.name for p, c in zip(model.params, changed) if not c]


@pytest.mark.parametrize("rule", ["lls", "bp", "dfa"])
def test_steps_are_bit_reproducible(rule, rng):
    x = rng.random((16, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 16)
    weights = []
    for _ in range(2):
        model = build_model("smallconv", seed=3)
        trainer = Trainer(model, rule=rule, optimizer="adamw-sf", lr=5e-3, seed=3)
        for _ in range(3):
            trainer.step(x, y)
        weights.append([p.value.copy() for p in model.params])
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_lls_local_losses_fall_on_a_fixed_batch(rng):
    model = build_model("smallconv", seed=0)
    trainer = Trainer(model, rule="lls", optimizer="adamw", lr=2e-3)
    x = rng.random((32, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, 32)
    first = trainer.step(x, y)
    for _ in range(15):
        last = trainer.step(x, y)
    assert all(b < a for a, b in zip(first.block_losses, last.block_losses)), (first, last)
    assert last.loss < first.loss


def _train_mnist(rule, epochs=2):
    data = load_dataset("mnist", require_shared(MNIST_DIR), val_split=0.2)
    assert (len(data.train), len(data.test)) == (8000, 2000)
    model = build_model("smallconv", num_classes=10, input_shape=(28, 28, 1), seed=0)
    trainer = Trainer(model, rule=rule, optimizer="adamw-sf", lr=5e-3, temperature=0.5, seed=0)
    for epoch in range(epochs):
        for x, y in data.train.batches(128, shuffle=True, seed=0, epoch=epoch):
            trainer.step(x, y)
    x_test, y_test = data.test.arrays()
    refresh = data.train.batches(128, shuffle=True, seed=0, epoch=epochs)
    return trainer.evaluate(x_test, y_test, refresh=refresh)


@pytest.mark.long
@pytest.mark.parametrize("rule", ["lls", "bp"])
def test_smallconv_reaches_98_percent_on_real_mnist(rule):
    accuracy = _train_mnist(rule)
    assert accuracy >= 0.98, f"{rule}: {accuracy:.4f}"

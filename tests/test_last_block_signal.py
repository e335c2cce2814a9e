"""The last block's learning signal (LocalRule(last_block=...), rules/local.py): with
"classifier" the last block learns from the classifier's cross-entropy gradient at its
globally pooled output -- exactly the gradient backpropagation gives that block -- while every
earlier block keeps its LLS head, computed by the same code as plain LLS."""
from __future__ import annotations

import numpy as np
import pytest

from edge_lls.errors import ConfigError
from edge_lls.models import build_model
from edge_lls.trainer import Trainer

# (model, input shape): a dense last block read whole (identity pool), a conv block on a 1x1
# map, and one on a 3x3 map (the adaptive pool's backward spreads dL/dv over 9 pixels).
CASES = [("smallconv", (28, 28, 1)), ("mobilenetv1", (32, 32, 3)), ("mobilenetv1", (96, 96, 3))]


def gradients_after_one_step(name, shape, rule, batch, labels, **options):
    model = build_model(name, num_classes=4, input_shape=shape, seed=5)
    Trainer(model, rule=rule, optimizer="sgd", lr=1e-3, seed=5, **options).step(batch, labels)
    return model, [[p.grad.copy() for p in block.params] for block in model.blocks]


def relative_error(a, b):
    return float(np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b.astype(np.float64)), 1e-30))


@pytest.mark.parametrize("name,shape", CASES)
def test_the_last_block_gets_the_gradient_backpropagation_gives_it(name, shape, rng):
    """Both compute dL/dW of the last block through the classifier; they differ only in the
    order of float32 operations (BP spreads dL/dh over the full map, then runs the block's
    backward; ours hands the block the area-weighted pooled gradient). Each gradient entry is a
    sum of at most N*H*W*C_in = 4*9*256 ~ 1e4 float32 products; rounding errors of a float32
    sum grow like sqrt(n) * 6e-8 ~ 6e-6 relative for random signs, so a relative error of 1e-4
    in the norm leaves more than 10x margin and still fails on any missing or misscaled term
    (a factor of 9, a wrong transpose, the post-step weights)."""
    x = rng.random((4, *shape), dtype=np.float32)
    y = np.array([0, 1, 2, 3])
    _, ours = gradients_after_one_step(name, shape, "lls", x, y, last_block="classifier")
    _, bp = gradients_after_one_step(name, shape, "bp", x, y)
    assert ours[-1] and len(ours[-1]) == len(bp[-1])
    for g, reference in zip(ours[-1], bp[-1]):
        assert np.abs(reference).max() > 0
        assert relative_error(g, reference) < 1e-4


@pytest.mark.parametrize("name,shape", CASES[:2])
def test_earlier_blocks_keep_their_lls_heads_bit_for_bit(name, shape, rng):
    """Blocks before the last run the same code, in the same order, under both signals."""
    x = rng.random((4, *shape), dtype=np.float32)
    y = np.array([3, 2, 1, 0])
    classifier_model, ours = gradients_after_one_step(name, shape, "lls", x, y, last_block="classifier")
    lls_model, lls = gradients_after_one_step(name, shape, "lls", x, y)
    for block_ours, block_lls in zip(ours[:-1], lls[:-1]):
        for g, reference in zip(block_ours, block_lls):
            np.testing.assert_array_equal(g, reference)
    # ... and the last block's own gradient is a different one.
    assert any(not np.array_equal(g, r) for g, r in zip(ours[-1], lls[-1]))


def test_the_rule_as_published_is_the_default_and_is_recorded():
    model = build_model("smallconv", num_classes=4, seed=0)
    assert Trainer(model, rule="lls").rule.config()["last_block"] == "lls"
    model = build_model("smallconv", num_classes=4, seed=0)
    assert Trainer(model, rule="lls-m", last_block="classifier").rule.config()["last_block"] == "classifier"


def test_an_unknown_signal_is_refused():
    with pytest.raises(ConfigError, match="last-block signal 'head'"):
        Trainer(build_model("smallconv", num_classes=4, seed=0), rule="lls", last_block="head")


def test_a_classifier_that_does_not_read_the_global_pool_is_refused():
    """The classifier's input gradient is dL/dv of the block's head only when the head pools
    the whole map, as the classifier's global pool does."""
    model = build_model("mobilenetv1", num_classes=4, input_shape=(96, 96, 3), seed=0)
    model.blocks[-1].pool_size = 2
    with pytest.raises(ConfigError, match="globally pooled output.*pools to \\(2, 2, 256\\)"):
        Trainer(model, rule="lls", last_block="classifier")

"""Fine-tuning's plan options (issue 11, docs/int8.md "Which blocks to train"): the last block's
learning signal (finetune(last_block=...): the classifier's by default, its LLS head on
request) and the blocks' learning rate relative to the classifier's (block_lr_scale: the
default keeps one rate for all, a scale sets the block optimizers alone, bad scales are
refused)."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import VWW_DIR
from edge_lls.errors import ConfigError
from edge_lls.finetune import FineTuner, finetune, load_backbone

VWW_INT8 = VWW_DIR / "vww_96_int8.tflite"

pytestmark = pytest.mark.shared(VWW_DIR)


@pytest.fixture(scope="module")
def vww():
    return load_backbone(VWW_INT8)


@pytest.fixture(scope="module")
def features(vww):
    rng = np.random.default_rng(0)
    x = np.clip(rng.random((1, 96, 96, 3)) * 0.3 + rng.random((8, 96, 96, 3)) * 0.7, 0, 1).astype(np.float32)
    return FineTuner(vww, 2, 2).features(x)


def rates(tuner):
    return [o.lr for o in tuner.trainer.optimizers]


def test_one_rate_for_blocks_and_classifier_by_default(vww, features):
    tuner = FineTuner(vww, 2, 2)
    tuner.start(features, lr=4e-3)
    assert len(tuner.trainer.optimizers) == 3 and rates(tuner) == [4e-3] * 3


def test_block_lr_scale_sets_the_block_optimizers_only(vww, features):
    tuner = FineTuner(vww, 2, 2)
    tuner.start(features, lr=4e-3, block_lr_scale=0.25)
    assert rates(tuner) == [1e-3, 1e-3, 4e-3]


def test_a_smaller_block_rate_moves_the_block_less(vww, features):
    """Same steps, same batches: the block's weights move less at a smaller scale while the
    classifier, at the same rate, still trains."""
    labels = np.arange(len(features)) % 2
    moved = {}
    for scale in (1.0, 0.01):
        tuner = FineTuner(vww, 2, 2)
        block = tuner.model.blocks[-1].units[-1].op.w
        start_block, start_classifier = block.value.copy(), tuner.model.classifier.w.value.copy()
        tuner.start(features, block_lr_scale=scale)
        for _ in range(3):
            tuner.step(features, labels)
        moved[scale] = (np.abs(block.value - start_block).max(),
                        np.abs(tuner.model.classifier.w.value - start_classifier).max())
    assert moved[0.01][0] < 0.05 * moved[1.0][0]
    assert moved[0.01][1] > 0


def test_the_last_block_learns_from_the_classifier_by_default(vww, features):
    tuner = FineTuner(vww, 2, 2)
    tuner.start(features)
    assert tuner.trainer.rule.config()["last_block"] == "classifier"
    tuner = FineTuner(vww, 2, 2)
    tuner.start(features, last_block="lls")
    assert tuner.trainer.rule.config()["last_block"] == "lls"
    tuner = FineTuner(vww, 2, 2)
    tuner.start(features, rule="bp")                 # BP's last block learns from the classifier anyway
    assert "last_block" not in tuner.trainer.rule.config()
    with pytest.raises(ConfigError, match="last-block signal 'pool'"):
        FineTuner(vww, 1, 2).start(features, last_block="pool")


@pytest.mark.parametrize("scale", [0, -0.5, float("nan"), float("inf"), True, "0.1"])
def test_bad_block_lr_scale_is_refused(vww, features, scale):
    with pytest.raises(ConfigError, match="block learning-rate scale"):
        FineTuner(vww, 1, 2).start(features, block_lr_scale=scale)


def test_finetune_records_the_block_rate(vww):
    from edge_lls.data.dataset import Dataset
    from edge_lls.data.split import Split
    from edge_lls.data.stores import ArrayStore
    rng = np.random.default_rng(1)
    store = ArrayStore(rng.integers(0, 256, (12, 96, 96, 3), dtype=np.uint8), 255.0)
    labels = np.arange(12) % 2
    data = Dataset("noise", Split(store, labels, np.arange(8)), Split(store, labels, np.arange(8, 12)), 2,
                   (96, 96, 3), ("a", "b"))
    _, result = finetune(vww, data, train_last=1, epochs=1, batch_size=4, calibration_images=4, lr=2e-3,
                         block_lr_scale=0.5)
    assert result["lr"] == 2e-3 and result["block_lr"] == 1e-3 and result["last_block"] == "classifier"
    _, default = finetune(vww, data, train_last=1, epochs=1, batch_size=4, calibration_images=4, lr=2e-3,
                          last_block="lls")
    assert default["block_lr"] == 2e-3 and default["last_block"] == "lls"

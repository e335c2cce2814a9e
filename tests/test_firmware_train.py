"""The LLS update on the chip (firmware src/lls/, el_train.c) against its Python twin
(edge_lls/board_train.py), on the host.

tests/firmware_train_harness.c links el_model.c, el_runner.c, the kernels and src/lls/ with
the host gcc under the firmware's strict flags, -ffp-contract=off and ASan + UBSan, and runs
el_train_step on a file of (label, input) samples. Held to, bit for bit:

- every step's LLS losses, classifier loss and prediction (float32 bits), every trainable
  op's int8 weights and int32 biases after the steps, and the model's output after training,
  equal to the twin's, on vww_96_int8 (last 1 and last 2 blocks, the two sample images and
  random inputs) and on a small model that exercises what VWW does not: stride-2 depthwise
  with SAME padding, ReLU6 (a clamp below 127), 10 classes, pool 2 on a 5x5 map
  (overlapping windows);
- the steps move weights (so equality is not the trivial "nothing changed"), and repeated
  steps on one sample lower its losses (the update descends);
- the training buffer is el_train_plan's size, which train_layout() computes; one byte less
  is refused, as are a model without a tail and a label out of range.

Why bit-exact and not a tolerance: both sides run the same float32 operations in the same
order by construction (no FMA, no reassociation, exp / log from the same polynomials, sqrt
and division correctly rounded on every IEEE machine), and a float difference of one ulp
could flip a stochastic rounding and change an int8 weight, which a tolerance on the weights
could not tell from a bug.
"""
from __future__ import annotations

import os
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import C_SANITIZE as SANITIZE, C_STRICT as STRICT, FIRMWARE, SAMPLES_DIR, VWW_DIR
from test_firmware_vww import _bench
from edge_lls.board_train import (LAST_BLOCK_SIGNALS, OPTIMIZERS, BoardTrainer, expf, factored_end,
                                  factored_normalise, factored_row_end, factored_total, fraction_round_step, logf,
                                  normalised, rng_uniform, stochastic_round_step, train_layout)
from edge_lls.errors import ConfigError
from edge_lls.finetune import trainable_tail
from edge_lls.formats import blob
from edge_lls.formats.tflite import read_tflite
from edge_lls.program.interpreter import prepare
from edge_lls.rules.basis import lls_basis, nhwc_to_channel_major

SOURCES = [FIRMWARE / "src" / "el_model.c", FIRMWARE / "src" / "el_crc32.c", FIRMWARE / "src" / "el_runner.c",
           *sorted((FIRMWARE / "src" / "kernels").glob("el_*.c")), *sorted((FIRMWARE / "src" / "lls").glob("*.c"))]
HARNESS = Path(__file__).with_name("firmware_train_harness.c")
FLOAT_FLAGS = ["-ffp-contract=off", "-fno-math-errno"]   # as the firmware's Makefile
VWW_INT8 = VWW_DIR / "vww_96_int8.tflite"
STATS = struct.Struct("<5fI")


@pytest.fixture(scope="module")
def harness(gcc, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "firmware_train_harness"
    cmd = [gcc, *STRICT, *SANITIZE, *FLOAT_FLAGS, f"-I{FIRMWARE / 'include'}", "-o", str(out), str(HARNESS),
           *map(str, SOURCES), "-lm"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0 and result.stderr == "", result.stderr
    return out


def f32_bits(value: float) -> str:
    return hex(struct.unpack("<I", struct.pack("<f", value))[0])


def run_harness(harness, image: bytes, samples, lr: float, classifier_lr: float, seed: int, folder: Path,
                buffer: int | None = None, last_block: str = "lls", fractions: bool = False,
                optimizer: str = "sgd") -> subprocess.CompletedProcess:
    (folder / "model.bin").write_bytes(image)
    (folder / "samples.bin").write_bytes(b"".join(struct.pack("<I", int(label)) +
                                                  np.ascontiguousarray(x, np.int8).tobytes() for x, label in samples))
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    cmd = [str(harness), str(folder / "model.bin"), str(folder / "samples.bin"), str(folder / "out.bin"),
           f32_bits(lr), f32_bits(classifier_lr), str(seed), str(LAST_BLOCK_SIGNALS[last_block])] + \
        [str(buffer) if buffer is not None else "-", str(int(fractions)), str(OPTIMIZERS[optimizer])]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def c_training(harness, image, samples, lr, classifier_lr, seed, folder, output_bytes, last_block="lls",
               fractions=False, optimizer="sgd"):
    """(per-step stats tuples, {op: (weights, bias)}, outputs after training, stdout, the block
    ops' [(fractions, moments)]) from the C."""
    result = run_harness(harness, image, samples, lr, classifier_lr, seed, folder, last_block=last_block,
                         fractions=fractions, optimizer=optimizer)
    assert result.returncode == 0 and "runtime error" not in result.stderr, result.stderr[-4000:]
    raw, at = (folder / "out.bin").read_bytes(), 0
    stats = []
    for _ in samples:
        stats.append(STATS.unpack_from(raw, at))
        at += STATS.size
    weights, state = {}, []
    (op_count,) = struct.unpack_from("<I", raw, at)
    at += 4
    for _ in range(op_count):
        op, nw, nb = struct.unpack_from("<III", raw, at)
        at += 12
        weights[op] = (np.frombuffer(raw, np.int8, nw, at).copy(), np.frombuffer(raw, np.int32, nb, at + nw).copy())
        at += nw + 4 * nb
    for _ in range(op_count - 1):
        (nf,) = struct.unpack_from("<I", raw, at)
        fractions = np.frombuffer(raw, np.int8, nf, at + 4).copy()
        at += 4 + nf
        (nm,) = struct.unpack_from("<I", raw, at)
        state.append((fractions, np.frombuffer(raw, np.float32, nm, at + 4).copy()))
        at += 4 + 4 * nm
    outputs = [raw[at + k * output_bytes:at + (k + 1) * output_bytes] for k in range(len(samples))]
    assert at + len(samples) * output_bytes == len(raw)
    return stats, weights, outputs, result.stdout, state


def twin_training(program, image, samples, lr, classifier_lr, seed, last_block="lls", fractions=False,
                  optimizer="sgd"):
    graph = prepare(program, batch=1, fast=False, requantize="tflm")
    tail = blob.open_image(image)["tail"]
    cut = program.operators[tail["blocks"][0]["first_op"]].inputs[0]
    features = [graph.run_all([x])[cut] for x, _ in samples]
    twin = BoardTrainer(image, lr=lr, classifier_lr=classifier_lr, seed=seed, last_block=last_block,
                        fractions=fractions, optimizer=optimizer)
    before = twin.weights()
    stats = []
    for f, (_, label) in zip(features, samples):
        s = twin.step(f, label)
        losses = s.block_loss + [0.0] * (4 - len(s.block_loss))
        stats.append(tuple(float(np.float32(v)) for v in (*losses, s.loss)) + (s.predicted,))
    outputs = [twin.predict(f).tobytes() for f in features]
    state = [(fraction.reshape(-1), moment) for fractions, moments in zip(twin._fractions, twin._moments)
             for fraction, moment in zip(fractions, moments)]
    return stats, before, twin.weights(), outputs, state


def assert_c_equals_twin(harness, program, image, samples, lr, classifier_lr, seed, folder, last_block="lls",
                         fractions=False, optimizer="sgd"):
    twin_stats, before, twin_weights, twin_outputs, twin_state = twin_training(
        program, image, samples, lr, classifier_lr, seed, last_block, fractions, optimizer)
    c_stats, c_weights, c_outputs, _, c_state = c_training(
        harness, image, samples, lr, classifier_lr, seed, folder, len(twin_outputs[0]), last_block, fractions,
        optimizer)
    assert c_stats == twin_stats
    assert sorted(c_weights) == sorted(twin_weights)
    moved = 0
    for op, (w, b) in twin_weights.items():
        assert np.array_equal(c_weights[op][0], w), f"op {op}: {np.count_nonzero(c_weights[op][0] != w)} weights differ"
        assert np.array_equal(c_weights[op][1], b), f"op {op}: biases differ"
        moved += np.count_nonzero(w != before[op][0])
    assert moved > 0.005 * sum(w.size for w, _ in twin_weights.values()), moved   # equality of moved weights
    # the optimizer's state bit for bit: a step's moment can differ by an ulp and round a weight
    # the same way, so the weights alone would not show it
    assert len(c_state) == len(twin_state)
    for k, ((c_frac, c_moment), (frac, moment)) in enumerate(zip(c_state, twin_state)):
        assert np.array_equal(c_frac, frac), f"block op {k}: fractions differ"
        assert c_moment.tobytes() == moment.tobytes(), f"block op {k}: {np.count_nonzero(c_moment != moment)} moments differ"
    # the board's int8 inference with the learned weights: the twin's, classifier byte for byte
    assert c_outputs == twin_outputs
    return c_stats


# ------------------------------------------------------------------ vww_96_int8
def _vww_samples(program, count: int, seed: int):
    images = [x for _, x in _bench().sample_inputs(program, SAMPLES_DIR)]
    rng = np.random.default_rng(seed)
    while len(images) < count:
        images.append(rng.integers(-128, 128, images[0].shape).astype(np.int8))
    labels = [1, 0] + list(rng.integers(0, 2, count - 2))
    return list(zip(images[:count], labels))


@pytest.mark.shared(VWW_DIR, SAMPLES_DIR)
@pytest.mark.parametrize("train_last,lr,classifier_lr,seed", [(1, 0.3, 0.05, 1), (2, 0.2, 0.01, 12345)])
def test_the_board_trains_vww_as_its_twin_predicts_bit_for_bit(harness, train_last, lr, classifier_lr, seed,
                                                               tmp_path):
    program = read_tflite(VWW_INT8)
    image = blob.build_image(program, trainable_tail(program, train_last)).data
    samples = _vww_samples(program, 6, seed)
    stats = assert_c_equals_twin(harness, program, image, samples, lr, classifier_lr, seed, tmp_path)
    assert all(np.isfinite(s[:5]).all() for s in stats)


@pytest.mark.shared(VWW_DIR, SAMPLES_DIR)
@pytest.mark.parametrize("train_last,lr,classifier_lr,seed", [(1, 0.3, 0.05, 7), (2, 0.2, 0.01, 321)])
def test_the_last_block_learning_from_the_classifier_trains_vww_as_its_twin_predicts(harness, train_last, lr,
                                                                                     classifier_lr, seed, tmp_path):
    """last_block = classifier (the board's default): the last block's loss is the classifier's
    cross-entropy, the blocks before it keep their LLS heads; still bit for bit."""
    program = read_tflite(VWW_INT8)
    image = blob.build_image(program, trainable_tail(program, train_last)).data
    samples = _vww_samples(program, 6, seed)
    stats = assert_c_equals_twin(harness, program, image, samples, lr, classifier_lr, seed, tmp_path, "classifier")
    assert all(s[train_last - 1] == s[4] for s in stats)          # the last block reports the classifier's CE
    assert all(np.isfinite(s[:5]).all() for s in stats)
    lls = twin_training(program, image, samples, lr, classifier_lr, seed, "lls")[0]
    # the first step, before any update: the earlier blocks' LLS losses and the classifier's are
    # the same (later steps differ: the last block's update draws other random numbers)
    assert stats[0][:train_last - 1] == lls[0][:train_last - 1] and stats[0][4] == lls[0][4]
    assert [s[:5] for s in stats] != [s[:5] for s in lls]


@pytest.mark.shared(VWW_DIR, SAMPLES_DIR)
@pytest.mark.parametrize("train_last,last_block,lr,classifier_lr,seed",
                         [(1, "classifier", 0.03, 0.01, 3), (2, "lls", 0.2, 0.01, 44)])
def test_sixteen_bit_masters_train_vww_as_the_twin_predicts(harness, train_last, last_block, lr, classifier_lr,
                                                            seed, tmp_path):
    """el_train_config.fractions = 1: an int8 fraction per block weight. Still bit for bit, and
    not the int8-only run: small steps that stochastic rounding at the code turns into whole
    codes or nothing now accumulate in the fraction."""
    program = read_tflite(VWW_INT8)
    image = blob.build_image(program, trainable_tail(program, train_last)).data
    samples = _vww_samples(program, 6, seed)
    stats = assert_c_equals_twin(harness, program, image, samples, lr, classifier_lr, seed, tmp_path, last_block,
                                 fractions=True)
    plain = twin_training(program, image, samples, lr, classifier_lr, seed, last_block)
    sixteen = twin_training(program, image, samples, lr, classifier_lr, seed, last_block, fractions=True)
    assert stats == sixteen[0] and stats[0] == plain[0][0]       # the first step's losses: before any update
    assert any(not np.array_equal(sixteen[2][op][0], plain[2][op][0]) for op in plain[2])


@pytest.mark.shared(VWW_DIR, SAMPLES_DIR)
@pytest.mark.parametrize("train_last,fractions,lr,seed,optimizer",
                         [(1, False, 0.003, 5, "rmsprop"), (2, True, 0.001, 55, "rmsprop"),
                          (1, True, 0.003, 6, "rmsprop-factored"), (2, False, 0.001, 56, "rmsprop-factored")])
def test_rmsprop_trains_vww_as_the_twin_predicts(harness, train_last, fractions, lr, seed, optimizer, tmp_path):
    """el_train_config.optimizer = EL_TRAIN_RMSPROP (a float32 second moment per block weight
    and bias) or EL_TRAIN_RMSPROP_FACTORED (row and column sums a weight matrix, skipped rows
    decaying); still bit for bit (sqrt and division are correctly rounded on both sides)."""
    program = read_tflite(VWW_INT8)
    image = blob.build_image(program, trainable_tail(program, train_last)).data
    samples = _vww_samples(program, 6, seed)
    stats = assert_c_equals_twin(harness, program, image, samples, lr, 0.01, seed, tmp_path, "classifier",
                                 fractions=fractions, optimizer=optimizer)
    sgd = twin_training(program, image, samples, lr, 0.01, seed, "classifier", fractions)
    assert stats[0] == sgd[0][0] and stats != sgd[0]        # the same first forward, then other steps


def _small_program():
    """Stem conv, a stride-2 dwsep (SAME padding), a dwsep on 5x5, ReLU6, 10 classes: int8 by PTQ."""
    from edge_lls.nn.model import Model
    from edge_lls.program.lower import float_program
    from edge_lls.program.ptq import quantize_program
    spec = {"name": "small-dwsep", "input_shape": [10, 10, 3], "num_classes": 10, "classifier": {"bias": True},
            "blocks": [{"type": "conv", "filters": 8, "kernel": 3, "stride": 1, "padding": "same", "act": "relu6",
                        "pool_size": 2},
                       {"type": "dwsep", "filters": 12, "kernel": 3, "stride": 2, "padding": "same", "act": "relu6",
                        "pool_size": 2},
                       {"type": "dwsep", "filters": 16, "kernel": 3, "stride": 1, "padding": "same", "act": "relu6",
                        "pool_size": 2, "post": [{"type": "adaptive_avgpool", "size": [1, 1]}]}]}
    model = Model(spec, seed=5)
    rng = np.random.default_rng(6)
    batches = [rng.uniform(0, 1, (8, 10, 10, 3)).astype(np.float32) for _ in range(4)]
    return quantize_program(float_program(model, softmax=True), batches)


def _tail_with_pool(program, train_last: int, pool: int) -> blob.Tail:
    """trainable_tail with every block's pool size set to `pool` (its basis rebuilt)."""
    tail = trainable_tail(program, train_last)
    blocks = []
    for b in tail.blocks:
        shape = program.tensors[b.output].shape
        pooled = (pool, pool, shape[-1])
        basis = lls_basis(tail.num_classes, int(np.prod(pooled)), tail.waveform)
        blocks.append(blob.TailBlock(b.kind, b.ops, b.output, pool,
                                     np.ascontiguousarray(basis[:, nhwc_to_channel_major(pooled)])))
    return blob.Tail(tuple(blocks), tail.num_classes, tail.waveform, tail.temperature, tail.classifier_op)


@pytest.fixture(scope="module")
def small_program():
    return _small_program()


def test_stride_2_relu6_ten_classes_and_overlapping_pool_windows_train_as_the_twin(harness, small_program,
                                                                                    tmp_path):
    program = small_program
    tail = _tail_with_pool(program, 2, 2)
    assert {program.tensors[b.output].shape[1] for b in tail.blocks} == {5}   # 2 cells over 5 rows: overlap
    ops = program.operators
    assert ops[tail.blocks[0].ops[0]].options["stride_h"] == 2
    assert ops[tail.blocks[0].ops[0]].options["activation"] == "RELU6"
    image = blob.build_image(program, tail).data
    rng = np.random.default_rng(9)
    samples = [(rng.integers(-128, 128, (1, 10, 10, 3)).astype(np.int8), int(rng.integers(0, 10))) for _ in range(12)]
    assert_c_equals_twin(harness, program, image, samples, 0.2, 0.1, 99, tmp_path)


def test_the_small_model_learning_from_the_classifier_trains_as_the_twin(harness, small_program, tmp_path):
    """The stride-2 / ReLU6 / 10-class model, its last block (pool 2 for its unused LLS head)
    from the classifier: the update then spreads one value a channel over the 5x5 map."""
    program = small_program
    tail = _tail_with_pool(program, 2, 2)
    image = blob.build_image(program, tail).data
    rng = np.random.default_rng(19)
    samples = [(rng.integers(-128, 128, (1, 10, 10, 3)).astype(np.int8), int(rng.integers(0, 10))) for _ in range(12)]
    stats = assert_c_equals_twin(harness, program, image, samples, 0.2, 0.1, 77, tmp_path, "classifier")
    assert all(s[1] == s[4] for s in stats)
    assert_c_equals_twin(harness, program, image, samples, 0.2, 0.1, 78, tmp_path, "classifier", fractions=True)
    assert_c_equals_twin(harness, program, image, samples, 0.01, 0.1, 79, tmp_path, "lls", optimizer="rmsprop")
    assert_c_equals_twin(harness, program, image, samples, 0.01, 0.1, 80, tmp_path, "lls", fractions=True,
                         optimizer="rmsprop-factored")


def test_the_last_block_gradient_is_the_classifier_weights_times_dlogits(small_program):
    """The twin's (= the board's) signal for the last block equals W^T (softmax - onehot)
    computed independently in float64 NumPy from the classifier's masters before the step and
    its int8 pooled input. Tolerance: g[c] sums K = 10 products in float32, each of a
    |dlogit| <= 1 (computed by the expf / logf polynomials, relative error < 1e-6, and a
    division) and a master weight, so |error| <= (K + 4) * 2^-24 * sum_k |dlogit_k| |W_kc|
    plus 1e-6 * sum_k |W_kc|; we allow 4e-6 * sum_k |W_kc| + 1e-9, twice that bound."""
    image = blob.build_image(small_program, _tail_with_pool(small_program, 2, 2)).data
    graph = prepare(small_program, batch=1, fast=False, requantize="tflm")
    parsed = blob.open_image(image)
    cut = small_program.operators[parsed["tail"]["blocks"][0]["first_op"]].inputs[0]
    fc = parsed["ops"][parsed["tail"]["classifier_op"]]["record"]
    assert parsed["ops"][parsed["tail"]["classifier_op"] - 1]["opcode"] == blob.OPCODES["AVERAGE_POOL_2D"][0]
    s_in = np.float64(struct.unpack("<f", struct.pack("<I", parsed["tensors"][fc["input"]]["scale"]))[0])
    twin = BoardTrainer(image, lr=0.2, classifier_lr=0.1, seed=5, last_block="classifier")
    rng = np.random.default_rng(21)
    checked = 0
    for step in range(8):
        x = rng.integers(-128, 128, (1, 10, 10, 3)).astype(np.int8)
        label = int(rng.integers(0, 10))
        features = graph.run_all([x])[cut]
        h = twin._check_features(features)       # the int8 forward with the weights learned so far
        for _, (dw, pw), _ in twin.blocks:
            h = twin._conv(pw, twin._conv(dw, h))
        pooled = twin._head_ops(h).copy()
        w = twin.master.astype(np.float64).copy()                           # before the step
        b = twin.master_bias.astype(np.float64).copy()
        v = s_in * (pooled.astype(np.float64) + fc["input_offset"])
        logits = w @ v + b
        p = np.exp(logits - logits.max())
        p /= p.sum()
        p[label] -= 1.0
        want = w.T @ p
        twin.step(features, label)
        got = twin._grad_v[:w.shape[1]].astype(np.float64)
        tol = 4e-6 * np.abs(w).sum(axis=0) + 1e-9
        assert np.all(np.abs(got - want) <= tol), (step, np.max(np.abs(got - want) / tol))
        checked += np.count_nonzero(want)
    assert checked > 0


def test_the_classifier_signal_needs_a_global_pool_and_a_known_name(small_program):
    image = blob.build_image(small_program, _tail_with_pool(small_program, 2, 2)).data
    with pytest.raises(ConfigError, match="unknown last-block signal"):
        BoardTrainer(image, lr=0.1, classifier_lr=0.1, last_block="head")
    parsed = blob.open_image(image)
    assert parsed["ops"][parsed["tail"]["classifier_op"] - 1]["opcode"] == blob.OPCODES["AVERAGE_POOL_2D"][0]


def test_repeated_steps_on_one_sample_lower_its_losses(small_program):
    image = blob.build_image(small_program, _tail_with_pool(small_program, 2, 2)).data
    graph = prepare(small_program, batch=1, fast=False, requantize="tflm")
    x = np.random.default_rng(3).integers(-128, 128, (1, 10, 10, 3)).astype(np.int8)
    cut = small_program.operators[blob.open_image(image)["tail"]["blocks"][0]["first_op"]].inputs[0]
    features = graph.run_all([x])[cut]
    twin = BoardTrainer(image, lr=0.2, classifier_lr=0.1, seed=4, last_block="lls")
    first = twin.step(features, 7)
    for _ in range(30):
        last = twin.step(features, 7)
    assert last.loss < 0.5 * first.loss
    assert last.block_loss[1] < first.block_loss[1]
    assert last.predicted == 7


def test_the_rmsprop_variant_normalises_each_step_and_still_learns(small_program):
    """optimizer='rmsprop' (host-only, not on the board yet): v = 0.999 v + 0.001 g^2, the
    step g / (sqrt(v / (1 - 0.999^t)) + 1e-8); its first step is g / |g| (about +-1) for
    every gradient, whatever its size; repeated steps on one sample lower the losses."""
    v = np.zeros(1, np.float32)
    correction = np.float32(1.0) - np.float32(0.999)
    for g in (1e-3, 3.0, -250.0):          # |g| >> eps: the step is sign(g), to 1e-4
        v[0] = 0.0
        assert abs(abs(normalised(np.float32(g), v, 0, correction)) - 1.0) < 1e-4
    assert normalised(np.float32(0.5), np.zeros(0, np.float32), 0, correction) == np.float32(0.5)   # SGD: g
    image = blob.build_image(small_program, _tail_with_pool(small_program, 2, 2)).data
    graph = prepare(small_program, batch=1, fast=False, requantize="tflm")
    x = np.random.default_rng(3).integers(-128, 128, (1, 10, 10, 3)).astype(np.int8)
    cut = small_program.operators[blob.open_image(image)["tail"]["blocks"][0]["first_op"]].inputs[0]
    features = graph.run_all([x])[cut]
    twin = BoardTrainer(image, lr=0.01, classifier_lr=0.1, seed=4, last_block="lls", optimizer="rmsprop",
                        fractions=True)
    sgd = BoardTrainer(image, lr=0.01, classifier_lr=0.1, seed=4, last_block="lls", fractions=True)
    first = twin.step(features, 7)
    sgd.step(features, 7)
    for _ in range(30):
        last = twin.step(features, 7)
        sgd.step(features, 7)
    assert last.loss < 0.5 * first.loss and last.block_loss[1] < first.block_loss[1]
    assert any(not np.array_equal(w, sgd.weights()[op][0]) for op, (w, _) in twin.weights().items())
    with pytest.raises(ConfigError, match="unknown optimizer 'adam'"):
        BoardTrainer(image, lr=0.01, classifier_lr=0.1, optimizer="adam")


def test_the_factored_moment_is_rmsprop_s_exactly_when_the_squared_gradients_are_rank_one():
    """EL_TRAIN_RMSPROP_FACTORED's estimate row[r] col[c] / sum(row) is exact for a rank-1
    history (g[r, c]^2 = s_t a[r] b[c], any sign, s_t a step's scale): then its steps equal the per-weight
    RMSprop's. Float32 on both sides, each moment a short chain of roundings: rtol 1e-5. On a
    g^2 that is not rank-1 the two differ (the estimate is an approximation, not a copy)."""
    rng = np.random.default_rng(11)
    rows, cols, steps = 5, 7, 12
    a, b = rng.uniform(0.1, 4.0, rows), rng.uniform(0.1, 4.0, cols)

    def run(full_rank: bool):
        v = np.zeros(rows * cols, np.float32)
        f = np.zeros(rows + 2 * cols, np.float32)
        power, worst = np.float32(1.0), 0.0
        for _ in range(steps):
            power = power * np.float32(0.999)
            correction = np.float32(1.0) - power
            g2 = rng.uniform(0.1, 4.0, (rows, cols)) if full_rank else rng.uniform(0.1, 4.0) * np.outer(a, b)
            g = (np.sqrt(g2) * rng.choice([-1.0, 1.0], (rows, cols))).astype(np.float32)
            total = factored_total(f, rows)
            for r in range(rows):
                row_sum = np.float32(0.0)
                for c in range(cols):
                    row_sum = row_sum + g[r, c] * g[r, c]
                    got = factored_normalise(g[r, c], f, rows, cols, r, c, total, correction)
                    want = normalised(g[r, c], v, r * cols + c, correction)
                    worst = max(worst, abs(got / want - 1.0))
                factored_row_end(f, r, row_sum)
            factored_end(f, rows, cols)
            assert not f[rows + cols:].any()                  # this step's column sums restart at 0
        return worst

    assert run(full_rank=False) < 1e-5
    assert run(full_rank=True) > 1e-2


# ------------------------------------------------------------------ the buffer and what is refused
@pytest.mark.shared(VWW_DIR)
def test_the_buffer_is_the_plan_that_train_layout_computes_and_one_byte_less_is_refused(harness, tmp_path):
    program = read_tflite(VWW_INT8)
    for train_last in (1, 2):
        image = blob.build_image(program, trainable_tail(program, train_last)).data
        layout = train_layout(image)
        x = np.zeros((1, 96, 96, 3), np.int8)
        ok = run_harness(harness, image, [(x, 0)], 0.01, 0.01, 1, tmp_path)
        assert ok.returncode == 0, ok.stderr
        assert ok.stdout.split() == ["buffer", str(layout["total"])]
        assert layout["total"] == sum(v for k, v in layout.items() if k != "total")
        short = run_harness(harness, image, [(x, 0)], 0.01, 0.01, 1, tmp_path, buffer=layout["total"] - 1)
        assert short.returncode == 5 and "training buffer too small" in short.stderr, short.stderr
        # the classifier signal: the same buffer (g in the head's dL/dv, Y parked in mid_grad)
        exact = run_harness(harness, image, [(x, 1)] * 2, 0.01, 0.01, 1, tmp_path, buffer=layout["total"],
                            last_block="classifier")
        assert exact.returncode == 0 and "runtime error" not in exact.stderr, exact.stderr
        # 16-bit masters: one int8 fraction per block weight after the rest; one byte less refused
        wide = train_layout(image, fractions=True)
        weights = sum(v for k, v in layout.items() if k.endswith("_weights") and k.startswith("block"))
        assert wide["total"] == layout["total"] + weights
        sized = run_harness(harness, image, [(x, 0)], 0.01, 0.01, 1, tmp_path, fractions=True)
        assert sized.returncode == 0 and sized.stdout.split() == ["buffer", str(wide["total"])], sized.stderr
        short = run_harness(harness, image, [(x, 0)], 0.01, 0.01, 1, tmp_path, buffer=wide["total"] - 1,
                            fractions=True)
        assert short.returncode == 5 and "training buffer too small" in short.stderr, short.stderr
        # RMSprop: a float32 moment per block weight and bias after them
        rms = train_layout(image, fractions=True, optimizer="rmsprop")
        biases = sum(v for k, v in layout.items() if k.endswith("_bias") and k.startswith("block"))
        assert rms["total"] == wide["total"] + 4 * weights + biases
        sized = run_harness(harness, image, [(x, 0)], 0.01, 0.01, 1, tmp_path, fractions=True, optimizer="rmsprop")
        assert sized.returncode == 0 and sized.stdout.split() == ["buffer", str(rms["total"])], sized.stderr
        short = run_harness(harness, image, [(x, 0)], 0.01, 0.01, 1, tmp_path, buffer=rms["total"] - 1,
                            fractions=True, optimizer="rmsprop")
        assert short.returncode == 5 and "training buffer too small" in short.stderr, short.stderr
        # factored: rows + 2 cols + biases float32 an op (depthwise 3x3 taps x C, pointwise O x C)
        factored = train_layout(image, optimizer="rmsprop-factored")
        parsed = blob.open_image(image)
        moment_bytes = 0
        for b in parsed["tail"]["blocks"]:
            dw, pw = (parsed["ops"][b["first_op"] + j]["record"] for j in (0, 1))
            assert dw["filter_dims"][1:3] == (3, 3) and pw["filter_dims"][1:3] == (1, 1)
            c, o = dw["filter_dims"][3], pw["filter_dims"][0]
            moment_bytes += -(-4 * (9 + 2 * c + c) // 16) * 16 + -(-4 * (o + 2 * c + o) // 16) * 16
        assert factored["total"] == layout["total"] + moment_bytes
        assert moment_bytes < (rms["total"] - wide["total"]) / 30
        sized = run_harness(harness, image, [(x, 0)], 0.01, 0.01, 1, tmp_path, optimizer="rmsprop-factored")
        assert sized.returncode == 0 and sized.stdout.split() == ["buffer", str(factored["total"])], sized.stderr
        short = run_harness(harness, image, [(x, 0)], 0.01, 0.01, 1, tmp_path, buffer=factored["total"] - 1,
                            optimizer="rmsprop-factored")
        assert short.returncode == 5 and "training buffer too small" in short.stderr, short.stderr
    bad_label = run_harness(harness, image, [(x, 2)], 0.01, 0.01, 1, tmp_path)
    assert bad_label.returncode == 6 and "label out of range" in bad_label.stderr
    no_tail = run_harness(harness, blob.build_image(program).data, [(x, 0)], 0.01, 0.01, 1, tmp_path)
    assert no_tail.returncode == 5 and "no trainable tail" in no_tail.stderr
    LAST_BLOCK_SIGNALS["bogus"] = 2
    try:
        bad_signal = run_harness(harness, image, [(x, 0)], 0.01, 0.01, 1, tmp_path, last_block="bogus")
    finally:
        del LAST_BLOCK_SIGNALS["bogus"]
    assert bad_signal.returncode == 5 and "head or classifier" in bad_signal.stderr, bad_signal.stderr
    cmd = run_harness(harness, image, [(x, 0)], 0.01, 0.01, 1, tmp_path).args[:-2] + ["2", "0"]
    bad_fractions = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                                   env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert bad_fractions.returncode == 5 and "head or classifier" in bad_fractions.stderr, bad_fractions.stderr
    bad_optimizer = subprocess.run(cmd[:-2] + ["0", str(max(OPTIMIZERS.values()) + 1)], capture_output=True, text=True, timeout=60,
                                   env={**os.environ, "ASAN_OPTIONS": "detect_leaks=0"})
    assert bad_optimizer.returncode == 5 and "head or classifier" in bad_optimizer.stderr, bad_optimizer.stderr


# ------------------------------------------------------------------ the twin's pieces
def test_exp_and_log_polynomials_are_accurate_to_a_few_ulp():
    xs = np.linspace(-80, 80, 20001, dtype=np.float32)
    got = np.array([expf(x) for x in xs], np.float64)
    assert np.max(np.abs(got / np.exp(xs.astype(np.float64)) - 1)) < 1e-6
    ys = np.float32(2.0) ** np.linspace(-100, 100, 4001, dtype=np.float32)   # |log| up to 69
    got = np.array([logf(y) for y in ys], np.float64)
    assert np.max(np.abs(got - np.log(ys.astype(np.float64)))) < 2e-5     # |log| up to 70: a few ulp


def test_the_fraction_step_is_unbiased_at_a_256th_and_splits_the_master_exactly():
    state = np.array([777], np.uint32)
    fraction = np.zeros(1, np.int8)
    q = 0
    for _ in range(1000):                               # 1000 steps of 0.01 code: 10 codes, in the mean
        q = fraction_round_step(q, fraction, 0, np.float32(0.01), state)
    assert abs((256 * q + int(fraction[0])) / 256 - 10.0) < 0.1 and -128 <= fraction[0] <= 127
    for start, frac, step in [(0, 0, 0.5), (-127, -128, -3.0), (126, 100, 5.0), (3, 127, 1 / 256), (-5, 0, -0.75)]:
        fraction[0] = frac
        before = state.copy()
        got = fraction_round_step(start, fraction, 0, np.float32(step), state)
        u = rng_uniform(before)
        master = int(np.floor(np.float32(step) * np.float32(256) + u)) + 256 * start + frac
        master = max(-127 * 256, min(127 * 256, master))
        assert got == (master + 128) // 256 and int(fraction[0]) == master - 256 * got and -128 <= fraction[0] <= 127
    before = state.copy()
    assert fraction_round_step(9, fraction, 0, np.float32(0.0), state) == 9 and state[0] == before[0]
    assert fraction_round_step(9, fraction, 0, np.float32(np.nan), state) == 9 and state[0] == before[0]


def test_stochastic_rounding_is_unbiased_and_clamped():
    state = np.array([12345], np.uint32)
    steps = [stochastic_round_step(0, np.float32(0.3), state) for _ in range(20000)]
    assert abs(np.mean(steps) - 0.3) < 0.01 and set(steps) == {0, 1}
    assert stochastic_round_step(120, np.float32(50.0), state) == 127
    before = state.copy()
    assert stochastic_round_step(0, np.float32(np.inf), state) == 0 and stochastic_round_step(5, np.float32(np.nan), state) == 5
    assert stochastic_round_step(9, np.float32(0.0), state) == 9 and state[0] == before[0]   # no step: no draw
    u = [rng_uniform(state) for _ in range(1000)]
    assert 0.0 <= min(u) and max(u) < 1.0

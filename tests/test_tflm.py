"""The TFLite-Micro rounding mode (requantize="tflm") against TFLM's own reference kernels
(the tflite-micro package's interpreter): every tensor of the VWW int8 model, bit for bit,
on the sample images and random inputs; LiteRT mode differs exactly where the two
runtimes round FULLY_CONNECTED differently. And TFLM's smallest arena, by bisection."""
import platform

import numpy as np
import pytest

if platform.machine() != "x86_64":   # tflite-micro publishes x86-64 wheels only (pyproject.toml)
    pytest.importorskip("tflite_micro", reason="tflite-micro has no wheel for this machine")

from conftest import SAMPLES_DIR, VWW_DIR
from edge_lls.formats.tflite import read_tflite
from edge_lls.kernels.fixedpoint import quantize
from edge_lls.kernels.int8 import fully_connected_s8
from edge_lls.kernels.ref import int8 as ref_int8
from edge_lls.predict import load_image
from edge_lls.program.interpreter import load_tflite, prepare
from edge_lls.tflm import tflm_interpreter, tflm_min_arena

VWW_INT8 = VWW_DIR / "vww_96_int8.tflite"

pytestmark = pytest.mark.shared(VWW_DIR, SAMPLES_DIR)


def vww_inputs(count: int = 12) -> list[np.ndarray]:
    program = read_tflite(VWW_INT8)
    x = program.tensors[program.inputs[0]]
    samples = [quantize(load_image(SAMPLES_DIR / f"{name}.bmp", (96, 96, 3)) / np.float32(255), x.scale,
                        x.zero_point)[None] for name in ("person", "no_person")]
    rng = np.random.default_rng(11)
    return samples + [rng.integers(-128, 128, (1, 96, 96, 3)).astype(np.int8) for _ in range(count)]


def tflm_tensors(model: bytes, x: np.ndarray, indices) -> dict[int, np.ndarray]:
    interpreter = tflm_interpreter(model, arena_size=4 << 20)
    interpreter.set_input(x, 0)
    interpreter.invoke()
    return {i: interpreter.GetTensor(i, 0)["tensor_data"] for i in indices}


@pytest.fixture(scope="module")
def model_bytes() -> bytes:
    return VWW_INT8.read_bytes()


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_tflm_mode_matches_tflite_micro_on_every_tensor(model_bytes, fast):
    graph = load_tflite(model_bytes, fast=fast, requantize="tflm")
    for x in vww_inputs():
        ours = graph.run_all([x])
        theirs = tflm_tensors(model_bytes, x, ours)
        for index, value in ours.items():
            np.testing.assert_array_equal(value.reshape(-1), theirs[index].reshape(-1),
                                          err_msg=f"tensor {index} {graph.tensors[index].name}")


def test_litert_and_tflm_modes_differ_only_from_the_fully_connected_op_on():
    program = read_tflite(VWW_INT8)
    fc = next(op for op in program.operators if op.opcode == "FULLY_CONNECTED")
    downstream = {fc.outputs[0]} | {t for op in program.operators[fc.index + 1:] for t in op.outputs}
    litert, tflm = prepare(program), prepare(program, requantize="tflm")
    assert litert.params[fc.index].single_rounding and not tflm.params[fc.index].single_rounding
    for x in vww_inputs(24):
        a, b = litert.run_all([x]), tflm.run_all([x])
        for index in a:
            if index not in downstream:
                np.testing.assert_array_equal(a[index], b[index])
        fc_out = fc.outputs[0]
        assert np.abs(a[fc_out].astype(int) - b[fc_out]).max() <= 1      # one rounding step apart


def test_fully_connected_double_rounding_kernel_equals_its_numpy_twin(rng):
    # The two roundings part where the first (to Q31) moves a value across a tie of the
    # second: likely for short right shifts, so small accumulators and shifts of -1..-3
    # keep outputs inside int8, where no clamp hides the difference.
    x = rng.integers(-8, 8, (400, 40)).astype(np.int8)
    w = rng.integers(-8, 8, (7, 40)).astype(np.int8)
    bias = rng.integers(-50, 50, 7).astype(np.int32)
    multipliers = rng.integers(1 << 30, (1 << 31) - 1, 7).astype(np.int32)
    shifts = rng.integers(-3, 0, 7).astype(np.int32)
    results = []
    for impl in (fully_connected_s8, ref_int8.fully_connected_s8):
        for single in (True, False):
            out = np.empty((400, 7), np.int8)
            impl(x, w, bias, out, -3, 5, multipliers, shifts, -128, 127, single)
            results.append(out)
    np.testing.assert_array_equal(results[0], results[2])
    np.testing.assert_array_equal(results[1], results[3])
    assert not np.array_equal(results[0], results[1])    # the two roundings do differ on these values


def test_tflm_min_arena_is_the_smallest_that_allocates(model_bytes):
    from edge_lls.tflm import _allocates
    arena = tflm_min_arena(model_bytes)
    assert _allocates(model_bytes, arena) and not _allocates(model_bytes, arena - 1)
    assert 64 << 10 < arena < 136 << 10          # TFLM's person-detection example reserves 136 KB

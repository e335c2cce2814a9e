"""The firmware's int8 kernels (firmware_bridge/firmware/src/kernels/) against the Python
runtime in TFLite Micro rounding mode, bit for bit.

The expected outputs are the literal kernels' (edge_lls/kernels/int8/literal.py), called as
prepare(..., fast=False, requantize="tflm") calls them: FULLY_CONNECTED with
single_rounding=False, the only place the tflm mode differs. The C side is
tests/firmware_kernels_harness.c, built once per module with the firmware's strict flags and
ASan/UBSan (-fno-sanitize-recover: any overflow or stray read fails the run); every case of a
kernel goes to it in one vector file:

    VECTORS   struct "<4sHHI"  b"ELKV", version 1, 0, case count; then per case
              struct "<IIII"   kind (EL_OP_*, or KIND_* below), record bytes, array count,
                               output count; the record (a blob.Layout's pack: the C struct's
                               bytes); per array "<II" element size, count, then the values;
                               record and arrays zero-padded to a multiple of 4 bytes
    OUTPUTS   struct "<4sHHI"  b"ELKO", version 1, 0, case count; then per case
              struct "<iII"    status (el_kernel_status), element size, count; the values

Random layers cover odd sizes, strides 1-3, dilation, SAME / VALID / explicit pads, channel
multipliers 1-3, int8 extremes, biases at the int32 accumulator's bound, per-channel
multipliers quantized from random real scales (left and right shifts) and clipped
activation ranges; a VWW test runs every kernel op of vww_96_int8.tflite on the model's
real intermediate tensors, records and arrays straight from its model image.
"""
import os
import shutil
import struct
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import C_SANITIZE as SANITIZE, C_STRICT as STRICT, FIRMWARE, IN_CI, SAMPLES_DIR, VWW_DIR
from edge_lls.formats import blob
from edge_lls.formats.tflite import read_tflite
from edge_lls.kernels import int8 as kernels
from edge_lls.kernels.fixedpoint import (
    INT32_MAX,
    INT32_MIN,
    conv_output_multipliers,
    exp_on_negative_values_q5_26,
    multiply_by_quantized_multiplier_array,
    one_over_one_plus_x,
    reciprocal_q12,
    rounding_divide_by_pot_array,
    saturating_rounding_doubling_high_mul_array,
    softmax_params,
)
from edge_lls.kernels.geometry import same_padding, valid_output
from edge_lls.program.interpreter import MAX_PRODUCT_MAGNITUDE, leaky_relu_params, prepare

KERNEL_SOURCES = sorted((FIRMWARE / "src" / "kernels").glob("el_*.c"))
HARNESS = Path(__file__).with_name("firmware_kernels_harness.c")
ARM_CPUS = {"cortex-m4": "fpv4-sp-d16", "cortex-m7": "fpv5-d16"}

OPS = {name: number for name, (number, _) in blob.OPCODES.items()}
# the harness's kinds for el_fixedpoint.h's helpers
KIND_MULTIPLY, KIND_HIGH_MUL, KIND_DIVIDE_BY_POT, KIND_EXP, KIND_ONE_OVER_ONE_PLUS_X, KIND_RECIPROCAL = range(100, 106)
HEADER = struct.Struct("<4sHHI")
CASE = struct.Struct("<IIII")
ARRAY = struct.Struct("<II")
RESULT = struct.Struct("<iII")
SENTINEL = 0x5A                       # the harness fills every output block with it
OK, ERR_PARAMS = 0, 1                 # el_kernel_status


@dataclass
class Case:
    kind: int
    record: bytes
    arrays: list                      # np.int8 / np.int32 arrays, in the harness's order
    expected: np.ndarray              # int8 (kernels) or int32 (helpers); flattened on compare
    what: str                         # for the failure message
    status: int = OK


# ------------------------------------------------------------------ compilers and the harness
@pytest.fixture(scope="module")
def harness(gcc, tmp_path_factory):
    out = tmp_path_factory.mktemp("kernels") / "firmware_kernels_harness"
    cmd = [gcc, *STRICT, *SANITIZE, f"-I{FIRMWARE / 'include'}", "-o", str(out), str(HARNESS),
           *map(str, KERNEL_SOURCES)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def _padded(data: bytes) -> bytes:
    return data + bytes(-len(data) % 4)


def _run(harness, cases: list[Case], folder: Path) -> list[tuple[int, np.ndarray]]:
    """Every case through the harness in one process: (status, output values) per case."""
    parts = [HEADER.pack(b"ELKV", 1, 0, len(cases))]
    for case in cases:
        parts.append(CASE.pack(case.kind, len(case.record), len(case.arrays), case.expected.size))
        parts.append(_padded(case.record))
        for array in case.arrays:
            array = np.ascontiguousarray(array)
            assert array.dtype in (np.int8, np.int32)
            parts.append(ARRAY.pack(array.itemsize, array.size))
            parts.append(_padded(array.astype(array.dtype.newbyteorder("<")).tobytes()))
    vectors, outputs = folder / "vectors.bin", folder / "outputs.bin"
    vectors.write_bytes(b"".join(parts))
    env = {**os.environ, "ASAN_OPTIONS": "detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    result = subprocess.run([str(harness), str(vectors), str(outputs)], capture_output=True, text=True, timeout=120,
                            env=env)
    assert result.returncode == 0 and "runtime error" not in result.stderr, result.stderr[-4000:]
    data = outputs.read_bytes()
    magic, version, _, count = HEADER.unpack_from(data, 0)
    assert (magic, version, count) == (b"ELKO", 1, len(cases))
    at, results = HEADER.size, []
    for case in cases:
        status, element, n = RESULT.unpack_from(data, at)
        at += RESULT.size
        values = np.frombuffer(data, np.dtype("<i1" if element == 1 else "<i4"), n, at)
        at += len(_padded(values.tobytes()))
        results.append((status, values))
    assert at == len(data)
    return results


def _check(harness, cases: list[Case], folder: Path) -> None:
    for case, (status, got) in zip(cases, _run(harness, cases, folder)):
        assert status == case.status, f"{case.what}: status {status}, expected {case.status}"
        want = case.expected.reshape(-1)
        if not np.array_equal(got, want):
            at = int(np.flatnonzero(got != want)[0])
            pytest.fail(f"{case.what}: {int((got != want).sum())} of {want.size} values differ, first at {at}: "
                        f"C {got[at]}, Python {want[at]}", pytrace=False)


# ------------------------------------------------------------------ random layers
def _int8(rng, shape, extreme: bool) -> np.ndarray:
    """Random int8 codes; `extreme`: only -128 and 127, the magnitudes the bounds are built on."""
    if extreme:
        return rng.choice(np.array([-128, 127], np.int8), size=shape)
    return rng.integers(-128, 128, size=shape, dtype=np.int8)


def _zero_point(rng) -> int:
    return int(rng.choice([-128, 127, 0, int(rng.integers(-128, 128))], p=[0.15, 0.15, 0.1, 0.6]))


def _activation(rng, zero_point: int) -> tuple[int, int]:
    """No clamp, a RELU-like lower bound, a RELU6-like band, or an arbitrary band."""
    mode = int(rng.integers(0, 4))
    if mode == 0:
        return -128, 127
    if mode == 1:
        return max(zero_point, -128), 127
    if mode == 2:
        return zero_point, min(127, zero_point + int(rng.integers(0, 100)))
    a, b = sorted(int(v) for v in rng.integers(-128, 128, 2))
    return a, b


def _bias(rng, channels: int, taps: int) -> np.ndarray:
    """int32 biases up to the accumulator bound (taps * 32640 + |bias| < 2^31), sometimes at it."""
    limit = (1 << 31) - 1 - taps * MAX_PRODUCT_MAGNITUDE
    mode = rng.random()
    if mode < 0.15:
        return rng.choice(np.array([-limit, limit], np.int64), size=channels).astype(np.int32)
    span = min(limit, 1 << int(rng.integers(18, 31) if mode < 0.3 else rng.integers(4, 17)))   # huge, or typical
    return rng.integers(-span, span + 1, size=channels, dtype=np.int64).astype(np.int32)


def _requantization(rng, channels: int, taps: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (multiplier, shift) as the runtime makes them (conv_output_multipliers) from
    random real scales: mostly ones that map the accumulator's spread onto int8, some far from
    it either way (real > 1 gives a left shift), now and then a zero scale."""
    typical = 16.0 / (np.sqrt(taps) * 5500.0)
    wide = rng.random() < 0.3
    reals = typical * 2.0 ** rng.uniform(-14, 16, channels) if wide else typical * 2.0 ** rng.uniform(-3, 3, channels)
    if rng.random() < 0.1:
        reals[int(rng.integers(0, channels))] = 0.0
    input_scale, output_scale = 2.0 ** rng.uniform(-9, -2), 2.0 ** rng.uniform(-6, 0)
    weight_scales = (reals * output_scale / input_scale).astype(np.float32)
    return conv_output_multipliers(input_scale, weight_scales, output_scale, channels)


def _window(rng, size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(output size, pad before) by TensorFlow's SAME or VALID rule, or an explicit pad."""
    effective = (kernel - 1) * dilation + 1
    mode = int(rng.integers(0, 3))
    if mode == 1 and effective <= size:
        return valid_output(size, kernel, stride, dilation), 0
    if mode == 2:
        pad = int(rng.integers(0, effective))
        out = (size + 2 * pad - effective) // stride + 1
        if out >= 1:
            return out, pad
    out, before, _ = same_padding(size, kernel, stride, dilation)
    return out, before


def _dims(shape) -> tuple[int, int, int, int]:
    return tuple(int(d) for d in shape)


def _conv_case(rng, depthwise: bool, index: int) -> Case:
    batches = int(rng.integers(1, 3))
    in_h, in_w = (int(v) for v in rng.integers(1, 12, 2))
    in_c = int(rng.integers(1, 9))
    kernel_h, kernel_w = (int(v) for v in rng.integers(1, 6, 2))
    stride_h, stride_w = (int(v) for v in rng.integers(1, 4, 2))
    dilation_h, dilation_w = (int(v) for v in (rng.integers(1, 3, 2) if rng.random() < 0.3 else (1, 1)))
    out_h, pad_h = _window(rng, in_h, kernel_h, stride_h, dilation_h)
    out_w, pad_w = _window(rng, in_w, kernel_w, stride_w, dilation_w)
    ch_mult = int(rng.choice([1, 2, 3], p=[0.5, 0.35, 0.15])) if depthwise else 1
    out_c = in_c * ch_mult if depthwise else int(rng.integers(1, 10))
    taps = kernel_h * kernel_w * (1 if depthwise else in_c)
    extreme = rng.random() < 0.15
    x = _int8(rng, (batches, in_h, in_w, in_c), extreme)
    w = _int8(rng, (1, kernel_h, kernel_w, out_c) if depthwise else (out_c, kernel_h, kernel_w, in_c), extreme)
    bias = _bias(rng, out_c, taps)
    multipliers, shifts = _requantization(rng, out_c, taps)
    zp_in = -128 if extreme and rng.random() < 0.5 else _zero_point(rng)
    zp_out = _zero_point(rng)
    act_min, act_max = _activation(rng, zp_out)
    out = np.zeros((batches, out_h, out_w, out_c), np.int8)
    geometry = (stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w)
    no_bias = rng.random() < 0.1
    if depthwise:
        kernels.depthwise_conv2d_s8(x, w, np.zeros_like(bias) if no_bias else bias, out, *geometry, ch_mult, zp_in,
                                    zp_out, multipliers, shifts, act_min, act_max)
    else:
        kernels.conv2d_s8(x, w, np.zeros_like(bias) if no_bias else bias, out, *geometry, zp_in, zp_out, multipliers,
                          shifts, act_min, act_max)
    record = blob.CONV.pack(dict(
        input=0, output=1, input_offset=-zp_in, output_offset=zp_out, stride_h=stride_h, stride_w=stride_w,
        pad_h=pad_h, pad_w=pad_w, dilation_h=dilation_h, dilation_w=dilation_w, act_min=act_min, act_max=act_max,
        ch_mult=ch_mult, input_dims=_dims(x.shape), filter_dims=_dims(w.shape), output_dims=_dims(out.shape),
        weights=0, bias=0, multiplier=0, shift=0))
    arrays = [x, w, np.zeros(0, np.int32) if no_bias else bias, multipliers, shifts]
    what = (f"{'depthwise' if depthwise else 'conv'} case {index}: x {x.shape} w {w.shape} stride {stride_h},"
            f"{stride_w} pad {pad_h},{pad_w} dilation {dilation_h},{dilation_w} zp {zp_in}->{zp_out} "
            f"act [{act_min},{act_max}] shifts {shifts.min()}..{shifts.max()}")
    return Case(OPS["DEPTHWISE_CONV_2D" if depthwise else "CONV_2D"], record, arrays, out, what)


def _fully_connected_case(rng, index: int) -> Case:
    batches, depth, out_c = int(rng.integers(1, 4)), int(rng.integers(1, 300)), int(rng.integers(1, 20))
    extreme = rng.random() < 0.15
    x, w = _int8(rng, (batches, depth), extreme), _int8(rng, (out_c, depth), extreme)
    bias = _bias(rng, out_c, depth)
    multipliers, shifts = _requantization(rng, out_c, depth)
    zp_in, zp_out = _zero_point(rng), _zero_point(rng)
    act_min, act_max = _activation(rng, zp_out)
    no_bias = rng.random() < 0.1
    out = np.zeros((batches, out_c), np.int8)
    kernels.fully_connected_s8(x, w, np.zeros_like(bias) if no_bias else bias, out, zp_in, zp_out, multipliers,
                               shifts, act_min, act_max, False)   # tflm: two roundings
    record = blob.FC.pack(dict(
        input=0, output=1, input_offset=-zp_in, filter_offset=0, output_offset=zp_out, act_min=act_min,
        act_max=act_max, input_dims=(batches, 1, 1, depth), filter_dims=(depth, 1, 1, out_c),
        output_dims=(batches, 1, 1, out_c), weights=0, bias=0, multiplier=0, shift=0))
    arrays = [x, w, np.zeros(0, np.int32) if no_bias else bias, multipliers, shifts]
    return Case(OPS["FULLY_CONNECTED"], record, arrays, out,
                f"fc case {index}: x {x.shape} w {w.shape} zp {zp_in}->{zp_out} act [{act_min},{act_max}]")


def _pool_case(rng, average: bool, index: int) -> Case:
    batches = int(rng.integers(1, 3))
    in_h, in_w, channels = int(rng.integers(1, 13)), int(rng.integers(1, 13)), int(rng.integers(1, 10))
    if rng.random() < 0.15:                       # global pooling, as a classifier head does
        filter_h, filter_w, stride_h, stride_w = in_h, in_w, 1, 1
    else:
        filter_h, filter_w = (int(v) for v in rng.integers(1, 5, 2))
        stride_h, stride_w = (int(v) for v in rng.integers(1, 4, 2))
    geometry = []
    for size, kernel, stride in ((in_h, filter_h, stride_h), (in_w, filter_w, stride_w)):
        if kernel <= size and rng.random() < 0.5:
            geometry.append((valid_output(size, kernel, stride), 0))
        else:
            out, before, _ = same_padding(size, kernel, stride)
            geometry.append((out, before))
    (out_h, pad_h), (out_w, pad_w) = geometry
    x = _int8(rng, (batches, in_h, in_w, channels), rng.random() < 0.15)
    act_min, act_max = _activation(rng, _zero_point(rng))
    out = np.zeros((batches, out_h, out_w, channels), np.int8)
    kernel = kernels.avg_pool2d_s8 if average else kernels.max_pool2d_s8
    kernel(x, out, filter_h, filter_w, stride_h, stride_w, pad_h, pad_w, act_min, act_max)
    record = blob.POOL.pack(dict(
        input=0, output=1, stride_h=stride_h, stride_w=stride_w, pad_h=pad_h, pad_w=pad_w, filter_h=filter_h,
        filter_w=filter_w, act_min=act_min, act_max=act_max, input_dims=_dims(x.shape), output_dims=_dims(out.shape)))
    return Case(OPS["AVERAGE_POOL_2D" if average else "MAX_POOL_2D"], record, [x], out,
                f"{'avg' if average else 'max'} pool case {index}: x {x.shape} filter {filter_h}x{filter_w} "
                f"stride {stride_h},{stride_w} pad {pad_h},{pad_w} act [{act_min},{act_max}]")


def _softmax_case(rng, index: int) -> Case:
    rows = int(rng.integers(1, 5))
    depth = int(rng.choice([int(rng.integers(1, 41)), int(rng.integers(41, 1200))], p=[0.85, 0.15]))
    mode = int(rng.integers(0, 4))
    if mode == 0:                                  # a few distinct values: ties, a dominant maximum
        x = rng.choice(np.array([-128, -1, 0, 127], np.int8), size=(rows, depth))
    elif mode == 1:                                # a narrow band: many probabilities near 1/depth
        base = int(rng.integers(-128, 100))
        x = rng.integers(base, base + 28, size=(rows, depth)).astype(np.int8)
    else:
        x = rng.integers(-128, 128, size=(rows, depth), dtype=np.int8)
    input_scale = float(np.float32(2.0 ** rng.uniform(-9, 1)))
    beta = float(rng.choice([1.0, float(rng.uniform(0.1, 4.0))]))
    multiplier, left_shift, diff_min = softmax_params(input_scale, beta)
    out = np.zeros_like(x)
    kernels.softmax_s8(x, out, multiplier, left_shift, diff_min)
    record = blob.SOFTMAX.pack(dict(input=0, output=1, rows=rows, depth=depth, input_multiplier=multiplier,
                                    input_left_shift=left_shift, diff_min=diff_min))
    return Case(OPS["SOFTMAX"], record, [x], out,
                f"softmax case {index}: {rows}x{depth} scale {input_scale} beta {beta} (mode {mode})")


def _softmax_edge_cases() -> list[Case]:
    """Rows whose exps sum past 2^9 (probabilities below 1/256: the reciprocal's shift passes
    31) and past 2^12 (the Q12.19 sum wraps, as gemmlowp's int32 does); the largest left shift
    (beta * scale capped at 2^31 - 1 in Q5.26, diff_min 0: only the maximum counts)."""
    cases = []
    for depth, value, scale in ((600, 5, 0.05), (5000, -7, 0.05), (9000, 127, 0.1), (40, 3, 64.0), (1, -128, 1e-3)):
        x = np.full((2, depth), value, np.int8)
        x[1, ::7] = value - 1 if value > -128 else value
        multiplier, left_shift, diff_min = softmax_params(scale, 1.0)
        out = np.zeros_like(x)
        kernels.softmax_s8(x, out, multiplier, left_shift, diff_min)
        record = blob.SOFTMAX.pack(dict(input=0, output=1, rows=2, depth=depth, input_multiplier=multiplier,
                                        input_left_shift=left_shift, diff_min=diff_min))
        cases.append(Case(OPS["SOFTMAX"], record, [x], out, f"softmax edge: depth {depth} of {value}, scale {scale}"))
    return cases


def _pad_case(rng, index: int) -> Case:
    shape = tuple(int(v) for v in (rng.integers(1, 3), rng.integers(1, 7), rng.integers(1, 7), rng.integers(1, 6)))
    before = tuple(int(v) for v in rng.integers(0, 4, 4))
    after = tuple(int(v) for v in rng.integers(0, 4, 4))
    x = _int8(rng, shape, False)
    pad_value = _zero_point(rng)
    out = np.zeros(tuple(s + b + a for s, b, a in zip(shape, before, after)), np.int8)
    kernels.pad_s8(x, out, np.array(before, np.int64), pad_value)
    record = blob.PAD.pack(dict(input=0, output=1, pad_value=pad_value, before=before, after=after,
                                input_dims=shape, output_dims=out.shape))
    return Case(OPS["PAD"], record, [x], out, f"pad case {index}: {shape} before {before} after {after}")


def _leaky_relu_case(rng, index: int) -> Case:
    size = int(rng.integers(1, 600))
    x = _int8(rng, (size,), rng.random() < 0.1)
    zp_in, zp_out = _zero_point(rng), _zero_point(rng)
    input_scale, output_scale = 2.0 ** rng.uniform(-8, -1), 2.0 ** rng.uniform(-8, -1)   # ratio 2^-7 .. 2^7
    alpha = float(rng.choice([0.0, 0.01, 0.2, 1.0, float(rng.uniform(0, 1)), -0.25]))
    im, ish, am, ash = leaky_relu_params(input_scale, output_scale, alpha)
    out = np.zeros_like(x)
    kernels.leaky_relu_s8(x, out, zp_in, zp_out, im, ish, am, ash)
    record = blob.LEAKY_RELU.pack(dict(input=0, output=1, size=size, input_zero_point=zp_in,
                                       output_zero_point=zp_out, identity_multiplier=im, identity_shift=ish,
                                       alpha_multiplier=am, alpha_shift=ash))
    return Case(OPS["LEAKY_RELU"], record, [x], out,
                f"leaky relu case {index}: zp {zp_in}->{zp_out} shifts {ish}/{ash} alpha {alpha}")


GENERATORS = {
    "conv2d": (lambda rng, i: _conv_case(rng, False, i), 400),
    "depthwise_conv2d": (lambda rng, i: _conv_case(rng, True, i), 400),
    "fully_connected": (_fully_connected_case, 300),
    "avg_pool": (lambda rng, i: _pool_case(rng, True, i), 400),
    "max_pool": (lambda rng, i: _pool_case(rng, False, i), 400),
    "softmax": (_softmax_case, 300),
    "pad": (_pad_case, 150),
    "leaky_relu": (_leaky_relu_case, 200),
}


@pytest.mark.parametrize("kernel", list(GENERATORS))
def test_each_kernel_is_bit_exact_with_the_tflm_mode_runtime_on_random_layers(harness, kernel, tmp_path):
    make, count = GENERATORS[kernel]
    rng = np.random.default_rng(sorted(GENERATORS).index(kernel) + 7)
    cases = [make(rng, i) for i in range(count)]
    if kernel == "softmax":
        cases += _softmax_edge_cases()
    _check(harness, cases, tmp_path)


def test_fixed_point_helpers_match_the_python_primitives(harness, tmp_path):
    """el_fixedpoint.h against edge_lls/kernels/fixedpoint.py on random and extreme int32
    values: the requantization primitives (every shift in [-31, 31]) and the softmax's exp,
    1/(1+x) and reciprocal, whose small errors an 8-bit probability would mostly hide."""
    rng = np.random.default_rng(3)
    n = 20000
    edges = np.array([INT32_MIN, INT32_MIN + 1, -(1 << 30), -2, -1, 0, 1, 2, 1 << 30, INT32_MAX - 1, INT32_MAX],
                     np.int64)

    def int32s(size):
        values = rng.integers(INT32_MIN, INT32_MAX + 1, size=size, dtype=np.int64)
        small = rng.random(size) < 0.3
        values[small] = rng.integers(-70000, 70000, size=int(small.sum()))
        picked = rng.random(size) < 0.1
        values[picked] = rng.choice(edges, size=int(picked.sum()))
        return values

    x, m = int32s(n), int32s(n)
    m[: n // 2] = np.abs(m[: n // 2]) % (1 << 31)          # Q31 multipliers as QuantizeMultiplier makes them
    shift = rng.integers(-31, 32, size=n, dtype=np.int64)
    exponent = rng.integers(0, 32, size=n, dtype=np.int64)
    cases = [
        Case(KIND_MULTIPLY, b"", [x.astype(np.int32), m.astype(np.int32), shift.astype(np.int32)],
             multiply_by_quantized_multiplier_array(x, m, shift).astype(np.int32), "multiply_by_quantized_multiplier"),
        Case(KIND_HIGH_MUL, b"", [x.astype(np.int32), m.astype(np.int32)],
             saturating_rounding_doubling_high_mul_array(x, m).astype(np.int32),
             "saturating_rounding_doubling_high_mul"),
        Case(KIND_DIVIDE_BY_POT, b"", [x.astype(np.int32), exponent.astype(np.int32)],
             rounding_divide_by_pot_array(x, exponent).astype(np.int32), "rounding_divide_by_pot"),
    ]
    # exp on a <= 0 (Q5.26: every integer part, both ends, the quarter boundaries), 1/(1+x) and
    # the reciprocal over all of int32 (the softmax feeds them wrapped sums too).
    quarters = -(np.arange(0, 129, dtype=np.int64) << 24)
    negative = np.concatenate([-np.abs(int32s(n // 4)), -rng.integers(0, 1 << 31, n // 4),
                               -rng.integers(0, 1 << 28, 2 * n),      # [-4, 0], where exp() >= 2^-6
                               quarters, quarters - 1, quarters + 1, [INT32_MIN, 0]]).clip(INT32_MIN, 0)
    sums = np.concatenate([int32s(n // 2), rng.integers(1, 1 << 31, n // 2), 1 << np.arange(31), [0, INT32_MIN]])
    scales_and_bits = [reciprocal_q12(int(v)) for v in sums]
    cases += [
        Case(KIND_EXP, b"", [negative.astype(np.int32)],
             np.array([exp_on_negative_values_q5_26(int(v)) for v in negative], np.int32), "exp_on_negative_values"),
        Case(KIND_ONE_OVER_ONE_PLUS_X, b"", [x.astype(np.int32)],
             np.array([one_over_one_plus_x(int(v)) for v in x], np.int32), "one_over_one_plus_x"),
        Case(KIND_RECIPROCAL, b"", [sums.astype(np.int32)],
             np.array([s for s, _ in scales_and_bits] + [b for _, b in scales_and_bits], np.int32), "reciprocal_q12"),
    ]
    _check(harness, cases, tmp_path)


def test_inconsistent_records_are_refused_before_anything_is_written(harness, tmp_path):
    rng = np.random.default_rng(5)
    conv = _conv_case(rng, False, 0)
    fields = blob.CONV.unpack(conv.record, 0)
    bad = []

    def refused(kind, layout, values, arrays, out_count, what):
        bad.append(Case(kind, layout.pack(values), arrays, np.full(out_count, SENTINEL, np.int8), what, ERR_PARAMS))

    x, w, bias, multipliers, shifts = conv.arrays
    size = conv.expected.size
    n, h, wd, c = fields["input_dims"]
    refused(OPS["CONV_2D"], blob.CONV, {**fields, "filter_dims": (w.shape[0], w.shape[1], w.shape[2], c + 1)},
            conv.arrays, size, "conv: filter channels != input channels")
    refused(OPS["CONV_2D"], blob.CONV, {**fields, "stride_h": 0}, conv.arrays, size, "conv: stride 0")
    refused(OPS["CONV_2D"], blob.CONV, {**fields, "act_min": 5, "act_max": 4}, conv.arrays, size, "conv: empty range")
    refused(OPS["CONV_2D"], blob.CONV, {**fields, "input_offset": 129}, conv.arrays, size, "conv: input offset 129")
    refused(OPS["CONV_2D"], blob.CONV, {**fields, "ch_mult": 2}, conv.arrays, size, "conv: ch_mult 2")
    refused(OPS["CONV_2D"], blob.CONV, fields, [x, w, bias, multipliers, np.full_like(shifts, 32)], size,
            "conv: shift 32")
    refused(OPS["CONV_2D"], blob.CONV, fields, [x, w, np.full_like(bias, INT32_MAX), multipliers, shifts], size,
            "conv: the accumulator could overflow")
    refused(OPS["CONV_2D"], blob.CONV, {**fields, "pad_h": -1}, conv.arrays, size, "conv: negative pad")
    refused(OPS["CONV_2D"], blob.CONV, {**fields, "input_dims": (n, h, wd, 0)}, conv.arrays, size, "conv: a zero dim")
    refused(OPS["CONV_2D"], blob.CONV, {**fields, "input_dims": (n, 1 << 16, 1 << 16, c)}, conv.arrays, size,
            "conv: a volume past 2^31")
    fc = _fully_connected_case(rng, 0)
    fc_fields = blob.FC.unpack(fc.record, 0)
    refused(OPS["FULLY_CONNECTED"], blob.FC, {**fc_fields, "filter_offset": 1}, fc.arrays, fc.expected.size,
            "fc: asymmetric weights")
    x8 = np.zeros((1, 4, 4, 2), np.int8)
    pool = dict(input=0, output=1, stride_h=1, stride_w=1, pad_h=2, pad_w=0, filter_h=2, filter_w=2, act_min=-128,
                act_max=127, input_dims=(1, 4, 4, 2), output_dims=(1, 4, 3, 2))
    refused(OPS["AVERAGE_POOL_2D"], blob.POOL, pool, [x8], 24, "avg pool: a window wholly in the padding")
    refused(OPS["MAX_POOL_2D"], blob.POOL, {**pool, "output_dims": (1, 4, 3, 3)}, [x8], 24, "max pool: channels")
    softmax = dict(input=0, output=1, rows=1, depth=32, input_multiplier=1 << 30, input_left_shift=26, diff_min=1)
    refused(OPS["SOFTMAX"], blob.SOFTMAX, softmax, [x8], 32, "softmax: diff_min > 0")
    refused(OPS["SOFTMAX"], blob.SOFTMAX, {**softmax, "diff_min": -255}, [x8], 32,
            "softmax: diff_min lets |diff| * 2^shift past 2^31")
    refused(OPS["PAD"], blob.PAD, dict(input=0, output=1, pad_value=0, before=(0, 1, 1, 0), after=(0, 1, 0, 0),
                                       input_dims=(1, 4, 4, 2), output_dims=(1, 6, 6, 2)), [x8], 72,
            "pad: output dims != input + before + after")
    refused(OPS["LEAKY_RELU"], blob.LEAKY_RELU, dict(input=0, output=1, size=32, input_zero_point=0,
                                                     output_zero_point=0, identity_multiplier=1 << 30,
                                                     identity_shift=40, alpha_multiplier=0, alpha_shift=0),
            [x8], 32, "leaky relu: shift 40")
    _check(harness, bad, tmp_path)


# ------------------------------------------------------------------ the real model
def _model_inputs(program) -> list[tuple[str, np.ndarray]]:
    shape = program.tensors[program.inputs[0]].shape
    inputs = [("random", np.random.default_rng(9).integers(-128, 128, size=shape, dtype=np.int8))]
    person = SAMPLES_DIR / "person.bmp"
    if person.exists():                            # optional: the test needs only the model
        from edge_lls.predict import load_image
        codes = load_image(person, shape[1:], "int8").astype(np.int16) - 128
        inputs.append(("person.bmp", codes.astype(np.int8).reshape(shape)))
    return inputs


@pytest.mark.shared(VWW_DIR)
def test_every_kernel_op_of_vww_reproduces_the_tflm_mode_tensors(harness, tmp_path):
    """Records and arrays straight from the model image (blob.build_image: the bytes the board
    gets), input and expected output from prepare(fast=False, requantize="tflm").run_all."""
    program = read_tflite(VWW_DIR / "vww_96_int8.tflite")
    data = blob.build_image(program).data
    image = blob.open_image(data)
    graph = prepare(program, batch=1, fast=False, requantize="tflm")
    layouts = {number: layout for number, layout in blob.OPCODES.values()}
    cases, kinds = [], set()
    for name, x in _model_inputs(program):
        values = graph.run_all([x])
        for index, entry in enumerate(image["ops"]):
            if entry["opcode"] == OPS["RESHAPE"]:
                continue                           # an alias in the arena, no kernel
            layout, record = layouts[entry["opcode"]], entry["record"]
            arrays = [values[record["input"]]]
            for field, code, count_of in blob.ARRAYS.get(layout.name, ()):
                arrays.append(np.frombuffer(data, np.dtype(code).newbyteorder("<"), count_of(record), record[field])
                              .astype(np.int8 if code == "b" else np.int32))
            raw = data[entry["record_offset"]:entry["record_offset"] + layout.size]
            cases.append(Case(entry["opcode"], raw, arrays, values[record["output"]],
                              f"{name}: op {index} ({blob.OPCODE_NAMES[entry['opcode']]})"))
            kinds.add(blob.OPCODE_NAMES[entry["opcode"]])
    assert kinds == {"CONV_2D", "DEPTHWISE_CONV_2D", "AVERAGE_POOL_2D", "FULLY_CONNECTED", "SOFTMAX"}
    _check(harness, cases, tmp_path)


# ------------------------------------------------------------------ Cortex-M
@pytest.mark.parametrize("cpu", list(ARM_CPUS))
def test_the_kernels_compile_for_cortex_m_with_nothing_but_memcpy_and_memset(arm_gcc, cpu, tmp_path):
    """-Os, hard float, strict flags, no diagnostics; the objects call nothing outside them
    but string.h's memcpy and memset (no libc, no heap, no compiler runtime helpers)."""
    objects = []
    for source in KERNEL_SOURCES:
        obj = tmp_path / (source.stem + ".o")
        cmd = [arm_gcc, f"-mcpu={cpu}", "-mthumb", "-mfloat-abi=hard", f"-mfpu={ARM_CPUS[cpu]}", "-Os", *STRICT,
               f"-I{FIRMWARE / 'include'}", "-c", str(source), "-o", str(obj)]
        result = subprocess.run(cmd, capture_output=True, text=True)
        assert result.returncode == 0 and result.stderr == "", result.stderr
        objects.append(obj)
    nm = shutil.which("arm-none-eabi-nm")
    if nm is not None:
        listed = subprocess.run([nm, "-u", *map(str, objects)], capture_output=True, text=True, check=True).stdout
        undefined = {line.split()[-1] for line in listed.splitlines() if line.strip() and not line.endswith(":")}
        assert undefined <= {"memcpy", "memset"}, undefined

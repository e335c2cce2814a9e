"""int8 kernels: every Numba kernel equals its NumPy twin; fixed-point helpers on edge cases.

The fixed-point helpers are checked against exact rational arithmetic (Python ints and
Fractions), so a shared misunderstanding in the Numba and NumPy versions would still fail.
"""
from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from edge_lls.kernels import int8 as fast
from edge_lls.kernels import fixedpoint
from edge_lls.kernels.ref import int8 as ref

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


# ------------------------------------------------------------------ exact references

def round_half_away(value: Fraction) -> int:
    magnitude = math.floor(abs(value) + Fraction(1, 2))
    return magnitude if value >= 0 else -magnitude


def exact_srdhm(a: int, b: int) -> int:
    """gemmlowp's doubling high-mul: a*b / 2^31 rounded to nearest, ties toward +infinity."""
    if a == b == INT32_MIN:
        return INT32_MAX
    return math.floor(Fraction(a * b, 1 << 31) + Fraction(1, 2))


def exact_rdbp(x: int, exponent: int) -> int:
    return round_half_away(Fraction(x, 1 << exponent))


def exact_mbqm(x: int, multiplier: int, shift: int) -> int:
    """TFLite MultiplyByQuantizedMultiplier: wrap(x * 2^left) -> high-mul -> rounding shift."""
    left, right = max(shift, 0), max(-shift, 0)
    scaled = ((x << left) + (1 << 31)) % (1 << 32) - (1 << 31)
    return exact_rdbp(exact_srdhm(scaled, multiplier), right)


EDGE_INT32 = [0, 1, -1, 2, -2, 3, -3, 1 << 30, -(1 << 30), (1 << 30) + 1, -(1 << 30) - 1,
              INT32_MAX, INT32_MIN, INT32_MAX - 1, INT32_MIN + 1, 12345, -12345, 1 << 15, -(1 << 15)]


# ------------------------------------------------------------------ fixed-point helpers

@pytest.mark.parametrize("a", EDGE_INT32)
@pytest.mark.parametrize("b", EDGE_INT32)
def test_saturating_rounding_doubling_high_mul_edges(a, b):
    expected = exact_srdhm(a, b)
    assert fixedpoint.saturating_rounding_doubling_high_mul(a, b) == expected
    assert fixedpoint.saturating_rounding_doubling_high_mul_array(np.array([a]), np.array([b]))[0] == expected


def test_saturating_rounding_doubling_high_mul_saturates_only_min_times_min():
    assert fixedpoint.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MIN) == INT32_MAX
    assert fixedpoint.saturating_rounding_doubling_high_mul(INT32_MIN, INT32_MAX) == -INT32_MAX
    # exact ties round toward +infinity: +0.5 -> 1, -0.5 -> 0, -1.5 -> -1
    assert fixedpoint.saturating_rounding_doubling_high_mul(1 << 30, 1) == 1
    assert fixedpoint.saturating_rounding_doubling_high_mul(-(1 << 30), 1) == 0
    assert fixedpoint.saturating_rounding_doubling_high_mul(-(3 << 30), 1) == -1
    assert fixedpoint.saturating_rounding_doubling_high_mul((1 << 30) - 1, 1) == 0


@pytest.mark.parametrize("x, exponent, expected", [
    (5, 1, 3), (-5, 1, -3), (6, 2, 2), (-6, 2, -2), (-10, 2, -3), (10, 2, 3), (7, 0, 7), (-7, 0, -7),
    (INT32_MAX, 31, 1), (INT32_MIN, 31, -1), (-(1 << 30), 31, -1), ((1 << 30) - 1, 31, 0), (-1, 31, 0),
])
def test_rounding_divide_by_pot_ties_away_from_zero(x, exponent, expected):
    assert exact_rdbp(x, exponent) == expected
    assert fixedpoint.rounding_divide_by_pot(x, exponent) == expected
    assert fixedpoint.rounding_divide_by_pot_array(np.array([x]), exponent)[0] == expected


def test_multiply_by_quantized_multiplier_random_and_large_shifts():
    rng = np.random.default_rng(0)
    xs = list(rng.integers(INT32_MIN, INT32_MAX, 300, endpoint=True)) + EDGE_INT32
    cases = [(int(x), int(m), int(s)) for x in xs
             for m, s in [(1 << 30, 0), (INT32_MAX, -31), (1518500250, -7), (1 << 30, 1), (1431655765, 3),
                          (0, 0), (1073741825, -1), (2147483000, 30)]]
    for x, m, s in cases:
        expected = exact_mbqm(x, m, s)
        assert fixedpoint.multiply_by_quantized_multiplier(x, m, s) == expected, (x, m, s)
    xs_arr = np.array([c[0] for c in cases])
    got = fixedpoint.multiply_by_quantized_multiplier_array(xs_arr, np.array([c[1] for c in cases]),
                                                       np.array([c[2] for c in cases]))
    assert got.tolist() == [exact_mbqm(*c) for c in cases]


def test_single_shift_requantize_equals_two_step_rounding():
    """requantize_value (one offset + one shift) == MultiplyByQuantizedMultiplier, including
    products that sit exactly on or next to a rounding tie at every right shift."""
    rng = np.random.default_rng(1)
    for right in range(0, 32):
        for multiplier in (1 << 30, (1 << 31) - 1, 1518500250, int(rng.integers(1 << 30, 1 << 31))):
            shifts = np.array([-right], np.int32)
            table = fixedpoint.requantize_tables(np.array([multiplier], np.int32), shifts)
            xs = set(int(v) for v in rng.integers(-(1 << 31), 1 << 31, 60))
            for k in (1, 2, 3, 5):  # values whose product lands next to a tie of either rounding
                target = k * (1 << (30 + right)) // multiplier
                xs.update({target - 1, target, target + 1, -target - 1, -target, -target + 1})
            xs.update(EDGE_INT32)
            for x in (v for v in xs if INT32_MIN <= v <= INT32_MAX):
                expected = exact_mbqm(x, multiplier, -right)
                got = fixedpoint.requantize_value(x, table[0, 0], table[1, 0], table[2, 0], table[3, 0], table[4, 0])
                assert got == expected, (x, multiplier, right)
    for left in range(1, 8):  # multipliers >= 1: left shift with int32 wrap
        table = fixedpoint.requantize_tables(np.array([1 << 30], np.int32), np.array([left], np.int32))
        for x in EDGE_INT32:
            got = fixedpoint.requantize_value(x, table[0, 0], table[1, 0], table[2, 0], table[3, 0], table[4, 0])
            assert got == exact_mbqm(x, 1 << 30, left)


def test_single_rounding_multiplier_matches_exact_rounding():
    rng = np.random.default_rng(4)
    for x in list(rng.integers(-(1 << 24), 1 << 24, 300)) + EDGE_INT32[:11]:
        for multiplier, shift in ((1 << 30, -1), (1387987940, -7), (2061584397, -6), (1 << 30, 2)):
            expected = math.floor(Fraction(int(x) * multiplier, 1 << (31 - shift)) + Fraction(1, 2))
            assert fixedpoint.multiply_by_quantized_multiplier_single_rounding(int(x), multiplier, shift) == expected
            assert fixedpoint.multiply_by_quantized_multiplier_single_rounding_array(np.array([x]), multiplier, shift)[0] == expected


@pytest.mark.parametrize("real, expected", [
    (0.5, (1 << 30, 0)), (1.0, (1 << 30, 1)), (0.75, (3 << 29, 0)), (0.0, (0, 0)), (2.0 ** -40, (0, 0)),
    (1 - 2.0 ** -40, (1 << 30, 1)),  # mantissa rounds up to 1.0: halve it and bump the shift
    (2.0 ** -31, (1 << 30, -30)), (3.0, (3 << 29, 2)),
])
def test_quantize_multiplier_known_values(real, expected):
    assert fixedpoint.quantize_multiplier(real) == expected


def test_quantize_multiplier_reconstructs_real():
    rng = np.random.default_rng(2)
    for real in rng.uniform(1e-9, 100.0, 500):
        significand, shift = fixedpoint.quantize_multiplier(float(real))
        assert (1 << 30) <= significand < (1 << 31)
        assert abs(significand * 2.0 ** (shift - 31) - real) <= real * 2.0 ** -31


def test_round_half_away():
    assert [fixedpoint.round_half_away(v) for v in (0.5, 1.5, 2.5, -0.5, -1.5, 0.49999999999, -2.4)] == [1, 2, 3, -1, -2, 0, -2]


def test_exp_and_reciprocal_match_numpy_versions_and_math():
    grid = np.concatenate([-np.arange(0, 1 << 31, 1 << 19, dtype=np.int64)[:4096], [0, -1, -(1 << 24), -(1 << 26)]])
    scalar = np.array([fixedpoint.exp_on_negative_values_q5_26(int(v)) for v in grid])
    vector = fixedpoint.exp_on_negative_values_q5_26_array(grid)
    assert np.array_equal(scalar, vector)
    assert scalar[grid == 0][0] == INT32_MAX
    assert np.allclose(scalar / 2.0 ** 31, np.exp(grid / 2.0 ** 26), atol=3e-8)
    sums = np.array([1 << 19, (1 << 19) + 1, 3 << 19, 1000, 123456789, INT32_MAX], np.int64)
    for value in sums:
        scale, bits = fixedpoint.reciprocal_q12(int(value))
        vscale, vbits = fixedpoint.reciprocal_q12_array(np.array([value]))
        assert (scale, bits) == (vscale[0], vbits[0])
        assert abs(scale / 2.0 ** 31 * 2.0 ** -bits - 2.0 ** 19 / value) <= 1e-7 * 2.0 ** 19 / value


def test_softmax_and_activation_params():
    multiplier, left_shift, diff_min = fixedpoint.softmax_params(0.0625, 1.0)
    assert (multiplier, left_shift) == (1 << 30, 23)
    assert diff_min == -math.floor(31 * 2 ** 26 / 2 ** 23)
    assert fixedpoint.activation_range_s8("RELU6", 6.0 / 255, -128) == (-128, 127)
    assert fixedpoint.activation_range_s8("RELU", 0.1, -5) == (-5, 127)
    assert fixedpoint.activation_range_s8("NONE", 0.1, 3) == (-128, 127)
    assert fixedpoint.activation_range_s8("RELU6", 0.02, 10) == (10, 127)


def test_quantize_dequantize_helpers_round_trip():
    codes = np.arange(-128, 128, dtype=np.int8)
    assert np.array_equal(fixedpoint.quantize(fixedpoint.dequantize(codes, 0.05, 7), 0.05, 7), codes)
    assert fixedpoint.quantize(np.array([0.025, -0.025, 1e9, np.float32(0.49999997) * 0.05]), 0.05, 0).tolist() == [1, -1, 127, 0]


# ------------------------------------------------------------------ kernel twins

def random_multipliers(rng, channels, allow_left_shift=True):
    reals = rng.uniform(1e-5, 0.05, channels)
    if allow_left_shift and channels > 2:
        reals[0] = rng.uniform(1.0, 4.0)  # a multiplier > 1 exercises the left shift
        reals[1] = 0.0  # a flushed channel
    return fixedpoint.quantize_multipliers(reals)


def random_window(rng, size_max=9):
    kernel_h, kernel_w = (int(v) for v in rng.integers(1, 4, 2))
    stride_h, stride_w = (int(v) for v in rng.integers(1, 3, 2))
    dilation_h, dilation_w = (int(v) for v in rng.integers(1, 3, 2))
    in_h, in_w = (int(v) for v in rng.integers(1, size_max, 2))
    pad_top, pad_left = int(rng.integers(0, kernel_h)), int(rng.integers(0, kernel_w))
    out_h = max(1, (in_h + pad_top + int(rng.integers(0, 2)) - (kernel_h - 1) * dilation_h - 1) // stride_h + 1)
    out_w = max(1, (in_w + pad_left + int(rng.integers(0, 2)) - (kernel_w - 1) * dilation_w - 1) // stride_w + 1)
    return dict(kernel=(kernel_h, kernel_w), stride=(stride_h, stride_w), dilation=(dilation_h, dilation_w),
                size=(in_h, in_w), pad=(pad_top, pad_left), out=(out_h, out_w))


def random_int8(rng, shape):
    return rng.integers(-128, 128, shape).astype(np.int8)


def clamp_range(rng):
    low = int(rng.integers(-128, 0))
    return (low, int(rng.integers(low, 128))) if rng.random() < 0.5 else (-128, 127)


@pytest.mark.parametrize("seed", range(40))
def test_conv2d_matches_twin_and_gemm_path(seed):
    rng = np.random.default_rng(seed)
    win = random_window(rng)
    batches, in_c, out_c = int(rng.integers(1, 3)), int(rng.integers(1, 6)), int(rng.integers(1, 7))
    x = random_int8(rng, (batches, *win["size"], in_c))
    weights = rng.integers(-127, 128, (out_c, *win["kernel"], in_c)).astype(np.int8)
    bias = rng.integers(-20000, 20000, out_c).astype(np.int32)
    multipliers, shifts = random_multipliers(rng, out_c)
    in_zp, out_zp = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
    act_min, act_max = clamp_range(rng)
    geometry = (*win["stride"], *win["pad"], *win["dilation"])
    args = (*geometry, in_zp, out_zp, multipliers, shifts, act_min, act_max)
    got = np.zeros((batches, *win["out"], out_c), np.int8)
    want = np.full_like(got, 99)
    fast.conv2d_s8(x, weights, bias, got, *args)
    ref.conv2d_s8(x, weights, bias, want, *args)
    assert np.array_equal(got, want)

    # the graph's exact float32 GEMM path: im2col with zero-point padding, folded bias
    taps = weights.reshape(out_c, -1)
    bias_eff = (bias - in_zp * taps.astype(np.int64).sum(axis=1)).astype(np.int32)
    table = fixedpoint.requantize_tables(multipliers, shifts)
    pixels = win["out"][0] * win["out"][1]
    cols = np.zeros((pixels, taps.shape[1]), np.float32)
    acc = np.zeros((pixels, out_c), np.float32)
    gemm_out = np.zeros_like(got)
    mirror = np.zeros((batches * pixels, out_c), np.float32)
    for n in range(batches):
        fast.im2col_s8_f32(x[n], cols, win["out"][1], *win["kernel"], *geometry, in_zp)
        np.matmul(cols, taps.T.astype(np.float32), out=acc)
        fast.requantize_gemm(acc, bias_eff, table, out_zp, act_min, act_max, gemm_out[n].reshape(pixels, out_c),
                             mirror[n * pixels:(n + 1) * pixels])
    assert np.array_equal(gemm_out, want)
    assert np.array_equal(mirror, want.reshape(-1, out_c).astype(np.float32))


@pytest.mark.parametrize("seed", range(40))
def test_depthwise_matches_twin_and_row_kernel(seed):
    rng = np.random.default_rng(100 + seed)
    win = random_window(rng)
    batches, in_c, multiplier = int(rng.integers(1, 3)), int(rng.integers(1, 6)), int(rng.integers(1, 4))
    out_c = in_c * multiplier
    x = random_int8(rng, (batches, *win["size"], in_c))
    weights = rng.integers(-127, 128, (1, *win["kernel"], out_c)).astype(np.int8)
    bias = rng.integers(-20000, 20000, out_c).astype(np.int32)
    multipliers, shifts = random_multipliers(rng, out_c)
    in_zp, out_zp = int(rng.integers(-128, 128)), int(rng.integers(-128, 128))
    act_min, act_max = clamp_range(rng)
    geometry = (*win["stride"], *win["pad"], *win["dilation"])
    args = (*geometry, multiplier, in_zp, out_zp, multipliers, shifts, act_min, act_max)
    got = np.zeros((batches, *win["out"], out_c), np.int8)
    want = np.full_like(got, 99)
    fast.depthwise_conv2d_s8(x, weights, bias, got, *args)
    ref.depthwise_conv2d_s8(x, weights, bias, want, *args)
    assert np.array_equal(got, want)

    mirror = np.zeros((got.size // out_c, out_c), np.float32)
    mirrored = np.zeros_like(got)
    fast.depthwise_conv2d_s8_mirrored(x, weights, bias, mirrored, mirror, *args)
    assert np.array_equal(mirrored, want)
    assert np.array_equal(mirror, want.reshape(-1, out_c).astype(np.float32))

    if multiplier == 1:
        out_w = win["out"][1]
        rows = np.zeros_like(got)
        row_mirror = np.zeros_like(mirror)
        fast.depthwise_rows_s8(x, np.tile(weights[0].astype(np.int16), (1, 1, out_w)), np.tile(bias, out_w),
                               np.tile(fixedpoint.requantize_tables(multipliers, shifts), (1, out_w)), rows, row_mirror,
                               *geometry, in_zp, out_zp, act_min, act_max)
        assert np.array_equal(rows, want)
        assert np.array_equal(row_mirror, mirror)


@pytest.mark.parametrize("seed", range(15))
def test_fully_connected_matches_twin(seed):
    rng = np.random.default_rng(200 + seed)
    batches, depth, out_c = int(rng.integers(1, 4)), int(rng.integers(1, 300)), int(rng.integers(1, 20))
    x = random_int8(rng, (batches, depth))
    weights = rng.integers(-127, 128, (out_c, depth)).astype(np.int8)
    bias = rng.integers(-50000, 50000, out_c).astype(np.int32)
    multipliers, shifts = random_multipliers(rng, out_c)
    args = (int(rng.integers(-128, 128)), int(rng.integers(-128, 128)), multipliers, shifts, *clamp_range(rng))
    got, want = np.zeros((batches, out_c), np.int8), np.ones((batches, out_c), np.int8)
    fast.fully_connected_s8(x, weights, bias, got, *args)
    ref.fully_connected_s8(x, weights, bias, want, *args)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("kernel_name", ["avg_pool2d_s8", "max_pool2d_s8"])
@pytest.mark.parametrize("seed", range(15))
def test_pools_match_twin(kernel_name, seed):
    rng = np.random.default_rng(300 + seed)
    filter_h, filter_w = (int(v) for v in rng.integers(1, 4, 2))
    stride_h, stride_w = (int(v) for v in rng.integers(1, 3, 2))
    in_h, in_w = int(rng.integers(filter_h, 9)), int(rng.integers(filter_w, 9))
    pad_top, pad_left = int(rng.integers(0, filter_h)), int(rng.integers(0, filter_w))
    out_h = (in_h + 2 * pad_top - filter_h) // stride_h + 1
    out_w = (in_w + 2 * pad_left - filter_w) // stride_w + 1
    x = random_int8(rng, (int(rng.integers(1, 3)), in_h, in_w, int(rng.integers(1, 6))))
    args = (filter_h, filter_w, stride_h, stride_w, pad_top, pad_left, *clamp_range(rng))
    got = np.zeros((x.shape[0], out_h, out_w, x.shape[3]), np.int8)
    want = np.ones_like(got)
    getattr(fast, kernel_name)(x, got, *args)
    getattr(ref, kernel_name)(x, want, *args)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("seed", range(15))
def test_mean_matches_twin(seed):
    rng = np.random.default_rng(400 + seed)
    outer, count, inner = int(rng.integers(1, 4)), int(rng.integers(1, 200)), int(rng.integers(1, 9))
    x = random_int8(rng, (outer, count, inner))
    multiplier, shift = fixedpoint.mean_multiplier(float(rng.uniform(0.01, 0.1)), float(rng.uniform(0.01, 0.1)), count)
    args = (int(rng.integers(-128, 128)), int(rng.integers(-128, 128)), multiplier, shift)
    got, want = np.zeros((outer, inner), np.int8), np.ones((outer, inner), np.int8)
    fast.mean_s8(x, got, *args)
    ref.mean_s8(x, want, *args)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("seed", range(15))
def test_add_matches_twin(seed):
    rng = np.random.default_rng(500 + seed)
    size = int(rng.integers(1, 500))
    x1, x2 = random_int8(rng, size), random_int8(rng, size)
    (m1, s1), (m2, s2), (mo, so) = fixedpoint.add_params(*(float(v) for v in rng.uniform(0.001, 0.2, 3)))
    args = (*(int(v) for v in rng.integers(-128, 128, 3)), fixedpoint.ADD_LEFT_SHIFT, m1, s1, m2, s2, mo, so,
            *clamp_range(rng))
    got, want = np.zeros(size, np.int8), np.ones(size, np.int8)
    fast.add_s8(x1, x2, got, *args)
    ref.add_s8(x1, x2, want, *args)
    assert np.array_equal(got, want)


@pytest.mark.parametrize("seed", range(20))
def test_softmax_matches_twin(seed):
    rng = np.random.default_rng(600 + seed)
    rows, depth = int(rng.integers(1, 5)), int(rng.integers(1, 40))
    x = random_int8(rng, (rows, depth))
    x[0, 0] = 127  # a wide spread makes some differences fall below diff_min
    params = fixedpoint.softmax_params(float(rng.choice([0.001, 0.05, 0.2, 1.0, 4.0])), float(rng.choice([0.5, 1.0, 2.0])))
    got, want = np.zeros_like(x), np.ones_like(x)
    fast.softmax_s8(x, got, *params)
    ref.softmax_s8(x, want, *params)
    assert np.array_equal(got, want)
    probabilities = (got.astype(np.float64) + 128) / 256
    assert np.all(np.abs(probabilities.sum(axis=1) - 1.0) <= depth / 256)


@pytest.mark.parametrize("seed", range(10))
def test_pad_matches_twin(seed):
    rng = np.random.default_rng(700 + seed)
    x = random_int8(rng, tuple(int(v) for v in rng.integers(1, 5, 4)))
    before = rng.integers(0, 3, 4)
    after = rng.integers(0, 3, 4)
    out_shape = tuple(int(s + b + a) for s, b, a in zip(x.shape, before, after))
    got, want = np.zeros(out_shape, np.int8), np.ones(out_shape, np.int8)
    fast.pad_s8(x, got, before.astype(np.int64), -7)
    ref.pad_s8(x, want, before.astype(np.int64), -7)
    assert np.array_equal(got, want)


def test_quantize_requantize_dequantize_match_twins():
    rng = np.random.default_rng(800)
    reals = np.concatenate([rng.normal(0, 3, 1000), np.arange(-20, 20) * 0.05 + 0.025, [np.inf, -np.inf, 1e30]])
    reals = reals.astype(np.float32)
    got, want = np.zeros(reals.size, np.int8), np.ones(reals.size, np.int8)
    fast.quantize_f32_to_s8(reals, got, 0.05, -3)
    ref.quantize_f32_to_s8(reals, want, 0.05, -3)
    assert np.array_equal(got, want)
    codes = random_int8(rng, 1000)
    multiplier, shift = fixedpoint.quantize_multiplier(0.05 / 0.07)
    got, want = np.zeros(1000, np.int8), np.ones(1000, np.int8)
    fast.requantize_s8(codes, got, 4, -9, multiplier, shift)
    ref.requantize_s8(codes, want, 4, -9, multiplier, shift)
    assert np.array_equal(got, want)
    got_f, want_f = np.zeros(1000, np.float32), np.ones(1000, np.float32)
    fast.dequantize_s8(codes, got_f, 0.0392, 5)
    ref.dequantize_s8(codes, want_f, 0.0392, 5)
    assert np.array_equal(got_f, want_f)
    assert np.array_equal(got_f, (np.float64(np.float32(0.0392)) * (codes.astype(np.float64) - 5)).astype(np.float32))

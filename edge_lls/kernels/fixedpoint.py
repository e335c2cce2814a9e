"""TFLite fixed-point arithmetic: multipliers, shifts, rounding, gemmlowp exp/reciprocal.

Three flavours of each primitive live here, all bit-identical:
  * scalar functions compiled with Numba (used inside the int8 kernels),
  * ``*_array`` functions in plain NumPy on int64 arrays (used by the reference twins),
  * Python-float functions that turn real scales into (multiplier, shift) pairs at load time.

Every int32 quantity is carried in an int64 so that products never overflow; where
TFLite's C++ would wrap an int32 (it never does for valid models, see the bounds in
edge_lls/kernels/int8/) we wrap explicitly with ``wrap_int32``.

Rounding conventions copied from TFLite/gemmlowp semantics (not from their code):
  * SaturatingRoundingDoublingHighMul: floor(a*b / 2^31 + 1/2), i.e. ties toward +infinity
    (gemmlowp nudges by +2^30 or 1-2^30, then truncates); the single overflow case
    INT32_MIN*INT32_MIN saturates to INT32_MAX.
  * RoundingDivideByPOT: round(x / 2^e), ties away from zero.
  * QuantizeMultiplier: round-half-away-from-zero of the frexp mantissa times 2^31.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

INT32_MIN = -(1 << 31)
INT32_MAX = (1 << 31) - 1
INT8_MIN = -128
INT8_MAX = 127

# softmax: exp() input is Q5.26, the running sum of exps is Q12.19 (TFLite's choice).
SOFTMAX_DIFF_INTEGER_BITS = 5
SOFTMAX_ACCUM_INTEGER_BITS = 12

# ADD rescales both inputs to a common scale with 20 bits of headroom (TFLite's choice for int8).
ADD_LEFT_SHIFT = 20


# ----------------------------------------------------------------------------------------
# Load-time helpers (Python floats are IEEE doubles, matching TFLite's double arithmetic)
# ----------------------------------------------------------------------------------------

def round_half_away(value: float) -> int:
    """std::round: nearest integer, ties away from zero."""
    magnitude = math.floor(abs(value) + 0.5)
    return int(magnitude) if value >= 0 else -int(magnitude)


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """Real multiplier -> (Q0.31 significand, power-of-two exponent), as TFLite QuantizeMultiplier.

    real_multiplier ~= significand * 2^(shift - 31); shift > 0 means a left shift.
    Multipliers below ~2^-31 are flushed to (0, 0), exactly as TFLite does.
    """
    if real_multiplier == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real_multiplier)  # mantissa in [0.5, 1)
    significand = round_half_away(mantissa * (1 << 31))  # exact: scaling by 2^31 loses nothing
    if significand == (1 << 31):  # mantissa rounded up to 1.0
        significand //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    return significand, shift


def quantize_multipliers(real_multipliers) -> tuple[np.ndarray, np.ndarray]:
    """Vector of real multipliers -> (int32 significands, int32 shifts)."""
    pairs = [quantize_multiplier(float(m)) for m in np.asarray(real_multipliers, np.float64).ravel()]
    significands = np.array([p[0] for p in pairs], dtype=np.int32)
    shifts = np.array([p[1] for p in pairs], dtype=np.int32)
    return significands, shifts


def conv_output_multipliers(input_scale: float, weight_scales, output_scale: float,
                            channels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-output-channel (multiplier, shift) for CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED.

    The effective scale is computed as (double)input_scale * (double)weight_scale /
    (double)output_scale, left to right, exactly like TFLite; a per-tensor weight scale is
    broadcast to every channel.
    """
    weight_scales = np.asarray(weight_scales, np.float32).ravel()
    if weight_scales.size == 1:
        weight_scales = np.repeat(weight_scales, channels)
    in_s, out_s = float(np.float32(input_scale)), float(np.float32(output_scale))
    reals = [in_s * float(ws) / out_s for ws in weight_scales]
    return quantize_multipliers(reals)


def activation_range_s8(activation: str, scale: float, zero_point: int) -> tuple[int, int]:
    """Clamp range of a fused activation in the int8 output domain (CalculateActivationRangeQuantized).

    The real bound is divided by the scale in float32 and rounded half away from zero,
    as TFLite does, so a RELU6 bound lands on the same integer.
    """
    def quantize_bound(real_bound: float) -> int:
        ratio = np.float32(real_bound) / np.float32(scale)
        return int(zero_point) + round_half_away(float(ratio))

    if activation == "NONE":
        return INT8_MIN, INT8_MAX
    if activation == "RELU":
        return max(INT8_MIN, quantize_bound(0.0)), INT8_MAX
    if activation == "RELU6":
        return max(INT8_MIN, quantize_bound(0.0)), min(INT8_MAX, quantize_bound(6.0))
    if activation == "RELU_N1_TO_1":
        return max(INT8_MIN, quantize_bound(-1.0)), min(INT8_MAX, quantize_bound(1.0))
    raise ValueError(f"unsupported fused activation {activation}")


def softmax_params(input_scale: float, beta: float) -> tuple[int, int, int]:
    """(input_multiplier, input_left_shift, diff_min) of TFLite's reference int8 softmax.

    The input difference (x - max) is rescaled to Q5.26 by beta*input_scale*2^26 (capped
    at 2^31-1); differences below diff_min would underflow exp() and give probability 0.
    """
    real = float(np.float32(beta)) * float(np.float32(input_scale)) * float(1 << (31 - SOFTMAX_DIFF_INTEGER_BITS))
    real = min(real, float((1 << 31) - 1))
    multiplier, left_shift = quantize_multiplier(real)
    max_input_rescaled = (1.0 * ((1 << SOFTMAX_DIFF_INTEGER_BITS) - 1)
                          * float(1 << (31 - SOFTMAX_DIFF_INTEGER_BITS)) / float(1 << left_shift))
    diff_min = -int(math.floor(max_input_rescaled))
    return multiplier, left_shift, diff_min


def add_params(scale1: float, scale2: float, output_scale: float):
    """Multipliers of TFLite's int8 ADD: both inputs to 2*max(scale) with 2^20 headroom.

    Returns ((m1, s1), (m2, s2), (m_out, s_out)); every shift is <= 0 (a right shift).
    """
    s1, s2, so = (float(np.float32(s)) for s in (scale1, scale2, output_scale))
    twice_max = 2.0 * max(s1, s2)
    reals = (s1 / twice_max, s2 / twice_max, twice_max / (float(1 << ADD_LEFT_SHIFT) * so))
    return tuple(quantize_multiplier(r) for r in reals)


def mean_multiplier(input_scale: float, output_scale: float, count: int) -> tuple[int, int]:
    """(multiplier, shift) of TFLite's int8 MEAN: input/output scale with 1/count folded in.

    TFLite first quantizes input_scale/output_scale, then divides the significand by the
    element count after pre-shifting it left by floor(log2(count)) (at most 32 bits, and no
    further than a total shift of -31), truncating the quotient.
    """
    multiplier, shift = quantize_multiplier(float(np.float32(input_scale)) / float(np.float32(output_scale)))
    extra = min(count.bit_length() - 1, 32, 31 + shift)
    multiplier = (multiplier << extra) // count  # both non-negative: floor == truncation
    return int(multiplier), shift - extra


def quantize(real: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """Real values -> int8 codes, as the QUANTIZE op does (float32 divide, ties away, clamp)."""
    ratio = (np.asarray(real, np.float32) / np.float32(scale)).astype(np.float64)  # +0.5 exact in float64
    rounded = np.sign(ratio) * np.floor(np.abs(ratio) + 0.5)
    return np.clip(rounded.astype(np.int64) + int(zero_point), INT8_MIN, INT8_MAX).astype(np.int8)


def dequantize(codes: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    """int8 codes -> float32 reals: scale * (q - zero_point), rounded once to float32."""
    return (np.float32(scale) * (np.asarray(codes).astype(np.float32) - np.float32(zero_point))).astype(np.float32)


# ----------------------------------------------------------------------------------------
# Scalar primitives, compiled (int32 values carried in int64)
# ----------------------------------------------------------------------------------------

@njit(cache=True)
def wrap_int32(value):
    """Two's-complement wrap of an integer to int32, as a C++ int32 store does."""
    return ((value + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


@njit(cache=True)
def truncating_div_pow2_31(value):
    """C++ int64 division by 2^31 (rounds toward zero, unlike >> which floors)."""
    if value >= 0:
        return value >> 31
    return -((-value) >> 31)


@njit(cache=True)
def saturating_rounding_doubling_high_mul(a, b):
    """floor(a*b / 2^31 + 1/2) of two int32 (ties toward +infinity); INT32_MIN*INT32_MIN -> INT32_MAX."""
    if a == b and a == -2147483648:
        return 2147483647
    product = a * b  # |a*b| <= 2^62: exact in int64
    nudge = (1 << 30) if product >= 0 else 1 - (1 << 30)
    return truncating_div_pow2_31(product + nudge)


@njit(cache=True)
def rounding_divide_by_pot(x, exponent):
    """round(x / 2^exponent), ties away from zero; exponent in [0, 31]."""
    mask = (1 << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (1 if x < 0 else 0)
    return (x >> exponent) + (1 if remainder > threshold else 0)


@njit(cache=True)
def multiply_by_quantized_multiplier(x, multiplier, shift):
    """x * multiplier * 2^(shift-31) with TFLite's double rounding (high-mul, then shift)."""
    left_shift = shift if shift > 0 else 0
    right_shift = -shift if shift < 0 else 0
    scaled = wrap_int32(x * (1 << left_shift))
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(scaled, multiplier), right_shift)


@njit(cache=True)
def requantize_tables(multipliers, shifts):
    """(5, C) int64 per-channel constants for requantize_value:
    rows = multiplier, left shift, total right shift k = 31 + right, and the rounding offsets
    added before the final shift for non-negative and for negative products.

    Why one shift reproduces TFLite's two roundings.  With P = x * multiplier and r the right
    shift, TFLite computes high = floor((P + 2^30) / 2^31) (the doubling high-mul) and then
    rounds high / 2^r half away from zero.
    For P >= 0 that is floor((floor((P + 2^30) / 2^31) + 2^(r-1)) / 2^r), and because
    floor((floor(y) + K) / n) == floor((y + K) / n) for integers K, n > 0, it equals
    floor((P + 2^30 + 2^(30+r)) / 2^(31+r)).  For P < 0, high = -floor((|P| + 2^30 - 1) / 2^31)
    and the same identity gives -floor((|P| + 2^30 - 1 + 2^(30+r)) / 2^(31+r))
    = floor((P + 2^(31+r) - 2^30 - 2^(30+r)) / 2^(31+r)).
    (For r == 0 the 2^(30+r) term is absent: TFLite does not round a shift by zero.)
    Both are ``(P + offset) >> k`` with an offset picked by the sign of P: straight-line code
    that vectorises.  tests/test_int8_kernels.py checks it against the literal two-step form.
    """
    channels = multipliers.shape[0]
    table = np.empty((5, channels), np.int64)
    for c in range(channels):
        shift = np.int64(shifts[c])
        right = -shift if shift < 0 else 0
        total = 31 + right
        positive = (np.int64(1) << 30) + ((np.int64(1) << (30 + right)) if right > 0 else 0)
        table[0, c] = multipliers[c]
        table[1, c] = shift if shift > 0 else 0
        table[2, c] = total
        table[3, c] = positive
        table[4, c] = (np.int64(1) << total) - positive
    return table


@njit(cache=True)
def requantize_value(x, multiplier, left_shift, total_shift, round_positive, round_negative):
    """multiply_by_quantized_multiplier(x, multiplier, shift) for multiplier >= 0, using the
    constants of requantize_tables (see there for the proof of equality)."""
    scaled = wrap_int32(x << left_shift) if left_shift > 0 else x
    product = scaled * multiplier
    offset = round_positive + ((round_negative - round_positive) & (product >> 63))  # select by sign, no branch
    return (product + offset) >> total_shift


@njit(cache=True)
def requantize_value_right(x, multiplier, total_shift, round_positive, round_negative):
    """requantize_value for a channel without left shift; x must already lie in int32.
    Kept separate so that the common case compiles to a short vectorisable loop; the int32
    casts tell LLVM both factors are 32-bit, so it uses a 32x32->64 multiply."""
    product = np.int64(np.int32(x)) * np.int64(np.int32(multiplier))
    offset = round_positive + ((round_negative - round_positive) & (product >> 63))  # select by sign, no branch
    return (product + offset) >> total_shift


@njit(cache=True)
def has_left_shift(table):
    """True when any channel of a requantize_tables table needs a left shift."""
    for c in range(table.shape[1]):
        if table[1, c] > 0:
            return True
    return False


@njit(cache=True)
def multiply_by_quantized_multiplier_single_rounding(x, multiplier, shift):
    """x * multiplier * 2^(shift-31) rounded once, ties toward +infinity (shift <= 30).

    This is what LiteRT's reference FULLY_CONNECTED computes for int8 (measured against
    ai-edge-litert 2.3 on random layers: it differs from the two-step rounding of
    multiply_by_quantized_multiplier in about one output in 2^(right shift + 1)).
    """
    total_shift = 31 - shift
    return (x * multiplier + (np.int64(1) << (total_shift - 1))) >> total_shift


@njit(cache=True)
def saturating_left_shift(x, exponent):
    """x * 2^exponent saturated to int32 (gemmlowp SaturatingRoundingMultiplyByPOT, exponent > 0)."""
    threshold = (1 << (31 - exponent)) - 1
    if x > threshold:
        return 2147483647
    if x < -threshold:
        return -2147483648
    return x << exponent


@njit(cache=True)
def count_leading_zeros_u32(x):
    """Leading zero bits of x viewed as uint32 (32 for zero)."""
    x = x & 0xFFFFFFFF
    count = 0
    probe = 1 << 31
    while count < 32 and (x & probe) == 0:
        count += 1
        probe >>= 1
    return count


# gemmlowp constants (Q0.31 raw values): exp(-1/8), 1/3, and exp(-2^k) for k = -2..4.
EXP_MINUS_ONE_EIGHTH_Q31 = 1895147668
ONE_THIRD_Q31 = 715827883
EXP_BARREL_MULTIPLIERS_Q31 = (1672461947, 1302514674, 790015084, 290630308, 39332535, 720401, 242)
# Newton-Raphson start for 1/(1+x): 48/17 and -32/17 in Q2.29.
FORTY_EIGHT_SEVENTEENTHS_Q29 = 1515870810
MINUS_THIRTY_TWO_SEVENTEENTHS_Q29 = -1010580540


@njit(cache=True)
def exp_on_interval_quarter(a):
    """exp(a) for a in [-1/4, 0), Q0.31 in and out: 4th-order Taylor series around -1/8."""
    x = wrap_int32(a + (1 << 28))  # a + 1/8
    x2 = saturating_rounding_doubling_high_mul(x, x)
    x3 = saturating_rounding_doubling_high_mul(x2, x)
    x4 = saturating_rounding_doubling_high_mul(x2, x2)
    x4_over_4 = rounding_divide_by_pot(x4, 2)
    poly = wrap_int32(saturating_rounding_doubling_high_mul(wrap_int32(x4_over_4 + x3), ONE_THIRD_Q31) + x2)
    poly = rounding_divide_by_pot(poly, 1)  # x^4/24 + x^3/6 + x^2/2
    tail = saturating_rounding_doubling_high_mul(EXP_MINUS_ONE_EIGHTH_Q31, wrap_int32(x + poly))
    return wrap_int32(EXP_MINUS_ONE_EIGHTH_Q31 + tail)


@njit(cache=True)
def exp_on_negative_values_q5_26(a):
    """exp(a) for a <= 0 given in Q5.26; result in Q0.31 (gemmlowp exp_on_negative_values<5>)."""
    fractional_bits = 26
    one_quarter = 1 << (fractional_bits - 2)
    a_mod_quarter_minus_quarter = wrap_int32((a & (one_quarter - 1)) - one_quarter)
    # Rescale Q5.26 -> Q0.31: saturating x 2^5 (cannot saturate: |value| <= 2^24)
    result = exp_on_interval_quarter(saturating_left_shift(a_mod_quarter_minus_quarter, 5))
    remainder = wrap_int32(a_mod_quarter_minus_quarter - a)
    for k in range(7):  # exponents -2 .. 4: multiply by exp(-2^exponent) for each set bit
        if remainder & (1 << (fractional_bits - 2 + k)):
            result = saturating_rounding_doubling_high_mul(result, EXP_BARREL_MULTIPLIERS_Q31[k])
    if a == 0:
        return 2147483647
    return result


@njit(cache=True)
def one_over_one_plus_x(a):
    """1/(1+a) for a in [0, 1) as Q0.31 -> Q0.31, three Newton-Raphson steps in Q2.29."""
    half_denominator = (a + 2147483647 + 1) >> 1  # RoundingHalfSum(a, 1.0); the sum is >= 0
    x = wrap_int32(FORTY_EIGHT_SEVENTEENTHS_Q29
                   + saturating_rounding_doubling_high_mul(half_denominator, MINUS_THIRTY_TWO_SEVENTEENTHS_Q29))
    for _ in range(3):
        half_denominator_times_x = saturating_rounding_doubling_high_mul(half_denominator, x)
        one_minus = wrap_int32((1 << 29) - half_denominator_times_x)
        correction = saturating_left_shift(saturating_rounding_doubling_high_mul(x, one_minus), 2)
        x = wrap_int32(x + correction)
    return saturating_left_shift(x, 1)  # Q2.29 halved, as Q1.30 -> Q0.31


@njit(cache=True)
def reciprocal_q12(sum_of_exps):
    """1/sum for sum > 0 in Q12.19 -> (Q0.31 scale, bits over unit), as TFLite GetReciprocal."""
    headroom_plus_one = count_leading_zeros_u32(sum_of_exps)
    bits_over_unit = SOFTMAX_ACCUM_INTEGER_BITS - headroom_plus_one
    shifted = ((sum_of_exps << headroom_plus_one) - (1 << 31)) & 0xFFFFFFFF  # uint32 wrap
    shifted_minus_one = shifted - (1 << 32) if shifted >= (1 << 31) else shifted
    return one_over_one_plus_x(shifted_minus_one), bits_over_unit


# ----------------------------------------------------------------------------------------
# Array primitives, plain NumPy on int64 arrays (for the reference twins)
# ----------------------------------------------------------------------------------------

def wrap_int32_array(value: np.ndarray) -> np.ndarray:
    return ((np.asarray(value, np.int64) + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)


def saturating_rounding_doubling_high_mul_array(a, b) -> np.ndarray:
    a = np.asarray(a, np.int64)
    b = np.asarray(b, np.int64)
    product = a * b
    nudge = np.where(product >= 0, 1 << 30, 1 - (1 << 30))
    total = product + nudge
    quotient = np.where(total >= 0, total >> 31, -((-total) >> 31))  # C++ truncating division
    overflow = (a == b) & (a == INT32_MIN)
    return np.where(overflow, INT32_MAX, quotient)


def rounding_divide_by_pot_array(x, exponent) -> np.ndarray:
    x = np.asarray(x, np.int64)
    exponent = np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier_array(x, multiplier, shift) -> np.ndarray:
    shift = np.asarray(shift, np.int64)
    left_shift = np.maximum(shift, 0)
    right_shift = np.maximum(-shift, 0)
    scaled = wrap_int32_array(np.asarray(x, np.int64) * (np.int64(1) << left_shift))
    return rounding_divide_by_pot_array(saturating_rounding_doubling_high_mul_array(scaled, multiplier), right_shift)


def multiply_by_quantized_multiplier_single_rounding_array(x, multiplier, shift) -> np.ndarray:
    total_shift = 31 - np.asarray(shift, np.int64)
    product = np.asarray(x, np.int64) * np.asarray(multiplier, np.int64)
    return (product + (np.int64(1) << (total_shift - 1))) >> total_shift


def saturating_left_shift_array(x, exponent: int) -> np.ndarray:
    x = np.asarray(x, np.int64)
    threshold = (1 << (31 - exponent)) - 1
    return np.where(x > threshold, INT32_MAX, np.where(x < -threshold, INT32_MIN, x << exponent))


def exp_on_interval_quarter_array(a) -> np.ndarray:
    srdhm = saturating_rounding_doubling_high_mul_array
    x = wrap_int32_array(np.asarray(a, np.int64) + (1 << 28))
    x2 = srdhm(x, x)
    x3 = srdhm(x2, x)
    x4 = srdhm(x2, x2)
    x4_over_4 = rounding_divide_by_pot_array(x4, 2)
    poly = wrap_int32_array(srdhm(wrap_int32_array(x4_over_4 + x3), ONE_THIRD_Q31) + x2)
    poly = rounding_divide_by_pot_array(poly, 1)
    return wrap_int32_array(EXP_MINUS_ONE_EIGHTH_Q31 + srdhm(EXP_MINUS_ONE_EIGHTH_Q31, wrap_int32_array(x + poly)))


def exp_on_negative_values_q5_26_array(a) -> np.ndarray:
    a = np.asarray(a, np.int64)
    one_quarter = 1 << 24
    a_mod = wrap_int32_array((a & (one_quarter - 1)) - one_quarter)
    result = exp_on_interval_quarter_array(saturating_left_shift_array(a_mod, 5))
    remainder = wrap_int32_array(a_mod - a)
    for k, multiplier in enumerate(EXP_BARREL_MULTIPLIERS_Q31):
        bit_set = (remainder & (1 << (24 + k))) != 0
        result = np.where(bit_set, saturating_rounding_doubling_high_mul_array(result, multiplier), result)
    return np.where(a == 0, INT32_MAX, result)


def one_over_one_plus_x_array(a) -> np.ndarray:
    srdhm = saturating_rounding_doubling_high_mul_array
    half_denominator = (np.asarray(a, np.int64) + INT32_MAX + 1) >> 1
    x = wrap_int32_array(FORTY_EIGHT_SEVENTEENTHS_Q29 + srdhm(half_denominator, MINUS_THIRTY_TWO_SEVENTEENTHS_Q29))
    for _ in range(3):
        one_minus = wrap_int32_array((1 << 29) - srdhm(half_denominator, x))
        x = wrap_int32_array(x + saturating_left_shift_array(srdhm(x, one_minus), 2))
    return saturating_left_shift_array(x, 1)


def reciprocal_q12_array(sum_of_exps):
    """Vectorised GetReciprocal: (Q0.31 scale, bits over unit) for positive Q12.19 sums."""
    sums = np.asarray(sum_of_exps, np.int64)
    bit_length = np.frexp(sums.astype(np.float64))[1].astype(np.int64)  # exact for sums < 2^53
    headroom_plus_one = 32 - bit_length
    shifted = ((sums << headroom_plus_one) - (1 << 31)) & 0xFFFFFFFF
    shifted_minus_one = np.where(shifted >= (1 << 31), shifted - (1 << 32), shifted)
    return one_over_one_plus_x_array(shifted_minus_one), SOFTMAX_ACCUM_INTEGER_BITS - headroom_plus_one


# ----------------------------------------------------------------------------------------
# Clamp-first requantization (fast path of the graph)
# ----------------------------------------------------------------------------------------

# Largest integer magnitude below which every float32 accumulator of the fast path is exact.
FLOAT32_EXACT_INTEGER = 1 << 24


def clamp_first_tables(multipliers, shifts, bias, output_zero_point: int, act_min: int, act_max: int):
    """Constants for requantizing an exact accumulator ``acc`` (bias not included, |acc| <= 2^24)
    with the clamp moved in front of the multiplication, or None when the rule does not apply.

    TFLite computes clamp(f(acc + bias) + zp, act_min, act_max) with f =
    MultiplyByQuantizedMultiplier.  For a multiplier below 1 (no left shift) f is
    non-decreasing, so with
        t_max = min{t : f(t) >= act_max - zp},   t_min = max{t : f(t) <= act_min - zp}
    (searched in int32 and verified to land exactly on act_max - zp and act_min - zp) every t
    gives clamp(f(t) + zp, act_min, act_max) == f(clamp(t, t_min, t_max)) + zp: the output
    clamp disappears and every result fits int8.  The accumulator is clamped to
    [t_min - bias, t_max - bias] (float32; within +-2^24, where every accumulator lies, so the
    bounds are exact integers), and
        out = ((acc * m + bias * m + offset) >> total_shift) + zp
    with TFLite's rounding offset for non-negative products, plus a correction for negative
    products when some channel can have one (``signed``); requantize_tables proves that this
    single shift equals TFLite's two roundings.  A channel whose output cannot vary over
    |acc| <= 2^24 (flushed multiplier, or a bias that saturates it) becomes a constant:
    multiplier 0, offset = value << shift.

    Returns dict(lo, hi: float32; multiplier, shift, folded (= bias*m + offset), bias_product,
    offset, negative_delta: int64; signed: bool), indexed by channel.
    """
    multipliers = np.asarray(multipliers, np.int64)
    shifts = np.asarray(shifts, np.int64)
    bias = np.asarray(bias, np.int64)
    if np.any(shifts > 0) or np.any(multipliers < 0) or act_min > act_max or np.any(np.abs(bias) >= 2 ** 31):
        return None
    channels = multipliers.size
    low, high = np.int64(INT32_MIN), np.int64(INT32_MAX)
    limit = FLOAT32_EXACT_INTEGER

    def f(t):
        return multiply_by_quantized_multiplier_array(t, multipliers, shifts)

    top, bottom = act_max - output_zero_point, act_min - output_zero_point
    # t_max: smallest t with f(t) >= top (INT32_MAX when there is none)
    a, b = np.full(channels, low), np.full(channels, high)
    while np.any(a < b):
        mid = (a + b) >> 1
        reached = f(mid) >= top
        a, b = np.where(reached, a, mid + 1), np.where(reached, mid, b)
    t_max = a
    # t_min: largest t with f(t) <= bottom (INT32_MIN when there is none)
    a, b = np.full(channels, low), np.full(channels, high)
    while np.any(a < b):
        mid = (a + b + 1) >> 1
        below = f(mid) <= bottom
        a, b = np.where(below, mid, a), np.where(below, b, mid - 1)
    t_min = a
    saturated_low = t_min - bias >= limit  # every acc gives act_min
    saturated_high = t_max - bias <= -limit  # every acc gives act_max
    constant = (multipliers == 0) | saturated_low | saturated_high
    value = np.where(saturated_low, act_min, np.where(saturated_high, act_max,
                                                     min(max(output_zero_point, act_min), act_max)))
    upper_ok = (f(t_max) == top) | ((t_max == high) & (f(t_max) <= top))
    lower_ok = (f(t_min) == bottom) | ((t_min == low) & (f(t_min) >= bottom))
    if not np.all(constant | (upper_ok & lower_ok & (t_min <= t_max))):
        return None
    right = -shifts
    total = np.where(constant, 31, 31 + right)
    positive = (np.int64(1) << 30) + np.where(right > 0, np.int64(1) << np.minimum(30 + right, 62), 0)
    negative = (np.int64(1) << total) - positive
    lo = np.clip(t_min - bias, -limit, limit)
    hi = np.clip(t_max - bias, -limit, limit)
    multiplier = np.where(constant, 0, multipliers)
    bias_product = np.where(constant, 0, bias * multipliers)  # |bias * m| < 2^62
    offset = np.where(constant, (value - output_zero_point) << 31, positive)
    negative_delta = np.where(constant, 0, negative - positive)
    folded = [int(b) + int(o) for b, o in zip(bias_product, offset)]
    if any(abs(v) >= 2 ** 63 - 2 ** 62 for v in folded):
        return None
    tables = dict(lo=np.where(constant, 0, lo).astype(np.float32), hi=np.where(constant, 0, hi).astype(np.float32),
                  multiplier=multiplier, shift=total.astype(np.int64), folded=np.array(folded, np.int64),
                  bias_product=bias_product, offset=offset, negative_delta=negative_delta,
                  signed=bool(np.any(~constant & (np.maximum(t_min, bias - limit) < 0))))
    # self-check of both closed forms at the ends of the range, around zero and in the middle
    for acc in (-limit, limit, 0, -1, 1):
        acc = np.full(channels, acc, np.int64)
        t = acc + bias
        want = np.clip(f(t) + output_zero_point, act_min, act_max)
        clamped = np.clip(acc, tables["lo"].astype(np.int64), tables["hi"].astype(np.int64))
        product = clamped * multiplier + bias_product
        signed = ((product + offset + (negative_delta & (product >> 63))) >> total) + output_zero_point
        unsigned = ((clamped * multiplier + tables["folded"]) >> total) + output_zero_point
        if not np.array_equal(signed, want) or not (tables["signed"] or np.array_equal(unsigned, want)):
            return None
    return tables

"""The board's LLS fine-tuning step, on the host: the Python twin of the firmware's
el_train.c, el_lls_head.c, el_lls_update_dwsep.c and el_lls_common.c.

    trainer = BoardTrainer(image_bytes, lr=1e-3, classifier_lr=1e-2, seed=1)
    stats = trainer.step(features, label)    # features: the first trainable block's input, int8
    trainer.predict(features)                # the int8 output with the learned weights
    trainer.weights()                        # {op: (int8 weights, int32 bias)}: what the board holds

It reads the same model image the board runs (edge_lls/formats/blob.py, one representation)
and computes what the board computes, in the same order, so that the host predicts the
board's weights bit for bit:

  * int8 forward of the trainable ops through the TFLite-exact kernels
    (edge_lls/kernels/int8/literal.py, the Python runtime's TFLM mode, which the C kernels equal);
  * float32 everywhere else, one operation at a time in the C code's order: every constant a
    float32, every int converted explicitly, no fused multiply-add (Numba emits none without
    fastmath, the firmware is built with -ffp-contract=off), exp / log from the same
    multiply-add polynomials (el_mathf.h), sqrt and division correctly rounded on both sides;
  * IEEE division (error_model="numpy": x / 0 is inf, as on the board, not an exception);
  * the same xorshift32 stream for the stochastic rounding, one draw per weight.

The frozen prefix is not part of the twin: its int8 features come from the Python runtime
(Int8Model), which the C runner equals byte for byte (tests/test_firmware_vww.py).
train_layout() gives the firmware's training buffer (el_train_plan) part by part.
"""
from __future__ import annotations

import math
import struct
from dataclasses import dataclass

import numpy as np
from numba import njit

from edge_lls.errors import ConfigError
from edge_lls.formats import blob
from edge_lls.kernels.int8 import literal

f32 = np.float32
MAX_BLOCKS = 4              # EL_TRAIN_MAX_BLOCKS
MAX_CLASSES = 64            # EL_LLS_MAX_CLASSES
MAX_PRODUCT = 255 * 128     # EL_KERNEL_MAX_PRODUCT
INT32_MAX = (1 << 31) - 1


# ====================================================================================
# el_mathf.h
# ====================================================================================

@njit(cache=True, error_model="numpy")
def pow2f(k):
    return f32(2.0 ** k)                    # exact: a power of two in float32's normal range


@njit(cache=True, error_model="numpy")
def floorf_int(x):
    """floor of a float32 in int range: (int)x - ((float)(int)x > x), as the C writes it."""
    i = np.int64(x)                         # truncation toward zero, as C's conversion
    return i - (1 if f32(i) > x else 0)


@njit(cache=True, error_model="numpy")
def expf(x):
    log2e, ln2_hi, ln2_lo = f32(1.44269502), f32(0.693145752), f32(1.42860677e-06)
    if not (x > f32(-87.0)):
        x = f32(-87.0)
    if x > f32(88.0):
        x = f32(88.0)
    k = x * log2e + f32(0.5)
    k = f32(floorf_int(k))
    r = x - k * ln2_hi
    r = r - k * ln2_lo
    p = f32(1.0) / f32(720.0)
    p = p * r + f32(1.0) / f32(120.0)
    p = p * r + f32(1.0) / f32(24.0)
    p = p * r + f32(1.0) / f32(6.0)
    p = p * r + f32(0.5)
    p = p * r + f32(1.0)
    p = p * r + f32(1.0)
    return p * pow2f(np.int64(k))


@njit(cache=True, error_model="numpy")
def logf(x):
    if not (x > f32(1.17549435e-38)):
        return f32(-87.3365479)
    m, e = math.frexp(np.float64(x))        # x = m 2^e, m in [0.5, 1): exact
    m = f32(m * 2.0)                        # [1, 2), e - 1: the C's bit split
    e = e - 1
    if m > f32(1.41421354):
        m = m * f32(0.5)
        e = e + 1
    t = (m - f32(1.0)) / (m + f32(1.0))
    t2 = t * t
    s = f32(1.0) / f32(9.0)
    s = s * t2 + f32(1.0) / f32(7.0)
    s = s * t2 + f32(1.0) / f32(5.0)
    s = s * t2 + f32(1.0) / f32(3.0)
    s = s * t2 + f32(1.0)
    return f32(e) * f32(0.693147182) + f32(2.0) * t * s


# ====================================================================================
# el_lls_common.c
# ====================================================================================

@njit(cache=True, error_model="numpy")
def rng_next(state):
    """xorshift32; state is a (1,) uint32 array."""
    x = np.uint32(state[0])
    x ^= np.uint32(x << np.uint32(13))
    x ^= np.uint32(x >> np.uint32(17))
    x ^= np.uint32(x << np.uint32(5))
    state[0] = x
    return x


@njit(cache=True, error_model="numpy")
def rng_uniform(state):
    return f32(rng_next(state) >> np.uint32(8)) * f32(5.9604644775390625e-08)


@njit(cache=True, error_model="numpy")
def weight_scale(multiplier, shift, input_scale, output_scale):
    m = f32(multiplier) * pow2f(shift - 31)
    return m * output_scale / input_scale


@njit(cache=True, error_model="numpy")
def softmax_cross_entropy(logits, classes, temperature, label, grad):
    top = logits[0] / temperature
    for k in range(1, classes):
        u = logits[k] / temperature
        top = u if u > top else top
    target = logits[label] / temperature - top      # before grad may overwrite logits (el_lls_common.c)
    total = f32(0.0)
    for k in range(classes):
        grad[k] = expf(logits[k] / temperature - top)
        total = total + grad[k]
    for k in range(classes):
        p = grad[k] / total
        grad[k] = (p - (f32(1.0) if k == label else f32(0.0))) / temperature
    return logf(total) - target


@njit(cache=True, error_model="numpy")
def drawn_step(step, state):
    """(the step clamped to +-256 codes, its uniform number u), or (step, -1) with no number
    drawn for a zero or non-finite step (el_lls_common.c drawn_step)."""
    if step - step != f32(0.0) or step == f32(0.0):     # no step: no draw
        return step, f32(-1.0)
    u = rng_uniform(state)
    if step < f32(-256.0):
        step = f32(-256.0)
    if step > f32(256.0):
        step = f32(256.0)
    return step, u


@njit(cache=True, error_model="numpy")
def stochastic_round_step(q, step, state):
    step, u = drawn_step(step, state)
    if u < f32(0.0):
        return q
    moved = floorf_int(step + u) + q
    return -127 if moved < -127 else 127 if moved > 127 else moved


@njit(cache=True, error_model="numpy")
def fraction_round_step(q, fraction, at, step, state):
    """el_fraction_round_step: code q and fraction[at] (1/256 of a code) as M = 256 q + f;
    M += floor(256 step + u), clamped to +-127 * 256; q = M / 256 rounded half up. Returns q."""
    step, u = drawn_step(step, state)
    if u < f32(0.0):
        return q
    master = floorf_int(step * f32(256.0) + u) + 256 * q + np.int64(fraction[at])
    most = 127 * 256
    master = -most if master < -most else most if master > most else master
    q = (master + 128 + 32768) // 256 - 128
    fraction[at] = master - 256 * q
    return q


RMS_DECAY = np.float32(0.999)      # EL_TRAIN_RMSPROP (BoardTrainer(optimizer="rmsprop")), el_rms_normalise
RMS_EPS = np.float32(1e-8)


@njit(cache=True, error_model="numpy")
def normalised(g, v, at, correction):
    """el_rms_normalise: g itself with no state (v empty: SGD), else RMSprop's
    g / (sqrt(v / c) + eps) after v[at] = d v[at] + (1 - d) g^2, c = 1 - d^t the bias correction."""
    if v.size == 0:
        return g
    v[at] = RMS_DECAY * v[at] + (f32(1.0) - RMS_DECAY) * (g * g)
    return g / (np.sqrt(v[at] / correction) + RMS_EPS)


# EL_TRAIN_RMSPROP_FACTORED (BoardTrainer(optimizer="rmsprop-factored")): a rows x cols weight
# matrix (pointwise O x C, depthwise KH*KW x C) keeps its second moment as Adafactor's rank-1
# estimate, v[r, c] ~ row[r] col[c] / sum(row), in the flat state
#   [row (rows) | col (cols) | this step's column sums of g^2 (cols) | bias moments (bias count)]
# (el_factored_* in el_lls_common.c). The step's moment is that estimate decayed plus the
# current g^2, so the first step is sign(g) as RMSprop's; row and column sums follow exactly.

@njit(cache=True, error_model="numpy")
def factored_total(v, rows):
    """el_factored_begin: sum(row) at the op's start (float32, in order)."""
    total = f32(0.0)
    for r in range(rows):
        total = total + v[r]
    return total


@njit(cache=True, error_model="numpy")
def factored_normalise(g, v, rows, cols, r, c, total, correction):
    """el_factored_normalise: g / (sqrt(m / c) + eps), m = d (row[r] col[c] / total) + (1 - d) g^2,
    g^2 added to this step's column sum (the caller adds it to its row sum)."""
    history = (v[r] * v[rows + c]) / total if total > f32(0.0) else f32(0.0)
    g2 = g * g
    v[rows + cols + c] = v[rows + cols + c] + g2
    moment = RMS_DECAY * history + (f32(1.0) - RMS_DECAY) * g2
    return g / (np.sqrt(moment / correction) + RMS_EPS)


@njit(cache=True, error_model="numpy")
def factored_row_end(v, r, row_sum):
    """el_factored_row_end: row[r] = d row[r] + (1 - d) (this step's sum of g^2 over the row)."""
    v[r] = RMS_DECAY * v[r] + (f32(1.0) - RMS_DECAY) * row_sum


@njit(cache=True, error_model="numpy")
def factored_end(v, rows, cols):
    """el_factored_end: col = d col + (1 - d) (this step's column sums), which restart at 0."""
    for c in range(cols):
        v[rows + c] = RMS_DECAY * v[rows + c] + (f32(1.0) - RMS_DECAY) * v[rows + cols + c]
        v[rows + cols + c] = f32(0.0)


@njit(cache=True, error_model="numpy")
def bias_step(bias, step, limit):
    most = f32(1073741824.0)
    if step - step != f32(0.0):
        step = f32(0.0)
    if step < -most:
        step = -most
    if step > most:
        step = most
    moved = floorf_int(step + f32(0.5)) + bias
    return -limit if moved < -limit else limit if moved > limit else moved


@njit(cache=True)
def bias_limit(taps):
    """The largest |bias| a kernel with `taps` products per output accepts (el_bias_limit)."""
    return max(INT32_MAX - taps * MAX_PRODUCT, 0)


# ====================================================================================
# el_lls_head.c and el_lls_update_dwsep.c
# ====================================================================================

@njit(cache=True, error_model="numpy")
def lls_head(output, scale, zero_point, pool, basis, temperature, label, v, grad_v, logits, dy):
    """output (H,W,O) int8; basis (K, D) float32; returns the loss (el_lls_head). v, grad_v
    (D,), logits and dy (K,) are the caller's buffers."""
    h, w, c = output.shape
    classes, d = basis.shape
    for i in range(pool):
        r0, r1 = (i * h) // pool, ((i + 1) * h + pool - 1) // pool
        for j in range(pool):
            c0, c1 = (j * w) // pool, ((j + 1) * w + pool - 1) // pool
            for o in range(c):
                total = 0
                for r in range(r0, r1):
                    for q in range(c0, c1):
                        total += np.int64(output[r, q, o]) - zero_point
                v[(i * pool + j) * c + o] = (f32(total) / f32((r1 - r0) * (c1 - c0))) * scale
    norm2 = f32(0.0)
    for t in range(d):
        norm2 = norm2 + v[t] * v[t]
    norm = np.sqrt(norm2)
    tiny = f32(1e-12)
    denom = norm if norm > tiny else tiny
    for t in range(d):
        grad_v[t] = v[t] / denom
    for k in range(classes):
        y = f32(0.0)
        for t in range(d):
            y = y + grad_v[t] * basis[k, t]
        logits[k] = y
    loss = softmax_cross_entropy(logits, classes, temperature, label, dy)
    dot = f32(0.0)
    for t in range(d):
        g = f32(0.0)
        for k in range(classes):
            g = g + dy[k] * basis[k, t]
        dot = dot + grad_v[t] * g
        v[t] = g
    for t in range(d):
        grad_v[t] = (v[t] - grad_v[t] * dot) / norm if norm > tiny else v[t] / tiny
    return loss


@njit(cache=True, error_model="numpy")
def update_dwsep(x, y, z, x_scale, y_scale, z_scale, x_zero, y_zero, pool, grad_v, lr, state,
                 dw_weights, dw_bias, dw_multiplier, dw_shift, dw_geometry, dw_range,
                 pw_weights, pw_bias, pw_multiplier, pw_shift, pw_range, mid_grad, out_grad, dw_master, pw_master,
                 dw_fraction, pw_fraction, dw_v, pw_v, correction, factored):
    """el_lls_update_dwsep. x (H,W,C), y (H',W',C), z (H',W',O) int8; dw_weights (KH,KW,C),
    pw_weights (O,C) int8 and both biases updated in place. dw_geometry: stride_h, stride_w,
    pad_h, pad_w, dilation_h, dilation_w; *_range: act_min, act_max.
    dw_master / pw_master: empty (the board: stochastic rounding), or float32 masters of the
    weights in code units (a host-only comparison, master_weights=True): the step goes to the
    master and the int8 code is the master rounded to nearest.
    dw_fraction / pw_fraction: empty (int8 codes only), or the flat int8 fractions of the
    weights in 1/256 of a code (el_train_config.fractions = 1: fraction_round_step).
    dw_v / pw_v: empty (SGD), or RMSprop's second moments, the weights' then the biases'
    (EL_TRAIN_RMSPROP; correction = 1 - 0.999^t). A skipped pointwise row keeps its moments
    (lazy, as sparse Adam). factored: dw_v / pw_v are factored moments instead
    (EL_TRAIN_RMSPROP_FACTORED, factored_normalise); a skipped row's moments decay, exactly."""
    oh, ow, cout = z.shape
    cin = y.shape[2]
    ih, iw = x.shape[0], x.shape[1]
    kh, kw = dw_weights.shape[0], dw_weights.shape[1]
    hw = oh * ow
    p = pool
    pw_limit = bias_limit(cin)
    dw_limit = bias_limit(kh * kw)
    yf = y.reshape(hw, cin)
    taps = kh * kw
    pw_bias_at = cout + 2 * cin if factored else cout * cin     # where the bias moments start
    dw_bias_at = taps + 2 * cin if factored else taps * cin
    pw_total = factored_total(pw_v, cout) if factored else f32(0.0)
    for t in range(hw * cin):
        mid_grad[t] = f32(0.0)
    for o in range(cout):
        s_w = weight_scale(pw_multiplier[o], pw_shift[o], y_scale, z_scale)
        bias_grad = f32(0.0)
        live = False
        for r in range(oh):
            for q in range(ow):
                g = f32(0.0)
                for i in range(p):
                    r0, r1 = (i * oh) // p, ((i + 1) * oh + p - 1) // p
                    if r < r0 or r >= r1:
                        continue
                    for j in range(p):
                        c0, c1 = (j * ow) // p, ((j + 1) * ow + p - 1) // p
                        if q < c0 or q >= c1:
                            continue
                        g = g + grad_v[(i * p + j) * cout + o] / f32((r1 - r0) * (c1 - c0))
                code = z[r, q, o]
                if not (code > pw_range[0] and code < pw_range[1]):
                    g = f32(0.0)
                out_grad[r * ow + q] = g
                bias_grad = bias_grad + g
                live = live or g != f32(0.0)
        if not live:                        # a row that cannot move: skipped, as on the board
            if factored:
                factored_row_end(pw_v, o, f32(0.0))
                pw_v[pw_bias_at + o] = RMS_DECAY * pw_v[pw_bias_at + o]
            continue
        bias_grad = normalised(bias_grad, pw_v, pw_bias_at + o, correction)
        row_sum = f32(0.0)
        pw_bias[o] = bias_step(np.int64(pw_bias[o]), -lr * bias_grad / (y_scale * s_w), pw_limit)
        for c in range(cin):
            w_real = s_w * f32(pw_weights[o, c])
            g = f32(0.0)
            for t in range(hw):
                g = g + out_grad[t] * (y_scale * f32(np.int64(yf[t, c]) - y_zero))
                mid_grad[t * cin + c] = mid_grad[t * cin + c] + out_grad[t] * w_real
            if factored:
                row_sum = row_sum + g * g
                g = factored_normalise(g, pw_v, cout, cin, o, c, pw_total, correction)
            else:
                g = normalised(g, pw_v, o * cin + c, correction)
            if pw_master.size:
                pw_master[o, c] = min(max(pw_master[o, c] - lr * g / s_w, f32(-127.0)), f32(127.0))
                pw_weights[o, c] = np.int64(np.round(pw_master[o, c]))
            elif pw_fraction.size:
                pw_weights[o, c] = fraction_round_step(np.int64(pw_weights[o, c]), pw_fraction, o * cin + c,
                                                       -lr * g / s_w, state)
            else:
                pw_weights[o, c] = stochastic_round_step(np.int64(pw_weights[o, c]), -lr * g / s_w, state)
        if factored:
            factored_row_end(pw_v, o, row_sum)
    if factored:
        factored_end(pw_v, cout, cin)
    dw_total = factored_total(dw_v, taps) if factored else f32(0.0)
    for t in range(hw * cin):
        code = yf[t // cin, t % cin]
        if not (code > dw_range[0] and code < dw_range[1]):
            mid_grad[t] = f32(0.0)
    stride_h, stride_w, pad_h, pad_w, dil_h, dil_w = dw_geometry
    for i in range(kh):
        for j in range(kw):
            row_sum = f32(0.0)
            for c in range(cin):
                s_w = weight_scale(dw_multiplier[c], dw_shift[c], x_scale, y_scale)
                g = f32(0.0)
                for r in range(oh):
                    yi = r * stride_h - pad_h + i * dil_h
                    if yi < 0 or yi >= ih:
                        continue
                    for q in range(ow):
                        xi = q * stride_w - pad_w + j * dil_w
                        if xi < 0 or xi >= iw:
                            continue
                        g = g + mid_grad[(r * ow + q) * cin + c] * (x_scale * f32(np.int64(x[yi, xi, c]) - x_zero))
                if factored:
                    row_sum = row_sum + g * g
                    g = factored_normalise(g, dw_v, taps, cin, i * kw + j, c, dw_total, correction)
                else:
                    g = normalised(g, dw_v, (i * kw + j) * cin + c, correction)
                if dw_master.size:
                    dw_master[i, j, c] = min(max(dw_master[i, j, c] - lr * g / s_w, f32(-127.0)), f32(127.0))
                    dw_weights[i, j, c] = np.int64(np.round(dw_master[i, j, c]))
                elif dw_fraction.size:
                    dw_weights[i, j, c] = fraction_round_step(np.int64(dw_weights[i, j, c]), dw_fraction,
                                                              (i * kw + j) * cin + c, -lr * g / s_w, state)
                else:
                    dw_weights[i, j, c] = stochastic_round_step(np.int64(dw_weights[i, j, c]), -lr * g / s_w,
                                                                state)
            if factored:
                factored_row_end(dw_v, i * kw + j, row_sum)
    if factored:
        factored_end(dw_v, taps, cin)
    for c in range(cin):
        s_w = weight_scale(dw_multiplier[c], dw_shift[c], x_scale, y_scale)
        g = f32(0.0)
        for t in range(hw):
            g = g + mid_grad[t * cin + c]
        g = normalised(g, dw_v, dw_bias_at + c, correction)
        dw_bias[c] = bias_step(np.int64(dw_bias[c]), -lr * g / (x_scale * s_w), dw_limit)


@njit(cache=True, error_model="numpy")
def classifier_forward(pooled, input_zero, s_in, master, master_bias, x, logits):
    """The classifier's float logits of the dequantized pooled vector (el_train.c
    train_classifier, first half); pooled (C,) int8, master (K, C). Returns the argmax."""
    classes, depth = master.shape
    for c in range(depth):
        x[c] = s_in * f32(np.int64(pooled[c]) - input_zero)
    predicted = 0
    for k in range(classes):
        y = f32(0.0)
        for c in range(depth):
            y = y + master[k, c] * x[c]
        logits[k] = y + master_bias[k]
        if logits[k] > logits[predicted]:
            predicted = k
    return predicted


@njit(cache=True, error_model="numpy")
def classifier_sgd(s_in, s_out, multiplier, shift, master, master_bias, codes, bias, lr, limit, x, grad):
    """SGD on the classifier's masters with dL/dlogits grad, int8 / int32 re-quantized with the
    exported scales (el_train.c classifier_update)."""
    classes, depth = master.shape
    for k in range(classes):
        s_w = weight_scale(multiplier[k], shift[k], s_in, s_out)
        for c in range(depth):
            master[k, c] = master[k, c] - lr * (grad[k] * x[c])
            codes[k, c] = bias_step(0, master[k, c] / s_w, 127)
        master_bias[k] = master_bias[k] - lr * grad[k]
        bias[k] = bias_step(0, master_bias[k] / (s_in * s_w), limit)


@njit(cache=True, error_model="numpy")
def classifier_update(label, s_in, s_out, multiplier, shift, master, master_bias, codes, bias, lr, limit, x,
                      logits, grad):
    """Cross-entropy of the logits, SGD on the masters, int8 / int32 re-quantized with the
    exported scales (el_softmax_cross_entropy, then classifier_update); grad (K,) is the
    caller's. Returns the loss."""
    classes = master.shape[0]
    loss = softmax_cross_entropy(logits, classes, f32(1.0), label, grad)
    classifier_sgd(s_in, s_out, multiplier, shift, master, master_bias, codes, bias, lr, limit, x, grad)
    return loss


@njit(cache=True, error_model="numpy")
def classifier_input_grad(master, grad, g):
    """dL/dx of the classifier, with the masters before their step: g[c] = sum over k ascending
    of grad[k] * W[k, c] (el_train.c classifier_input_grad); g (>= C,) is the caller's."""
    classes, depth = master.shape
    for c in range(depth):
        total = f32(0.0)
        for k in range(classes):
            total = total + grad[k] * master[k, c]
        g[c] = total


# ====================================================================================
# The image's tail and the training buffer (el_train_plan)
# ====================================================================================

def _align(n: int) -> int:
    return (n + 15) & ~15


def _volume(dims) -> int:
    return int(np.prod(dims))


@dataclass
class TailOp:
    op: int
    record: dict
    weights: np.ndarray         # int8, the SRAM copy (filter shape)
    bias: np.ndarray            # int32
    multiplier: np.ndarray
    shift: np.ndarray
    out: np.ndarray | None = None          # (1, H', W', C') int8: its output, allocated once
    geometry: np.ndarray | None = None     # stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w
    act_range: np.ndarray | None = None    # act_min, act_max


def _array(data: bytes, offset: int, dtype, count: int) -> np.ndarray:
    return np.frombuffer(data, dtype, count, offset).copy()


def _f32_from_bits(bits: int) -> np.float32:
    return np.float32(struct.unpack("<f", struct.pack("<I", bits))[0])


def _check_tail(parsed: dict, where: str) -> None:
    """el_train_plan's checks, with a message per refusal."""
    tail, ops = parsed["tail"], parsed["ops"]
    if tail is None:
        raise ConfigError(f"{where}: the model has no trainable tail (export with --train-last N)")
    if not 1 <= tail["block_count"] <= MAX_BLOCKS:
        raise ConfigError(f"{where}: {tail['block_count']} trainable blocks; the firmware trains 1 to {MAX_BLOCKS}")
    k_classes = tail["num_classes"]
    cls = tail["classifier_op"]
    if not 2 <= k_classes <= MAX_CLASSES or ops[cls]["opcode"] != blob.OPCODES["FULLY_CONNECTED"][0]:
        raise ConfigError(f"{where}: the classifier (op {cls}, {k_classes} classes) is not a FULLY_CONNECTED "
                          f"with 2 to {MAX_CLASSES} classes")
    for k, b in enumerate(tail["blocks"]):
        first = b["first_op"]
        ok = b["kind"] == blob.BLOCK_KINDS["dwsep"] and b["op_count"] == 2 and first + 2 <= cls and \
            (k == 0 or first == tail["blocks"][k - 1]["first_op"] + 2)
        if ok:
            dw, pw = ops[first], ops[first + 1]
            ok = dw["opcode"] == blob.OPCODES["DEPTHWISE_CONV_2D"][0] and pw["opcode"] == blob.OPCODES["CONV_2D"][0]
        if ok:
            d, p = dw["record"], pw["record"]
            ok = (d["ch_mult"] == 1 and d["output"] == p["input"] and p["output"] == b["output"]
                  and p["filter_dims"][1:3] == (1, 1) and (p["stride_h"], p["stride_w"], p["pad_h"], p["pad_w"]) ==
                  (1, 1, 0, 0) and p["input_dims"][1:3] == p["output_dims"][1:3] and d["input_dims"][0] == 1
                  and 1 <= b["pool_size"] <= 16
                  and b["feature_dim"] == p["output_dims"][3] * b["pool_size"] ** 2)
        if not ok:
            raise ConfigError(f"{where}: trainable block {k} (ops {first}-{first + b['op_count'] - 1}) is not a "
                              f"depthwise-separable block the firmware's update covers")
    fc = ops[cls]["record"]
    if fc["filter_dims"][3] != k_classes or fc["filter_offset"] != 0 or fc["input_dims"][0] != 1:
        raise ConfigError(f"{where}: the classifier's record does not match the tail's {k_classes} classes")


OPTIMIZERS = {"sgd": 0, "rmsprop": 1, "rmsprop-factored": 2}    # el_train_optimizer


def _check_optimizer(optimizer: str) -> None:
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optimizer!r}; choose {', '.join(OPTIMIZERS)}")


def moment_floats(record: dict, optimizer: str) -> int:
    """The float32 moments an op's weights and biases keep (el_train_plan_config): none for
    SGD, one per weight and bias for RMSprop, rows + 2 cols + biases for the factored moment of
    its rows x cols matrix (pointwise O x C, depthwise KH*KW x C)."""
    dims, biases = record["filter_dims"], record["output_dims"][3]
    if optimizer == "rmsprop":
        return _volume(dims) + biases
    if optimizer == "rmsprop-factored":
        return dims[0] * dims[1] * dims[2] + 2 * dims[3] + biases   # (1,KH,KW,C) or (O,1,1,C): the rows
    return 0


def train_layout(image: bytes, where: str = "<image>", fractions: bool = False,
                 optimizer: str = "sgd") -> dict[str, int]:
    """The firmware's training buffer, part by part (bytes, each part padded to 16) and its
    total: el_train_plan_config's sizes (with fractions=True an int8 fraction per block weight
    after the rest, then the optimizer's float32 moments: moment_floats).
    Raises ConfigError for a tail the firmware would refuse."""
    parsed = blob.open_image(image, where)
    _check_tail(parsed, where)
    tail, ops = parsed["tail"], parsed["ops"]
    parts: dict[str, int] = {}
    input_copy = mid = out = features = 0       # the largest of each over the blocks
    for k, b in enumerate(tail["blocks"]):
        for j, name in enumerate(("dw", "pw")):
            r = ops[b["first_op"] + j]["record"]
            parts[f"block{k}_{name}_weights"] = _align(_volume(r["filter_dims"]))
            parts[f"block{k}_{name}_bias"] = _align(4 * r["output_dims"][3])
        dw, pw = ops[b["first_op"]]["record"], ops[b["first_op"] + 1]["record"]
        input_copy = max(input_copy, _volume(dw["input_dims"]))
        mid = max(mid, _volume(pw["input_dims"]))
        out = max(out, pw["output_dims"][1] * pw["output_dims"][2])
        features = max(features, b["feature_dim"])
    fc = ops[tail["classifier_op"]]["record"]
    depth, classes = fc["filter_dims"][0], tail["num_classes"]
    parts["classifier_weights"] = _align(depth * classes)
    parts["classifier_bias"] = _align(4 * classes)
    parts["classifier_master"] = _align(4 * depth * classes)
    parts["classifier_master_bias"] = _align(4 * classes)
    parts["input_copy"] = _align(input_copy)
    parts["mid_grad"] = _align(4 * mid)
    parts["out_grad"] = _align(4 * out)
    parts["features"] = _align(4 * max(features, depth))
    parts["feature_grad"] = _align(4 * features)    # dL/dv, the largest D
    parts["logits"] = _align(4 * classes)
    if fractions:
        for k, b in enumerate(tail["blocks"]):
            for j, name in enumerate(("dw", "pw")):
                parts[f"block{k}_{name}_fractions"] = _align(_volume(ops[b["first_op"] + j]["record"]["filter_dims"]))
    _check_optimizer(optimizer)
    if optimizer != "sgd":
        for k, b in enumerate(tail["blocks"]):
            for j, name in enumerate(("dw", "pw")):
                parts[f"block{k}_{name}_moments"] = _align(4 * moment_floats(ops[b["first_op"] + j]["record"],
                                                                             optimizer))
    parts["total"] = sum(parts.values())
    return parts


# ====================================================================================
# The trainer
# ====================================================================================

@dataclass
class StepStats:
    block_loss: list[float]
    loss: float
    predicted: int


LAST_BLOCK_SIGNALS = {"classifier": 0, "lls": 1}     # el_train_last_block: EL_TRAIN_LAST_CLASSIFIER, _LLS


def _check_global_pool(parsed: dict, where: str) -> None:
    """el_train.c global_pool_ok: the classifier reads the last block's globally pooled output
    (one AVERAGE_POOL_2D of the whole map to 1 x 1 x O, RESHAPEs around it, depth O)."""
    tail, ops = parsed["tail"], parsed["ops"]
    last = tail["blocks"][-1]
    pw = ops[last["first_op"] + 1]["record"]
    h, w, o = pw["output_dims"][1:]
    pools, ok = 0, True
    for index in range(last["first_op"] + 2, tail["classifier_op"]):
        op = ops[index]
        if op["opcode"] == blob.OPCODES["AVERAGE_POOL_2D"][0]:
            r = op["record"]
            ok = ok and r["input"] == pw["output"] and tuple(r["input_dims"][1:3]) == (h, w) and \
                (r["filter_h"], r["filter_w"]) == (h, w) and (r["pad_h"], r["pad_w"]) == (0, 0) and \
                tuple(r["output_dims"][1:]) == (1, 1, o)
            pools += 1
        elif op["opcode"] != blob.OPCODES["RESHAPE"][0]:
            ok = False
    if not (ok and pools == 1 and ops[tail["classifier_op"]]["record"]["filter_dims"][0] == o):
        raise ConfigError(f"{where}: last-block signal 'classifier' needs the classifier to read the last block's "
                          f"globally pooled output (one AVERAGE_POOL_2D of its {h}x{w} map, reshapes)")


class BoardTrainer:
    """The board's training state (el_trainer) and its step, from a model image."""

    def __init__(self, image: bytes, *, lr: float, classifier_lr: float, seed: int = 1, where: str = "<image>",
                 master_weights: bool = False, last_block: str = "classifier", fractions: bool = False,
                 optimizer: str = "sgd"):
        """master_weights=True: not the board, a comparison: the block weights keep float32
        masters (round to nearest for the int8 forward) instead of stochastic rounding.
        fractions=True: the board with el_train_config.fractions = 1 (16-bit masters: an int8
        fraction per block weight, stochastic rounding at 1/256 of a code).
        optimizer: el_train_config.optimizer, 'sgd' (the default) or 'rmsprop' (a float32 second
        moment per block weight and bias, decay 0.999, bias-corrected, eps 1e-8: the block's step
        becomes lr * g / sqrt(v); the classifier keeps SGD) or 'rmsprop-factored' (the same step
        with each weight matrix's moment as row and column sums: factored_normalise).
        last_block: the last block's learning signal (el_train_config.last_block):
        'classifier' (the board's default) the classifier's cross-entropy gradient at its input,
        'lls' its own LLS head."""
        if last_block not in LAST_BLOCK_SIGNALS:
            raise ConfigError(f"unknown last-block signal {last_block!r}; choose classifier or lls")
        self.image, self.where = bytes(image), where
        parsed = blob.open_image(self.image, where)
        _check_tail(parsed, where)
        if last_block == "classifier":
            _check_global_pool(parsed, where)
        self.last_block = last_block
        self.parsed, self.tensors, self.ops, self.tail = parsed, parsed["tensors"], parsed["ops"], parsed["tail"]
        self.lr, self.classifier_lr = f32(lr), f32(classifier_lr)
        self.rng = np.array([seed if seed % (1 << 32) else 1], np.uint32)
        self.temperature = _f32_from_bits(self.tail["temperature"])
        self.classes = self.tail["num_classes"]
        self.blocks = []
        for b in self.tail["blocks"]:
            pair = tuple(self._tail_op(b["first_op"] + j) for j in range(2))
            basis = _array(self.image, b["basis"], np.float32, self.classes * b["feature_dim"])
            self.blocks.append((b, pair, basis.reshape(self.classes, b["feature_dim"])))
        no_master = (np.zeros((0, 0, 0), np.float32), np.zeros((0, 0), np.float32))
        self._masters = [(dw.weights[0].astype(np.float32), pw.weights.reshape(pw.weights.shape[0], -1)
                          .astype(np.float32)) if master_weights else no_master for _, (dw, pw), _ in self.blocks]
        if master_weights and fractions:
            raise ConfigError("master_weights and fractions are two representations; choose one")
        self.fractions = fractions
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self._moments = [tuple(np.zeros(moment_floats(op.record, optimizer), np.float32) for op in pair)
                         for _, pair, _ in self.blocks]
        self._decay_power = f32(1.0)
        self._fractions = [tuple(np.zeros(op.weights.size if fractions else 0, np.int8) for op in pair)
                           for _, pair, _ in self.blocks]
        self.classifier = self._tail_op(self.tail["classifier_op"])
        fc = self.classifier.record
        depth = fc["filter_dims"][0]
        self.classifier.weights = self.classifier.weights.reshape(self.classes, depth)
        s_in, s_out = self._scale(fc["input"]), self._scale(fc["output"])
        self.master = np.empty((self.classes, depth), np.float32)
        self.master_bias = np.empty(self.classes, np.float32)
        for k in range(self.classes):
            s_w = weight_scale(self.classifier.multiplier[k], self.classifier.shift[k], s_in, s_out)
            self.master[k] = s_w * self.classifier.weights[k].astype(np.float32)
            self.master_bias[k] = f32(self.classifier.bias[k]) * (s_in * s_w)
        features = max(b["feature_dim"] for b, _, _ in self.blocks)
        mid = max(_volume(pw.record["input_dims"]) for _, (_, pw), _ in self.blocks)
        out = max(pw.record["output_dims"][1] * pw.record["output_dims"][2] for _, (_, pw), _ in self.blocks)
        # allocated once, as the board's buffer: no allocation inside a step
        self._v = np.zeros(max(features, depth), np.float32)
        self._grad_v = np.zeros(features, np.float32)
        self._logits = np.zeros(self.classes, np.float32)
        self._mid = np.zeros(mid, np.float32)
        self._out = np.zeros(out, np.float32)
        self._dlogits = np.zeros(self.classes, np.float32)
        self._bias_limit = bias_limit(depth)
        end = self.blocks[-1][0]["first_op"] + 2
        self._pool_outputs = {i: np.empty(self.ops[i]["record"]["output_dims"], np.int8)
                              for i in range(end, self.tail["classifier_op"])
                              if self.ops[i]["opcode"] == blob.OPCODES["AVERAGE_POOL_2D"][0]}
        self._fc_out = np.empty((1, self.classes), np.int8)
        self.steps = 0

    def _scale(self, tensor: int) -> np.float32:
        return _f32_from_bits(self.tensors[tensor]["scale"])   # the image holds float32 bits

    def _tail_op(self, index: int) -> TailOp:
        r = self.ops[index]["record"]
        channels = r["output_dims"][3] if "ch_mult" in r else r["filter_dims"][3]
        count = _volume(r["filter_dims"]) if "ch_mult" in r else r["filter_dims"][0] * r["filter_dims"][3]
        weights = _array(self.image, r["weights"], np.int8, count)
        if "ch_mult" in r:
            weights = weights.reshape(r["filter_dims"])
        op = TailOp(index, r, weights, _array(self.image, r["bias"], np.int32, channels),
                    _array(self.image, r["multiplier"], np.int32, channels),
                    _array(self.image, r["shift"], np.int32, channels))
        op.out = np.empty((1, *r["output_dims"][1:]), np.int8)
        op.act_range = np.array([r["act_min"], r["act_max"]], np.int64)
        if "ch_mult" in r:
            op.geometry = np.array([r["stride_h"], r["stride_w"], r["pad_h"], r["pad_w"], r["dilation_h"],
                                    r["dilation_w"]], np.int64)
        return op

    # ---------------------------------------------------------------- int8 forward
    def _conv(self, op: TailOp, x: np.ndarray) -> np.ndarray:
        """x (H,W,C) int8 -> the op's output (H',W',C') int8, the TFLite-exact kernel."""
        r, out = op.record, op.out
        args = tuple(int(v) for v in op.geometry)
        if self.ops[op.op]["opcode"] == blob.OPCODES["DEPTHWISE_CONV_2D"][0]:
            literal.depthwise_conv2d_s8(x[None], op.weights, op.bias, out, *args, r["ch_mult"], -r["input_offset"],
                                        r["output_offset"], op.multiplier, op.shift, r["act_min"], r["act_max"])
        else:
            literal.conv2d_s8(x[None], op.weights, op.bias, out, *args, -r["input_offset"], r["output_offset"],
                              op.multiplier, op.shift, r["act_min"], r["act_max"])
        return out[0]

    def _head_ops(self, x: np.ndarray) -> np.ndarray:
        """The ops between the last block and the classifier (a global average pool, reshapes)."""
        end = self.blocks[-1][0]["first_op"] + 2
        for index in range(end, self.tail["classifier_op"]):
            op = self.ops[index]
            name = blob.OPCODE_NAMES[op["opcode"]]
            r = op["record"]
            if name == "AVERAGE_POOL_2D":
                x4 = x.reshape(r["input_dims"])
                out = self._pool_outputs[index]
                literal.avg_pool2d_s8(x4, out, r["filter_h"], r["filter_w"], r["stride_h"], r["stride_w"],
                                      r["pad_h"], r["pad_w"], r["act_min"], r["act_max"])
                x = out
            elif name != "RESHAPE":
                raise ConfigError(f"{self.where}: op {index} ({name}) between the last block and the classifier: "
                                  f"the twin runs AVERAGE_POOL_2D and RESHAPE there")
        return x.reshape(-1)

    def _check_features(self, features: np.ndarray) -> np.ndarray:
        dims = self.blocks[0][1][0].record["input_dims"]
        x = np.ascontiguousarray(features, np.int8)
        if x.size != _volume(dims):
            raise ConfigError(f"features of {x.size} values; the first trainable block takes {tuple(dims[1:])}")
        return x.reshape(dims[1:])

    def predict(self, features: np.ndarray) -> np.ndarray:
        """The int8 classifier output (before softmax) of one sample with the current weights."""
        x = self._check_features(features)
        for _, (dw, pw), _ in self.blocks:
            x = self._conv(pw, self._conv(dw, x))
        pooled = self._head_ops(x)
        fc, op = self.classifier.record, self.classifier
        out = self._fc_out
        literal.fully_connected_s8(pooled[None], op.weights, op.bias, out, -fc["input_offset"], fc["output_offset"],
                                   op.multiplier, op.shift, fc["act_min"], fc["act_max"], False)  # TFLM: two roundings
        return out[0].copy()

    # ---------------------------------------------------------------- one step
    def step(self, features: np.ndarray, label: int) -> StepStats:
        """One el_train_step. With last_block='classifier', the last block: its forward, the head
        ops, the classifier's forward, dL/dlogits, g = W^T dL/dlogits (masters before their step)
        as dL/dv for a pool of 1 (straight through the pool's requantization, factor 1:
        el_train.h), the block's update, then the classifier's; its loss is the classifier's."""
        if not 0 <= int(label) < self.classes:
            raise ConfigError(f"label {label} is not one of the model's {self.classes} classes")
        label = int(label)
        x = self._check_features(features)
        fc, op = self.classifier.record, self.classifier
        s_in, s_out = self._scale(fc["input"]), self._scale(fc["output"])
        last = len(self.blocks) - 1 if self.last_block == "classifier" else -1
        losses, loss, predicted = [], None, 0
        self._decay_power = f32(self._decay_power * RMS_DECAY)      # 0.999^t, in float32
        correction = f32(f32(1.0) - self._decay_power)
        for k, ((b, (dw, pw), basis), (dw_master, pw_master), (dw_frac, pw_frac), (dw_v, pw_v)) in enumerate(
                zip(self.blocks, self._masters, self._fractions, self._moments)):
            y = self._conv(dw, x)
            z = self._conv(pw, y)
            d, p = dw.record, pw.record
            z_scale = self._scale(p["output"])
            pool = b["pool_size"]
            if k == last:
                pooled = self._head_ops(z)
                predicted = classifier_forward(pooled, -fc["input_offset"], s_in, self.master, self.master_bias,
                                               self._v, self._logits)
                loss = softmax_cross_entropy(self._logits, self.classes, f32(1.0), label, self._dlogits)
                losses.append(float(loss))
                classifier_input_grad(self.master, self._dlogits, self._grad_v)
                pool = 1
            else:
                losses.append(float(lls_head(z, z_scale, p["output_offset"], pool, basis, self.temperature,
                                             label, self._v, self._grad_v, self._logits, self._dlogits)))
            update_dwsep(x, y, z, self._scale(d["input"]), self._scale(d["output"]), z_scale, -d["input_offset"],
                         -p["input_offset"], pool, self._grad_v, self.lr, self.rng,
                         dw.weights[0], dw.bias, dw.multiplier, dw.shift, dw.geometry, dw.act_range,
                         pw.weights.reshape(pw.weights.shape[0], -1), pw.bias, pw.multiplier, pw.shift,
                         pw.act_range, self._mid, self._out, dw_master, pw_master, dw_frac, pw_frac, dw_v, pw_v,
                         correction, self.optimizer == "rmsprop-factored")
            x = z
        if loss is None:
            pooled = self._head_ops(x)
            predicted = classifier_forward(pooled, -fc["input_offset"], s_in, self.master, self.master_bias,
                                           self._v, self._logits)
            loss = softmax_cross_entropy(self._logits, self.classes, f32(1.0), label, self._dlogits)
        classifier_sgd(s_in, s_out, op.multiplier, op.shift, self.master, self.master_bias, op.weights, op.bias,
                       self.classifier_lr, self._bias_limit, self._v, self._dlogits)
        self.steps += 1
        return StepStats(losses, float(loss), int(predicted))

    def weights(self) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        """{op: (int8 weights, int32 bias)} of every trainable op, as the board holds them."""
        ops = [op for _, pair, _ in self.blocks for op in pair] + [self.classifier]
        return {op.op: (op.weights.reshape(-1).copy(), op.bias.copy()) for op in ops}


__all__ = ["BoardTrainer", "LAST_BLOCK_SIGNALS", "OPTIMIZERS", "moment_floats", "StepStats", "train_layout", "expf", "logf"]

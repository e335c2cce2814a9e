"""Pooling, NHWC, float32 math: max, average, adaptive average (2-D and 1-D); forward and gradient.

Adaptive pooling uses PyTorch's windows: output cell i of p covers input rows
floor(i*H/p) .. ceil((i+1)*H/p) - 1, so windows overlap when p does not divide H.

Storage: the forward's input x and output out are float32 or float16, in any mix
(mixed-precision training keeps activations in half). A float16 array reaches the
kernels as its uint16 view (half.bits); values are loaded with half.ld, and a float16
output is accumulated in float32 and rounded once, so it is exactly the float32 output
rounded to half. Gradients (dy, dx) are float32 and argmax int32.
"""
import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import overload

from .activation import LEAKY_SLOPE, apply_act
from .geometry import Window
from .geometry import adaptive_bounds_jit as adaptive_bounds
from .half import acc_row, bits, ld, store_row, thread_rows


@njit(inline="always")
def _load(xv, c, scale, shift, act, slope, transform):
    # With transform, the stored value is a batch norm's input and the pooled value is
    # its activated output, act(x * scale + shift), computed exactly as the norm would:
    # a block's output can be pooled without ever being stored.
    if transform:
        return apply_act(ld(xv[c]) * scale[c] + shift[c], act, slope)
    return ld(xv[c])


def _thread_acc(out, acc):
    """This thread's float32 accumulator row of acc (Python stand-in; kernels get the overload)."""
    return acc[0] if out.dtype == np.uint16 else acc


@overload(_thread_acc, inline="always")
def _thread_acc_impl(out, acc):
    # Taken once per parallel iteration: acc (threads, C + gap) float32 has a row per
    # thread (numba.get_thread_id() < get_num_threads()). Unused for a float32 out.
    if out.dtype == types.uint16:
        return lambda out, acc: acc[numba.get_thread_id()]
    return lambda out, acc: acc


@njit(parallel=True, cache=True)
def _max_pool(x, out, argmax, acc, kh, kw, sh, sw, pt, pl, keep_argmax, scale, shift, act, slope, transform):
    # Padding cells never win (they are -inf), as in PyTorch and TFLite. Window taps
    # are visited in row-major order and only a strictly greater value replaces the
    # best, so ties go to the first tap. Channels are innermost: contiguous, vectorised.
    # The running best b is float32 whatever out stores (see half.acc_row): comparing
    # against a half-rounded best would change which tap wins.
    N, H, W, C = x.shape
    _, OH, OW, _ = out.shape
    for nr in prange(N * OH):
        n = nr // OH
        oh = nr % OH
        ta = _thread_acc(out, acc)
        ha, hb = max(oh * sh - pt, 0), min(oh * sh - pt + kh, H)
        for ow in range(OW):
            wa, wb = max(ow * sw - pl, 0), min(ow * sw - pl + kw, W)
            o = out[n, oh, ow]
            b = acc_row(o, ta)
            first = x[n, ha, wa]
            for c in range(C):
                b[c] = _load(first, c, scale, shift, act, slope, transform)
            if keep_argmax:
                a = argmax[n, oh, ow]
                for c in range(C):
                    a[c] = ha * W + wa
            for ih in range(ha, hb):
                for iw in range(wa, wb):
                    xv = x[n, ih, iw]
                    if keep_argmax:
                        for c in range(C):
                            v = _load(xv, c, scale, shift, act, slope, transform)
                            if v > b[c]:
                                b[c] = v
                                a[c] = ih * W + iw
                    else:
                        for c in range(C):
                            b[c] = max(b[c], _load(xv, c, scale, shift, act, slope, transform))
            store_row(o, b)


@njit(parallel=True, cache=True)
def _max_pool_grad(dy, argmax, dx):
    N, H, W, C = dx.shape
    _, OH, OW, _ = dy.shape
    for n in prange(N):
        dx[n] = 0.0
        for oh in range(OH):
            for ow in range(OW):
                for c in range(C):
                    a = argmax[n, oh, ow, c]
                    dx[n, a // W, a % W, c] += dy[n, oh, ow, c]


@njit(parallel=True, cache=True)
def _avg_pool(x, out, acc, kh, kw, sh, sw, pt, pl, count_include_pad, scale_out):
    N, H, W, C = x.shape
    _, OH, OW, _ = out.shape
    for nr in prange(N * OH):
        n = nr // OH
        oh = nr % OH
        ta = _thread_acc(out, acc)
        for ow in range(OW):
            h0, w0 = oh * sh - pt, ow * sw - pl
            ha, hb = max(h0, 0), min(h0 + kh, H)
            wa, wb = max(w0, 0), min(w0 + kw, W)
            cnt = kh * kw if count_include_pad else (hb - ha) * (wb - wa)
            o = out[n, oh, ow]
            b = acc_row(o, ta)
            for c in range(C):
                b[c] = 0.0
            for ih in range(ha, hb):
                for iw in range(wa, wb):
                    xv = x[n, ih, iw]
                    for c in range(C):
                        b[c] += ld(xv[c])
            for c in range(C):
                b[c] /= cnt
            store_row(o, b)
            if scale_out.size > 0:
                scale_out[n, oh, ow] = 1.0 / cnt


@njit(parallel=True, cache=True)
def _avg_pool_grad(dy, dx, kh, kw, sh, sw, pt, pl, count_include_pad):
    N, H, W, C = dx.shape
    _, OH, OW, _ = dy.shape
    for n in prange(N):
        dx[n] = 0.0
        for oh in range(OH):
            for ow in range(OW):
                h0, w0 = oh * sh - pt, ow * sw - pl
                ha, hb = max(h0, 0), min(h0 + kh, H)
                wa, wb = max(w0, 0), min(w0 + kw, W)
                cnt = kh * kw if count_include_pad else (hb - ha) * (wb - wa)
                g = dy[n, oh, ow]
                for ih in range(ha, hb):
                    for iw in range(wa, wb):
                        d = dx[n, ih, iw]
                        for c in range(C):
                            d[c] += g[c] / cnt


@njit(parallel=True, cache=True)
def _adaptive_avg(x, out, acc, scale, shift, act, slope, transform):
    N, H, W, C = x.shape
    _, P, Q, _ = out.shape
    for nr in prange(N * P):
        n = nr // P
        i = nr % P
        ta = _thread_acc(out, acc)
        h0, h1 = adaptive_bounds(i, H, P)
        for j in range(Q):
            w0, w1 = adaptive_bounds(j, W, Q)
            o = out[n, i, j]
            b = acc_row(o, ta)
            for c in range(C):
                b[c] = 0.0
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    xv = x[n, ih, iw]
                    for c in range(C):
                        b[c] += _load(xv, c, scale, shift, act, slope, transform)
            inv = 1.0 / ((h1 - h0) * (w1 - w0))
            for c in range(C):
                b[c] *= inv
            store_row(o, b)


@njit(parallel=True, cache=True)
def _adaptive_avg_grad(dy, dx):
    N, H, W, C = dx.shape
    _, P, Q, _ = dy.shape
    for n in prange(N):
        dx[n] = 0.0
        for i in range(P):
            h0, h1 = adaptive_bounds(i, H, P)
            for j in range(Q):
                w0, w1 = adaptive_bounds(j, W, Q)
                inv = 1.0 / ((h1 - h0) * (w1 - w0))
                g = dy[n, i, j]
                for ih in range(h0, h1):
                    for iw in range(w0, w1):
                        d = dx[n, ih, iw]
                        for c in range(C):
                            d[c] += g[c] * inv


def _check_pool_padding(win: Window):
    # As in PyTorch: padding at most half the window, so no window lies wholly in padding
    # (max pool would have no element, average pool would divide by zero).
    if 2 * max(win.pad_top, win.pad_bottom) > win.kh or 2 * max(win.pad_left, win.pad_right) > win.kw:
        raise ValueError(f"pooling padding {win.pad_top, win.pad_bottom, win.pad_left, win.pad_right} "
                         f"exceeds half the {win.kh}x{win.kw} window")


_NO_INT = np.zeros((0, 0, 0, 0), np.int32)
_NO_F32 = np.zeros((0, 0, 0), np.float32)
_NO_VEC = np.zeros(0, np.float32)
def _bn_act_args(bn_act):
    """(scale, shift, act, slope, transform) kernel arguments for an optional fused
    batch norm + activation (scale, shift, act) applied to the pooled input."""
    if bn_act is None:
        return _NO_VEC, _NO_VEC, 0, np.float32(LEAKY_SLOPE), False
    scale, shift, act = bn_act
    return scale, shift, act, np.float32(LEAKY_SLOPE), True


def max_pool2d_f32(x, out, win: Window, argmax=None, bn_act=None):
    """out (N, OH, OW, C) = window max of x (N, H, W, C); x and out float32 or float16
    storage.  argmax (N, OH, OW, C) int32 (flat ih*W+iw) is recorded when given:
    backpropagation needs it, inference and LLS do not.
    bn_act = (scale, shift, act), (C,) float32: pool act(x * scale + shift) instead of x."""
    _check_pool_padding(win)
    keep = argmax is not None
    _max_pool(bits(x), bits(out), argmax if keep else _NO_INT, thread_rows(out), win.kh, win.kw, win.sh, win.sw,
              win.pad_top, win.pad_left, keep, *_bn_act_args(bn_act))
    return out


def max_pool2d_grad_f32(dy, argmax, dx):
    """dx (N, H, W, C) float32 from dy (N, OH, OW, C) float32 and the forward's argmax."""
    _max_pool_grad(dy, argmax, dx)
    return dx


def avg_pool2d_f32(x, out, win: Window, count_include_pad: bool = False):
    """out (N, OH, OW, C) = window mean of x (N, H, W, C); x and out float32 or float16
    storage. count_include_pad=False is TFLite's AVERAGE_POOL_2D; True is PyTorch's default."""
    _check_pool_padding(win)
    _avg_pool(bits(x), bits(out), thread_rows(out), win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left,
              count_include_pad, _NO_F32)
    return out


def avg_pool2d_grad_f32(dy, dx, win: Window, count_include_pad: bool = False):
    _avg_pool_grad(dy, dx, win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left,
                   count_include_pad)
    return dx


def adaptive_avg_pool2d_f32(x, out, bn_act=None):
    """x (N, H, W, C) -> out (N, P, Q, C), the output size given by out's shape; x and out
    float32 or float16 storage.
    bn_act = (scale, shift, act), (C,) float32: pool act(x * scale + shift) instead of x."""
    _adaptive_avg(bits(x), bits(out), thread_rows(out), *_bn_act_args(bn_act))
    return out


def adaptive_avg_pool2d_grad_f32(dy, dx):
    _adaptive_avg_grad(dy, dx)
    return dx


def adaptive_avg_pool1d_f32(x, out):
    """Along features: x (N, F) -> out (N, P); x and out float32 or float16 storage."""
    out4 = out.reshape(out.shape[0], 1, out.shape[1], 1)
    _adaptive_avg(bits(x.reshape(x.shape[0], 1, x.shape[1], 1)), bits(out4), thread_rows(out4),
                  *_bn_act_args(None))
    return out


def adaptive_avg_pool1d_grad_f32(dy, dx):
    _adaptive_avg_grad(dy.reshape(dy.shape[0], 1, dy.shape[1], 1), dx.reshape(dx.shape[0], 1, dx.shape[1], 1))
    return dx

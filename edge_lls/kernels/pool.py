"""Pooling, NHWC float32: max, average, adaptive average (2-D and 1-D); forward and gradient.

Adaptive pooling uses PyTorch's windows: output cell i of p covers input rows
floor(i*H/p) .. ceil((i+1)*H/p) - 1, so windows overlap when p does not divide H.
"""
import numpy as np
from numba import njit, prange

from .geometry import Window


@njit(parallel=True, cache=True)
def _max_pool(x, out, argmax, kh, kw, sh, sw, pt, pl, keep_argmax):
    # Padding cells never win (they are -inf), as in PyTorch and TFLite. Window taps
    # are visited in row-major order and only a strictly greater value replaces the
    # best, so ties go to the first tap. Channels are innermost: contiguous, vectorised.
    N, H, W, C = x.shape
    _, OH, OW, _ = out.shape
    for nr in prange(N * OH):
        n = nr // OH
        oh = nr % OH
        ha, hb = max(oh * sh - pt, 0), min(oh * sh - pt + kh, H)
        for ow in range(OW):
            wa, wb = max(ow * sw - pl, 0), min(ow * sw - pl + kw, W)
            o = out[n, oh, ow]
            first = x[n, ha, wa]
            for c in range(C):
                o[c] = first[c]
            if keep_argmax:
                a = argmax[n, oh, ow]
                for c in range(C):
                    a[c] = ha * W + wa
            for ih in range(ha, hb):
                for iw in range(wa, wb):
                    xv = x[n, ih, iw]
                    if keep_argmax:
                        for c in range(C):
                            if xv[c] > o[c]:
                                o[c] = xv[c]
                                a[c] = ih * W + iw
                    else:
                        for c in range(C):
                            o[c] = max(o[c], xv[c])


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
def _avg_pool(x, out, kh, kw, sh, sw, pt, pl, count_include_pad, scale_out):
    N, H, W, C = x.shape
    _, OH, OW, _ = out.shape
    for nr in prange(N * OH):
        n = nr // OH
        oh = nr % OH
        for ow in range(OW):
            h0, w0 = oh * sh - pt, ow * sw - pl
            ha, hb = max(h0, 0), min(h0 + kh, H)
            wa, wb = max(w0, 0), min(w0 + kw, W)
            cnt = kh * kw if count_include_pad else (hb - ha) * (wb - wa)
            o = out[n, oh, ow]
            for c in range(C):
                o[c] = 0.0
            for ih in range(ha, hb):
                for iw in range(wa, wb):
                    xv = x[n, ih, iw]
                    for c in range(C):
                        o[c] += xv[c]
            for c in range(C):
                o[c] /= cnt
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


@njit(inline="always")
def _adaptive_bounds(i, size_in, size_out):
    lo = (i * size_in) // size_out
    hi = -((-(i + 1) * size_in) // size_out)  # ceil
    return lo, hi


@njit(parallel=True, cache=True)
def _adaptive_avg(x, out):
    N, H, W, C = x.shape
    _, P, Q, _ = out.shape
    for nr in prange(N * P):
        n = nr // P
        i = nr % P
        h0, h1 = _adaptive_bounds(i, H, P)
        for j in range(Q):
            w0, w1 = _adaptive_bounds(j, W, Q)
            o = out[n, i, j]
            for c in range(C):
                o[c] = 0.0
            for ih in range(h0, h1):
                for iw in range(w0, w1):
                    xv = x[n, ih, iw]
                    for c in range(C):
                        o[c] += xv[c]
            inv = 1.0 / ((h1 - h0) * (w1 - w0))
            for c in range(C):
                o[c] *= inv


@njit(parallel=True, cache=True)
def _adaptive_avg_grad(dy, dx):
    N, H, W, C = dx.shape
    _, P, Q, _ = dy.shape
    for n in prange(N):
        dx[n] = 0.0
        for i in range(P):
            h0, h1 = _adaptive_bounds(i, H, P)
            for j in range(Q):
                w0, w1 = _adaptive_bounds(j, W, Q)
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


def max_pool2d_f32(x, out, win: Window, argmax=None):
    """out (N, OH, OW, C) = window max of x.  argmax (N, OH, OW, C) int32 (flat ih*W+iw)
    is recorded when given: backpropagation needs it, inference and LLS do not."""
    _check_pool_padding(win)
    keep = argmax is not None
    _max_pool(x, out, argmax if keep else _NO_INT, win.kh, win.kw, win.sh, win.sw,
              win.pad_top, win.pad_left, keep)
    return out


def max_pool2d_grad_f32(dy, argmax, dx):
    _max_pool_grad(dy, argmax, dx)
    return dx


def avg_pool2d_f32(x, out, win: Window, count_include_pad: bool = False):
    """count_include_pad=False is TFLite's AVERAGE_POOL_2D; True is PyTorch's default."""
    _check_pool_padding(win)
    _avg_pool(x, out, win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left,
              count_include_pad, _NO_F32)
    return out


def avg_pool2d_grad_f32(dy, dx, win: Window, count_include_pad: bool = False):
    _avg_pool_grad(dy, dx, win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left,
                   count_include_pad)
    return dx


def adaptive_avg_pool2d_f32(x, out):
    """x (N, H, W, C) -> out (N, P, Q, C), the output size given by out's shape."""
    _adaptive_avg(x, out)
    return out


def adaptive_avg_pool2d_grad_f32(dy, dx):
    _adaptive_avg_grad(dy, dx)
    return dx


def adaptive_avg_pool1d_f32(x, out):
    """Along features: x (N, F) -> out (N, P)."""
    _adaptive_avg(x.reshape(x.shape[0], 1, x.shape[1], 1), out.reshape(out.shape[0], 1, out.shape[1], 1))
    return out


def adaptive_avg_pool1d_grad_f32(dy, dx):
    _adaptive_avg_grad(dy.reshape(dy.shape[0], 1, dy.shape[1], 1), dx.reshape(dx.shape[0], 1, dx.shape[1], 1))
    return dx

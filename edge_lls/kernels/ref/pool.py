"""Reference pooling (NHWC) with explicit window loops."""
import numpy as np


def _window(win, oh, ow):
    h0, w0 = oh * win.sh - win.pad_top, ow * win.sw - win.pad_left
    return h0, w0, max(h0, 0), min(h0 + win.kh, win.in_h), max(w0, 0), min(w0 + win.kw, win.in_w)


def max_pool2d(x, win):
    """Returns (out, argmax) with argmax the flat ih*W+iw of the first maximum."""
    N, H, W, C = x.shape
    out = np.empty((N, win.out_h, win.out_w, C), np.float32)
    arg = np.empty(out.shape, np.int32)
    for oh in range(win.out_h):
        for ow in range(win.out_w):
            _, _, ha, hb, wa, wb = _window(win, oh, ow)
            patch = x[:, ha:hb, wa:wb, :].reshape(N, -1, C)
            k = patch.argmax(axis=1)  # first occurrence, row-major over the window
            out[:, oh, ow, :] = np.take_along_axis(patch, k[:, None, :], 1)[:, 0, :]
            arg[:, oh, ow, :] = (ha + k // (wb - wa)) * W + (wa + k % (wb - wa))
    return out, arg


def max_pool2d_grad(dy, arg, x_shape):
    N, H, W, C = x_shape
    dx = np.zeros((N, H * W, C))
    n_idx, _, _, c_idx = np.indices(dy.shape)
    np.add.at(dx, (n_idx.ravel(), arg.ravel(), c_idx.ravel()), dy.ravel().astype(np.float64))
    return dx.reshape(x_shape).astype(np.float32)


def avg_pool2d(x, win, count_include_pad=False):
    N, H, W, C = x.shape
    out = np.empty((N, win.out_h, win.out_w, C))
    for oh in range(win.out_h):
        for ow in range(win.out_w):
            _, _, ha, hb, wa, wb = _window(win, oh, ow)
            cnt = win.kh * win.kw if count_include_pad else (hb - ha) * (wb - wa)
            out[:, oh, ow, :] = x[:, ha:hb, wa:wb, :].astype(np.float64).sum(axis=(1, 2)) / cnt
    return out.astype(np.float32)


def avg_pool2d_grad(dy, x_shape, win, count_include_pad=False):
    dx = np.zeros(x_shape)
    for oh in range(win.out_h):
        for ow in range(win.out_w):
            _, _, ha, hb, wa, wb = _window(win, oh, ow)
            cnt = win.kh * win.kw if count_include_pad else (hb - ha) * (wb - wa)
            dx[:, ha:hb, wa:wb, :] += dy[:, oh:oh + 1, ow:ow + 1, :] / cnt
    return dx.astype(np.float32)


def adaptive_bounds(i, size_in, size_out):
    """PyTorch's adaptive window: [floor(i*in/out), ceil((i+1)*in/out))."""
    return (i * size_in) // size_out, -((-(i + 1) * size_in) // size_out)


def adaptive_avg_pool2d(x, p, q):
    N, H, W, C = x.shape
    out = np.empty((N, p, q, C))
    for i in range(p):
        h0, h1 = adaptive_bounds(i, H, p)
        for j in range(q):
            w0, w1 = adaptive_bounds(j, W, q)
            out[:, i, j, :] = x[:, h0:h1, w0:w1, :].astype(np.float64).mean(axis=(1, 2))
    return out.astype(np.float32)


def adaptive_avg_pool2d_grad(dy, x_shape):
    N, H, W, C = x_shape
    p, q = dy.shape[1], dy.shape[2]
    dx = np.zeros(x_shape)
    for i in range(p):
        h0, h1 = adaptive_bounds(i, H, p)
        for j in range(q):
            w0, w1 = adaptive_bounds(j, W, q)
            dx[:, h0:h1, w0:w1, :] += dy[:, i:i + 1, j:j + 1, :] / ((h1 - h0) * (w1 - w0))
    return dx.astype(np.float32)

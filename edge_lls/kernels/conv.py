"""2-D convolution, NHWC float32: forward, weight gradient, input gradient.

Layouts (the TFLite / CMSIS-NN ones, so imported int8 weights need no transpose):
    x   (N, H, W, Cin)             float32
    w   (Cout, KH, KW, Cin/groups) float32   (OHWI)
    b   (Cout,)                    float32
    out (N, OH, OW, Cout)          float32
Depthwise is the same op with groups == Cin (w is (Cin*mult, KH, KW, 1)).

Dense convolutions lower to GEMM: im2col of a slice of output rows into a scratch
buffer of at most COL_CHUNK_FLOATS, then one BLAS sgemm per slice. The slice keeps the
column buffer cache-resident and bounds scratch memory whatever the batch size; the
weight gradient re-runs im2col slice by slice instead of keeping the columns.
Depthwise convolutions run as direct Numba loops (their GEMMs would have K = 9).
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

from .geometry import Window
from .reduce import column_sums

COL_CHUNK_FLOATS = 1 << 19  # 2 MiB of im2col columns per GEMM slice


# ----------------------------------------------------------------------------- im2col
@njit(parallel=True, cache=True)
def _im2col(x, col, row0, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg):
    # col (rows, KH*KW*cg): row r is output pixel row0 + r in (n, oh, ow) order;
    # column (i*KW + j)*cg + c holds x[n, oh*sh - pt + i, ow*sw - pl + j, c0 + c] or 0.
    _, H, W, _ = x.shape
    plane = oh_n * ow_n
    for r in prange(col.shape[0]):
        g = row0 + r
        n = g // plane
        oh = (g % plane) // ow_n
        ow = g % ow_n
        k = 0
        for i in range(kh):
            ih = oh * sh - pt + i
            for j in range(kw):
                iw = ow * sw - pl + j
                # Slice copies compile to vectorised moves; an element loop here did
                # not vectorise and ran 2.2x slower.
                if 0 <= ih < H and 0 <= iw < W:
                    col[r, k:k + cg] = x[n, ih, iw, c0:c0 + cg]
                else:
                    col[r, k:k + cg] = 0.0
                k += cg


@njit(parallel=True, cache=True)
def _col2im_add(col, dx, row0, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg):
    # Scatter-add of im2col columns back into dx. One thread per image, rows in order:
    # no two threads touch the same dx element, and the summation order is fixed.
    _, H, W, _ = dx.shape
    plane = oh_n * ow_n
    rows = col.shape[0]
    n_first = row0 // plane
    n_last = (row0 + rows - 1) // plane
    for n in prange(n_first, n_last + 1):
        r_lo = max(n * plane - row0, 0)
        r_hi = min((n + 1) * plane - row0, rows)
        for r in range(r_lo, r_hi):
            g = row0 + r
            oh = (g % plane) // ow_n
            ow = g % ow_n
            k = 0
            for i in range(kh):
                ih = oh * sh - pt + i
                for j in range(kw):
                    iw = ow * sw - pl + j
                    if 0 <= ih < H and 0 <= iw < W:
                        dx[n, ih, iw, c0:c0 + cg] += col[r, k:k + cg]
                    k += cg


# -------------------------------------------------------------------------- depthwise
@njit(parallel=True, cache=True)
def _depthwise_forward(x, w, b, out, sh, sw, pt, pl, mult):
    _, H, W, _ = x.shape
    N, OH, OW, CO = out.shape
    KH, KW = w.shape[1], w.shape[2]
    for nr in prange(N * OH):
        n = nr // OH
        oh = nr % OH
        for ow in range(OW):
            acc = out[n, oh, ow]
            for co in range(CO):
                acc[co] = b[co]
            for i in range(KH):
                ih = oh * sh - pt + i
                if ih < 0 or ih >= H:
                    continue
                for j in range(KW):
                    iw = ow * sw - pl + j
                    if iw < 0 or iw >= W:
                        continue
                    xv = x[n, ih, iw]
                    for co in range(CO):
                        acc[co] += xv[co // mult] * w[co, i, j, 0]


@njit(parallel=True, cache=True)
def _depthwise_grad_weight(x, dy, dw, sh, sw, pt, pl, mult):
    # One task per kernel tap (i, j); each sums over all (n, oh, ow) in float64.
    _, H, W, _ = x.shape
    N, OH, OW, CO = dy.shape
    KH, KW = dw.shape[1], dw.shape[2]
    for t in prange(KH * KW):
        i = t // KW
        j = t % KW
        acc = np.zeros(CO, np.float64)
        for n in range(N):
            for oh in range(OH):
                ih = oh * sh - pt + i
                if ih < 0 or ih >= H:
                    continue
                for ow in range(OW):
                    iw = ow * sw - pl + j
                    if iw < 0 or iw >= W:
                        continue
                    g = dy[n, oh, ow]
                    xv = x[n, ih, iw]
                    for co in range(CO):
                        acc[co] += g[co] * xv[co // mult]
        for co in range(CO):
            dw[co, i, j, 0] = acc[co]


@njit(parallel=True, cache=True)
def _depthwise_grad_input(dy, w, dx, sh, sw, pt, pl, mult):
    _, H, W, _ = dx.shape
    N, OH, OW, CO = dy.shape
    KH, KW = w.shape[1], w.shape[2]
    for n in prange(N):
        dx[n] = 0.0
        for oh in range(OH):
            for i in range(KH):
                ih = oh * sh - pt + i
                if ih < 0 or ih >= H:
                    continue
                for ow in range(OW):
                    g = dy[n, oh, ow]
                    for j in range(KW):
                        iw = ow * sw - pl + j
                        if iw < 0 or iw >= W:
                            continue
                        d = dx[n, ih, iw]
                        for co in range(CO):
                            d[co // mult] += g[co] * w[co, i, j, 0]


# ------------------------------------------------------------------------ public API
def is_depthwise(w_shape, cin: int, groups: int) -> bool:
    return groups == cin and groups > 1 and w_shape[3] == 1


def _is_pointwise(win: Window, groups: int) -> bool:
    return groups == 1 and win.kh == win.kw == win.sh == win.sw == 1 and not win.padded


def conv2d_scratch_floats(x_shape, w_shape, win: Window, groups: int = 1) -> int:
    """float32 elements of scratch the conv kernels need for these shapes (0 if none)."""
    cin = x_shape[3]
    if is_depthwise(w_shape, cin, groups) or _is_pointwise(win, groups):
        return 0
    k = win.kh * win.kw * (cin // groups)
    rows = x_shape[0] * win.out_h * win.out_w
    cout_g = w_shape[0] // groups
    return min(rows, _rows_per_chunk(k)) * k + cout_g * k  # columns + one dW partial


def _rows_per_chunk(k: int) -> int:
    return max(1, COL_CHUNK_FLOATS // k)


def _chunks(rows: int, k: int):
    step = _rows_per_chunk(k)
    for r0 in range(0, rows, step):
        yield r0, min(rows, r0 + step)


def _scratch(scratch, n):
    if scratch is None:
        return np.empty(n, np.float32)
    if scratch.size < n:
        raise ValueError(f"conv scratch has {scratch.size} floats, needs {n}")
    return scratch


def conv2d_f32(x, w, b, out, win: Window, groups: int = 1, scratch=None):
    """out = conv(x, w) + b.  scratch: float32 buffer of conv2d_scratch_floats(...) or None."""
    N, _, _, cin = x.shape
    cout = w.shape[0]
    bias = b if b is not None else np.zeros(cout, np.float32)
    if is_depthwise(w.shape, cin, groups):
        _depthwise_forward(x, w, bias, out, win.sh, win.sw, win.pad_top, win.pad_left, cout // cin)
        return out
    rows = N * win.out_h * win.out_w
    out2d = out.reshape(rows, cout)
    if _is_pointwise(win, groups):
        np.matmul(x.reshape(rows, cin), w.reshape(cout, cin).T, out=out2d)
    else:
        cg, cog = cin // groups, cout // groups
        k = win.kh * win.kw * cg
        buf = _scratch(scratch, conv2d_scratch_floats(x.shape, w.shape, win, groups))
        for g in range(groups):
            w2d = w[g * cog:(g + 1) * cog].reshape(cog, k)
            for r0, r1 in _chunks(rows, k):
                col = buf[:(r1 - r0) * k].reshape(r1 - r0, k)
                _im2col(x, col, r0, win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left,
                        win.out_h, win.out_w, g * cg, cg)
                np.matmul(col, w2d.T, out=out2d[r0:r1, g * cog:(g + 1) * cog])
    if b is not None:
        out2d += b
    return out


def conv2d_grad_weight_f32(x, dy, dw, db, win: Window, groups: int = 1, scratch=None):
    """dw = dL/dw, db = dL/db (db may be None), overwritten.  dy (N, OH, OW, Cout)."""
    N, _, _, cin = x.shape
    cout = dw.shape[0]
    rows = N * win.out_h * win.out_w
    dy2d = dy.reshape(rows, cout)
    if db is not None:
        column_sums(dy2d, db)
    if is_depthwise(dw.shape, cin, groups):
        _depthwise_grad_weight(x, dy, dw, win.sh, win.sw, win.pad_top, win.pad_left, cout // cin)
        return
    if _is_pointwise(win, groups):
        np.matmul(dy2d.T, x.reshape(rows, cin), out=dw.reshape(cout, cin))
        return
    cg, cog = cin // groups, cout // groups
    k = win.kh * win.kw * cg
    buf = _scratch(scratch, conv2d_scratch_floats(x.shape, dw.shape, win, groups))
    partial = buf[buf.size - cog * k:buf.size].reshape(cog, k)
    col_area = buf[:buf.size - cog * k]
    for g in range(groups):
        dw2d = dw[g * cog:(g + 1) * cog].reshape(cog, k)
        for r0, r1 in _chunks(rows, k):
            col = col_area[:(r1 - r0) * k].reshape(r1 - r0, k)
            _im2col(x, col, r0, win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left,
                    win.out_h, win.out_w, g * cg, cg)
            target = dw2d if r0 == 0 else partial
            np.matmul(dy2d[r0:r1, g * cog:(g + 1) * cog].T, col, out=target)
            if r0 != 0:
                dw2d += partial


def conv2d_grad_input_f32(dy, w, dx, win: Window, groups: int = 1, scratch=None):
    """dx = dL/dx, overwritten.  Only backpropagation across layers needs this."""
    N, _, _, cin = dx.shape
    cout = w.shape[0]
    if is_depthwise(w.shape, cin, groups):
        _depthwise_grad_input(dy, w, dx, win.sh, win.sw, win.pad_top, win.pad_left, cout // cin)
        return dx
    rows = N * win.out_h * win.out_w
    dy2d = dy.reshape(rows, cout)
    if _is_pointwise(win, groups):
        np.matmul(dy2d, w.reshape(cout, cin), out=dx.reshape(rows, cin))
        return dx
    cg, cog = cin // groups, cout // groups
    k = win.kh * win.kw * cg
    buf = _scratch(scratch, conv2d_scratch_floats(dx.shape, w.shape, win, groups))
    dx[...] = 0.0
    for g in range(groups):
        w2d = w[g * cog:(g + 1) * cog].reshape(cog, k)
        for r0, r1 in _chunks(rows, k):
            dcol = buf[:(r1 - r0) * k].reshape(r1 - r0, k)
            np.matmul(dy2d[r0:r1, g * cog:(g + 1) * cog], w2d, out=dcol)
            _col2im_add(dcol, dx, r0, win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left,
                        win.out_h, win.out_w, g * cg, cg)
    return dx


# ------------------------------------------------ weight gradient from streamed dL/dy rows
def conv2d_rows_per_slice(x_shape, w_shape, win: Window) -> int:
    """Rows of dL/dy a streamed weight gradient produces per slice."""
    cin, cout = x_shape[3], w_shape[0]
    if _is_pointwise(win, 1):
        return max(1, min(x_shape[0] * win.out_h * win.out_w, COL_CHUNK_FLOATS // max(cin, cout)))
    return min(x_shape[0] * win.out_h * win.out_w, _rows_per_chunk(win.kh * win.kw * cin))


def conv2d_streamed_scratch_floats(x_shape, w_shape, win: Window) -> int:
    cin, cout = x_shape[3], w_shape[0]
    k = win.kh * win.kw * cin
    cols = 0 if _is_pointwise(win, 1) else conv2d_rows_per_slice(x_shape, w_shape, win) * k
    return cols + cout * k


def conv2d_grad_weight_streamed_f32(x, fill_dy_rows, dy_rows, dw, db, win: Window, scratch, db_acc, on_rows=None):
    """dw, db of a groups=1 conv when dL/dy is produced slice by slice, never whole.

    fill_dy_rows(r0, out) writes rows r0 .. r0+len(out) of dL/dy (N*OH*OW, Cout) into out.
    dy_rows: (conv2d_rows_per_slice, Cout) float32.  scratch: conv2d_streamed_scratch_floats.
    db_acc: (Cout,) float64 accumulator.  on_rows(r0, rows) is called with each slice
    (a dwsep block turns it into the depthwise unit's gradient).
    """
    N, _, _, cin = x.shape
    cout = dw.shape[0]
    rows = N * win.out_h * win.out_w
    k = win.kh * win.kw * cin
    step = dy_rows.shape[0]
    dw2d = dw.reshape(cout, k)
    partial = scratch[scratch.size - cout * k:scratch.size].reshape(cout, k)
    pointwise = _is_pointwise(win, 1)
    x2d = x.reshape(rows, cin) if pointwise else None
    db_acc[...] = 0.0
    for r0 in range(0, rows, step):
        r1 = min(rows, r0 + step)
        g = dy_rows[:r1 - r0]
        fill_dy_rows(r0, g)
        if pointwise:
            col = x2d[r0:r1]
        else:
            col = scratch[:(r1 - r0) * k].reshape(r1 - r0, k)
            _im2col(x, col, r0, win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left,
                    win.out_h, win.out_w, 0, cin)
        np.matmul(g.T, col, out=dw2d if r0 == 0 else partial)
        if r0 != 0:
            dw2d += partial
        if db is not None:
            _add_column_sums(g, db_acc)
        if on_rows is not None:
            on_rows(r0, g)
    if db is not None:
        db[...] = db_acc


@njit(cache=True)
def _add_column_sums(g, acc):
    # Serial and in row order: slices arrive in order, so db is deterministic.
    for r in range(g.shape[0]):
        for c in range(g.shape[1]):
            acc[c] += g[r, c]

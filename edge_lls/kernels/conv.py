"""2-D convolution, NHWC float32: forward, weight gradient, input gradient.

Layouts (the TFLite / CMSIS-NN ones, so imported int8 weights need no transpose):
    x   (N, H, W, Cin)             float32
    w   (Cout, KH, KW, Cin/groups) float32   (OHWI)
    b   (Cout,)                    float32
    out (N, OH, OW, Cout)          float32
Depthwise is the same op with groups == Cin (w is (Cin*mult, KH, KW, 1)).

Dense convolutions lower to GEMM in *tasks*: each Numba thread takes slices of output
rows, builds their im2col columns in its own L2-sized buffer (TASK_FLOATS) and calls a
single-threaded sgemm on them right away (kernels/blas.py). Columns never leave the
core that built them and no work crosses between thread pools. The weight gradient
re-runs im2col task by task instead of keeping columns; each thread accumulates its own
dW with beta = 1 and the per-thread partials are added in thread order (deterministic
for a given thread count). Pointwise 1x1 convolutions need no columns and go straight
to NumPy's multi-threaded sgemm; depthwise ones run as direct Numba loops (their GEMMs
would have K = 9); the input gradient (backprop only) uses slices of COL_CHUNK_FLOATS.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange

import numba

from .blas import SLOTS, gemm_ab, gemm_abt, gemm_atb
from .geometry import Window
from .activation import LEAKY_SLOPE
from .norm import batchnorm_grad_sums_pooled_f32, pooled_grad_input_rows
from .reduce import column_sums

COL_CHUNK_FLOATS = 1 << 19  # input gradient: 2 MiB of columns per BLAS call
TASK_FLOATS = 1 << 17       # per thread: 512 KiB of columns, resident in a core's L2


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


@njit(cache=True)
def _fill_cols(x, col, row0, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg):
    # Serial im2col of rows row0 .. row0+len(col), for one task inside a parallel loop.
    _, H, W, _ = x.shape
    plane = oh_n * ow_n
    for r in range(col.shape[0]):
        g = row0 + r
        n = g // plane
        oh = (g % plane) // ow_n
        ow = g % ow_n
        k = 0
        for i in range(kh):
            ih = oh * sh - pt + i
            for j in range(kw):
                iw = ow * sw - pl + j
                if 0 <= ih < H and 0 <= iw < W:
                    col[r, k:k + cg] = x[n, ih, iw, c0:c0 + cg]
                else:
                    col[r, k:k + cg] = 0.0
                k += cg


@njit(parallel=True, cache=True)
def _forward_tasks(x, w2d, b, has_bias, out2d, co0, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg, rpt, cols,
                   ints, floats, chars):
    # out2d[:, co0:co0+cog] = im2col(x) @ w2d.T (+ b), task by task.
    rows = out2d.shape[0]
    cog = w2d.shape[0]
    tasks = (rows + rpt - 1) // rpt
    threads = cols.shape[0]
    for t in prange(threads):
        for task in range(t, tasks, threads):
            r0 = task * rpt
            r1 = min(rows, r0 + rpt)
            col = cols[t, :r1 - r0]
            _fill_cols(x, col, r0, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg)
            dst = out2d[r0:r1, co0:co0 + cog]
            gemm_abt(col, w2d, dst, 0.0, ints[t], floats[t], chars[t])
            if has_bias:
                for r in range(r1 - r0):
                    dst[r] += b


@njit(parallel=True, cache=True)
def _grad_weight_tasks(x, dy2d, co0, dw2d, partial, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg, rpt, cols,
                       ints, floats, chars):
    # dw2d (cog, K) = sum over rows of dy2d[:, co0:co0+cog].T @ im2col(x); thread t > 0
    # accumulates into partial[t-1], then the partials are added in thread order.
    rows = dy2d.shape[0]
    cog = dw2d.shape[0]
    tasks = (rows + rpt - 1) // rpt
    threads = cols.shape[0]
    for t in prange(threads):
        target = dw2d if t == 0 else partial[t - 1]
        beta = 0.0
        for task in range(t, tasks, threads):
            r0 = task * rpt
            r1 = min(rows, r0 + rpt)
            col = cols[t, :r1 - r0]
            _fill_cols(x, col, r0, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg)
            gemm_atb(dy2d[r0:r1, co0:co0 + cog], col, target, beta, ints[t], floats[t], chars[t])
            beta = 1.0
        if beta == 0.0:
            target[:, :] = 0.0
    for t in range(1, threads):
        dw2d += partial[t - 1]


@njit(parallel=True, cache=True)
def _pooled_bn_grad_weight_tasks(x, dv_area, y, z, mean, inv_std, gamma, dgamma, dbeta, act, slope,
                                 dw2d, partial, db_part, w2d, gprev2d, want_gprev, pointwise,
                                 kh, kw, sh, sw, pt, pl, oh_n, ow_n, rpt, cols, dzs, ints, floats, chars):
    # The weight gradient of conv -> batch norm -> activation when dL/dy arrives pooled:
    # each task computes its rows of dL/dz from the pooled gradient, then
    # dW += dz^T im2col(x), db += colsum(dz) and, for a pointwise conv that follows
    # another unit, gprev rows = dz @ W. dL/dz never exists beyond one task's rows.
    N = x.shape[0]
    rows = N * oh_n * ow_n
    cin = x.shape[3]
    cout = dw2d.shape[0]
    tasks = (rows + rpt - 1) // rpt
    threads = dzs.shape[0]
    for t in prange(threads):
        target = dw2d if t == 0 else partial[t - 1]
        beta = 0.0
        db_part[t, :] = 0.0
        for task in range(t, tasks, threads):
            r0 = task * rpt
            r1 = min(rows, r0 + rpt)
            dz = dzs[t, :r1 - r0]
            pooled_grad_input_rows(dv_area, y, z, mean, inv_std, gamma, dgamma, dbeta, r0, dz, act, slope)
            if pointwise:
                col = x.reshape(rows, cin)[r0:r1]
            else:
                col = cols[t, :r1 - r0]
                _fill_cols(x, col, r0, kh, kw, sh, sw, pt, pl, oh_n, ow_n, 0, cin)
            gemm_atb(dz, col, target, beta, ints[t], floats[t], chars[t])
            beta = 1.0
            for r in range(r1 - r0):
                for c in range(cout):
                    db_part[t, c] += dz[r, c]
            if want_gprev:
                gemm_ab(dz, w2d, gprev2d[r0:r1], 0.0, ints[t], floats[t], chars[t])
        if beta == 0.0:
            target[:, :] = 0.0
    for t in range(1, threads):
        dw2d += partial[t - 1]


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


def _threads() -> int:
    return numba.get_num_threads()


def _rows_per_task(k: int, rows: int, threads: int) -> int:
    # An L2-sized slice, but no larger than an even share of the rows: small layers
    # still give every thread work.
    return max(1, min(max(8, TASK_FLOATS // k), -(-rows // threads)))


def _task_floats(rows: int, k: int, cout_g: int) -> int:
    """Scratch of the task kernels at the largest thread count: columns + dW partials."""
    pool = numba.config.NUMBA_NUM_THREADS
    return pool * _rows_per_task(k, rows, 1) * k + (pool - 1) * cout_g * k


def conv2d_scratch_floats(x_shape, w_shape, win: Window, groups: int = 1, input_grad: bool = False) -> int:
    """float32 elements of scratch the conv kernels need for these shapes (0 if none).
    input_grad: also the input gradient (backprop), which slices COL_CHUNK_FLOATS."""
    cin = x_shape[3]
    if is_depthwise(w_shape, cin, groups) or _is_pointwise(win, groups):
        return 0
    k = win.kh * win.kw * (cin // groups)
    rows = x_shape[0] * win.out_h * win.out_w
    need = _task_floats(rows, k, w_shape[0] // groups)
    if input_grad:
        need = max(need, min(rows, _rows_per_chunk(k)) * k)
    return need


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


def _task_views(buf, rows, k, cout_g):
    """(threads, rows_per_task, K) column buffers and (threads-1, cout_g, K) partials."""
    threads = _threads()
    rpt = _rows_per_task(k, rows, threads)
    cols = buf[:threads * rpt * k].reshape(threads, rpt, k)
    start = threads * rpt * k
    partial = buf[start:start + (threads - 1) * cout_g * k].reshape(threads - 1, cout_g, k)
    return rpt, cols, partial


def conv2d_f32(x, w, b, out, win: Window, groups: int = 1, scratch=None):
    """out = conv(x, w) + b.  scratch: float32 buffer of conv2d_scratch_floats(...) or None."""
    N, _, _, cin = x.shape
    cout = w.shape[0]
    if is_depthwise(w.shape, cin, groups):
        bias = b if b is not None else np.zeros(cout, np.float32)
        _depthwise_forward(x, w, bias, out, win.sh, win.sw, win.pad_top, win.pad_left, cout // cin)
        return out
    rows = N * win.out_h * win.out_w
    out2d = out.reshape(rows, cout)
    if _is_pointwise(win, groups):
        np.matmul(x.reshape(rows, cin), w.reshape(cout, cin).T, out=out2d)
        if b is not None:
            out2d += b
        return out
    cg, cog = cin // groups, cout // groups
    k = win.kh * win.kw * cg
    buf = _scratch(scratch, conv2d_scratch_floats(x.shape, w.shape, win, groups))
    rpt, cols, _ = _task_views(buf, rows, k, cog)
    bias = b if b is not None else np.zeros(cout, np.float32)
    for g in range(groups):
        _forward_tasks(x, w[g * cog:(g + 1) * cog].reshape(cog, k), bias[g * cog:(g + 1) * cog], b is not None,
                       out2d, g * cog, win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left,
                       win.out_h, win.out_w, g * cg, cg, rpt, cols, SLOTS.ints, SLOTS.floats, SLOTS.chars)
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
    rpt, cols, partial = _task_views(buf, rows, k, cog)
    for g in range(groups):
        _grad_weight_tasks(x, dy2d, g * cog, dw[g * cog:(g + 1) * cog].reshape(cog, k), partial,
                           win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left, win.out_h, win.out_w,
                           g * cg, cg, rpt, cols, SLOTS.ints, SLOTS.floats, SLOTS.chars)


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
    buf = _scratch(scratch, min(rows, _rows_per_chunk(k)) * k)
    dx[...] = 0.0
    for g in range(groups):
        w2d = w[g * cog:(g + 1) * cog].reshape(cog, k)
        for r0, r1 in _chunks(rows, k):
            dcol = buf[:(r1 - r0) * k].reshape(r1 - r0, k)
            np.matmul(dy2d[r0:r1, g * cog:(g + 1) * cog], w2d, out=dcol)
            _col2im_add(dcol, dx, r0, win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left,
                        win.out_h, win.out_w, g * cg, cg)
    return dx


# ------------------------------------------- conv -> BN -> act backward from a pooled dL/dy
def _pooled_rows_per_task(k, cout, rows, threads):
    return _rows_per_task(max(k, cout), rows, threads)


def pooled_bn_scratch(x_shape, w_shape, win: Window) -> tuple[int, int]:
    """(scratch floats, dz floats) conv2d_bn_grad_weight_pooled_f32 needs (groups 1)."""
    rows = x_shape[0] * win.out_h * win.out_w
    cin, cout = x_shape[3], w_shape[0]
    k = win.kh * win.kw * cin
    pool = numba.config.NUMBA_NUM_THREADS
    rpt = _pooled_rows_per_task(k, cout, rows, 1)
    cols = 0 if _is_pointwise(win, 1) else pool * rpt * k
    return cols + (pool - 1) * cout * k, pool * rpt * cout


_EMPTY2D = np.zeros((0, 0), np.float32)
_EMPTY3D = np.zeros((1, 0, 0), np.float32)


def conv2d_bn_grad_weight_pooled_f32(x, w, dv_area, y, z, bn, dw, db, win: Window, scratch, dz_scratch,
                                     db_part, gprev=None):
    """Gradients of conv (groups 1) -> batch norm -> activation from a pooled gradient.

    x (N,H,W,Cin) conv input; w (Cout,KH,KW,Cin) its weights; z (N,OH,OW,C) conv output;
    y the unit's output; dv_area (N,P,Q,C) pooled dL/dy divided by window areas;
    bn the unit's BatchNorm (its gamma/beta gradients are written here); dw, db (db may
    be None) overwritten; gprev (N,H,W,Cin) receives dL/dx (pointwise convs only);
    scratch, dz_scratch: pooled_bn_scratch(...) floats; db_part (pool, Cout) float64.
    """
    batchnorm_grad_sums_pooled_f32(dv_area, y, z, bn.mean, bn.inv_std, bn.gamma.grad, bn.beta.grad, bn.act)
    N, _, _, cin = x.shape
    cout = dw.shape[0]
    rows = N * win.out_h * win.out_w
    k = win.kh * win.kw * cin
    threads = _threads()
    rpt = _pooled_rows_per_task(k, cout, rows, threads)
    pointwise = _is_pointwise(win, 1)
    if gprev is not None and not pointwise:
        raise ValueError("a pooled backward passes dL/dx on only through pointwise convs")
    ncol = 0 if pointwise else threads * rpt * k
    cols = _EMPTY3D if pointwise else scratch[:ncol].reshape(threads, rpt, k)
    partial = scratch[ncol:ncol + (threads - 1) * cout * k].reshape(threads - 1, cout, k)
    dzs = dz_scratch[:threads * rpt * cout].reshape(threads, rpt, cout)
    want_gprev = gprev is not None
    _pooled_bn_grad_weight_tasks(
        x, dv_area, y, z, bn.mean, bn.inv_std, bn.gamma.value, bn.gamma.grad, bn.beta.grad, bn.act,
        np.float32(LEAKY_SLOPE), dw.reshape(cout, k), partial, db_part, w.reshape(cout, k),
        gprev.reshape(-1, cin) if want_gprev else _EMPTY2D, want_gprev, pointwise,
        win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left, win.out_h, win.out_w,
        rpt, cols, dzs, SLOTS.ints, SLOTS.floats, SLOTS.chars)
    if db is not None:
        db[...] = db_part[:threads].sum(axis=0)     # per-thread float64 sums, in thread order

"""2-D convolution, NHWC float32: forward, weight gradient, input gradient.

Layouts (the TFLite / CMSIS-NN ones, so imported int8 weights need no transpose):
    x   (N, H, W, Cin)             float32 or float16 storage
    w   (Cout, KH, KW, Cin/groups) float32   (OHWI)
    b   (Cout,)                    float32
    out (N, OH, OW, Cout)          float32 or float16 storage
Gradients (dy, dx, dw) are float32. Activations may be stored as float16 (mixed-precision
training, kernels/half.py): im2col widens them to float32 as it builds its columns, and a
float16 output is computed into a per-thread float32 tile and rounded as it is stored, so
every product and sum is float32 and a float16 result is the float32 result rounded.
Depthwise is the same op with groups == Cin (w is (Cin*mult, KH, KW, 1)).

Dense convolutions lower to GEMM in *tasks*: each Numba thread takes slices of output
rows, builds their im2col columns in its own L2-sized buffer (TASK_FLOATS) and calls a
single-threaded sgemm on them right away (kernels/blas.py). Columns never leave the
core that built them and no work crosses between thread pools. The weight gradient
re-runs im2col task by task instead of keeping columns; each thread accumulates its own
dW with beta = 1 and the per-thread partials are added in thread order (deterministic
for a given thread count). Pointwise 1x1 convolutions use x's rows as their columns;
depthwise ones run as direct Numba loops (their GEMMs
would have K = 9). The input gradient (backprop only) runs one image per task, so its
col2im scatters never meet.
"""
from __future__ import annotations

import numpy as np
from numba import njit, prange, types
from numba.extending import overload

import numba

from .blas import SLOTS, gemm_ab, gemm_abt, gemm_atb
from .geometry import Window
from .half import HALF, acc_row, bits, f32_to_half, ld, store_row, thread_rows, widen_into
from .activation import LEAKY_SLOPE
from .norm import batchnorm_grad_sums_pooled_f32, pooled_grad_input_rows
from .reduce import column_sums

TASK_FLOATS = 1 << 17       # per thread: 512 KiB of columns, resident in a core's L2


# ----------------------------------------------------------------------------- im2col
@njit(cache=True)
def _fill_cols(x, col, row0, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg):
    # Serial im2col of rows row0 .. row0+len(col), for one task inside a parallel loop.
    # Channel runs of 8+ floats copy as slices (vector moves); shorter runs (a stem conv
    # on 1-3 channels) element by element, where a slice's setup costs more than the copy.
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
                inside = 0 <= ih < H and 0 <= iw < W
                if cg >= 8:
                    if inside:
                        widen_into(col[r, k:k + cg], x[n, ih, iw, c0:c0 + cg])
                    else:
                        col[r, k:k + cg] = 0.0
                else:
                    for c in range(cg):
                        col[r, k + c] = ld(x[n, ih, iw, c0 + c]) if inside else 0.0
                k += cg


def _input_rows(x, col, r0, r1):
    """x's rows r0..r1 as (R, Cin) float32 GEMM operand (a pointwise conv's columns)."""


@overload(_input_rows)
def _input_rows_impl(x, col, r0, r1):
    if x.dtype == types.uint16:
        # Never called: float16 rows are widened into col like any im2col (direct=False).
        return lambda x, col, r0, r1: col
    return lambda x, col, r0, r1: x.reshape(-1, x.shape[3])[r0:r1]


@njit(inline="always")
def _task_columns(x, cols, t, r0, r1, direct, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg):
    # The GEMM operand of output rows r0..r1 for thread t: a float32 pointwise conv's
    # own input rows (direct), otherwise their im2col columns built in the thread's buffer.
    col = cols[t, :r1 - r0]
    if direct:
        return _input_rows(x, col, r0, r1)
    _fill_cols(x, col, r0, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg)
    return col


def _gemm_abt_store(col, w2d, dst, tile, b, has_bias, ints, floats, chars):
    """dst (R, cog) = col @ w2d.T (+ b): straight into a float32 dst; into the float32
    tile (>= R x cog), then rounded, for a float16 (uint16) dst."""


@overload(_gemm_abt_store)
def _gemm_abt_store_impl(col, w2d, dst, tile, b, has_bias, ints, floats, chars):
    if dst.dtype == types.uint16:
        def to_half(col, w2d, dst, tile, b, has_bias, ints, floats, chars):
            rows, cog = dst.shape
            acc = tile[:rows, :cog]
            gemm_abt(col, w2d, acc, 0.0, ints, floats, chars)
            for r in range(rows):
                for c in range(cog):
                    v = acc[r, c] + b[c] if has_bias else acc[r, c]
                    dst[r, c] = f32_to_half(v)
        return to_half

    def to_f32(col, w2d, dst, tile, b, has_bias, ints, floats, chars):
        gemm_abt(col, w2d, dst, 0.0, ints, floats, chars)
        if has_bias:
            # Element by element: `dst[r] += b` on a row view allocates a temporary per
            # row in Numba (one allocation per output pixel, 130k per SmallConv step).
            for r in range(dst.shape[0]):
                for c in range(dst.shape[1]):
                    dst[r, c] += b[c]
    return to_f32


@njit(parallel=True, cache=True)
def _forward_tasks(x, w2d, b, has_bias, out2d, co0, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg, direct,
                   rpt, cols, tiles, ints, floats, chars):
    # out2d[:, co0:co0+cog] = im2col(x) @ w2d.T (+ b), task by task. A float32 pointwise
    # conv's columns are x's own rows; tiles[t] holds a float16 output's float32 products.
    rows = out2d.shape[0]
    cog = w2d.shape[0]
    tasks = (rows + rpt - 1) // rpt
    threads = cols.shape[0]
    for t in prange(threads):
        for task in range(t, tasks, threads):
            r0 = task * rpt
            r1 = min(rows, r0 + rpt)
            col = _task_columns(x, cols, t, r0, r1, direct, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg)
            _gemm_abt_store(col, w2d, out2d[r0:r1, co0:co0 + cog], tiles[t], b, has_bias,
                            ints[t], floats[t], chars[t])


@njit(parallel=True, cache=True)
def _grad_weight_tasks(x, dy2d, co0, dw2d, partial, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg, direct,
                       rpt, cols, ints, floats, chars):
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
            col = _task_columns(x, cols, t, r0, r1, direct, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg)
            gemm_atb(dy2d[r0:r1, co0:co0 + cog], col, target, beta, ints[t], floats[t], chars[t])
            beta = 1.0
        if beta == 0.0:
            target[:, :] = 0.0
    for t in range(1, threads):
        dw2d += partial[t - 1]


@njit(parallel=True, cache=True)
def _pooled_bn_grad_weight_tasks(x, dv_area, z, mean, inv_std, scale, shift, gamma, dgamma, dbeta, act, slope,
                                 dw2d, partial, db_part, w2d, gprev2d, want_gprev, direct,
                                 kh, kw, sh, sw, pt, pl, oh_n, ow_n, rpt, cols, dzs, works, ints, floats, chars):
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
            pooled_grad_input_rows(dv_area, z, mean, inv_std, scale, shift, gamma, dgamma, dbeta, r0, dz, act, slope,
                                   works[t])
            col = _task_columns(x, cols, t, r0, r1, direct, kh, kw, sh, sw, pt, pl, oh_n, ow_n, 0, cin)
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
def _grad_input_tasks(dy2d, w2d, co0, dx, kh, kw, sh, sw, pt, pl, oh_n, ow_n, c0, cg, pointwise, cols,
                      ints, floats, chars):
    # dx[..., c0:c0+cg] = col2im(dy2d[:, co0:co0+cog] @ w2d), one image per task: an
    # image's columns scatter only into that image, so no two threads touch one element.
    N, H, W, _ = dx.shape
    plane = oh_n * ow_n
    cog = w2d.shape[0]
    threads = cols.shape[0]
    for t in prange(threads):
        for n in range(t, N, threads):
            g = dy2d[n * plane:(n + 1) * plane, co0:co0 + cog]
            if pointwise:
                gemm_ab(g, w2d, dx.reshape(N * H * W, dx.shape[3])[n * plane:(n + 1) * plane, c0:c0 + cg],
                        0.0, ints[t], floats[t], chars[t])
                continue
            dcol = cols[t]
            gemm_ab(g, w2d, dcol, 0.0, ints[t], floats[t], chars[t])
            dx[n, :, :, c0:c0 + cg] = 0.0
            for r in range(plane):
                oh = r // ow_n
                ow = r % ow_n
                k = 0
                for i in range(kh):
                    ih = oh * sh - pt + i
                    for j in range(kw):
                        iw = ow * sw - pl + j
                        if 0 <= ih < H and 0 <= iw < W:
                            for c in range(cg):
                                dx[n, ih, iw, c0 + c] += dcol[r, k + c]
                        k += cg


# -------------------------------------------------------------------------- depthwise
@njit(parallel=True, cache=True)
def _depthwise_forward(x, w, b, out, sh, sw, pt, pl, mult, threads, spares):
    # Rows (n, oh) are dealt to threads round-robin; spares (>= threads, >= CO) float32
    # holds a float16 output's accumulators, one row per thread (half.thread_rows).
    _, H, W, _ = x.shape
    N, OH, OW, CO = out.shape
    KH, KW = w.shape[1], w.shape[2]
    for t in prange(threads):
        for nr in range(t, N * OH, threads):
            n = nr // OH
            oh = nr % OH
            for ow in range(OW):
                acc = acc_row(out[n, oh, ow], spares[t])
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
                            acc[co] += ld(xv[co // mult]) * w[co, i, j, 0]
                store_row(out[n, oh, ow], acc)


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
                        acc[co] += g[co] * ld(xv[co // mult])
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


def _task_rows_all_threads(k: int, rows: int) -> int:
    """The most rows all threads' task slices hold at once, at any thread count up to the
    pool's: threads * rows_per_task, at most about rows (small layers) or pool * L2."""
    pool = numba.config.NUMBA_NUM_THREADS
    return max(t * _rows_per_task(k, rows, t) for t in range(1, pool + 1))


def conv2d_scratch_floats(x_shape, w_shape, win: Window, groups: int = 1, input_grad: bool = False,
                          half: bool = False) -> int:
    """float32 elements of scratch the conv kernels need for these shapes, at the largest
    thread count: column slices + per-thread dW partials; with input_grad, also one
    image's columns per thread for the input gradient (backprop). half: activations are
    stored as float16, so a pointwise conv needs columns too (its rows are widened) and
    the forward a float32 output tile per thread."""
    cin, cout = x_shape[3], w_shape[0]
    pool = numba.config.NUMBA_NUM_THREADS
    if is_depthwise(w_shape, cin, groups):
        return 0
    k, cog = win.kh * win.kw * (cin // groups), cout // groups
    rows = x_shape[0] * win.out_h * win.out_w
    cols = 0 if _is_pointwise(win, groups) and not half else _task_rows_all_threads(k, rows) * k
    need = cols + (pool - 1) * cog * k                   # weight gradient: columns + dW partials
    if half:                                             # forward: columns + output tiles
        need = max(need, _task_rows_all_threads(k + cog, rows) * (k + cog))
    if input_grad and not _is_pointwise(win, groups):
        need = max(need, pool * win.out_h * win.out_w * k)
    return need


def _scratch(scratch, n):
    if scratch is None:
        return np.empty(max(n, 1), np.float32)
    if scratch.size < n:
        raise ValueError(f"conv scratch has {scratch.size} floats, needs {n}")
    return scratch


_EMPTY3D = np.zeros((1, 0, 0), np.float32)
_EMPTY2D = np.zeros((0, 0), np.float32)


_ZEROS: dict[int, np.ndarray] = {}


def _zeros(n: int) -> np.ndarray:
    """A read-only float32 zero vector of length n (a bias-free conv's bias), made once."""
    z = _ZEROS.get(n)
    if z is None:
        z = _ZEROS[n] = np.zeros(n, np.float32)
        z.flags.writeable = False
    return z


def _direct(x, win: Window, groups: int) -> bool:
    """A float32 pointwise conv multiplies x's rows in place; float16 rows are widened."""
    return _is_pointwise(win, groups) and x.dtype != HALF


def _task_views(buf, rows, k, cout_g, direct, half_out=False):
    """(threads, rows_per_task, K) column buffers, then either (threads-1, cout_g, K) dW
    partials or (threads, rows_per_task, cout_g) float16-output tiles (never both in one
    call: the forward needs tiles, the weight gradient partials). With tiles, a task's
    columns and tile share the L2-sized slice."""
    threads = _threads()
    rpt = _rows_per_task(k + cout_g if half_out else k, rows, threads)
    ncol = 0 if direct else threads * rpt * k
    cols = _EMPTY3D if direct else buf[:ncol].reshape(threads, rpt, k)
    rest = buf[ncol:]
    partial = rest[:(threads - 1) * cout_g * k].reshape(threads - 1, cout_g, k)
    tiles = rest[:threads * rpt * cout_g].reshape(threads, rpt, cout_g) if half_out else _EMPTY3D
    return rpt, cols, partial, tiles


def conv2d_f32(x, w, b, out, win: Window, groups: int = 1, scratch=None):
    """out = conv(x, w) + b.  x and out: float32 or float16 storage, float32 math.
    scratch: float32 buffer of conv2d_scratch_floats(..., half=any float16 operand) or None."""
    N, _, _, cin = x.shape
    cout = w.shape[0]
    bias = b if b is not None else _zeros(cout)
    if is_depthwise(w.shape, cin, groups):
        _depthwise_forward(bits(x), w, bias, bits(out), win.sh, win.sw, win.pad_top, win.pad_left, cout // cin,
                           _threads(), thread_rows(out))
        return out
    buf = _scratch(scratch, conv2d_scratch_floats(x.shape, w.shape, win, groups, half=HALF in (x.dtype, out.dtype)))
    rows = N * win.out_h * win.out_w
    cg, cog = cin // groups, cout // groups
    k = win.kh * win.kw * cg
    direct = _direct(x, win, groups)
    rpt, cols, _, tiles = _task_views(buf, rows, k, cog, direct, half_out=out.dtype == HALF)
    out2d, xk = bits(out).reshape(rows, cout), bits(x)
    for g in range(groups):
        _forward_tasks(xk, w[g * cog:(g + 1) * cog].reshape(cog, k), bias[g * cog:(g + 1) * cog], b is not None,
                       out2d, g * cog, win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left,
                       win.out_h, win.out_w, g * cg, cg, direct, rpt, cols, tiles,
                       SLOTS.ints, SLOTS.floats, SLOTS.chars)
    return out


def conv2d_grad_weight_f32(x, dy, dw, db, win: Window, groups: int = 1, scratch=None):
    """dw = dL/dw, db = dL/db (db may be None), overwritten.  dy (N, OH, OW, Cout)
    float32; x float32 or float16 storage."""
    N, _, _, cin = x.shape
    cout = dw.shape[0]
    rows = N * win.out_h * win.out_w
    dy2d = dy.reshape(rows, cout)
    if db is not None:
        column_sums(dy2d, db)
    if is_depthwise(dw.shape, cin, groups):
        _depthwise_grad_weight(bits(x), dy, dw, win.sh, win.sw, win.pad_top, win.pad_left, cout // cin)
        return
    cg, cog = cin // groups, cout // groups
    k = win.kh * win.kw * cg
    direct = _direct(x, win, groups)
    buf = _scratch(scratch, conv2d_scratch_floats(x.shape, dw.shape, win, groups, half=x.dtype == HALF))
    rpt, cols, partial, _ = _task_views(buf, rows, k, cog, direct)
    for g in range(groups):
        _grad_weight_tasks(bits(x), dy2d, g * cog, dw[g * cog:(g + 1) * cog].reshape(cog, k), partial,
                           win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left, win.out_h, win.out_w,
                           g * cg, cg, direct, rpt, cols, SLOTS.ints, SLOTS.floats, SLOTS.chars)


def conv2d_grad_input_f32(dy, w, dx, win: Window, groups: int = 1, scratch=None):
    """dx = dL/dx, overwritten (float32).  Only backpropagation across layers needs this."""
    N, _, _, cin = dx.shape
    cout = w.shape[0]
    if is_depthwise(w.shape, cin, groups):
        _depthwise_grad_input(dy, w, dx, win.sh, win.sw, win.pad_top, win.pad_left, cout // cin)
        return dx
    rows = N * win.out_h * win.out_w
    cg, cog = cin // groups, cout // groups
    k = win.kh * win.kw * cg
    pointwise = _is_pointwise(win, groups)
    threads = _threads()
    plane = win.out_h * win.out_w
    if pointwise:
        cols = _EMPTY3D
    else:
        cols = _scratch(scratch, threads * plane * k)[:threads * plane * k].reshape(threads, plane, k)
    dy2d = dy.reshape(rows, cout)
    for g in range(groups):
        _grad_input_tasks(dy2d, w[g * cog:(g + 1) * cog].reshape(cog, k), g * cog, dx, win.kh, win.kw,
                          win.sh, win.sw, win.pad_top, win.pad_left, win.out_h, win.out_w, g * cg, cg,
                          pointwise, cols, SLOTS.ints, SLOTS.floats, SLOTS.chars)
    return dx


# ------------------------------------------- conv -> BN -> act backward from a pooled dL/dy
def _pooled_rows_per_task(k, cout, rows, threads):
    return _rows_per_task(max(k, cout), rows, threads)


def pooled_bn_scratch(x_shape, w_shape, win: Window, half: bool = False) -> tuple[int, int]:
    """(scratch floats, dz floats) conv2d_bn_grad_weight_pooled_f32 needs (groups 1);
    half: x is stored as float16 (a pointwise conv then needs columns)."""
    rows = x_shape[0] * win.out_h * win.out_w
    cin, cout = x_shape[3], w_shape[0]
    k = win.kh * win.kw * cin
    pool = numba.config.NUMBA_NUM_THREADS
    slices = _task_rows_all_threads(max(k, cout), rows)     # = _pooled_rows_per_task's rows
    cols = 0 if _is_pointwise(win, 1) and not half else slices * k
    return cols + (pool - 1) * cout * k, slices * cout


def conv2d_bn_grad_weight_pooled_f32(x, w, dv_area, z, bn, dw, db, win: Window, scratch, dz_scratch,
                                     db_part, gprev=None, works=None):
    """Gradients of conv (groups 1) -> batch norm -> activation from a pooled gradient.

    x (N,H,W,Cin) conv input; w (Cout,KH,KW,Cin) its weights; z (N,OH,OW,C) conv output
    (the unit's output y is not needed: its activation sign is recomputed from z); x and
    z float32 or float16 storage;
    dv_area (N,P,Q,C) pooled dL/dy divided by window areas;
    bn the unit's BatchNorm (its gamma/beta gradients are written here); dw, db (db may
    be None) overwritten; gprev (N,H,W,Cin) float32 receives dL/dx (pointwise convs only);
    scratch, dz_scratch: pooled_bn_scratch(...) floats; db_part (pool, Cout) float64;
    works (pool, 4, Cout) float32, per-thread rows of the dL/dz computation (allocated
    here when not given: a layer passes its own, allocated once).
    """
    batchnorm_grad_sums_pooled_f32(dv_area, z, bn.mean, bn.inv_std, bn.scale, bn.shift, bn.gamma.grad,
                                   bn.beta.grad, bn.act)
    N, _, _, cin = x.shape
    cout = dw.shape[0]
    rows = N * win.out_h * win.out_w
    k = win.kh * win.kw * cin
    threads = _threads()
    rpt = _pooled_rows_per_task(k, cout, rows, threads)
    pointwise = _is_pointwise(win, 1)
    if gprev is not None and not pointwise:
        raise ValueError("a pooled backward passes dL/dx on only through pointwise convs")
    direct = _direct(x, win, 1)
    ncol = 0 if direct else threads * rpt * k
    cols = _EMPTY3D if direct else scratch[:ncol].reshape(threads, rpt, k)
    partial = scratch[ncol:ncol + (threads - 1) * cout * k].reshape(threads - 1, cout, k)
    dzs = dz_scratch[:threads * rpt * cout].reshape(threads, rpt, cout)
    want_gprev = gprev is not None
    if works is None:
        works = np.empty((numba.config.NUMBA_NUM_THREADS, 4, cout), np.float32)
    _pooled_bn_grad_weight_tasks(
        bits(x), dv_area, bits(z), bn.mean, bn.inv_std, bn.scale, bn.shift, bn.gamma.value, bn.gamma.grad,
        bn.beta.grad, bn.act, np.float32(LEAKY_SLOPE), dw.reshape(cout, k), partial, db_part, w.reshape(cout, k),
        gprev.reshape(-1, cin) if want_gprev else _EMPTY2D, want_gprev, direct,
        win.kh, win.kw, win.sh, win.sw, win.pad_top, win.pad_left, win.out_h, win.out_w,
        rpt, cols, dzs, works, SLOTS.ints, SLOTS.floats, SLOTS.chars)
    if db is not None:
        db[...] = db_part[:threads].sum(axis=0)     # per-thread float64 sums, in thread order

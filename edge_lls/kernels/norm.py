"""Batch normalisation over (N, H, W) per channel, float32 math, with a fused activation.

Tensors are viewed as (M, C), M = N*H*W (or N for dense layers). Semantics are
PyTorch's BatchNorm: training normalises with the biased batch variance and updates
running averages with momentum and the unbiased variance; evaluation uses the running
averages. Statistics are accumulated in float64 over a fixed number of row slices
(see reduce.py), so results do not depend on the thread count.

Backward recomputes x_hat = (x - mean) * inv_std from the kept pre-norm input x, and
takes the activation's gradient from the kept output y: a block keeps x and y only.

Storage: the activations x and y are float32 or float16, in any mix (mixed-precision
training keeps them in half). The wrappers pass a float16 array to the kernels as its
uint16 view (half.bits); kernels load with half.ld and store with half.st, so a float16
output is exactly the float32 output rounded to half. Gradients (dy, dx, dv_area) and
per-channel vectors (mean, inv_std, scale, shift, gamma, ...) are always float32.
"""
import numpy as np
from numba import njit, prange

from .activation import ACT_NONE, LEAKY_SLOPE, act_grad, apply_act
from .half import bits, ld, st
from .reduce import SLICES, slice_partials


@njit(inline="always")
def _add_slices(partial, out):
    # out[c] = sum over slices of partial[s, c], slices in order (deterministic).
    for c in range(out.shape[0]):
        t = 0.0
        for s in range(partial.shape[0]):
            t += partial[s, c]
        out[c] = t


@njit(parallel=True, cache=True)
def _stats(x2d, mean, inv_std, var_out, eps, part):
    # One pass of float64 sums of (x - pivot) and (x - pivot)^2, pivot = the first row:
    # shifting by a sample of the data keeps E[d^2] - E[d]^2 from cancelling when the
    # mean is large against the spread, and saves the second read of x a two-pass needs.
    M, C = x2d.shape
    pivot = x2d[0]
    s1, s2 = part[0], part[1]               # (SLICES, C) float64 each, reused across calls
    for s in prange(SLICES):
        lo, hi = s * M // SLICES, (s + 1) * M // SLICES
        a1 = s1[s]
        a2 = s2[s]
        a1[:] = 0.0
        a2[:] = 0.0
        for m in range(lo, hi):
            row = x2d[m]
            for c in range(C):
                d = np.float64(ld(row[c])) - ld(pivot[c])
                a1[c] += d
                a2[c] += d * d
    for c in range(C):
        t1 = 0.0
        t2 = 0.0
        for s in range(SLICES):
            t1 += s1[s, c]
            t2 += s2[s, c]
        mu_d = t1 / M
        v = max(t2 / M - mu_d * mu_d, 0.0)
        mean[c] = ld(pivot[c]) + mu_d
        var_out[c] = v
        inv_std[c] = 1.0 / np.sqrt(v + eps)


@njit(parallel=True, cache=True)
def _normalize(x2d, scale, shift, y2d, act, slope):
    M, C = x2d.shape
    for m in prange(M):
        for c in range(C):
            y2d[m, c] = st(y2d, apply_act(ld(x2d[m, c]) * scale[c] + shift[c], act, slope))


@njit(parallel=True, cache=True)
def _grad_sums(dy2d, y2d, x2d, mean, inv_std, dgamma, dbeta, act, slope, part):
    M, C = x2d.shape
    sg, sgx = part[0], part[1]
    for s in prange(SLICES):
        lo, hi = s * M // SLICES, (s + 1) * M // SLICES
        sg[s] = 0.0
        sgx[s] = 0.0
        for m in range(lo, hi):
            for c in range(C):
                g = act_grad(dy2d[m, c], ld(y2d[m, c]), act, slope)
                sg[s, c] += g
                sgx[s, c] += g * (ld(x2d[m, c]) - mean[c]) * inv_std[c]
    _add_slices(sg, dbeta)
    _add_slices(sgx, dgamma)


@njit(parallel=True, cache=True)
def _grad_input(dy2d, y2d, x2d, mean, inv_std, gamma, dgamma, dbeta, dx2d, act, slope):
    M, C = x2d.shape
    for m in prange(M):
        for c in range(C):
            g = act_grad(dy2d[m, c], ld(y2d[m, c]), act, slope)
            xhat = (ld(x2d[m, c]) - mean[c]) * inv_std[c]
            dx2d[m, c] = gamma[c] * inv_std[c] * (g - (dbeta[c] + xhat * dgamma[c]) / M)


def _as2d(a):
    return a.reshape(-1, a.shape[-1])


def batchnorm_stats_f32(x, gamma, beta, running_mean, running_var, mean, inv_std, scratch,
                        eps=1e-5, momentum=0.1):
    """The training half of batch norm that needs all of x ((..., C) float32 or float16
    storage): batch mean and inv_std (C,) float32, the running averages (updated in
    place), and in scratch (3, C) float32 rows 1 and 2 the affine map
    y = act(x * scale + shift) that every later pass applies on the fly."""
    x2d = _as2d(x)
    M = x2d.shape[0]
    if M < 2:
        raise ValueError("batch norm in training mode needs more than one value per channel")
    var, scale, shift = scratch[0], scratch[1], scratch[2]
    _stats(bits(x2d), mean, inv_std, var, eps, slice_partials(x2d.shape[1]))
    running_mean *= 1.0 - momentum
    running_mean += momentum * mean
    running_var *= 1.0 - momentum
    running_var += (momentum * M / (M - 1)) * var
    np.multiply(gamma, inv_std, out=scale)
    np.multiply(scale, mean, out=shift)
    np.subtract(beta, shift, out=shift)
    return scale, shift


def batchnorm_train_f32(x, gamma, beta, running_mean, running_var, mean, inv_std, y,
                        eps=1e-5, momentum=0.1, act=ACT_NONE, slope=LEAKY_SLOPE, scratch=None):
    """y = act(gamma * (x - mean) * inv_std + beta) with batch statistics.

    x, y: (..., C) float32 or float16 storage (y must not alias x: backward needs both).
    mean, inv_std: (C,) float32 outputs, kept for backward.
    running_mean, running_var: (C,) updated in place.  scratch: (3, C) float32 or None.
    """
    tmp = scratch if scratch is not None else np.empty((3, x.shape[-1]), np.float32)
    scale, shift = batchnorm_stats_f32(x, gamma, beta, running_mean, running_var, mean, inv_std, tmp, eps, momentum)
    _normalize(bits(_as2d(x)), scale, shift, bits(_as2d(y)), act, np.float32(slope))
    return y


def batchnorm_eval_f32(x, gamma, beta, running_mean, running_var, y,
                       eps=1e-5, act=ACT_NONE, slope=LEAKY_SLOPE, scratch=None):
    """y = act(gamma * (x - running_mean) / sqrt(running_var + eps) + beta); y may alias x.

    x, y: (..., C) float32 or float16 storage."""
    C = x.shape[-1]
    tmp = scratch if scratch is not None else np.empty((3, C), np.float32)
    scale, shift = tmp[1], tmp[2]
    np.add(running_var, eps, out=scale)
    np.sqrt(scale, out=scale)
    np.divide(gamma, scale, out=scale)
    np.multiply(scale, running_mean, out=shift)
    np.subtract(beta, shift, out=shift)
    _normalize(bits(_as2d(x)), scale, shift, bits(_as2d(y)), act, np.float32(slope))
    return y


def batchnorm_grad_f32(dy, y, x, mean, inv_std, gamma, dgamma, dbeta, dx,
                       act=ACT_NONE, slope=LEAKY_SLOPE):
    """Gradients of a training-mode batch norm (+ fused activation).

    dy: dL/d(output) (..., C) float32; y: the output and x: the pre-norm input, (..., C)
    float32 or float16 storage.
    dgamma, dbeta: (C,) overwritten.  dx: dL/dx float32, may alias dy; pass None to skip it.
    """
    dy2d, y2d, x2d = _as2d(dy), bits(_as2d(y)), bits(_as2d(x))
    _grad_sums(dy2d, y2d, x2d, mean, inv_std, dgamma, dbeta, act, np.float32(slope), slice_partials(x2d.shape[1]))
    if dx is not None:
        _grad_input(dy2d, y2d, x2d, mean, inv_std, gamma, dgamma, dbeta, _as2d(dx), act, np.float32(slope))
    return dx


# ---------------------------------------------------------------------------------------
# Backward from a POOLED gradient. When a block's learning signal is computed on its
# adaptive-average-pooled output, dL/dy is constant over each pooling window:
#     dL/dy[n,h,w,c] = sum over windows (i,j) containing (h,w) of dv[n,i,j,c] / area(i,j)
# so the full-size dL/dy is never stored: the batch-norm sums read dv directly, and
# dL/dx is produced one slice of rows at a time, straight into the consumer's GEMM.
# dv_area: (N, P, Q, C) float32, the pooled gradient already divided by window areas.

@njit(inline="always")
def _window_span(h, size_in, size_out):
    # The adaptive windows i that contain input index h: [first, last], at most two.
    first = (h * size_out) // size_in
    while first > 0 and -((-first * size_in) // size_out) > h:   # ceil(first*in/out) > h
        first -= 1
    while -((-(first + 1) * size_in) // size_out) <= h:          # window first ends at or before h
        first += 1
    last = first
    while last + 1 < size_out and ((last + 1) * size_in) // size_out <= h:
        last += 1
    return first, last


@njit(inline="always")
def _pooled_row(dv_area, n, i0, i1, j0, j1, acc):
    # dL/dy of one pixel over all channels: one pooled cell in the common case, the sum
    # of the (at most 2 x 2) overlapping cells otherwise, accumulated into acc.
    if i0 == i1 and j0 == j1:
        return dv_area[n, i0, j0]
    acc[:] = 0.0
    for i in range(i0, i1 + 1):
        for j in range(j0, j1 + 1):
            cell = dv_area[n, i, j]
            for c in range(acc.shape[0]):
                acc[c] += cell[c]
    return acc


@njit(parallel=True, cache=True)
def _pooled_grad_sums(dv_area, x, mean, inv_std, scale, shift, dgamma, dbeta, act, slope, part, rows32):
    # part (2, SLICES, C) float64 slice sums, rows32 (SLICES, C) float32 window sums:
    # reused across calls (reduce.slice_partials).
    N, H, W, C = x.shape
    P, Q = dv_area.shape[1], dv_area.shape[2]
    rows = N * H
    sg, sgx = part[0], part[1]
    for s in prange(SLICES):
        acc = rows32[s]
        a1 = sg[s]
        a2 = sgx[s]
        a1[:] = 0.0
        a2[:] = 0.0
        for nh in range(s * rows // SLICES, (s + 1) * rows // SLICES):
            n = nh // H
            h = nh % H
            i0, i1 = _window_span(h, H, P)
            for w in range(W):
                j0, j1 = _window_span(w, W, Q)
                d = _pooled_row(dv_area, n, i0, i1, j0, j1, acc)
                xr = x[n, h, w]
                for c in range(C):
                    # The activation's derivative from the norm output it saw, recomputed
                    # from x exactly as the forward computed it: y need not be kept.
                    xv = ld(xr[c])
                    g = act_grad(d[c], xv * scale[c] + shift[c], act, slope)
                    a1[c] += g
                    a2[c] += g * (xv - mean[c]) * inv_std[c]
    _add_slices(sg, dbeta)
    _add_slices(sgx, dgamma)


@njit(cache=True)
def pooled_grad_input_rows(dv_area, x, mean, inv_std, scale, shift, gamma, dgamma, dbeta, r0, dx_rows, act, slope,
                           work):
    # Serial: dL/dx for flattened rows r0 .. r0+R of (N*H*W, C) into dx_rows (R, C) float32.
    # Called per task from inside parallel loops (the conv weight-gradient kernels), so
    # x is whatever the caller passes: (N,H,W,C) float32, or float16 as its uint16 view.
    # work (4, C) float32: the calling thread's own rows (no allocation per task).
    N, H, W, C = x.shape
    P, Q = dv_area.shape[1], dv_area.shape[2]
    M = N * H * W
    acc = work[0]
    gscale = work[1]                    # gamma * inv_std
    offset = work[2]                    # dbeta / M, and the xhat coefficient dgamma / M
    coef = work[3]
    for c in range(C):
        gscale[c] = gamma[c] * inv_std[c]
        offset[c] = dbeta[c] / M
        coef[c] = dgamma[c] / M
    for r in range(dx_rows.shape[0]):
        m = r0 + r
        n = m // (H * W)
        h = (m // W) % H
        w = m % W
        i0, i1 = _window_span(h, H, P)
        j0, j1 = _window_span(w, W, Q)
        d = _pooled_row(dv_area, n, i0, i1, j0, j1, acc)
        xr = x[n, h, w]
        out = dx_rows[r]
        for c in range(C):
            xv = ld(xr[c])
            g = act_grad(d[c], xv * scale[c] + shift[c], act, slope)
            xhat = (xv - mean[c]) * inv_std[c]
            out[c] = gscale[c] * (g - offset[c] - xhat * coef[c])


@njit(parallel=True, cache=True)
def _pooled_grad_input_rows(dv_area, x, mean, inv_std, scale, shift, gamma, dgamma, dbeta, r0, dx_rows, act, slope,
                            work):
    rows = dx_rows.shape[0]
    for s in prange(SLICES):
        lo, hi = s * rows // SLICES, (s + 1) * rows // SLICES
        pooled_grad_input_rows(dv_area, x, mean, inv_std, scale, shift, gamma, dgamma, dbeta, r0 + lo, dx_rows[lo:hi],
                               act, slope, work[s])


def batchnorm_grad_sums_pooled_f32(dv_area, x, mean, inv_std, scale, shift, dgamma, dbeta,
                                   act=ACT_NONE, slope=LEAKY_SLOPE):
    """dgamma, dbeta (C,) of a training batch norm (+ fused activation) whose output
    gradient is the adaptive-pool upsampling of dv_area (N,P,Q,C) float32. x: (N,H,W,C) the
    norm's input, float32 or float16 storage; scale, shift: the forward's gamma*inv_std and
    beta - mean*scale."""
    C = x.shape[-1]
    _pooled_grad_sums(dv_area, bits(x), mean, inv_std, scale, shift, dgamma, dbeta, act, np.float32(slope),
                      slice_partials(C), slice_partials(C, np.float32)[0])


def batchnorm_grad_input_pooled_rows_f32(dv_area, x, mean, inv_std, scale, shift, gamma, dgamma, dbeta, r0,
                                         dx_rows, act=ACT_NONE, slope=LEAKY_SLOPE):
    """Rows r0 .. r0+len(dx_rows) of dL/dx (flattened (N*H*W, C), float32); call after the
    sums. x: (N,H,W,C) float32 or float16 storage."""
    work = np.empty((SLICES, 4, x.shape[-1]), np.float32)
    _pooled_grad_input_rows(dv_area, bits(x), mean, inv_std, scale, shift, gamma, dgamma, dbeta, r0, dx_rows, act,
                            np.float32(slope), work)

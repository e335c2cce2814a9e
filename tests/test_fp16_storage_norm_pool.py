"""float16 activation storage in batch norm, pooling and activation kernels.

The invariant (see kernels/half.py): a kernel run on float16 storage equals the float32
kernel run on the same values widened to float32, its activation outputs then rounded to
half, bit for bit. Float32 outputs (statistics, gradients) and argmax must be identical.
"""
import numba
import numpy as np
import pytest

from edge_lls.kernels import activation as kact
from edge_lls.kernels import norm, pool
from edge_lls.kernels.activation import ACTIVATIONS
from edge_lls.kernels.geometry import resolve_window
from edge_lls.kernels.half import bits

F16, F32 = np.float16, np.float32
ACTS = sorted(ACTIVATIONS.items())
# (input storage, output storage): all half, and the two mixes at a layer boundary.
MIXES = [(F16, F16), (F32, F16), (F16, F32)]


def same(got, ref):
    """Bit-identical arrays of one dtype (float16 compared as bits, so -0 != +0)."""
    assert got.dtype == ref.dtype and got.shape == ref.shape
    u = {2: np.uint16, 4: np.uint32, 8: np.uint64}[got.dtype.itemsize]
    assert np.array_equal(np.ascontiguousarray(got).view(u), np.ascontiguousarray(ref).view(u))


def rand(rng, shape, dtype, offset=0.0, scale=1.0):
    return (offset + scale * rng.standard_normal(shape)).astype(dtype)


def bn_params(rng, C):
    gamma = rand(rng, C, F32, 1.0, 0.5)
    beta = rand(rng, C, F32, 0.0, 2.0)   # shifts outputs across the ReLU/ReLU6 kinks
    return gamma, beta


# ---------------------------------------------------------------------------------------
# batch norm

def run_train(x, out_dtype, gamma, beta, act):
    C = x.shape[-1]
    rm, rv = np.full(C, 0.5, F32), np.full(C, 2.0, F32)
    mean, inv_std = np.empty(C, F32), np.empty(C, F32)
    y = np.empty(x.shape, out_dtype)
    norm.batchnorm_train_f32(x, gamma, beta, rm, rv, mean, inv_std, y, act=act)
    return y, mean, inv_std, rm, rv


@pytest.mark.parametrize("act_name,act", ACTS)
@pytest.mark.parametrize("in_dt,out_dt", MIXES)
def test_batchnorm_train_and_stats(act_name, act, in_dt, out_dt):
    rng = np.random.default_rng(1)
    # A mean large against the spread: the pivot row (x2d[0]) is loaded through ld too.
    x = rand(rng, (3, 5, 7, 6), in_dt, offset=40.0, scale=3.0)
    gamma, beta = bn_params(rng, 6)
    got = run_train(x, out_dt, gamma, beta, act)
    ref = run_train(x.astype(F32), F32, gamma, beta, act)
    same(got[0], ref[0].astype(out_dt))
    for g, r in zip(got[1:], ref[1:]):
        same(g, r)


@pytest.mark.parametrize("act_name,act", ACTS)
def test_batchnorm_eval_in_place(act_name, act):
    rng = np.random.default_rng(2)
    x16 = rand(rng, (2, 4, 3, 5), F16)
    gamma, beta = bn_params(rng, 5)
    rm, rv = rand(rng, 5, F32, 0.0, 0.3), rand(rng, 5, F32, 1.0, 0.2) ** 2
    ref = np.empty(x16.shape, F32)
    norm.batchnorm_eval_f32(x16.astype(F32), gamma, beta, rm, rv, ref, act=act)
    y = x16.copy()
    norm.batchnorm_eval_f32(y, gamma, beta, rm, rv, y, act=act)    # y aliases x
    same(y, ref.astype(F16))


@pytest.mark.parametrize("act_name,act", ACTS)
@pytest.mark.parametrize("x_dt,y_dt", [(F16, F16), (F32, F16)])
def test_batchnorm_grad(act_name, act, x_dt, y_dt):
    rng = np.random.default_rng(3)
    x = rand(rng, (2, 6, 5, 4), x_dt, offset=1.0)
    gamma, beta = bn_params(rng, 4)
    y, mean, inv_std, _, _ = run_train(x, y_dt, gamma, beta, act)
    dy = rand(rng, x.shape, F32)

    def grad(y, x):
        dg, db, dx = np.empty(4, F32), np.empty(4, F32), np.empty(x.shape, F32)
        norm.batchnorm_grad_f32(dy, y, x, mean, inv_std, gamma, dg, db, dx, act=act)
        return dg, db, dx

    for g, r in zip(grad(y, x), grad(y.astype(F32), x.astype(F32))):
        same(g, r)


@pytest.mark.parametrize("act_name,act", ACTS)
def test_pooled_grad_sums_and_rows(act_name, act):
    rng = np.random.default_rng(4)
    N, H, W, C, P, Q = 2, 7, 5, 6, 3, 2     # P, Q do not divide H, W: windows overlap
    z16 = rand(rng, (N, H, W, C), F16, offset=0.5)
    z32 = z16.astype(F32)
    gamma, beta = bn_params(rng, C)
    _, mean, inv_std, _, _ = run_train(z16, F16, gamma, beta, act)
    scale = gamma * inv_std
    shift = beta - mean * scale
    dv_area = rand(rng, (N, P, Q, C), F32)

    def sums(z):
        dg, db = np.empty(C, F32), np.empty(C, F32)
        norm.batchnorm_grad_sums_pooled_f32(dv_area, z, mean, inv_std, scale, shift, dg, db, act=act)
        return dg, db

    dg, db = sums(z16)
    rdg, rdb = sums(z32)
    same(dg, rdg)
    same(db, rdb)

    M = N * H * W
    rows = np.empty((M, C), F32)
    ref = np.empty((M, C), F32)
    norm.batchnorm_grad_input_pooled_rows_f32(dv_area, z16, mean, inv_std, scale, shift, gamma, dg, db, 0, rows,
                                              act=act)
    norm.batchnorm_grad_input_pooled_rows_f32(dv_area, z32, mean, inv_std, scale, shift, gamma, dg, db, 0, ref,
                                              act=act)
    same(rows, ref)
    # The serial row function as conv.py inlines it: z arrives as its uint16 view.
    r0, part = 17, np.empty((23, C), F32)
    norm.pooled_grad_input_rows(dv_area, bits(z16), mean, inv_std, scale, shift, gamma, dg, db, r0, part, act,
                                np.float32(kact.LEAKY_SLOPE), np.empty((4, z16.shape[-1]), np.float32))
    same(part, ref[r0:r0 + 23])


# ---------------------------------------------------------------------------------------
# pooling

def tied(rng, shape, dtype):
    # Few distinct values: many ties, so argmax's first-tap rule is exercised.
    return (rng.integers(-4, 5, shape) * 0.75).astype(dtype)


MAX_WINDOWS = [((2, 2), (2, 2), 0), ((3, 3), (2, 2), 1), ((3, 2), (1, 2), (1, 1, 0, 1))]


def bn_act_for(rng, C, act):
    return rand(rng, C, F32, 1.0, 0.7), rand(rng, C, F32, 0.0, 1.0), act


@pytest.mark.parametrize("kernel,stride,pad", MAX_WINDOWS)
@pytest.mark.parametrize("keep_argmax", [False, True])
@pytest.mark.parametrize("act", [None, ACTIVATIONS["relu"], ACTIVATIONS["leaky_relu"]])
@pytest.mark.parametrize("in_dt,out_dt", MIXES)
def test_max_pool(kernel, stride, pad, keep_argmax, act, in_dt, out_dt):
    rng = np.random.default_rng(5)
    N, H, W, C = 2, 7, 8, 5
    x = tied(rng, (N, H, W, C), in_dt) if act is None else rand(rng, (N, H, W, C), in_dt)
    bn_act = None if act is None else bn_act_for(rng, C, act)
    win = resolve_window((H, W), kernel, stride, pad)
    shape = (N, win.out_h, win.out_w, C)

    def run(x, dt):
        out = np.empty(shape, dt)
        arg = np.full(shape, -1, np.int32) if keep_argmax else None
        pool.max_pool2d_f32(x, out, win, arg, bn_act=bn_act)
        return out, arg

    out, arg = run(x, out_dt)
    ref, rarg = run(x.astype(F32), F32)
    same(out, ref.astype(out_dt))
    if keep_argmax:
        same(arg, rarg)


def test_max_pool_half_best_kept_in_float32():
    # Tap 0 is the larger in float32 but rounds to half 1.0, below tap 1's float32 value:
    # comparing taps against the half-rounded best would pick tap 1. The float32 kernel,
    # and so the half one, picks tap 0.
    x = np.array([1.0 + 3 * 2.0 ** -13, 1.0 + 2.0 ** -12], F32).reshape(1, 1, 2, 1)
    assert x[0, 0, 0, 0] > x[0, 0, 1, 0] and F32(F16(x[0, 0, 0, 0])) < x[0, 0, 1, 0]
    win = resolve_window((1, 2), (1, 2), 1, 0)
    out = np.empty((1, 1, 1, 1), F16)
    arg = np.empty((1, 1, 1, 1), np.int32)
    pool.max_pool2d_f32(x, out, win, arg)
    assert arg[0, 0, 0, 0] == 0 and out[0, 0, 0, 0] == F16(x[0, 0, 0, 0])


@pytest.mark.parametrize("kernel,stride,pad", [((2, 2), (2, 2), 0), ((3, 3), (2, 2), 1)])
@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("in_dt,out_dt", MIXES)
def test_avg_pool(kernel, stride, pad, count_include_pad, in_dt, out_dt):
    rng = np.random.default_rng(6)
    N, H, W, C = 2, 7, 6, 4
    x = rand(rng, (N, H, W, C), in_dt)
    win = resolve_window((H, W), kernel, stride, pad)
    out = np.empty((N, win.out_h, win.out_w, C), out_dt)
    ref = np.empty(out.shape, F32)
    pool.avg_pool2d_f32(x, out, win, count_include_pad)
    pool.avg_pool2d_f32(x.astype(F32), ref, win, count_include_pad)
    same(out, ref.astype(out_dt))


@pytest.mark.parametrize("pq", [(1, 1), (3, 2), (4, 4)])
@pytest.mark.parametrize("act", [None] + [a for _, a in ACTS])
@pytest.mark.parametrize("in_dt,out_dt", MIXES)
def test_adaptive_avg_pool2d(pq, act, in_dt, out_dt):
    rng = np.random.default_rng(7)
    N, H, W, C = 2, 7, 5, 6
    x = rand(rng, (N, H, W, C), in_dt, offset=0.3)
    bn_act = None if act is None else bn_act_for(rng, C, act)
    out = np.empty((N, *pq, C), out_dt)
    ref = np.empty(out.shape, F32)
    pool.adaptive_avg_pool2d_f32(x, out, bn_act=bn_act)
    pool.adaptive_avg_pool2d_f32(x.astype(F32), ref, bn_act=bn_act)
    same(out, ref.astype(out_dt))


@pytest.mark.parametrize("P", [1, 3, 5])
@pytest.mark.parametrize("in_dt,out_dt", MIXES)
def test_adaptive_avg_pool1d(P, in_dt, out_dt):
    rng = np.random.default_rng(8)
    x = rand(rng, (3, 11), in_dt)
    out = np.empty((3, P), out_dt)
    ref = np.empty((3, P), F32)
    pool.adaptive_avg_pool1d_f32(x, out)
    pool.adaptive_avg_pool1d_f32(x.astype(F32), ref)
    same(out, ref.astype(out_dt))


def test_half_pool_output_independent_of_thread_count():
    # A half output is accumulated in per-thread float32 rows (numba.get_thread_id()).
    rng = np.random.default_rng(9)
    x = rand(rng, (4, 9, 9, 7), F16)
    bn_act = bn_act_for(rng, 7, ACTIVATIONS["relu6"])
    win = resolve_window((9, 9), 3, 2, 1)
    results = []
    threads = numba.get_num_threads()
    try:
        for t in sorted({1, threads}):
            numba.set_num_threads(t)
            m = np.empty((4, win.out_h, win.out_w, 7), F16)
            a = np.empty((4, 3, 2, 7), F16)
            pool.max_pool2d_f32(x, m, win, bn_act=bn_act)
            pool.adaptive_avg_pool2d_f32(x, a, bn_act=bn_act)
            results.append((m, a))
    finally:
        numba.set_num_threads(threads)
    for m, a in results[1:]:
        same(m, results[0][0])
        same(a, results[0][1])


# ---------------------------------------------------------------------------------------
# pointwise activations

@pytest.mark.parametrize("act_name,act", ACTS)
@pytest.mark.parametrize("in_dt,out_dt", MIXES)
def test_activation_forward_and_grad(act_name, act, in_dt, out_dt):
    rng = np.random.default_rng(10)
    x = rand(rng, (3, 4, 5), in_dt, scale=4.0)
    out = np.empty(x.shape, out_dt)
    ref = np.empty(x.shape, F32)
    kact.activation_f32(x, out, act)
    kact.activation_f32(x.astype(F32), ref, act)
    same(out, ref.astype(out_dt))

    dy = rand(rng, x.shape, F32)
    dx, rdx = np.empty(x.shape, F32), np.empty(x.shape, F32)
    kact.activation_grad_f32(dy, out, dx, act)
    kact.activation_grad_f32(dy, out.astype(F32), rdx, act)
    same(dx, rdx)

    inplace = x.copy()                                   # out may be x
    kact.activation_f32(inplace, inplace, act)
    same(inplace, ref.astype(in_dt))

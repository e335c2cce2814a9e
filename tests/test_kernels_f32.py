"""Every fp32 kernel against its plain-NumPy reference twin.

Tolerance: float32 kernels vs float64 references agree to rtol 1e-4 / atol 1e-5 (sums of
up to ~1e4 float32 products; float32 epsilon is 1.2e-7). Integer outputs (argmax) exactly.
"""
import numpy as np
import pytest

from edge_lls.kernels import activation as act
from edge_lls.kernels import conv, dense, norm, pool
from edge_lls.kernels.geometry import resolve_window
from edge_lls.kernels.ref import activation as ract
from edge_lls.kernels.ref import conv as rconv
from edge_lls.kernels.ref import dense as rdense
from edge_lls.kernels.ref import norm as rnorm
from edge_lls.kernels.ref import pool as rpool

TOL = dict(rtol=1e-4, atol=1e-5)

CONV_CASES = [
    # N, H, W, Cin, Cout, k, stride, padding, groups
    (2, 7, 9, 3, 5, 3, 1, "same", 1),
    (3, 8, 8, 4, 6, 3, 2, "same", 1),
    (2, 9, 7, 2, 4, 3, 2, "valid", 1),
    (1, 6, 6, 3, 2, (3, 2), (2, 1), (1, 0, 2, 1), 1),
    (2, 5, 5, 6, 6, 1, 1, 0, 1),          # pointwise fast path
    (2, 6, 6, 4, 6, 3, 1, 1, 2),          # grouped
    (2, 8, 8, 4, 4, 3, 1, "same", 4),     # depthwise
    (2, 9, 9, 3, 6, 3, 2, "same", 3),     # depthwise, multiplier 2, stride 2
    (1, 10, 10, 8, 8, 5, 2, 2, 8),        # depthwise 5x5
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_matches_reference(case, rng):
    N, H, W, cin, cout, k, stride, padding, groups = case
    win = resolve_window((H, W), k, stride, padding)
    x = rng.standard_normal((N, H, W, cin), dtype=np.float32)
    w = rng.standard_normal((cout, win.kh, win.kw, cin // groups), dtype=np.float32)
    b = rng.standard_normal(cout, dtype=np.float32)
    dy = rng.standard_normal((N, win.out_h, win.out_w, cout), dtype=np.float32)

    out = np.empty((N, win.out_h, win.out_w, cout), np.float32)
    conv.conv2d_f32(x, w, b, out, win, groups)
    np.testing.assert_allclose(out, rconv.conv2d(x, w, b, win, groups), **TOL)

    dw, db = np.empty_like(w), np.empty_like(b)
    conv.conv2d_grad_weight_f32(x, dy, dw, db, win, groups)
    ref_dw, ref_db = rconv.conv2d_grad_weight(x, dy, w.shape, win, groups)
    np.testing.assert_allclose(dw, ref_dw, **TOL)
    np.testing.assert_allclose(db, ref_db, **TOL)

    dx = np.empty_like(x)
    conv.conv2d_grad_input_f32(dy, w, dx, win, groups)
    np.testing.assert_allclose(dx, rconv.conv2d_grad_input(dy, w, x.shape, win, groups), **TOL)


def test_conv2d_small_tasks_match_reference(rng, monkeypatch):
    # Force many tiny tasks (8 rows, ending mid-image) to exercise their seams.
    monkeypatch.setattr(conv, "TASK_FLOATS", 7 * 27)
    N, H, W, cin, cout = 3, 5, 6, 3, 4
    win = resolve_window((H, W), 3, 1, "same")
    x = rng.standard_normal((N, H, W, cin), dtype=np.float32)
    w = rng.standard_normal((cout, 3, 3, cin), dtype=np.float32)
    dy = rng.standard_normal((N, H, W, cout), dtype=np.float32)
    out = np.empty((N, H, W, cout), np.float32)
    scratch = np.empty(conv.conv2d_scratch_floats(x.shape, w.shape, win, input_grad=True), np.float32)
    conv.conv2d_f32(x, w, None, out, win, scratch=scratch)
    np.testing.assert_allclose(out, rconv.conv2d(x, w, None, win), **TOL)
    dw = np.empty_like(w)
    conv.conv2d_grad_weight_f32(x, dy, dw, None, win, scratch=scratch)
    np.testing.assert_allclose(dw, rconv.conv2d_grad_weight(x, dy, w.shape, win)[0], **TOL)
    dx = np.empty_like(x)
    conv.conv2d_grad_input_f32(dy, w, dx, win, scratch=scratch)
    np.testing.assert_allclose(dx, rconv.conv2d_grad_input(dy, w, x.shape, win), **TOL)


def test_dense_matches_reference(rng):
    x = rng.standard_normal((5, 7), dtype=np.float32)
    w = rng.standard_normal((3, 7), dtype=np.float32)
    b = rng.standard_normal(3, dtype=np.float32)
    dy = rng.standard_normal((5, 3), dtype=np.float32)
    out = np.empty((5, 3), np.float32)
    np.testing.assert_allclose(dense.dense_f32(x, w, b, out), rdense.dense(x, w, b), **TOL)
    dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
    dense.dense_grad_weight_f32(x, dy, dw, db)
    dense.dense_grad_input_f32(dy, w, dx)
    for got, want in zip((dw, db, dx), rdense.dense_grad(x, dy, w)):
        np.testing.assert_allclose(got, want, **TOL)


@pytest.mark.parametrize("shape", [(4, 5, 6, 3), (16, 7)])
def test_batchnorm_matches_reference(shape, rng):
    C = shape[-1]
    x = rng.standard_normal(shape, dtype=np.float32) * 3 + 1
    gamma = rng.standard_normal(C, dtype=np.float32)
    beta = rng.standard_normal(C, dtype=np.float32)
    rm, rv = rng.standard_normal(C, dtype=np.float32), rng.random(C, dtype=np.float32) + 0.5
    ref_y, ref_mean, ref_inv, ref_rm, ref_rv = rnorm.batchnorm_train(x, gamma, beta, rm, rv)

    y = np.empty_like(x)
    mean, inv_std = np.empty(C, np.float32), np.empty(C, np.float32)
    run_m, run_v = rm.copy(), rv.copy()
    norm.batchnorm_train_f32(x, gamma, beta, run_m, run_v, mean, inv_std, y)
    for got, want in [(y, ref_y), (mean, ref_mean), (inv_std, ref_inv), (run_m, ref_rm), (run_v, ref_rv)]:
        np.testing.assert_allclose(got, want, **TOL)

    ye = np.empty_like(x)
    norm.batchnorm_eval_f32(x, gamma, beta, rm, rv, ye)
    np.testing.assert_allclose(ye, rnorm.batchnorm_eval(x, gamma, beta, rm, rv), **TOL)

    dy = rng.standard_normal(shape, dtype=np.float32)
    dg, dbeta, dx = np.empty(C, np.float32), np.empty(C, np.float32), np.empty_like(x)
    norm.batchnorm_grad_f32(dy, y, x, mean, inv_std, gamma, dg, dbeta, dx)
    ref_dx, ref_dg, ref_db = rnorm.batchnorm_grad(dy, x, gamma)
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dg, ref_dg, **TOL)
    np.testing.assert_allclose(dbeta, ref_db, **TOL)


def test_batchnorm_fused_leaky_equals_separate_ops(rng):
    x = rng.standard_normal((3, 4, 4, 5), dtype=np.float32)
    gamma, beta = np.ones(5, np.float32), np.zeros(5, np.float32)
    rm, rv = np.zeros(5, np.float32), np.ones(5, np.float32)
    y_ref = ract.leaky_relu(rnorm.batchnorm_train(x, gamma, beta, rm, rv)[0])
    y = np.empty_like(x)
    mean, inv_std = np.empty(5, np.float32), np.empty(5, np.float32)
    norm.batchnorm_train_f32(x, gamma, beta, rm.copy(), rv.copy(), mean, inv_std, y, act=act.ACT_LEAKY)
    np.testing.assert_allclose(y, y_ref, **TOL)
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    dx = np.empty_like(x)
    norm.batchnorm_grad_f32(dy, y, x, mean, inv_std, gamma, np.empty(5, np.float32), np.empty(5, np.float32),
                            dx, act=act.ACT_LEAKY)
    ref_dx = rnorm.batchnorm_grad(ract.leaky_relu_grad(dy, y), x, gamma)[0]
    np.testing.assert_allclose(dx, ref_dx, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["relu", "relu6", "leaky_relu"])
def test_activations_match_reference(name, rng):
    x = (rng.standard_normal((4, 3, 3, 5), dtype=np.float32) * 5)
    y = np.empty_like(x)
    getattr(act, f"{name}_f32")(x, y)
    np.testing.assert_array_equal(y, getattr(ract, name)(x))
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    dx = np.empty_like(x)
    getattr(act, f"{name}_grad_f32")(dy, y, dx)
    np.testing.assert_array_equal(dx, getattr(ract, f"{name}_grad")(dy, y))


@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, "same"), ((2, 3), (1, 2), (0, 1, 1, 0))])
def test_max_pool_matches_reference(k, s, p, rng):
    x = rng.standard_normal((2, 7, 8, 3), dtype=np.float32)
    win = resolve_window((7, 8), k, s, p)
    out = np.empty((2, win.out_h, win.out_w, 3), np.float32)
    arg = np.empty(out.shape, np.int32)
    pool.max_pool2d_f32(x, out, win, arg)
    ref_out, ref_arg = rpool.max_pool2d(x, win)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(arg, ref_arg)
    dy = rng.standard_normal(out.shape, dtype=np.float32)
    dx = np.empty_like(x)
    pool.max_pool2d_grad_f32(dy, arg, dx)
    np.testing.assert_allclose(dx, rpool.max_pool2d_grad(dy, ref_arg, x.shape), **TOL)


@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize("k,s,p", [(2, 2, 0), (3, 2, 1), (3, 1, "same")])
def test_avg_pool_matches_reference(k, s, p, include_pad, rng):
    x = rng.standard_normal((2, 7, 6, 3), dtype=np.float32)
    win = resolve_window((7, 6), k, s, p)
    out = np.empty((2, win.out_h, win.out_w, 3), np.float32)
    pool.avg_pool2d_f32(x, out, win, include_pad)
    np.testing.assert_allclose(out, rpool.avg_pool2d(x, win, include_pad), **TOL)
    dy = rng.standard_normal(out.shape, dtype=np.float32)
    dx = np.empty_like(x)
    pool.avg_pool2d_grad_f32(dy, dx, win, include_pad)
    np.testing.assert_allclose(dx, rpool.avg_pool2d_grad(dy, x.shape, win, include_pad), **TOL)


@pytest.mark.parametrize("H,W,p,q", [(7, 7, 2, 2), (28, 28, 4, 4), (5, 9, 3, 4), (3, 3, 1, 1), (4, 4, 4, 4)])
def test_adaptive_avg_pool_matches_reference(H, W, p, q, rng):
    x = rng.standard_normal((2, H, W, 3), dtype=np.float32)
    out = np.empty((2, p, q, 3), np.float32)
    pool.adaptive_avg_pool2d_f32(x, out)
    np.testing.assert_allclose(out, rpool.adaptive_avg_pool2d(x, p, q), **TOL)
    dy = rng.standard_normal(out.shape, dtype=np.float32)
    dx = np.empty_like(x)
    pool.adaptive_avg_pool2d_grad_f32(dy, dx)
    np.testing.assert_allclose(dx, rpool.adaptive_avg_pool2d_grad(dy, x.shape), **TOL)


def test_adaptive_avg_pool1d_matches_reference(rng):
    x = rng.standard_normal((3, 10), dtype=np.float32)
    out = np.empty((3, 4), np.float32)
    pool.adaptive_avg_pool1d_f32(x, out)
    want = rpool.adaptive_avg_pool2d(x.reshape(3, 1, 10, 1), 1, 4).reshape(3, 4)
    np.testing.assert_allclose(out, want, **TOL)


def test_kernels_are_deterministic_across_calls(rng):
    x = rng.standard_normal((8, 12, 12, 16), dtype=np.float32)
    w = rng.standard_normal((32, 3, 3, 16), dtype=np.float32)
    win = resolve_window((12, 12), 3, 1, "same")
    dy = rng.standard_normal((8, 12, 12, 32), dtype=np.float32)
    results = []
    for _ in range(2):
        dw = np.empty_like(w)
        conv.conv2d_grad_weight_f32(x, dy, dw, None, win)
        results.append(dw)
    np.testing.assert_array_equal(results[0], results[1])


@pytest.mark.parametrize("kernel_fn", [pool.max_pool2d_f32, pool.avg_pool2d_f32])
def test_pooling_rejects_padding_larger_than_half_the_window(kernel_fn):
    x = np.zeros((1, 4, 4, 1), np.float32)
    win = resolve_window((4, 4), 2, 2, (2, 2, 2, 2))
    with pytest.raises(ValueError, match="exceeds half"):
        kernel_fn(x, np.zeros((1, win.out_h, win.out_w, 1), np.float32), win)


def test_batchnorm_statistics_survive_a_large_mean(rng):
    # mean/std = 1e5: a naive float32 E[x^2] - E[x]^2 would return garbage or zero.
    x = (1000.0 + 0.01 * rng.standard_normal((4096, 4))).astype(np.float32)
    mean, inv_std, y = np.empty(4, np.float32), np.empty(4, np.float32), np.empty_like(x)
    ones, zeros = np.ones(4, np.float32), np.zeros(4, np.float32)
    norm.batchnorm_train_f32(x, ones, zeros, zeros.copy(), ones.copy(), mean, inv_std, y)
    _, ref_mean, ref_inv, _, _ = rnorm.batchnorm_train(x, ones, zeros, zeros, ones)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-7)
    np.testing.assert_allclose(inv_std, ref_inv, rtol=1e-4)


def test_row_norms_match_numpy_float64(rng):
    from edge_lls.kernels.reduce import row_norms
    x = rng.standard_normal((37, 300)).astype(np.float32) * np.logspace(-20, 15, 37, dtype=np.float32)[:, None]
    x[5] = 0.0
    out = np.empty(37, np.float32)
    row_norms(x, out)
    want = np.sqrt(np.einsum("nd,nd->n", x, x, dtype=np.float64))
    np.testing.assert_allclose(out, want.astype(np.float32), rtol=2e-7, atol=0)
    assert out[5] == 0.0

"""Every analytic gradient (float32 Numba kernels, Block.backward, BP end to end) equals
float64 central finite differences of an independent float64 forward written here.

Tolerance: rtol 1e-3, atol 1e-4 * max(1, max|fd|). The finite differences use eps 1e-6 on
float64 forwards (truncation ~eps^2, rounding ~1e-10), so the tolerance only has to absorb
the float32 arithmetic of the kernels (~1e-6 relative); a wrong index, window, padding or
chain-rule term gives errors of order 1.
"""
import numpy as np
import pytest

from edge_lls.kernels import activation as kact
from edge_lls.kernels import conv as kconv
from edge_lls.kernels import dense as kdense
from edge_lls.kernels import norm as knorm
from edge_lls.kernels import pool as kpool
from edge_lls.kernels.geometry import resolve_window
from edge_lls.nn.layers import AdaptiveAvgPool2d, AvgPool2d, Conv2d, Dense, MaxPool2d
from edge_lls.nn.model import Model
from edge_lls.optim import SGD
from edge_lls.rules import BP
from finite_diff import FD_EPS, fd_grad

f64, f32 = np.float64, np.float32
SLOPE = 0.01
BN_EPS = 1e-5


def check(analytic, fd, rtol=1e-3, atol=1e-4):
    fd = np.asarray(fd, f64)
    assert analytic.shape == fd.shape
    np.testing.assert_allclose(analytic, fd, rtol=rtol, atol=atol * max(1.0, float(np.abs(fd).max())))


# ----------------------------------------------------------------- float64 forwards
def conv64(x, w, b, pads, stride, groups):
    """Grouped 2-D convolution, NHWC x, OHWI w, explicit pads (top, bottom, left, right)."""
    pt, pb, pl, pr = pads
    sh, sw = stride
    xp = np.pad(np.asarray(x, f64), ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    n, hp, wp, _ = xp.shape
    cout, kh, kw, cg = w.shape
    oh, ow = (hp - kh) // sh + 1, (wp - kw) // sw + 1
    cog = cout // groups
    out = np.zeros((n, oh, ow, cout))
    for o in range(cout):
        g = o // cog                               # output channel o reads input group g
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw, g * cg:(g + 1) * cg]
                out[..., o] += patch @ np.asarray(w[o, i, j, :], f64)
    if b is not None:
        out += b
    return out


def act64(v, act):
    if act == "relu":
        return np.maximum(v, 0.0)
    if act == "relu6":
        return np.clip(v, 0.0, 6.0)
    if act == "leaky_relu":
        return np.where(v > 0, v, SLOPE * v)
    return v


def bn_pre64(x, gamma, beta):
    """Training-mode batch norm (biased batch variance) over all axes but the last."""
    x2 = np.asarray(x, f64).reshape(-1, x.shape[-1])
    mean = x2.mean(0)
    var = ((x2 - mean) ** 2).mean(0)
    return ((x2 - mean) / np.sqrt(var + BN_EPS) * gamma + beta).reshape(x.shape)


def bn_act64(x, gamma, beta, act):
    return act64(bn_pre64(x, gamma, beta), act)


def max_pool64(x, k, s, pads):
    pt, pb, pl, pr = pads
    xp = np.pad(np.asarray(x, f64), ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
    n, hp, wp, c = xp.shape
    oh, ow = (hp - k) // s + 1, (wp - k) // s + 1
    out = np.empty((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            out[:, i, j] = xp[:, i * s:i * s + k, j * s:j * s + k].max(axis=(1, 2))
    return out


def avg_pool64(x, k, s, pads, include_pad):
    pt, pb, pl, pr = pads
    x = np.asarray(x, f64)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    ones = np.pad(np.ones(x.shape[1:3]), ((pt, pb), (pl, pr)))
    n, hp, wp, c = xp.shape
    oh, ow = (hp - k) // s + 1, (wp - k) // s + 1
    out = np.empty((n, oh, ow, c))
    for i in range(oh):
        for j in range(ow):
            cnt = k * k if include_pad else ones[i * s:i * s + k, j * s:j * s + k].sum()
            out[:, i, j] = xp[:, i * s:i * s + k, j * s:j * s + k].sum(axis=(1, 2)) / cnt
    return out


def _window(i, size_in, size_out):
    # PyTorch's adaptive window: rows floor(i*H/p) .. ceil((i+1)*H/p) - 1
    return int(np.floor(i * size_in / size_out)), int(np.ceil((i + 1) * size_in / size_out))


def adaptive64(x, p, q):
    x = np.asarray(x, f64)
    n, h, w, c = x.shape
    out = np.empty((n, p, q, c))
    for i in range(p):
        h0, h1 = _window(i, h, p)
        for j in range(q):
            w0, w1 = _window(j, w, q)
            out[:, i, j] = x[:, h0:h1, w0:w1].mean(axis=(1, 2))
    return out


def pads_of(win):
    return win.pad_top, win.pad_bottom, win.pad_left, win.pad_right


# --------------------------------------------------------------------------- conv
CONV_CASES = [
    # N, H, W, Cin, Cout, kernel, stride, padding, groups
    (2, 5, 6, 3, 4, 3, 1, "same", 1),
    (2, 6, 6, 3, 4, 3, 2, "same", 1),              # TF same, stride 2: extra pad bottom/right
    (2, 7, 6, 2, 3, 3, 2, "valid", 1),
    (2, 6, 5, 3, 2, (3, 2), (2, 1), (1, 0, 2, 1), 1),  # explicit asymmetric padding
    (2, 4, 4, 3, 5, 1, 1, 0, 1),                   # pointwise (GEMM fast path)
    (2, 6, 6, 4, 6, 3, 1, 1, 2),                   # groups 2
    (2, 6, 6, 3, 3, 3, 1, "same", 3),              # depthwise
    (2, 7, 7, 2, 6, 3, 2, "same", 2),              # depthwise, multiplier 3, stride 2
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d_gradients_match_finite_differences(case, rng):
    n, h, w_, cin, cout, k, stride, padding, groups = case
    win = resolve_window((h, w_), k, stride, padding)
    pads, st = pads_of(win), (win.sh, win.sw)
    x = rng.standard_normal((n, h, w_, cin), dtype=f32)
    w = rng.standard_normal((cout, win.kh, win.kw, cin // groups), dtype=f32)
    b = rng.standard_normal(cout, dtype=f32)
    R = rng.standard_normal((n, win.out_h, win.out_w, cout))

    out = np.empty((n, win.out_h, win.out_w, cout), f32)
    kconv.conv2d_f32(x, w, b, out, win, groups)
    np.testing.assert_allclose(out, conv64(x, w, b, pads, st, groups), rtol=1e-5, atol=1e-5)

    dy = R.astype(f32)
    dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
    kconv.conv2d_grad_weight_f32(x, dy, dw, db, win, groups)
    kconv.conv2d_grad_input_f32(dy, w, dx, win, groups)
    check(dw, fd_grad(lambda t: (conv64(x, t, b, pads, st, groups) * R).sum(), w))
    check(db, fd_grad(lambda t: (conv64(x, w, t, pads, st, groups) * R).sum(), b))
    check(dx, fd_grad(lambda t: (conv64(t, w, b, pads, st, groups) * R).sum(), x))


def test_conv2d_chunked_gradients_match_finite_differences(rng, monkeypatch):
    # Tiny im2col slices (a seam inside an image) must not change the gradients.
    monkeypatch.setattr(kconv, "TASK_FLOATS", 5 * 18)
    win = resolve_window((5, 5), 3, 1, "same")
    x = rng.standard_normal((2, 5, 5, 2), dtype=f32)
    w = rng.standard_normal((3, 3, 3, 2), dtype=f32)
    b = rng.standard_normal(3, dtype=f32)
    R = rng.standard_normal((2, 5, 5, 3))
    dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
    kconv.conv2d_grad_weight_f32(x, R.astype(f32), dw, db, win)
    kconv.conv2d_grad_input_f32(R.astype(f32), w, dx, win)
    pads = pads_of(win)
    check(dw, fd_grad(lambda t: (conv64(x, t, b, pads, (1, 1), 1) * R).sum(), w))
    check(dx, fd_grad(lambda t: (conv64(t, w, b, pads, (1, 1), 1) * R).sum(), x))


# -------------------------------------------------------------------------- dense
def test_dense_gradients_match_finite_differences(rng):
    x = rng.standard_normal((3, 5), dtype=f32)
    w = rng.standard_normal((4, 5), dtype=f32)
    b = rng.standard_normal(4, dtype=f32)
    R = rng.standard_normal((3, 4))

    def loss(x_, w_, b_):
        return ((np.asarray(x_, f64) @ np.asarray(w_, f64).T + b_) * R).sum()

    dw, db, dx = np.empty_like(w), np.empty_like(b), np.empty_like(x)
    kdense.dense_grad_weight_f32(x, R.astype(f32), dw, db)
    kdense.dense_grad_input_f32(R.astype(f32), w, dx)
    check(dw, fd_grad(lambda t: loss(x, t, b), w))
    check(db, fd_grad(lambda t: loss(x, w, t), b))
    check(dx, fd_grad(lambda t: loss(t, w, b), x))


# --------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("act", ["none", "relu", "relu6", "leaky_relu"])
@pytest.mark.parametrize("shape", [(3, 3, 4, 3), (6, 4)])
def test_batchnorm_gradients_match_finite_differences(act, shape, rng):
    c = shape[-1]
    x = rng.standard_normal(shape, dtype=f32)
    gamma = (rng.uniform(0.5, 1.5, c) * (4.0 if act == "relu6" else 1.0)).astype(f32)  # relu6: reach 6
    beta = rng.uniform(-0.5, 1.5, c).astype(f32)
    R = rng.standard_normal(shape)
    pre = bn_pre64(x, gamma, beta)
    # The kinks are not crossed by an eps perturbation (the gradient is defined there).
    kinks = {"relu": [0.0], "leaky_relu": [0.0], "relu6": [0.0, 6.0]}.get(act, [])
    for kink in kinks:
        assert np.abs(pre - kink).min() > 1e-3
    if act == "relu6":
        assert (pre > 6).any() and (pre < 0).any()

    code = kact.ACTIVATIONS[act]
    y = np.empty_like(x)
    mean, inv_std = np.empty(c, f32), np.empty(c, f32)
    knorm.batchnorm_train_f32(x, gamma, beta, np.zeros(c, f32), np.ones(c, f32), mean, inv_std, y,
                              act=code)
    np.testing.assert_allclose(y, act64(pre, act), rtol=1e-5, atol=1e-5)
    dgamma, dbeta, dx = np.empty(c, f32), np.empty(c, f32), np.empty_like(x)
    knorm.batchnorm_grad_f32(R.astype(f32), y, x, mean, inv_std, gamma, dgamma, dbeta, dx, act=code)

    check(dgamma, fd_grad(lambda t: (bn_act64(x, t, beta, act) * R).sum(), gamma))
    check(dbeta, fd_grad(lambda t: (bn_act64(x, gamma, t, act) * R).sum(), beta))
    check(dx, fd_grad(lambda t: (bn_act64(t, gamma, beta, act) * R).sum(), x))

    # dx may alias dy (Block.backward does that): same result.
    g = R.astype(f32)
    knorm.batchnorm_grad_f32(g, y, x, mean, inv_std, gamma, np.empty(c, f32), np.empty(c, f32), g, act=code)
    np.testing.assert_allclose(g, dx, rtol=1e-6, atol=1e-7)


# -------------------------------------------------------------------- activations
@pytest.mark.parametrize("act", ["relu", "relu6", "leaky_relu"])
def test_activation_gradients_match_finite_differences(act, rng):
    x = (rng.standard_normal((4, 3, 5)) * 5).astype(f32)
    x[np.abs(x) < 1e-2] = 0.5                          # away from the kinks
    x[np.abs(x - 6) < 1e-2] = 5.5
    R = rng.standard_normal(x.shape)
    code = kact.ACTIVATIONS[act]
    y = np.empty_like(x)
    kact.activation_f32(x, y, code)
    np.testing.assert_allclose(y, act64(x, act), rtol=1e-6, atol=0)
    dx = np.empty_like(x)
    kact.activation_grad_f32(R.astype(f32), y, dx, code)
    # the objective sum(act(x) * R) is separable: elementwise central differences are exact
    fd = (act64(x.astype(f64) + FD_EPS, act) - act64(x.astype(f64) - FD_EPS, act)) / (2 * FD_EPS) * R
    check(dx, fd)
    inplace = R.astype(f32)
    kact.activation_grad_f32(inplace, y, inplace, code)
    np.testing.assert_array_equal(inplace, dx)


# -------------------------------------------------------------------------- pools
@pytest.mark.parametrize("k,s,padding", [(2, 2, 0), (3, 2, 1), (3, 1, (0, 1, 1, 0))])
def test_max_pool_gradient_matches_finite_differences(k, s, padding, rng):
    n, h, w, c = 2, 6, 5, 3
    # distinct values 0.1 apart: no ties, and an eps perturbation never changes a window's max
    x = (rng.permutation(n * h * w * c).reshape(n, h, w, c) * 0.1).astype(f32)
    win = resolve_window((h, w), k, s, padding)
    pads = pads_of(win)
    R = rng.standard_normal((n, win.out_h, win.out_w, c))
    out = np.empty((n, win.out_h, win.out_w, c), f32)
    arg = np.empty(out.shape, np.int32)
    kpool.max_pool2d_f32(x, out, win, arg)
    np.testing.assert_array_equal(out, max_pool64(x, k, s, pads).astype(f32))
    dx = np.empty_like(x)
    kpool.max_pool2d_grad_f32(R.astype(f32), arg, dx)
    check(dx, fd_grad(lambda t: (max_pool64(t, k, s, pads) * R).sum(), x))


@pytest.mark.parametrize("include_pad", [False, True])
@pytest.mark.parametrize("k,s,padding", [(3, 2, 1), (2, 1, (1, 0, 0, 1)), (2, 2, 0)])
def test_avg_pool_gradient_matches_finite_differences(k, s, padding, include_pad, rng):
    n, h, w, c = 2, 5, 6, 2
    x = rng.standard_normal((n, h, w, c), dtype=f32)
    win = resolve_window((h, w), k, s, padding)
    pads = pads_of(win)
    R = rng.standard_normal((n, win.out_h, win.out_w, c))
    out = np.empty((n, win.out_h, win.out_w, c), f32)
    kpool.avg_pool2d_f32(x, out, win, include_pad)
    np.testing.assert_allclose(out, avg_pool64(x, k, s, pads, include_pad), rtol=1e-5, atol=1e-6)
    dx = np.empty_like(x)
    kpool.avg_pool2d_grad_f32(R.astype(f32), dx, win, include_pad)
    check(dx, fd_grad(lambda t: (avg_pool64(t, k, s, pads, include_pad) * R).sum(), x))


@pytest.mark.parametrize("h,w,p,q", [(7, 5, 3, 2), (4, 4, 2, 2), (5, 3, 1, 1), (3, 3, 2, 2), (2, 3, 4, 5)])
def test_adaptive_avg_pool2d_gradient_matches_finite_differences(h, w, p, q, rng):
    x = rng.standard_normal((2, h, w, 3), dtype=f32)
    R = rng.standard_normal((2, p, q, 3))
    out = np.empty((2, p, q, 3), f32)
    kpool.adaptive_avg_pool2d_f32(x, out)
    np.testing.assert_allclose(out, adaptive64(x, p, q), rtol=1e-5, atol=1e-6)
    dx = np.empty_like(x)
    kpool.adaptive_avg_pool2d_grad_f32(R.astype(f32), dx)
    check(dx, fd_grad(lambda t: (adaptive64(t, p, q) * R).sum(), x))


@pytest.mark.parametrize("f,p", [(10, 4), (7, 3), (6, 6), (3, 5)])
def test_adaptive_avg_pool1d_gradient_matches_finite_differences(f, p, rng):
    x = rng.standard_normal((3, f), dtype=f32)
    R = rng.standard_normal((3, p))

    def pool1d(t):
        return adaptive64(np.asarray(t).reshape(3, 1, f, 1), 1, p).reshape(3, p)

    out = np.empty((3, p), f32)
    kpool.adaptive_avg_pool1d_f32(x, out)
    np.testing.assert_allclose(out, pool1d(x), rtol=1e-5, atol=1e-6)
    dx = np.empty_like(x)
    kpool.adaptive_avg_pool1d_grad_f32(R.astype(f32), dx)
    check(dx, fd_grad(lambda t: (pool1d(t) * R).sum(), x))


# ------------------------------------------------------------------------- blocks
def op64(op, x, values):
    """Float64 forward of a Conv2d / Dense with parameter values from `values` (name -> array)."""
    if isinstance(op, Conv2d):
        win = op.window(x.shape)
        b = values[op.b.name] if op.b is not None else None
        return conv64(x, values[op.w.name], b, pads_of(win), (win.sh, win.sw), op.groups)
    assert isinstance(op, Dense)
    x2 = np.asarray(x, f64).reshape(x.shape[0], -1)
    out = x2 @ values[op.w.name].T
    return out + values[op.b.name] if op.b is not None else out


def post64(p, x):
    if isinstance(p, MaxPool2d):
        return max_pool64(x, p.kernel, p.stride, pads_of(p.window(x.shape)))
    if isinstance(p, AvgPool2d):
        return avg_pool64(x, p.kernel, p.stride, pads_of(p.window(x.shape)), p.count_include_pad)
    assert isinstance(p, AdaptiveAvgPool2d)
    return adaptive64(x, *p.size)


def block64(block, x, values):
    """Returns (a, h) of a block in training mode, float64."""
    a = np.asarray(x, f64)
    for u in block.units:
        a = bn_act64(op64(u.op, a, values), values[u.bn.gamma.name], values[u.bn.beta.name], u.bn.act_name)
    h = a
    for p in block.post:
        h = post64(p, h)
    return a, h


def param_values(params):
    return {p.name: p.value.astype(f64) for p in params}


def randomize_bn(model, rng):
    for bn in model.batch_norms():
        bn.gamma.value[...] = rng.uniform(0.5, 1.5, bn.channels)
        bn.beta.value[...] = rng.uniform(-0.3, 0.3, bn.channels)


def fd_params(params, loss_of_values):
    """{param name: finite-difference gradient} of loss_of_values(values dict)."""
    base = param_values(params)
    out = {}
    for p in params:
        def f(t, name=p.name):
            return loss_of_values({**base, name: t})
        out[p.name] = fd_grad(f, base[p.name])
    return out


BLOCK_SPECS = {
    "conv_s1": {"type": "conv", "filters": 4, "kernel": 3, "stride": 1, "padding": 1, "bias": True,
                "act": "leaky_relu", "pool_size": 2, "post": [{"type": "maxpool", "kernel": 2, "stride": 2}]},
    "conv_s2_same": {"type": "conv", "filters": 4, "kernel": 3, "stride": 2, "padding": "same",
                     "bias": True, "act": "relu6", "pool_size": 2},
    "dwsep": {"type": "dwsep", "filters": 5, "kernel": 3, "stride": 2, "padding": "same", "bias": True,
              "act": "leaky_relu", "pool_size": 2},
    "dwsep_nobias_s1": {"type": "dwsep", "filters": 4, "kernel": 3, "stride": 1, "padding": "same",
                        "act": "leaky_relu", "pool_size": 1},
    "dense": {"type": "dense", "units": 5, "bias": True, "act": "leaky_relu", "pool_size": 5},
}


@pytest.mark.parametrize("kind", list(BLOCK_SPECS))
def test_block_backward_matches_finite_differences(kind, rng):
    spec = {"name": "t", "input_shape": [6, 6, 3], "num_classes": 3, "blocks": [BLOCK_SPECS[kind]]}
    model = Model(spec, seed=3)
    randomize_bn(model, rng)
    block = model.blocks[0]
    n = 3
    x = rng.standard_normal((n, 6, 6, 3), dtype=f32)
    arena = model.arena(n, "local", None)
    V = arena.views[0]
    a, _ = block.forward(x, V, training=True)
    a64, _ = block64(block, x, param_values(block.params))
    np.testing.assert_allclose(a, a64, rtol=1e-4, atol=1e-5)      # FD below is of this function

    R = rng.standard_normal(a.shape)
    V[f"g{len(block.units) - 1}"][...] = R
    for p in block.params:
        p.grad[...] = np.nan                                       # every grad must be written
    block.backward(x, V)
    fd = fd_params(block.params, lambda vals: (block64(block, x, vals)[0] * R).sum())
    for p in block.params:
        check(p.grad, fd[p.name])


def model64_loss(model, x, labels, values):
    h = np.asarray(x, f64)
    for block in model.blocks:
        _, h = block64(block, h, values)
    logits = op64(model.classifier, h, values)
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return -logp[np.arange(len(labels)), labels].mean()


def test_bp_train_step_gradients_match_finite_differences(rng):
    spec = {"name": "t", "input_shape": [6, 6, 2], "num_classes": 3, "blocks": [
        {"type": "conv", "filters": 3, "kernel": 3, "stride": 1, "padding": 1, "bias": True,
         "act": "leaky_relu", "pool_size": 2, "post": [{"type": "maxpool", "kernel": 2, "stride": 2}]},
        {"type": "dwsep", "filters": 4, "kernel": 3, "stride": 1, "padding": "same", "act": "leaky_relu",
         "pool_size": 2, "post": [{"type": "adaptive_avgpool", "size": [2, 2]}]},   # 3x3 -> 2x2: overlapping
        {"type": "dense", "units": 5, "bias": True, "act": "leaky_relu", "pool_size": 5},
    ], "classifier": {"bias": True}}
    model = Model(spec, seed=5)
    randomize_bn(model, rng)
    n = 4
    x = rng.standard_normal((n, 6, 6, 2), dtype=f32)
    labels = np.array([0, 2, 1, 2])
    rule = BP()
    rule.attach(model, rng)
    groups = [b.params for b in model.blocks] + [model.classifier.params]
    optimizers = [SGD(g, lr=0.0) for g in groups]      # lr 0: weights stay, .grad keeps the gradient
    before = param_values(model.params)
    arena = model.arena(n, "backprop", None)
    stats = rule.train_step(model, arena, x, labels, optimizers)
    for p in model.params:
        np.testing.assert_array_equal(p.value, before[p.name].astype(f32))

    assert stats.loss == pytest.approx(model64_loss(model, x, labels, before), rel=1e-5)
    fd = fd_params(model.params, lambda vals: model64_loss(model, x, labels, vals))
    for p in model.params:
        check(p.grad, fd[p.name])

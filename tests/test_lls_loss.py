"""The LLS local loss (lls_loss, ProjectionHead: LLS, LLS-M, LLS-MxM, reduced LLS-MxM,
LLS-Random, LocalLosses) equals an independent float64 computation written here from
docs/LLS.md (NCHW pooling with PyTorch windows, channel-major flattening, float64 basis).

Tolerances: loss rtol 1e-5 (float32 runtime vs float64); gradients vs float64 central
differences (eps 1e-6) rtol 1e-3, atol 1e-4 * max|grad|; gradients vs the analytic float64
gradient written here rtol 1e-4, atol 1e-5 * max|grad|; the basis exactly (float64 rounded).
"""
import math

import numpy as np
import pytest

from edge_lls.nn.model import Model
from edge_lls.optim import SGD
from edge_lls.rules import LLS, LLSMxM, LocalLosses
from edge_lls.rules.basis import lls_basis
from edge_lls.rules.heads import ProjectionHead
from edge_lls.rules.lls import lls_loss
from finite_diff import fd_grad

f64, f32 = np.float64, np.float32


def check(got, want, rtol=1e-3, atol=1e-4):
    want = np.asarray(want, f64)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * float(np.abs(want).max()))


# ------------------------------------------------- the independent float64 LLS loss
def basis64(rows, d, waveform):
    """B[k, t] = sin(f_k t), f_k = 50 + k (512 - 50) / (rows - 1), float64 rounded to float32."""
    f = 50.0 + np.arange(rows, dtype=f64) * (512.0 - 50.0) / (rows - 1)
    b = np.sin(f[:, None] * np.arange(d, dtype=f64)[None, :]).astype(f32).astype(f64)
    return np.sign(b) if waveform == "square" else b


def windows(size_in, size_out):
    """PyTorch adaptive windows: cell i covers floor(i*H/p) .. ceil((i+1)*H/p) - 1."""
    return [(math.floor(i * size_in / size_out), math.ceil((i + 1) * size_in / size_out))
            for i in range(size_out)]


def pool_cm(y, p):
    """(N,H,W,C) -> NCHW -> adaptive pool (N,C,p,p) -> flatten (c,i,j);  (N,F) -> (N,p)."""
    y = np.asarray(y, f64)
    if y.ndim == 2:
        return np.stack([y[:, a:b].mean(axis=1) for a, b in windows(y.shape[1], p)], axis=1)
    x = y.transpose(0, 3, 1, 2)
    n, c, h, w = x.shape
    v = np.empty((n, c, p, p))
    for i, (h0, h1) in enumerate(windows(h, p)):
        for j, (w0, w1) in enumerate(windows(w, p)):
            v[:, :, i, j] = x[:, :, h0:h1, w0:w1].mean(axis=(2, 3))
    return v.reshape(n, -1)


def pool_cm_adjoint(dv, shape, p):
    """Transpose of pool_cm: dL/dv (N, D) -> dL/dy in y's (NHWC or (N,F)) layout."""
    if len(shape) == 2:
        dy = np.zeros(shape)
        for i, (a, b) in enumerate(windows(shape[1], p)):
            dy[:, a:b] += dv[:, i:i + 1] / (b - a)
        return dy
    n, h, w, c = shape
    dx = np.zeros((n, c, h, w))
    dv = dv.reshape(n, c, p, p)
    for i, (h0, h1) in enumerate(windows(h, p)):
        for j, (w0, w1) in enumerate(windows(w, p)):
            dx[:, :, h0:h1, w0:w1] += dv[:, :, i:i + 1, j:j + 1] / ((h1 - h0) * (w1 - w0))
    return dx.transpose(0, 2, 3, 1)


def ce64(logits, labels, temperature, smoothing):
    """Mean CE(logits / T) with PyTorch label smoothing; returns (loss, dL/dlogits)."""
    n, k = logits.shape
    z = logits / temperature
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    target = np.full((n, k), smoothing / k)
    target[np.arange(n), labels] += 1.0 - smoothing
    return -(target * logp).sum() / n, (np.exp(logp) - target) / (n * temperature)


def head64(y, labels, basis, p, *, normalize, temperature=0.5, smoothing=0.0, mod=None, kind=None):
    """Returns (loss, dL/dy, dL/dmod, dL/dbasis) of the head on y, all float64."""
    v = pool_cm(y, p)
    if normalize:
        nrm = np.sqrt((v * v).sum(axis=1))
        den = np.maximum(nrm, 1e-12)
        z = v / den[:, None]
    else:
        z = v
    s = z @ basis.T
    logits = s * mod if kind == "m" else (s @ mod if kind == "mxm" else s)
    loss, dl = ce64(logits, labels, temperature, smoothing)
    dmod = None
    if kind == "m":
        dmod, ds = (s * dl).sum(axis=0), dl * mod
    elif kind == "mxm":
        dmod, ds = s.T @ dl, dl @ mod.T
    else:
        ds = dl
    dbasis = ds.T @ z
    dz = ds @ basis
    if normalize:   # d(v / max(|v|, eps)) = (I - z z^T) / |v| above the clamp, I / eps below it
        radial = np.where(nrm > 1e-12, (z * dz).sum(axis=1), 0.0)
        dv = (dz - z * radial[:, None]) / den[:, None]
    else:
        dv = dz
    return loss, pool_cm_adjoint(dv, np.shape(y), p), dmod, dbasis


def lls64(y, labels, *, num_classes, pool, waveform, temperature=0.5, smoothing=0.0, mod=None, kind=None):
    d = pool_cm(np.zeros((1, *np.shape(y)[1:])), pool).shape[1]
    rows = mod.shape[0] if kind == "mxm" else num_classes
    return head64(y, labels, basis64(rows, d, waveform), pool, normalize=True, temperature=temperature,
                  smoothing=smoothing, mod=mod, kind=kind)


# ----------------------------------------------------------------------- the basis
def test_basis_equals_hand_computed_values():
    # K=3: f = 50, 281, 512 rad; B[k, t] = sin(f_k t), t = 0..3
    want = np.array([
        [0.0, -0.262374854, -0.506365641, -0.714876430],    # sin(50), sin(100), sin(150)
        [0.0, -0.985151436, 0.338276660, 0.868995590],      # sin(281), sin(562), sin(843)
        [0.0, 0.079518494, -0.158533380, 0.236544240],      # sin(512), sin(1024), sin(1536)
    ])
    got = lls_basis(3, 4, "cosine")
    assert got.dtype == f32 and got.shape == (3, 4)
    np.testing.assert_allclose(got, want, rtol=0, atol=6e-8)       # half a float32 ulp at 1
    np.testing.assert_array_equal(lls_basis(3, 4, "square"), np.sign(want).astype(f32))


def test_basis_is_the_float64_definition_not_float32():
    got = lls_basis(10, 4096, "cosine")
    # Equal up to one float32 ulp: k*(462/9) and k*462/9 differ in the last float64 bit, which
    # can flip the float32 rounding of a few entries; the spec does not fix that order.
    np.testing.assert_allclose(got, basis64(10, 4096, "cosine"), rtol=0, atol=1.2e-7)
    np.testing.assert_array_equal(lls_basis(10, 4096, "square"), basis64(10, 4096, "square"))
    # the float32 computation (the reference code's) drifts in phase at large t: tell them apart
    f = (50 + np.arange(10, dtype=f32) * f32(462 / 9)).astype(f32)
    in_f32 = np.sin(f[:, None] * np.arange(4096, dtype=f32)[None, :])
    assert np.abs(got - in_f32).max() > 1e-2


# --------------------------------------------------------------------- lls_loss
LLS_CASES = [
    # y shape, pool, K, waveform, kind, R (rows of M), temperature, label smoothing
    ((3, 4, 4, 2), 2, 5, "square", None, None, 0.5, 0.0),
    ((3, 7, 7, 3), 2, 4, "cosine", None, None, 0.5, 0.0),        # p does not divide H: overlap
    ((2, 5, 6, 2), 3, 6, "square", "m", None, 0.5, 0.0),         # H=5, p=3 overlap; W=6 exact
    ((3, 7, 5, 3), 3, 4, "cosine", "mxm", 4, 1.0, 0.0),
    ((4, 6, 5, 4), 2, 10, "square", "mxm", 3, 0.5, 0.0),         # reduced LLS-MxM, R=3 < K=10
    ((3, 3, 3, 2), 1, 4, "square", None, None, 0.5, 0.1),        # p=1, label smoothing
    ((4, 12), 12, 5, "square", None, None, 0.5, 0.0),            # dense, pool == F
    ((4, 12), 12, 5, "cosine", "m", None, 0.5, 0.0),
    ((3, 10), 4, 3, "square", "mxm", 2, 0.7, 0.0),               # dense, pool < F, reduced MxM
]


@pytest.mark.parametrize("case", LLS_CASES)
def test_lls_loss_matches_independent_float64(case, rng):
    shape, p, k, waveform, kind, r, temperature, smoothing = case
    y = rng.standard_normal(shape).astype(f32)
    labels = rng.integers(0, k, shape[0])
    mod = None
    if kind == "m":
        mod = rng.standard_normal(k).astype(f32)
    elif kind == "mxm":
        mod = rng.standard_normal((r, k)).astype(f32)
    kw = dict(num_classes=k, pool=p, waveform=waveform, temperature=temperature)

    loss, dy = lls_loss(y, labels, modulation=mod, modulation_kind=kind, label_smoothing=smoothing, **kw)
    assert dy.shape == y.shape and dy.dtype == f32
    want, dy64, _, _ = lls64(y, labels, smoothing=smoothing, mod=mod, kind=kind, **kw)
    assert loss == pytest.approx(want, rel=1e-5)
    check(dy, dy64, rtol=1e-4, atol=1e-5)
    fd = fd_grad(lambda t: lls64(t, labels, smoothing=smoothing, mod=mod, kind=kind, **kw)[0], y)
    check(dy, fd)


def test_lls_loss_depends_on_channel_major_order(rng):
    # The same values flattened NHWC instead of channel-major give a different loss: the
    # test above would catch a runtime that ignored the ordering.
    y = rng.standard_normal((3, 4, 4, 3)).astype(f32)
    labels = np.array([0, 1, 2])
    loss, _ = lls_loss(y, labels, num_classes=3, pool=2, waveform="cosine", temperature=0.5)
    v_nhwc = pool_cm(y, 2).reshape(3, 3, 2, 2).transpose(0, 2, 3, 1).reshape(3, -1)
    z = v_nhwc / np.linalg.norm(v_nhwc, axis=1, keepdims=True)
    wrong, _ = ce64(z @ basis64(3, 12, "cosine").T, labels, 0.5, 0.0)
    assert abs(loss - wrong) > 1e-3


def test_lls_loss_all_zero_output_is_finite():
    y = np.zeros((2, 4, 4, 3), f32)
    labels = np.array([1, 3])
    loss, dy = lls_loss(y, labels, num_classes=4, pool=2, waveform="square", temperature=0.5)
    assert np.isfinite(loss) and loss == pytest.approx(math.log(4), rel=1e-6)   # all logits 0
    assert np.isfinite(dy).all()
    _, dy64, _, _ = lls64(y, labels, num_classes=4, pool=2, waveform="square")  # F.normalize: dz / eps
    check(dy, dy64, rtol=1e-4, atol=1e-6)


def test_lls_loss_zero_sample_in_a_batch(rng):
    y = rng.standard_normal((3, 5, 5, 2)).astype(f32)
    y[0] = 0.0
    labels = np.array([0, 1, 2])
    kw = dict(num_classes=3, pool=2, waveform="cosine")
    loss, dy = lls_loss(y, labels, temperature=0.5, **kw)
    want, dy64, _, _ = lls64(y, labels, **kw)
    assert np.isfinite(loss) and loss == pytest.approx(want, rel=1e-5)
    assert np.isfinite(dy).all()
    check(dy, dy64, rtol=1e-4, atol=1e-6)

    def loss_of_sample1(t):
        yy = y.astype(f64)
        yy[1] = t
        return lls64(yy, labels, **kw)[0]

    check(dy[1], fd_grad(loss_of_sample1, y[1]))


# ---------------------------------------------------------------- head parameters
@pytest.mark.parametrize("kind,rows", [("m", None), ("mxm", None), ("mxm", 3)])
def test_lls_head_modulation_gradient(kind, rows, rng):
    k, a_shape, p = 5, (5, 6, 3), 2
    head = ProjectionHead("h", a_shape, p, k, basis_kind="lls", waveform="square", modulation_kind=kind,
                          reduced_rows=rows, temperature=0.5)
    r = rows or k
    mod = rng.standard_normal(k if kind == "m" else (r, k)).astype(f32)
    head.modulation.value[...] = mod
    a = rng.standard_normal((4, *a_shape)).astype(f32)
    labels = rng.integers(0, k, 4)
    views = {b.name: np.empty(b.shape, b.dtype) for b in head.buffers(4)}
    da = np.empty_like(a)
    loss = head(a, labels, views, da)

    kw = dict(num_classes=k, pool=p, waveform="square", kind=kind)
    want, da64, dmod64, _ = lls64(a, labels, mod=mod.astype(f64), **kw)
    assert loss == pytest.approx(want, rel=1e-5)
    check(da, da64, rtol=1e-4, atol=1e-5)
    check(head.modulation.grad, dmod64, rtol=1e-4, atol=1e-5)
    check(head.modulation.grad, fd_grad(lambda t: lls64(a, labels, mod=t, **kw)[0], mod))


HEAD_CASES = [
    # a_shape, pool, K, hidden_dim, modulation
    ((5, 5, 3), 2, 4, 17, None),       # D = 12 pooled from 17 columns (uneven windows)
    ((4, 4, 2), 2, 3, None, None),     # hidden = D: no column pooling
    ((8,), 8, 4, 11, None),            # dense
    ((6, 5, 2), 3, 4, 30, "m"),
]


@pytest.mark.parametrize("basis_kind", ["random", "learned"])
@pytest.mark.parametrize("case", HEAD_CASES)
def test_random_and_learned_heads_match_independent(basis_kind, case, rng):
    a_shape, p, k, hidden, kind = case
    seed = 11
    head = ProjectionHead("h", a_shape, p, k, basis_kind=basis_kind, hidden_dim=hidden, modulation_kind=kind,
                          temperature=0.5, rng=np.random.default_rng(seed))
    d = pool_cm(np.zeros((1, *a_shape)), p).shape[1]
    # spec: B = 0.1 * randn (K x hidden), drawn first from the head's generator
    full = (0.1 * np.random.default_rng(seed).standard_normal((k, hidden or d))).astype(f32)
    if basis_kind == "learned":
        np.testing.assert_array_equal(head.learned.value, full)
    mod = None
    if kind == "m":
        mod = rng.standard_normal(k).astype(f32)
        head.modulation.value[...] = mod

    def basis_of(full_):   # adaptive average pool along columns, hidden -> D
        return pool_cm(np.asarray(full_, f64), d)

    n = 4
    a = rng.standard_normal((n, *a_shape)).astype(f32)
    labels = rng.integers(0, k, n)
    views = {b.name: np.empty(b.shape, b.dtype) for b in head.buffers(n)}
    da = np.empty_like(a)
    loss = head(a, labels, views, da)

    def ref(a_=a, full_=full, mod_=mod):
        return head64(a_, labels, basis_of(full_), p, normalize=False, mod=mod_, kind=kind)

    want, da64, dmod64, dbasis64 = ref()
    assert loss == pytest.approx(want, rel=1e-5)
    check(da, da64, rtol=1e-4, atol=1e-5)
    check(da, fd_grad(lambda t: ref(a_=t)[0], a))
    if basis_kind == "learned":
        fd = fd_grad(lambda t: ref(full_=t)[0], full)
        check(head.learned.grad, fd)
        # the analytic chain through the column pooling, too
        check(head.learned.grad, pool_cm_adjoint(dbasis64, full.shape, d), rtol=1e-4, atol=1e-5)
    if kind == "m":
        check(head.modulation.grad, fd_grad(lambda t: ref(mod_=t)[0], mod))


def test_learned_basis_update_changes_the_next_loss(rng):
    # LocalLosses trains B: after the optimizer moves the learned matrix, the head must use it.
    head = ProjectionHead("h", (4, 4, 2), 2, 3, basis_kind="learned", hidden_dim=10, temperature=0.5)
    a = rng.standard_normal((3, 4, 4, 2)).astype(f32)
    labels = np.array([0, 1, 2])
    views = {b.name: np.empty(b.shape, b.dtype) for b in head.buffers(3)}
    da = np.empty_like(a)
    l0 = head(a, labels, views, da)
    head.learned.value -= 1.0 * head.learned.grad
    l1 = head(a, labels, views, da)
    want = head64(a, labels, pool_cm(head.learned.value.astype(f64), 8), 2, normalize=False)[0]
    assert l1 == pytest.approx(want, rel=1e-5)
    assert l1 < l0


# ---------------------------------------------------- the rule's step, end to end
def conv64(x, w, b, pad):
    xp = np.pad(np.asarray(x, f64), ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    n, hp, wp, _ = xp.shape
    cout, kh, kw, _ = w.shape
    out = np.zeros((n, hp - kh + 1, wp - kw + 1, cout))
    for i in range(kh):
        for j in range(kw):
            out += xp[:, i:i + out.shape[1], j:j + out.shape[2]] @ np.asarray(w[:, i, j, :], f64).T
    return out + b


def bn_leaky64(x, gamma, beta):
    x2 = x.reshape(-1, x.shape[-1])
    y = (x2 - x2.mean(0)) / np.sqrt(x2.var(0) + 1e-5) * gamma + beta
    return np.where(y > 0, y, 0.01 * y).reshape(x.shape)


@pytest.mark.parametrize("rule_cls", [LLS, LLSMxM, LocalLosses])
def test_local_rule_step_gradients_match_finite_differences(rule_cls, rng):
    spec = {"name": "t", "input_shape": [5, 5, 2], "num_classes": 3, "blocks": [
        {"type": "conv", "filters": 3, "kernel": 3, "stride": 1, "padding": 1, "bias": True,
         "act": "leaky_relu", "pool_size": 2, "post": [{"type": "maxpool", "kernel": 2, "stride": 2}]},
        {"type": "dense", "units": 4, "bias": True, "act": "leaky_relu", "pool_size": 4},
    ], "classifier": {"bias": True}}
    model = Model(spec, seed=2)
    for bn in model.batch_norms():
        bn.gamma.value[...] = rng.uniform(0.5, 1.5, bn.channels)
        bn.beta.value[...] = rng.uniform(-0.3, 0.3, bn.channels)
    rule = rule_cls(waveform="square", temperature=0.5)
    rule.attach(model, np.random.default_rng(4))
    groups = [b.params + rule.block_params(i) for i, b in enumerate(model.blocks)] + [model.classifier.params]
    opts = [SGD(g, lr=0.0) for g in groups]             # lr 0: .grad keeps the step's gradient
    n = 4
    x = rng.standard_normal((n, 5, 5, 2)).astype(f32)
    labels = np.array([0, 1, 2, 1])
    arena = rule.arena(model, n)
    stats = rule.train_step(model, arena, x, labels, opts)

    conv, bn = model.blocks[0].units[0].op, model.blocks[0].units[0].bn
    head = rule.heads[0]
    params = groups[0]
    base = {p.name: p.value.astype(f64) for p in params}

    def block0_loss(vals):
        a = bn_leaky64(conv64(x, vals[conv.w.name], vals[conv.b.name], 1), vals[bn.gamma.name], vals[bn.beta.name])
        if rule_cls is LocalLosses:
            basis = pool_cm(vals[head.learned.name], 12)
            return head64(a, labels, basis, 2, normalize=False)[0]
        mod = vals[head.modulation.name] if head.modulation is not None else None
        return head64(a, labels, basis64(3, 12, "square"), 2, normalize=True, mod=mod,
                      kind=rule.modulation_kind)[0]

    assert stats.block_losses[0] == pytest.approx(block0_loss(base), rel=1e-5)
    fd = {p.name: fd_grad(lambda t, name=p.name: block0_loss({**base, name: t}), base[p.name]) for p in params}
    scale = max(float(np.abs(g).max()) for g in fd.values())   # the conv bias grad is 0 (BN follows)
    for p in params:
        np.testing.assert_allclose(p.grad, fd[p.name], rtol=1e-3, atol=1e-4 * scale)


@pytest.mark.parametrize("f,dim", [(512, 512), (512, 128), (100, 7), (7, 100), (9, 4)])
def test_pool_columns_is_adaptive_average_pooling_and_its_grad_is_the_adjoint(f, dim):
    from edge_lls.rules.basis import pool_columns, pool_columns_grad
    rng = np.random.default_rng(f * 1000 + dim)
    m = rng.standard_normal((6, f))
    want = np.stack([m[:, (i * f) // dim:-((-(i + 1) * f) // dim)].mean(axis=1) for i in range(dim)], axis=1)
    np.testing.assert_allclose(pool_columns(m.astype(np.float32), dim), want, rtol=1e-6, atol=1e-6)
    # A linear map's gradient is its adjoint: <P m, d> == <m, P^T d>.
    d = rng.standard_normal((6, dim))
    lhs = (pool_columns(m.astype(np.float32), dim).astype(np.float64) * d).sum()
    rhs = (m * pool_columns_grad(d.astype(np.float32), f).astype(np.float64)).sum()
    assert abs(lhs - rhs) <= 1e-5 * max(1.0, abs(lhs))

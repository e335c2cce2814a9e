"""SGD (momentum, dampening, Nesterov, weight decay), AdamW and schedule-free AdamW equal
independent float64 implementations of the published algorithms, step by step; eval()/train()
and checkpoint state round-trip.

Tolerances: parameters rtol 1e-5 (atol 1e-7) against float64, and the total displacement
from the start (the sum of the updates, ~lr per step) rtol 1e-4 plus 4 float32 ulps of the
parameter (each float32 store rounds by half an ulp). Resumed optimizers: bit for bit.
"""
import math

import numpy as np
import pytest

from edge_lls.nn.param import Param
from edge_lls.optim import SGD, AdamW, AdamWScheduleFree, make_optimizer

f64, f32 = np.float64, np.float32
SHAPES = [(3, 4), (5,), (2, 3, 1, 2)]
STEPS = 7


def make_params(rng):
    return [Param(f"p{i}", rng.standard_normal(s).astype(f32)) for i, s in enumerate(SHAPES)]


def grad_stream(seed, steps):
    r = np.random.default_rng(seed)
    return [[r.standard_normal(s).astype(f32) * r.uniform(0.1, 3.0) for s in SHAPES] for _ in range(steps)]


def run(opt, params, grads):
    for gs in grads:
        for p, g in zip(params, gs):
            p.grad[...] = g
        opt.step()


def assert_matches(params, start, ref):
    for p, p0, r in zip(params, start, ref):
        np.testing.assert_allclose(p.value, r, rtol=1e-5, atol=1e-7)
        # the updates themselves: each float32 store of p rounds by half an ulp of p
        err = np.abs((p.value.astype(f64) - p0) - (r - p0))
        allowed = 1e-4 * np.abs(r - p0) + 4 * np.spacing(np.abs(p.value))
        assert (err <= allowed).all(), f"update mismatch {err.max():.3g}"


# ------------------------------------------------------------------ float64 references
class SGD64:
    """torch.optim.SGD: d = g + wd p; b = d (first step) or mu b + (1 - tau) d;
    d = d + mu b (Nesterov) or b; p -= lr d."""

    def __init__(self, ps, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
        self.p = [np.array(p, f64) for p in ps]
        self.lr, self.mu, self.tau, self.wd, self.nesterov = lr, momentum, dampening, weight_decay, nesterov
        self.b = [None] * len(ps)

    def step(self, grads):
        for i, g in enumerate(grads):
            d = g.astype(f64) + self.wd * self.p[i]
            if self.mu != 0:
                self.b[i] = d.copy() if self.b[i] is None else self.mu * self.b[i] + (1 - self.tau) * d
                d = d + self.mu * self.b[i] if self.nesterov else self.b[i]
            self.p[i] = self.p[i] - self.lr * d


class AdamW64:
    """torch.optim.AdamW: p *= 1 - lr wd; m, v moments; p -= lr/bc1 * m / (sqrt(v)/sqrt(bc2) + eps)."""

    def __init__(self, ps, lr, betas, eps, weight_decay):
        self.p = [np.array(p, f64) for p in ps]
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, betas[0], betas[1], eps, weight_decay
        self.m = [np.zeros_like(p) for p in self.p]
        self.v = [np.zeros_like(p) for p in self.p]
        self.t = 0

    def step(self, grads):
        self.t += 1
        bc1, bc2 = 1 - self.b1 ** self.t, 1 - self.b2 ** self.t
        for i, g in enumerate(grads):
            g = g.astype(f64)
            self.p[i] *= 1 - self.lr * self.wd
            self.m[i] = self.b1 * self.m[i] + (1 - self.b1) * g
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
            self.p[i] -= self.lr / bc1 * self.m[i] / (np.sqrt(self.v[i]) / math.sqrt(bc2) + self.eps)


class AdamWSF64:
    """Schedule-free AdamW (reference code, no warmup, r = 0, weight_lr_power 2), step k from 0:
    lr_k = lr sqrt(1 - b2^(k+1)); lr_max = max(lr_max, lr_k); weight = lr_max^2;
    weight_sum += weight; c = weight / weight_sum; v = b2 v + (1 - b2) g^2;
    d = g / (sqrt(v) + eps) + wd y; y = y + c (z - y); y += lr_k (b1 (1 - c) - 1) d; z -= lr_k d.
    x (evaluation weights) = y + (1 - 1/b1)(z - y)."""

    def __init__(self, ps, lr, betas, eps, weight_decay):
        self.y = [np.array(p, f64) for p in ps]
        self.z = [y.copy() for y in self.y]
        self.v = [np.zeros_like(y) for y in self.y]
        self.lr, self.b1, self.b2, self.eps, self.wd = lr, betas[0], betas[1], eps, weight_decay
        self.k, self.lr_max, self.weight_sum = 0, -1.0, 0.0

    def step(self, grads):
        lr_k = self.lr * math.sqrt(1 - self.b2 ** (self.k + 1))
        self.lr_max = max(self.lr_max, lr_k)
        weight = self.lr_max ** 2
        self.weight_sum += weight
        c = weight / self.weight_sum
        for i, g in enumerate(grads):
            g = g.astype(f64)
            self.v[i] = self.b2 * self.v[i] + (1 - self.b2) * g * g
            d = g / (np.sqrt(self.v[i]) + self.eps) + self.wd * self.y[i]
            self.y[i] = self.y[i] + c * (self.z[i] - self.y[i])
            self.y[i] = self.y[i] + lr_k * (self.b1 * (1 - c) - 1) * d
            self.z[i] = self.z[i] - lr_k * d
        self.k += 1

    def x(self):
        return [y + (1 - 1 / self.b1) * (z - y) for y, z in zip(self.y, self.z)]


# -------------------------------------------------------------------------------- SGD
SGD_CASES = [
    dict(lr=0.1),
    dict(lr=0.05, weight_decay=0.1),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3, weight_decay=0.01),
    dict(lr=0.05, momentum=0.8, nesterov=True),
    dict(lr=0.02, momentum=0.9, nesterov=True, weight_decay=0.05),
]


@pytest.mark.parametrize("cfg", SGD_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_sgd_matches_float64_reference(cfg, rng):
    params = make_params(rng)
    start = [p.value.astype(f64) for p in params]
    ref = SGD64(start, **cfg)
    opt = SGD(params, **cfg)
    for gs in grad_stream(1, STEPS):
        run(opt, params, [gs])
        ref.step(gs)
        assert_matches(params, start, ref.p)


def test_sgd_nesterov_requires_momentum_and_no_dampening(rng):
    with pytest.raises(Exception):
        SGD(make_params(rng), lr=0.1, nesterov=True)
    with pytest.raises(Exception):
        SGD(make_params(rng), lr=0.1, momentum=0.9, dampening=0.1, nesterov=True)


# ------------------------------------------------------------------------------ AdamW
ADAMW_CASES = [
    dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
    dict(lr=5e-2, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.0),
    dict(lr=3e-2, betas=(0.5, 0.9), eps=1e-3, weight_decay=0.3),
]


@pytest.mark.parametrize("cfg", ADAMW_CASES)
def test_adamw_matches_float64_reference(cfg, rng):
    params = make_params(rng)
    start = [p.value.astype(f64) for p in params]
    ref = AdamW64(start, **cfg)
    opt = AdamW(params, **cfg)
    for gs in grad_stream(2, STEPS):
        run(opt, params, [gs])
        ref.step(gs)
        assert_matches(params, start, ref.p)


def test_adamw_defaults_are_torch_defaults(rng):
    opt = AdamW(make_params(rng))
    assert (opt.lr, opt.betas, opt.eps, opt.weight_decay) == (1e-3, (0.9, 0.999), 1e-8, 1e-2)


# --------------------------------------------------------------- schedule-free AdamW
SF_CASES = [
    dict(lr=5e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0),      # the authors' setting
    dict(lr=2e-2, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.05),
    dict(lr=1e-1, betas=(0.7, 0.9), eps=1e-4, weight_decay=0.0),
]


@pytest.mark.parametrize("cfg", SF_CASES)
def test_schedule_free_adamw_matches_float64_reference(cfg, rng):
    params = make_params(rng)
    start = [p.value.astype(f64) for p in params]
    ref = AdamWSF64(start, **cfg)
    opt = AdamWScheduleFree(params, **cfg)
    for gs in grad_stream(3, STEPS):
        run(opt, params, [gs])
        ref.step(gs)
        assert_matches(params, start, ref.y)
        for z, rz in zip(opt.z, ref.z):
            np.testing.assert_allclose(z, rz, rtol=1e-5, atol=1e-7)
    assert opt.weight_sum == pytest.approx(ref.weight_sum, rel=1e-12)
    assert opt.lr_max == pytest.approx(ref.lr_max, rel=1e-12)

    # eval(): the parameters become the averaged x; train(): back to y (float32 rounding)
    y_before = [p.value.copy() for p in params]
    opt.eval()
    assert_matches(params, start, ref.x())
    assert not all(np.array_equal(p.value, y) for p, y in zip(params, y_before))
    opt.eval()                                       # idempotent: a second eval() is a no-op
    assert_matches(params, start, ref.x())
    opt.train()
    for p, y in zip(params, y_before):
        np.testing.assert_allclose(p.value, y, rtol=1e-6, atol=1e-7)
    opt.train()
    for p, y in zip(params, y_before):
        np.testing.assert_allclose(p.value, y, rtol=1e-6, atol=1e-7)


def test_schedule_free_step_in_eval_mode_raises(rng):
    params = make_params(rng)
    opt = AdamWScheduleFree(params, lr=1e-2)
    run(opt, params, grad_stream(4, 2))
    opt.eval()
    before = [p.value.copy() for p in params]
    with pytest.raises(RuntimeError):
        opt.step()
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.value, b)
    opt.train()
    run(opt, params, grad_stream(5, 1))               # and steps again once back in train mode


def test_schedule_free_eval_before_any_step_keeps_weights(rng):
    params = make_params(rng)
    before = [p.value.copy() for p in params]
    opt = AdamWScheduleFree(params, lr=1e-2)
    opt.eval()
    for p, b in zip(params, before):
        np.testing.assert_array_equal(p.value, b)     # z == y at start: x == y
    opt.train()


# ------------------------------------------------------------------- state round trip
OPT_CASES = [
    ("sgd", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=0.01)),
    ("sgd", dict(lr=0.05, momentum=0.9, nesterov=True)),
    ("sgd", dict(lr=0.05)),
    ("adamw", dict(lr=1e-2, weight_decay=0.1)),
    ("adamw-sf", dict(lr=1e-2, weight_decay=0.01)),
]


def _snapshot(opt):
    arrays = {k: v.copy() for k, v in opt.state_arrays().items()}
    return arrays, dict(opt.state_scalars())


@pytest.mark.parametrize("kind,cfg", OPT_CASES)
def test_state_round_trip_resumes_bit_for_bit(kind, cfg, rng):
    cfg = dict(cfg)
    lr, wd = cfg.pop("lr"), cfg.pop("weight_decay", 0.0)
    grads = grad_stream(6, 8)
    params = make_params(rng)
    opt = make_optimizer(kind, params, lr, wd, **cfg)
    run(opt, params, grads[:4])
    arrays, scalars = _snapshot(opt)
    saved_values = [p.value.copy() for p in params]
    if kind != "sgd" or cfg.get("momentum"):
        assert arrays, "an optimizer with state must expose it"

    # a fresh optimizer on fresh parameters, restored from the snapshot
    params2 = [Param(p.name, v) for p, v in zip(params, saved_values)]
    opt2 = make_optimizer(kind, params2, lr, wd, **cfg)
    opt2.load_state(arrays, scalars)
    assert opt2.state_scalars() == scalars
    run(opt, params, grads[4:])
    run(opt2, params2, grads[4:])
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(p.value, q.value)
    for (k, a), (k2, b) in zip(opt.state_arrays().items(), opt2.state_arrays().items()):
        assert k == k2
        np.testing.assert_array_equal(a, b)
    # and the resumed run is not trivially equal to a run that forgot the state
    params3 = [Param(p.name, v) for p, v in zip(params, saved_values)]
    opt3 = make_optimizer(kind, params3, lr, wd, **cfg)
    run(opt3, params3, grads[4:])
    if arrays or kind != "sgd":
        assert not all(np.array_equal(p.value, q.value) for p, q in zip(params, params3))


def test_schedule_free_state_saved_in_eval_mode(rng):
    # A checkpoint taken while evaluating (parameters hold x) resumes identically after train().
    params = make_params(rng)
    opt = AdamWScheduleFree(params, lr=1e-2, weight_decay=0.01)
    grads = grad_stream(7, 6)
    run(opt, params, grads[:3])
    opt.eval()
    arrays, scalars = _snapshot(opt)
    params2 = [Param(p.name, p.value.copy()) for p in params]
    opt2 = AdamWScheduleFree(params2, lr=1e-2, weight_decay=0.01)
    opt2.load_state(arrays, scalars)
    for o in (opt, opt2):
        o.train()
    run(opt, params, grads[3:])
    run(opt2, params2, grads[3:])
    for p, q in zip(params, params2):
        np.testing.assert_array_equal(p.value, q.value)

"""float16 activation storage in the conv and dense kernels (mixed-precision training).

The invariant (kernels/half.py): with float16 activations a kernel computes exactly what
its float32 build computes on the same values widened, and rounds its activation outputs
to float16 (nearest even) as it stores them. So every check here is bit-exact:
    conv(x16) == conv(x16 as float32).astype(float16)
    grad_weight(x16, dy) == grad_weight(x16 as float32, dy)
"""
import numpy as np
import pytest

from edge_lls.kernels import conv as kconv
from edge_lls.kernels.geometry import resolve_window
from edge_lls.kernels import half as half_mod
from edge_lls.kernels.half import bits
from edge_lls.nn.layers import BatchNorm, Dense

F16, F32 = np.float16, np.float32

# (N, H, Cin, Cout, kernel, stride, padding, groups): 3x3, a stem on 3 channels (short
# channel runs), pointwise (whose float32 build multiplies x's rows in place), depthwise
# with a channel multiplier and stride, grouped.
CONVS = [
    (4, 8, 16, 32, 3, 1, 1, 1),
    (4, 8, 3, 8, 3, 1, 1, 1),
    (4, 8, 16, 24, 1, 1, 0, 1),
    (3, 9, 8, 16, 3, 2, "same", 8),
    (4, 9, 16, 32, 3, 1, 1, 2),
]


IMPLEMENTATIONS = [("integer", half_mod._half_to_f32_soft, half_mod._f32_to_half_soft)]
if half_mod.NATIVE_HALF:
    IMPLEMENTATIONS.append(("native", half_mod._half_to_f32_native, half_mod._f32_to_half_native))


@pytest.mark.parametrize("name,to_f32,to_half", IMPLEMENTATIONS, ids=[i[0] for i in IMPLEMENTATIONS])
def test_half_conversions_match_numpy_for_every_bit_pattern(name, to_f32, to_half):
    import numba

    @numba.njit
    def widen(h, out):
        for i in range(h.size):
            out[i] = to_f32(h[i])

    @numba.njit
    def narrow(x, out):
        for i in range(x.size):
            out[i] = to_half(x[i])

    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16)
    wide = np.empty(every.size, F32)
    widen(every, wide)
    want = every.view(F16).astype(F32)
    assert np.array_equal(wide, want, equal_nan=True)
    # Rounding: random values over the whole range, exact halves (ties go to even),
    # the overflow threshold (65520 rounds to inf), subnormals, signed zeros, infinities.
    halves = every[:0x7C00].view(F16).astype(np.float64)
    ties = ((halves[:-1] + halves[1:]) / 2).astype(F32)
    rng = np.random.default_rng(0)
    x = np.concatenate([ties, -ties, want[np.isfinite(want)],
                        np.array([65504, 65519.996, 65520, -7e4, 1e-8, 1e-45, 2.0 ** -25, 1.5 * 2.0 ** -24,
                                  0.0, -0.0, np.inf, -np.inf], F32),
                        *(rng.standard_normal(10000).astype(F32) * s for s in (1e-7, 1e-3, 1, 1e3, 1e5))])
    out = np.empty(x.size, np.uint16)
    narrow(x, out)
    with np.errstate(over="ignore"):
        assert np.array_equal(out, x.astype(F16).view(np.uint16))
    nan = np.empty(2, np.uint16)
    narrow(np.array([np.nan, -np.nan], F32), nan)
    assert np.isnan(nan.view(F16)).all()


_GENERIC_TARGET = """
import numpy as np
from edge_lls.kernels import conv, half
from edge_lls.kernels.geometry import resolve_window
assert not half.NATIVE_HALF
rng = np.random.default_rng(0)
x16 = rng.standard_normal((2, 6, 6, 8)).astype(np.float16)
w = rng.standard_normal((16, 3, 3, 8)).astype(np.float32)
win = resolve_window((6, 6), 3, 1, 1)
want = np.empty((2, 6, 6, 16), np.float32)
conv.conv2d_f32(x16.astype(np.float32), w, None, want, win)
got = np.empty((2, 6, 6, 16), np.float16)
conv.conv2d_f32(x16, w, None, got, win)
assert np.array_equal(got, want.astype(np.float16))
print("ok")
"""


def test_a_target_without_half_instructions_uses_the_integer_conversions(tmp_path):
    # With NUMBA_CPU_NAME=generic (portable caches) x86-64 has no F16C: LLVM's half
    # conversions would call __extendhfsf2, which Numba's JIT cannot resolve, and the
    # process would abort. The kernels then use the integer conversions.
    import os
    import subprocess
    import sys
    env = {**os.environ, "NUMBA_CPU_NAME": "generic", "NUMBA_CACHE_DIR": str(tmp_path)}
    run = subprocess.run([sys.executable, "-c", _GENERIC_TARGET], env=env, capture_output=True, text=True)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def _case(spec, rng):
    n, h, cin, cout, k, stride, pad, groups = spec
    x16 = rng.standard_normal((n, h, h, cin)).astype(F16)
    w = (0.2 * rng.standard_normal((cout, k, k, cin // groups))).astype(F32)
    b = rng.standard_normal(cout).astype(F32)
    win = resolve_window((h, h), k, stride, pad)
    return x16, w, b, win, groups


@pytest.mark.fixed_order       # widened copies vs rows in place: other GEMM calls (tests/test_fixed_order.py)
@pytest.mark.parametrize("spec", CONVS)
def test_conv_forward_with_half_storage_is_the_float32_result_rounded(spec, rng):
    x16, w, b, win, groups = _case(spec, rng)
    shape = (len(x16), win.out_h, win.out_w, w.shape[0])
    want = np.empty(shape, F32)
    kconv.conv2d_f32(x16.astype(F32), w, b, want, win, groups)
    half_in = np.empty(shape, F32)                    # float16 in, float32 out
    kconv.conv2d_f32(x16, w, b, half_in, win, groups)
    np.testing.assert_array_equal(half_in, want)
    half_out = np.empty(shape, F16)                   # float16 in and out
    kconv.conv2d_f32(x16, w, b, half_out, win, groups)
    np.testing.assert_array_equal(half_out, want.astype(F16))
    f32_in = np.empty(shape, F16)                     # float32 in (a data batch), float16 out
    kconv.conv2d_f32(x16.astype(F32), w, b, f32_in, win, groups)
    np.testing.assert_array_equal(f32_in, want.astype(F16))


def _many_tasks(spec, rng, monkeypatch):
    """A half-storage conv split into many small tasks and tiles (arena-sized scratch), and
    the float32 one-call result on the same values: (got float16, want float32, case)."""
    monkeypatch.setattr(kconv, "TASK_FLOATS", 7 * 27)
    x16, w, b, win, groups = case = _case(spec, rng)
    shape = (len(x16), win.out_h, win.out_w, w.shape[0])
    scratch = np.empty(kconv.conv2d_scratch_floats(x16.shape, w.shape, win, groups, half=True), F32)
    want = np.empty(shape, F32)
    kconv.conv2d_f32(x16.astype(F32), w, b, want, win, groups)
    got = np.empty(shape, F16)
    kconv.conv2d_f32(x16, w, b, got, win, groups, scratch)
    return got, want, case


@pytest.mark.fixed_order       # widened copies vs rows in place: other GEMM calls (tests/test_fixed_order.py)
@pytest.mark.parametrize("spec", CONVS)
def test_conv_forward_in_many_tasks_with_arena_sized_scratch(spec, rng, monkeypatch):
    got, want, _ = _many_tasks(spec, rng, monkeypatch)
    np.testing.assert_array_equal(got, want.astype(F16))


@pytest.mark.parametrize("spec", CONVS)
def test_conv_forward_in_many_tasks_is_within_the_float32_summation_bound(spec, rng, monkeypatch):
    # With the machine's BLAS, splitting the GEMM into other tasks may change the order in
    # which each output's K = kh*kw*cin/groups products (+ bias) are summed. Two float32
    # orders of the same sum differ by at most 2 gamma_K sum|x w| (Higham, gamma_K =
    # K u / (1 - K u), u = 2^-24); rounding to half then adds at most one half ulp. The
    # sum of magnitudes is itself computed in float32: 1 % covers its own rounding.
    got, want, (x16, w, b, win, groups) = _many_tasks(spec, rng, monkeypatch)
    magnitude = np.empty(want.shape, F32)
    kconv.conv2d_f32(np.abs(x16.astype(F32)), np.abs(w), np.abs(b), magnitude, win, groups)
    k = w.shape[1] * w.shape[2] * w.shape[3] + 1
    gamma = k * 2.0 ** -24 / (1 - k * 2.0 ** -24)
    half_ulp = np.spacing(np.abs(want).astype(F16)).astype(np.float64)
    error = np.abs(got.astype(np.float64) - want)
    assert np.all(error <= 2 * gamma * magnitude * 1.01 + half_ulp)


@pytest.mark.fixed_order       # widened copies vs rows in place: other GEMM calls (tests/test_fixed_order.py)
@pytest.mark.parametrize("spec", CONVS)
def test_conv_weight_gradient_from_half_input_equals_float32(spec, rng):
    x16, w, _, win, groups = _case(spec, rng)
    dy = rng.standard_normal((len(x16), win.out_h, win.out_w, w.shape[0])).astype(F32)
    grads = []
    for x in (x16.astype(F32), x16):
        dw, db = np.empty_like(w), np.empty(w.shape[0], F32)
        kconv.conv2d_grad_weight_f32(x, dy, dw, db, win, groups)
        grads.append((dw, db))
    np.testing.assert_array_equal(grads[1][0], grads[0][0])
    np.testing.assert_array_equal(grads[1][1], grads[0][1])


@pytest.mark.fixed_order       # widened copies vs rows in place: other GEMM calls (tests/test_fixed_order.py)
@pytest.mark.parametrize("kernel,want_gprev", [(3, False), (1, False), (1, True)])
def test_pooled_bn_backward_from_half_storage_equals_float32(kernel, want_gprev, rng):
    n, h, cin, cout = 4, 8, 8, 12
    x16 = rng.standard_normal((n, h, h, cin)).astype(F16)
    z16 = rng.standard_normal((n, h, h, cout)).astype(F16)
    w = (0.2 * rng.standard_normal((cout, kernel, kernel, cin))).astype(F32)
    win = resolve_window((h, h), kernel, 1, kernel // 2)
    dv_area = rng.standard_normal((n, 2, 2, cout)).astype(F32) / 16
    gamma = rng.uniform(0.5, 1.5, cout).astype(F32)
    results = []
    for x, z in ((x16.astype(F32), z16.astype(F32)), (x16, z16)):
        bn = BatchNorm("bn", cout, "leaky_relu")
        bn.gamma.value[:] = gamma
        bn.stats(z)
        cols, dzn = kconv.pooled_bn_scratch(x.shape, w.shape, win, half=x.dtype == F16)
        dw, db = np.empty_like(w), np.empty(cout, F32)
        gprev = np.empty((n, h, h, cin), F32) if want_gprev else None
        kconv.conv2d_bn_grad_weight_pooled_f32(x, w, dv_area, z, bn, dw, db, win, np.empty(cols, F32),
                                               np.empty(dzn, F32), np.zeros((8, cout)), gprev)
        results.append([dw, db, bn.gamma.grad.copy(), bn.beta.grad.copy()] + ([gprev] if want_gprev else []))
    for got, want in zip(results[1], results[0]):
        np.testing.assert_array_equal(got, want)


def test_half_pointwise_scratch_is_counted():
    # A float32 pointwise conv needs no columns; a float16 one widens its rows into them.
    win = resolve_window((8, 8), 1, 1, 0)
    assert kconv.conv2d_scratch_floats((4, 8, 8, 16), (24, 1, 1, 16), win, half=True) > \
        kconv.conv2d_scratch_floats((4, 8, 8, 16), (24, 1, 1, 16), win)


def test_dense_with_half_storage_is_the_float32_result_rounded(rng):
    layer = Dense("fc", 24, 10, rng=rng)
    x16 = rng.standard_normal((6, 2, 2, 6)).astype(F16)
    scratch = np.empty(layer.scratch_floats((6, 2, 2, 6), half=True), F32)
    want = np.empty((6, 10), F32)
    layer.forward(x16.astype(F32), want)
    got = np.empty((6, 10), F16)
    layer.forward(x16, got, scratch)
    np.testing.assert_array_equal(got, want.astype(F16))
    dy = rng.standard_normal((6, 10)).astype(F32)
    layer.grad_weight(x16.astype(F32), dy)
    want_dw = layer.w.grad.copy()
    layer.grad_weight(x16, dy, scratch)
    np.testing.assert_array_equal(layer.w.grad, want_dw)


def test_bits_passes_float32_through_and_views_float16():
    a32, a16 = np.zeros(3, F32), np.zeros(3, F16)
    assert bits(a32) is a32
    assert bits(a16).dtype == np.uint16 and np.shares_memory(bits(a16), a16)

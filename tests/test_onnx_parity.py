"""Forward parity of the fp32 kernels (and whole models in eval mode) with onnxruntime on
graphs built here with onnx.helper (NCHW / OIHW in ONNX; our tensors transposed to match).

Tolerance: rtol 1e-5, atol 1e-6 * max(1, max|reference|). Both sides compute in float32 but
sum in different orders: a dot product of K terms differs by ~K^0.5 * 6e-8 * |terms|, well
under 1e-6 of the output scale for K <= 300; a wrong tap, pad or channel order errs by O(1).
Whole models (SmallConv, MobileNetV1 in eval mode) meet the same tolerance (observed < 4e-6).
"""
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_lls.kernels import activation as kact
from edge_lls.kernels import conv as kconv
from edge_lls.kernels import dense as kdense
from edge_lls.kernels import norm as knorm
from edge_lls.kernels import pool as kpool
from edge_lls.kernels.geometry import resolve_window
from edge_lls.models import model_spec
from edge_lls.nn.layers import AdaptiveAvgPool2d, AvgPool2d, Conv2d, Dense, MaxPool2d
from edge_lls.nn.model import Model

f32 = np.float32
OPSET = 17


def assert_close(got, want, rtol=1e-5, atol=1e-6):
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol * max(1.0, float(np.abs(want).max())))


def run_onnx(nodes, inputs, initializers, output_name="y", out_rank=None):
    """Run a one-output graph. inputs: {name: array}; initializers: {name: array}."""
    out_rank = out_rank or next(iter(inputs.values())).ndim
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(k, TensorProto.FLOAT, v.shape) for k, v in inputs.items()],
        [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, [None] * out_rank)],
        [numpy_helper.from_array(np.ascontiguousarray(v), k) for k, v in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL   # the ops as written
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return sess.run([output_name], inputs)[0]


def nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def nhwc(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1))


def onnx_pads(win):
    return [win.pad_top, win.pad_left, win.pad_bottom, win.pad_right]


# --------------------------------------------------------------------------- conv
CONV_CASES = [
    # N, H, W, Cin, Cout, kernel, stride, padding, groups
    (2, 9, 8, 3, 5, 3, 2, "same", 1),            # TF same on even width: asymmetric pads
    (2, 8, 8, 4, 6, 3, 2, 1, 1),                 # symmetric pads, stride 2
    (1, 9, 7, 3, 4, (3, 2), (2, 1), (1, 0, 2, 1), 1),  # explicit asymmetric pads
    (2, 7, 7, 3, 4, 3, 1, "valid", 1),
    (2, 5, 5, 6, 8, 1, 1, 0, 1),                 # pointwise
    (2, 8, 8, 4, 6, 3, 2, "same", 2),            # groups 2
    (2, 8, 8, 4, 4, 3, 1, "same", 4),            # depthwise
    (2, 10, 10, 3, 6, 3, 2, "same", 3),          # depthwise, multiplier 2, stride 2
    (1, 11, 11, 8, 8, 5, 2, 2, 8),               # depthwise 5x5
]


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_matches_onnxruntime(case, rng):
    n, h, w_, cin, cout, k, stride, padding, groups = case
    win = resolve_window((h, w_), k, stride, padding)
    x = rng.standard_normal((n, h, w_, cin), dtype=f32)
    w = rng.standard_normal((cout, win.kh, win.kw, cin // groups), dtype=f32)
    b = rng.standard_normal(cout, dtype=f32)
    out = np.empty((n, win.out_h, win.out_w, cout), f32)
    kconv.conv2d_f32(x, w, b, out, win, groups)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[win.kh, win.kw],
                            strides=[win.sh, win.sw], pads=onnx_pads(win), group=groups)
    want = run_onnx([node], {"x": nchw(x)}, {"w": w.transpose(0, 3, 1, 2), "b": b})
    assert_close(out, nhwc(want))


# --------------------------------------------------------------------- batch norm
@pytest.mark.parametrize("act", ["none", "relu", "relu6", "leaky_relu"])
def test_batchnorm_eval_matches_onnxruntime(act, rng):
    n, h, w, c = 2, 5, 4, 6
    x = (rng.standard_normal((n, h, w, c)) * 3).astype(f32)
    gamma = rng.uniform(0.5, 3.0, c).astype(f32)
    beta = rng.uniform(-1, 1, c).astype(f32)
    mean = rng.standard_normal(c).astype(f32)
    var = rng.uniform(0.05, 2.0, c).astype(f32)
    y = np.empty_like(x)
    knorm.batchnorm_eval_f32(x, gamma, beta, mean, var, y, eps=1e-5, act=kact.ACTIVATIONS[act])
    nodes = [helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"],
                              ["y" if act == "none" else "t"], epsilon=1e-5)]
    extra = {}
    if act == "relu":
        nodes.append(helper.make_node("Relu", ["t"], ["y"]))
    elif act == "leaky_relu":
        nodes.append(helper.make_node("LeakyRelu", ["t"], ["y"], alpha=0.01))
    elif act == "relu6":
        nodes.append(helper.make_node("Clip", ["t", "lo", "hi"], ["y"]))
        extra = {"lo": np.array(0.0, f32), "hi": np.array(6.0, f32)}
    want = run_onnx(nodes, {"x": nchw(x)}, {"g": gamma, "b": beta, "m": mean, "v": var, **extra})
    assert_close(y, nhwc(want))
    if act == "relu6":
        assert (y == 6.0).any() and (y == 0.0).any()


def test_batchnorm_eval_on_dense_features_matches_onnxruntime(rng):
    x = rng.standard_normal((4, 7)).astype(f32)
    gamma, beta = rng.uniform(0.5, 2, 7).astype(f32), rng.standard_normal(7).astype(f32)
    mean, var = rng.standard_normal(7).astype(f32), rng.uniform(0.1, 2, 7).astype(f32)
    y = np.empty_like(x)
    knorm.batchnorm_eval_f32(x, gamma, beta, mean, var, y, eps=1e-3)
    node = helper.make_node("BatchNormalization", ["x", "g", "b", "m", "v"], ["y"], epsilon=1e-3)
    assert_close(y, run_onnx([node], {"x": x}, {"g": gamma, "b": beta, "m": mean, "v": var}))


# -------------------------------------------------------------------------- pools
@pytest.mark.parametrize("k,s,padding", [(2, 2, 0), (3, 2, 1), (3, 2, "same"), (2, 1, (0, 1, 1, 0))])
def test_max_pool_matches_onnxruntime(k, s, padding, rng):
    x = rng.standard_normal((2, 7, 8, 3), dtype=f32)
    win = resolve_window((7, 8), k, s, padding)
    out = np.empty((2, win.out_h, win.out_w, 3), f32)
    kpool.max_pool2d_f32(x, out, win)
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[k, k], strides=[s, s], pads=onnx_pads(win))
    np.testing.assert_array_equal(out, nhwc(run_onnx([node], {"x": nchw(x)}, {})))   # a max is exact


@pytest.mark.parametrize("include_pad", [0, 1])
@pytest.mark.parametrize("k,s,padding", [(2, 2, 0), (3, 2, 1), (3, 1, (1, 0, 0, 1)), (3, 2, "same")])
def test_avg_pool_matches_onnxruntime(k, s, padding, include_pad, rng):
    x = rng.standard_normal((2, 7, 8, 3), dtype=f32)
    win = resolve_window((7, 8), k, s, padding)
    out = np.empty((2, win.out_h, win.out_w, 3), f32)
    kpool.avg_pool2d_f32(x, out, win, bool(include_pad))
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[k, k], strides=[s, s],
                            pads=onnx_pads(win), count_include_pad=include_pad)
    assert_close(out, nhwc(run_onnx([node], {"x": nchw(x)}, {})))


@pytest.mark.parametrize("h,w", [(5, 7), (1, 1), (4, 4)])
def test_adaptive_1x1_matches_global_average_pool(h, w, rng):
    x = rng.standard_normal((3, h, w, 4), dtype=f32)
    out = np.empty((3, 1, 1, 4), f32)
    kpool.adaptive_avg_pool2d_f32(x, out)
    node = helper.make_node("GlobalAveragePool", ["x"], ["y"])
    assert_close(out, nhwc(run_onnx([node], {"x": nchw(x)}, {})))


def test_adaptive_exact_windows_match_average_pool(rng):
    # when p divides H the adaptive windows are plain k = H/p windows
    x = rng.standard_normal((2, 6, 9, 3), dtype=f32)
    out = np.empty((2, 2, 3, 3), f32)
    kpool.adaptive_avg_pool2d_f32(x, out)
    node = helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], strides=[3, 3])
    assert_close(out, nhwc(run_onnx([node], {"x": nchw(x)}, {})))


# -------------------------------------------------------------------------- dense
def test_dense_matches_gemm_transb(rng):
    x = rng.standard_normal((5, 37), dtype=f32)
    w = rng.standard_normal((11, 37), dtype=f32)
    b = rng.standard_normal(11, dtype=f32)
    out = np.empty((5, 11), f32)
    kdense.dense_f32(x, w, b, out)
    node = helper.make_node("Gemm", ["x", "w", "b"], ["y"], transB=1)
    assert_close(out, run_onnx([node], {"x": x}, {"w": w, "b": b}))


# -------------------------------------------------------------------- whole models
def model_to_onnx(model: Model, batch: int):
    """An NCHW ONNX graph equal to model.forward in eval mode. Returns (nodes, initializers)."""
    nodes, inits = [], {}
    cur = "x"
    shape = (batch, *model.input_shape)
    count = [0]

    def name(stem):
        count[0] += 1
        return f"{stem}_{count[0]}"

    def emit(op, inputs, **attrs):
        out = name(op)
        nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out

    def const(stem, arr):
        key = name(stem)
        inits[key] = np.ascontiguousarray(arr, f32)
        return key

    for block in model.blocks:
        for u in block.units:
            if isinstance(u.op, Conv2d):
                win = u.op.window(shape)
                ins = [cur, const("w", u.op.w.value.transpose(0, 3, 1, 2))]
                if u.op.b is not None:
                    ins.append(const("b", u.op.b.value))
                cur = emit("Conv", ins, kernel_shape=[win.kh, win.kw], strides=[win.sh, win.sw],
                           pads=onnx_pads(win), group=u.op.groups)
            else:
                assert isinstance(u.op, Dense)
                if len(shape) == 4:   # our Dense flattens NHWC (h, w, c): transpose back first
                    cur = emit("Transpose", [cur], perm=[0, 2, 3, 1])
                    cur = emit("Flatten", [cur], axis=1)
                ins = [cur, const("w", u.op.w.value)] + ([const("b", u.op.b.value)] if u.op.b is not None else [])
                cur = emit("Gemm", ins, transB=1)
            shape = u.op.out_shape(shape)
            bn = u.bn
            cur = emit("BatchNormalization", [cur, const("g", bn.gamma.value), const("be", bn.beta.value),
                                              const("m", bn.running_mean), const("v", bn.running_var)],
                       epsilon=bn.eps)
            if bn.act_name == "leaky_relu":
                cur = emit("LeakyRelu", [cur], alpha=0.01)
            elif bn.act_name == "relu":
                cur = emit("Relu", [cur])
            elif bn.act_name == "relu6":
                cur = emit("Clip", [cur, const("lo", np.array(0.0)), const("hi", np.array(6.0))])
        for p in block.post:
            if isinstance(p, (MaxPool2d, AvgPool2d)):
                win = p.window(shape)
                attrs = dict(kernel_shape=[win.kh, win.kw], strides=[win.sh, win.sw], pads=onnx_pads(win))
                if isinstance(p, AvgPool2d):
                    attrs["count_include_pad"] = int(p.count_include_pad)
                cur = emit("MaxPool" if isinstance(p, MaxPool2d) else "AveragePool", [cur], **attrs)
            else:
                assert isinstance(p, AdaptiveAvgPool2d)
                (ph, pw), (h, w) = p.size, shape[1:3]
                if (ph, pw) == (1, 1):
                    cur = emit("GlobalAveragePool", [cur])
                else:
                    assert h % ph == 0 and w % pw == 0, "ONNX has no overlapping adaptive pooling"
                    cur = emit("AveragePool", [cur], kernel_shape=[h // ph, w // pw], strides=[h // ph, w // pw])
            shape = p.out_shape(shape)
    if len(shape) == 4:
        cur = emit("Transpose", [cur], perm=[0, 2, 3, 1])
        cur = emit("Flatten", [cur], axis=1)
    clf = model.classifier
    ins = [cur, const("w", clf.w.value)] + ([const("b", clf.b.value)] if clf.b is not None else [])
    nodes.append(helper.make_node("Gemm", ins, ["y"], transB=1))
    return nodes, inits


def randomize_running_stats(model, rng):
    for bn in model.batch_norms():
        bn.gamma.value[...] = rng.uniform(0.5, 1.5, bn.channels)
        bn.beta.value[...] = rng.uniform(-0.5, 0.5, bn.channels)
        bn.running_mean[...] = rng.standard_normal(bn.channels) * 0.1
        bn.running_var[...] = rng.uniform(0.01, 0.1, bn.channels)   # ~the scale of real activations


@pytest.mark.parametrize("name,shape,k", [("smallconv", (16, 16, 1), 10), ("mobilenetv1", (32, 32, 3), 2)])
def test_model_eval_forward_matches_onnxruntime(name, shape, k, rng):
    model = Model(model_spec(name, k, shape), seed=1)
    randomize_running_stats(model, rng)
    x = rng.standard_normal((3, *shape), dtype=f32)
    logits = model.forward(x).copy()
    nodes, inits = model_to_onnx(model, 3)
    want = run_onnx(nodes, {"x": nchw(x)}, inits, out_rank=2)
    assert logits.shape == want.shape == (3, k)
    assert_close(logits, want, rtol=1e-5, atol=1e-6)
    # not a degenerate comparison: logits differ across samples and classes
    assert np.ptp(want) > 1e-2

"""ONNX import (edge_lls/formats/onnx_import.py): float graphs built with onnx.helper, one per
group of supported ops, with random weights and non-trivial batch-norm statistics, run by
onnxruntime and by the imported Model.forward; a zoo model through edge-lls's own ONNX export
and back; a small PyTorch CNN (when torch is installed); one-line errors for what is not
supported; and the imported model trained, exported and profiled by the command line.

Tolerance. Both runtimes compute each conv / dense output as a float32 sum of n products
(n = KH*KW*Cin/groups, or the fan-in) in different orders, and onnxruntime folds batch norm
into the weights (one more rounding per weight) where edge-lls applies it after the sum.
The worst-case bound of one sum's rounding error, gamma_n * sum|w*x| with
gamma_n = n*u / (1 - n*u) and u = 2^-24 (6.9e-5 of sum|w*x| at n = 1152), is far from
tight; independent roundings add like a random walk, sqrt(n)*u relative per sum, and the
errors of L stacked sums add. So outputs must agree within
    tol = L * sqrt(n_max) * u * max|logit|
(L: the model's sums, its conv / dense layers and average pools; n_max: the longest, a
fan-in or a pooled plane; SmallConv at 8x8x1: L = 6, n_max = 3*3*64 = 576, 8.6e-6 of the
largest logit). After a Softmax, sum_j |dp_i/dz_j| = 2 p_i (1 - p_i) <= 1/2, and softmax
itself rounds a few times: tol_p = tol / 2 + 4u. Observed here: 2-13 % of tol.
"""
from __future__ import annotations

import inspect
import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_lls.cli import main
from edge_lls.errors import EdgeLLSError, FormatError
from edge_lls.formats.model_file import load_model, save_model
from edge_lls.formats.onnx import to_onnx
from edge_lls.formats.onnx_import import load_onnx, read_onnx
from edge_lls.formats.sniff import model_kind
from edge_lls.models import build_model
from edge_lls.program.lower import float_program

U = 2.0 ** -24                  # float32 unit roundoff


# ----------------------------------------------------------------------------- building graphs
class Graph:
    """A chain of ONNX nodes with random weights; op() returns the node's output name."""

    def __init__(self, seed: int = 0):
        self.nodes, self.inits, self.rng = [], [], np.random.default_rng(seed)

    def const(self, name: str, value) -> str:
        self.inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def weights(self, name: str, shape, fan_in: int) -> str:
        # He-scaled so activations stay O(1) through the chain
        return self.const(name, self.rng.normal(0, math.sqrt(2 / fan_in), shape).astype(np.float32))

    def vector(self, name: str, n: int, scale: float = 0.1) -> str:
        return self.const(name, self.rng.normal(0, scale, n).astype(np.float32))

    def bn_inputs(self, name: str, c: int) -> list[str]:
        r = self.rng
        return [self.const(f"{name}.scale", r.uniform(0.5, 1.5, c).astype(np.float32)),
                self.vector(f"{name}.B", c, 0.3), self.vector(f"{name}.mean", c, 0.3),
                self.const(f"{name}.var", r.uniform(0.5, 2.0, c).astype(np.float32))]

    def op(self, op_type: str, inputs: list[str], name: str, outputs: int = 1, **attrs) -> str:
        names = [f"{name}.out"] + [f"{name}.out{i}" for i in range(1, outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=name, **attrs))
        return names[0]

    def save(self, path, x_shape, y: str, classes: int, opset: int = 17, inputs=None):
        graph = helper.make_graph(
            self.nodes, path.stem, inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", *x_shape])],
            [helper.make_tensor_value_info(y, TensorProto.FLOAT, ["N", classes])], initializer=self.inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        model.ir_version = 8
        onnx.checker.check_model(model, full_check=True)
        onnx.save(model, str(path))
        return path


def graph_convolutions(g: Graph) -> tuple[str, tuple, int]:
    """Conv (explicit pads, bias) -> BN (epsilon 1e-3) -> Relu -> MaxPool; depthwise Conv
    (stride 2, SAME_UPPER) -> BN -> Clip 0..6 -> 1x1 Conv -> BN -> Clip; Conv (VALID) ->
    LeakyRelu -> AveragePool (stride 1) -> Flatten -> Gemm -> Relu -> Dropout -> Gemm ->
    Softmax -> Identity."""
    h = g.op("Conv", ["x", g.weights("w1", (8, 3, 3, 3), 27), g.vector("b1", 8)], "conv1", pads=[1, 1, 1, 1])
    h = g.op("BatchNormalization", [h, *g.bn_inputs("bn1", 8)], "bn1", epsilon=1e-3)
    h = g.op("Relu", [h], "relu1")
    h = g.op("MaxPool", [h], "pool1", kernel_shape=[2, 2], strides=[2, 2])                 # 12 -> 6
    h = g.op("Conv", [h, g.weights("dw", (8, 1, 3, 3), 9)], "dw", group=8, strides=[2, 2], auto_pad="SAME_UPPER")
    h = g.op("BatchNormalization", [h, *g.bn_inputs("bn2", 8)], "bn2")
    low, high = g.const("zero", np.float32(0)), g.const("six", np.float32(6))
    h = g.op("Clip", [h, low, high], "relu6a")
    h = g.op("Conv", [h, g.weights("pw", (16, 8, 1, 1), 8)], "pw")
    h = g.op("BatchNormalization", [h, *g.bn_inputs("bn3", 16)], "bn3")
    h = g.op("Clip", [h, low, high], "relu6b")
    h = g.op("Conv", [h, g.weights("w4", (16, 16, 2, 2), 64), g.vector("b4", 16)], "conv4", auto_pad="VALID")  # 3 -> 2
    h = g.op("LeakyRelu", [h], "leaky", alpha=0.01)
    h = g.op("AveragePool", [h], "avg", kernel_shape=[2, 2], strides=[1, 1])              # 2 -> 1
    h = g.op("Flatten", [h], "flat")
    h = g.op("Gemm", [h, g.weights("g1", (12, 16), 16), g.vector("gb1", 12)], "fc1", transB=1)
    h = g.op("Relu", [h], "relu2")
    h = g.op("Dropout", [h], "drop")
    h = g.op("Gemm", [h, g.weights("g2", (12, 5), 12), g.vector("gb2", 5)], "fc2")
    h = g.op("Softmax", [h], "softmax", axis=-1)
    return g.op("Identity", [h], "out"), (3, 12, 12), 5


def graph_reshape_matmul(g: Graph) -> tuple[str, tuple, int]:
    """Conv (stride 2, asymmetric pads, no BN: identity batch norm) -> MaxPool (padded) ->
    Relu (after the pool) ; Conv (SAME_LOWER, no bias) + Add (bias) -> BN -> AveragePool 2/2
    -> Reshape (0, -1) of a 3x3x12 tensor (columns permuted) -> MatMul + Add -> BN (1-D) ->
    LeakyRelu -> MatMul (the classifier, no bias)."""
    h = g.op("Conv", ["x", g.weights("w1", (6, 2, 3, 3), 18), g.vector("b1", 6)], "conv1",
             strides=[2, 2], pads=[0, 1, 1, 0])                                             # 23x22 -> 11x11
    h = g.op("MaxPool", [h], "pool1", kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1])
    h = g.op("Relu", [h], "relu1")
    h = g.op("Conv", [h, g.weights("w2", (12, 6, 2, 2), 24)], "conv2", auto_pad="SAME_LOWER", strides=[2, 2])  # -> 6x6
    h = g.op("Add", [h, g.const("b2", g.rng.normal(0, 0.1, (1, 12, 1, 1)).astype(np.float32))], "bias2")
    h = g.op("BatchNormalization", [h, *g.bn_inputs("bn2", 12)], "bn2")
    h = g.op("AveragePool", [h], "avg", kernel_shape=[2, 2], strides=[2, 2])              # -> 3x3
    h = g.op("Reshape", [h, g.const("shape", np.array([0, -1], np.int64))], "reshape")
    h = g.op("MatMul", [h, g.weights("m1", (108, 20), 108)], "fc1")
    h = g.op("Add", [g.vector("mb1", 20), h], "fc1_bias")
    h = g.op("BatchNormalization", [h, *g.bn_inputs("bn3", 20)], "bn3")
    h = g.op("LeakyRelu", [h], "leaky", alpha=0.01)
    return g.op("MatMul", [h, g.weights("m2", (20, 7), 20)], "classifier"), (2, 23, 22), 7


def graph_global_pool(g: Graph) -> tuple[str, tuple, int]:
    """Constant nodes for weights and the clip bound; Conv (no BN) -> Clip [0, inf) (ReLU) ->
    GlobalAveragePool -> Flatten -> Gemm (transB 0, alpha, beta) -> Dropout (ratio)."""
    w = g.rng.normal(0, 0.4, (10, 1, 5, 5)).astype(np.float32)
    g.nodes.append(helper.make_node("Constant", [], ["wc"], name="wconst", value=numpy_helper.from_array(w)))
    g.nodes.append(helper.make_node("Constant", [], ["lo"], name="loconst", value_float=0.0))
    h = g.op("Conv", ["x", "wc", g.vector("b1", 10)], "conv1", pads=[2, 2, 2, 2])
    h = g.op("Clip", [h, "lo"], "relu1")
    h = g.op("GlobalAveragePool", [h], "gap")
    h = g.op("Flatten", [h], "flat")
    h = g.op("Gemm", [h, g.weights("g1", (10, 4), 10), g.vector("gb1", 4)], "fc", alpha=0.5, beta=2.0)
    return g.op("Dropout", [h, g.const("ratio", np.float32(0.3))], "drop"), (1, 9, 9), 4


GRAPHS = {"convolutions": (graph_convolutions, ["conv", "dwsep", "conv", "dense"]),
          "reshape_matmul": (graph_reshape_matmul, ["conv", "conv", "dense"]),
          "global_pool": (graph_global_pool, ["conv"])}


# ------------------------------------------------------------------------------- comparing
def tolerance(model, logits: np.ndarray) -> float:
    """L * sqrt(n_max) * u * max|logit| (the module docstring)."""
    ops = [u.op for b in model.blocks for u in b.units] + [model.classifier]
    sums = [op.w.value[0].size for op in ops]                       # a row of w: one output's products
    shapes, _ = model.stage_shapes(1)
    for block, (_, a_shape, _) in zip(model.blocks, shapes):        # average pools sum at most a plane
        sums += [a_shape[1] * a_shape[2] for p in block.spec.get("post", []) if p["type"] != "maxpool"]
    return len(sums) * math.sqrt(max(sums)) * U * float(np.abs(logits).max())


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def onnxruntime_outputs(path, x_nchw: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x_nchw})[0]


def assert_matches_onnxruntime(path, model, header, x_nhwc, x_onnx):
    """x_nhwc (N,H,W,C) float32 for edge-lls; x_onnx: the same images as the graph takes them."""
    logits = model.forward(x_nhwc).copy()                           # (N, K) float32
    theirs = onnxruntime_outputs(path, x_onnx)
    tol = tolerance(model, logits)
    if header["softmax"]:
        ours, tol = softmax(logits.astype(np.float64)), tol / 2 + 4 * U
    else:
        ours = logits
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= tol, (np.abs(ours - theirs).max(), tol)


# ------------------------------------------------------------------------- supported graphs
@pytest.mark.parametrize("name", list(GRAPHS))
def test_imported_graph_runs_as_in_onnxruntime(name, tmp_path):
    build, block_types = GRAPHS[name]
    g = Graph(seed=len(name))
    y, x_shape, classes = build(g)
    path = g.save(tmp_path / f"{name}.onnx", x_shape, y, classes)
    model, header = load_onnx(path)
    assert [b["type"] for b in model.spec["blocks"]] == block_types
    assert model.num_classes == classes and model.input_shape == (x_shape[1], x_shape[2], x_shape[0])
    x = np.random.default_rng(7).random((5, x_shape[1], x_shape[2], x_shape[0]), dtype=np.float32)
    assert_matches_onnxruntime(path, model, header, x, np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def test_a_conv_without_batch_norm_gets_an_exact_identity_one(tmp_path):
    g = Graph()
    y, x_shape, classes = graph_global_pool(g)
    model, _ = load_onnx(g.save(tmp_path / "g.onnx", x_shape, y, classes))
    bn = model.blocks[0].units[0].bn
    z = np.random.default_rng(0).normal(0, 3, (2, 9, 9, 10)).astype(np.float32)
    out = np.empty_like(z)
    bn.forward(z, out, training=False)
    assert model.spec["blocks"][0]["act"] == "relu"                 # the Clip [0, inf), fused in the BN
    assert np.array_equal(out, np.maximum(z, 0))    # float32(var + eps) == 1: y = x * 1 + 0, bit for bit


def _randomise_batch_norms(model, rng):
    for bn in model.batch_norms():
        bn.gamma.value[:] = rng.uniform(0.5, 1.5, bn.channels)
        bn.beta.value[:] = rng.normal(0, 0.2, bn.channels)
        bn.running_mean[:] = rng.normal(0, 0.2, bn.channels)
        bn.running_var[:] = rng.uniform(0.5, 2.0, bn.channels)


@pytest.mark.parametrize("name,shape,options", [("smallconv", (8, 8, 1), {}),
                                                ("mobilenetv1", (32, 32, 3), {"width": 0.25})])
def test_a_zoo_model_exported_to_onnx_imports_back(name, shape, options, tmp_path):
    rng = np.random.default_rng(5)
    original = build_model(name, 10, shape, seed=3, **options)
    _randomise_batch_norms(original, rng)
    path = tmp_path / f"{name}.onnx"
    path.write_bytes(to_onnx(float_program(original)))      # NHWC input, Transposes, folded BN
    model, header = load_onnx(path)
    assert [b["type"] for b in model.spec["blocks"]] == [b["type"] for b in original.spec["blocks"]]
    x = rng.random((6, *shape), dtype=np.float32)
    want = original.forward(x).copy()
    assert np.abs(model.forward(x) - want).max() <= tolerance(original, want)
    assert_matches_onnxruntime(path, model, header, x, x)    # this graph takes NHWC itself
    save_model(tmp_path / "m.ells", model, {})              # an ordinary model: saved and loaded
    again, _ = load_model(tmp_path / "m.ells")
    assert np.array_equal(again.forward(x), model.forward(x))


def test_a_torch_cnn_imports(tmp_path):
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                        nn.Conv2d(8, 8, 3, padding=1, groups=8, bias=False), nn.BatchNorm2d(8), nn.ReLU6(),
                        nn.Conv2d(8, 16, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU6(), nn.MaxPool2d(2),
                        nn.Flatten(), nn.Linear(16 * 2 * 2, 32), nn.LeakyReLU(0.01), nn.Dropout(0.2), nn.Linear(32, 10))
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
    net.eval()
    path = tmp_path / "torch.onnx"
    x = torch.rand(4, 1, 8, 8)
    # the TorchScript exporter (torch >= 2.9 defaults to the dynamo one, which needs onnxscript)
    options = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
    torch.onnx.export(net, x[:1], str(path), input_names=["x"], output_names=["y"], opset_version=17,
                      dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, **options)
    model, header = load_onnx(path)
    with torch.no_grad():
        want = net(x).numpy()
    x_nhwc = np.ascontiguousarray(x.numpy().transpose(0, 2, 3, 1))
    got = model.forward(x_nhwc)
    assert np.abs(got - want).max() <= tolerance(model, want)
    assert_matches_onnxruntime(path, model, header, x_nhwc, x.numpy())


# ------------------------------------------------------------------------------ what is refused
def _one_conv(g: Graph, **conv_attrs) -> str:
    return g.op("Conv", ["x", g.weights("w", (4, 2, 3, 3), 18)], "conv1", **conv_attrs)


def _classify(g: Graph, h: str, features: int) -> str:
    h = g.op("Flatten", [h], "flat")
    return g.op("Gemm", [h, g.weights("fc", (3, features), features)], "fc", transB=1)


def case_unsupported_op(g):
    h = g.op("Sin", [_one_conv(g, pads=[1, 1, 1, 1])], "wave")
    return _classify(g, h, 4 * 8 * 8), "op type 'Sin' is not supported", "Sin node 'wave'"


def case_leaky_slope(g):
    h = g.op("LeakyRelu", [_one_conv(g, pads=[1, 1, 1, 1])], "leaky", alpha=0.2)
    return _classify(g, h, 4 * 8 * 8), "alpha 0.2", "LeakyRelu node 'leaky'"


def case_dilation(g):
    h = _one_conv(g, dilations=[2, 2])
    return _classify(g, h, 4 * 4 * 4), "dilations [2, 2]", "Conv node 'conv1'"


def case_branch(g):
    a = _one_conv(g, pads=[1, 1, 1, 1])
    b = g.op("Relu", [a], "relu")
    h = g.op("Add", [a, b], "residual")
    return _classify(g, h, 4 * 8 * 8), "one chain of ops", "Add node 'residual'"


def case_grouped(g):
    h = g.op("Conv", ["x", g.weights("w", (4, 1, 3, 3), 9)], "grouped", group=2, pads=[1, 1, 1, 1])
    return _classify(g, h, 4 * 8 * 8), "group=2", "Conv node 'grouped'"


def case_lonely_depthwise(g):
    h = g.op("Conv", ["x", g.weights("w", (2, 1, 3, 3), 9)], "dw", group=2, pads=[1, 1, 1, 1])
    return _classify(g, h, 2 * 8 * 8), "followed directly by a 1x1", "Conv node 'dw'"


def case_pool_first(g):
    h = g.op("MaxPool", ["x"], "pool", kernel_shape=[2, 2], strides=[2, 2])
    return _classify(g, h, 2 * 4 * 4), "must follow a Conv", "MaxPool node 'pool'"


def case_padded_average(g):
    h = g.op("AveragePool", [_one_conv(g, pads=[1, 1, 1, 1])], "avg", kernel_shape=[3, 3], pads=[1, 1, 1, 1],
             count_include_pad=1)
    return _classify(g, h, 4 * 8 * 8), "count_include_pad=1", "AveragePool node 'avg'"


REFUSED = {f.__name__[5:]: f for f in (case_unsupported_op, case_leaky_slope, case_dilation, case_branch,
                                       case_grouped, case_lonely_depthwise, case_pool_first, case_padded_average)}


@pytest.mark.parametrize("case", list(REFUSED))
def test_what_is_not_supported_is_one_line_naming_file_op_and_node(case, tmp_path):
    g = Graph()
    y, message, where = REFUSED[case](g)
    path = g.save(tmp_path / "m.onnx", (2, 8, 8), y, 3)
    with pytest.raises(FormatError) as e:
        read_onnx(path)
    text = str(e.value)
    assert "\n" not in text and text.startswith(f"{path}: {where}: ") and message in text, text


def test_two_inputs_are_refused(tmp_path):
    g = Graph()
    y = _classify(g, _one_conv(g, pads=[1, 1, 1, 1]), 4 * 8 * 8)
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 2, 8, 8]) for n in ("x", "x2")]
    path = g.save(tmp_path / "m.onnx", (2, 8, 8), y, 3, inputs=inputs)
    with pytest.raises(FormatError, match=r"2 inputs \(x, x2\); edge-lls imports models with one input"):
        read_onnx(path)


def _cli_error(capsys, args) -> str:
    assert main([str(a) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edge-lls: error:") and "Traceback" not in err[0], err
    return err[0]


def test_an_unsupported_op_through_the_command_line_is_one_line(tmp_path, capsys):
    g = Graph()
    y, _, _ = case_unsupported_op(g)
    path = g.save(tmp_path / "sin.onnx", (2, 8, 8), y, 3)
    line = _cli_error(capsys, ["train", "--model", path, "--epochs", "1", "--out", tmp_path / "run"])
    assert "sin.onnx" in line and "Sin node 'wave'" in line and "not supported" in line
    assert not (tmp_path / "run").exists()


def test_a_truncated_or_corrupt_file_is_one_line(tmp_path, capsys):
    g = Graph()
    y, x_shape, classes = graph_global_pool(g)
    whole = g.save(tmp_path / "whole.onnx", x_shape, y, classes).read_bytes()
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(whole[:len(whole) // 2])
    line = _cli_error(capsys, ["export", cut, "--format", "tflite", "--out", tmp_path / "m.tflite"])
    assert "cut.onnx: not a readable ONNX model, truncated or corrupt" in line
    for data in (b"", whole[:3], b"\x08\x08" + bytes(range(256)) * 4):
        cut.write_bytes(data)
        with pytest.raises(FormatError, match="truncated or corrupt") as e:
            read_onnx(cut)
        assert "\n" not in str(e.value)


def test_damaged_files_load_and_run_or_give_one_line(tmp_path):
    """Seeded damage (truncations, bit flips, overwritten 4-byte words) to a small graph:
    each file is refused with one EdgeLLSError line naming it, or loads and runs forward."""
    g = Graph(seed=2)
    y, x_shape, classes = graph_reshape_matmul(g)
    seed = g.save(tmp_path / "seed.onnx", x_shape, y, classes).read_bytes()
    rng, path = np.random.default_rng(0), tmp_path / "damaged.onnx"
    for i in range(300):
        data = bytearray(seed)
        at = int(rng.integers(0, len(data)))
        if i % 3 == 0:
            data = data[:at]
        elif i % 3 == 1:
            data[at] ^= 1 << int(rng.integers(0, 8))
        else:
            data[at:at + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        path.write_bytes(bytes(data))
        try:
            model, _ = load_onnx(path)
        except EdgeLLSError as e:
            assert "\n" not in str(e) and str(e).startswith(str(path)), (i, str(e))
            continue
        with np.errstate(all="ignore"):                   # damaged weights may overflow: still runs
            assert model.forward(np.zeros((1, *model.input_shape), np.float32)).shape == (1, model.num_classes)


def test_onnx_files_are_sniffed_by_first_byte_or_suffix(tmp_path):
    g = Graph()
    y, x_shape, classes = graph_global_pool(g)
    path = g.save(tmp_path / "m.onnx", x_shape, y, classes)
    renamed = tmp_path / "model.bin"
    renamed.write_bytes(path.read_bytes())
    assert model_kind(path) == "onnx" and model_kind(renamed) == "onnx"
    (tmp_path / "empty.onnx").write_bytes(b"")
    assert model_kind(tmp_path / "empty.onnx") == "onnx"            # the reader says what is wrong


# ---------------------------------------------------------------------------- the command line
def _digits_cnn(tmp_path):
    """An 8x8x1 -> 10 classes CNN in ONNX, with class names in metadata_props."""
    g = Graph(seed=11)
    h = g.op("Conv", ["x", g.weights("w1", (8, 1, 3, 3), 9), g.vector("b1", 8)], "conv1", pads=[1, 1, 1, 1])
    h = g.op("BatchNormalization", [h, *g.bn_inputs("bn1", 8)], "bn1")
    h = g.op("Relu", [h], "relu1")
    h = g.op("MaxPool", [h], "pool1", kernel_shape=[2, 2], strides=[2, 2])
    h = g.op("Conv", [h, g.weights("w2", (16, 8, 3, 3), 72)], "conv2", pads=[1, 1, 1, 1])
    h = g.op("LeakyRelu", [h], "leaky", alpha=0.01)
    h = g.op("MaxPool", [h], "pool2", kernel_shape=[2, 2], strides=[2, 2])
    y = _classify_digits(g, h)
    path = g.save(tmp_path / "digits_cnn.onnx", (1, 8, 8), y, 10)
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "classes", json.dumps([f"digit {i}" for i in range(10)])
    onnx.save(proto, str(path))
    return path


def _classify_digits(g, h):
    h = g.op("Flatten", [h], "flat")
    return g.op("Gemm", [h, g.weights("fc", (10, 16 * 2 * 2), 64), g.vector("fcb", 10)], "fc", transB=1)


def test_an_onnx_model_trains_exports_and_profiles_from_the_command_line(tmp_path, capsys):
    path = _digits_cnn(tmp_path)
    _, header = load_onnx(path)
    assert header["dataset"]["class_names"][3] == "digit 3"
    run = tmp_path / "run"
    assert main(["train", "--model", str(path), "--rule", "lls", "--dataset", "digits", "--epochs", "1",
                 "--out", str(run), "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["model"] == str(path.resolve()) and 0 <= result["eval_accuracy"] <= 1
    trained, _ = load_model(run / "model.ells")
    assert trained.spec == read_onnx(path).spec
    out = tmp_path / "m.tflite"
    assert main(["export", str(path), "--format", "tflite", "--out", str(out), "--json"]) == 0
    exported = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert exported["classes"] == [f"digit {i}" for i in range(10)] and out.stat().st_size > 0
    assert main(["profile", "--model", str(path), "--rule", "lls", "--batch", "16", "--json"]) == 0
    profile = json.loads(capsys.readouterr().out)
    assert profile["rule"] == "lls" and [b["type"] for b in profile["blocks"]] == ["conv", "conv", "classifier"]

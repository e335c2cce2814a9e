"""An ONNX float model as an ordinary edge-lls model (blocks + a linear classifier).

    imported = read_onnx(path)     # -> OnnxImport: spec, tensors, class names, softmax
    model, header = load_onnx(path)  # -> (Model, a .ells-like header), as load_model does

Once imported, the model trains with any rule, profiles and exports like a zoo model.

What is read. One chain of float32 ops from one 4-D input (N,C,H,W) to one output, each
op reading the previous op's output plus constants (initializers or Constant nodes):

    Conv             group 1, or depthwise (group = C, one filter per channel); any
                     kernel, strides, pads; auto_pad NOTSET, VALID, SAME_UPPER, SAME_LOWER;
                     dilations 1
    BatchNormalization  inference form, after a Conv / Gemm / MatMul
    Relu, LeakyRelu (alpha 0.01: the slope edge-lls's blocks use), Clip (0..6: ReLU6;
                     0..inf: ReLU)
    MaxPool, AveragePool (count_include_pad only without padding), GlobalAveragePool
    Flatten, Reshape (to (N, -1)), Transpose (NCHW <-> NHWC only)
    Gemm, MatMul (+ Add: the bias), Add (a constant bias of the op before)
    Softmax (last, after the classifier: Model.forward gives the logits, the result's
                     softmax flag says the graph applied one), Identity, Dropout (no-ops)

How it maps. Each Conv / Gemm / MatMul is a unit: op -> batch norm -> activation, as
edge-lls blocks are built (nn/block.py). A Conv is a "conv" block; a depthwise Conv
followed by a 1x1 Conv is a "dwsep" block; a Gemm / MatMul is a "dense" block, and the
last one is the classifier. Pools after a unit become the block's post ops. Each block's
LLS pool_size (its head's adaptive pool): 4 for the first conv block, 2 after, at most the
block's output size; a dense block's, its width (as in the zoo). A unit without
BatchNormalization gets an identity one: gamma 1, beta 0, mean 0, var = float32(1 - eps),
so that float32(var + eps) is exactly 1 and y = x * 1 + 0 = x bit for bit in inference
(in training, batch norm normalises with batch statistics like any edge-lls block). A
BatchNormalization whose epsilon differs from edge-lls's 1e-5 keeps its statistics and has
gamma rescaled by sqrt(var + 1e-5) / sqrt(var + epsilon). An activation after MaxPool
moves before it: max pooling commutes with every monotone activation.

Layouts, converted once, here. edge-lls is NHWC; ONNX convolutions and pooling are NCHW.
Conv weights (M, C/g, KH, KW) -> (M, KH, KW, C/g); explicit pads [top, left, bottom,
right] -> (top, bottom, left, right). Transposes are layout bookkeeping only (a graph that
takes NHWC and transposes to NCHW, as edge-lls's own ONNX export does, reads the same).
Gemm / MatMul weights become (out, in); after a Flatten of an NCHW tensor their columns are
permuted from (c, h, w) order to edge-lls's (h, w, c) flattening.

Anything else (another op, attribute or graph shape: branches, several inputs) is one
FormatError line naming the file, the op type and the node.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..kernels.activation import LEAKY_SLOPE
from ..kernels.geometry import resolve_window, same_padding

BN_EPS = 1e-5                    # nn.layers.BatchNorm's eps, which a spec cannot change
NCHW_TO_NHWC, NHWC_TO_NCHW = [0, 2, 3, 1], [0, 3, 1, 2]
DOMAINS = ("", "ai.onnx")
CLASS_KEYS = ("classes", "class_names", "labels")      # metadata_props keys read for class names


# ----------------------------------------------------------------------------- the result
@dataclass
class OnnxImport:
    spec: dict                           # a Model spec (nn/model.py)
    tensors: dict[str, np.ndarray]       # every tensor of model_file.model_tensors(Model(spec))
    classes: list[str] | None            # from metadata_props, when present
    softmax: bool                        # the graph ends with a Softmax (Model.forward gives logits)


@dataclass
class _Unit:
    """One conv / dense op with its batch norm and activation, in edge-lls's layouts."""
    node: str                            # 'Conv node "conv1"': where errors point
    kind: str                            # "conv" | "dense"
    w: np.ndarray                        # conv (Cout, KH, KW, Cin/groups); dense (out, in), HWC columns
    b: np.ndarray | None                 # (Cout,) float32
    out_shape: tuple                     # (OH, OW, Cout) or (out,)
    groups: int = 1
    stride: tuple = (1, 1)
    pads: tuple = (0, 0, 0, 0)           # (top, bottom, left, right)
    bn: tuple | None = None              # (gamma, beta, mean, var) float32 (C,), for eps BN_EPS
    act: str = "none"
    post: list = field(default_factory=list)

    @property
    def channels(self) -> int:
        return self.w.shape[0]

    def is_pointwise(self) -> bool:
        return (self.kind == "conv" and self.groups == 1 and self.w.shape[1:3] == (1, 1)
                and self.stride == (1, 1) and not any(self.pads))


# ------------------------------------------------------------------------------ the reader
def read_onnx(path: str | Path) -> OnnxImport:
    """The spec and tensors of the ONNX model at path (see the module docstring)."""
    path = Path(path)
    proto = _load_checked(path)
    walk = _Walk(path, proto)
    walk.run()
    spec, tensors = walk.assemble()
    return OnnxImport(spec, tensors, _class_names(path, proto, spec["num_classes"]), walk.softmax)


def load_onnx(path: str | Path):
    """-> (Model, header): the model holding the file's weights and statistics, and a
    header shaped like a .ells file's (kind, spec, and the class names under 'dataset')."""
    from .model_file import assign, build_from_spec, check_spec, model_tensors

    path = Path(path)
    imported = read_onnx(path)
    # the spec is sized by the file's own initializers, and is checked as a .ells spec is
    # before anything is allocated (huge shapes in a damaged graph are one line, not a MemoryError)
    check_spec(imported.spec, sum(int(a.size) for a in imported.tensors.values()), path)
    model = build_from_spec(imported.spec, path)
    assign(model_tensors(model), imported.tensors, path, exact=True)
    header = {"kind": "model", "spec": imported.spec, "format": "onnx", "softmax": imported.softmax}
    if imported.classes:
        header["dataset"] = {"class_names": imported.classes}
    return model, header


def _load_checked(path: Path):
    """The ModelProto, decoded and checked; a missing, truncated or corrupt file is one line."""
    import onnx
    try:
        proto = onnx.load(str(path))
    except FileNotFoundError:
        raise FormatError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: expected an .onnx file, found a folder") from None
    except Exception as e:               # protobuf DecodeError and friends: not a traceback
        raise FormatError(f"{path}: not a readable ONNX model, truncated or corrupt "
                          f"({type(e).__name__}: {_one_line(e)})") from None
    try:
        onnx.checker.check_model(proto)
    except Exception as e:               # onnx.checker.ValidationError: a multi-line message
        raise FormatError(f"{path}: not a valid ONNX model, truncated or corrupt "
                          f"(onnx.checker: {_one_line(e)})") from None
    return proto


def _one_line(e: Exception) -> str:
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    return lines[0] if lines else "no message"


def _class_names(path: Path, proto, num_classes: int) -> list[str] | None:
    """Class names from metadata_props: edge-lls's own 'edge_lls' entry ({"classes": [...]}),
    or a 'classes' / 'class_names' / 'labels' entry (a JSON list or comma-separated)."""
    props = {}
    for prop in proto.metadata_props:
        # protobuf hands over a string field that is not UTF-8 (a damaged file) as bytes
        if not isinstance(prop.key, str) or not isinstance(prop.value, str):
            raise FormatError(f"{path}: metadata_props entry {prop.key!r:.40} is not UTF-8 text: the file is corrupt")
        props[prop.key] = prop.value
    names = None
    if "edge_lls" in props:
        try:
            names = json.loads(props["edge_lls"]).get("classes")
        except (json.JSONDecodeError, AttributeError):
            names = None
    for key in CLASS_KEYS:
        if names is None and key in props:
            try:
                names = json.loads(props[key])
            except json.JSONDecodeError:
                names = [name.strip() for name in props[key].split(",")]
    if names is None:
        return None
    if not isinstance(names, list) or len(names) != num_classes:
        raise FormatError(f"{path}: metadata_props holds {len(names) if isinstance(names, list) else 'no list of'} "
                          f"class names for a model with {num_classes} outputs")
    return [str(name) for name in names]


# --------------------------------------------------------------------------- the graph walk
class _Walk:
    """State of the walk along the chain. shape: the current tensor's logical NHWC shape
    without the batch, (H, W, C) or (F,); layout: how ONNX sees it ("nchw", "nhwc" or
    "flat"); tail: the unit whose output the current tensor still is (batch norm, bias,
    activation and pooling attach to it)."""

    def __init__(self, path: Path, proto):
        self.path, self.graph = path, proto.graph
        self.opset = max((o.version for o in proto.opset_import if o.domain in DOMAINS), default=1)
        self.where = "graph"
        self.constants = {t.name: self.array(t, f"initializer {t.name!r}") for t in self.graph.initializer}
        self.units: list[_Unit] = []
        self.tail: _Unit | None = None
        self.column_order: tuple | None = None   # (H, W, C) of an NCHW tensor just flattened
        self.softmax = False
        self.node = None
        self.current, self.input_shape, self.batch = self._graph_input()

    # --- errors and operands
    def fail(self, message: str) -> FormatError:
        return FormatError(f"{self.path}: {self.where}: {message}")

    def attrs(self) -> dict:
        from onnx import helper
        out = {}
        for a in self.node.attribute:
            value = helper.get_attribute_value(a)
            out[a.name] = value.decode("utf-8", "replace") if isinstance(value, bytes) else value
        return out

    def constant(self, position: int, role: str, required: bool = True) -> np.ndarray | None:
        inputs = self.node.input
        if position >= len(inputs) or not inputs[position]:
            if required:
                raise self.fail(f"input {position} ({role}) is missing")
            return None
        name = inputs[position]
        if name not in self.constants:
            raise self.fail(f"input {position} ({role}) {name!r} must be a constant "
                            f"(an initializer or a Constant node)")
        return self.constants[name]

    def weights(self, position: int, role: str, required: bool = True) -> np.ndarray | None:
        value = self.constant(position, role, required)
        if value is None:
            return None
        if value.dtype.kind != "f":
            raise self.fail(f"{role} has dtype {value.dtype}, expected a float tensor")
        with np.errstate(over="ignore"):                  # a float64 beyond float32's range: inf, refused
            value = value.astype(np.float32)
        if not np.isfinite(value).all():
            raise self.fail(f"{role} holds NaN or infinite values (or values beyond float32's range)")
        return value

    def array(self, tensor, role: str) -> np.ndarray:
        """A TensorProto's values; one that does not decode (its data does not fill its
        shape, an unknown data type) is a corrupt file."""
        from onnx import numpy_helper
        try:
            return numpy_helper.to_array(tensor)
        except Exception as e:
            raise self.fail(f"{role} does not decode, the file is corrupt ({type(e).__name__}: "
                            f"{_one_line(e)})") from None

    def constant_node_value(self) -> np.ndarray:
        """A Constant node's tensor (value) or number(s) (value_float(s), value_int(s))."""
        a = self.attrs()
        if "value" in a:
            return self.array(a["value"], "value")
        for key, dtype in (("value_float", np.float32), ("value_floats", np.float32),
                           ("value_int", np.int64), ("value_ints", np.int64)):
            if key in a:
                return np.asarray(a[key], dtype)
        raise self.fail(f"attribute {', '.join(a) or 'none'}: only value, value_float(s) and "
                        f"value_int(s) are supported")

    # --- the chain
    def _graph_input(self):
        """(name, (H, W, C), batch or None) of the one data input; its layout is NCHW unless
        the first op transposes it from NHWC."""
        from onnx import TensorProto
        inputs = [i for i in self.graph.input if i.name not in self.constants]
        if len(inputs) != 1:
            raise self.fail(f"{len(inputs)} inputs ({', '.join(i.name for i in inputs)}); "
                            f"edge-lls imports models with one input")
        if len(self.graph.output) != 1:
            raise self.fail(f"{len(self.graph.output)} outputs; edge-lls imports models with one output")
        x = inputs[0]
        tensor_type = x.type.tensor_type
        if tensor_type.elem_type != TensorProto.FLOAT:
            raise self.fail(f"input {x.name!r} is {TensorProto.DataType.Name(tensor_type.elem_type)}, "
                            f"expected FLOAT (float models only)")
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tensor_type.shape.dim]
        if len(dims) != 4 or any(d is None or d < 1 for d in dims[1:]):
            raise self.fail(f"input {x.name!r} has shape {dims}; expected (N, C, H, W) with known C, H, W")
        first = next((n for n in self.graph.node if n.op_type != "Constant"), None)
        nhwc = first is not None and first.op_type == "Transpose" and _perm(first) == NHWC_TO_NCHW
        self.layout = "nhwc" if nhwc else "nchw"
        _, a, b, c = dims
        shape = (a, b, c) if nhwc else (b, c, a)
        return x.name, shape, dims[0]

    def run(self) -> None:
        self.shape = self.input_shape
        for index, node in enumerate(self.graph.node):
            self.node = node
            self.where = f"{node.op_type} node {node.name or f'#{index}'!r}"
            if node.domain not in DOMAINS:
                raise self.fail(f"op type {node.domain}.{node.op_type} is not supported")
            if node.op_type == "Constant":
                self.constants[node.output[0]] = self.constant_node_value()
                continue
            handler = OP_HANDLERS.get(node.op_type)
            if handler is None:
                raise self.fail(f"op type {node.op_type!r} is not supported (supported: "
                                f"{', '.join(sorted(OP_HANDLERS))})")
            data = [name for name in node.input if name and name not in self.constants]
            if data != [self.current]:
                raise self.fail(f"reads {data or 'no tensor'}, not just the previous op's output "
                                f"{self.current!r}: edge-lls imports one chain of ops (no branches, "
                                f"skip connections or second inputs)")
            if self.softmax and node.op_type not in ("Identity", "Dropout"):
                raise self.fail("follows the Softmax; only Identity or Dropout may")
            handler(self)
            self.current = node.output[0]
        self.where = "graph"
        output = self.graph.output[0].name
        if output != self.current:
            raise self.fail(f"output {output!r} is not the last op's output {self.current!r}")

    # --- shared steps of the handlers
    def require_layout(self, *layouts: str) -> None:
        if self.layout not in layouts:
            found = {"flat": "a flattened (N, F)", "nhwc": "an NHWC-ordered", "nchw": "an NCHW"}[self.layout]
            raise self.fail(f"needs {' or '.join(layouts).upper()} input, got {found} tensor")

    def require_tail(self, what: str, *, fresh: bool = True) -> _Unit:
        """The unit the current tensor comes from; fresh: nothing but Identity / Dropout
        since its op (what batch norm and a bias need)."""
        unit = self.tail
        if unit is None:
            raise self.fail(f"{what} must follow a Conv, Gemm or MatMul (the ops of edge-lls blocks)")
        if fresh and (unit.bn is not None or unit.act != "none" or unit.post):
            raise self.fail(f"{what} must follow the Conv / Gemm / MatMul directly ({unit.node} "
                            f"already has a batch norm, activation or pooling after it)")
        return unit

    def add_unit(self, unit: _Unit) -> None:
        self.units.append(unit)
        self.tail, self.shape = unit, unit.out_shape

    def pair(self, a: dict, name: str, default=(1, 1)) -> tuple[int, int]:
        """A 2-D attribute of values >= 1 (strides, kernel_shape)."""
        value = tuple(int(v) for v in a.get(name, default))
        if len(value) != 2 or min(value) < 1:
            raise self.fail(f"{name} {list(value)}: expected 2 values >= 1 (2-D only)")
        return value

    def pads(self, a: dict, kernel: tuple) -> tuple:
        """(top, bottom, left, right) from pads or auto_pad, for the current (H, W)."""
        auto = a.get("auto_pad", "NOTSET")
        h, w = self.shape[:2]
        stride = self.pair(a, "strides")
        if auto == "NOTSET":
            p = list(a.get("pads", [0, 0, 0, 0]))
            if len(p) != 4 or min(p) < 0:
                raise self.fail(f"pads {p}: expected 4 values >= 0")
            return p[0], p[2], p[1], p[3]                  # ONNX: [top, left, bottom, right]
        if auto == "VALID":
            return 0, 0, 0, 0
        if auto in ("SAME_UPPER", "SAME_LOWER"):
            _, top, bottom = same_padding(h, kernel[0], stride[0])      # odd pixel after: SAME_UPPER
            _, left, right = same_padding(w, kernel[1], stride[1])
            if auto == "SAME_LOWER":
                top, bottom, left, right = bottom, top, right, left
            return top, bottom, left, right
        raise self.fail(f"auto_pad {auto!r} is not supported (NOTSET, VALID, SAME_UPPER, SAME_LOWER)")

    def window(self, kernel: tuple, stride: tuple, pads: tuple):
        try:
            return resolve_window(self.shape[:2], kernel, stride, pads)
        except ValueError as e:
            raise self.fail(str(e)) from None

    def require_no_dilation(self, a: dict) -> None:
        dilations = list(a.get("dilations", [1, 1]))
        if any(d != 1 for d in dilations):
            raise self.fail(f"dilations {dilations}: only 1 is supported")

    def flatten(self) -> None:
        """(N, C, H, W) or (N, H, W, C) -> (N, F); remember to permute the next Gemm's columns."""
        if self.layout != "flat":
            self.column_order = self.shape if self.layout == "nchw" else None
            self.shape, self.layout = (int(np.prod(self.shape)),), "flat"
        self.tail = None

    def add_dense(self, w: np.ndarray, b: np.ndarray | None) -> None:
        """w (out, in) in ONNX's column order -> edge-lls's (out, in) in NHWC-flatten order."""
        self.require_layout("flat")
        if w.shape[1] != self.shape[0]:
            raise self.fail(f"weights take {w.shape[1]} inputs, the tensor has {self.shape[0]}")
        if self.column_order is not None:                          # columns (c, h, w) -> (h, w, c)
            h, width, c = self.column_order
            w = w.reshape(w.shape[0], c, h, width).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
            self.column_order = None
        self.add_unit(_Unit(self.where, "dense", np.ascontiguousarray(w, np.float32), b, (w.shape[0],)))

    def activate(self, act: str) -> None:
        unit = self.require_tail(self.node.op_type, fresh=False)
        if unit.act != "none":
            raise self.fail(f"a second activation after {unit.node} ({unit.act})")
        if any(p["type"] != "maxpool" for p in unit.post):
            raise self.fail(f"an activation after average pooling ({unit.node}): edge-lls applies a "
                            f"block's activation before its pooling")
        unit.act = act              # after max pooling too: max commutes with a monotone activation

    def pool(self, post: dict, out_shape: tuple) -> None:
        unit = self.require_tail(self.node.op_type, fresh=False)
        if unit.kind != "conv":
            raise self.fail(f"pooling after {unit.node}: edge-lls pools only after a convolution")
        unit.post.append(post)
        self.shape = out_shape

    # --- the model
    def assemble(self) -> tuple[dict, dict[str, np.ndarray]]:
        """Group the units into blocks and a classifier: (spec, tensors)."""
        units = self.units
        if not units or units[-1].kind != "dense":
            raise self.fail("the last Conv / Gemm / MatMul must be a Gemm or MatMul: the classifier")
        classifier = units[-1]
        if classifier.bn is not None or classifier.act != "none":
            raise FormatError(f"{self.path}: {classifier.node}: the classifier (the last Gemm / MatMul) "
                              f"cannot have a BatchNormalization or activation after it")
        blocks, tensors, i = [], {}, 0
        while i < len(units) - 1:
            u, name = units[i], f"block{len(blocks)}"
            if u.kind == "dense":
                block = _dense_block(u, name, tensors)
                i += 1
            elif u.groups == 1:
                block = _conv_block(u, name, tensors, first=not blocks)
                i += 1
            else:
                pw = units[i + 1] if i + 1 < len(units) - 1 else None
                if u.post or pw is None or not pw.is_pointwise():
                    raise FormatError(f"{self.path}: {u.node}: a depthwise Conv must be followed directly by a "
                                      f"1x1, stride 1, unpadded Conv (edge-lls's dwsep block)")
                if u.act != pw.act:
                    raise FormatError(f"{self.path}: {pw.node}: activation {pw.act!r} differs from {u.node}'s "
                                      f"{u.act!r}; an edge-lls dwsep block uses one for both units")
                block = _dwsep_block(u, pw, name, tensors)
                i += 2
            blocks.append(block)
        tensors["classifier.w"] = classifier.w
        if classifier.b is not None:
            tensors["classifier.b"] = classifier.b
        spec = {"name": self.path.stem, "input_shape": list(self.input_shape),
                "num_classes": int(classifier.channels), "blocks": blocks,
                "classifier": {"bias": classifier.b is not None}}
        return spec, tensors


def _perm(node) -> list[int] | None:
    from onnx import helper
    for a in node.attribute:
        if a.name == "perm":
            return list(helper.get_attribute_value(a))
    return None


# ---------------------------------------------------------------- units -> block specs
def _pair(v: tuple):
    """(a, a) -> a; JSON keeps int or [a, b]."""
    return int(v[0]) if v[0] == v[1] else [int(v[0]), int(v[1])]


def _padding(pads: tuple):
    return int(pads[0]) if len(set(pads)) == 1 else [int(p) for p in pads]


def _bn_tensors(u: _Unit, prefix: str, tensors: dict) -> None:
    if u.bn is None:            # identity in inference: float32(var + eps) == 1, see the docstring
        c = u.channels
        gamma, beta, mean = np.ones(c, np.float32), np.zeros(c, np.float32), np.zeros(c, np.float32)
        var = np.full(c, np.float32(1) - np.float32(BN_EPS), np.float32)
    else:
        gamma, beta, mean, var = u.bn
    tensors.update({f"{prefix}.gamma": gamma, f"{prefix}.beta": beta,
                    f"{prefix}.running_mean": mean, f"{prefix}.running_var": var})


def _op_tensors(u: _Unit, prefix: str, tensors: dict, bias: bool) -> None:
    tensors[f"{prefix}.w"] = np.ascontiguousarray(u.w, np.float32)
    if bias:
        tensors[f"{prefix}.b"] = u.b if u.b is not None else np.zeros(u.channels, np.float32)


def _lls_pool(u: _Unit, first: bool) -> int:
    """The block's LLS pool size: 4 for the first conv block, 2 after (the zoo's SmallConv
    and VGG8), never more than the block's output."""
    return max(1, min(4 if first else 2, *u.out_shape[:2]))


def _conv_block(u: _Unit, name: str, tensors: dict, first: bool) -> dict:
    _op_tensors(u, f"{name}.conv", tensors, u.b is not None)
    _bn_tensors(u, f"{name}.bn", tensors)
    return {"type": "conv", "filters": int(u.channels), "kernel": _pair(u.w.shape[1:3]), "stride": _pair(u.stride),
            "padding": _padding(u.pads), "bias": u.b is not None, "act": u.act,
            "pool_size": _lls_pool(u, first), "post": u.post}


def _dwsep_block(dw: _Unit, pw: _Unit, name: str, tensors: dict) -> dict:
    bias = dw.b is not None or pw.b is not None        # one "bias" for both units: zeros fill in
    _op_tensors(dw, f"{name}.dw", tensors, bias)
    _bn_tensors(dw, f"{name}.bn1", tensors)
    _op_tensors(pw, f"{name}.pw", tensors, bias)
    _bn_tensors(pw, f"{name}.bn2", tensors)
    return {"type": "dwsep", "filters": int(pw.channels), "kernel": _pair(dw.w.shape[1:3]),
            "stride": _pair(dw.stride), "padding": _padding(dw.pads), "bias": bias, "act": dw.act,
            "pool_size": _lls_pool(pw, False), "post": pw.post}


def _dense_block(u: _Unit, name: str, tensors: dict) -> dict:
    _op_tensors(u, f"{name}.fc", tensors, u.b is not None)
    _bn_tensors(u, f"{name}.bn", tensors)
    return {"type": "dense", "units": int(u.channels), "bias": u.b is not None, "act": u.act,
            "pool_size": int(u.channels)}


# ------------------------------------------------------------------- op handlers (ONNX names)
def Conv(g: _Walk) -> None:
    g.require_layout("nchw")
    a = g.attrs()
    g.require_no_dilation(a)
    w = g.weights(1, "weights")                       # (M, C/group, KH, KW)
    b = g.weights(2, "bias", required=False)
    if w.ndim != 4:
        raise g.fail(f"weights of shape {list(w.shape)}: only 2-D convolutions are supported")
    group, cin, cout = int(a.get("group", 1)), g.shape[2], w.shape[0]
    if w.shape[1] * group != cin:
        raise g.fail(f"weights {list(w.shape)} with group={group} do not fit {cin} input channels")
    if group != 1 and not (group == cin and cout == cin):
        raise g.fail(f"group={group}: only 1 (a plain convolution) or depthwise (group = channels = "
                     f"{cin}, one filter each) are supported")
    kernel = tuple(w.shape[2:])
    if list(a.get("kernel_shape", kernel)) != list(kernel) or min(kernel) < 1:
        raise g.fail(f"kernel_shape {list(a.get('kernel_shape', kernel))} does not match the weights {list(w.shape)}")
    stride = g.pair(a, "strides")
    pads = g.pads(a, kernel)
    win = g.window(kernel, stride, pads)
    g.add_unit(_Unit(g.where, "conv", np.ascontiguousarray(w.transpose(0, 2, 3, 1)),   # -> (M, KH, KW, C/group)
                     None if b is None else b.reshape(-1), (win.out_h, win.out_w, cout), group, stride, pads))


def BatchNormalization(g: _Walk) -> None:
    a = g.attrs()
    if a.get("training_mode", 0) or a.get("spatial", 1) != 1:
        raise g.fail("only the inference form is supported (training_mode 0, spatial 1)")
    g.require_layout("nchw", "flat")                   # channels on axis 1, as ONNX normalises
    unit = g.require_tail("BatchNormalization")
    scale, bias, mean, var = (g.weights(i, role).astype(np.float64).reshape(-1)
                              for i, role in enumerate(("scale", "B", "mean", "var"), 1))
    if not all(v.size == unit.channels for v in (scale, bias, mean, var)):
        raise g.fail(f"parameters do not have {unit.channels} channels")
    eps = float(a.get("epsilon", 1e-5))
    if np.any(var + min(eps, BN_EPS) <= 0):
        raise g.fail("var + epsilon <= 0")
    # edge-lls divides by sqrt(var + BN_EPS): the same map for another epsilon (ratio 1 when equal)
    gamma = scale * np.sqrt(var + BN_EPS) / np.sqrt(var + eps)
    unit.bn = tuple(v.astype(np.float32) for v in (gamma, bias, mean, var))


def Relu(g: _Walk) -> None:
    g.activate("relu")


def LeakyRelu(g: _Walk) -> None:
    alpha = float(g.attrs().get("alpha", 0.01))
    if np.float32(alpha) != np.float32(LEAKY_SLOPE):
        raise g.fail(f"alpha {alpha:g}: edge-lls blocks use LeakyReLU with a fixed slope {LEAKY_SLOPE:g}")
    g.activate("leaky_relu")


def Clip(g: _Walk) -> None:
    if g.opset < 11:
        a = g.attrs()
        low, high = a.get("min", -np.inf), a.get("max", np.inf)
    else:
        low_t, high_t = g.constant(1, "min", required=False), g.constant(2, "max", required=False)
        low = -np.inf if low_t is None else float(np.asarray(low_t).reshape(-1)[0])
        high = np.inf if high_t is None else float(np.asarray(high_t).reshape(-1)[0])
    if low == 0 and high == 6:
        g.activate("relu6")
    elif low == 0 and high == np.inf:
        g.activate("relu")
    else:
        raise g.fail(f"range [{low:g}, {high:g}]: only [0, 6] (ReLU6) and [0, inf] (ReLU) are supported")


def _pool_attrs(g: _Walk, a: dict) -> tuple:
    """(kernel, stride, pads, window) of MaxPool / AveragePool."""
    g.require_layout("nchw")
    g.require_no_dilation(a)
    kernel = g.pair(a, "kernel_shape", ())
    stride = g.pair(a, "strides")                      # ONNX's default stride is 1, not the kernel
    pads = g.pads(a, kernel)
    if 2 * max(pads[:2]) > kernel[0] or 2 * max(pads[2:]) > kernel[1]:
        raise g.fail(f"pads {list(pads)} exceed half the kernel {list(kernel)}")
    win = g.window(kernel, stride, pads)
    if a.get("ceil_mode", 0):
        h, w = g.shape[:2]
        ceil = (-(-(h + pads[0] + pads[1] - kernel[0]) // stride[0]) + 1,
                -(-(w + pads[2] + pads[3] - kernel[1]) // stride[1]) + 1)
        if ceil != (win.out_h, win.out_w):
            raise g.fail(f"ceil_mode=1 gives {ceil[0]}x{ceil[1]}, not {win.out_h}x{win.out_w}: only floor "
                         f"output sizes are supported")
    return kernel, stride, pads, win


def MaxPool(g: _Walk) -> None:
    a = g.attrs()
    if a.get("storage_order", 0):
        raise g.fail("storage_order=1 is not supported")
    kernel, stride, pads, win = _pool_attrs(g, a)
    g.pool({"type": "maxpool", "kernel": _pair(kernel), "stride": _pair(stride), "padding": _padding(pads)},
           (win.out_h, win.out_w, g.shape[2]))


def AveragePool(g: _Walk) -> None:
    a = g.attrs()
    kernel, stride, pads, win = _pool_attrs(g, a)
    if a.get("count_include_pad", 0) and any(pads):
        raise g.fail("count_include_pad=1 with padding is not supported (edge-lls divides by the taps inside)")
    h, w = g.shape[:2]
    out = (win.out_h, win.out_w, g.shape[2])
    if kernel == stride and not any(pads) and h % kernel[0] == 0 and w % kernel[1] == 0:
        # The same windows as adaptive pooling, which a block's batch norm and activation
        # can feed without storing its output (Block.defers_output): less training memory.
        g.pool({"type": "adaptive_avgpool", "size": [h // kernel[0], w // kernel[1]]}, out)
    else:
        g.pool({"type": "avgpool", "kernel": _pair(kernel), "stride": _pair(stride), "padding": _padding(pads)}, out)


def GlobalAveragePool(g: _Walk) -> None:
    g.require_layout("nchw")
    g.pool({"type": "adaptive_avgpool", "size": [1, 1]}, (1, 1, g.shape[2]))


def Flatten(g: _Walk) -> None:
    axis = int(g.attrs().get("axis", 1))
    rank = 2 if g.layout == "flat" else 4
    if axis not in (1, 1 - rank):
        raise g.fail(f"axis {axis}: only axis 1 (keep the batch, flatten the rest) is supported")
    g.flatten()


def Reshape(g: _Walk) -> None:
    target = [int(v) for v in np.asarray(g.constant(1, "shape")).reshape(-1)]
    features = int(np.prod(g.shape))
    keeps_batch = {-1, 1, g.batch} if g.attrs().get("allowzero", 0) else {0, -1, 1, g.batch}
    flat = (len(target) == 2 and target[0] in keeps_batch and target[1] in (-1, features)
            and target != [-1, -1] and (target[0] != -1 or target[1] == features))
    if not flat:
        raise g.fail(f"shape {target}: only a flatten to (N, {features}) is supported")
    g.flatten()


def Transpose(g: _Walk) -> None:
    perm = _perm(g.node)
    if g.layout == "nchw" and perm == NCHW_TO_NHWC:
        g.layout = "nhwc"
    elif g.layout == "nhwc" and perm == NHWC_TO_NCHW:
        g.layout = "nchw"
    elif not (g.layout == "flat" and perm in ([0, 1], None)) and not (perm == [0, 1, 2, 3]):
        raise g.fail(f"perm {perm} on a {g.layout.upper()} tensor: only NCHW <-> NHWC is supported")
    # edge-lls's tensor is the same NHWC array either way: the tail unit stays the tail


def Gemm(g: _Walk) -> None:
    g.require_layout("flat")
    a = g.attrs()
    if a.get("transA", 0):
        raise g.fail("transA=1 is not supported")
    b = g.weights(1, "B")
    if b.ndim != 2:
        raise g.fail(f"B of shape {list(b.shape)}: expected 2-D")
    w = (b if a.get("transB", 0) else b.T) * np.float32(a.get("alpha", 1.0))        # (out, in)
    c = g.weights(2, "C", required=False)
    bias = None if c is None else _per_feature(g, c, w.shape[0], "C") * np.float32(a.get("beta", 1.0))
    g.add_dense(w, bias)


def MatMul(g: _Walk) -> None:
    g.require_layout("flat")
    b = g.weights(1, "B")
    if b.ndim != 2:
        raise g.fail(f"B of shape {list(b.shape)}: expected 2-D (in, out)")
    g.add_dense(b.T, None)


def Add(g: _Walk) -> None:
    unit = g.require_tail("Add (a bias)")
    position = 0 if g.node.input[0] in g.constants else 1
    c = g.weights(position, "bias")
    if unit.kind == "conv":
        g.require_layout("nchw")
        if c.size != 1 and c.shape not in ((unit.channels, 1, 1), (1, unit.channels, 1, 1)):
            raise g.fail(f"bias of shape {list(c.shape)}: a Conv's bias must be per channel, (1, C, 1, 1)")
        c = np.broadcast_to(c.reshape(-1), (unit.channels,))
    else:
        c = _per_feature(g, c, unit.channels, "bias")
    unit.b = (c if unit.b is None else unit.b + c).astype(np.float32)


def _per_feature(g: _Walk, c: np.ndarray, features: int, role: str) -> np.ndarray:
    if c.size != 1 and c.shape not in ((features,), (1, features)):
        raise g.fail(f"{role} of shape {list(c.shape)}: expected ({features},) or (1, {features})")
    return np.broadcast_to(c.reshape(-1), (features,)).astype(np.float32)


def Softmax(g: _Walk) -> None:
    g.require_layout("flat")
    unit = g.require_tail("Softmax", fresh=False)
    if unit.kind != "dense" or int(g.attrs().get("axis", -1 if g.opset >= 13 else 1)) not in (1, -1):
        raise g.fail("only a Softmax over the classes, after the last Gemm / MatMul, is supported")
    g.softmax = True


def Identity(g: _Walk) -> None:
    pass


def Dropout(g: _Walk) -> None:
    mode = g.constant(2, "training_mode", required=False)
    if mode is not None and bool(np.asarray(mode).reshape(-1)[0]):
        raise g.fail("training mode: only inference Dropout (a no-op) is supported")


OP_HANDLERS = {f.__name__: f for f in (
    Conv, BatchNormalization, Relu, LeakyRelu, Clip, MaxPool, AveragePool, GlobalAveragePool,
    Flatten, Reshape, Transpose, Gemm, MatMul, Add, Softmax, Identity, Dropout)}

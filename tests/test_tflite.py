"""TFLite import: bit-exact against LiteRT's reference kernels, sample images, malformed files.

LiteRT runs with OpResolverType.BUILTIN_REF (TFLite's reference kernels); its default XNNPACK
delegate rounds differently and is not a reference.  person_detect.tflite carries an out-of-range
quantized_dimension on its 1-D bias tensors that LiteRT refuses; edge-lls runs the original file
and LiteRT a copy with that field set to 0 (a 4-byte patch per tensor).
"""
from __future__ import annotations

import importlib
import struct
from pathlib import Path

import flatbuffers
import numpy as np
import pytest
import tflite
from PIL import Image
from tflite.BuiltinOperator import BuiltinOperator as Op
from tflite.BuiltinOptions import BuiltinOptions
from tflite.TensorType import TensorType

from edge_lls.errors import FormatError
from edge_lls.formats.tflite import read_tflite
from edge_lls.kernels.fixedpoint import dequantize, quantize
from edge_lls.program.interpreter import load_tflite
from edge_lls.program.params import ConvParams, DepthwiseConvParams, Dims, FullyConnectedParams, nhwc

import ai_edge_litert.interpreter as litert
from conftest import SAMPLES_DIR as SAMPLES
from conftest import VWW_DIR as MODELS
VWW_INT8 = MODELS / "vww_96_int8.tflite"
VWW_FLOAT = MODELS / "vww_96_float.tflite"
PERSON_DETECT = MODELS / "person_detect.tflite"
NO_PERSON, PERSON = 0, 1  # output order of all three models

pytestmark = pytest.mark.shared(MODELS, SAMPLES)


# ------------------------------------------------------------------ helpers

def litert_reference(model: Path | bytes):
    """LiteRT interpreter with TFLite's reference kernels, keeping every intermediate tensor."""
    source = dict(model_content=model) if isinstance(model, (bytes, bytearray)) else dict(model_path=str(model))
    interpreter = litert.Interpreter(**source, num_threads=1, experimental_preserve_all_tensors=True,
                                     experimental_op_resolver_type=litert.OpResolverType.BUILTIN_REF)
    interpreter.allocate_tensors()
    return interpreter


def fix_quantized_dimension(model_bytes: bytes) -> bytes:
    """Copy of a model with every out-of-range quantized_dimension set to 0 (for LiteRT)."""
    data = bytearray(model_bytes)
    subgraph = tflite.Model.GetRootAs(data, 0).Subgraphs(0)
    for i in range(subgraph.TensorsLength()):
        tensor = subgraph.Tensors(i)
        quantization = tensor.Quantization()
        field = quantization._tab.Offset(16) if quantization is not None else 0  # quantized_dimension
        if field and quantization.QuantizedDimension() >= max(tensor.ShapeLength(), 1):
            struct.pack_into("<i", data, quantization._tab.Pos + field, 0)
    return bytes(data)


def compare_every_tensor(graph, interpreter, inputs: list[np.ndarray], float_rtol: float = 1e-5) -> int:
    """Runs both engines on ``inputs``; asserts int8 tensors identical, float32 within rtol.
    Returns how many tensors were compared."""
    ours = graph.run_all(inputs)
    for detail, value in zip(interpreter.get_input_details(), inputs):
        interpreter.set_tensor(detail["index"], value)
    interpreter.invoke()
    for index, value in ours.items():
        theirs = interpreter.get_tensor(index)
        value = value.reshape(theirs.shape)
        name = graph.tensors[index].name
        if value.dtype == np.int8:
            assert np.array_equal(value, theirs), f"tensor {index} '{name}': {np.count_nonzero(value != theirs)} values differ"
        else:
            scale = max(float(np.abs(theirs).max()), 1e-30)
            assert np.abs(value - theirs).max() <= float_rtol * scale, f"tensor {index} '{name}' beyond rtol {float_rtol}"
    return len(ours)


def read_gray_bmp(path: Path) -> np.ndarray:
    """(96, 96) uint8 pixel bytes of a sample BMP, top row first.  The files are 8-bit with an
    identity grey palette and a positive height, i.e. rows stored bottom-up."""
    header = path.read_bytes()[:54]
    width, height = struct.unpack_from("<ii", header, 18)
    bits_per_pixel = struct.unpack_from("<H", header, 28)[0]
    assert (width, height, bits_per_pixel) == (96, 96, 8)  # height > 0: bottom-up storage
    pixels = np.array(Image.open(path))  # PIL undoes the bottom-up order
    pixel_offset = struct.unpack_from("<I", header, 10)[0]
    stored = np.frombuffer(path.read_bytes()[pixel_offset:pixel_offset + 96 * 96], np.uint8).reshape(96, 96)
    assert np.array_equal(stored[::-1], pixels)
    return pixels


def natural_gray(name: str) -> np.ndarray:
    """The sample as an ordinary grey image.  person.bmp stores int8 codes (gray - 128, two's
    complement) in its pixel bytes, the form TFLM's test copies straight into the input tensor;
    no_person.bmp stores plain grey levels."""
    pixels = read_gray_bmp(SAMPLES / f"{name}.bmp")
    return pixels ^ 0x80 if name == "person" else pixels


def person_detect_input(gray: np.ndarray) -> np.ndarray:
    """person_detect.tflite input: (1,96,96,1) int8, q = gray - 128 (scale 2/255, zero point -1
    maps q to gray/127.5 - 1 within one code)."""
    return (gray.astype(np.int16) - 128).astype(np.int8)[None, :, :, None]


def vww_input(gray: np.ndarray, detail: dict) -> np.ndarray:
    """vww_96_int8.tflite input: RGB in [0, 1] quantized with the input tensor's scale/zero point."""
    rgb = np.repeat(gray[:, :, None], 3, axis=2)[None] / 255.0
    return quantize(rgb, detail["scale"], detail["zero_point"])


@pytest.fixture(scope="module")
def person_detect_patched(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("litert") / "person_detect_fixed_qdim.tflite"
    path.write_bytes(fix_quantized_dimension(PERSON_DETECT.read_bytes()))
    return path


@pytest.fixture(scope="module")
def graphs():
    return {name: load_tflite(path) for name, path in
            (("vww_int8", VWW_INT8), ("person_detect", PERSON_DETECT), ("vww_float", VWW_FLOAT))}


# ------------------------------------------------------------------ real models vs LiteRT

def test_person_detect_is_rejected_by_litert_but_loads_here(graphs, person_detect_patched):
    with pytest.raises(Exception, match="quantized_dimension"):
        litert_reference(PERSON_DETECT)
    litert_reference(person_detect_patched)  # the patch is all LiteRT needs
    assert graphs["person_detect"].input_details[0]["shape"] == (1, 96, 96, 1)


def test_details_report_shape_dtype_and_quantization(graphs):
    detail = graphs["vww_int8"].input_details[0]
    assert detail["shape"] == (1, 96, 96, 3) and detail["dtype"] == np.int8
    assert detail["zero_point"] == -128 and abs(detail["scale"] - 1 / 255) < 1e-9
    out = graphs["vww_int8"].output_details[0]
    assert out["shape"] == (1, 2) and out["zero_point"] == -128 and out["scale"] == 1 / 256
    assert graphs["vww_float"].input_details[0]["dtype"] == np.float32


@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain_kernels"])
@pytest.mark.parametrize("model", ["vww_int8", "person_detect"])
def test_samples_bit_exact_on_every_tensor(model, fast, graphs, person_detect_patched):
    graph = graphs[model] if fast else load_tflite(VWW_INT8 if model == "vww_int8" else PERSON_DETECT, fast=False)
    interpreter = litert_reference(VWW_INT8 if model == "vww_int8" else person_detect_patched)
    for name in ("person", "no_person"):
        gray = natural_gray(name)
        x = vww_input(gray, graph.input_details[0]) if model == "vww_int8" else person_detect_input(gray)
        assert compare_every_tensor(graph, interpreter, [x]) == 1 + len(graph.operators)


@pytest.mark.parametrize("model", ["vww_int8", "person_detect"])
def test_random_inputs_bit_exact_on_every_tensor(model, graphs, person_detect_patched):
    graph = graphs[model]
    interpreter = litert_reference(VWW_INT8 if model == "vww_int8" else person_detect_patched)
    rng = np.random.default_rng(2024)
    shape = graph.input_details[0]["shape"]
    for trial in range(200):
        if trial % 2:  # half uniform noise, half smooth images (realistic activation statistics)
            x = rng.integers(-128, 128, shape).astype(np.int8)
        else:
            coarse = rng.integers(-128, 128, (1, 12, 12, shape[3]))
            x = np.repeat(np.repeat(coarse, 8, axis=1), 8, axis=2).astype(np.int8)
        compare_every_tensor(graph, interpreter, [x])


def test_plain_kernel_path_random_inputs_bit_exact():
    graph = load_tflite(VWW_INT8, fast=False)
    interpreter = litert_reference(VWW_INT8)
    rng = np.random.default_rng(7)
    for _ in range(5):
        compare_every_tensor(graph, interpreter, [rng.integers(-128, 128, (1, 96, 96, 3)).astype(np.int8)])


RECORDS = {"CONV_2D": ConvParams, "DEPTHWISE_CONV_2D": DepthwiseConvParams, "FULLY_CONNECTED": FullyConnectedParams}


def _record_fields(record) -> dict:
    return {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in vars(record).items() if k != "quant"} | \
        {"multiplier": record.quant.multiplier.tolist(), "shift": record.quant.shift.tolist()}


@pytest.mark.parametrize("path", [VWW_INT8, PERSON_DETECT], ids=["vww_int8", "person_detect"])
def test_each_conv_depthwise_and_fc_has_one_prepared_record_both_paths_read(path):
    # The fast path and the literal kernels are prepared from the same record, holding
    # CMSIS-NN's fields; the bit-exact tests above show both compute LiteRT's bytes from it.
    program = read_tflite(path)
    fast, plain = load_tflite(path), load_tflite(path, fast=False)
    ops = [op for op in program.operators if op.opcode in RECORDS]
    # Every int8 operator has a record (pool, softmax and reshape too, for the firmware image);
    # exactly the conv, depthwise and FC operators have these three kinds.
    kinds = tuple(RECORDS.values())
    for graph in (fast, plain):
        assert {i for i, record in graph.params.items() if isinstance(record, kinds)} == {op.index for op in ops}
    assert ops
    for op in ops:
        record = fast.params[op.index]
        assert isinstance(record, RECORDS[op.opcode]), op.opcode
        assert _record_fields(record) == _record_fields(plain.params[op.index])
        x, w, out = (program.tensors[i] for i in (*op.inputs[:2], op.outputs[0]))
        assert record.input_offset == -x.zero_point and record.output_offset == out.zero_point
        assert -128 <= record.activation[0] <= record.activation[1] <= 127
        channels = out.shape[-1]
        assert record.quant.multiplier.dtype == record.quant.shift.dtype == np.int32
        assert record.quant.multiplier.shape == record.bias.shape == (channels,)
        assert np.all((record.quant.multiplier >= 1 << 30) | (record.quant.multiplier == 0))   # Q31, normalised
        if op.opcode == "FULLY_CONNECTED":
            depth = w.shape[1]
            assert record.filter_dims == Dims(depth, 1, 1, channels)
            assert record.input_dims == Dims(x.size // depth, 1, 1, depth)
        else:
            assert (record.input_dims, record.filter_dims, record.output_dims) == (nhwc(x.shape), nhwc(w.shape),
                                                                                 nhwc(out.shape))
            assert record.stride == (op.options["stride_h"], op.options["stride_w"])
        if op.opcode == "DEPTHWISE_CONV_2D":
            assert record.ch_mult == channels // x.shape[-1]


def test_float_model_within_1e5_relative(graphs):
    graph = graphs["vww_float"]
    interpreter = litert_reference(VWW_FLOAT)
    rng = np.random.default_rng(3)
    inputs = [np.repeat(natural_gray(n)[:, :, None], 3, axis=2)[None].astype(np.float32) / 255 for n in ("person", "no_person")]
    inputs += [rng.random((1, 96, 96, 3), dtype=np.float32) for _ in range(10)]
    for x in inputs:
        ours = graph.run([x])[0]
        interpreter.set_tensor(interpreter.get_input_details()[0]["index"], x)
        interpreter.invoke()
        theirs = interpreter.get_tensor(interpreter.get_output_details()[0]["index"])
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=0)


# ------------------------------------------------------------------ sample images

def test_tflm_recipe_raw_bytes_as_int8(graphs):
    """TFLM's person_detection_test copies the BMP pixel bytes (top row first) into the int8
    input unchanged.  That classifies both samples correctly."""
    graph = graphs["person_detect"]
    for name, expected in (("person", PERSON), ("no_person", NO_PERSON)):
        raw = read_gray_bmp(SAMPLES / f"{name}.bmp").view(np.int8)[None, :, :, None]
        scores = graph.run([raw])[0][0]
        assert int(np.argmax(scores)) == expected, (name, scores)


@pytest.mark.parametrize("name, expected", [("person", PERSON), ("no_person", NO_PERSON)])
def test_samples_classified_by_all_three_models(name, expected, graphs):
    gray = natural_gray(name)
    scores = {
        "person_detect": graphs["person_detect"].run([person_detect_input(gray)])[0][0],
        "vww_int8": graphs["vww_int8"].run([vww_input(gray, graphs["vww_int8"].input_details[0])])[0][0],
        "vww_float": graphs["vww_float"].run([np.repeat(gray[:, :, None], 3, axis=2)[None].astype(np.float32) / 255])[0][0],
    }
    for model, score in scores.items():
        assert int(np.argmax(score)) == expected, (model, name, score)
    probability = dequantize(scores["person_detect"], 1 / 256, -128)[expected]
    assert probability > 0.75


# ------------------------------------------------------------------ tiny models, one op each

TYPE_CODES = {np.dtype(np.float32): TensorType.FLOAT32, np.dtype(np.int8): TensorType.INT8,
              np.dtype(np.int32): TensorType.INT32}


def tensor(name, shape, dtype, data=None, scale=None, zero_point=None, quantized_dimension=0):
    return dict(name=name, shape=tuple(shape), dtype=np.dtype(dtype), data=data, scale=scale,
                zero_point=zero_point, quantized_dimension=quantized_dimension)


def schema(table: str):
    """The generated module tflite.<table> (the package namespace holds the class of that name)."""
    return importlib.import_module(f"tflite.{table}")


def options(kind: str, **fields):
    """(BuiltinOptions type, builder callback) for tflite.<kind> with the given fields."""
    module = schema(kind)

    def build(builder):
        getattr(module, f"{kind}Start")(builder)
        for field, value in fields.items():
            getattr(module, f"{kind}Add{field}")(builder, value)
        return getattr(module, f"{kind}End")(builder)
    return getattr(BuiltinOptions, kind), build


def _int_vector(builder, values, prepend, width=4):
    builder.StartVector(width, len(values), width)
    for value in reversed(list(values)):
        prepend(value)
    return builder.EndVector()


def _offset_vector(builder, offsets):
    builder.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        builder.PrependUOffsetTRelative(offset)
    return builder.EndVector()


def build_model(tensors: list[dict], operators: list[dict], inputs: list[int], outputs: list[int]) -> bytes:
    """A one-subgraph .tflite flatbuffer.  operators: dict(code, inputs, outputs, options=(type, build))."""
    b = flatbuffers.Builder(4096)
    buffers = [None] + [t["data"] for t in tensors if t["data"] is not None]
    buffer_offsets = []
    for data in buffers:
        vector = b.CreateNumpyVector(np.frombuffer(np.ascontiguousarray(data).tobytes(), np.uint8)) if data is not None else None
        schema("Buffer").BufferStart(b)
        if vector is not None:
            schema("Buffer").BufferAddData(b, vector)
        buffer_offsets.append(schema("Buffer").BufferEnd(b))
    tensor_offsets, next_buffer = [], 1
    for t in tensors:
        name = b.CreateString(t["name"])
        shape = b.CreateNumpyVector(np.array(t["shape"], np.int32))
        quantization = None
        if t["scale"] is not None:
            scales = b.CreateNumpyVector(np.atleast_1d(np.asarray(t["scale"], np.float32)))
            zero_points = b.CreateNumpyVector(np.atleast_1d(np.asarray(t["zero_point"], np.int64)))
            schema("QuantizationParameters").QuantizationParametersStart(b)
            schema("QuantizationParameters").QuantizationParametersAddScale(b, scales)
            schema("QuantizationParameters").QuantizationParametersAddZeroPoint(b, zero_points)
            schema("QuantizationParameters").QuantizationParametersAddQuantizedDimension(b, t["quantized_dimension"])
            quantization = schema("QuantizationParameters").QuantizationParametersEnd(b)
        schema("Tensor").TensorStart(b)
        schema("Tensor").TensorAddShape(b, shape)
        schema("Tensor").TensorAddType(b, TYPE_CODES[t["dtype"]])
        schema("Tensor").TensorAddName(b, name)
        if t["data"] is not None:
            schema("Tensor").TensorAddBuffer(b, next_buffer)
            next_buffer += 1
        if quantization is not None:
            schema("Tensor").TensorAddQuantization(b, quantization)
        tensor_offsets.append(schema("Tensor").TensorEnd(b))
    codes = sorted({op["code"] for op in operators})
    operator_offsets = []
    for op in operators:
        op_inputs = _int_vector(b, op["inputs"], b.PrependInt32)
        op_outputs = _int_vector(b, op["outputs"], b.PrependInt32)
        options_type, build_options = op.get("options", (BuiltinOptions.NONE, None))
        options_offset = build_options(b) if build_options else None
        schema("Operator").OperatorStart(b)
        schema("Operator").OperatorAddOpcodeIndex(b, codes.index(op["code"]))
        schema("Operator").OperatorAddInputs(b, op_inputs)
        schema("Operator").OperatorAddOutputs(b, op_outputs)
        if options_offset is not None:
            schema("Operator").OperatorAddBuiltinOptionsType(b, options_type)
            schema("Operator").OperatorAddBuiltinOptions(b, options_offset)
        operator_offsets.append(schema("Operator").OperatorEnd(b))
    tensors_vector = _offset_vector(b, tensor_offsets)
    operators_vector = _offset_vector(b, operator_offsets)
    inputs_vector = _int_vector(b, inputs, b.PrependInt32)
    outputs_vector = _int_vector(b, outputs, b.PrependInt32)
    schema("SubGraph").SubGraphStart(b)
    schema("SubGraph").SubGraphAddTensors(b, tensors_vector)
    schema("SubGraph").SubGraphAddInputs(b, inputs_vector)
    schema("SubGraph").SubGraphAddOutputs(b, outputs_vector)
    schema("SubGraph").SubGraphAddOperators(b, operators_vector)
    subgraph = schema("SubGraph").SubGraphEnd(b)
    code_offsets = []
    for code in codes:
        schema("OperatorCode").OperatorCodeStart(b)
        schema("OperatorCode").OperatorCodeAddDeprecatedBuiltinCode(b, min(code, 127))
        schema("OperatorCode").OperatorCodeAddBuiltinCode(b, code)
        schema("OperatorCode").OperatorCodeAddVersion(b, 1)
        code_offsets.append(schema("OperatorCode").OperatorCodeEnd(b))
    codes_vector = _offset_vector(b, code_offsets)
    subgraphs_vector = _offset_vector(b, [subgraph])
    buffers_vector = _offset_vector(b, buffer_offsets)
    schema("Model").ModelStart(b)
    schema("Model").ModelAddVersion(b, 3)
    schema("Model").ModelAddOperatorCodes(b, codes_vector)
    schema("Model").ModelAddSubgraphs(b, subgraphs_vector)
    schema("Model").ModelAddBuffers(b, buffers_vector)
    b.Finish(schema("Model").ModelEnd(b), file_identifier=b"TFL3")
    return bytes(b.Output())


def single_op_model(code, op_inputs: list[dict], output: dict, opts=None, constants=()) -> bytes:
    """Model with one op: runtime inputs first, then constant operands (None = omitted)."""
    tensors = list(op_inputs) + [c for c in constants if c is not None] + [output]
    indices, position = [], len(op_inputs)
    for c in constants:
        indices.append(-1 if c is None else position)
        position += c is not None
    op = dict(code=code, inputs=list(range(len(op_inputs))) + indices, outputs=[len(tensors) - 1])
    if opts is not None:
        op["options"] = opts
    return build_model(tensors, [op], list(range(len(op_inputs))), [len(tensors) - 1])


def assert_matches_litert(model_bytes: bytes, trials: int = 20, seed: int = 0, fast_modes=(True, False)):
    interpreter = litert_reference(model_bytes)
    rng = np.random.default_rng(seed)
    for fast in fast_modes:
        graph = load_tflite(model_bytes, fast=fast)
        for _ in range(trials):
            inputs = []
            for detail in graph.input_details:
                if detail["dtype"] == np.int8:
                    inputs.append(rng.integers(-128, 128, detail["shape"]).astype(np.int8))
                else:
                    inputs.append((rng.normal(0, 4, detail["shape"])).astype(np.float32))
            compare_every_tensor(graph, interpreter, inputs, float_rtol=0)


def q8(name, shape, scale, zero_point):
    return tensor(name, shape, np.int8, scale=scale, zero_point=zero_point)


def conv_weights(rng, shape, channel_axis):
    channels = shape[channel_axis]
    data = rng.integers(-127, 128, shape).astype(np.int8)
    return tensor("w", shape, np.int8, data=data, scale=rng.uniform(0.002, 0.02, channels).astype(np.float32),
                  zero_point=np.zeros(channels, np.int64), quantized_dimension=channel_axis)


@pytest.mark.parametrize("padding, stride, dilation, activation", [
    (0, 1, 1, 3), (1, 2, 1, 1), (0, 2, 1, 0), (1, 1, 2, 3), (0, 1, 1, 0)])
def test_conv_2d_op_matches_litert(padding, stride, dilation, activation):
    rng = np.random.default_rng(padding * 10 + stride + dilation)
    x = q8("x", (1, 9, 11, 5), 0.05, 3)
    weights = conv_weights(rng, (7, 3, 3, 5), 0)
    bias = tensor("b", (7,), np.int32, data=rng.integers(-3000, 3000, 7).astype(np.int32),
                  scale=np.full(7, 1e-4, np.float32), zero_point=np.zeros(7, np.int64))
    out_h = (9 + stride - 1) // stride if padding == 0 else (9 - 2 * dilation - 1) // stride + 1
    out_w = (11 + stride - 1) // stride if padding == 0 else (11 - 2 * dilation - 1) // stride + 1
    out = q8("y", (1, out_h, out_w, 7), 0.1, -7)
    opts = options("Conv2DOptions", Padding=padding, StrideW=stride, StrideH=stride, DilationWFactor=dilation,
                   DilationHFactor=dilation, FusedActivationFunction=activation)
    assert_matches_litert(single_op_model(Op.CONV_2D, [x], out, opts, [weights, bias]))


@pytest.mark.parametrize("multiplier, stride, padding", [(1, 1, 0), (2, 2, 0), (1, 2, 1), (3, 1, 1)])
def test_depthwise_conv_2d_op_matches_litert(multiplier, stride, padding):
    rng = np.random.default_rng(multiplier * 7 + stride)
    channels = 4
    x = q8("x", (1, 10, 9, channels), 0.04, -20)
    weights = conv_weights(rng, (1, 3, 3, channels * multiplier), 3)
    bias = tensor("b", (channels * multiplier,), np.int32, data=rng.integers(-3000, 3000, channels * multiplier).astype(np.int32))
    out_h = (10 + stride - 1) // stride if padding == 0 else (10 - 3) // stride + 1
    out_w = (9 + stride - 1) // stride if padding == 0 else (9 - 3) // stride + 1
    out = q8("y", (1, out_h, out_w, channels * multiplier), 0.08, 5)
    opts = options("DepthwiseConv2DOptions", Padding=padding, StrideW=stride, StrideH=stride,
                   DepthMultiplier=multiplier, FusedActivationFunction=3)
    assert_matches_litert(single_op_model(Op.DEPTHWISE_CONV_2D, [x], out, opts, [weights, bias]))


@pytest.mark.parametrize("scales, activation", [((0.05, 0.01, 0.15), 1), ((0.0156, 0.0047, 0.0146), 0),
                                                 ((0.1, 0.003, 0.02), 3)])
def test_fully_connected_op_matches_litert(scales, activation):
    """Wide enough (2048 outputs a run) that a rounding-mode mismatch cannot hide: LiteRT's FC
    rounds once where the convolutions round twice."""
    rng = np.random.default_rng(5)
    in_scale, w_scale, out_scale = scales
    x = q8("x", (32, 100), in_scale, 2)
    weights = tensor("w", (64, 100), np.int8, data=rng.integers(-127, 128, (64, 100)).astype(np.int8),
                     scale=w_scale, zero_point=0)
    bias = tensor("b", (64,), np.int32, data=rng.integers(-5000, 5000, 64).astype(np.int32))
    out = q8("y", (32, 64), out_scale, -3)
    opts = options("FullyConnectedOptions", FusedActivationFunction=activation)
    assert_matches_litert(single_op_model(Op.FULLY_CONNECTED, [x], out, opts, [weights, bias]), trials=10)


@pytest.mark.parametrize("code", [Op.AVERAGE_POOL_2D, Op.MAX_POOL_2D])
@pytest.mark.parametrize("padding, filter_size, stride", [(0, 3, 2), (1, 2, 2), (0, 3, 1)])
def test_pool_ops_match_litert(code, padding, filter_size, stride):
    x = q8("x", (2, 9, 8, 3), 0.05, -4)
    out_h = (9 + stride - 1) // stride if padding == 0 else (9 - filter_size) // stride + 1
    out_w = (8 + stride - 1) // stride if padding == 0 else (8 - filter_size) // stride + 1
    out = q8("y", (2, out_h, out_w, 3), 0.05, -4)
    opts = options("Pool2DOptions", Padding=padding, StrideW=stride, StrideH=stride, FilterWidth=filter_size,
                   FilterHeight=filter_size, FusedActivationFunction=0)
    assert_matches_litert(single_op_model(code, [x], out, opts))


@pytest.mark.parametrize("out_scale, out_zp", [(0.05, -4), (0.03, 10), (0.2, -128)])
def test_mean_op_matches_litert(out_scale, out_zp):
    x = q8("x", (4, 7, 5, 32), 0.05, -4)
    axes = tensor("axes", (2,), np.int32, data=np.array([1, 2], np.int32))
    out = q8("y", (4, 1, 1, 32), out_scale, out_zp)
    assert_matches_litert(single_op_model(Op.MEAN, [x], out, options("ReducerOptions", KeepDims=True), [axes]))


@pytest.mark.parametrize("shape_b, activation", [((2, 5, 4, 3), 3), ((1, 1, 4, 3), 0), ((2, 5, 4, 3), 0)])
def test_add_op_matches_litert(shape_b, activation):
    a = q8("a", (2, 5, 4, 3), 0.04, -10)
    b = q8("b", shape_b, 0.11, 7)
    out = q8("y", (2, 5, 4, 3), 0.09, -2)
    assert_matches_litert(single_op_model(Op.ADD, [a, b], out, options("AddOptions", FusedActivationFunction=activation)))


def test_pad_op_matches_litert():
    x = q8("x", (1, 4, 5, 3), 0.05, 9)
    paddings = tensor("pads", (4, 2), np.int32, data=np.array([[0, 0], [1, 2], [2, 0], [0, 1]], np.int32))
    out = q8("y", (1, 7, 7, 4), 0.05, 9)
    assert_matches_litert(single_op_model(Op.PAD, [x], out, None, [paddings]))


@pytest.mark.parametrize("input_scale, beta", [(0.05, 1.0), (0.5, 1.0), (0.01, 2.0), (0.2, 0.5)])
def test_softmax_op_matches_litert(input_scale, beta):
    x = q8("x", (3, 10), input_scale, 5)
    out = q8("y", (3, 10), 1 / 256, -128)
    assert_matches_litert(single_op_model(Op.SOFTMAX, [x], out, options("SoftmaxOptions", Beta=beta)), trials=40)


def test_quantize_and_dequantize_ops_match_litert():
    x = tensor("x", (2, 50), np.float32)
    out = q8("y", (2, 50), 0.037, -11)
    assert_matches_litert(single_op_model(Op.QUANTIZE, [x], out))
    x8 = q8("x", (2, 50), 0.037, -11)
    back = tensor("y", (2, 50), np.float32)
    assert_matches_litert(single_op_model(Op.DEQUANTIZE, [x8], back))
    for out_scale in (0.05, 0.9):  # the second needs a right shift, where rounding modes differ
        requantized = q8("z", (2, 50), out_scale, 3)
        assert_matches_litert(single_op_model(Op.QUANTIZE, [x8], requantized), trials=40)


def test_reshape_op_matches_litert():
    x = q8("x", (1, 2, 3, 4), 0.05, 1)
    shape = tensor("shape", (2,), np.int32, data=np.array([6, 4], np.int32))
    out = q8("y", (6, 4), 0.05, 1)
    assert_matches_litert(single_op_model(Op.RESHAPE, [x], out, options("ReshapeOptions"), [shape]))


# ------------------------------------------------------------------ malformed files

def test_truncated_file_raises_format_error(tmp_path):
    data = VWW_INT8.read_bytes()
    for cut in (4, 100, len(data) // 2, len(data) - 1000):
        path = tmp_path / f"cut{cut}.tflite"
        path.write_bytes(data[:cut])
        with pytest.raises(FormatError, match="trunc|short|corrupt|past the end"):
            load_tflite(path)


def test_wrong_identifier_raises_format_error(tmp_path):
    data = bytearray(VWW_INT8.read_bytes())
    data[4:8] = b"XXXX"
    path = tmp_path / "bad_magic.tflite"
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="identifier"):
        load_tflite(path)


def test_unsupported_op_raises_format_error_naming_it():
    x = q8("x", (1, 8), 0.1, 0)
    model = single_op_model(Op.LOGISTIC, [x], q8("y", (1, 8), 1 / 256, -128))
    with pytest.raises(FormatError, match="LOGISTIC"):
        load_tflite(model)


def test_patched_opcode_in_real_model_raises_format_error():
    data = bytearray(VWW_INT8.read_bytes())
    model = tflite.Model.GetRootAs(data, 0)
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        if code.BuiltinCode() == Op.SOFTMAX:
            for field in (4, 10):  # deprecated_builtin_code (int8) and builtin_code (int32)
                offset = code._tab.Offset(field)
                if offset:
                    pack = "<b" if field == 4 else "<i"
                    struct.pack_into(pack, data, code._tab.Pos + offset, Op.LOG_SOFTMAX)
    with pytest.raises(FormatError, match="LOG_SOFTMAX"):
        load_tflite(bytes(data))


def test_missing_tensor_raises_format_error():
    x = q8("x", (1, 8), 0.1, 0)
    y = q8("y", (1, 8), 1 / 256, -128)
    model = build_model([x, y], [dict(code=Op.SOFTMAX, inputs=[0], outputs=[5])], [0], [1])
    with pytest.raises(FormatError, match="tensor index 5"):
        load_tflite(model)


def test_wrong_weight_shape_raises_format_error():
    rng = np.random.default_rng(0)
    x = q8("x", (1, 6, 6, 3), 0.05, 0)
    weights = conv_weights(rng, (4, 3, 3, 2), 0)  # 2 input channels for a 3-channel input
    model = single_op_model(Op.CONV_2D, [x], q8("y", (1, 6, 6, 4), 0.1, 0),
                            options("Conv2DOptions", Padding=0, StrideW=1, StrideH=1), [weights])
    with pytest.raises(FormatError, match="CONV_2D.*channels"):
        load_tflite(model)


def test_weight_buffer_size_mismatch_raises_format_error():
    x = q8("x", (1, 4), 0.05, 0)
    weights = tensor("w", (3, 4), np.int8, data=np.zeros(10, np.int8), scale=0.01, zero_point=0)
    model = single_op_model(Op.FULLY_CONNECTED, [x], q8("y", (1, 3), 0.1, 0), options("FullyConnectedOptions"), [weights])
    with pytest.raises(FormatError, match="'w' buffer holds 10 bytes"):
        load_tflite(model)


def test_accumulator_overflow_risk_is_refused():
    x = q8("x", (1, 70000), 0.05, 0)
    weights = tensor("w", (1, 70000), np.int8, data=np.ones((1, 70000), np.int8), scale=0.01, zero_point=0)
    model = single_op_model(Op.FULLY_CONNECTED, [x], q8("y", (1, 1), 0.1, 0), options("FullyConnectedOptions"), [weights])
    with pytest.raises(FormatError, match="overflow"):
        load_tflite(model)

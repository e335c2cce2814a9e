"""edge-lls profile: MAC counts against hand-computed values, the MLPerf-Tiny VWW forward
count, the analytic layout equal to the runtime's arena, and the analytic peak equal to
the measured one (tracemalloc over real steps) within 20 %."""
import argparse
import json

import numpy as np
import pytest

from edge_lls.errors import ConfigError
from edge_lls.models import build_model
from edge_lls.nn.layers import AdaptiveAvgPool2d, AvgPool2d, Conv2d, Dense, MaxPool2d
from edge_lls.nn.model import Model
from edge_lls.cli.profile import add_arguments, run
from edge_lls.profile import (attach_measurement, head_signal_macs, layout_bytes, measure_step, op_macs,
                              pool_backward_macs, pool_macs, profile_model)
from edge_lls.rules import RULES
from edge_lls.rules.heads import ProjectionHead
from edge_lls.trainer import Trainer

ZOO = {"smallconv": (28, 28, 1), "smallconv-l": (28, 28, 1), "vgg8": (32, 32, 3), "mobilenetv1": (96, 96, 3)}


# ------------------------------------------------------------------ layer MAC counts
def test_conv_macs_stride_padding_groups():
    # 9x9 input, 3x3 kernel, stride 2, pad 1 -> 5x5; groups 2: each output sees 9*2 inputs.
    conv = Conv2d("c", 4, 8, kernel=3, stride=2, padding=1, groups=2)
    assert conv.out_shape((2, 9, 9, 4)) == (2, 5, 5, 8)
    assert op_macs(conv, (2, 9, 9, 4)) == 2 * 5 * 5 * 8 * 3 * 3 * 2 == 7200
    # depthwise 3x3 'same' stride 1 on 8x8x6: one tap per kernel position per channel
    dw = Conv2d("d", 6, 6, kernel=3, stride=1, padding="same", groups=6)
    assert op_macs(dw, (1, 8, 8, 6)) == 8 * 8 * 6 * 9 == 3456
    # depthwise stride 2 'same' (TF: pad bottom/right) on 7x7: out 4x4
    dw2 = Conv2d("d2", 6, 6, kernel=3, stride=2, padding="same", groups=6)
    assert op_macs(dw2, (1, 7, 7, 6)) == 4 * 4 * 6 * 9 == 864
    # pointwise 1x1
    pw = Conv2d("p", 5, 7, kernel=1, stride=1, padding=0)
    assert op_macs(pw, (3, 4, 4, 5)) == 3 * 4 * 4 * 7 * 5 == 1680
    # MobileNetV1 stem: 96x96x3 -> 48x48x8, 3x3 stride 2 'same'
    stem = Conv2d("s", 3, 8, kernel=3, stride=2, padding="same", bias=False)
    assert op_macs(stem, (1, 96, 96, 3)) == 48 * 48 * 8 * 27 == 497_664
    # rectangular kernel, valid padding
    rect = Conv2d("r", 2, 3, kernel=(1, 3), stride=1, padding="valid")
    assert op_macs(rect, (1, 4, 5, 2)) == 4 * 3 * 3 * 1 * 3 * 2 == 216


def test_dense_macs():
    fc = Dense("f", 12, 10)
    assert op_macs(fc, (4, 2, 2, 3)) == 4 * 12 * 10 == 480
    assert op_macs(Dense("g", 512, 10), (64, 512)) == 64 * 512 * 10


def test_pooling_macs():
    # max pool 2x2 stride 2 on 4x4x3: 4 outputs x 4 taps x 3 channels
    assert pool_macs(MaxPool2d(2), (1, 4, 4, 3)) == 48
    assert pool_macs(AvgPool2d(2), (2, 4, 4, 3)) == 96
    # 3x3 stride 2 pad 1 on 5x5: rows/cols covered per output 2, 3, 2 -> 7 x 7 taps
    assert pool_macs(MaxPool2d(3, 2, 1), (1, 5, 5, 1)) == 49
    assert pool_macs(AvgPool2d(3, 2, 1), (1, 5, 5, 2)) == 98
    # adaptive 5 -> 3 (PyTorch windows overlap: [0,2) [1,4) [3,5) -> 2+3+2 = 7 per axis)
    assert pool_macs(AdaptiveAvgPool2d(3), (1, 5, 5, 2)) == 7 * 7 * 2
    # adaptive 4 -> 2: plain partition, every input read once
    assert pool_macs(AdaptiveAvgPool2d(2), (3, 4, 4, 5)) == 3 * 4 * 4 * 5
    assert pool_macs(AdaptiveAvgPool2d((1, 1)), (2, 3, 3, 4)) == 2 * 9 * 4
    # backward: max pool scatters one add per output; average pooling spreads over taps again
    assert pool_backward_macs(MaxPool2d(2), (1, 4, 4, 3)) == 2 * 2 * 3
    assert pool_backward_macs(AvgPool2d(2), (1, 4, 4, 3)) == 48


def test_mlperf_vww_forward_macs():
    model = build_model("mobilenetv1", num_classes=2, input_shape=(96, 96, 3), width=0.25)
    p = profile_model(model, "lls", 2)
    assert abs(p.forward_macs_per_sample - 7_489_664) <= 0.01 * 7_489_664
    assert p.forward_macs_per_sample == 7_489_664           # conv + depthwise + FC, exactly
    assert p.forward_macs == 2 * 7_489_664


# ------------------------------------------------------------------ learning signal
def test_lls_head_signal_hand_counted():
    n, k = 5, 3
    head = ProjectionHead("h", (8, 8, 4), 2, k)              # D = 2*2*4 = 16
    taps = n * 8 * 8 * 4                                     # adaptive pool 8 -> 2 reads all
    expect = 2 * taps + 5 * n * 16 + 2 * n * 16 * k + 2 * n * k
    assert head_signal_macs(head, n, k) == expect == 2560 + 400 + 480 + 30
    m = ProjectionHead("h", (8, 8, 4), 2, k, modulation_kind="m")
    assert head_signal_macs(m, n, k) == expect + 3 * n * k
    mxm = ProjectionHead("h", (8, 8, 4), 2, k, modulation_kind="mxm")
    assert head_signal_macs(mxm, n, k) == expect + 3 * n * k * k
    ll = ProjectionHead("h", (8, 8, 4), 2, k, basis_kind="learned")   # no normalisation
    assert head_signal_macs(ll, n, k) == 2 * taps + 2 * n * 16 * k + 2 * n * k + n * k * 16 + 2 * k * 16
    dense = ProjectionHead("h", (32,), 32, k)                # identity pooling
    assert head_signal_macs(dense, n, k) == 5 * n * 32 + 2 * n * 32 * k + 2 * n * k


def test_bp_and_dfa_signal_are_the_backward_pass_and_the_projections():
    model = build_model("smallconv", 10, (32, 32, 3))
    n, k = 4, 10
    bp = profile_model(model, "bp", n)
    shapes, cls_in = model.stage_shapes(n)
    # BP: the input gradient of every stage after block 0 (as many MACs as its forward),
    # plus the backward of the pools between blocks, plus the classifier's CE.
    later = sum(op_macs(b.units[0].op, s[0]) for b, s in zip(model.blocks[1:], shapes[1:]))
    later += op_macs(model.classifier, cls_in)
    pools = n * (16 * 16 * 32 + 8 * 8 * 64) + n * 8 * 8 * 128   # 2 max pools (1/output), adaptive (taps)
    assert bp.learning_signal_macs == later + pools + 2 * n * k
    assert bp.blocks[0].learning_signal_path_macs > bp.blocks[1].learning_signal_path_macs
    dfa = profile_model(build_model("smallconv", 10, (32, 32, 3)), "dfa", n)
    sizes = sum(int(np.prod(a[1:])) for _, a, _ in shapes)
    assert dfa.learning_signal_macs == n * k * sizes + 3 * n * k
    lls = profile_model(build_model("smallconv", 10, (32, 32, 3)), "lls", n)
    assert lls.learning_signal_macs * 50 < bp.learning_signal_macs
    # forward and weight-gradient work is the same whatever the rule
    assert lls.forward_macs == bp.forward_macs == dfa.forward_macs
    assert lls.weight_grad_macs == bp.weight_grad_macs


# ------------------------------------------------------------------ memory: layout
@pytest.mark.parametrize("rule", sorted(RULES))
@pytest.mark.parametrize("name", sorted(ZOO))
def test_analytic_arena_is_the_runtime_arena(name, rule):
    model = build_model(name, 10, ZOO[name])
    trainer = Trainer(model, rule=rule)
    p = profile_model(model, rule, 2, trainer=trainer)
    arena = trainer.arena(2)
    assert p.arena_bytes == arena.nbytes
    assert p.arena_regions == arena.region_bytes
    assert p.min_activation_bytes <= p.arena_bytes
    opt = sum(a.nbytes for o in trainer.optimizers for a in o.state_arrays().values())
    assert p.optimizer_bytes == opt
    assert p.weight_bytes >= sum(q.value.nbytes for q in model.params)


def test_layout_bytes_matches_arena_for_odd_shapes():
    from edge_lls.nn.arena import Arena, Buf
    stages = [[Buf("a", (3, 5), "keep"), Buf("b", (7,), "out"), Buf("s", (13,), "tmp"), Buf("g", (3, 5), "grad")],
              [Buf("c", (2, 2), "keep"), Buf("d", (9,), "out", np.int32), Buf("g", (1,), "grad")],
              [Buf("e", (100,), "keep"), Buf("f", (3,), "out")]]
    for mode in ("local", "backprop", "feedback", "infer"):
        total, regions = layout_bytes(stages, mode)
        arena = Arena(stages, mode)
        assert (total, regions) == (arena.nbytes, arena.region_bytes)


def test_fp16_is_the_runtime_plan_and_int8_is_analytic():
    f32 = profile_model(build_model("vgg8", 10, (32, 32, 3)), "lls", 8)
    f16 = profile_model(build_model("vgg8", 10, (32, 32, 3)), "lls", 8, precision="fp16")
    i8 = profile_model(build_model("vgg8", 10, (32, 32, 3)), "lls", 8, precision="int8")
    assert i8.analytic_only and not f16.analytic_only and not f32.analytic_only
    # fp16: float16 activation buffers (the rest of the arena, scratch and heads, float32),
    # float32 weights, gradients and optimizer state: mixed precision as Trainer runs it.
    f16_trainer = Trainer(build_model("vgg8", 10, (32, 32, 3)), rule="lls", precision="fp16")
    assert f16.arena_bytes == f16_trainer.arena(8).nbytes
    assert 0.5 <= f16.activation_bytes / f32.activation_bytes < 0.6
    assert (f16.weight_bytes, f16.grad_bytes) == (f32.weight_bytes, f32.grad_bytes)
    assert abs(i8.activation_bytes / f32.activation_bytes - 0.25) < 0.01
    assert i8.weight_bytes * 4 == f32.weight_bytes
    assert i8.optimizer_bytes == f32.optimizer_bytes      # optimizer state stays fp32


@pytest.mark.parametrize("rule", ["lls", "bp"])
def test_measured_fp16_peak_agrees_with_analytic(rule):
    p = profile_model(build_model("smallconv", 10, (32, 32, 3)), rule, 32, precision="fp16")
    m = attach_measurement(p, measure_step("smallconv", rule, 32, num_classes=10, input_shape=(32, 32, 3),
                                           precision="fp16"))
    assert m["arena_matches"]
    assert abs(m["step_rel_diff"]) <= 0.05, m
    assert abs(m["peak_rel_diff"]) <= 0.05, m


# ------------------------------------------------------------------ memory: measured
@pytest.mark.parametrize("rule", ["lls", "bp"])
@pytest.mark.parametrize("name,batch", [("smallconv", 64), ("vgg8", 8)])
def test_measured_peak_agrees_with_analytic(name, batch, rule):
    shape = (32, 32, 3)
    p = profile_model(build_model(name, 10, shape), rule, batch)
    m = attach_measurement(p, measure_step(name, rule, batch, num_classes=10, input_shape=shape))
    assert m["arena_matches"]
    assert abs(m["step_rel_diff"]) <= 0.20, m
    assert abs(m["peak_rel_diff"]) <= 0.20, m
    assert abs(m["persistent_rel_diff"]) <= 0.20, m


def test_lls_peak_is_below_bp_and_set_by_the_widest_block():
    lls = profile_model(build_model("vgg8", 10, (32, 32, 3)), "lls", 64)
    bp = profile_model(build_model("vgg8", 10, (32, 32, 3)), "bp", 64)
    assert lls.peak_memory_bytes < bp.peak_memory_bytes
    assert lls.peak_block.name == "block1"                   # 32x32x256: z, y and g
    assert lls.learning_signal_macs * 300 < bp.learning_signal_macs


# ------------------------------------------------------------------ the command
def _run(argv, capsys):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    code = run(parser.parse_args(argv))
    return code, capsys.readouterr().out


def test_command_json_compare(capsys):
    code, out = _run(["--model", "smallconv", "--input", "32x32x3", "--classes", "10", "--rule", "lls",
                      "--batch", "16", "--compare", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    for key in ("forward_macs", "learning_signal_macs", "total_macs", "peak_memory_bytes", "blocks"):
        assert key in d and key in d["bp"]
    assert set(d["ratios"]) >= {"learning_signal_macs", "total_macs", "peak_memory"}
    assert len(d["blocks"]) == 5 and d["blocks"][-1]["name"] == "classifier"
    assert d["ratios"]["peak_memory"] == d["peak_memory_bytes"] / d["bp"]["peak_memory_bytes"]


def test_command_table_and_summary(capsys):
    code, out = _run(["--model", "mobilenetv1", "--classes", "2", "--rule", "lls-mxm", "--batch", "4"], capsys)
    assert code == 0 and "block13" in out and "total" in out and "peak training memory" in out
    code, out = _run(["--model", "smallconv", "--input", "32x32x3", "--rule", "all", "--batch", "8"], capsys)
    assert code == 0
    for rule in RULES:
        assert rule in out


def test_command_device_budget(capsys):
    base = ["--model", "vgg8", "--input", "32x32x3", "--rule", "lls", "--batch", "64", "--json"]
    d = json.loads(_run(base + ["--device", "rpi4"], capsys)[1])
    assert d["device"]["fits"] and d["device"]["margin_bytes"] > 0
    d = json.loads(_run(base + ["--device", "cortex-m4"], capsys)[1])
    assert not d["device"]["fits"] and d["device"]["margin_bytes"] < 0
    code, out = _run(base[:-1] + ["--device", "cortex-m7"], capsys)
    assert "does NOT fit" in out


def test_command_rejects_bad_input(capsys):
    with pytest.raises(ConfigError, match="HxWxC"):
        _run(["--model", "smallconv", "--input", "32x32"], capsys)
    with pytest.raises(ConfigError, match="int8 training does not exist"):
        _run(["--model", "smallconv", "--precision", "int8", "--measure"], capsys)
    with pytest.raises(ConfigError, match="unknown rule"):
        _run(["--model", "smallconv", "--rule", "hebb"], capsys)
    code, out = _run(["--model", "smallconv", "--precision", "int8", "--batch", "4"], capsys)
    assert "analytic, not yet measurable" in out


def test_profile_model_accepts_a_custom_model():
    spec = {"name": "tiny", "input_shape": [6, 6, 2], "num_classes": 3, "classifier": {"bias": True},
            "blocks": [{"type": "conv", "filters": 4, "kernel": 3, "stride": 1, "padding": 1, "bias": True,
                        "act": "leaky_relu", "pool_size": 2, "post": [{"type": "maxpool", "kernel": 2}]}]}
    p = profile_model(Model(spec), "lls", 2)
    assert p.blocks[0].forward_macs == 2 * 6 * 6 * 4 * 9 * 2
    assert p.blocks[1].forward_macs == 2 * 36 * 3
    assert p.total_macs == sum(b.total_macs for b in p.blocks)

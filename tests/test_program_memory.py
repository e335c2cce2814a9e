"""The inference arena planner (program/memory.py): tensors alive at the same time never
share bytes, the arena is no smaller than the largest live set, and a program run inside
its planned arena (intermediates overwritten as they die) computes the same outputs."""
import numpy as np
import pytest

from conftest import VWW_DIR
from edge_lls.formats.tflite import read_tflite
from edge_lls.program.interpreter import prepare
from edge_lls.program.memory import ALIGN, plan_program

MODELS = ["vww_96_int8", "person_detect", "vww_96_float"]

pytestmark = pytest.mark.shared(VWW_DIR)


def _program(name):
    return read_tflite(VWW_DIR / f"{name}.tflite")


@pytest.mark.parametrize("name", MODELS)
def test_tensors_alive_together_never_share_bytes(name):
    program = _program(name)
    plan = plan_program(program)
    owners = {t: (plan.offsets[t], plan.offsets[t] + plan.sizes[t]) for t in plan.sizes}
    assert all(off % ALIGN == 0 and end <= plan.arena_bytes for off, end in owners.values())
    for a, (fa, la) in plan.lifetimes.items():
        for b, (fb, lb) in plan.lifetimes.items():
            if a < b and fa <= lb and fb <= la:
                (sa, ea), (sb, eb) = owners[a], owners[b]
                assert ea <= sb or eb <= sa, (a, b)
    live = max(plan.live_bytes(i) for i in range(len(program.operators)))
    assert live <= plan.arena_bytes < sum(plan.sizes.values())


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fast", [True, False], ids=["fast", "plain"])
def test_a_program_run_in_its_planned_arena_gives_the_same_outputs(name, fast):
    program = _program(name)
    alone, packed = prepare(program, fast=fast), prepare(program, fast=fast, arena=True)
    assert packed.memory.nbytes == plan_program(program).arena_bytes
    x_t = program.tensors[program.inputs[0]]
    rng = np.random.default_rng(2)
    for _ in range(3):
        x = rng.integers(-128, 128, x_t.shape).astype(np.int8) if x_t.dtype == np.int8 \
            else rng.random(x_t.shape).astype(np.float32)
        np.testing.assert_array_equal(packed.run([x])[0], alone.run([x])[0])


def test_vww_int8_activation_arena():
    # Recorded in docs/benchmarks.md beside TFLM's 103,672 B (which also holds scratch and
    # TFLM's own persistent structures).
    assert plan_program(_program("vww_96_int8")).arena_bytes == 64_512


def test_profile_prints_our_arena_beside_tflms(capsys):
    import json

    from edge_lls.cli import main
    assert main(["profile", "--model", str(VWW_DIR / "vww_96_int8.tflite"), "--arena", "tflm", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["arena_bytes"] == 64_512 and result["largest_live_set_bytes"] <= result["arena_bytes"]
    assert result["tflm_arena_bytes"] > result["arena_bytes"]
    assert main(["profile", "--model", "smallconv", "--arena", "tflm"]) == 2
    assert "--arena applies to a .tflite" in capsys.readouterr().err

"""The board's memory plan (edge_lls/board_plan.py, `edge-lls profile --backbone FILE.tflite
--device cortex-m4|cortex-m7 [--train-last N]`): flash and SRAM line items that add up to
their totals, the SRAM total the sum of the arena, el_train_buffer_bytes' parts, the stack
reserve and the firmware's static data; a plan that does not fit, or that the firmware
refuses, is one line on stderr and exit status 2; the stored firmware bounds are upper bounds
of what the current sources measure (needs make and the Arm toolchain: skipped without them,
failed under CI=true).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import FIRMWARE, VWW_DIR, require_tools
from edge_lls.board_plan import (DEFAULT_TRAIN_LAST, FIRMWARE_BOUNDS, IMAGE_ITEMS, STORED_BOARDS, FirmwareFootprint,
                                 board_for, board_plan, measure_firmware)
from edge_lls.board_train import train_layout
from edge_lls.cli import main
from edge_lls.devices import get_device
from edge_lls.errors import ConfigError
from edge_lls.finetune import trainable_tail
from edge_lls.formats import blob
from edge_lls.formats.tflite import read_tflite, write_tflite

VWW_INT8 = VWW_DIR / "vww_96_int8.tflite"
PERSON = VWW_DIR / "person_detect.tflite"
DEVICES = ("cortex-m4", "cortex-m7")
LAYOUT_GROUPS = {"trainable_weights": ("block", "classifier_weights", "classifier_bias"),
                 "trainable_state": ("classifier_master",),
                 "lls_head_scratch": ("input_copy", "mid_grad", "out_grad", "features", "feature_grad", "logits")}


def run_main(capsys, *args):
    try:
        code = main([str(a) for a in args])
    except SystemExit as e:
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code, err, *words):
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("edge-lls: error:"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


def _program(side: int, stem: int):
    """Stem conv, two stride-2 dwsep blocks, a global pool and a 10-class classifier: int8 by PTQ."""
    from edge_lls.nn.model import Model
    from edge_lls.program.lower import float_program
    from edge_lls.program.ptq import quantize_program
    spec = {"name": f"dwsep-{side}", "input_shape": [side, side, 3], "num_classes": 10, "classifier": {"bias": True},
            "blocks": [{"type": "conv", "filters": stem, "kernel": 3, "stride": 1, "padding": "same", "act": "relu6",
                        "pool_size": 2},
                       {"type": "dwsep", "filters": 16, "kernel": 3, "stride": 2, "padding": "same", "act": "relu6",
                        "pool_size": 2},
                       {"type": "dwsep", "filters": 24, "kernel": 3, "stride": 2, "padding": "same", "act": "relu6",
                        "pool_size": 2, "post": [{"type": "adaptive_avgpool", "size": [1, 1]}]}]}
    rng = np.random.default_rng(6)
    batches = [rng.uniform(0, 1, (2, side, side, 3)).astype(np.float32) for _ in range(2)]
    program = quantize_program(float_program(Model(spec, seed=5), softmax=True), batches)
    program.name = f"{spec['name']}.tflite"
    return program


@pytest.fixture(scope="module")
def small_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("plan") / "dwsep-12.tflite"
    path.write_bytes(write_tflite(_program(12, 8)))
    return path


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    """Its inference arena alone (a 160x160x16 stem output) is more than cortex-m4's SRAM."""
    path = tmp_path_factory.mktemp("plan") / "dwsep-160.tflite"
    path.write_bytes(write_tflite(_program(160, 16)))
    return path


def assert_adds_up(plan, program, train_last):
    tail = trainable_tail(program, train_last) if train_last else None
    image = blob.build_image(program, tail)
    arena = blob.open_image(image.data)["header"]["arena_bytes"]
    board = board_for(plan.device)
    fw = FIRMWARE_BOUNDS[board.name]
    # flash: the model image, item by item, and the firmware's code
    assert plan.image_bytes == len(image.data) == sum(plan.flash[k] for k in IMAGE_ITEMS)
    assert plan.flash_total == len(image.data) + fw.code_bytes == sum(plan.flash.values())
    assert plan.flash_limit == get_device(plan.device).flash_bytes
    # SRAM: the arena, the training buffer's parts, the stack reserve, the static data
    assert plan.arena_bytes == arena
    buffer = train_layout(image.data)["total"] if tail else 0
    assert plan.sram_total == arena + buffer + board.stack_bytes + board.heap_bytes + fw.static_bytes
    assert plan.sram_total == sum(plan.sram.values())
    assert plan.sram_limit == get_device(plan.device).memory_budget
    assert plan.flash_margin == plan.flash_limit - plan.flash_total
    assert plan.sram_margin == plan.sram_limit - plan.sram_total
    assert plan.fits == (plan.flash_margin >= 0 and plan.sram_margin >= 0)
    if tail:
        layout = train_layout(image.data)
        assert plan.train_layout == layout
        for group, prefixes in LAYOUT_GROUPS.items():
            assert plan.sram[group] == sum(v for k, v in layout.items() if k.startswith(prefixes)), group
        trainable = {op for b in tail.blocks for op in b.ops} | {tail.classifier_op}
        initial = sum(len(m.data) for m in image.members if m.name.rsplit("_", 1)[-1] in ("weights", "bias")
                      and int(m.name[2:].split("_")[0]) in trainable)
        assert plan.flash["trainable_initial"] == initial
        assert plan.flash["lls_bases"] == sum(b.basis.nbytes for b in tail.blocks)
    else:
        assert plan.train_layout is None and "trainable_weights" not in plan.sram
        assert plan.flash["trainable_initial"] == 0 and plan.flash["lls_bases"] == 0


# ----------------------------------------------------------------------- the plan
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("train_last", [0, 1, 2])
def test_the_numbers_add_up(small_file, device, train_last):
    program = read_tflite(small_file)
    assert_adds_up(board_plan(program, train_last, device), program, train_last)


@pytest.mark.shared(VWW_DIR)
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("train_last", [0, 1, 2, 3, 4])
def test_the_vww_plans_add_up_and_fit_both_profiles(device, train_last):
    program = read_tflite(VWW_INT8)
    plan = board_plan(VWW_INT8, train_last, device)
    assert_adds_up(plan, program, train_last)
    assert plan.fits and plan.refusal() is None and plan.require_fit() is plan


@pytest.mark.shared(VWW_DIR)
def test_vww_with_train_last_1_fits_cortex_m4_and_its_sram_is_what_the_parts_sum_to():
    plan = board_plan(VWW_INT8, 1, "cortex-m4")
    assert plan.fits and plan.board == "mps2-an386" and plan.sram_limit == 256 << 10
    image = blob.build_image(read_tflite(VWW_INT8), trainable_tail(read_tflite(VWW_INT8), 1)).data
    layout = train_layout(image)
    assert plan.sram_total == 64_512 + layout["total"] + 16_384 + FIRMWARE_BOUNDS["mps2-an386"].static_bytes
    assert layout["total"] == 86_112 and plan.image_bytes == 250_064    # as docs/cli.md shows them


@pytest.mark.shared(VWW_DIR)
def test_sixteen_bit_masters_add_one_byte_per_block_weight_to_the_state():
    """--master-bits 16: the training buffer grows by the block weights' int8 fractions
    (train_layout(fractions=True), el_train_buffer_bytes_fractions), counted as their state."""
    plain = board_plan(VWW_INT8, 1, "cortex-m4", stack_bytes=8192)
    wide = board_plan(VWW_INT8, 1, "cortex-m4", stack_bytes=8192, master_bits=16)
    image = blob.build_image(read_tflite(VWW_INT8), trainable_tail(read_tflite(VWW_INT8), 1)).data
    fractions = sum(v for k, v in train_layout(image, fractions=True).items() if k.endswith("_fractions"))
    assert fractions == 2_304 + 65_536                       # 3x3x256 depthwise + 256x256 pointwise
    assert wide.sram_total == plain.sram_total + fractions and wide.fits
    assert wide.sram["trainable_state"] == plain.sram["trainable_state"] + fractions
    assert wide.to_dict()["master_bits"] == 16 and plain.to_dict()["master_bits"] == 8
    assert wide.sram_total == 226_912                        # as docs/firmware.md shows it
    with pytest.raises(ConfigError, match="--master-bits must be 8"):
        board_plan(VWW_INT8, 1, "cortex-m4", master_bits=12)


@pytest.mark.shared(VWW_DIR)
def test_rmsprop_moments_fit_the_cortex_m7_and_not_the_m4():
    """--board-optimizer rmsprop: 4 bytes of state per block weight and bias (273,408 B for
    VWW's last block): the M4 refuses it, the M7 takes it."""
    plain = board_plan(VWW_INT8, 1, "cortex-m7")
    rms = board_plan(VWW_INT8, 1, "cortex-m7", optimizer="rmsprop")
    assert rms.sram_total - plain.sram_total == 4 * (2_304 + 256 + 65_536 + 256) == 273_408 and rms.fits
    assert rms.to_dict()["optimizer"] == "rmsprop"
    m4 = board_plan(VWW_INT8, 1, "cortex-m4", stack_bytes=8192, optimizer="rmsprop")
    assert not m4.fits and "does not fit cortex-m4" in m4.refusal()
    with pytest.raises(ConfigError, match="--board-optimizer must be one of sgd, rmsprop, rmsprop-factored"):
        board_plan(VWW_INT8, 1, "cortex-m7", optimizer="adam")


@pytest.mark.shared(VWW_DIR)
def test_factored_rmsprop_fits_the_cortex_m4_with_int8_codes_and_with_16_bit_masters():
    """--board-optimizer rmsprop-factored: rows + 2 cols + biases float32 a weight matrix (the
    depthwise 9 taps x 256, the pointwise 256 x 256), each part padded to 16 bytes: 3,120 +
    4,096 B for VWW's last block, 38x less than RMSprop's."""
    sgd = board_plan(VWW_INT8, 1, "cortex-m4", stack_bytes=8192)
    factored = board_plan(VWW_INT8, 1, "cortex-m4", stack_bytes=8192, optimizer="rmsprop-factored")
    assert factored.sram_total - sgd.sram_total == 3_120 + 4_096 and factored.fits
    assert factored.to_dict()["optimizer"] == "rmsprop-factored"
    wide = board_plan(VWW_INT8, 1, "cortex-m4", master_bits=16, optimizer="rmsprop-factored")
    assert wide.fits and wide.sram_total == 226_912 + 8_192 + 3_120 + 4_096    # the board's 16 KiB stack
    assert not board_plan(VWW_INT8, 2, "cortex-m4", master_bits=16, optimizer="rmsprop-factored").fits


def test_a_measured_firmware_replaces_the_stored_bounds(small_file):
    fw = FirmwareFootprint(1000, 8, "measured: a test")
    plan = board_plan(small_file, 1, "cortex-m7", firmware=fw)
    assert plan.flash["firmware_code"] == 1000 and plan.sram["firmware_static"] == 8
    assert plan.to_dict()["firmware"] == {"code_bytes": 1000, "static_bytes": 8, "source": "measured: a test"}


def test_a_plan_that_does_not_fit_is_returned_and_refused_by_require_fit(big_file):
    plan = board_plan(big_file, 1, "cortex-m4")
    assert not plan.fits and plan.sram_margin < 0 <= plan.flash_margin
    with pytest.raises(ConfigError, match=r"does not fit cortex-m4 \(mps2-an386\): SRAM needs [\d,]+ B, has 262,144 B"):
        plan.require_fit()
    assert board_plan(big_file, 1, "cortex-m7").fits


@pytest.mark.parametrize("device", ["host", "rpi4", "rpi5"])
def test_only_microcontroller_profiles_have_a_board(small_file, device):
    with pytest.raises(ConfigError, match="not a microcontroller profile"):
        board_plan(small_file, 1, device)


# ------------------------------------------------------------------------- the boards
@pytest.mark.parametrize("device", DEVICES)
def test_the_board_is_read_from_its_memory_ld_and_matches_the_profile_and_the_stored_copy(device):
    board = board_for(device)
    assert board.source == f"boards/{board.name}/memory.ld" and (FIRMWARE / board.source).exists()
    profile = get_device(device)
    assert (board.flash_bytes, board.ram_bytes) == (profile.flash_bytes, profile.memory_budget)
    stored = STORED_BOARDS[device]
    assert (board.name, board.flash_bytes, board.ram_bytes, board.stack_bytes, board.heap_bytes) == \
        (stored.name, stored.flash_bytes, stored.ram_bytes, stored.stack_bytes, stored.heap_bytes)
    assert board_for(device, firmware=FIRMWARE / "absent") == stored      # an installed package: the stored copy


@pytest.mark.parametrize("board", sorted(FIRMWARE_BOUNDS))
def test_the_stored_firmware_bounds_cover_what_the_sources_measure(board, tmp_path):
    require_tools("make", "arm-none-eabi-gcc", "arm-none-eabi-size")
    measured = measure_firmware(board, build=tmp_path / board)
    bound = FIRMWARE_BOUNDS[board]
    assert measured.code_bytes > 10_000 and measured.source.startswith("measured")     # the kernels and el_train
    assert measured.code_bytes <= bound.code_bytes and measured.static_bytes <= bound.static_bytes, (
        f"{board}: the firmware now measures {measured}; raise FIRMWARE_BOUNDS in edge_lls/board_plan.py "
        f"(its comment has the command)")


# ---------------------------------------------------------------------------- the command
@pytest.mark.shared(VWW_DIR)
def test_the_command_prints_the_flash_and_sram_lines_and_fits(capsys):
    code, out, err = run_main(capsys, "profile", "--device", "cortex-m4", "--backbone", VWW_INT8)
    assert code == 0 and err == "", err
    lines = out.splitlines()
    assert lines[0] == ("vww_96_int8.tflite on cortex-m4 (board mps2-an386), "
                        "training the last 1 block and the classifier")
    assert DEFAULT_TRAIN_LAST == 1
    plan = board_plan(VWW_INT8, 1, "cortex-m4")
    for words in ("model image", "frozen weights", "trainable weights and biases, initial values", "LLS bases",
                  "firmware code and constants", "inference arena", "training buffer", "their state",
                  "LLS head and step scratch", "stack reserve", "boards/mps2-an386/memory.ld",
                  f"{plan.flash_total:,}  of 1,048,576", f"{plan.sram_total:,}  of 262,144",
                  f"margin {plan.sram_margin:,}", f"{plan.train_layout['total']:,}"):
        assert words in out, words
    assert lines[-1].startswith("fits cortex-m4: flash ") and lines[-1].endswith("used")


@pytest.mark.shared(VWW_DIR)
def test_json_parses_and_has_the_fields_and_the_train_layout_parts(capsys):
    code, out, _ = run_main(capsys, "profile", "--device", "m7", "--backbone", VWW_INT8, "--train-last", "2", "--json")
    assert code == 0
    d = json.loads(out)
    assert (d["device"], d["board"], d["train_last"], d["fits"]) == ("cortex-m7", "mps2-an500", 2, True)
    for region in ("flash", "sram"):
        r = d[region]
        assert sum(r["items"].values()) == r["total_bytes"]
        assert r["margin_bytes"] == r["limit_bytes"] - r["total_bytes"]
        assert set(r["labels"]) == set(r["items"])
    assert d["sram"]["limit_bytes"] == 1 << 20 and d["flash"]["limit_bytes"] == 2 << 20
    for part in ("block0_dw_weights", "block0_pw_bias", "block1_pw_weights", "classifier_master", "input_copy",
                 "mid_grad", "out_grad", "features", "feature_grad", "logits", "total"):
        assert part in d["train_layout"], part
    assert d["sram"]["items"]["stack"] == 32 << 10 and d["image_bytes"] == d["flash"]["total_bytes"] - \
        d["firmware"]["code_bytes"]


def test_a_plan_that_does_not_fit_exits_2_with_one_line_naming_the_device_and_bytes(big_file, capsys):
    code, out, err = run_main(capsys, "profile", "--device", "cortex-m4", "--backbone", big_file)
    plan = board_plan(big_file, 1, "cortex-m4")
    assert_one_line_error(code, err, "does not fit cortex-m4", f"SRAM needs {plan.sram_total:,} B",
                          "has 262,144 B")
    assert out.splitlines()[-1] == f"does not fit cortex-m4: SRAM over by {-plan.sram_margin:,} B"
    code, out, err = run_main(capsys, "profile", "--device", "cortex-m4", "--backbone", big_file, "--json")
    assert code == 2 and json.loads(out)["fits"] is False and err.count("\n") == 1
    code, out, err = run_main(capsys, "profile", "--device", "cortex-m7", "--backbone", big_file)
    assert code == 0 and out.splitlines()[-1].startswith("fits cortex-m7")


def test_a_block_the_firmware_does_not_train_is_refused(small_file, capsys):
    # the last 3 blocks reach the stem, a plain conv: el_train covers dwsep blocks only
    code, _, err = run_main(capsys, "profile", "--device", "m4", "--backbone", small_file, "--train-last", "3")
    assert_one_line_error(code, err, "trainable block 0", "not a depthwise-separable block")


@pytest.mark.shared(VWW_DIR)
@pytest.mark.parametrize("args,words", [
    (["--backbone", PERSON, "--device", "m4"], "is not a FULLY_CONNECTED"),        # a 1x1-conv classifier
    (["--backbone", VWW_INT8, "--device", "m4", "--train-last", "5"], "the firmware trains 1 to 4"),
    (["--backbone", VWW_INT8, "--device", "m4", "--train-last", "15"], "from 0 to 14"),
    (["--backbone", VWW_INT8, "--device", "m4", "--train-last", "-1"], "--train-last must be an integer"),
    (["--backbone", VWW_INT8, "--device", "rpi4"], "rpi4 is not a microcontroller profile"),
    (["--backbone", VWW_INT8, "--device", "host"], "host is not a microcontroller profile"),
    (["--backbone", VWW_INT8, "--device", "m5"], "unknown device 'm5'"),
    (["--backbone", VWW_INT8], "--backbone needs --device cortex-m4 or cortex-m7"),
    (["--backbone", VWW_INT8, "--device", "m4", "--batch", "8"], "--batch does not apply to --backbone"),
    (["--backbone", VWW_DIR / "vww_96_float.tflite", "--device", "m4"], "int8"),
    (["--model", VWW_INT8, "--device", "m4"], "use --backbone"),
    (["--model", "smallconv", "--train-last", "1"], "--train-last, --stack, --master-bits and --board-optimizer apply"),
    (["--model", "smallconv", "--master-bits", "16"], "--train-last, --stack, --master-bits and --board-optimizer apply"),
    (["--model", "smallconv", "--board-optimizer", "rmsprop"], "--board-optimizer apply to --backbone"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, words):
    assert_one_line_error(*run_main(capsys, "profile", *args)[::2], words)


def test_a_missing_file_is_one_line_and_exit_2(tmp_path, capsys):
    code, _, err = run_main(capsys, "profile", "--device", "m4", "--backbone", tmp_path / "absent.tflite")
    assert_one_line_error(code, err, "absent.tflite", "No such file")


@pytest.mark.shared(VWW_DIR)
def test_the_stack_option_is_the_builds_reserve_and_gives_the_measured_m4_plan():
    """The Cortex-M4 training build reserves 8 KiB of stack (tools/bench_firmware.py TRAIN_PLANS):
    the plan then holds the arena, the training buffer, 8,192 B and the static bound."""
    plan = board_plan(VWW_DIR / "vww_96_int8.tflite", 1, "cortex-m4", stack_bytes=8192)
    assert plan.sram["stack"] == 8192 and "STACK_BYTES=8192" in plan.board_source
    assert plan.sram_total == sum(plan.sram.values()) <= 160 * 1024
    with pytest.raises(ConfigError, match="--stack"):
        board_plan(VWW_DIR / "vww_96_int8.tflite", 1, "cortex-m4", stack_bytes=100)

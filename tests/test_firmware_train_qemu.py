"""The LLS update on the boards, under QEMU: main.c built with `make MODEL=vww.c TRAIN=train.h`
(tools/bench_firmware.py writes both) runs, per sample, one inference and one el_train_step
and prints the losses (float32 bits) and, after the steps, the CRC-32 of every trainable
op's learned weights and biases. Held to: everything it prints equals what the Python twin
(edge_lls/board_train.py) computes for the same samples, bit for bit, on both boards; the
default plan (the last block + classifier) on the Cortex-M4 and the last two blocks on the
Cortex-M7 (and its last three and four, the blocks on 6x6 maps with an LLS pool of 2), each
inside its device profile's SRAM, with the last block learning from its LLS
head and (the board's default) from the classifier; the firmware calls nothing of libc's float
functions (sqrt is the FPU's instruction: -fno-math-errno).
"""
from __future__ import annotations

import subprocess

import numpy as np
import pytest

from conftest import SAMPLES_DIR, VWW_DIR, require_tools
from test_firmware_vww import _bench
from edge_lls.board_train import train_layout
from edge_lls.finetune import trainable_tail
from edge_lls.formats.tflite import read_tflite

QEMU_TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-nm", "qemu-system-arm", "make", "gcc")
VWW_INT8 = VWW_DIR / "vww_96_int8.tflite"
# (board, blocks trained, stack reserve or None for the board's default, the last block's signal,
# 16-bit masters: el_train_config.fractions, the blocks' optimizer)
PLANS = [("mps2-an386", 1, 8192, "lls", False, "sgd"), ("mps2-an500", 2, None, "lls", False, "sgd"),
         ("mps2-an386", 1, 8192, "classifier", False, "sgd"), ("mps2-an500", 2, None, "classifier", False, "sgd"),
         ("mps2-an500", 3, None, "classifier", False, "sgd"),
         ("mps2-an500", 4, None, "classifier", False, "sgd"),  # 6x6 maps, pool 2
         ("mps2-an386", 1, None, "classifier", True, "sgd"), ("mps2-an500", 2, None, "classifier", True, "sgd"),
         ("mps2-an500", 1, None, "classifier", False, "rmsprop"), ("mps2-an500", 1, None, "classifier", True, "rmsprop"),
         ("mps2-an386", 1, 8192, "classifier", False, "rmsprop-factored"),
         ("mps2-an386", 1, None, "classifier", True, "rmsprop-factored"),
         ("mps2-an500", 2, None, "lls", False, "rmsprop-factored")]


@pytest.mark.shared(VWW_DIR, SAMPLES_DIR)
@pytest.mark.parametrize("board,train_last,stack,last_block,fractions,optimizer", PLANS)
def test_the_board_learns_what_the_twin_predicts(board, train_last, stack, last_block, fractions, optimizer, tmp_path,
                                                 capsys):
    require_tools(*QEMU_TOOLS)
    from edge_lls.devices import get_device
    from qemu_helper import run_elf
    bench = _bench()
    program = read_tflite(VWW_INT8)
    model_c, image = bench.write_model_c(program, tmp_path, "vwwtrain", trainable_tail(program, train_last))
    rng = np.random.default_rng(train_last)
    images = [x for _, x in bench.sample_inputs(program, SAMPLES_DIR)]
    images += [np.clip(images[0].astype(np.int16) + rng.integers(-20, 21, images[0].shape), -128, 127).astype(np.int8)]
    samples = list(zip(images, (1, 0, 1)))
    lr, classifier_lr, seed = (0.3 if optimizer == "sgd" else 0.003), 0.05, 2024
    buffer = train_layout(image.data, fractions=fractions, optimizer=optimizer)["total"]
    train_h = bench.write_train_header(tmp_path / "train.h", samples, buffer, lr, classifier_lr, seed, last_block,
                                       fractions, optimizer)
    extra = (f"STACK_BYTES={stack}",) if stack else ()
    elf = bench.build(board, model_c, train_h, tmp_path / board, mode="TRAIN", extra=extra)
    run = run_elf(elf, board, timeout=300)
    assert run.exit_status == 0, run.uart + run.semihost
    steps, crcs = bench.parse_train(run.uart)
    twin_steps, twin_crcs = bench.twin_train_run(program, image, samples, lr, classifier_lr, seed, last_block,
                                                 fractions, optimizer)
    if last_block == "classifier":   # the last block reports the classifier's cross-entropy
        assert all(s["losses"][train_last - 1] == s["losses"][-1] for s in twin_steps)
    assert [{"losses": s["losses"], "predicted": s["predicted"]} for s in steps] == twin_steps
    assert crcs == twin_crcs and len(crcs) == 2 * train_last + 1
    # memory: the planned buffer, inside the profile's SRAM with the stack reserve
    assert f"training buffer {buffer} bytes planned" in run.uart
    memory = bench.map_memory(elf.with_suffix(".map"))
    sram = memory["data"] + memory["bss"] + memory["stack"]
    assert sram <= get_device(bench.BOARDS[board]).memory_budget
    high_water = bench.banner_value(run.uart, r"^stack high water (\d+) bytes")
    assert 0 < high_water < memory["stack"] // 4
    undefined = subprocess.run(["arm-none-eabi-nm", "-u", *map(str, sorted((tmp_path / board / "obj" / "src" / "lls")
                                                                          .glob("*.o")))],
                               capture_output=True, text=True, check=True).stdout
    assert "sqrtf" not in undefined and "expf" not in undefined and "logf" not in undefined
    ratios = [s["train"] / s["infer"] for s in steps]
    with capsys.disabled():
        print(f"\n{board} last {train_last} ({last_block}{', 16-bit masters' if fractions else ''}, {optimizer}): training step / inference {', '.join(f'{r:.3f}' for r in ratios)} "
              f"instructions; SRAM {sram:,} B (stack high water {high_water:,} B)")

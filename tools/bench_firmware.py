"""The VWW model on the firmware, under QEMU: instructions, arena, SRAM, stack and flash per board.

    .venv/bin/python tools/bench_firmware.py [--model vww_96_int8.tflite] [--boards mps2-an386,mps2-an500]

Exports the model as C (`blob.build_image` + `blob.c_source`: the bytes `edge-lls export
--format c` writes), writes the two sample images of ../shared/data/vww_samples as an input
header (person.bmp holds int8 codes, `load_image(..., "int8")`; no_person.bmp an ordinary
image), builds the firmware with `make MODEL=vww.c INPUT=inputs.h` for each board (main.c
runs each input through the op runner in one static arena of the image's arena_bytes and
prints the output bytes and the SysTick ticks it took) and runs it under QEMU with
`-icount shift=0,sleep=off` and our instruction-counting plugin (tests/qemu_helper.py).
Prints per board:

  instructions / inference   SysTick ticks x 40 (the 25 MHz board clock on 1 ns virtual
                             instructions: exact to one tick), per sample image; and the
                             plugin's count of the whole run (reset, banner, both inferences)
  arena                      the image's arena_bytes (the static arena main.c declares) beside
                             TFLM's smallest arena for the same .tflite (edge_lls.tflm.tflm_min_arena),
                             and the ratio ours / TFLM
  SRAM used                  .data + .bss + the stack reserve, from the link map
  stack high water           the most stack bytes used since reset (main.c reports it; the
                             reset handler paints the stack)
  flash used                 .vectors + .text + .rodata + .data's load image (__el_flash_used_end)

Then, unless --no-train, the training plans (TRAIN_PLANS: the last block + classifier and the
last two blocks, on each board): main.c built with `make MODEL=... TRAIN=train.h` runs per
sample image one inference and one LLS step (el_train_step; --last-block: the last block's
signal, the classifier's by default, as on the board), every loss and learned weight's
CRC checked against the Python twin (edge_lls/board_train.py); printed per plan: the training
buffer, SRAM used, the stack high water, instructions per inference and per training step.

The outputs are checked against the Python runtime in TFLM mode (prepare(..., requantize="tflm")),
byte for byte; a mismatch is an error. Instructions are not cycles: QEMU models no pipeline,
caches or wait states. tests/test_firmware_vww.py uses the same helpers.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from qemu_helper import BOARDS, FIRMWARE, run_elf  # noqa: E402

from edge_lls.formats import blob  # noqa: E402
from edge_lls.formats.tflite import read_tflite  # noqa: E402

SHARED = REPO.parent / "shared"
VWW_INT8 = SHARED / "models" / "vww" / "vww_96_int8.tflite"
SAMPLES = SHARED / "data" / "vww_samples"
SAMPLE_PIXELS = (("person", "int8"), ("no_person", "image"))     # person.bmp holds int8 codes
INSTRUCTIONS_PER_TICK = 40                                       # 25 MHz SysTick, 1 ns instructions
INFERENCE = re.compile(r"^inference (\d+): ok, ticks (\d+), output ([0-9a-f]*)$", re.M)


def sample_inputs(program, samples: Path = SAMPLES) -> list[tuple[str, np.ndarray]]:
    """The two sample images as the model's int8 input, (name, (1, H, W, C) int8)."""
    from edge_lls.kernels.fixedpoint import quantize
    from edge_lls.predict import load_image
    x = program.tensors[program.inputs[0]]
    return [(name, quantize(load_image(samples / f"{name}.bmp", tuple(x.shape[1:]), pixels) / np.float32(255),
                            x.scale, x.zero_point).astype(np.int8).reshape(x.shape))
            for name, pixels in SAMPLE_PIXELS]


def write_model_c(program, folder: Path, name: str = "vww", tail: blob.Tail | None = None) -> tuple[Path, blob.Image]:
    """The program's image as `edge-lls export --format c` writes it: folder/name.c + .h
    (with a trainable tail: `--train-last N`)."""
    image = blob.build_image(program, tail)
    header, source = blob.c_source(image, name, f"{name}.h")
    (folder / f"{name}.h").write_text(header)
    (folder / f"{name}.c").write_text(source)
    return folder / f"{name}.c", image


def _c_rows(rows) -> list[str]:
    """Lines of a C initializer of int8 rows, 24 values a line, closed with "};"."""
    lines = []
    for r in rows:
        lines.append("    {")
        for at in range(0, r.size, 24):
            lines.append("        " + ", ".join(str(int(v)) for v in r[at:at + 24]) + ",")
        lines.append("    },")
    return lines + ["};"]


def write_inputs_header(path: Path, inputs) -> Path:
    """The header main.c reads with INPUT=: EL_RUN_INPUT_COUNT inputs of EL_RUN_INPUT_BYTES."""
    rows = [np.ascontiguousarray(x, np.int8).reshape(-1) for x in inputs]
    size = rows[0].size
    assert all(r.size == size for r in rows)
    lines = ["/* inputs for main.c (make INPUT=...): written by tools/bench_firmware.py */",
             "#include <stdint.h>", f"#define EL_RUN_INPUT_COUNT {len(rows)}u", f"#define EL_RUN_INPUT_BYTES {size}u",
             "static const int8_t el_run_inputs[EL_RUN_INPUT_COUNT][EL_RUN_INPUT_BYTES] = {"]
    lines += _c_rows(rows)
    path.write_text("\n".join(lines) + "\n")
    return path


def _c_float(value: float) -> str:
    """A C99 hexadecimal float literal of value rounded to float32: no decimal conversion."""
    return float(np.float32(value)).hex() + "f"


LAST_BLOCK_MACROS = {"classifier": "EL_TRAIN_LAST_CLASSIFIER", "lls": "EL_TRAIN_LAST_LLS"}
OPTIMIZER_MACROS = {"sgd": "EL_TRAIN_SGD", "rmsprop": "EL_TRAIN_RMSPROP",
                    "rmsprop-factored": "EL_TRAIN_RMSPROP_FACTORED"}


def write_train_header(path: Path, samples, buffer_bytes: int, lr: float, classifier_lr: float, seed: int,
                       last_block: str = "classifier", fractions: bool = False, optimizer: str = "sgd") -> Path:
    """The header main.c reads with TRAIN=: (int8 input, label) samples and the step's settings
    (last_block: the last block's signal, el_train_config.last_block; the board's default is
    the classifier's; fractions: el_train_config.fractions, 16-bit masters; optimizer:
    el_train_config.optimizer: OPTIMIZER_MACROS' keys)."""
    rows = [np.ascontiguousarray(x, np.int8).reshape(-1) for x, _ in samples]
    size = rows[0].size
    lines = ["/* training samples for main.c (make TRAIN=...): written by tools/bench_firmware.py */",
             "#include <stdint.h>", f"#define EL_TRAIN_SAMPLE_COUNT {len(rows)}u", f"#define EL_TRAIN_SAMPLE_BYTES {size}u",
             f"#define EL_TRAIN_BUFFER_BYTES {buffer_bytes}u", f"#define EL_TRAIN_LR {_c_float(lr)}",
             f"#define EL_TRAIN_CLASSIFIER_LR {_c_float(classifier_lr)}", f"#define EL_TRAIN_SEED {seed}u",
             f"#define EL_TRAIN_LAST_BLOCK {LAST_BLOCK_MACROS[last_block]}",
             f"#define EL_TRAIN_FRACTIONS {int(fractions)}u",
             f"#define EL_TRAIN_OPTIMIZER {OPTIMIZER_MACROS[optimizer]}",
             "static const uint32_t el_train_labels[EL_TRAIN_SAMPLE_COUNT] = {" +
             ", ".join(f"{int(label)}u" for _, label in samples) + "};",
             "static const int8_t el_train_inputs[EL_TRAIN_SAMPLE_COUNT][EL_TRAIN_SAMPLE_BYTES] = {"]
    lines += _c_rows(rows)
    path.write_text("\n".join(lines) + "\n")
    return path


def build(board: str, model_c: Path, inputs_h: Path, build_dir: Path, kernels: str = "dsp", mode: str = "INPUT",
          extra: tuple[str, ...] = ()) -> Path:
    """make MODEL=... INPUT=... (or TRAIN=...: mode) for one board, with the DSP kernels or
    (kernels="plain") the plain reference ones; the firmware ELF (its .map beside it)."""
    choice = ["KERNELS=plain"] if kernels == "plain" else []
    result = subprocess.run(["make", "-C", str(FIRMWARE), "-j2", f"BOARD={board}", f"BUILD={build_dir}",
                             f"MODEL={model_c}", f"{mode}={inputs_h}", *choice, *extra, "firmware"],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"make for {board} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    return build_dir / "edge-lls-fw.elf"


def parse_run(uart: str) -> list[tuple[int, bytes]]:
    """(ticks, output bytes) per inference line of the firmware's UART output."""
    return [(int(ticks), bytes.fromhex(hexed)) for _, ticks, hexed in INFERENCE.findall(uart)]


TRAIN_STEP = re.compile(r"^step (\d+): ok, infer ticks (\d+), train ticks (\d+), losses ([0-9a-f ]+), "
                        r"predicted (\d+)$", re.M)
TRAIN_CRC = re.compile(r"^op (\d+): weights crc 0x([0-9a-f]{8}), bias crc 0x([0-9a-f]{8})$", re.M)


def parse_train(uart: str) -> tuple[list[dict], dict[int, tuple[int, int]]]:
    """Per step {infer, train (instructions), losses (float32 bits), predicted}; per op the
    CRC-32s of its weights and biases, from a TRAIN= firmware's UART output."""
    steps = [{"infer": INSTRUCTIONS_PER_TICK * int(i), "train": INSTRUCTIONS_PER_TICK * int(t),
              "losses": [int(v, 16) for v in losses.split()], "predicted": int(p)}
             for _, i, t, losses, p in TRAIN_STEP.findall(uart)]
    crcs = {int(op): (int(w, 16), int(b, 16)) for op, w, b in TRAIN_CRC.findall(uart)}
    return steps, crcs


def twin_train_run(program, image: blob.Image, samples, lr: float, classifier_lr: float, seed: int,
                   last_block: str = "classifier", fractions: bool = False, optimizer: str = "sgd"):
    """What the board must print for samples: (steps as parse_train gives them without the
    instruction counts, {op: (weights crc, bias crc)}), from the Python twin."""
    import struct
    import zlib

    from edge_lls.board_train import BoardTrainer
    from edge_lls.program.interpreter import prepare
    graph = prepare(program, batch=1, fast=False, requantize="tflm")
    tail = blob.open_image(image.data)["tail"]
    cut = program.operators[tail["blocks"][0]["first_op"]].inputs[0]
    twin = BoardTrainer(image.data, lr=lr, classifier_lr=classifier_lr, seed=seed, last_block=last_block,
                        fractions=fractions, optimizer=optimizer)
    steps = []
    bits = lambda v: struct.unpack("<I", struct.pack("<f", v))[0]   # noqa: E731
    for x, label in samples:
        s = twin.step(graph.run_all([x])[cut], label)
        steps.append({"losses": [bits(v) for v in (*s.block_loss, s.loss)], "predicted": s.predicted})
    crcs = {op: (zlib.crc32(w.tobytes()), zlib.crc32(b.astype("<i4").tobytes())) for op, (w, b) in twin.weights().items()}
    return steps, crcs


def map_memory(map_file: Path) -> dict[str, int]:
    """Sizes of .data, .bss and .stack from a GNU ld map file."""
    text = map_file.read_text()
    sizes = {}
    for name in ("data", "bss", "stack"):
        m = re.search(rf"^\.{name}\s+0x[0-9a-f]+\s+0x([0-9a-f]+)", text, re.M)
        sizes[name] = int(m.group(1), 16) if m else 0
    return sizes


def symbol_sizes(elf: Path) -> dict[str, int]:
    """Sized symbols of an ELF (arm-none-eabi-nm -S): name -> bytes."""
    out = subprocess.run(["arm-none-eabi-nm", "-S", str(elf)], capture_output=True, text=True, check=True).stdout
    return {f[3]: int(f[1], 16) for f in (line.split() for line in out.splitlines()) if len(f) == 4}


def banner_value(uart: str, pattern: str) -> int:
    m = re.search(pattern, uart, re.M)
    if m is None:
        raise RuntimeError(f"no {pattern!r} in the firmware's output:\n{uart}")
    return int(m.group(1))


def measure(board: str, elf: Path, expected: list[bytes], timeout: float = 300) -> dict:
    run = run_elf(elf, board, timeout=timeout)
    if run.exit_status != 0:
        raise RuntimeError(f"{board}: exit {run.exit_status}\n{run.uart}{run.semihost}")
    results = parse_run(run.uart)
    outputs = [out for _, out in results]
    if outputs != expected:
        raise RuntimeError(f"{board}: outputs {outputs} differ from the TFLM mode's {expected}")
    mem = map_memory(elf.with_suffix(".map"))
    symbols = symbol_sizes(elf)
    return {"board": board, "device": BOARDS[board],
            "instructions": [INSTRUCTIONS_PER_TICK * ticks for ticks, _ in results], "total": run.instructions,
            "data": mem["data"], "bss": mem["bss"], "stack": mem["stack"],
            "sram": mem["data"] + mem["bss"] + mem["stack"],
            "ram": banner_value(run.uart, r"^ram (\d+) bytes"),
            "stack_high_water": banner_value(run.uart, r"^stack high water (\d+) bytes"),
            "flash_used": banner_value(run.uart, r"^flash \d+ bytes: (\d+) used"),
            "flash": banner_value(run.uart, r"^flash (\d+) bytes"), "inputs": symbols.get("el_run_inputs", 0),
            "arena_symbol": symbols.get("el_arena", 0), "uart": run.uart}


def macs(program) -> int:
    """Multiply-accumulates of one inference: every conv, depthwise and FC output value times
    the products summed for it."""
    total = 0
    for op in program.operators:
        out, w = program.tensors[op.outputs[0]], program.tensors[op.inputs[1]] if len(op.inputs) > 1 else None
        if op.opcode == "CONV_2D":
            total += int(np.prod(out.shape)) * int(np.prod(w.shape[1:]))
        elif op.opcode == "DEPTHWISE_CONV_2D":
            total += int(np.prod(out.shape)) * int(np.prod(w.shape[1:3]))
        elif op.opcode == "FULLY_CONNECTED":
            total += int(np.prod(out.shape)) * int(w.shape[1])
    return total


def expected_outputs(program, inputs) -> list[bytes]:
    from edge_lls.program.interpreter import prepare
    graph = prepare(program, batch=1, fast=False, requantize="tflm")
    return [np.ascontiguousarray(graph.run([x])[0], np.int8).tobytes() for x in inputs]


# The training plans measured: (board, blocks trained, stack reserve; None: the board's default).
# The Cortex-M4 plan reserves 8 KiB of stack (the training firmware's measured high water is
# under 1 KiB) so that the last block + classifier fits the 160 KB.
TRAIN_PLANS = (("mps2-an386", 1, 8192), ("mps2-an386", 2, None), ("mps2-an500", 1, None), ("mps2-an500", 2, None))
# With 16-bit masters (a byte more per block weight) the last two blocks no longer fit the
# Cortex-M4 (edge-lls profile --train-last 2 --master-bits 16 refuses it; so does the linker).
TRAIN_PLANS_16 = (("mps2-an386", 1, 8192), ("mps2-an500", 1, None), ("mps2-an500", 2, None))
# RMSprop keeps 4 bytes a block weight: the Cortex-M7's plans only (273 KB for one VWW block)
TRAIN_PLANS_RMSPROP = (("mps2-an500", 1, None), ("mps2-an500", 2, None))
# the factored moment (7 KB for one VWW block) fits wherever SGD does: TRAIN_PLANS / TRAIN_PLANS_16
TRAIN_SETTINGS = (0.3, 0.05, 2024)          # block lr, classifier lr, seed
TRAIN_RMSPROP_LR = 0.003                     # RMSprop's block lr (its step is about lr per weight)


def measure_training(program, samples, folder: Path, plans=TRAIN_PLANS, last_block: str = "classifier",
                     fractions: bool = False, optimizer: str = "sgd") -> list[dict]:
    """Per plan: build main.c with TRAIN=, run it under QEMU, check every printed loss and
    weight CRC against the Python twin, and report instructions per inference and per
    training step (the same sample, one after the other), SRAM and the stack high water
    (fractions: 16-bit masters, el_train_config.fractions = 1; optimizer: OPTIMIZER_MACROS' keys,
    the RMSprops' block learning rate TRAIN_RMSPROP_LR)."""
    from edge_lls.board_train import train_layout
    from edge_lls.finetune import trainable_tail
    lr, classifier_lr, seed = TRAIN_SETTINGS
    lr = lr if optimizer == "sgd" else TRAIN_RMSPROP_LR
    rows = []
    for board, train_last, stack in plans:
        model_c, image = write_model_c(program, folder, f"vww_train{train_last}", trainable_tail(program, train_last))
        buffer = train_layout(image.data, fractions=fractions, optimizer=optimizer)["total"]
        bits = 16 if fractions else 8
        header = write_train_header(folder / f"train{train_last}-{bits}-{optimizer}.h", samples, buffer, lr,
                                    classifier_lr, seed, last_block, fractions, optimizer)
        elf = build(board, model_c, header, folder / f"{board}-train{train_last}-{bits}-{optimizer}", mode="TRAIN",
                    extra=(f"STACK_BYTES={stack}",) if stack else ())
        run = run_elf(elf, board, timeout=300)
        if run.exit_status != 0:
            raise RuntimeError(f"{board}: exit {run.exit_status}\n{run.uart}{run.semihost}")
        steps, crcs = parse_train(run.uart)
        twin_steps, twin_crcs = twin_train_run(program, image, samples, lr, classifier_lr, seed, last_block,
                                               fractions, optimizer)
        if [{"losses": st["losses"], "predicted": st["predicted"]} for st in steps] != twin_steps or crcs != twin_crcs:
            raise RuntimeError(f"{board} last {train_last}: the board's training differs from the twin's")
        mem = map_memory(elf.with_suffix(".map"))
        rows.append({"board": board, "device": BOARDS[board], "train_last": train_last, "last_block": last_block,
                     "master_bits": bits, "optimizer": optimizer, "buffer": buffer,
                     "arena": image.arena_bytes, "sram": mem["data"] + mem["bss"] + mem["stack"],
                     "stack": mem["stack"], "ram": banner_value(run.uart, r"^ram (\d+) bytes"),
                     "stack_high_water": banner_value(run.uart, r"^stack high water (\d+) bytes"),
                     "flash_used": banner_value(run.uart, r"^flash \d+ bytes: (\d+) used"),
                     "infer": [st["infer"] for st in steps], "train": [st["train"] for st in steps]})
    return rows


def print_training(rows: list[dict], names: str) -> None:
    lr, classifier_lr, seed = TRAIN_SETTINGS
    print(f"\ntraining (make TRAIN=, DSP kernels): per sample one inference, then one el_train_step "
          f"(lr {lr}, RMSprop's {TRAIN_RMSPROP_LR}, classifier lr {classifier_lr}, seed {seed}, labels person 1 / no_person 0); every loss and "
          f"weight CRC printed equals the Python twin's: yes")
    head = ("board", "blocks", "last block's signal", "weight bits", "optimizer", "training buffer", "SRAM used (arena+buffer+stack+rest)", "stack high water",
            "instr/inference", "instr/training step", "step / inference")
    print(" | ".join(head))
    for r in rows:
        ratio = " / ".join(f"{t / i:.3f}" for t, i in zip(r["train"], r["infer"]))
        rest = r["sram"] - r["arena"] - r["buffer"] - r["stack"]
        print(" | ".join((r["board"], f"last {r['train_last']} + classifier", r["last_block"],
                          "int8" if r["master_bits"] == 8 else "16 (int8 + fraction)", r["optimizer"],
                          f"{r['buffer']:,} B",
                          f"{r['sram']:,} of {r['ram']:,} ({r['arena']:,}+{r['buffer']:,}+{r['stack']:,}+{rest:,})",
                          f"{r['stack_high_water']:,} B", " / ".join(f"{n:,}" for n in r["infer"]),
                          " / ".join(f"{n:,}" for n in r["train"]), ratio)))
    print(f"({names}; instructions = SysTick ticks x {INSTRUCTIONS_PER_TICK})")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=VWW_INT8)
    parser.add_argument("--boards", default=",".join(BOARDS))
    parser.add_argument("--no-train", action="store_true", help="skip the training plans")
    parser.add_argument("--last-block", default="classifier",
                        help="the last block's signal in the training plans: classifier (the board's default), "
                             "lls, or both (comma-separated)")
    parser.add_argument("--master-bits", default="8",
                        help="the block weights' bits in the training plans: 8 (int8 codes, the default), 16 (an "
                             "int8 fraction per weight too, el_train_config.fractions), or 8,16")
    parser.add_argument("--optimizer", default="sgd",
                        help="the blocks' optimizers in the training plans, comma-separated: sgd (the default), "
                             "rmsprop (the Cortex-M7's plans), rmsprop-factored")
    args = parser.parse_args(argv)
    optimizers = [v.strip() for v in args.optimizer.split(",")]
    if not optimizers or any(v not in OPTIMIZER_MACROS for v in optimizers):
        parser.error(f"--optimizer: one or more of {', '.join(OPTIMIZER_MACROS)}, got {args.optimizer!r}")
    bit_choices = [v.strip() for v in args.master_bits.split(",")]
    if not bit_choices or any(v not in ("8", "16") for v in bit_choices):
        parser.error(f"--master-bits: 8, 16 or 8,16, got {args.master_bits!r}")
    from edge_lls.tflm import tflm_min_arena

    program = read_tflite(args.model)
    samples = sample_inputs(program)
    expected = expected_outputs(program, [x for _, x in samples])
    tflm_arena = tflm_min_arena(args.model.read_bytes())
    with tempfile.TemporaryDirectory(prefix="bench-fw-") as tmp:
        tmp = Path(tmp)
        model_c, image = write_model_c(program, tmp)
        inputs_h = write_inputs_header(tmp / "inputs.h", [x for _, x in samples])
        rows = []
        for board in args.boards.split(","):
            for kernels in ("plain", "dsp"):
                elf = build(board, model_c, inputs_h, tmp / f"{board}-{kernels}", kernels)
                rows.append(measure(board, elf, expected) | {"kernels": kernels})
        training = [] if args.no_train else [
            row for signal in args.last_block.split(",") for optimizer in optimizers for bits in bit_choices
            for row in measure_training(
                program, [(x, label) for (_, x), label in zip(samples, (1, 0))], tmp,
                [p for p in (TRAIN_PLANS_RMSPROP if optimizer == "rmsprop" else TRAIN_PLANS_16 if bits == "16"
                             else TRAIN_PLANS) if p[0] in args.boards.split(",")],
                signal, bits == "16", optimizer)]
    names = ", ".join(name for name, _ in samples)
    mac_count = macs(program)
    print(f"{args.model.name} on the firmware under QEMU (-icount shift=0), -Os, {mac_count:,} MACs per inference")
    print(f"model image {len(image.data):,} bytes, {image.op_count} ops; outputs equal the TFLM mode's "
          f"on {names}: yes")
    print(f"arena: ours {image.arena_bytes:,} B, TFLM's smallest {tflm_arena:,} B, "
          f"ours / TFLM {image.arena_bytes / tflm_arena:.3f}")
    print()
    head = ("board", "device", "kernels", "instr/inference", "instr/MAC", "dsp/plain", "run total",
            "SRAM used (data+bss+stack)", "stack high water", "flash used")
    print(" | ".join(head))
    plain = {r["board"]: r for r in rows if r["kernels"] == "plain"}
    for r in rows:
        per = " / ".join(f"{n:,}" for n in r["instructions"])
        ratio = max(r["instructions"]) / max(plain[r["board"]]["instructions"])
        sram = f"{r['sram']:,} of {r['ram']:,} ({r['data']:,}+{r['bss']:,}+{r['stack']:,})"
        print(" | ".join((r["board"], r["device"], r["kernels"], per, f"{max(r['instructions']) / mac_count:.2f}",
                          f"{ratio:.3f}", f"{r['total']:,}", sram, f"{r['stack_high_water']:,} B",
                          f"{r['flash_used']:,} of {r['flash']:,}")))
    print(f"\ninstructions per inference: SysTick ticks x {INSTRUCTIONS_PER_TICK} ({names}; exact to one tick); "
          f"run total: the plugin's count from reset to exit")
    for r in rows[1::2]:
        print(f"{r['board']}: outside the inferences {r['total'] - sum(r['instructions']):,} instructions (reset, "
              f"banner, el_model_open's two CRC-32s over the image, copying the inputs, printing)")
    for r in rows[1::2]:
        print(f"{r['board']}: static arena el_arena {r['arena_symbol']:,} B in .bss; flash without the "
              f"{r['inputs']:,} B of test inputs {r['flash_used'] - r['inputs']:,} B (model image "
              f"{len(image.data):,} B, code and the rest {r['flash_used'] - r['inputs'] - len(image.data):,} B)")
    if training:
        print_training(training, names)
    return 0


if __name__ == "__main__":
    sys.exit(main())

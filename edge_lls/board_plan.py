"""The memory plan of on-device fine-tuning for a microcontroller profile: what the
firmware puts in the board's flash and SRAM when it trains the last N blocks of an int8
model, line by line, against the device's sizes.

    plan = board_plan("vww_96_int8.tflite", 1, "cortex-m4")
    plan.fits, plan.flash_total, plan.sram_total, plan.to_dict()
    plan.require_fit()          # ConfigError naming the device and the bytes when it does not fit

flash  the model image (edge_lls/formats/blob.py, as `edge-lls export --format c --train-last N`
       links it): the frozen weights and biases, the trainable ones' initial values, the
       LLS bases, the requantization multipliers and shifts, the header, tables and op
       records, alignment padding; and the firmware's code and constants (with .data's
       load image).
SRAM   the inference arena the exporter planned (header arena_bytes); the training buffer
       of el_train_buffer_bytes (edge_lls.board_train.train_layout), split into the
       trainable weights' int8 / int32 copies, their state (the classifier's float32
       master) and the LLS head and step scratch; the stack reserve (and heap reserve, 0 on
       both boards) of the board's memory.ld; the firmware's static data (.data + .bss).

The firmware's own bytes are the stored FIRMWARE_BOUNDS unless measured (measure_firmware,
which needs make and the Arm toolchain). The kernels need no scratch
(el_runner_scratch_bytes is 0 for every op the image holds), so there is no line for it.
train_last 0 is the inference-only plan: no tail, no training buffer.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from .devices import DeviceProfile, get_device
from .errors import ConfigError

DEFAULT_TRAIN_LAST = 1          # the firmware's default plan: the last block + the classifier
FIRMWARE = Path(__file__).resolve().parents[1] / "firmware_bridge" / "firmware"
KiB = 1 << 10


@dataclass(frozen=True)
class Board:
    """A firmware board (firmware_bridge/firmware/boards/<name>/) and its memory.ld."""
    name: str
    device: str
    flash_bytes: int        # LENGTH(FLASH)
    ram_bytes: int          # LENGTH(RAM)
    stack_bytes: int        # EL_STACK_BYTES' default
    heap_bytes: int         # EL_HEAP_BYTES' default
    source: str             # where these numbers were read


_STORED = "stored (edge_lls/board_plan.py)"
# Used when the firmware sources are not beside the package (an installed wheel); equal to
# boards/*/memory.ld (tests/test_board_plan.py checks it).
STORED_BOARDS = {
    "cortex-m4": Board("mps2-an386", "cortex-m4", 1024 * KiB, 256 * KiB, 16 * KiB, 0, _STORED),
    "cortex-m7": Board("mps2-an500", "cortex-m7", 2048 * KiB, 1024 * KiB, 32 * KiB, 0, _STORED),
}


@dataclass(frozen=True)
class FirmwareFootprint:
    code_bytes: int         # flash: .vectors .text .rodata .ARM.exidx and .data's load image
    static_bytes: int       # SRAM: .data + .bss (the stack and heap reserves are lines of their own)
    source: str


# Upper bounds of the firmware's own bytes per board. Measured (after the assembly DSP inner
# loops, the classifier signal of the LLS update and the bridge: frames, session, SHA-256,
# A/B slots, flash HAL) by
#   .venv/bin/python -c "from edge_lls.board_plan import measure_firmware as m; print(m('mps2-an386'))"
# which runs `make -C firmware_bridge/firmware BOARD=<board> BUILD=<tmp> firmware` and links every
# object it builds (src/**, boards/mps2/*.o, main.o) whole (-Wl,--no-gc-sections) with the C
# library, then reads `arm-none-eabi-size -A`: mps2-an386 code 48,040 B, static 8 B; mps2-an500
# code 48,040 B, static 8 B. Stored rounded up (code to 4 KiB, static to 256 B) as headroom for
# firmware changes; tests/test_board_plan.py re-measures and fails once a bound is exceeded.
FIRMWARE_BOUNDS = {
    "mps2-an386": FirmwareFootprint(52 * KiB, 256, "stored bound (edge_lls/board_plan.py)"),
    "mps2-an500": FirmwareFootprint(52 * KiB, 256, "stored bound (edge_lls/board_plan.py)"),
}

FLASH_SECTIONS = (".vectors", ".text", ".rodata", ".ARM.extab", ".ARM.exidx", ".data")
RAM_SECTIONS = (".data", ".bss")

FLASH_LABELS = {
    "frozen_weights": "frozen weights and biases (int8, int32)",
    "trainable_initial": "trainable weights and biases, initial values",
    "lls_bases": "LLS bases (float32, fixed)",
    "requantization": "requantization multipliers and shifts (int32)",
    "records": "header, tensor and op tables, op records, tail",
    "padding": "alignment padding",
    "firmware_code": "firmware code and constants",
}
IMAGE_ITEMS = ("frozen_weights", "trainable_initial", "lls_bases", "requantization", "records", "padding")
SRAM_LABELS = {
    "arena": "inference arena (activations)",
    "trainable_weights": "trainable weights and biases (int8, int32 copies)",
    "trainable_state": "their state: the classifier's float32 master (+ fractions, optimizer moments)",
    "lls_head_scratch": "LLS head and step scratch",
    "training_other": "training buffer, other parts",
    "stack": "stack reserve",
    "heap": "heap reserve",
    "firmware_static": "firmware static data (.data, .bss)",
}
TRAINING_BUFFER_ITEMS = ("trainable_weights", "trainable_state", "lls_head_scratch", "training_other")
_STATE_PARTS = ("classifier_master", "classifier_master_bias")
_SCRATCH_PARTS = ("input_copy", "mid_grad", "out_grad", "features", "feature_grad", "logits")


@dataclass
class BoardPlan:
    model: str
    device: str
    board: str
    train_last: int
    flash: dict[str, int]           # FLASH_LABELS' keys -> bytes (sums to flash_total)
    sram: dict[str, int]            # SRAM_LABELS' keys -> bytes (sums to sram_total)
    flash_limit: int
    sram_limit: int
    image_bytes: int
    arena_bytes: int
    train_layout: dict[str, int] | None     # edge_lls.board_train.train_layout, None for train_last 0
    firmware: FirmwareFootprint
    board_source: str                       # where the stack reserve was read
    notes: dict[str, str] = field(default_factory=dict)
    optimizer: str = "sgd"                  # the blocks' step: edge_lls.board_train.OPTIMIZERS

    @property
    def flash_total(self) -> int:
        return sum(self.flash.values())

    @property
    def sram_total(self) -> int:
        return sum(self.sram.values())

    @property
    def flash_margin(self) -> int:
        return self.flash_limit - self.flash_total

    @property
    def sram_margin(self) -> int:
        return self.sram_limit - self.sram_total

    @property
    def fits(self) -> bool:
        return self.flash_margin >= 0 and self.sram_margin >= 0

    def refusal(self) -> str | None:
        """The one-line reason the plan does not fit, None when it does."""
        over = [f"{what} needs {need:,} B, has {limit:,} B (over by {need - limit:,} B)"
                for what, need, limit in (("flash", self.flash_total, self.flash_limit),
                                          ("SRAM", self.sram_total, self.sram_limit)) if need > limit]
        if not over:
            return None
        return (f"{self.model} training the last {self.train_last} block{'s' if self.train_last != 1 else ''} "
                f"does not fit {self.device} ({self.board}): {'; '.join(over)}")

    def require_fit(self) -> "BoardPlan":
        reason = self.refusal()
        if reason:
            raise ConfigError(reason)
        return self

    def to_dict(self) -> dict:
        def region(items, labels, total, limit):
            return {"items": dict(items), "labels": {k: labels[k] for k in items}, "total_bytes": total,
                    "limit_bytes": limit, "margin_bytes": limit - total, "used_fraction": total / limit}
        master_bits = 16 if self.train_layout and any(k.endswith("_fractions") for k in self.train_layout) else 8
        optimizer = self.optimizer if self.train_layout else "sgd"
        return {"model": self.model, "device": self.device, "board": self.board, "train_last": self.train_last,
                "master_bits": master_bits, "optimizer": optimizer,
                "fits": self.fits, "image_bytes": self.image_bytes, "arena_bytes": self.arena_bytes,
                "flash": region(self.flash, FLASH_LABELS, self.flash_total, self.flash_limit),
                "sram": region(self.sram, SRAM_LABELS, self.sram_total, self.sram_limit),
                "train_layout": dict(self.train_layout) if self.train_layout is not None else None,
                "firmware": {"code_bytes": self.firmware.code_bytes, "static_bytes": self.firmware.static_bytes,
                             "source": self.firmware.source},
                "board_source": self.board_source}


# ------------------------------------------------------------------------ the boards
def _size(text: str) -> int:
    m = re.fullmatch(r"\s*(0x[0-9a-fA-F]+|\d+)\s*([KM]?)\s*", text)
    if not m:
        raise ValueError(text)
    return int(m.group(1), 0) * {"": 1, "K": KiB, "M": KiB * KiB}[m.group(2)]


def _parse_memory_ld(text: str) -> dict[str, int]:
    found = {}
    for region in ("FLASH", "RAM"):
        m = re.search(rf"^\s*{region}\s*\([^)]*\)\s*:\s*ORIGIN\s*=\s*[^,]+,\s*LENGTH\s*=\s*([0-9A-Fa-fxKM]+)",
                      text, re.M)
        if m:
            found[region] = _size(m.group(1))
    for symbol in ("EL_STACK_BYTES", "EL_HEAP_BYTES"):
        m = re.search(rf"^\s*{symbol}\s*=.*:\s*([0-9A-Fa-fxKM]+)\s*;", text, re.M)
        if m:
            found[symbol] = _size(m.group(1))
    return found


def board_for(device: str | DeviceProfile, firmware: Path = FIRMWARE) -> Board:
    """The firmware board of a microcontroller profile, its sizes read from its memory.ld
    (the stored STORED_BOARDS when the firmware sources are not there)."""
    profile = device if isinstance(device, DeviceProfile) else get_device(device)
    if profile.runs_locally or not profile.flash_bytes:
        raise ConfigError(f"device {profile.name} is not a microcontroller profile; the board plan is for "
                          f"{' or '.join(STORED_BOARDS)}")
    boards = Path(firmware) / "boards"
    for mk in sorted(boards.glob("*/board.mk")):
        m = re.search(r"^BOARD_DEVICE\s*:?=\s*(\S+)", mk.read_text(), re.M)
        if not m or m.group(1) != profile.name:
            continue
        ld = mk.with_name("memory.ld")
        values = _parse_memory_ld(ld.read_text()) if ld.exists() else {}
        missing = {"FLASH", "RAM", "EL_STACK_BYTES"} - set(values)
        if missing:
            raise ConfigError(f"{ld}: no {', '.join(sorted(missing))} found (the board plan reads them there)")
        return Board(mk.parent.name, profile.name, values["FLASH"], values["RAM"], values["EL_STACK_BYTES"],
                     values.get("EL_HEAP_BYTES", 0), str(ld.relative_to(Path(firmware))))
    if profile.name in STORED_BOARDS:
        return STORED_BOARDS[profile.name]
    raise ConfigError(f"no firmware board is built for device {profile.name}")


# ------------------------------------------------------------------------ the firmware
def _run(cmd: list[str], cwd: Path) -> str:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = " ".join((result.stderr or result.stdout).split())[-400:]
        raise ConfigError(f"{' '.join(cmd[:4])} ... failed (status {result.returncode}): {tail}")
    return result.stdout


def measure_firmware(board: str, build: Path | None = None, firmware: Path = FIRMWARE,
                     cross: str = "arm-none-eabi-") -> FirmwareFootprint:
    """The firmware's code and static bytes for a board, from the current sources: builds
    it (make BOARD=<board> BUILD=<build> firmware; a temporary folder by default, so the
    checkout's build/ is left alone), links every object the firmware builds (src/**,
    boards/<family>/*.o, main.o) whole, -Wl,--no-gc-sections, with the C library routines
    they call, and sums `arm-none-eabi-size -A`: FLASH_SECTIONS (code) and RAM_SECTIONS
    (static). An upper bound of what any firmware made of these objects links."""
    tools = ["make", f"{cross}gcc", f"{cross}size"]
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        raise ConfigError(f"measuring the firmware needs {', '.join(missing)} (`make toolchain` installs "
                          f"the Arm toolchain)")
    firmware = Path(firmware)
    if not (firmware / "Makefile").exists():
        raise ConfigError(f"measuring the firmware needs its sources: {firmware} is absent")
    with tempfile.TemporaryDirectory(prefix="edge-lls-fw-") as tmp:
        out = Path(build) if build is not None else Path(tmp) / board
        make = ["make", "-s", "-C", str(firmware), f"BOARD={board}", f"BUILD={out}", f"CROSS={cross}"]
        _run(make + ["firmware"], firmware)
        flags = _run(make + ["--eval", "el-print-link: ; @echo $(CC) $(LDFLAGS)", "el-print-link"], firmware).split()
        flags = ["-Wl,--no-gc-sections" if f == "-Wl,--gc-sections" else f for f in flags]
        objects = sorted(str(p) for p in (out / "obj").rglob("*.o")
                         if p.relative_to(out / "obj").parts[0] not in ("tests", "model"))
        if not objects:
            raise ConfigError(f"{out / 'obj'}: make built no objects")
        elf = Path(tmp) / "all-objects.elf"
        _run(flags + ["-o", str(elf), *objects], firmware)
        sections = {}
        for line in _run([f"{cross}size", "-A", str(elf)], firmware).splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1].isdigit():
                sections[parts[0]] = sections.get(parts[0], 0) + int(parts[1])
    return FirmwareFootprint(sum(sections.get(s, 0) for s in FLASH_SECTIONS),
                             sum(sections.get(s, 0) for s in RAM_SECTIONS),
                             f"measured: {len(objects)} objects of {board} linked whole")


# ------------------------------------------------------------------------ the plan
def image_parts(image, trainable_ops: set[int]) -> dict[str, int]:
    """The model image's bytes by IMAGE_ITEMS (blob.Image members by name); sums to its size."""
    parts = dict.fromkeys(IMAGE_ITEMS, 0)
    for m in image.members:
        array = re.fullmatch(r"op(\d+)_(weights|bias|multiplier|shift)", m.name)
        if array and array.group(2) in ("weights", "bias"):
            key = "trainable_initial" if int(array.group(1)) in trainable_ops else "frozen_weights"
        elif array:
            key = "requantization"
        elif re.fullmatch(r"tail\d+_basis", m.name):
            key = "lls_bases"
        else:
            key = "records"
        parts[key] += len(m.data)
    parts["padding"] = len(image.data) - sum(parts.values())
    return parts


def _split_layout(layout: dict[str, int]) -> dict[str, int]:
    groups = dict.fromkeys(TRAINING_BUFFER_ITEMS, 0)
    for name, size in layout.items():
        if name == "total":
            continue
        if re.fullmatch(r"block\d+_(dw|pw)_(weights|bias)|classifier_(weights|bias)", name):
            groups["trainable_weights"] += size
        elif name in _STATE_PARTS or re.fullmatch(r"block\d+_(dw|pw)_(fractions|moments)", name):
            groups["trainable_state"] += size
        elif name in _SCRATCH_PARTS:
            groups["lls_head_scratch"] += size
        else:
            groups["training_other"] += size
    assert sum(groups.values()) == layout["total"], (groups, layout)
    if not groups["training_other"]:
        del groups["training_other"]
    return groups


def board_plan(program_or_path, train_last: int, device: str | DeviceProfile, *,
               firmware: FirmwareFootprint | None = None, stack_bytes: int | None = None,
               master_bits: int = 8, optimizer: str = "sgd") -> BoardPlan:
    """The flash and SRAM plan of fine-tuning the last `train_last` blocks (0: inference only)
    of an int8 program (or .tflite path) on a microcontroller profile. Raises ConfigError
    for a device that is not one, a train_last out of range, or a tail the firmware refuses;
    FormatError for an unreadable model. A plan that does not fit is returned (fits False):
    require_fit() refuses it. stack_bytes: the build's stack reserve (make STACK_BYTES=N), by
    default the board's (memory.ld). master_bits: 8 (the block weights' int8 codes, the
    default) or 16 (plus an int8 fraction per block weight: el_train_config.fractions = 1).
    optimizer: the blocks' step, sgd (the default), rmsprop (a float32 moment per block
    weight and bias: el_train_config.optimizer = EL_TRAIN_RMSPROP) or rmsprop-factored (row and
    column sums of each weight matrix: EL_TRAIN_RMSPROP_FACTORED)."""
    from .board_train import OPTIMIZERS, train_layout
    from .finetune import trainable_tail
    from .formats import blob
    from .program.ir import Program

    profile = device if isinstance(device, DeviceProfile) else get_device(device)
    board = board_for(profile)
    if isinstance(train_last, bool) or not isinstance(train_last, int) or train_last < 0:
        raise ConfigError(f"--train-last must be an integer from 0 (inference only) up, got {train_last!r}")
    if isinstance(program_or_path, Program):
        program, name = program_or_path, program_or_path.name
    else:
        from .formats.tflite import read_tflite
        path = Path(program_or_path)
        if path.suffix.lower() != ".tflite":
            raise ConfigError(f"{path}: the board plan takes an int8 .tflite model")
        program, name = read_tflite(path), path.name
    tail = trainable_tail(program, train_last, where=name) if train_last else None
    image = blob.build_image(program, tail)
    header = blob.open_image(image.data, name)["header"]
    if master_bits not in (8, 16) or isinstance(master_bits, bool):
        raise ConfigError(f"--master-bits must be 8 (int8 codes) or 16 (int8 codes and fractions), got {master_bits!r}")
    if optimizer not in OPTIMIZERS:
        raise ConfigError(f"--board-optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    layout = (train_layout(image.data, name, fractions=master_bits == 16, optimizer=optimizer)
              if tail is not None else None)
    trainable = set()
    if tail is not None:
        trainable = {op for b in tail.blocks for op in b.ops} | {tail.classifier_op}
    fw = firmware or FIRMWARE_BOUNDS.get(board.name)
    if fw is None:
        raise ConfigError(f"no stored firmware bound for board {board.name}; measure it (--measure)")
    flash = {**image_parts(image, trainable), "firmware_code": fw.code_bytes}
    sram = {"arena": header["arena_bytes"]}
    if layout is not None:
        sram.update(_split_layout(layout))
    if stack_bytes is not None and (isinstance(stack_bytes, bool) or not isinstance(stack_bytes, int)
                                    or stack_bytes < 1024 or stack_bytes % 8):
        raise ConfigError(f"--stack must be a multiple of 8 bytes, at least 1024, got {stack_bytes!r}")
    sram["stack"] = board.stack_bytes if stack_bytes is None else stack_bytes
    if board.heap_bytes:
        sram["heap"] = board.heap_bytes
    sram["firmware_static"] = fw.static_bytes
    return BoardPlan(name, profile.name, board.name, train_last, flash, sram, profile.flash_bytes,
                     profile.memory_budget, len(image.data), header["arena_bytes"], layout, fw,
                     board.source if stack_bytes is None else f"--stack: make STACK_BYTES={stack_bytes}",
                     optimizer=optimizer)


__all__ = ["BoardPlan", "Board", "FirmwareFootprint", "DEFAULT_TRAIN_LAST", "FIRMWARE_BOUNDS", "TRAINING_BUFFER_ITEMS",
           "board_plan",
           "board_for", "measure_firmware", "image_parts"]

"""`edge-lls profile`: the analytic (and with --measure, measured) profile of a training
step (edge_lls.profile), rendered as a table or JSON; with --backbone FILE.tflite and a
microcontroller --device, the board's flash and SRAM plan of fine-tuning it on the chip
(edge_lls.board_plan), refused (exit status 2) when it does not fit."""
from __future__ import annotations

import argparse
import json

from ..board_plan import DEFAULT_TRAIN_LAST, FLASH_LABELS, IMAGE_ITEMS, SRAM_LABELS, TRAINING_BUFFER_ITEMS, BoardPlan
from ..board_train import MAX_BLOCKS
from ..devices import format_bytes
from ..errors import ConfigError
from ..profile import PRECISION_BYTES, Profile, profile_model, profile_zoo, ratios


def format_count(n: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(n) >= size:
            return f"{n / size:.2f}{unit}"
    return f"{int(n)}"


def _shape_str(shape) -> str:
    return "x".join(str(s) for s in shape)


_COLUMNS = ["block", "type", "output", "fwd MACs", "fwd other", "signal", "wgrad", "optim",
            "total", "weights", "grads", "opt state", "rule", "act live", "scratch"]


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    lines = []
    for index, r in enumerate(rows):
        cells = [r[0].ljust(widths[0]), r[1].ljust(widths[1]), r[2].ljust(widths[2])]
        cells += [c.rjust(w) for c, w in zip(r[3:], widths[3:])]
        lines.append("  ".join(cells).rstrip())
        if index == 0 or index == len(rows) - 2:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render(profile: Profile) -> str:
    p = profile
    head = (f"{p.model} {_shape_str(p.input_shape)}, {p.num_classes} classes, rule {p.rule} "
            f"({p.mode}), batch {p.batch}, {p.precision}, optimizer {p.optimizer}")
    if p.analytic_only:
        head += f"  [{p.precision}: analytic, not yet measurable: training runs in float]"
    rows = [_COLUMNS]
    for b in p.blocks:
        rows.append([b.name, b.kind, _shape_str(b.output_shape), format_count(b.forward_macs),
                     format_count(b.forward_other_ops), format_count(b.learning_signal_macs),
                     format_count(b.weight_grad_macs), format_count(b.optimizer_macs),
                     format_count(b.total_macs), format_bytes(b.weight_bytes),
                     format_bytes(b.grad_bytes), format_bytes(b.optimizer_bytes),
                     format_bytes(b.rule_param_bytes), format_bytes(b.activation_bytes),
                     format_bytes(b.scratch_bytes)])
    rows.append(["total", "", "", format_count(p.forward_macs), format_count(p.forward_other_ops),
                 format_count(p.learning_signal_macs), format_count(p.weight_grad_macs),
                 format_count(p.optimizer_macs), format_count(p.total_macs),
                 format_bytes(p.weight_bytes), format_bytes(p.grad_bytes),
                 format_bytes(p.optimizer_bytes), format_bytes(p.rule_param_bytes),
                 format_bytes(p.activation_bytes) + "*", format_bytes(p.scratch_bytes)])
    peak = p.peak_block
    big = sorted(peak.buffers, key=lambda t: -t[3])[:4]
    biggest = ", ".join(f"{name} {_shape_str(shape)} {format_bytes(nb)}" for name, shape, _, nb in big)
    live = {"local": "while the block trains", "bp": "when the backward pass reaches the block",
            "dfa": "while DFA updates the block (all blocks ran forward first)"}
    when = live["local"] if p.mode == "local" else live.get(p.rule, live["bp"])
    lines = [head, f"MACs per step of {p.batch} samples (forward: conv/FC only, "
                   f"{format_count(p.forward_macs_per_sample)} per sample); "
                   f"bytes held; 'act live' = activations live {when}", "",
             _table(rows), "  * total act: the step arena without scratch (allocated once, buffers "
                           "packed by lifetime: not a sum)", "",
             f"peak training memory  {format_bytes(p.peak_memory_bytes)}  ({p.peak_memory_bytes:,} B) = "
             f"weights {format_bytes(p.weight_bytes)} + grads {format_bytes(p.grad_bytes)} + optimizer "
             f"{format_bytes(p.optimizer_bytes)} + rule {format_bytes(p.rule_param_bytes)} + activations "
             f"{format_bytes(p.activation_bytes)} + scratch {format_bytes(p.scratch_bytes)} + transient "
             f"{format_bytes(p.transient_bytes)} (est.) + input {format_bytes(p.input_bytes)}",
             (f"set by {peak.name}: {format_bytes(peak.activation_bytes + peak.scratch_bytes)} of activations "
              f"and scratch live while it trains (largest: {biggest})" if p.mode == "local" else
              f"set by all blocks at once: {p.rule} holds every block's activations until its backward "
              f"pass; largest holder {peak.name} with {format_bytes(peak.own_bytes)} ({biggest})"),
             f"activations + scratch: arena {format_bytes(p.arena_bytes)}; least possible for this "
             f"schedule {format_bytes(p.min_activation_bytes)} (largest live set)"]
    if p.measured:
        m = p.measured
        lines.append(
            f"measured (tracemalloc, one real step): step peak {format_bytes(m['step_peak_bytes'])} vs "
            f"analytic {format_bytes(m['analytic_step_bytes'])} ({m['step_rel_diff']:+.1%}); "
            f"model+trainer {format_bytes(m['persistent_bytes'])} vs {format_bytes(m['analytic_persistent_bytes'])} "
            f"({m['persistent_rel_diff']:+.1%}); total peak {format_bytes(m['peak_bytes'])} vs "
            f"{format_bytes(m['analytic_peak_bytes'])} ({m['peak_rel_diff']:+.1%})")
    if p.device:
        d = p.device
        verdict = (f"fits, {format_bytes(d['margin_bytes'])} to spare" if d["fits"]
                   else f"does NOT fit: over by {format_bytes(-d['margin_bytes'])}")
        note = ""
        if d["device_precision"] != d["profiled_precision"]:
            note = (f"; {d['name']} trains in {d['device_precision']}: see --precision "
                    f"{d['device_precision']}")
        lines.append(f"device {d['name']} (budget {format_bytes(d['budget_bytes'])}): {verdict} "
                     f"({d['used_fraction']:.1%} of the budget){note}")
    return "\n".join(lines)


def render_compare(profile: Profile, bp: Profile, r: dict) -> str:
    return "\n".join([
        render(profile), "", "compared with backpropagation (same runtime, model, batch):", "",
        render(bp), "",
        f"ratios {profile.rule}/bp: learning-signal MACs {r['learning_signal_macs']:.4g} "
        f"(bp/{profile.rule} = {1 / r['learning_signal_macs']:.0f}x; against BP's whole error backward "
        f"pass, batch-norm and intra-block input gradients included: {r['learning_signal_vs_full_backward']:.4g}, "
        f"{1 / r['learning_signal_vs_full_backward']:.0f}x), total training MACs "
        f"{r['total_macs']:.3f}, peak training memory {r['peak_memory']:.3f}, step memory "
        f"(arena + temporaries) {r['step_memory']:.3f}"])


def render_summary(profiles: list[Profile], bp: Profile | None) -> str:
    p0 = profiles[0]
    rows = [["rule", "fwd MACs", "signal", "wgrad", "optim", "total MACs", "signal/BP", "signal/BPfull", "total/BP",
             "weights+grads+opt+rule", "act+scratch", "peak memory", "peak/BP", "peak set by"]]
    for p in profiles:
        rows.append([p.rule, format_count(p.forward_macs), format_count(p.learning_signal_macs),
                     format_count(p.weight_grad_macs), format_count(p.optimizer_macs),
                     format_count(p.total_macs),
                     f"{p.learning_signal_macs / bp.learning_signal_macs:.4f}" if bp else "-",
                     f"{p.learning_signal_macs / bp.learning_signal_full_macs:.4f}" if bp else "-",
                     f"{p.total_macs / bp.total_macs:.3f}" if bp else "-",
                     format_bytes(p.persistent_bytes), format_bytes(p.arena_bytes),
                     format_bytes(p.peak_memory_bytes),
                     f"{p.peak_memory_bytes / bp.peak_memory_bytes:.3f}" if bp else "-", p.peak_block.name])
    widths = [max(len(r[j]) for r in rows) for j in range(len(rows[0]))]
    out = [f"{p0.model} {_shape_str(p0.input_shape)}, {p0.num_classes} classes, batch {p0.batch}, "
           f"{p0.precision}, optimizer {p0.optimizer}"]
    for index, r in enumerate(rows):
        out.append("  ".join([r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]))
        if index == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def parse_input_shape(text: str) -> tuple:
    try:
        dims = tuple(int(v) for v in str(text).lower().replace("×", "x").split("x"))
    except ValueError:
        dims = ()
    if len(dims) != 3 or min(dims) < 1:
        raise ConfigError(f"--input must be HxWxC, e.g. 32x32x3; got {text!r}")
    return dims


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="zoo model: smallconv, smallconv-l, vgg8, mobilenetv1, a float "
                                         ".onnx model (imported: its own input shape and classes), "
                                         "or a .tflite file (its inference arena)")
    parser.add_argument("--arena", choices=("tflm",),
                        help="with a .tflite --model: also TFLite Micro's smallest arena (bisected), beside ours")
    parser.add_argument("--input", default=None, metavar="HxWxC",
                        help="input shape, e.g. 32x32x3 (default: the model's own)")
    parser.add_argument("--classes", type=int, default=10, help="number of classes K (default 10)")
    parser.add_argument("--rule", default="lls",
                        help="learning rule (lls, lls-m, lls-mxm, lls-random, local-losses, dfa, bp); "
                             "a comma-separated list or 'all' prints one summary row per rule")
    parser.add_argument("--batch", type=int, default=64, help="batch size N (default 64)")
    parser.add_argument("--precision", choices=sorted(PRECISION_BYTES), default="fp32",
                        help="fp32 (default); fp16: mixed-precision training as the runtime does it "
                             "(float16 activations); int8: analytic only (training runs in float)")
    parser.add_argument("--optimizer", default="adamw-sf", help="sgd, adamw, adamw-sf (default)")
    parser.add_argument("--width", type=float, default=None, help="MobileNetV1 width multiplier (default 0.25)")
    parser.add_argument("--reduced-rows", type=int, default=None,
                        help="LLS-MxM basis rows R < K (reduced LLS-MxM)")
    parser.add_argument("--device", default=None,
                        help="device profile (host, rpi4, rpi5, cortex-m4, cortex-m7): does the peak fit its budget? "
                             "With --backbone: cortex-m4 or cortex-m7, the board to plan for")
    parser.add_argument("--backbone", metavar="FILE.tflite",
                        help="an int8 .tflite model fine-tuned on the chip: with --device cortex-m4|cortex-m7, the "
                             "board's flash and SRAM plan; exit status 2 when it does not fit")
    parser.add_argument("--train-last", type=int, metavar="N", default=None,
                        help=f"with --backbone: the blocks the board trains (default {DEFAULT_TRAIN_LAST}; the "
                             f"firmware trains 1 to {MAX_BLOCKS}, 0: inference only)")
    parser.add_argument("--stack", type=int, metavar="BYTES", default=None,
                        help="with --backbone: the build's stack reserve (make STACK_BYTES=BYTES; default the "
                             "board's memory.ld)")
    parser.add_argument("--master-bits", type=int, metavar="BITS", default=None, choices=(8, 16),
                        help="with --backbone: the trained block weights' bits on the board: 8 (int8 codes, "
                             "stochastic rounding; the default) or 16 (plus an int8 fraction per weight, "
                             "el_train_config.fractions)")
    parser.add_argument("--board-optimizer", default=None, choices=("sgd", "rmsprop", "rmsprop-factored"),
                        help="with --backbone: the trained blocks' optimizer on the board: sgd (the default, no "
                             "state), rmsprop (a float32 second moment per block weight and bias) or "
                             "rmsprop-factored (the same step, each weight matrix's moment as row and column sums)")
    parser.add_argument("--compare", action="store_true",
                        help="profile BP alongside and print the ratios rule/BP")
    parser.add_argument("--measure", action="store_true",
                        help="also run real training steps and report the traced peak (tracemalloc); with "
                             "--backbone: measure the firmware's code and static data from its sources (needs make "
                             "and the Arm toolchain) instead of the stored bounds")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def _device_report(name: str, profile: Profile) -> dict:
    from ..devices import get_device
    dev = get_device(name)
    budget = int(dev.memory_budget)
    need = profile.peak_memory_bytes
    return {"name": dev.name, "budget_bytes": budget, "peak_memory_bytes": need,
            "device_precision": dev.precision, "profiled_precision": profile.precision,
            "fits": need <= budget, "margin_bytes": budget - need, "used_fraction": need / budget}


def _rule_list(text: str) -> list[str]:
    from ..rules import RULES
    names = list(RULES) if text == "all" else [r.strip() for r in text.split(",") if r.strip()]
    for r in names:
        if r not in RULES:
            raise ConfigError(f"unknown rule {r!r}; choose one of: {', '.join(RULES)}, or all")
    return names


def _run_tflite(args) -> int:
    """A .tflite model's int8 inference arena as our planner lays it, and TFLM's."""
    from ..formats.tflite import read_tflite
    from ..program.memory import plan_program
    program = read_tflite(args.model)
    plan = plan_program(program)
    live = max(plan.live_bytes(i) for i in range(len(program.operators)))
    result = {"model": str(args.model), "arena_bytes": plan.arena_bytes, "largest_live_set_bytes": live,
              "tensors": len(plan.sizes)}
    if args.arena == "tflm":
        from pathlib import Path

        from ..tflm import tflm_min_arena
        result["tflm_arena_bytes"] = tflm_min_arena(Path(args.model).read_bytes())
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{args.model}: activation arena {plan.arena_bytes:,} B (edge-lls planner, {len(plan.sizes)} tensors; "
          f"largest live set {live:,} B; kernel scratch not included)")
    if "tflm_arena_bytes" in result:
        print(f"TFLite Micro's smallest arena: {result['tflm_arena_bytes']:,} B (bisected; holds its scratch "
              f"and persistent structures too)")
    return 0


def _onnx_profiler(args):
    """rule -> Profile of the imported .onnx --model (which fixes its own shapes)."""
    from ..formats.onnx_import import load_onnx
    for flag, value in (("--input", args.input), ("--width", args.width), ("--measure", args.measure)):
        if value:
            raise ConfigError(f"{flag} does not apply to an .onnx --model (its shapes are its own; "
                              f"--measure takes a zoo model)")
    rule_options = {"reduced_rows": args.reduced_rows} if args.reduced_rows else {}
    return lambda rule: profile_model(load_onnx(args.model)[0], rule, args.batch, optimizer=args.optimizer,
                                      precision=args.precision, **rule_options)


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f} %"


def render_board_plan(plan: BoardPlan) -> str:
    """The plan as a table: flash lines, SRAM lines, each total against the device's, the margin,
    and a last line 'fits ...' or 'does not fit ...'."""
    blocks = "inference only (no trainable tail)" if plan.train_last == 0 else (
        f"training the last {plan.train_last} block{'s' if plan.train_last != 1 else ''} and the classifier"
        + (", 16-bit masters" if plan.to_dict()["master_bits"] == 16 else "")
        + {"sgd": "", "rmsprop": ", RMSprop", "rmsprop-factored": ", factored RMSprop"}[plan.to_dict()["optimizer"]])
    fw = plan.firmware
    stored = fw.source.startswith("stored")
    rows: list[tuple[str, str, str]] = []      # (label, bytes, note)

    def total(used: int, limit: int) -> None:
        margin = limit - used
        rows.append(("  total", f"{used:,}", f"of {limit:,} ({format_bytes(limit)}): {_percent(used, limit)}, "
                     + (f"margin {margin:,}" if margin >= 0 else f"OVER by {-margin:,}")))

    rows.append(("flash", "bytes", ""))
    rows.append(("  model image", f"{plan.image_bytes:,}",
                 f"(edge-lls export --format c --train-last {plan.train_last})"))
    for key in IMAGE_ITEMS:
        if plan.flash.get(key):
            rows.append((f"    {FLASH_LABELS[key]}", f"{plan.flash[key]:,}", ""))
    rows.append((f"  {FLASH_LABELS['firmware_code']}", f"{plan.flash['firmware_code']:,}",
                 "(stored upper bound; --measure: from the sources)" if stored else f"({fw.source})"))
    total(plan.flash_total, plan.flash_limit)
    rows.append(("SRAM", "", ""))
    notes = {"arena": "(planned by the exporter)", "stack": f"({plan.board_source})",
             "heap": f"({plan.board_source})",
             "firmware_static": "(stored upper bound)" if stored else f"({fw.source})"}
    for key, size in plan.sram.items():
        if key in TRAINING_BUFFER_ITEMS:
            if key == next(k for k in plan.sram if k in TRAINING_BUFFER_ITEMS):
                sized = ("el_train_buffer_bytes_config" if plan.to_dict()["master_bits"] == 16
                         or plan.to_dict()["optimizer"] != "sgd" else "el_train_buffer_bytes")
                rows.append(("  training buffer", f"{plan.train_layout['total']:,}", f"({sized})"))
            rows.append((f"    {SRAM_LABELS[key]}", f"{size:,}", ""))
        else:
            rows.append((f"  {SRAM_LABELS[key]}", f"{size:,}", notes.get(key, "")))
    total(plan.sram_total, plan.sram_limit)
    widths = [max(len(r[j]) for r in rows) for j in range(2)]
    lines = [f"{plan.model} on {plan.device} (board {plan.board}), {blocks}", ""]
    lines += [f"{label.ljust(widths[0])}  {size.rjust(widths[1])}  {note}".rstrip() for label, size, note in rows]
    lines.append("")
    if plan.fits:
        lines.append(f"fits {plan.device}: flash {_percent(plan.flash_total, plan.flash_limit)} and SRAM "
                     f"{_percent(plan.sram_total, plan.sram_limit)} used")
    else:
        over = [f"{what} over by {-margin:,} B" for what, margin in
                (("flash", plan.flash_margin), ("SRAM", plan.sram_margin)) if margin < 0]
        lines.append(f"does not fit {plan.device}: {', '.join(over)}")
    return "\n".join(lines)


_NOT_FOR_BACKBONE = {"--model": ("model", None), "--arena": ("arena", None), "--input": ("input", None),
                     "--classes": ("classes", 10), "--rule": ("rule", "lls"), "--batch": ("batch", 64),
                     "--precision": ("precision", "fp32"), "--optimizer": ("optimizer", "adamw-sf"),
                     "--width": ("width", None), "--reduced-rows": ("reduced_rows", None),
                     "--compare": ("compare", False)}


def _run_board_plan(args) -> int:
    """`--backbone FILE.tflite --device cortex-m4|cortex-m7 [--train-last N]`: the board's plan."""
    from ..board_plan import board_for, board_plan, measure_firmware
    from ..devices import get_device
    for flag, (attr, default) in _NOT_FOR_BACKBONE.items():
        if getattr(args, attr) != default:
            raise ConfigError(f"{flag} does not apply to --backbone (the board's memory plan of fine-tuning it)")
    if not args.device:
        raise ConfigError("--backbone needs --device cortex-m4 or cortex-m7: the board to plan for")
    device = get_device(args.device)
    board = board_for(device)
    train_last = DEFAULT_TRAIN_LAST if args.train_last is None else args.train_last
    firmware = measure_firmware(board.name) if args.measure else None
    plan = board_plan(args.backbone, train_last, device, firmware=firmware, stack_bytes=args.stack,
                      master_bits=args.master_bits or 8, optimizer=args.board_optimizer or "sgd")
    print(json.dumps(plan.to_dict(), indent=2) if args.json else render_board_plan(plan), flush=True)
    plan.require_fit()
    return 0


def run(args) -> int:
    if args.backbone is not None:
        return _run_board_plan(args)
    if (args.train_last is not None or args.stack is not None or args.master_bits is not None
            or args.board_optimizer is not None):
        raise ConfigError("--train-last, --stack, --master-bits and --board-optimizer apply to --backbone "
                          "FILE.tflite (the board's memory plan)")
    if args.model is None:
        raise ConfigError("--model is required: a zoo model name or a .tflite file")
    if str(args.model).endswith(".tflite"):
        if args.device:
            raise ConfigError(f"--device does not apply to a .tflite --model (its inference arena); for the "
                              f"board's flash and SRAM plan use --backbone {args.model} --device {args.device}")
        return _run_tflite(args)
    if args.arena:
        raise ConfigError("--arena applies to a .tflite --model")
    if args.batch < 2:
        raise ConfigError(f"--batch must be at least 2 (batch norm statistics), got {args.batch}")
    if args.classes < 2:
        raise ConfigError(f"--classes must be at least 2, got {args.classes}")
    onnx_profile = _onnx_profiler(args) if str(args.model).lower().endswith(".onnx") else None
    shape = parse_input_shape(args.input) if args.input else None
    rules = _rule_list(args.rule)
    common = dict(num_classes=args.classes, input_shape=shape, optimizer=args.optimizer,
                  precision=args.precision, width=args.width, reduced_rows=args.reduced_rows,
                  measure=args.measure)
    cache: dict[str, Profile] = {}

    def get(rule):
        if rule not in cache:
            cache[rule] = onnx_profile(rule) if onnx_profile else profile_zoo(args.model, rule, args.batch, **common)
            if args.device:
                cache[rule].device = _device_report(args.device, cache[rule])
        return cache[rule]

    if len(rules) > 1:
        profiles = [get(r) for r in rules]
        bp = get("bp") if (args.compare or "bp" in rules) else None
        if args.json:
            print(json.dumps({"profiles": [p.to_dict() for p in profiles],
                              "bp": bp.to_dict() if bp else None}, indent=2))
        else:
            print(render_summary(profiles, bp))
        return 0
    profile = get(rules[0])
    bp = get("bp") if args.compare else None
    r = ratios(profile, bp) if bp else None
    if args.json:
        out = profile.to_dict()
        if bp:
            out["bp"] = bp.to_dict()
            out["ratios"] = r
        print(json.dumps(out, indent=2))
    else:
        print(render_compare(profile, bp, r) if bp else render(profile))
    return 0

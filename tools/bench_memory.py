"""Peak training memory, LLS vs BP, in the same runtime at the same batch: analytic
(edge_lls.profile) and measured (tracemalloc over a real step), with the ratios.

    python tools/bench_memory.py                       # SmallConv and VGG8, 32x32x3, batch 64
    python tools/bench_memory.py --models vgg8 --batch 128 --no-measure

Targets from the issue: peak LLS / BP <= 0.5 for SmallConv and <= 0.35 for VGG8. Both
rules' arenas are planned by liveness over their own schedule (nn/arena.py: 'local' for
LLS, 'backprop' for BP), so the ratio compares each rule with the least memory its
schedule needs, up to the scratch region, which is kept apart from the planned buffers
(the tool prints that gap against the largest live set). It also prints where the
memory goes (the buffers of the block that sets each peak) and what-if layouts that show
which change would move the ratio:
  - no z:      batch norm inverted from its output (y = act(BN(z)) with an invertible
               LeakyReLU and gamma != 0 gives z back), so no block that stores y also
               keeps its pre-norm z (both rules; a local rule's conv block followed by
               pooling stores z and never y, Block.defers_output, so it is unchanged);
  - grads shared: each block's optimizer steps right after its backward (both rules do),
               so one gradient buffer of the largest block could serve every block.
These are layouts computed from the runtime's buffer lists with buffers removed (planned
by the same arena.plan), not measurements: the kernels do not do this today. (A local
rule's conv blocks already keep no full-size output gradient, Block.backward_pooled, and
one followed by pooling no output y either, Block.defers_output.)
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from edge_lls.models import build_model  # noqa: E402
from edge_lls.nn.arena import aligned  # noqa: E402
from edge_lls.devices import format_bytes  # noqa: E402
from edge_lls.profile import (layout_bytes, measure_step,  # noqa: E402
                              attach_measurement, profile_model)

TARGETS = {"smallconv": 0.5, "vgg8": 0.35}


def machine() -> str:
    import numba
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"NumPy {np.__version__}, Numba {numba.__version__}")


def what_if(model, rule, batch, *, drop_z=False, share_grads=False):
    """Step + persistent bytes of a hypothetical layout (see the module doc)."""
    from edge_lls.trainer import Trainer
    trainer = Trainer(model, rule=rule)
    mode = trainer.rule.mode
    stages = model.stages(batch, mode, trainer.rule.head_buffers(model, batch), trainer.rule.pooled_grad)
    out = []
    for block, bufs in zip(model.blocks + [None], stages):
        names = {b.name for b in bufs}
        # z can go only where its y is stored (and z is recomputed from it); a local rule's
        # conv block followed by pooling keeps z and no y (Block.defers_output), so keeps z.
        out.append([b for b in bufs if not (drop_z and block is not None and b.name.startswith("z")
                                            and "y" + b.name[1:] in names)])
    arena, _ = layout_bytes(out, mode)
    profile = profile_model(model, rule, batch, trainer=trainer)
    persistent = profile.persistent_bytes
    if share_grads:
        persistent -= profile.grad_bytes - max(b.grad_bytes for b in profile.blocks)
    return arena + profile.transient_bytes + persistent + profile.input_bytes


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="smallconv,vgg8")
    ap.add_argument("--input", default="32x32x3")
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--no-measure", action="store_true", help="analytic figures only")
    args = ap.parse_args(argv)
    shape = tuple(int(v) for v in args.input.split("x"))
    print(f"machine: {machine()}")
    print(f"command: python tools/bench_memory.py {' '.join(argv if argv is not None else sys.argv[1:])}".rstrip())
    print(f"input {args.input}, {args.classes} classes, batch {args.batch}, schedule-free AdamW, fp32\n")
    failed = []
    for name in args.models.split(","):
        profiles = {}
        for rule in ("lls", "bp"):
            p = profile_model(build_model(name, args.classes, shape), rule, args.batch)
            if not args.no_measure:
                attach_measurement(p, measure_step(name, rule, args.batch, num_classes=args.classes,
                                                   input_shape=shape))
            profiles[rule] = p
        lls, bp = profiles["lls"], profiles["bp"]
        print(f"== {name} ==")
        print(f"{'':6} {'peak (analytic)':>16} {'measured':>12} {'diff':>7}   {'persistent':>11} "
              f"{'arena':>11} {'transient':>10} {'input':>10}")
        for rule, p in profiles.items():
            m = p.measured
            meas = format_bytes(m["peak_bytes"]) if m else "-"
            diff = f"{m['peak_rel_diff']:+.1%}" if m else "-"
            print(f"{rule:6} {format_bytes(p.peak_memory_bytes):>16} {meas:>12} {diff:>7}   "
                  f"{format_bytes(p.persistent_bytes):>11} {format_bytes(p.arena_bytes):>11} "
                  f"{format_bytes(p.transient_bytes):>10} {format_bytes(p.input_bytes):>10}")
            if m:
                print(f"{'':6} step: analytic {format_bytes(p.step_bytes)}, measured "
                      f"{format_bytes(m['step_peak_bytes'])} ({m['step_rel_diff']:+.1%}); arena as "
                      f"allocated by the runtime {format_bytes(m['arena_bytes'])} "
                      f"({'equal' if m['arena_matches'] else 'DIFFERENT'})")
        ratio = lls.peak_memory_bytes / bp.peak_memory_bytes
        step_ratio = lls.step_bytes / bp.step_bytes
        line = f"peak LLS/BP analytic {ratio:.3f}"
        if lls.measured:
            mratio = lls.measured["peak_bytes"] / bp.measured["peak_bytes"]
            mstep = lls.measured["step_peak_bytes"] / bp.measured["step_peak_bytes"]
            line += f", measured {mratio:.3f}; step (arena + temporaries) LLS/BP analytic {step_ratio:.3f}, measured {mstep:.3f}"
        else:
            line += f"; step LLS/BP {step_ratio:.3f}"
        target = TARGETS.get(name)
        if target is not None:
            ok = ratio <= target
            line += f"   target <= {target}: {'met' if ok else 'NOT met'}"
            if not ok:
                failed.append(name)
        print(line)
        big = lls.peak_block
        top = sorted(big.buffers, key=lambda t: -t[3])[:5]
        print(f"  LLS peak set by {big.name} (live {format_bytes(big.activation_bytes)}): "
              + ", ".join(f"{n} {'x'.join(map(str, s))} {format_bytes(b)}" for n, s, _, b in top))
        # BP: its live set peaks when the backward pass reaches some block: every earlier
        # block still holds its activations, this block its own buffers and gradients.
        at = max(range(len(bp.blocks)), key=lambda i: bp.blocks[i].activation_bytes)
        held = sum(aligned(n) for blk in bp.blocks[:at] for _, _, r, n in blk.buffers if r in ("keep", "out"))
        print(f"  BP's live set peaks when the backward pass reaches {bp.blocks[at].name} "
              f"({format_bytes(bp.blocks[at].activation_bytes)}): the activations kept by the blocks "
              f"before it {format_bytes(held)} (z, y, argmax, pooled output), {bp.blocks[at].name}'s own "
              f"buffers and the gradients of this backward step {format_bytes(bp.blocks[at].activation_bytes - held)}")
        gaps, packing = [], []
        for rule, p in profiles.items():
            gaps.append(f"{rule.upper()} {format_bytes(p.arena_bytes)} vs {format_bytes(p.min_activation_bytes)}")
            over = p.arena_regions["live"] - max(b.activation_bytes for b in p.blocks)
            if over:
                packing.append(f"{rule.upper()}'s greedy packing {format_bytes(over)} above its largest live set")
        print("  arena vs largest live set (scratch included): " + ", ".join(gaps) + "; "
              + ("; ".join(packing) if packing else "the planned buffers take exactly their largest live set")
              + f"; scratch is a region of its own, sized by the stage that needs most (LLS "
              f"{format_bytes(lls.scratch_bytes)}, BP {format_bytes(bp.scratch_bytes)})")
        lo_l = lls.persistent_bytes + lls.min_activation_bytes + lls.transient_bytes + lls.input_bytes
        lo_b = bp.persistent_bytes + bp.min_activation_bytes + bp.transient_bytes + bp.input_bytes
        print(f"  lower bound for any allocator of these schedules (largest live set, scratch included): "
              f"LLS {format_bytes(lo_l)}, BP {format_bytes(lo_b)}, LLS/BP {lo_l / lo_b:.3f}")
        print(f"  common to both: weights+grads+optimizer {format_bytes(bp.persistent_bytes)} "
              f"({bp.persistent_bytes / bp.peak_memory_bytes:.0%} of BP's peak)")
        for label, opts in [("no z (BN inverted from y)", dict(drop_z=True)),
                            ("no z + one shared gradient buffer", dict(drop_z=True, share_grads=True))]:
            a = what_if(build_model(name, args.classes, shape), "lls", args.batch, **opts)
            b = what_if(build_model(name, args.classes, shape), "bp", args.batch, **opts)
            print(f"  what if {label}: LLS {format_bytes(a)}, BP {format_bytes(b)}, LLS/BP {a / b:.3f}")
        print()
    if failed:
        print(f"targets not met: {', '.join(failed)} (see docs/efficiency.md for where the memory goes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

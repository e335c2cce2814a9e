"""Mixed-precision (fp16) training vs fp32: step time and step memory, edge-lls and PyTorch.

    python tools/bench_fp16.py [--threads 2] [--steps 30] [--batch 128] [--json]

Part 1 -- SmallConv 28x28x1, batch 128, schedule-free AdamW, LLS (square basis, T = 0.5)
and BP, one training step on a fixed batch: edge-lls at fp32 and fp16 (float16
activations, float32 weights and math), and -- when torch imports -- PyTorch at fp32 and
under torch.autocast("cpu") with float16 and with bfloat16, its CPU mixed precisions.
All configurations are warmed up, then timed interleaved in chunks of 3 steps (median),
except PyTorch float16: its CPU kernels run about 100x slower than fp32 here, so it is
timed alone over --slow-steps steps.
Step memory: edge-lls, the tracemalloc peak of a fresh trainer's first step (it allocates
the step arena; later steps allocate nothing); PyTorch, the peak of bytes its allocator
hands out during one warmed-up step (torch.profiler), as in tools/bench_train.py.

Part 2 -- edge-lls only, the zoo at its own input sizes: the step arena's planned bytes
(nn/arena.py) at fp32 and fp16 for LLS and BP, with the tracemalloc peak of a real
first step (measured) next to them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)                            # benchlib, torch_lls, bench_train
sys.path.insert(0, os.path.dirname(HERE))           # edge_lls when run from a checkout

import benchlib  # noqa: E402
from bench_train import first_step_memory, torch_step_peak  # noqa: E402
from edge_lls.models import build_model  # noqa: E402
from edge_lls.trainer import Trainer  # noqa: E402

INPUT, CLASSES = (28, 28, 1), 10
LR, TEMPERATURE = 5e-3, 0.5
ZOO = [("smallconv", (28, 28, 1), 128), ("vgg8", (32, 32, 3), 64), ("mobilenetv1", (96, 96, 3), 32)]


def edge_trainer(name, shape, rule, precision):
    model = build_model(name, num_classes=CLASSES, input_shape=shape, seed=0)
    return Trainer(model, rule=rule, optimizer="adamw-sf", lr=LR, temperature=TEMPERATURE, precision=precision)


def part1(args, torch):
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *INPUT), dtype=np.float32)
    y = rng.integers(0, CLASSES, args.batch).astype(np.int64)
    steps, torch_steps, slow = {}, {}, {}
    for rule in ("lls", "bp"):
        for precision in ("fp32", "fp16"):
            t = edge_trainer("smallconv", INPUT, rule, precision)
            steps[("edge-lls", rule, precision)] = (lambda t=t: t.step(x, y))
    if torch is not None:
        import torch_lls as tl
        dtypes = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}
        for rule in ("lls", "bp"):
            for precision, dtype in dtypes.items():
                t = tl.make_trainer(rule, num_classes=CLASSES, in_channels=INPUT[2], lr=LR,
                                    temperature=TEMPERATURE, channels_last=False)
                xt, yt = t.prepare(x, y)

                def step(t=t, xt=xt, yt=yt, dtype=dtype):
                    with torch.autocast("cpu", dtype=dtype) if dtype else contextlib.nullcontext():
                        loss, _, _ = t.step(xt, yt)
                    if not np.isfinite(loss):
                        raise RuntimeError("PyTorch mixed-precision step diverged")
                (slow if precision == "fp16" else steps)[("pytorch", rule, precision)] = step
                torch_steps[("pytorch", rule, precision)] = step
    for fn in steps.values():
        for _ in range(args.warmup):
            fn()
    times = benchlib.time_interleaved(steps, args.steps, chunk=args.chunk)
    for key, fn in slow.items():
        fn()
        times.update(benchlib.time_interleaved({key: fn}, args.slow_steps, chunk=1))
    rows = []
    for key, seconds in times.items():
        impl, rule, precision = key
        s = benchlib.summarize(seconds)
        if impl == "edge-lls":
            mem = first_step_memory(edge_trainer("smallconv", INPUT, rule, precision), x, y)
        else:
            mem = {"peak_bytes": torch_step_peak(torch_steps[key]), "arena_bytes": None, "state_bytes": None}
        rows.append({"impl": impl, "rule": rule, "precision": precision, **s, **mem})
    return rows


def part2():
    rows = []
    for name, shape, batch in ZOO:
        rng = np.random.default_rng(0)
        x = rng.random((batch, *shape), dtype=np.float32)
        y = rng.integers(0, CLASSES, batch)
        for rule in ("lls", "bp"):
            for precision in ("fp32", "fp16"):
                t = edge_trainer(name, shape, rule, precision)
                layout = t.rule.plan(t.model, batch)
                t.step(x, y)                                     # JIT outside the measurement
                mem = first_step_memory(edge_trainer(name, shape, rule, precision), x, y)
                rows.append({"model": name, "input": "x".join(map(str, shape)), "batch": batch, "rule": rule,
                             "precision": precision, "live_bytes": layout.region_bytes["live"],
                             "scratch_bytes": layout.region_bytes["tmp"], **mem})
    return rows


def ratio(rows, match_a, match_b, field):
    def pick(match):
        return next((r[field] for r in rows if all(r.get(k) == v for k, v in match.items())), None)
    a, b = pick(match_a), pick(match_b)
    return None if a is None or b is None or not b else a / b


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2, help="threads for both runtimes (default 2)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per configuration (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    ap.add_argument("--batch", type=int, default=128, help="part 1 batch (default 128)")
    ap.add_argument("--chunk", type=int, default=3, help="steps in a row per configuration (default 3)")
    ap.add_argument("--slow-steps", type=int, default=3, help="timed steps of PyTorch float16 (default 3)")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = ap.parse_args(argv)
    if args.batch < 2:
        ap.error("--batch must be >= 2 (batch norm)")
    torch = None if args.no_torch else benchlib.torch_or_none()
    load_start = benchlib.loadavg()
    contention = benchlib.CpuContention()
    with benchlib.threads(args.threads, torch):
        rows1 = part1(args, torch)
        rows2 = part2()
    others = contention.others_fraction()

    print(f"command: {benchlib.command_line()}")
    benchlib.print_machine(benchlib.machine_info(torch))
    busy = f"{others * 100:.0f}% of the cores" if others is not None else "n/a"
    print(f"load average before / after: {load_start} / {benchlib.loadavg()}; "
          f"CPU used by other processes during the run: {busy}")
    print(f"threads {args.threads}; part 1: SmallConv 28x28x1, batch {args.batch}, schedule-free AdamW "
          f"lr {LR}; median of {args.steps} steps after {args.warmup} warm-up steps\n")
    if torch is None and not args.no_torch:
        print("note: torch is not importable -- PyTorch rows skipped\n")
    print(benchlib.table(
        [[r["impl"], r["rule"].upper(), r["precision"], f"{r['median_ms']:.1f}",
          f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}", benchlib.mib(r["peak_bytes"]), benchlib.mib(r["arena_bytes"])]
         for r in rows1],
        ["impl", "rule", "precision", "ms/step", "p10-p90 ms", "step peak MiB", "arena MiB"], align="llllrrr"))
    print("\nratios (part 1):")
    ratios = {}
    for rule in ("lls", "bp"):
        for impl, half in (("edge-lls", "fp16"), ("pytorch", "fp16"), ("pytorch", "bf16")):
            for field, what in (("median_ms", "time"), ("peak_bytes", "step memory")):
                key = f"{what} {impl} {rule.upper()} {half} / fp32"
                ratios[key] = ratio(rows1, {"impl": impl, "rule": rule, "precision": half},
                                    {"impl": impl, "rule": rule, "precision": "fp32"}, field)
        for field, what in (("median_ms", "time"), ("peak_bytes", "step memory")):
            for peer in ("fp16", "bf16"):
                key = f"{what} edge-lls fp16 / pytorch {peer}, {rule.upper()}"
                ratios[key] = ratio(rows1, {"impl": "edge-lls", "rule": rule, "precision": "fp16"},
                                    {"impl": "pytorch", "rule": rule, "precision": peer}, field)
    for key, value in ratios.items():
        if value is not None:
            print(f"  {key} = {value:.2f}")

    print("\npart 2: edge-lls step arena, planned (live buffers + scratch) and the measured first-step peak")
    print(benchlib.table(
        [[r["model"], r["input"], r["batch"], r["rule"].upper(), r["precision"], benchlib.mib(r["live_bytes"]),
          benchlib.mib(r["scratch_bytes"]), benchlib.mib(r["arena_bytes"]), benchlib.mib(r["peak_bytes"])]
         for r in rows2],
        ["model", "input", "batch", "rule", "precision", "live MiB", "scratch MiB", "arena MiB", "step peak MiB"],
        align="lllllrrrr"))
    print("\nratios fp16 / fp32 (part 2, step peak):")
    for name, _, _ in ZOO:
        for rule in ("lls", "bp"):
            r = ratio(rows2, {"model": name, "rule": rule, "precision": "fp16"},
                      {"model": name, "rule": rule, "precision": "fp32"}, "peak_bytes")
            live = ratio(rows2, {"model": name, "rule": rule, "precision": "fp16"},
                         {"model": name, "rule": rule, "precision": "fp32"}, "live_bytes")
            ratios[f"step memory {name} {rule.upper()} fp16 / fp32"] = r
            print(f"  {name} {rule.upper()}: step peak {r:.2f}, live buffers {live:.2f}")
    print("\nweights, gradients and optimizer state are float32 in both precisions and not part of "
          "the step figures.")
    if args.json:
        print(json.dumps({"part1": rows1, "part2": rows2, "ratios": ratios}, default=float))


if __name__ == "__main__":
    main()

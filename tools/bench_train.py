"""Training-step speed and memory: edge-lls vs PyTorch, LLS vs BP, on SmallConv.

    python tools/bench_train.py [--threads 1,2] [--steps 30] [--batch 128] [--json]

SmallConv (MNIST-size input 28x28x1, 10 classes), one training step on a fixed batch,
schedule-free AdamW (lr 5e-3), LLS with the square basis and T = 0.5. For each thread
count: edge-lls LLS and BP, and -- when torch imports -- PyTorch LLS and BP (both memory
layouts, NCHW and channels-last; the faster one is reported). Every configuration is
warmed up first (Numba JIT, oneDNN primitive caches), then timed step by step,
interleaved in chunks of 3 steps so that machine noise hits all alike; the table shows
the median.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tracemalloc
from contextlib import contextmanager

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)                            # benchlib, torch_lls
sys.path.insert(0, os.path.dirname(HERE))           # edge_lls when run from a checkout

import benchlib  # noqa: E402
from edge_lls.models import build_model  # noqa: E402
from edge_lls.trainer import Trainer  # noqa: E402

INPUT = (28, 28, 1)
CLASSES = 10
LR, TEMPERATURE = 5e-3, 0.5


# ------------------------------------------------------------------------- edge-lls
def edge_trainer(rule):
    model = build_model("smallconv", num_classes=CLASSES, input_shape=INPUT, seed=0)
    return Trainer(model, rule=rule, optimizer="adamw-sf", lr=LR, temperature=TEMPERATURE)


def edge_state_bytes(trainer) -> int:
    """Weights + gradients + optimizer state: allocated with the trainer, not by a step."""
    total = 0
    for opt in trainer.optimizers:
        total += sum(p.value.nbytes + p.grad.nbytes for p in opt.params)
        total += sum(a.nbytes for a in opt.state_arrays().values())
    return total


def first_step_memory(trainer, x, y) -> dict:
    """tracemalloc peak during the first step of a fresh Trainer (that step allocates the
    step arena; later steps allocate nothing). Run after the JIT warm-up, so no compiler
    memory is counted."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        trainer.step(x, y)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"peak_bytes": peak, "arena_bytes": int(trainer.arena(len(x)).nbytes),
            "state_bytes": edge_state_bytes(trainer)}


# -------------------------------------------------------------------------- PyTorch
@contextmanager
def _quiet_stderr():
    """The profiler's C++ side prints warnings straight to fd 2; hide them."""
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def torch_step_peak(step) -> int:
    """Peak bytes live at once among the allocations torch's CPU allocator makes while
    step() runs (torch.profiler(profile_memory=True) allocation events, in time order)."""
    from torch.profiler import ProfilerActivity, profile
    with _quiet_stderr():
        with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
            step()
        events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    live = peak = 0
    for e in events:
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def torch_step_memory(torch, trainer, xt, yt) -> dict:
    """Peak of the bytes that torch's CPU allocator hands out during one (warmed-up) step
    and that are live at the same time, from torch.profiler(profile_memory=True)
    allocation events. Tensors that existed before the step (weights, optimizer state,
    the previous step's gradients) are not counted; gradients re-allocated by
    zero_grad(set_to_none=True) + backward are (<= 1.4 MiB for SmallConv)."""
    peak = torch_step_peak(lambda: trainer.step(xt, yt))
    state = 0
    params = list(trainer.model.parameters())
    state += sum(p.numel() * p.element_size() * 2 for p in params)   # weight + grad
    opts = trainer.optimizers if hasattr(trainer, "optimizers") else [trainer.optimizer]
    for opt in opts:
        for st in opt.state.values():
            state += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    return {"peak_bytes": peak, "arena_bytes": None, "state_bytes": state}


# ---------------------------------------------------------------------------- bench
def run(args):
    torch = None if args.no_torch else benchlib.torch_or_none()
    tl = None
    if torch is not None:
        import torch_lls as tl
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, *INPUT), dtype=np.float32)
    y = rng.integers(0, CLASSES, args.batch).astype(np.int64)
    layouts = {"auto": ["NCHW", "CL"], "nchw": ["NCHW"], "cl": ["CL"]}[args.torch_layout]

    load_start = benchlib.loadavg()
    contention = benchlib.CpuContention()
    rows, ratios, layout_tries = [], {}, {}
    for n in args.threads:
        with benchlib.threads(n, torch):
            steps, trainers = {}, {}
            for rule in ("lls", "bp"):
                t = edge_trainer(rule)
                trainers[("edge-lls", rule, "NHWC")] = t
                steps[("edge-lls", rule, "NHWC")] = (lambda t=t: t.step(x, y))
            if torch is not None:
                for rule in ("lls", "bp"):
                    for layout in layouts:
                        t = tl.make_trainer(rule, num_classes=CLASSES, in_channels=INPUT[2], lr=LR,
                                            temperature=TEMPERATURE, channels_last=layout == "CL")
                        xt, yt = t.prepare(x, y)
                        trainers[("pytorch", rule, layout)] = (t, xt, yt)
                        steps[("pytorch", rule, layout)] = (lambda t=t, xt=xt, yt=yt: t.step(xt, yt))
            for fn in steps.values():                        # warm-up: JIT, primitive caches
                for _ in range(args.warmup):
                    fn()
            times = benchlib.time_interleaved(steps, args.steps, chunk=args.chunk)
            stats = {k: benchlib.summarize(v) for k, v in times.items()}

            chosen = {}
            for rule in ("lls", "bp"):
                chosen[("edge-lls", rule)] = ("edge-lls", rule, "NHWC")
                if torch is not None:
                    keys = [("pytorch", rule, lay) for lay in layouts]
                    best = min(keys, key=lambda k: stats[k]["median_ms"])
                    chosen[("pytorch", rule)] = best
                    layout_tries[(n, rule)] = {k[2]: stats[k]["median_ms"] for k in keys}

            for (impl, rule), key in chosen.items():
                if impl == "edge-lls":
                    mem = first_step_memory(edge_trainer(rule), x, y)
                else:
                    t, xt, yt = trainers[key]
                    mem = torch_step_memory(torch, t, xt, yt)
                s = stats[key]
                rows.append({"impl": impl, "rule": rule, "threads": n, "layout": key[2], **s,
                             "images_per_s": args.batch / (s["median_ms"] / 1e3), **mem})

            def get(impl, rule, field):
                for r in rows:
                    if (r["impl"], r["rule"], r["threads"]) == (impl, rule, n):
                        return r[field]
                return None

            def ratio(a, b):
                return None if a is None or b is None or b == 0 else a / b

            ratios[n] = {
                "time edge-lls LLS / pytorch LLS": ratio(get("edge-lls", "lls", "median_ms"),
                                                         get("pytorch", "lls", "median_ms")),
                "time edge-lls LLS / edge-lls BP": ratio(get("edge-lls", "lls", "median_ms"),
                                                         get("edge-lls", "bp", "median_ms")),
                "time pytorch LLS / pytorch BP": ratio(get("pytorch", "lls", "median_ms"),
                                                       get("pytorch", "bp", "median_ms")),
                "memory edge-lls LLS / pytorch LLS": ratio(get("edge-lls", "lls", "peak_bytes"),
                                                           get("pytorch", "lls", "peak_bytes")),
                "memory edge-lls LLS / edge-lls BP": ratio(get("edge-lls", "lls", "peak_bytes"),
                                                           get("edge-lls", "bp", "peak_bytes")),
                "memory pytorch LLS / pytorch BP": ratio(get("pytorch", "lls", "peak_bytes"),
                                                         get("pytorch", "bp", "peak_bytes")),
            }
    return torch, rows, ratios, layout_tries, load_start, contention.others_fraction()


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--steps", type=int, default=30, help="timed steps per configuration (default 30)")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (default 5)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--chunk", type=int, default=3,
                    help="steps of one configuration in a row before the next one's turn (default 3)")
    ap.add_argument("--torch-layout", choices=["auto", "nchw", "cl"], default="auto",
                    help="PyTorch memory layout: try both and keep the faster (auto), or force one")
    ap.add_argument("--no-torch", action="store_true", help="skip the PyTorch rows")
    ap.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    args = ap.parse_args(argv)
    args.threads = [int(t) for t in args.threads.split(",") if t.strip()]
    if args.batch < 2:
        ap.error("--batch must be >= 2 (batch norm)")

    torch, rows, ratios, layout_tries, load_start, others = run(args)
    info = benchlib.machine_info(torch)

    print(f"command: {benchlib.command_line()}")
    benchlib.print_machine(info)
    busy = f"{others * 100:.0f}% of the cores" if others is not None else "n/a"
    print(f"load average before / after: {load_start} / {benchlib.loadavg()}; "
          f"CPU used by other processes during the run: {busy}")
    print(f"SmallConv {INPUT[0]}x{INPUT[1]}x{INPUT[2]}, {CLASSES} classes, batch {args.batch}, "
          f"schedule-free AdamW lr {LR}, LLS square basis T={TEMPERATURE}; "
          f"median of {args.steps} steps after {args.warmup} warm-up steps\n")
    if args.no_torch:
        print("note: PyTorch rows skipped (--no-torch)\n")
    elif torch is None:
        print("note: torch is not importable -- PyTorch rows skipped "
              "(pip install torch==2.13.0 into the venv to compare)\n")

    header = ["impl", "rule", "thr", "layout", "ms/step", "p10-p90 ms", "img/s", "step peak MiB",
              "arena MiB"]
    table_rows = [[r["impl"], r["rule"].upper(), r["threads"], r["layout"], f"{r['median_ms']:.1f}",
                   f"{r['p10_ms']:.1f}-{r['p90_ms']:.1f}", f"{r['images_per_s']:.0f}",
                   benchlib.mib(r["peak_bytes"]), benchlib.mib(r["arena_bytes"])] for r in rows]
    print(benchlib.table(table_rows, header, align="lllllrrrr"))
    print()
    for n, rs in ratios.items():
        parts = [f"{k} = {v:.2f}" for k, v in rs.items() if v is not None]
        print(f"ratios, {n} thread{'s' if n > 1 else ''}:")
        for p in parts:
            target = "   (target <= 0.5)" if p.startswith("time edge-lls LLS / pytorch LLS") else ""
            print(f"  {p}{target}")
    if layout_tries:
        print("\nPyTorch layouts tried (median ms/step): " + "; ".join(
            f"{rule.upper()} {n}t " + ", ".join(f"{lay} {ms:.1f}" for lay, ms in tries.items())
            for (n, rule), tries in layout_tries.items()))
    noisy = [r for r in rows if r["p90_ms"] > 1.5 * r["median_ms"]]
    if others is not None and others > 0.1:
        print(f"warning: other processes used {others * 100:.0f}% of the cores during the run: "
              "timings are inflated and noisy; rerun on a quiet machine")
    elif noisy:
        print("warning: noisy timings (p90 > 1.5 x median) for "
              + ", ".join(f"{r['impl']} {r['rule']} {r['threads']}t" for r in noisy)
              + " -- another process may be using the cores; rerun on a quiet machine")
    edge_state = next((r["state_bytes"] for r in rows if r["impl"] == "edge-lls"), None)
    torch_state = next((r["state_bytes"] for r in rows if r["impl"] == "pytorch"), None)
    print("\nmemory figures:")
    print("  edge-lls step peak: tracemalloc peak during the FIRST step of a fresh Trainer (the step"
          " that allocates the step arena; later steps allocate nothing), after JIT warm-up.")
    print("  edge-lls arena: trainer.arena(batch).nbytes, every activation/gradient/scratch buffer"
          " of a step.")
    if torch is not None:
        print("  pytorch step peak: torch.profiler(profile_memory=True) allocation events of one"
              " warmed-up step, peak of bytes allocated during the step and live at once"
              " (activations, autograd-saved tensors, gradients, oneDNN/optimizer temporaries);"
              " tensors alive before the step are not counted.")
    print(f"  not in any figure: weights + gradients + optimizer state, allocated once: edge-lls "
          f"{benchlib.mib(edge_state)} MiB" + (f", pytorch {benchlib.mib(torch_state)} MiB"
                                               if torch_state is not None else "") + ".")
    if args.json:
        out = {"command": benchlib.command_line(), "machine": info, "cpu_used_by_others": others,
               "config": {"model": "smallconv", "input": list(INPUT), "classes": CLASSES,
                          "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
                          "lr": LR, "temperature": TEMPERATURE, "optimizer": "adamw-sf"},
               "results": rows,
               "ratios": {str(n): rs for n, rs in ratios.items()},
               "pytorch_layouts_ms": {f"{rule}/{n}": tries for (n, rule), tries in layout_tries.items()}}
        print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

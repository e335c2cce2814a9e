"""Single-image latency of the int8 VWW model: edge-lls vs LiteRT, one thread each.

    .venv/bin/python tools/bench_int8.py [--model PATH] [--runs 300] [--rounds 5]

Engines, all on the same input and on one core:
  edge-lls (fast)          exact float32-GEMM path (default load_tflite)
  edge-lls (plain kernels) load_tflite(fast=False): the Numba kernels op by op
  LiteRT XNNPACK           ai-edge-litert default resolver (XNNPACK delegate)
  LiteRT builtin           optimized builtin kernels, no delegate
  LiteRT reference         BUILTIN_REF, the kernels edge-lls is bit-exact with

Each engine is timed in interleaved rounds (so background load hits all of them alike);
the table shows the median and minimum of per-run wall time, set-input to get-output.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numba
import numpy as np
from threadpoolctl import threadpool_limits

from edge_lls.program.interpreter import load_tflite

DEFAULT_MODEL = Path(__file__).resolve().parents[1].parent / "shared" / "models" / "vww" / "vww_96_int8.tflite"


def litert_runner(model: Path, resolver_name: str):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interpreter = Interpreter(model_path=str(model), num_threads=1,
                              experimental_op_resolver_type=getattr(OpResolverType, resolver_name))
    interpreter.allocate_tensors()
    input_index = interpreter.get_input_details()[0]["index"]
    output_index = interpreter.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> np.ndarray:
        interpreter.set_tensor(input_index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output_index)
    return run


def edge_lls_runner(model: Path, fast: bool):
    graph = load_tflite(model, fast=fast)
    return lambda x: graph.run([x])[0]


def time_runs(run, x: np.ndarray, runs: int) -> np.ndarray:
    times = np.empty(runs)
    for i in range(runs):
        start = time.perf_counter()
        run(x)
        times[i] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--runs", type=int, default=300, help="runs per engine per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    numba.set_num_threads(1)
    with threadpool_limits(limits=1):  # OpenBLAS (our GEMMs) on one thread as well
        engines = {
            "edge-lls (fast)": edge_lls_runner(args.model, fast=True),
            "edge-lls (plain kernels)": edge_lls_runner(args.model, fast=False),
            "LiteRT XNNPACK": litert_runner(args.model, "AUTO"),
            "LiteRT builtin": litert_runner(args.model, "BUILTIN_WITHOUT_DEFAULT_DELEGATES"),
            "LiteRT reference": litert_runner(args.model, "BUILTIN_REF"),
        }
        x = np.random.default_rng(0).integers(-128, 128, (1, 96, 96, 3)).astype(np.int8)
        outputs = {name: run(x) for name, run in engines.items()}
        for name in ("edge-lls (plain kernels)", "LiteRT reference"):
            assert np.array_equal(outputs[name], outputs["edge-lls (fast)"]), f"{name} disagrees with edge-lls"
        samples = {name: [] for name in engines}
        for name, run in engines.items():  # warm-up: JIT caches, allocator, branch predictors
            time_runs(run, x, max(20, args.runs // 10))
        for _ in range(args.rounds):
            for name, run in engines.items():
                samples[name].append(time_runs(run, x, args.runs))

    reference = np.median(np.concatenate(samples["LiteRT XNNPACK"]))
    print(f"model: {args.model.name}   1 thread   {args.rounds} rounds x {args.runs} runs")
    print(f"{'engine':26s} {'median us':>10s} {'min us':>9s} {'vs XNNPACK':>11s}")
    for name, rounds in samples.items():
        times = np.concatenate(rounds) * 1e6
        print(f"{name:26s} {np.median(times):10.1f} {times.min():9.1f} {np.median(times) / (reference * 1e6):10.2f}x")


if __name__ == "__main__":
    main()

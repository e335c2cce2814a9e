"""Shared helpers for the benchmark tools: machine description, thread control, step
timing, table printing. Tools only; nothing in the runtime imports this."""
from __future__ import annotations

import os
import platform
import shlex
import sys
import time
from contextlib import contextmanager

import numpy as np


def torch_or_none():
    """The torch module if it imports, else None (torch is an optional benchmark peer)."""
    try:
        import torch
        return torch
    except Exception:               # noqa: BLE001 -- any import failure means "no peer"
        return None


def _cpu_model() -> str:
    model, flags = "unknown CPU", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model == "unknown CPU":
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:
        model = platform.processor() or model
    isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    return f"{model} [{' '.join(isa)}]" if isa else model


def _mem_total_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def loadavg() -> str:
    try:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "n/a"


class CpuContention:
    """How much of the machine other processes used while we ran: from /proc/stat (all
    CPUs' busy time) minus this process's own CPU time, over the wall time x cores."""

    def __init__(self):
        self.start = self._sample()

    @staticmethod
    def _sample():
        try:
            with open("/proc/stat") as f:
                fields = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        busy = (sum(fields[:8]) - fields[3] - fields[4]) / hz      # all but idle, iowait
        t = os.times()
        return time.perf_counter(), busy, t.user + t.system

    def others_fraction(self):
        end = self._sample()
        if self.start is None or end is None:
            return None
        wall = end[0] - self.start[0]
        others = (end[1] - self.start[1]) - (end[2] - self.start[2])
        return max(0.0, others / (wall * (os.cpu_count() or 1))) if wall > 0 else None


def machine_info(torch=None) -> dict:
    import numba
    info = {
        "cpu": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "mem_gib": round(_mem_total_gib() or 0.0, 1),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "torch": torch.__version__ if torch is not None else None,
    }
    try:
        info["numba_threading_layer"] = numba.threading_layer()
    except ValueError:              # no parallel function run yet
        info["numba_threading_layer"] = None
    return info


def print_machine(info: dict) -> None:
    print(f"machine: {info['cpu']}, {info['logical_cores']} logical cores "
          f"({info['usable_cores']} usable), {info['mem_gib']} GiB, {info['os']}")
    print(f"software: python {info['python']}, numpy {info['numpy']}, numba {info['numba']}"
          f" (threading layer {info.get('numba_threading_layer')}), "
          f"torch {info['torch'] or 'not importable'}")


def command_line() -> str:
    return " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable), *sys.argv])


@contextmanager
def threads(n: int, torch=None):
    """Run with n threads: edge-lls as its users set it (runtime.set_threads: Numba and
    NumPy's BLAS at n, the BLAS called inside Numba threads at 1), and torch at n."""
    from edge_lls.runtime import get_threads, set_threads
    old = get_threads()
    old_torch = torch.get_num_threads() if torch is not None else None
    set_threads(n)
    if torch is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        set_threads(old)
        if torch is not None:
            torch.set_num_threads(old_torch)


def time_interleaved(steps: dict, n_steps: int, chunk: int = 5) -> dict:
    """Time zero-argument step functions, interleaved in chunks (a few steps of each in
    turn, round after round) so that machine noise hits every one alike.
    Returns {name: array of per-step seconds} with n_steps entries each."""
    times = {name: [] for name in steps}
    while any(len(t) < n_steps for t in times.values()):
        for name, fn in steps.items():
            for _ in range(min(chunk, n_steps - len(times[name]))):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return {name: np.asarray(t) for name, t in times.items()}


def summarize(seconds: np.ndarray) -> dict:
    return {"median_ms": float(np.median(seconds) * 1e3),
            "p10_ms": float(np.percentile(seconds, 10) * 1e3),
            "p90_ms": float(np.percentile(seconds, 90) * 1e3),
            "min_ms": float(seconds.min() * 1e3)}


def table(rows: list[list], header: list[str], align: str | None = None) -> str:
    """Plain-text table; align: one 'l' or 'r' per column (default: first 'l', rest 'r')."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    align = align or "l" + "r" * (len(header) - 1)

    def fmt(r):
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(r, widths, align))
    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


def mib(nbytes) -> str:
    return "" if nbytes is None else f"{nbytes / 2**20:.1f}"

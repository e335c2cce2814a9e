#!/usr/bin/env python3
"""`make rpi-check`: edge-lls on a Raspberry Pi userland (Debian bookworm arm64) under qemu-user.

Builds once, with tools/rpi/rootfs.sh, a bookworm arm64 root filesystem with the project's
dependencies in a venv (cached in $XDG_CACHE_HOME/edge-lls/rpi-rootfs-<recipe hash>, rebuilt
when rootfs.sh or the dependency lists of pyproject.toml change), copies this checkout into
it, installs it there (editable, no dependencies), and then, inside it:

1. the unit tests that need no emulator, toolchain or ../shared data, and run in a sensible
   time under emulation (GUEST_TESTS below says which and why);
2. `edge-lls train --device rpi4|rpi5` for one epoch on the built-in digits, and the same on
   the host with the same seed: the eval accuracies must agree within 0.5 pt;
3. byte compatibility both ways: the model trained on arm64 loaded on x86 and the reverse
   (each side's evaluation of the other's file, and each side re-saving the other's file
   must give the same bytes), and `edge-lls export --format tflite` of one model giving the
   same bytes on both;
4. `edge-lls serve` in the root filesystem, driven from the host over TCP: `edge-lls board
   info`, a deploy and a short TRAIN whose learned weights must equal the host's twin
   (edge_lls.board_train) bit for bit; then SIGTERM, which must stop it cleanly.

Every check prints PASS or FAIL; any FAIL exits with status 1 after the summary. Needs root.
Run with the project's host venv (`make rpi-check` does):  python tools/rpi/rpi_check.py
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ROOTFS_SH = HERE / "rootfs.sh"

SUITE, ARCH, PYTHON = "bookworm", "arm64", "3.11"
GUEST_SRC = "/opt/edge-lls/src"
GUEST_VENV = "/opt/edge-lls/venv"
GUEST_WORK = "/tmp/rpi-check"
GUEST_CA = "/usr/local/share/edge-lls/host-ca.crt"
GUEST_NUMBA_CACHE = "/var/cache/edge-lls/numba"      # kept with the root filesystem, keyed by source stamps
ACCURACY_TOLERANCE = 0.005                            # 0.5 percentage points
SEED = 0

# QEMU_CPU -> the Pi it stands for. qemu's default `max` also exposes SVE2 and SME, which no Pi
# has and which make numpy's BLAS emit spurious floating-point warnings.
CPUS = {
    "cortex-a76": {"device": "rpi5", "pi": "Raspberry Pi 5", "variant": "0x4", "part": "0xd0b", "revision": "1",
                   "features": "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm "
                               "lrcpc dcpop asimddp"},
    "cortex-a72": {"device": "rpi4", "pi": "Raspberry Pi 4", "variant": "0x0", "part": "0xd08", "revision": "3",
                   "features": "fp asimd evtstrm crc32 cpuid"},
}

# The unit tests run inside: {file: (why, node ids left out there)}, chosen by what they
# prove on arm64 and by their cost under emulation (measured: docs/raspberry-pi.md). Left
# out entirely: what needs gcc, the Arm toolchain or qemu-system (the firmware and its C
# harnesses: test_boards, test_board_plan, test_firmware_*, test_c_export; the C parts of
# the files below skip, as on any machine without gcc), tflite-micro (no aarch64 wheel:
# test_tflm, test_export, test_export_zoo compare against it), ../shared data (not inside),
# and the suites that compile many more Numba kernel variants (fp16, int8 kernels,
# gradients, file fuzzing): under emulation each new variant costs seconds to minutes of
# LLVM (the training run's kernels: about 220 s), and the kernels training uses are held
# to the host's by the accuracy comparison below.
GUEST_TESTS = {
    "tests/test_model_file.py": ("the .ells format: layout, CRCs, damaged files, checkpoints restoring a trainer "
                                 "bit for bit (byte order and alignment on arm64)", ()),
    "tests/test_protocol.py": ("the bridge's frames: COBS, CRC-32, sequence numbers, retries (C harness parts skip: "
                               "no gcc inside)",
                               # pure-Python fuzzing, platform-neutral: 123 s under emulation, 4 s on the host
                               ("tests/test_protocol.py::test_the_python_decoder_survives_100000_mutated_inputs",)),
    "tests/test_messages.py": ("the bridge's message payloads packed and parsed, hypothesis properties (C parts skip)",
                               ()),
    "tests/test_onnx_parity.py": ("our float kernels against onnxruntime's aarch64 build (it needs the aarch64 "
                                  "/proc/cpuinfo under qemu 7.2)", ()),
    "tests/test_geometry.py": ("conv and pool output geometry", ()),
    "tests/test_jit_cache.py": ("Numba's kernel cache kept honest (the cache kept inside between runs)", ()),
    "tests/test_lls_loss.py": ("the LLS head's loss and gradient (float32 on NEON)", ()),
    "tests/test_optim.py": ("the optimizers, schedule-free AdamW's state", ()),
    "tests/test_data.py": ("dataset readers and batching (../shared parts skip)", ()),
}


class CheckFailed(Exception):
    pass


# ------------------------------------------------------------------ pure functions (tests/test_rpi_check.py)
def requirements(pyproject_text: str, machine: str = "aarch64") -> list[str]:
    """The pip requirements of the root filesystem's venv: the project's dependencies and its
    test extra, as pyproject.toml lists them, plus the setuptools that builds the project
    (installed without build isolation). Markers stay: pip itself drops tflite-micro
    (platform_machine == 'x86_64') on aarch64."""
    import tomllib
    project = tomllib.loads(pyproject_text)["project"]
    build = tomllib.loads(pyproject_text).get("build-system", {}).get("requires", [])
    reqs = list(project.get("dependencies", [])) + list(project.get("optional-dependencies", {}).get("test", []))
    return reqs + [r for r in build if r.split(">")[0].split("=")[0].strip() == "setuptools"]


def recipe_hash(script: bytes, reqs: list[str], mirror: str, suite: str = SUITE, arch: str = ARCH) -> str:
    """What the cached root filesystem depends on: rootfs.sh's text, the requirements, the
    mirror, the suite and the architecture. 16 hex digits name the cache folder."""
    h = hashlib.sha256()
    for part in (script, "\n".join(reqs).encode(), mirror.encode(), suite.encode(), arch.encode()):
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.hexdigest()[:16]


def cpuinfo_text(cpu: str, cores: int) -> str:
    """An arm64 kernel's /proc/cpuinfo for `cores` cores of `cpu` (a CPUS key), as the guest's."""
    if cpu not in CPUS:
        raise ValueError(f"unknown CPU {cpu!r}; choose one of {', '.join(CPUS)}")
    c = CPUS[cpu]
    block = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\n"
             "CPU architecture: 8\nCPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n\n")
    text = "".join(block.format(n=n, **c) for n in range(max(1, int(cores))))
    return text + f"Model\t\t: {c['pi']} (qemu-user {cpu})\n"


def debian_mirror(indextargets: str, suite: str = SUITE) -> str:
    """The mirror serving `suite` itself (not -security or -updates) among the lines
    '<site> <release>' of `apt-get indextargets --format '$(SITE) $(RELEASE)'`."""
    for line in indextargets.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[1] == suite:
            return parts[0].rstrip("/")
    raise CheckFailed(f"apt has no source for {suite} (apt-get indextargets lists none); "
                      f"set RPI_MIRROR=http://MIRROR/debian")


def cache_root(env: dict) -> Path:
    base = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME") or Path.home()) / ".cache")
    return Path(base) / "edge-lls"


def pytest_counts(output: str) -> dict[str, int]:
    """{'passed': N, 'failed': N, 'skipped': N, ...} from pytest's closing line ('error' for errors)."""
    pattern = r"(\d+) (passed|failed|errors?|skipped|deselected|xfailed|xpassed)\b"
    lines = [line for line in output.splitlines() if re.search(pattern, line)]
    if not lines:
        return {}
    return {word.rstrip("s") if word.startswith("error") else word: int(n)
            for n, word in re.findall(pattern, lines[-1])}


def within(a: float, b: float, tolerance: float = ACCURACY_TOLERANCE) -> bool:
    return abs(float(a) - float(b)) <= tolerance + 1e-12


def listening_port(line: str) -> int | None:
    """The port of `edge-lls serve`'s 'listening on tcp:HOST:PORT (state DIR)' line."""
    match = re.match(r"listening on tcp:[^ ]*:(\d+)\b", line.strip())
    return int(match.group(1)) if match else None


# ------------------------------------------------------------------ helpers both sides run (subcommands)
def resave(src: str, dst: str) -> None:
    """Load a .ells model and write it again: the bytes must be the file's own."""
    from edge_lls.formats.model_file import load_model, save_model
    model, header = load_model(src)
    meta = {k: v for k, v in header.items() if k not in ("kind", "spec", "tensors")}
    save_model(dst, model, meta)


def speed() -> dict:
    """A few timings this side measures of itself: an interpreted loop, float32 GEMM, and the
    platform numpy reports. The ratio to the host is emulation's cost, not a Pi's speed."""
    import platform
    import numpy as np
    t = time.perf_counter()
    total = 0
    for i in range(300_000):
        total += i * i % 7
    python_s = time.perf_counter() - t
    a = np.random.default_rng(0).standard_normal((256, 256), dtype=np.float32)
    a @ a
    t, reps = time.perf_counter(), 0
    while reps < 3 or time.perf_counter() - t < 0.5:
        a @ a
        reps += 1
    gemm_s = (time.perf_counter() - t) / reps
    return {"machine": platform.machine(), "python_loop_s": round(python_s, 4),
            "sgemm256_s": round(gemm_s, 6), "sgemm256_gflops": round(2 * 256 ** 3 / gemm_s / 1e9, 3)}


# ------------------------------------------------------------------ the run
class Check:
    def __init__(self, cpu: str, keep_going: bool = True):
        self.cpu, self.device = cpu, CPUS[cpu]["device"]
        self.results: list[tuple[str, bool, str]] = []
        self.times: dict[str, float] = {}
        self.host_bin = Path(sys.executable).parent
        self.work = REPO / "build" / "rpi-check"
        self.env = dict(os.environ)
        self.mounted = False
        self.root: Path | None = None

    # ---- reporting
    def record(self, name: str, ok: bool, detail: str) -> bool:
        self.results.append((name, ok, detail))
        print(f"rpi-check: {'PASS' if ok else 'FAIL'} {name}: {detail}", file=sys.stderr, flush=True)
        return ok

    def step(self, name: str):
        check = self

        class Timer:
            def __enter__(self):
                self.t = time.monotonic()
                print(f"rpi-check: -- {name}", file=sys.stderr, flush=True)

            def __exit__(self, *exc):
                check.times[name] = round(time.monotonic() - self.t, 1)
                print(f"rpi-check:    {name}: {check.times[name]} s", file=sys.stderr, flush=True)
        return Timer()

    # ---- commands
    def sh(self, *args, check=True, capture=False, timeout=None, **kw) -> subprocess.CompletedProcess:
        r = subprocess.run([str(a) for a in args], text=True, timeout=timeout,
                           stdout=subprocess.PIPE if capture else None,
                           stderr=subprocess.PIPE if capture else None, **kw)
        if check and r.returncode != 0:
            err = (r.stderr or "").strip().splitlines()[-1:] if capture else []
            raise CheckFailed(f"{' '.join(map(str, args[:4]))} ... exited {r.returncode}"
                              + (f": {err[0]}" if err else ""))
        return r

    def guest_argv(self, *args) -> list[str]:
        env = {"PATH": f"{GUEST_VENV}/bin:/usr/local/bin:/usr/bin:/bin", "HOME": "/root", "LANG": "C.UTF-8",
               "QEMU_CPU": self.cpu, "NUMBA_CACHE_DIR": GUEST_NUMBA_CACHE, "MPLBACKEND": "Agg",
               "PIP_CERT": GUEST_CA, "SSL_CERT_FILE": GUEST_CA, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
        return ["chroot", str(self.root), "/usr/bin/env", "-i", *(f"{k}={v}" for k, v in env.items()),
                *map(str, args)]

    def guest(self, *args, check=True, capture=True, timeout=None) -> subprocess.CompletedProcess:
        return self.sh(*self.guest_argv(*args), check=check, capture=capture, timeout=timeout)

    def host_cli(self, *args, check=True, timeout=600) -> subprocess.CompletedProcess:
        return self.sh(self.host_bin / "edge-lls", *args, check=check, capture=True, timeout=timeout)

    def guest_cli(self, *args, check=True, timeout=3600) -> subprocess.CompletedProcess:
        return self.guest("edge-lls", *args, check=check, timeout=timeout)

    def in_guest(self, path: str) -> Path:
        return self.root / path.lstrip("/")

    # ---- 0: the root filesystem
    def prepare(self) -> None:
        if os.geteuid() != 0:
            raise CheckFailed("needs root (debootstrap, chroot, mount): run `sudo make rpi-check`")
        with self.step("host setup (apt, binfmt_misc)"):
            self.sh("bash", ROOTFS_SH, "host-setup")
        mirror = self.env.get("RPI_MIRROR") or debian_mirror(
            self.sh("apt-get", "indextargets", "--format", "$(SITE) $(RELEASE)", capture=True).stdout)
        reqs = requirements((REPO / "pyproject.toml").read_text())
        digest = recipe_hash(ROOTFS_SH.read_bytes(), reqs, mirror)
        cache = cache_root(self.env)
        self.root = cache / f"rpi-rootfs-{digest}"
        cache.mkdir(parents=True, exist_ok=True)
        for old in cache.glob("rpi-rootfs-*"):        # other recipes' root filesystems: gone
            if old.name not in (self.root.name, self.root.name + ".partial") and old.is_dir():
                print(f"rpi-check: removing {old} (another recipe)", file=sys.stderr)
                self.sh("bash", ROOTFS_SH, "umount", old)
                shutil.rmtree(old)
        cpuinfo = cache / f"cpuinfo-{self.cpu}"
        cpuinfo.write_text(cpuinfo_text(self.cpu, os.cpu_count() or 1))
        reqs_file = cache / f"requirements-{digest}.txt"
        reqs_file.write_text("\n".join(reqs) + "\n")
        with self.step("root filesystem (debootstrap + pip, or cached)"):
            self.sh("bash", ROOTFS_SH, "build", self.root, reqs_file, mirror, cpuinfo)
        self.sh("bash", ROOTFS_SH, "mount", self.root, cpuinfo)
        self.mounted = True
        with self.step("copy and install this checkout"):
            src = self.in_guest(GUEST_SRC)
            shutil.rmtree(src, ignore_errors=True)
            src.mkdir(parents=True)
            files = self.sh("git", "-C", REPO, "ls-files", "-z", "--cached", "--others", "--exclude-standard",
                            capture=True).stdout
            # tar keeps modification times: Numba's cache inside stays valid for unchanged sources
            packed = subprocess.run(["tar", "-C", str(REPO), "--null", "-T", "-", "-cf", "-"], input=files.encode(),
                                    stdout=subprocess.PIPE, check=True).stdout
            subprocess.run(["tar", "-C", str(src), "-xf", "-"], input=packed, check=True)
            self.guest("pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "-e", GUEST_SRC)
        work = self.in_guest(GUEST_WORK)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True)
        freeze = self.in_guest("/opt/edge-lls/freeze.txt")
        if freeze.exists():
            pick = [line for line in freeze.read_text().splitlines()
                    if line.split("==")[0].lower() in ("numpy", "numba", "onnxruntime", "ai-edge-litert", "scipy")]
            print(f"rpi-check: root filesystem {self.root}: {', '.join(pick)}", file=sys.stderr)

    def cleanup(self) -> None:
        if self.mounted and self.root is not None:
            subprocess.run(["bash", str(ROOTFS_SH), "umount", str(self.root)])
            self.mounted = False

    # ---- 1: unit tests
    def unit_tests(self) -> None:
        with self.step("unit tests inside"):
            args = [*GUEST_TESTS, *(f"--deselect={node}" for _, nodes in GUEST_TESTS.values() for node in nodes)]
            r = self.guest("sh", "-c", f"cd {GUEST_SRC} && exec python -m pytest -q -p no:cacheprovider "
                           f"-m 'not long' -rs --durations=10 " + " ".join(args), check=False, timeout=3600)
        (self.work / "guest-pytest.log").write_text(r.stdout + r.stderr)
        counts = pytest_counts(r.stdout)
        closing = next((line for line in reversed(r.stdout.splitlines()) if line.strip()), "")
        self.record("unit tests inside (arm64)", r.returncode == 0 and counts.get("passed", 0) > 0,
                    f"{closing.strip('= ')} ({len(GUEST_TESTS)} files; log {self.work / 'guest-pytest.log'})")

    # ---- 2: training, host and guest
    def train(self) -> None:
        args = ["train", "--device", self.device, "--epochs", "1", "--seed", str(SEED), "--json", "--no-progress"]
        with self.step("train one epoch inside"):
            r = self.guest_cli(*args, "--out", f"{GUEST_WORK}/arm-run")
        self.arm = json.loads(r.stdout)
        (self.work / "train-arm64.txt").write_text(r.stderr + r.stdout)
        with self.step("train one epoch on the host"):
            r = self.host_cli(*args, "--out", self.work / "x86-run")
        self.x86 = json.loads(r.stdout)
        (self.work / "train-x86_64.txt").write_text(r.stderr + r.stdout)
        a, b = self.arm["eval_accuracy"], self.x86["eval_accuracy"]
        self.record("one-epoch accuracy arm64 vs x86_64", within(a, b),
                    f"{a:.4f} vs {b:.4f} (difference {abs(a - b) * 100:.2f} pt, allowed 0.5; seed {SEED}, "
                    f"{self.device}, {self.arm['threads']} threads)")

    # ---- 3: byte compatibility
    def _eval(self, side: str, model: str) -> float:
        if side == "host":
            r = self.host_cli("eval", model, "--json")
        else:
            r = self.guest_cli("eval", model, "--json")
        return json.loads(r.stdout)["accuracy"]

    def byte_compat(self) -> None:
        with self.step("byte compatibility"):
            arm_model = self.in_guest(f"{GUEST_WORK}/arm-run/model.ells")
            x86_model = self.work / "x86-run" / "model.ells"
            shutil.copyfile(x86_model, self.in_guest(f"{GUEST_WORK}/x86-model.ells"))
            # trained on arm64, loaded on x86_64
            acc = self._eval("host", str(arm_model))
            self.record("arm64 model evaluated on x86_64", within(acc, self.arm["eval_accuracy"], 0.0),
                        f"{acc:.4f} (arm64 measured {self.arm['eval_accuracy']:.4f})")
            self.sh(sys.executable, __file__, "resave", arm_model, self.work / "arm-resaved-on-x86.ells")
            same = arm_model.read_bytes() == (self.work / "arm-resaved-on-x86.ells").read_bytes()
            self.record("arm64 model re-saved on x86_64", same,
                        f"{'identical' if same else 'DIFFERENT'} bytes ({arm_model.stat().st_size:,} bytes)")
            # trained on x86_64, loaded on arm64
            acc = self._eval("guest", f"{GUEST_WORK}/x86-model.ells")
            self.record("x86_64 model evaluated on arm64", within(acc, self.x86["eval_accuracy"], 0.0),
                        f"{acc:.4f} (x86_64 measured {self.x86['eval_accuracy']:.4f})")
            self.guest("python", f"{GUEST_SRC}/tools/rpi/rpi_check.py", "resave", f"{GUEST_WORK}/x86-model.ells",
                       f"{GUEST_WORK}/x86-resaved-on-arm.ells")
            same = x86_model.read_bytes() == self.in_guest(f"{GUEST_WORK}/x86-resaved-on-arm.ells").read_bytes()
            self.record("x86_64 model re-saved on arm64", same,
                        f"{'identical' if same else 'DIFFERENT'} bytes ({x86_model.stat().st_size:,} bytes)")
        with self.step("export to TFLite"):
            # the arm64 model exported on both sides: the same .tflite
            r = self.guest_cli("export", f"{GUEST_WORK}/arm-run", "--format", "tflite",
                               "--out", f"{GUEST_WORK}/arm-model.tflite")
            guest_line = r.stdout.strip()
            self.host_cli("export", str(self.in_guest(f"{GUEST_WORK}/arm-run")), "--format", "tflite",
                          "--out", self.work / "arm-model-exported-on-x86.tflite")
            a = self.in_guest(f"{GUEST_WORK}/arm-model.tflite").read_bytes()
            b = (self.work / "arm-model-exported-on-x86.tflite").read_bytes()
            self.record("TFLite export on arm64 vs x86_64", a == b,
                        f"{'identical' if a == b else 'DIFFERENT'} bytes ({len(a):,} / {len(b):,}); arm64: {guest_line}")

    # ---- 4: the agent
    def serve(self) -> None:
        with self.step("edge-lls serve inside, driven from the host"):
            argv = self.guest_argv("edge-lls", "serve", "--listen", "tcp:127.0.0.1:0", "--device", self.device,
                                   "--state", f"{GUEST_WORK}/agent", "--board", f"qemu-{self.cpu}")
            err_path = self.work / "serve.stderr"
            with open(err_path, "w") as err:
                proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=err, text=True)
            try:
                port = self._wait_port(proc, timeout=600)
                self._drive(f"socket://127.0.0.1:{port}")
            finally:
                code = self._stop(proc)
            text = err_path.read_text()
            clean = code == 130 and "Traceback" not in text and "edge-lls: error: interrupted" in text
            self.record("serve stops on SIGTERM", clean,
                        f"exit status {code} (130: interrupted, between frames), "
                        f"{'no traceback' if 'Traceback' not in text else 'a TRACEBACK'} ({err_path})")

    def _wait_port(self, proc, timeout: float) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ready, _, _ = select.select([proc.stdout], [], [], 1.0)
            if ready:
                line = proc.stdout.readline()
                if not line:
                    break
                port = listening_port(line)
                if port is not None:
                    return port
            if proc.poll() is not None:
                break
        raise CheckFailed(f"edge-lls serve did not start listening (exit {proc.poll()}; {self.work / 'serve.stderr'})")

    @staticmethod
    def _stop(proc) -> int | None:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(120)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
                return None
        proc.stdout.close()
        return proc.returncode

    def _drive(self, url: str) -> None:
        import numpy as np
        from edge_lls.board_train import BoardTrainer
        from firmware_bridge.board import Board
        info = json.loads(self.host_cli("board", "info", "--port", url, "--json", "--timeout", "30").stdout)
        self.record("board info over TCP", info.get("device") == self.device and info.get("slot") is None,
                    f"{info.get('board')} ({info.get('device')}), {info.get('firmware')}, "
                    f"{len(info.get('ops', []))} kernels, no model yet")
        image, program, samples, labels = small_trainable_image()
        lr, classifier_lr, seed = 0.2, 0.1, 42
        twin = BoardTrainer(image, lr=lr, classifier_lr=classifier_lr, seed=seed)
        want = [twin.step(f, y) for f, y in zip(twin_features(program, image, samples), labels)]
        with Board.open(url, timeout=30.0, slow_timeout=600.0) as board:
            t = time.monotonic()
            board.deploy(image)
            deploy_s = time.monotonic() - t
            t = time.monotonic()
            got = board.train(samples, labels, lr=lr, classifier_lr=classifier_lr, seed=seed)
            train_s = time.monotonic() - t
            weights = board.get_weights()
        info = json.loads(self.host_cli("board", "info", "--port", url, "--json", "--timeout", "30").stdout)
        same_steps = all(g["predicted"] == w.predicted and np.float32(g["loss"]) == np.float32(w.loss)
                         for g, w in zip(got["results"], want))
        same_weights = all(np.array_equal(weights[op][0], w) and np.array_equal(weights[op][1], b)
                           for op, (w, b) in twin.weights().items())
        self.record("TRAIN over TCP equals the host's twin", same_steps and same_weights
                    and info.get("samples_seen") == len(labels),
                    f"{len(labels)} samples, losses and predictions {'equal' if same_steps else 'DIFFER'}, "
                    f"weights of {len(weights)} ops {'bit-exact' if same_weights else 'DIFFER'}; "
                    f"deploy {len(image):,} B {deploy_s:.1f} s, TRAIN {train_s:.1f} s; board says "
                    f"{info.get('samples_seen')} samples seen")

    # ---- speed
    def speed(self) -> None:
        with self.step("speed probe"):
            host = json.loads(self.sh(sys.executable, __file__, "speed", capture=True).stdout)
            arm = json.loads(self.guest("python", f"{GUEST_SRC}/tools/rpi/rpi_check.py", "speed").stdout)
        self.speeds = {"x86_64": host, "arm64 (qemu-user)": arm,
                       "python_loop_ratio": round(arm["python_loop_s"] / host["python_loop_s"], 1),
                       "sgemm_ratio": round(arm["sgemm256_s"] / host["sgemm256_s"], 1)}

    def summary(self, total: float) -> int:
        failed = [r for r in self.results if not r[1]]
        out = {"cpu": self.cpu, "device": self.device, "root": str(self.root), "seconds": round(total, 1),
               "steps": self.times, "checks": [{"name": n, "ok": ok, "detail": d} for n, ok, d in self.results],
               "speed": getattr(self, "speeds", None)}
        for side in ("arm", "x86"):
            run = getattr(self, side, None)
            if run:
                out[f"train_{side}"] = {k: run[k] for k in ("eval_accuracy", "train_loss", "images_per_s", "seconds")}
        if self.work.is_dir():
            (self.work / "summary.json").write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(out, indent=1))
        passed = len(self.results) - len(failed)
        print(f"rpi-check: {total:.0f} s ({self.cpu}, {self.device}; {self.work / 'summary.json'})", file=sys.stderr)
        for name, _, detail in failed:
            print(f"rpi-check: FAILED {name}: {detail}", file=sys.stderr)
        print(f"rpi-check: {passed} passed, {len(failed)} failed", file=sys.stderr, flush=True)
        return 1 if failed or not self.results else 0


def small_trainable_image():
    """A small int8 model the board protocol can train (ReLU6 dwsep blocks, 8x8x1 digits, 10
    classes, last 2 blocks trainable), PTQ-calibrated on digits, and 12 digits quantized to
    its input. -> (image bytes, program, samples (N,1,8,8,1) int8, labels)."""
    import numpy as np
    from edge_lls.data import load_dataset
    from edge_lls.finetune import trainable_tail
    from edge_lls.formats import blob
    from edge_lls.nn.model import Model
    from edge_lls.program.lower import float_program
    from edge_lls.program.ptq import quantize_program
    spec = {"name": "rpi-check-dwsep", "input_shape": [8, 8, 1], "num_classes": 10, "classifier": {"bias": True},
            "blocks": [{"type": "conv", "filters": 8, "kernel": 3, "stride": 1, "padding": "same", "act": "relu6",
                        "pool_size": 2},
                       {"type": "dwsep", "filters": 12, "kernel": 3, "stride": 2, "padding": "same", "act": "relu6",
                        "pool_size": 2},
                       {"type": "dwsep", "filters": 16, "kernel": 3, "stride": 1, "padding": "same", "act": "relu6",
                        "pool_size": 2, "post": [{"type": "adaptive_avgpool", "size": [1, 1]}]}]}
    x, y = load_dataset("digits").train.arrays()
    program = quantize_program(float_program(Model(spec, seed=5), softmax=True), [x[i:i + 32] for i in range(0, 128, 32)])
    image = blob.build_image(program, trainable_tail(program, 2)).data
    t = program.tensors[program.inputs[0]]
    scale = float(np.asarray(t.scales).reshape(-1)[0])
    q = np.clip(np.round(x[:12] / scale) + t.zero_point, -128, 127).astype(np.int8)
    return image, program, q[:, None], [int(v) for v in y[:12]]


def twin_features(program, image, samples):
    """The int8 features at the cut (the first trainable block's input), by the host's runtime."""
    from edge_lls.formats import blob
    from edge_lls.program.interpreter import prepare
    graph = prepare(program, batch=1, fast=False, requantize="tflm")
    cut = program.operators[blob.open_image(image)["tail"]["blocks"][0]["first_op"]].inputs[0]
    return [graph.run_all([x])[cut] for x in samples]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command")
    run = sub.add_parser("run", help="the whole check (default)")
    run.add_argument("--cpu", default=os.environ.get("RPI_CPU", "cortex-a76"), choices=sorted(CPUS),
                     help="QEMU_CPU: cortex-a76 (Pi 5, default) or cortex-a72 (Pi 4)")
    r = sub.add_parser("resave", help="load a .ells model and write it again (run on each side)")
    r.add_argument("src")
    r.add_argument("dst")
    sub.add_parser("speed", help="a few timings of this side, as JSON")
    args = p.parse_args(argv)
    if args.command == "resave":
        resave(args.src, args.dst)
        return 0
    if args.command == "speed":
        print(json.dumps(speed()))
        return 0
    cpu = getattr(args, "cpu", None) or os.environ.get("RPI_CPU", "cortex-a76")
    if cpu not in CPUS:
        print(f"rpi-check: error: RPI_CPU={cpu}: choose one of {', '.join(CPUS)}", file=sys.stderr)
        return 2
    check = Check(cpu)
    start = time.monotonic()

    def terminated(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, terminated)
    try:
        check.prepare()
        for part in (check.unit_tests, check.train, check.byte_compat, check.serve, check.speed):
            if part in (check.byte_compat,) and not (getattr(check, "arm", None) and getattr(check, "x86", None)):
                check.record(part.__name__.replace("_", " "), False, "not run: the training step failed")
                continue
            try:
                part()
            except (CheckFailed, subprocess.SubprocessError, OSError, ValueError, KeyError) as e:
                check.record(part.__name__.replace("_", " "), False, f"{type(e).__name__}: {e}")
    except CheckFailed as e:
        print(f"rpi-check: error: {e}", file=sys.stderr)
        check.cleanup()
        return 1
    except KeyboardInterrupt:
        print("rpi-check: error: interrupted", file=sys.stderr)
        check.cleanup()
        return 130
    finally:
        check.cleanup()
    return check.summary(time.monotonic() - start)


if __name__ == "__main__":
    sys.exit(main())

"""Fault injection against a board (issue 12): deploys and inferences through a proxy that damages
the line, with the board killed and reset mid-transfer and mid-commit, checking after every
episode that no corrupted or partial model ever runs.

    .venv/bin/python tools/fault_campaign.py [--faults 1000] [--seed 1] [--target serve] [--json]

The target (firmware_bridge/faults.py): `serve` runs `edge-lls serve` as a subprocess over a
state folder that persists across its kills (--state, default a temporary folder);
qemu-m4 / qemu-m7 run the bridge firmware (built with SESSION=1) under QEMU over a flash file
that persists the same way (give them longer --timeout / --slow-timeout: the firmware is
emulated). The host drives
it with firmware_bridge.board.Board through a FaultProxy whose seeded plan drops, flips,
duplicates, reorders and truncates bytes of --rate of the frames in each direction and now
and then cuts the connection.

An episode: open a session through the proxy, deploy one of three small int8 models (another
than the board runs, so every commit changes the model; after a failed transfer, mostly the
same one again, to resume it), INFER a fixed input. Some episodes also SIGKILL the board, or
reset it (killed and started again while the host's connection stays open), after the nth
PUT_MODEL frame (mid-transfer) or a few milliseconds after the COMMIT frame (mid-commit,
delays drawn over the COMMIT round trip the proxy measures). Then, on a clean connection
(the target restarted if it was killed), the invariants:

  * the episode either completed or raised one EdgeLLSError with a one-line message, and
    a deploy the board refused (a BoardError) did not make the model run;
  * the board's active SHA-256 (HELLO) is the model it ran at the last check or one whose
    COMMIT the host sent since: never a model whose COMMIT never came, never an unknown one,
    never none once a model ran; a deploy that completed is the model that runs;
  * the boot state is confirmed or reverted (never a trial left running);
  * INFER of the fixed input gives exactly ImageRunner's bytes for the model HELLO names (and
    so does an INFER through the faulty line, when it returns);
  * a completed transfer sent each byte once from where it resumed (sent = size - resumed
    offset; less after a board reset mid-transfer, when the board kept a chunk whose answer
    the reset lost and named the offset after it), and a transfer retried after one failed
    mid-transfer (no other model's transfer in between) resumed at or past the last offset
    the board had acknowledged;
  * at the end, a cold start of the target boots the model of the last check.

It stops once the proxy has counted --faults faults (line faults, kills and resets), prints
the faults by kind and direction, the transfers completed / resumed / failed and the verdict;
exit status 1 on any violation, 2 on bad options.
"""
from __future__ import annotations

import argparse
import collections
import json
import random
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from edge_lls.errors import ConfigError, EdgeLLSError  # noqa: E402
from firmware_bridge import faults as f  # noqa: E402
from firmware_bridge.agent import ImageRunner  # noqa: E402
from firmware_bridge.board import Board, sha256  # noqa: E402
from firmware_bridge.messages import BoardError  # noqa: E402

TARGETS = ("serve", "qemu-m4", "qemu-m7")
DISRUPTIONS = {"none": 0.72, "kill-transfer": 0.07, "reset-transfer": 0.07, "kill-commit": 0.07, "reset-commit": 0.07}
INPUT_SHAPE = (12, 12, 3)


# ------------------------------------------------------------------ the models
@dataclass
class CampaignModel:
    name: str
    image: bytes
    sha: str
    expected: bytes           # ImageRunner's output bytes on the campaign's input

    @property
    def size(self) -> int:
        return len(self.image)


def _program(seed: int, widths, units: int):
    from edge_lls.nn.model import Model
    from edge_lls.program.lower import float_program
    from edge_lls.program.ptq import quantize_program
    c1, c2, c3 = widths
    dense = [{"type": "dense", "units": units, "bias": True, "act": "relu6", "pool_size": units}] if units else []
    spec = {"name": f"fault-{seed}", "input_shape": list(INPUT_SHAPE), "num_classes": 10, "classifier": {"bias": True},
            "blocks": [{"type": "conv", "filters": c1, "kernel": 3, "stride": 1, "padding": "same", "act": "relu6",
                        "pool_size": 2},
                       {"type": "dwsep", "filters": c2, "kernel": 3, "stride": 2, "padding": "same", "act": "relu6",
                        "pool_size": 2},
                       {"type": "dwsep", "filters": c3, "kernel": 3, "stride": 1, "padding": "same", "act": "relu6",
                        "pool_size": 2, "post": [{"type": "adaptive_avgpool", "size": [1, 1]}]}] + dense}
    rng = np.random.default_rng(seed)
    batches = [rng.uniform(0, 1, (8, *INPUT_SHAPE)).astype(np.float32) for _ in range(2)]
    return quantize_program(float_program(Model(spec, seed=seed), softmax=True), batches)


def campaign_input() -> bytes:
    return np.random.default_rng(12).integers(-128, 128, INPUT_SHAPE).astype(np.int8).tobytes()


def campaign_models() -> list[CampaignModel]:
    """Three small int8 models (24-36 KB: 6 to 9 chunks of 4 KB), different weights and
    outputs: a trainable last block, two trainable blocks, no trainable tail (and a dense block)."""
    from edge_lls.finetune import trainable_tail
    from edge_lls.formats import blob
    x, models = campaign_input(), []
    for name, seed, widths, units, train_last in (("A", 1, (32, 64, 112), 0, 1), ("B", 2, (24, 48, 96), 0, 2),
                                                   ("C", 3, (16, 32, 48), 256, 0)):
        program = _program(seed, widths, units)
        image = blob.build_image(program, trainable_tail(program, train_last) if train_last else None).data
        models.append(CampaignModel(name, image, sha256(image).hex(), ImageRunner(image).infer(x)))
    if len({m.expected for m in models}) != len(models):
        raise RuntimeError("the campaign's models give equal outputs on its input")
    return models


# ------------------------------------------------------------------ targets
def make_target(name: str, state: Path) -> f.Target:
    """serve: `edge-lls serve` over state/state; qemu-m4 / qemu-m7: the bridge firmware
    (built with SESSION=1) under QEMU over the flash file state/flash.bin."""
    if name == "serve":
        return f.ServeTarget(state / "state", log=state / "serve.log")
    from firmware_bridge.emulator import firmware_elf
    target = f.QemuTarget(name, state / "flash.bin", log=state / "qemu.log")
    if not firmware_elf(target.board).exists():
        raise ConfigError(f"--target {name}: no firmware at {firmware_elf(target.board)} "
                          f"(make -C firmware_bridge/firmware BOARD={target.board} SESSION=1)")
    return target


# ------------------------------------------------------------------ the campaign
@dataclass
class Pending:
    """A transfer that failed before its COMMIT went: the model and the offset the board acknowledged."""
    sha: str
    acked: int


@dataclass
class Tally:
    episodes: int = 0
    completed: int = 0
    resumed: int = 0
    unchanged: int = 0
    failed: int = 0
    survived_resets: int = 0
    infers_ok: int = 0
    infers_failed: int = 0
    errors: collections.Counter = field(default_factory=collections.Counter)
    board_faults: collections.Counter = field(default_factory=collections.Counter)   # "kill-commit" -> n
    commit_outcomes: collections.Counter = field(default_factory=collections.Counter)


def _error_kind(message: str) -> str:
    """An error message with its numbers and hex blurred: the kinds of errors seen."""
    text = re.sub(r"[0-9a-f]{16,}", "<sha>", message)
    text = re.sub(r"\d+(\.\d+)?", "N", text)
    return text[:110]


class Campaign:
    def __init__(self, target: f.Target, models: list[CampaignModel], *, faults: int = 1000, seed: int = 1,
                 rate: float = 0.1, chunk: int = 4096, timeout: float = 0.1, slow_timeout: float = 0.3,
                 attempts: int = 20, log=None):
        self.target, self.models, self.goal = target, models, int(faults)
        self.by_sha = {m.sha: m for m in models}
        self.rng = random.Random(f"campaign:{seed}")
        self.plan = f.FaultPlan(seed=seed, rate=rate)
        self.chunk, self.timeout, self.slow_timeout, self.attempts = chunk, timeout, slow_timeout, attempts
        self.x = campaign_input()
        self.log = log or (lambda line: None)
        self.tally = Tally()
        self.violations: list[str] = []
        self.allowed: set = {None}            # what the board may run at the next check
        self.active: str | None = None        # what it ran at the last check
        self.pending: Pending | None = None
        self.proxy: f.FaultProxy | None = None

    # ---------------------------------------------------------------- helpers
    def violation(self, episode: int, text: str) -> None:
        self.violations.append(f"episode {episode}: {text}")
        self.log(f"VIOLATION episode {episode}: {text}")

    def board(self, url: str) -> Board:
        return Board.open(url, timeout=self.timeout, slow_timeout=self.slow_timeout, attempts=self.attempts)

    def choose_model(self) -> CampaignModel:
        if self.pending is not None and self.pending.sha != self.active and self.rng.random() < 0.8:
            return self.by_sha[self.pending.sha]
        return self.rng.choice([m for m in self.models if m.sha != self.active])

    def commit_delay(self) -> float:
        trips = self.proxy.round_trips.get("COMMIT") or [0.01]
        return self.rng.uniform(0.0, 1.5 * statistics.median(trips[-50:]))

    def arm(self, disruption: str, model: CampaignModel) -> f.Trigger | None:
        if disruption == "none":
            return None
        what, where = disruption.split("-")
        proxy, target = self.proxy, self.target

        def act():
            proxy.note(what)
            self.tally.board_faults[disruption] += 1
            (target.kill if what == "kill" else target.reset)()
        proxy.reconnect = what == "reset"
        if where == "transfer":
            chunks = -(-model.size // self.chunk)
            return proxy.arm(act, "PUT_MODEL", nth=self.rng.randint(2, chunks + 1), delay=self.rng.uniform(0, 0.003))
        return proxy.arm(act, "COMMIT", nth=1, delay=self.commit_delay())

    # ---------------------------------------------------------------- one episode
    def episode(self, number: int) -> None:
        tally, proxy = self.tally, self.proxy
        began = time.monotonic()
        model = self.choose_model()
        if self.pending is not None and self.pending.sha != model.sha:
            self.pending = None                               # another transfer replaces the unfinished one
        disruption = self.rng.choices(list(DISRUPTIONS), list(DISRUPTIONS.values()))[0]
        commits_before = proxy.frames["COMMIT"]
        acked = [0]
        trigger = self.arm(disruption, model)
        tally.episodes += 1
        result, error = None, None
        try:
            with self.board(proxy.url) as board:
                result = board.deploy(model.image, chunk=self.chunk,
                                      progress=lambda done, total: acked.__setitem__(0, max(acked[0], done)))
                try:
                    out = board.infer(self.x)["output"].tobytes()
                except EdgeLLSError:
                    tally.infers_failed += 1
                else:
                    tally.infers_ok += 1
                    if out != model.expected:
                        self.violation(number, f"INFER through the faulty line gave {out.hex()}, model "
                                               f"{model.name} gives {model.expected.hex()}")
        except EdgeLLSError as e:
            error = e
        except Exception:                                     # noqa: BLE001 -- an escape is a violation
            self.violation(number, "an exception other than EdgeLLSError escaped: "
                           + traceback.format_exc(limit=3).strip().replace("\n", " | "))
            error = "escaped"
        finally:
            proxy.disarm()
        fired = trigger is not None and trigger.fired.is_set()
        if fired and not trigger.done.wait(120):
            self.violation(number, f"the {disruption} did not finish within 120 s")
        proxy.reconnect = False
        if fired and trigger.error is not None:
            self.violation(number, f"the {disruption} failed: {trigger.error}")
        if not self.target.alive():
            self.target.restart()

        committed = proxy.frames["COMMIT"] > commits_before
        if committed:
            self.allowed.add(model.sha)
        if isinstance(error, EdgeLLSError):
            message = str(error)
            if not message or "\n" in message:
                self.violation(number, f"{type(error).__name__} without a one-line message: {message!r}")
            tally.failed += 1
            tally.errors[f"{type(error).__name__}: {_error_kind(message)}"] += 1
            if committed:                                     # the transfer was complete: nothing to resume
                self.pending = None
            else:
                previous = self.pending.acked if self.pending is not None and self.pending.sha == model.sha else 0
                self.pending = Pending(model.sha, max(previous, acked[0]))
        elif result is not None:
            if result["unchanged"]:
                tally.unchanged += 1
            else:
                tally.completed += 1
                tally.resumed += result["resumed_from"] > 0
                rest = model.size - result["resumed_from"]     # a board that reset mid-transfer may
                if result["sent_bytes"] > rest or (not fired and result["sent_bytes"] != rest):   # hold a chunk
                    self.violation(number, f"the transfer sent {result['sent_bytes']} bytes after resuming at "
                                           f"{result['resumed_from']} of {model.size}")
                if self.pending is not None and self.pending.sha == model.sha and \
                        result["resumed_from"] < self.pending.acked:
                    self.violation(number, f"model {model.name} resumed at {result['resumed_from']}, the board "
                                           f"had acknowledged {self.pending.acked}")
                if fired and disruption.startswith("reset"):
                    tally.survived_resets += 1
            self.pending = None
        sha, trial = self.check(number)
        if result is not None and sha != model.sha:
            self.violation(number, f"the deploy of {model.name} completed but the board runs {self.name(sha)}")
        if isinstance(error, BoardError) and sha == model.sha:
            self.violation(number, f"the deploy of {model.name} failed ({error}) but the board runs it")
        if fired and disruption.endswith("commit"):
            outcome = "new model" if sha == model.sha else "previous model"
            tally.commit_outcomes[outcome + (" (trial reverted)" if trial == "reverted" else "")] += 1
        self.log(f"episode {number}: {model.name} {disruption}{'' if fired or disruption == 'none' else ' (not fired)'}"
                 f" -> {'failed: ' + str(error) if error else 'unchanged' if result and result['unchanged'] else 'ok'}"
                 f" [runs {self.name(sha)}, {proxy.total} faults, {time.monotonic() - began:.2f} s]")

    def name(self, sha) -> str:
        return "no model" if sha is None else f"model {self.by_sha[sha].name}" if sha in self.by_sha else sha[:16]

    # ---------------------------------------------------------------- the invariants on a clean line
    def check(self, number: int):
        try:
            with Board.open(self.target.url, timeout=2.0, slow_timeout=30.0, attempts=5) as board:
                info = board.info
                sha = info["sha256"]
                out = board.infer(self.x)["output"].tobytes() if sha is not None else None
        except EdgeLLSError as e:
            self.violation(number, f"the board does not answer on a clean line: {e}")
            return self.active, None
        if sha not in self.allowed:
            what = "an unknown model" if sha is not None and sha not in self.by_sha else self.name(sha)
            self.violation(number, f"the board runs {what}; it may run only "
                                   f"{', '.join(sorted(self.name(s) for s in self.allowed))}")
        if sha is not None and info["trial"] not in ("confirmed", "reverted"):
            self.violation(number, f"the board runs {self.name(sha)} in boot state {info['trial']}")
        if sha in self.by_sha and out != self.by_sha[sha].expected:
            self.violation(number, f"INFER gave {out.hex()}; {self.name(sha)} gives {self.by_sha[sha].expected.hex()}")
        self.active, self.allowed = sha, {sha}
        return sha, info["trial"]

    # ---------------------------------------------------------------- the run
    def run(self) -> dict:
        start = time.monotonic()
        self.target.start()
        self.proxy = f.FaultProxy(self.target.address, self.plan)
        try:
            self.allowed = {None, *self.by_sha}               # a --state folder may hold one from before
            self.check(0)
            number, cap = 0, 20 * self.goal + 100
            while self.proxy.total < self.goal and number < cap:
                number += 1
                self.episode(number)
            self.target.restart()                             # a cold start: the model of the last check
            last = self.active
            sha, _ = self.check(number + 1)
            if sha != last:
                self.violation(number + 1, f"a cold start runs {self.name(sha)}, not {self.name(last)}")
        finally:
            self.proxy.close()
            self.target.stop()
        return self.report(time.monotonic() - start)

    def report(self, seconds: float) -> dict:
        proxy, t = self.proxy, self.tally
        return {"target": self.target.name, "seed": self.plan.seed, "rate": self.plan.rate, "goal": self.goal,
                "faults": dict(proxy.counts), "faults_total": proxy.total,
                "faults_by_direction": {d: dict(c) for d, c in proxy.by_direction.items()},
                "board_faults": dict(t.board_faults), "commit_outcomes": dict(t.commit_outcomes),
                "episodes": t.episodes, "transfers": {"completed": t.completed, "resumed": t.resumed,
                                                      "unchanged": t.unchanged, "failed": t.failed,
                                                      "survived_resets": t.survived_resets},
                "infers": {"ok": t.infers_ok, "failed": t.infers_failed}, "errors": dict(t.errors.most_common()),
                "connections": proxy.connections, "target_starts": getattr(self.target, "starts", None),
                "commit_round_trip_ms": round(1000 * statistics.median(proxy.round_trips["COMMIT"]), 2)
                if proxy.round_trips.get("COMMIT") else None,
                "violations": self.violations, "verdict": "FAIL" if self.violations else "PASS",
                "seconds": round(seconds, 1)}


def print_report(r: dict, args) -> None:
    print(f"fault campaign against {r['target']}: seed {args.seed}, {args.faults:,} faults asked, rate {args.rate:g} "
          f"of the frames each way, {r['episodes']} episodes, {r['seconds']:.0f} s")
    directions = list(r["faults_by_direction"])
    print(f"\n{'fault':<12}" + "".join(f"{d:>14}" for d in directions) + f"{'total':>9}")
    for kind in f.KINDS:
        cells = [r["faults_by_direction"][d].get(kind, 0) for d in directions]
        board = kind in f.BOARD_KINDS
        print(f"{kind:<12}" + "".join(f"{'':>14}" if board else f"{c:>14}" for c in cells) +
              f"{r['faults'].get(kind, 0):>9}")
    print(f"{'total':<12}" + "".join(f"{sum(r['faults_by_direction'][d].values()):>14}" for d in directions) +
          f"{r['faults_total']:>9}")
    bf = r["board_faults"]
    print("\nboard faults: " + ", ".join(f"{k} {bf.get(k, 0)}" for k in DISRUPTIONS if k != "none"))
    if r["commit_outcomes"]:
        print(f"after a mid-commit fault (0 to 1.5 x the median COMMIT round trip, {r['commit_round_trip_ms']} ms, "
              "after the frame) the board ran: " +
              ", ".join(f"{k} {v}" for k, v in sorted(r["commit_outcomes"].items())))
    tr = r["transfers"]
    print(f"transfers: {tr['completed'] + tr['unchanged'] + tr['failed']} attempted, {tr['completed']} completed "
          f"({tr['resumed']} resumed from the board's offset, {tr['survived_resets']} through a board reset), "
          f"{tr['unchanged']} found already committed, {tr['failed']} failed with one clear error")
    print(f"inferences through the faulty line: {r['infers']['ok']} exact, {r['infers']['failed']} failed cleanly")
    for message, count in list(r["errors"].items())[:8]:
        print(f"  {count:>4} x {message}")
    print(f"\ninvariants checked on a clean line after each episode and a cold start: "
          f"{len(r['violations'])} violations")
    for v in r["violations"][:20]:
        print(f"  {v}")
    print(f"verdict: {r['verdict']}")


def _interrupted(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--faults", type=int, default=1000, help="stop after this many injected faults (default 1000)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--target", default="serve", choices=TARGETS)
    p.add_argument("--rate", type=float, default=0.1, help="the share of frames damaged, each way (default 0.1)")
    p.add_argument("--chunk", type=int, default=4096, help="deploy chunk bytes (default 4096)")
    p.add_argument("--timeout", type=float, default=0.1, help="seconds per attempt, quick messages (default 0.1)")
    p.add_argument("--slow-timeout", type=float, default=0.3,
                   help="seconds per attempt, COMMIT and INFER (default 0.3)")
    p.add_argument("--attempts", type=int, default=20, help="transmissions of a frame (default 20)")
    p.add_argument("--state", metavar="DIR", help="the target's folder (default: a temporary one, removed after)")
    p.add_argument("--json", action="store_true", help="one JSON object instead of the table")
    p.add_argument("-v", "--verbose", action="store_true", help="a line per episode on stderr")
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        if args.faults < 1:
            raise ConfigError(f"--faults must be at least 1, got {args.faults}")
        if not 0 < args.rate <= 1:
            raise ConfigError(f"--rate must be in (0, 1], got {args.rate}")
        if not 1 <= args.chunk <= 4096:
            raise ConfigError(f"--chunk must be 1 to 4096 bytes, got {args.chunk}")
        if min(args.timeout, args.slow_timeout) <= 0 or args.attempts < 1:
            raise ConfigError("--timeout and --slow-timeout must be > 0 and --attempts at least 1")
        if args.state and Path(args.state).exists() and not Path(args.state).is_dir():
            raise ConfigError(f"--state {args.state}: not a folder")
        folder = Path(args.state) if args.state else Path(tempfile.gettempdir()) / "fault-campaign"
        make_target(args.target, folder)                      # refuses a target not built
        folder = Path(args.state) if args.state else Path(tempfile.mkdtemp(prefix="fault-campaign-"))
        target = make_target(args.target, folder)
    except EdgeLLSError as e:
        print(f"fault_campaign: error: {e}", file=sys.stderr)
        return 2
    log = (lambda line: print(line, file=sys.stderr, flush=True)) if args.verbose else None
    signal.signal(signal.SIGTERM, _interrupted)               # the target is stopped on the way out
    try:
        campaign = Campaign(target, campaign_models(), faults=args.faults, seed=args.seed, rate=args.rate,
                            chunk=args.chunk, timeout=args.timeout, slow_timeout=args.slow_timeout,
                            attempts=args.attempts, log=log)
        report = campaign.run()
    except EdgeLLSError as e:
        print(f"fault_campaign: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("fault_campaign: error: interrupted", file=sys.stderr)
        return 130
    finally:
        if not args.state:
            shutil.rmtree(folder, ignore_errors=True)
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report, args)
    return 1 if report["violations"] else 0


if __name__ == "__main__":
    sys.exit(main())

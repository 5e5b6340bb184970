"""Timing on a noisy machine: worker processes driven in rotating rounds, and what ran where.

Each thing timed runs in its own worker process, so each has its own peak RSS and none inherits
another's allocator or thread pools. The parent starts every worker, waits until all are ready,
warms them up one at a time and then runs rounds, one worker at a time, rotating the order every
round (A,B,C / B,C,A / ...). Every worker thus sees the same drift in machine load, and a ratio
of two is best taken as the median of per-round ratios of neighbours in time (`paired`).

The protocol is one command per line on the worker's stdin (`warmup`, `run`, `finish`) and one
JSON reply per line on its stdout; the first reply, unasked, says the worker is ready. A reply
holding "error" ends that worker. A `run` reply holds at least "seconds" and "clips".
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

# -- parent: start workers, run rounds -------------------------------------------------------


@dataclass
class Rounds:
    """The replies of every worker, by name; a name in `errors` stopped early."""

    ready: dict[str, dict]  # first reply: setup time, environment, or an error
    warm: dict[str, dict]
    runs: dict[str, list[dict]]  # one `run` reply per round, in round order
    final: dict[str, dict]  # `finish` replies of the workers that lasted
    errors: dict[str, str]  # name → why its worker stopped


def run_rounds(names: list[str], argv: Callable[[str], list[str]], rounds: int) -> Rounds:
    """Start a worker per name (`argv(name)`), warm each up, then time `rounds` rotating rounds."""
    runs: dict[str, list[dict]] = {name: [] for name in names}
    log(f"starting {len(names)} workers: {', '.join(names)}")
    workers = {name: Worker(name, argv(name)) for name in names}
    ready = {name: w.call() for name, w in workers.items()}
    warm = {}
    for name, w in workers.items():
        if w.alive:
            log(f"warming up {name}")
            warm[name] = w.call("warmup")
    for r in range(rounds):
        alive = [n for n in names if workers[n].alive]
        first = r % len(alive) if alive else 0
        for name in alive[first:] + alive[:first]:
            reply = workers[name].call("run")
            if workers[name].alive:
                runs[name].append(reply)
                log(f"round {r + 1}/{rounds} {name}: {cps(reply):.2f} clips/s")
    final = {name: w.call("finish") for name, w in workers.items() if w.alive}
    for w in workers.values():
        w.close()
    errors = {name: w.error for name, w in workers.items() if w.error is not None}
    return Rounds(ready, warm, runs, final, errors)


class Worker:
    """One worker process: a command per line on its stdin, a JSON reply per line on stdout."""

    def __init__(self, name: str, argv: list[str]):
        self.name = name
        self.error: str | None = None
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    @property
    def alive(self) -> bool:
        return self.error is None

    def call(self, command: str | None = None) -> dict:
        """Send `command` (or nothing: the first reply says the worker is ready); its reply."""
        try:
            if command:
                self.proc.stdin.write(command + "\n")
                self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        except OSError:
            line = ""
        reply = json.loads(line) if line else {"error": self._exit_message()}
        if "error" in reply:
            self.error = reply["error"]
            log(f"{self.name} failed: {self.error}")
            self.close()
        return reply

    def _exit_message(self) -> str:
        return f"worker exited with status {self.proc.wait()} (its traceback is on stderr)"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# -- worker: one thing timed, driven over stdin/stdout ---------------------------------------


class Timed(Protocol):
    def warmup(self) -> None: ...

    def run(self) -> dict: ...  # {"seconds": float, "clips": int, ...}

    def finish(self) -> dict: ...  # {"info": {...}, ...}: what the parent reports of it


def serve(name: str, setup: Callable[[], tuple[Timed, dict]]) -> int:
    """Answer the parent's commands on stdin; `setup` builds the timed object (and extra facts
    for the ready reply). Returns the process's exit status."""
    protocol = sys.stdout
    sys.stdout = sys.stderr  # a stray print must not garble the replies
    started = time.perf_counter()
    try:
        worker, facts = setup()
        reply = {"setup_s": round(time.perf_counter() - started, 2), **facts}
    except Exception as e:
        reply = {"error": f"setting up {name}: {type(e).__name__}: {e}"}
    _reply(protocol, reply)
    if "error" in reply:
        return 1
    for line in sys.stdin:
        command = line.strip()
        try:
            if command == "warmup":
                t = time.perf_counter()
                worker.warmup()
                reply = {"warmup_s": round(time.perf_counter() - t, 2)}
            elif command == "run":
                cpu, busy = time.process_time(), machine_busy_s()
                reply = worker.run()
                reply["cpu_s"] = time.process_time() - cpu
                # CPU time of every other process meanwhile (the parent and idle workers use
                # next to none): what competed with this run for the cores.
                reply["others_cpu_s"] = max(0.0, machine_busy_s() - busy - reply["cpu_s"])
            elif command == "finish":
                reply = {**worker.finish(), "peak_rss_mb": round(peak_rss_mb(), 1)}
            else:
                reply = {"error": f"unknown command {command!r}"}
        except Exception as e:
            reply = {"error": f"{command} {name}: {type(e).__name__}: {e}"}
        _reply(protocol, reply)
        if command == "finish" or "error" in reply:
            break
    return 0


def _reply(stream, reply: dict) -> None:
    stream.write(json.dumps(reply) + "\n")
    stream.flush()


# -- statistics -------------------------------------------------------------------------------


def paired(runs: list[dict], base: list[dict]) -> list[float]:
    # Round r of both ran within one round of each other: the ratio cancels slower drift.
    return [cps(a) / cps(b) for a, b in zip(runs, base, strict=False)]


def cps(run: dict) -> float:
    return run["clips"] / run["seconds"]


def stats(values: list[float], digits: int) -> dict:
    if not values:
        return {}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


# -- the machine and the software ------------------------------------------------------------


def cpu_info() -> dict[str, str]:
    """/proc/cpuinfo's fields of the first CPU ({} where it is missing)."""
    cpu: dict[str, str] = {}
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            cpu.setdefault(key.strip(), value.strip())
    return cpu


def git_revision() -> str | None:
    root = Path(__file__).resolve().parents[1]

    def git(*argv: str) -> str:
        done = subprocess.run(
            ["git", *argv], cwd=root, capture_output=True, text=True, timeout=10, check=True
        )
        return done.stdout.strip()

    try:
        return git("rev-parse", "--short", "HEAD") + (
            "-dirty" if git("status", "--porcelain") else ""
        )
    except (OSError, subprocess.SubprocessError):
        return None


def torch_env() -> dict:
    import numpy as np
    import soundfile as sf
    import soxr
    import torch

    return {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_bf16_supported": bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()),
        "numpy": np.__version__,
        "libsndfile": sf.__libsndfile_version__,
        "soxr": soxr.__version__,
    }


def machine_busy_s() -> float:
    """CPU seconds all processes have used since boot (0 where /proc/stat is missing)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is inside user


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)

"""Clips per second for 10 s clips on this CPU: decoding + log-mel, CNN14 and CNN10, fp32 and bf16.

Prints one JSON object on stdout; progress goes to stderr. Run it with `make bench`, or
`HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_model.py [--quick] [--out FILE]`.

Each variant runs in its own worker process (this script with `--only VARIANT`), so each has
its own peak RSS and none inherits another's allocator or thread pools. The workers start
together, then wait; the parent warms them up one at a time and then runs rounds, one variant
at a time, rotating the order every round (A,B,C / B,C,A / ...). Every variant thus sees the
same drift in machine load, and a speedup is the median of per-round ratios of neighbours in
time, not a ratio of figures taken minutes apart.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

CLIP_S = 10.0
FRONTEND_TARGET = 100.0  # clips/s of decode + resample + log-mel
FAST_TARGET = {"speedup": 1.8, "cosine": 0.999}  # bf16 CNN14 against fp32, same run

# name → (suffix, sample rate, channels, subtype): the shapes recordings arrive in.
FORMATS = {
    "wav_44k_stereo_pcm16": (".wav", 44100, 2, "PCM_16"),
    "ogg_vorbis_22k_mono": (".ogg", 22050, 1, "VORBIS"),  # like ../shared/data's clips
    "flac_48k_stereo_pcm24": (".flac", 48000, 2, "PCM_24"),
}


@dataclass(frozen=True)
class ModelVariant:
    encoder: str  # a STANDARD_ENCODERS name
    precision: str  # encode_audio's: "fp32" or "bf16" (bf16 autocast + channels_last)
    compiled: bool = False
    baseline: str | None = None  # the fp32 variant its speed and embeddings are held to
    target: bool = False  # held to FAST_TARGET


MODEL_VARIANTS = {
    "cnn14_fp32": ModelVariant("cnn14", "fp32"),
    "cnn14_fast": ModelVariant("cnn14", "bf16", baseline="cnn14_fp32", target=True),
    "cnn10_fp32": ModelVariant("cnn10", "fp32"),
    "cnn10_bf16": ModelVariant("cnn10", "bf16", baseline="cnn10_fp32"),
    # Not in earshot: torch.compile (inductor, frozen weights) around encode_audio's bf16 path.
    "cnn14_compile": ModelVariant(
        "cnn14", "bf16", compiled=True, baseline="cnn14_fp32", target=True
    ),
}
# Decoding and resampling run in one thread; this one decodes a batch's files on `--threads`
# threads (soundfile and soxr release the GIL) to see what the second core is worth.
FRONTEND_VARIANTS = ("frontend", "frontend_threaded")
VARIANTS = (*FRONTEND_VARIANTS, *MODEL_VARIANTS)
# Extras: half a minute of compiling, or one more process, would dwarf a smoke test.
QUICK_SKIP = ("frontend_threaded", "cnn14_compile")
CROSS_RATIOS = (
    ("frontend_threaded", "frontend"),
    ("cnn10_fp32", "cnn14_fp32"),
    ("cnn10_bf16", "cnn14_fast"),
    ("cnn14_compile", "cnn14_fast"),
)

DEFAULTS = {"clips": 64, "model_clips": 16, "rounds": 9, "batch_size": 8}
QUICK_DEFAULTS = {"clips": 6, "model_clips": 2, "rounds": 2, "batch_size": 2}


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.only:
        return _serve(args)
    result = run_benchmark(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny models, few clips: a smoke test")
    p.add_argument("--clips", type=int, help="files for the frontend (default 64; quick 6)")
    p.add_argument(
        "--model-clips", type=int, help="clips per round for each CNN (default 16; quick 2)"
    )
    p.add_argument("--rounds", type=int, help="timed rounds of every variant (default 9)")
    p.add_argument("--batch-size", type=int, help="clips per batch (default 8; quick 2)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--variants", help=f"comma-separated subset of {','.join(VARIANTS)}")
    p.add_argument("--out", help="also write the JSON to this file")
    p.add_argument("--only", choices=VARIANTS, help=argparse.SUPPRESS)  # worker: commands on stdin
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for key, value in (QUICK_DEFAULTS if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
        if getattr(args, key) < 1:
            p.error(f"--{key.replace('_', '-')} must be at least 1")
    if args.variants:
        args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = sorted(set(args.variants) - set(VARIANTS))
        if unknown:
            p.error(f"unknown variants {unknown}; known: {', '.join(VARIANTS)}")
    else:
        args.variants = [v for v in VARIANTS if not (args.quick and v in QUICK_SKIP)]
    if args.only and not args.workdir:
        p.error("--only runs a worker for the parent process; use --variants to pick variants")
    return args


# -- parent: start workers, run rounds, summarise -------------------------------------------


def run_benchmark(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    load_start = os.getloadavg()
    names = list(args.variants)
    runs: dict[str, list[dict]] = {name: [] for name in names}
    with tempfile.TemporaryDirectory(prefix="earshot-bench-") as workdir:
        _log(f"starting {len(names)} workers: {', '.join(names)}")
        workers = {name: _Worker(name, _worker_argv(args, name, workdir)) for name in names}
        ready = {name: w.call() for name, w in workers.items()}
        warm = {}
        for name, w in workers.items():
            if w.alive:
                _log(f"warming up {name}")
                warm[name] = w.call("warmup")
        for r in range(args.rounds):
            alive = [n for n in names if workers[n].alive]
            first = r % len(alive) if alive else 0
            for name in alive[first:] + alive[:first]:
                reply = workers[name].call("run")
                if workers[name].alive:
                    runs[name].append(reply)
                    _log(f"round {r + 1}/{args.rounds} {name}: {_cps(reply):.2f} clips/s")
        final = {name: w.call("finish") for name, w in workers.items() if w.alive}
        for w in workers.values():
            w.close()
        variants = {
            name: _summarise(name, ready[name], warm.get(name, {}), runs[name], final.get(name))
            if workers[name].alive
            else {"error": workers[name].error}
            for name in names
        }
        _compare(variants, runs, final)
    ratios = {
        f"{a}/{b}": _stats(_paired(runs[a], runs[b]), 3)
        for a, b in CROSS_RATIOS
        if runs.get(a) and runs.get(b)
    }
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    torch_env = next((r["env"] for r in ready.values() if "env" in r), {})
    return {
        "benchmark": "earshot bench/bench_model.py: clips/s for 10 s clips",
        "env": _environment(args, torch_env, load_start),
        "variants": variants,
        "ratios": ratios,
        "peak_rss_mb": {
            "overall": round(max(children, _peak_rss_mb()), 1),
            "largest_worker": round(children, 1),
            "parent": round(_peak_rss_mb(), 1),
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }


class _Worker:
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
            _log(f"{self.name} failed: {self.error}")
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


def _worker_argv(args: argparse.Namespace, name: str, workdir: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--only", name, "--workdir", workdir]
    for key in ("clips", "model_clips", "batch_size", "threads"):
        argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    return argv + (["--quick"] if args.quick else [])


def _summarise(name: str, ready: dict, warm: dict, runs: list[dict], final: dict) -> dict:
    out = {**final.get("info", {}), "clips_per_s": _stats([_cps(r) for r in runs], 3)}
    out["per_round"] = [round(_cps(r), 3) for r in runs]
    # CPU seconds per second while timed, of this variant and of every other process: a
    # variant that had the cores to itself shows about --threads and 0.
    out["cpu_per_wall"] = _stats([r["cpu_s"] / r["seconds"] for r in runs], 2)
    out["others_cpu_per_wall"] = _stats([r["others_cpu_s"] / r["seconds"] for r in runs], 2)
    if name in FRONTEND_VARIANTS:
        out["formats"] = {
            fmt: {
                "clips": runs[0]["formats"][fmt]["clips"],
                "clips_per_s": _stats([_cps(r["formats"][fmt]) for r in runs], 3),
            }
            for fmt in runs[0]["formats"]
        }
        out["target"] = FRONTEND_TARGET
        out["meets_target"] = out["clips_per_s"]["median"] >= FRONTEND_TARGET
    out["setup_s"] = ready.get("setup_s")
    out["warmup_s"] = warm.get("warmup_s")
    out["rss_after_import_mb"] = ready.get("rss_after_import_mb")
    out["peak_rss_mb"] = final["peak_rss_mb"]
    return out


def _compare(variants: dict, runs: dict, final: dict) -> None:
    """Each fast variant against its fp32 baseline: paired speedup, embeddings' cosine."""
    import numpy as np

    for name, variant in MODEL_VARIANTS.items():
        base = variant.baseline
        if name not in final or base not in final:
            continue
        entry = variants[name]
        entry["speedup_vs_fp32"] = {"baseline": base, **_stats(_paired(runs[name], runs[base]), 3)}
        a, b = (np.load(final[n]["embeddings"]).astype(np.float64) for n in (name, base))
        cos = np.sum(a * b, axis=1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        entry["cosine_vs_fp32"] = {
            "min": round(float(cos.min()), 6),
            "mean": round(float(cos.mean()), 6),
        }
        if variant.target:
            entry["target"] = FAST_TARGET
            entry["meets_target"] = bool(
                entry["speedup_vs_fp32"]["median"] >= FAST_TARGET["speedup"]
                and entry["cosine_vs_fp32"]["min"] >= FAST_TARGET["cosine"]
            )


def _paired(runs: list[dict], base: list[dict]) -> list[float]:
    # Round r of both ran within one round of each other: the ratio cancels slower drift.
    return [_cps(a) / _cps(b) for a, b in zip(runs, base, strict=False)]


def _cps(run: dict) -> float:
    return run["clips"] / run["seconds"]


def _stats(values: list[float], digits: int) -> dict:
    if not values:
        return {}
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def _environment(args: argparse.Namespace, torch_env: dict, load_start) -> dict:
    cpu = {}
    if Path("/proc/cpuinfo").is_file():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            cpu.setdefault(key.strip(), value.strip())
    flags = set(cpu.get("flags", "").split())
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu.get("model name", platform.processor() or "unknown"),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": {f: f in flags for f in ("avx512_bf16", "amx_bf16")},
        **torch_env,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": _git_revision(),
        "quick": args.quick,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "clip_s": CLIP_S,
        "clips_per_variant": {"frontend": args.clips, "models": args.model_clips},
        "load_avg_1m": {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)},
    }


def _git_revision() -> str | None:
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


# -- worker: one variant, driven over stdin/stdout ------------------------------------------


def _serve(args: argparse.Namespace) -> int:
    protocol = sys.stdout
    sys.stdout = sys.stderr  # a stray print must not garble the replies
    started = time.perf_counter()
    try:
        import torch

        torch.set_num_threads(args.threads)
        env = _torch_env()
        rss_after_import = _peak_rss_mb()
        if args.only in FRONTEND_VARIANTS:
            worker = FrontendWorker(args, threaded=args.only == "frontend_threaded")
        else:
            worker = ModelWorker(args, args.only, MODEL_VARIANTS[args.only])
        reply = {"setup_s": round(time.perf_counter() - started, 2), "env": env}
        reply["rss_after_import_mb"] = round(rss_after_import, 1)
    except Exception as e:
        reply = {"error": f"setting up {args.only}: {type(e).__name__}: {e}"}
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
                cpu, busy = time.process_time(), _machine_busy_s()
                reply = worker.run()
                reply["cpu_s"] = time.process_time() - cpu
                # CPU time of every other process meanwhile (the parent and idle workers use
                # next to none): what competed with this run for the cores.
                reply["others_cpu_s"] = max(0.0, _machine_busy_s() - busy - reply["cpu_s"])
            elif command == "finish":
                reply = {**worker.finish(), "peak_rss_mb": round(_peak_rss_mb(), 1)}
            else:
                reply = {"error": f"unknown command {command!r}"}
        except Exception as e:
            reply = {"error": f"{command} {args.only}: {type(e).__name__}: {e}"}
        _reply(protocol, reply)
        if command == "finish" or "error" in reply:
            break
    return 0


def _reply(stream, reply: dict) -> None:
    stream.write(json.dumps(reply) + "\n")
    stream.flush()


class FrontendWorker:
    """Decode + resample to 32 kHz + log-mel, from files on disk, `batch_size` clips at a time.

    The files were just written, so they are read from the page cache: this measures the CPU
    work, not the disk.
    """

    def __init__(self, args: argparse.Namespace, threaded: bool = False):
        from concurrent.futures import ThreadPoolExecutor

        from earshot.audio.features import LogMel
        from earshot.config import AudioConfig
        from earshot.testing.audio import write_tone

        self.config = AudioConfig()
        self.logmel = LogMel(self.config).eval()
        self.batch_size = args.batch_size
        self.pool = ThreadPoolExecutor(args.threads) if threaded else None
        root = Path(args.workdir) / ("frontend_threaded" if threaded else "frontend")
        root.mkdir()
        self.files: dict[str, list[Path]] = {name: [] for name in FORMATS}
        for i in range(args.clips):
            name = list(FORMATS)[i % len(FORMATS)]
            suffix, rate, channels, subtype = FORMATS[name]
            path = root / f"clip{i:03d}{suffix}"
            write_tone(path, CLIP_S, rate, channels, 110.0 * (1 + i % 12), subtype, seed=i)
            self.files[name].append(path)
        self.files = {name: paths for name, paths in self.files.items() if paths}

    def _batch(self, paths: list[Path]):
        import numpy as np
        import torch

        from earshot.audio.io import load

        n = self.config.window_samples
        x = np.zeros((len(paths), n), dtype=np.float32)  # (batch, samples), zero-padded

        def decode(row: np.ndarray, path: Path) -> None:
            samples = load(path, self.config.sample_rate)[:n]
            row[: len(samples)] = samples

        if self.pool is None:
            for row, path in zip(x, paths, strict=True):
                decode(row, path)
        else:
            list(self.pool.map(decode, x, paths))
        with torch.inference_mode():
            return self.logmel(torch.from_numpy(x))  # (batch, 1, frames, n_mels)

    def warmup(self) -> None:
        for paths in self.files.values():
            self._batch(paths[: self.batch_size])

    def run(self) -> dict:
        formats = {}
        for name, paths in self.files.items():
            t = time.perf_counter()
            for i in range(0, len(paths), self.batch_size):
                self._batch(paths[i : i + self.batch_size])
            formats[name] = {"seconds": time.perf_counter() - t, "clips": len(paths)}
        return {
            "seconds": sum(f["seconds"] for f in formats.values()),
            "clips": sum(f["clips"] for f in formats.values()),
            "formats": formats,
        }

    def finish(self) -> dict:
        return {"info": {"clips": sum(len(p) for p in self.files.values())}}


class ModelWorker:
    """JointModel.encode_audio on 10 s waveforms at 32 kHz (log-mel included), random weights."""

    def __init__(self, args: argparse.Namespace, name: str, variant: ModelVariant):
        import torch

        from earshot.config import ModelConfig
        from earshot.encoders.audio import STANDARD_ENCODERS
        from earshot.model.io import build_model
        from earshot.testing.models import tiny_model

        self.name, self.variant, self.workdir = name, variant, Path(args.workdir)
        if args.quick:
            self.model = tiny_model(variant.encoder, seed=0)
        else:
            self.model = build_model(ModelConfig(encoder=STANDARD_ENCODERS[variant.encoder]), 0)
        self.params = sum(p.numel() for p in self.model.audio_encoder.parameters())
        if variant.compiled:
            import torch._inductor.config as inductor_config

            # Freezing folds BatchNorm into the convolutions and pre-packs their weights for
            # oneDNN: most of what compiling can win for a CNN on CPU.
            inductor_config.freezing = True
            self.model.audio_encoder = torch.compile(self.model.audio_encoder, dynamic=False)
        self.batch_size = args.batch_size
        self.waveforms = torch.from_numpy(_waveforms(args.model_clips, self.model.config))
        self.embeddings = None

    def _encode(self, waveforms):
        return self.model.encode_audio(waveforms, self.batch_size, self.variant.precision)

    def warmup(self) -> None:
        # One call per batch shape: the first call of a shape plans oneDNN kernels (or compiles).
        self._encode(self.waveforms[: self.batch_size])
        if rest := len(self.waveforms) % self.batch_size:
            self._encode(self.waveforms[:rest])

    def run(self) -> dict:
        t = time.perf_counter()
        self.embeddings = self._encode(self.waveforms)  # (clips, joint_dim)
        return {"seconds": time.perf_counter() - t, "clips": len(self.waveforms)}

    def finish(self) -> dict:
        import numpy as np

        path = self.workdir / f"{self.name}.npy"
        np.save(path, self.embeddings.numpy())
        config = self.model.config
        info = {
            "clips": len(self.waveforms),
            "encoder": config.encoder.name,
            "widths": list(config.encoder.widths),
            "params": self.params,
            "precision": self.variant.precision,
            "channels_last": self.variant.precision == "bf16",
            "compiled": self.variant.compiled,
            "random_weights": True,
        }
        return {"embeddings": str(path), "info": info}


def _waveforms(n: int, config):
    """`n` seeded 10 s clips, (n, samples) float32: tones of many pitches in varied noise."""
    import numpy as np

    from earshot.testing.audio import tone

    rate = config.audio.sample_rate
    clips = [
        tone(CLIP_S, rate, freq=110.0 * (1 + i % 12), seed=i, noise=0.01 + 0.05 * (i % 5))[:, 0]
        for i in range(n)
    ]
    return np.stack(clips).astype(np.float32)


def _torch_env() -> dict:
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


def _machine_busy_s() -> float:
    """CPU seconds all processes have used since boot (0 where /proc/stat is missing)."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    except OSError:
        return 0.0
    ticks = [int(f) for f in fields]
    idle = ticks[3] + ticks[4]  # idle + iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # guest time is inside user


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    sys.exit(main())

"""CPU speed of a CLAP model at its real size beside earshot's own models, in one run.

Prints one JSON object on stdout (progress on stderr). Run it with
`HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_clap.py [--quick] [--threads N] [--out FILE]`.

Models, each in its own worker process (harness.py: rotating rounds, so every model sees the
same drift in machine load; ratios are medians of per-round ratios):

- `clap_htsat_unfused`: transformers' `ClapModel` with laion/clap-htsat-unfused's architecture
  (HTSAT-tiny audio tower, RoBERTa-base text tower, 512-d projections), random weights (speed
  does not depend on training), run through earshot's `ClapJointModel`: the torch log-mel and
  the audio tower, fp32;
- `general`: earshot's general model (EfficientAT mn04, frozen, + heads; its fast path), where
  its backbone file resolves here (else reported as skipped, with the reason);
- `compact`: the packaged compact model (slim CNN10, 4 s windows, hop 2 s).

Figures per model: `windows_per_s` (its own windows), `clips_per_s` (10 s clips: one window
for CLAP and general, the four 4 s windows earshot cuts from a 10 s clip for compact),
`realtime_x` on a long file (windows/s x the model's hop: seconds of audio per second),
`text_query_ms` (one sentence through the model's text side: CLAP's RoBERTa, MiniLM for
ours), parameters and peak RSS. `ratios`: each model's clips/s over CLAP's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import cps, cpu_info, git_revision, paired, peak_rss_mb, run_rounds, serve, stats

MODELS = ("clap_htsat_unfused", "general", "compact")
DEFAULTS = {"batches": 3, "batch_size": 4, "rounds": 5}
QUICK_DEFAULTS = {"batches": 1, "batch_size": 1, "rounds": 1}
TEXT_QUERIES = 5


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    if args.only:
        return serve(args.only, lambda: _setup(args))
    result = run_benchmark(args)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--models", default=",".join(MODELS), help="comma-separated, of " + ", ".join(MODELS)
    )
    p.add_argument("--threads", type=int, default=1, help="torch threads per model (default 1)")
    p.add_argument("--batches", type=int, help=f"batches per round (default {DEFAULTS['batches']})")
    p.add_argument("--batch-size", type=int, help=f"windows per batch ({DEFAULTS['batch_size']})")
    p.add_argument("--rounds", type=int, help=f"timed rounds (default {DEFAULTS['rounds']})")
    p.add_argument("--quick", action="store_true", help="one round of one window (smoke test)")
    p.add_argument("--out", help="also write the JSON here")
    p.add_argument("--only", choices=MODELS, help=argparse.SUPPRESS)  # a worker
    args = p.parse_args(argv)
    for key, value in (QUICK_DEFAULTS if args.quick else DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = sorted(set(args.models) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s): {', '.join(unknown)}")
    return args


def run_benchmark(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    load = os.getloadavg()
    names = list(args.models)
    done = run_rounds(names, lambda name: _worker_argv(args, name), args.rounds)
    models = {}
    for name in names:
        if name in done.errors:
            models[name] = {"skipped": done.errors[name]}
            continue
        runs, info = done.runs[name], done.final[name]
        windows = [cps(r) for r in runs]
        per_clip = info["windows_per_clip"]
        models[name] = {
            "windows_per_s": stats(windows, 3),
            "clips_per_s": stats([w / per_clip for w in windows], 3),
            "realtime_x": stats([w * info["hop_s"] for w in windows], 1),
            "text_query_ms": info["text_query_ms"],
            "parameters_m": info["parameters_m"],
            "window": {"window_s": info["window_s"], "hop_s": info["hop_s"]},
            "windows_per_clip": per_clip,
            "setup_s": done.ready[name].get("setup_s"),
            "peak_rss_mb": info["peak_rss_mb"],
            "others_cpu_share": round(
                sum(r["others_cpu_s"] for r in runs) / max(1e-9, sum(r["seconds"] for r in runs)), 2
            ),
        }
    ratios = {}
    base = "clap_htsat_unfused"
    for name in names:
        if name == base or not done.runs.get(name) or not done.runs.get(base):
            continue
        a, b = models[name]["windows_per_clip"], models[base]["windows_per_clip"]
        ratios[f"{name}/{base} clips_per_s"] = stats(
            [r * b / a for r in paired(done.runs[name], done.runs[base])], 2
        )
    return {
        "benchmark": "earshot bench/bench_clap.py: CLAP (real HTSAT-unfused size, random weights) "
        "beside earshot's models on CPU, clips/s of 10 s windows",
        "env": {
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "python": platform.python_version(),
            "cpu": cpu_info().get("model name"),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "batch_size": args.batch_size,
            "batches_per_round": args.batches,
            "rounds": args.rounds,
            "loadavg_start": [round(x, 2) for x in load],
            "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            "git": git_revision(),
            "quick": args.quick,
        },
        "models": models,
        "ratios": ratios,
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _worker_argv(args: argparse.Namespace, name: str) -> list[str]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--only", name]
    argv += ["--threads", str(args.threads), "--batches", str(args.batches)]
    argv += ["--batch-size", str(args.batch_size), "--rounds", str(args.rounds)]
    return argv + (["--quick"] if args.quick else [])


# -- workers ----------------------------------------------------------------------------------


class ModelWorker:
    """Times `encode_audio` on batches of noise windows of the model's own length."""

    def __init__(self, model, args: argparse.Namespace):
        import numpy as np

        self.model = model
        self.args = args
        audio = model.config.audio
        rng = np.random.default_rng(0)
        n = args.batch_size
        self.batch = (0.1 * rng.standard_normal((n, audio.window_samples))).astype(np.float32)

    def warmup(self) -> None:
        self.model.encode_audio(self.batch, batch_size=self.args.batch_size)

    def run(self) -> dict:
        t = time.perf_counter()
        for _ in range(self.args.batches):
            self.model.encode_audio(self.batch, batch_size=self.args.batch_size)
        return {"seconds": time.perf_counter() - t, "clips": self.args.batches * len(self.batch)}

    def finish(self) -> dict:
        from earshot.audio.windows import windows

        audio = self.model.config.audio
        import numpy as np

        ten_s = [np.zeros(round(10.0 * audio.sample_rate), np.float32)]
        per_clip = len(list(windows(ten_s, audio.sample_rate, audio.window_s, audio.hop_s)))
        self.model.encode_text(["warm up"])
        times = []
        for i in range(TEXT_QUERIES):
            t = time.perf_counter()
            self.model.encode_text([f"a dog barks {i} times in the distance"])
            times.append(1000 * (time.perf_counter() - t))
        return {
            "windows_per_clip": per_clip,
            "window_s": audio.window_s,
            "hop_s": audio.hop_s,
            "text_query_ms": round(statistics.median(times), 1),
            "parameters_m": round(sum(p.numel() for p in self.model.parameters()) / 1e6, 1),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }


def _setup(args: argparse.Namespace):
    import torch

    torch.set_num_threads(args.threads)
    if args.only == "clap_htsat_unfused":
        model = _scaled_clap()
    else:
        from earshot.model.io import load_model

        if args.only == "general":
            from earshot.model.io import GENERAL_DIR, read_config
            from earshot.model.pretrained import backbone_problem

            problem = backbone_problem(read_config(GENERAL_DIR))
            if problem:
                raise RuntimeError(problem)
        model = load_model(args.only)
    return ModelWorker(model, args), {"model": args.only, "threads": torch.get_num_threads()}


def _scaled_clap():
    """laion/clap-htsat-unfused's architecture with random weights, as earshot runs it."""
    import torch
    from transformers import ClapModel

    from earshot.config import AudioConfig, CheckpointConfig, EncoderConfig, ModelConfig, TextConfig
    from earshot.encoders.clap import ClapJointModel
    from earshot.testing.clap import scaled_clap_config, tiny_tokenizer

    config = scaled_clap_config()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        clap = ClapModel(config).eval()
    name = "random weights, laion/clap-htsat-unfused's architecture"
    audio = AudioConfig(48000, 1024, 480, 64, 50.0, 14000.0, 10.0, 5.0, frontend="clap")
    earshot_config = ModelConfig(
        audio=audio,
        encoder=EncoderConfig("clap", (), config.audio_config.hidden_size),
        text=TextConfig(name, config.projection_dim),
        joint_dim=config.projection_dim,
        kind="clap",
        checkpoint=CheckpointConfig(name, files={}),
    )
    # the tiny tokenizer: text speed depends on the tower and the sentence's length in tokens
    return ClapJointModel(earshot_config, clap, tiny_tokenizer())


if __name__ == "__main__":
    sys.exit(main())

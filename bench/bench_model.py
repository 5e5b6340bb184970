"""Clips per second for 10 s clips on this CPU: decoding + log-mel, CNN14 and CNN10, fp32 and bf16.

Prints one JSON object on stdout; progress goes to stderr. Run it with `make bench`, or
`HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_model.py [--quick] [--out FILE]`.

Each variant runs in its own worker process (this script with `--only VARIANT`), so each has
its own peak RSS and none inherits another's allocator or thread pools. The workers start
together, then wait; the parent warms them up one at a time and then runs rounds, one variant
at a time, rotating the order every round (A,B,C / B,C,A / ...). Every variant thus sees the
same drift in machine load, and a speedup is the median of per-round ratios of neighbours in
time, not a ratio of figures taken minutes apart.

This file is the command line and the report; harness.py runs the workers and rounds, and
model_workers.py holds what each variant times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from harness import (
    cps,
    cpu_info,
    git_revision,
    paired,
    peak_rss_mb,
    run_rounds,
    serve,
    stats,
)
from model_workers import CLIP_S, FRONTEND_VARIANTS, MODEL_VARIANTS, VARIANTS, setup

FRONTEND_TARGET = 100.0  # clips/s of decode + resample + log-mel
FAST_TARGET = {"speedup": 1.8, "cosine": 0.999}  # bf16 CNN14 against fp32, same run

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
        return serve(args.only, lambda: setup(args))
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


def run_benchmark(args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    load_start = os.getloadavg()
    names = list(args.variants)
    with tempfile.TemporaryDirectory(prefix="earshot-bench-") as workdir:
        done = run_rounds(names, lambda name: _worker_argv(args, name, workdir), args.rounds)
        runs, final = done.runs, done.final
        variants = {
            name: {"error": done.errors[name]}
            if name in done.errors
            else _summarise(
                name, done.ready[name], done.warm.get(name, {}), runs[name], final[name]
            )
            for name in names
        }
        _compare(variants, runs, final)  # reads the embeddings the workers left in workdir
    ratios = {
        f"{a}/{b}": stats(paired(runs[a], runs[b]), 3)
        for a, b in CROSS_RATIOS
        if runs.get(a) and runs.get(b)
    }
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    torch_env = next((r["env"] for r in done.ready.values() if "env" in r), {})
    return {
        "benchmark": "earshot bench/bench_model.py: clips/s for 10 s clips",
        "env": _environment(args, torch_env, load_start),
        "variants": variants,
        "ratios": ratios,
        "peak_rss_mb": {
            "overall": round(max(children, peak_rss_mb()), 1),
            "largest_worker": round(children, 1),
            "parent": round(peak_rss_mb(), 1),
        },
        "wall_s": round(time.perf_counter() - started, 1),
    }


def _worker_argv(args: argparse.Namespace, name: str, workdir: str) -> list[str]:
    # This very script, so that harness.py and model_workers.py import from its folder.
    argv = [sys.executable, str(Path(__file__).resolve()), "--only", name, "--workdir", workdir]
    for key in ("clips", "model_clips", "batch_size", "threads"):
        argv += [f"--{key.replace('_', '-')}", str(getattr(args, key))]
    return argv + (["--quick"] if args.quick else [])


def _summarise(name: str, ready: dict, warm: dict, runs: list[dict], final: dict) -> dict:
    out = {**final.get("info", {}), "clips_per_s": stats([cps(r) for r in runs], 3)}
    out["per_round"] = [round(cps(r), 3) for r in runs]
    # CPU seconds per second while timed, of this variant and of every other process: a
    # variant that had the cores to itself shows about --threads and 0.
    out["cpu_per_wall"] = stats([r["cpu_s"] / r["seconds"] for r in runs], 2)
    out["others_cpu_per_wall"] = stats([r["others_cpu_s"] / r["seconds"] for r in runs], 2)
    if name in FRONTEND_VARIANTS:
        out["formats"] = {
            fmt: {
                "clips": runs[0]["formats"][fmt]["clips"],
                "clips_per_s": stats([cps(r["formats"][fmt]) for r in runs], 3),
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
        entry["speedup_vs_fp32"] = {"baseline": base, **stats(paired(runs[name], runs[base]), 3)}
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


def _environment(args: argparse.Namespace, torch_env: dict, load_start) -> dict:
    cpu = cpu_info()
    flags = set(cpu.get("flags", "").split())
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu.get("model name", platform.processor() or "unknown"),
        "cpu_count": os.cpu_count(),
        "cpu_bf16": {f: f in flags for f in ("avx512_bf16", "amx_bf16")},
        **torch_env,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "git": git_revision(),
        "quick": args.quick,
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "clip_s": CLIP_S,
        "clips_per_variant": {"frontend": args.clips, "models": args.model_clips},
        "load_avg_1m": {"start": round(load_start[0], 2), "end": round(os.getloadavg()[0], 2)},
    }


if __name__ == "__main__":
    sys.exit(main())

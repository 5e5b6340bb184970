"""Training throughput and evaluation time, printed as one JSON object.

- `train`: optimisation steps per second of the audio side (log-mel → CNN → head, triplet loss,
  backward, AdamW) on random 10 s log-mel batches, for the tiny test CNN, the slim CNN10 of
  `configs/urbansound-small.toml` and PANNs' CNN10, in fp32 and bf16 autocast, round-robin so
  the ratios compare like with like. Data loading is excluded: the feature cache serves it.
- `evaluate`: the time to score 5,000 captions against 1,000 clips (3 windows each: best
  window per clip), and compute R@1/5/10 + mAP@10 with bootstrap CIs in both directions; and
  the time to embed 5,000 real Clotho captions with the default text encoder when
  ../shared/data is there.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"

MODELS = {
    "tiny": ("cnn10", (4, 8, 8, 16), 16),
    "cnn10_slim": ("cnn10", (16, 32, 64, 128), 128),
    "cnn10": ("cnn10", (64, 128, 256, 512), 512),
}


def make_step(name: str, precision: str, batch: int, frames: int):
    from earshot.config import EncoderConfig, ModelConfig
    from earshot.model.io import build_model
    from earshot.train.losses import triplet_loss

    encoder, widths, embed = MODELS[name]
    model = build_model(ModelConfig(encoder=EncoderConfig(encoder, widths, embed))).train()
    params = [
        *model.audio_encoder.parameters(),
        *model.audio_head.parameters(),
        *model.text_head.parameters(),
    ]
    opt = torch.optim.AdamW(params, lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    logmel = torch.randn(batch, 1, frames, 64, generator=gen) * 10 - 40
    text = torch.randn(batch, model.config.text.dim, generator=gen)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            features = model.audio_encoder(logmel)
        audio = torch.nn.functional.normalize(model.audio_head(features.float()), dim=-1)
        loss = triplet_loss(audio, model.project_text(text))
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def bench_train(rounds: int, steps: int, batch: int, quick: bool) -> dict:
    names = ["tiny"] if quick else list(MODELS)
    variants = {f"{n}_{p}": make_step(n, p, batch, 1001) for n in names for p in ("fp32", "bf16")}
    for step in variants.values():  # warm-up: first calls allocate and pick kernels
        step()
    per_round: dict[str, list[float]] = {k: [] for k in variants}
    for r in range(rounds):
        order = list(variants)[r % len(variants) :] + list(variants)[: r % len(variants)]
        for key in order:
            start = time.perf_counter()
            for _ in range(steps):
                variants[key]()
            per_round[key].append(steps * batch / (time.perf_counter() - start))
    out = {
        k: {
            "clips_per_s": round(statistics.median(v), 2),
            "min": round(min(v), 2),
            "max": round(max(v), 2),
        }
        for k, v in per_round.items()
    }
    for n in names:
        ratios = [
            b / f for f, b in zip(per_round[f"{n}_fp32"], per_round[f"{n}_bf16"], strict=True)
        ]
        out[f"{n}_bf16"]["speedup_vs_fp32"] = round(statistics.median(ratios), 2)
    return out


def bench_evaluate(n_captions: int, n_clips: int, windows_per_clip: int, quick: bool) -> dict:
    from earshot.eval.evaluate import clip_scores
    from earshot.eval.metrics import retrieval_report

    rng = np.random.default_rng(0)
    dim = 300

    def unit(n: int) -> np.ndarray:
        x = rng.standard_normal((n, dim)).astype(np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    text, windows = unit(n_captions), unit(n_clips * windows_per_clip)
    window_clip = np.repeat(np.arange(n_clips), windows_per_clip)
    caption_clip = np.arange(n_captions) % n_clips
    start = time.perf_counter()
    scores = clip_scores(text, windows, window_clip, n_clips)
    scored = time.perf_counter()
    t2a = retrieval_report(scores, targets=caption_clip)
    relevance = np.zeros((n_clips, n_captions), dtype=bool)
    relevance[caption_clip, np.arange(n_captions)] = True
    a2t = retrieval_report(scores.T, relevance=relevance)
    done = time.perf_counter()
    result = {
        "captions": n_captions,
        "clips": n_clips,
        "windows_per_clip": windows_per_clip,
        "score_s": round(scored - start, 3),
        "metrics_both_directions_s": round(done - scored, 3),
        "total_s": round(done - start, 3),
        "random_vectors_R@10": round(t2a["R@10"]["value"], 4),
        "a2t_R@10": round(a2t["R@10"]["value"], 4),
    }
    captions_csv = SHARED / "clotho-captions" / "development.csv"
    if captions_csv.is_file() and not quick:
        import csv

        from earshot.encoders.text import load_text_encoder

        with open(captions_csv, newline="") as f:
            captions = [row["raw_text"] for row in csv.DictReader(f)][:n_captions]
        encoder = load_text_encoder()
        encoder.encode(captions[:64])
        start = time.perf_counter()
        encoder.encode(captions, batch_size=128)
        seconds = time.perf_counter() - start
        result["text_encoder"] = {
            "model": "all-MiniLM-L6-v2",
            "captions": len(captions),
            "seconds": round(seconds, 2),
            "captions_per_s": round(len(captions) / seconds, 1),
        }
    else:
        result["text_encoder"] = f"skipped ({captions_csv} not found or --quick)"
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="tiny model and sizes: a smoke test")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3, help="optimisation steps per round")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.steps, args.batch_size = 2, 1, 4
    result = {
        "benchmark": "earshot bench/bench_train.py",
        "env": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
            "batch_size": args.batch_size,
            "rounds": args.rounds,
            "steps_per_round": args.steps,
            "window_s": 10.0,
        },
        "train": bench_train(args.rounds, args.steps, args.batch_size, args.quick),
        "evaluate": bench_evaluate(
            500 if args.quick else 5000, 100 if args.quick else 1000, 3, args.quick
        ),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()

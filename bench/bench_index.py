"""Indexing throughput end to end, where its time goes, and re-indexing an unchanged tree.

Prints one JSON object:
- `index`: `earshot index` (the Indexer) over N synthetic 10 s clips (44.1 kHz stereo WAV and
  22.05 kHz mono Ogg, like real collections), for each model size: files/s, audio hours per
  hour; and the same clips timed stage by stage in this process — decode + resample, log-mel,
  CNN + head, catalogue writes — as shares of their sum.
- `reindex`: a tree of 10,000 small files already in the catalogue, re-indexed unchanged:
  seconds for scan + diff (target ≤ 10 s).
Models have random weights: speed does not depend on training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

MODELS = {
    "cnn14": ("cnn14", None, None),
    "cnn10": ("cnn10", None, None),
    "cnn10_slim": ("cnn10", (16, 32, 64, 128), 128),
    "default": None,  # the packaged default model (slim CNN10, 4 s windows, 2 s hop)
}


def build(name: str):
    from earshot.config import EncoderConfig, ModelConfig
    from earshot.encoders.audio import STANDARD_ENCODERS
    from earshot.model.io import build_model, load_model

    if name == "default":
        return load_model("default", with_text=False)
    arch, widths, embed = MODELS[name]
    enc = STANDARD_ENCODERS[arch] if widths is None else EncoderConfig(arch, widths, embed)
    return build_model(ModelConfig(encoder=enc))


def write_clips(folder: Path, n: int) -> list[Path]:
    from earshot.testing.audio import write_tone

    folder.mkdir(parents=True)
    paths = []
    for i in range(n):
        if i % 2:
            paths.append(write_tone(folder / f"clip{i:04d}.ogg", 10.0, 22050, freq=200 + i, seed=i))
        else:
            paths.append(
                write_tone(
                    folder / f"clip{i:04d}.wav", 10.0, 44100, channels=2, freq=200 + i, seed=i
                )
            )
    return paths


def stages(model, paths: list[Path], precision: str, batch: int) -> dict:
    """Each stage timed alone over the same files, in this process."""
    from earshot.index.build import ScanEntry, decode_entry
    from earshot.index.store import Catalogue

    audio = model.config.audio
    t = time.perf_counter()
    decoded = []
    for p in paths:
        st = p.stat()
        decoded.append(decode_entry(ScanEntry(str(p), st.st_size, st.st_mtime_ns), audio))
    decode_s = time.perf_counter() - t
    waves = torch.from_numpy(np.concatenate([d.windows for d in decoded]))
    t = time.perf_counter()
    with torch.no_grad():
        mels = [model.frontend(waves[i : i + batch]) for i in range(0, len(waves), batch)]
    frontend_s = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        vectors = torch.cat([model.embed_logmel(m, precision) for m in mels]).numpy()
    encoder_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp, Catalogue(Path(tmp) / "c.sqlite") as cat:
        cat.bind_model("bench", vectors.shape[1], {})
        t = time.perf_counter()
        at = 0
        with cat.batch():
            for d in decoded:
                n = len(d.windows)
                cat.put_file(
                    d.record,
                    [(s, e, v) for (s, e), v in zip(d.spans, vectors[at : at + n], strict=True)],
                )
                at += n
        store_s = time.perf_counter() - t
    total = decode_s + frontend_s + encoder_s + store_s
    return {
        "seconds": {
            "decode": round(decode_s, 3),
            "frontend": round(frontend_s, 3),
            "encoder": round(encoder_s, 3),
            "store": round(store_s, 3),
        },
        "share": {
            "decode": round(decode_s / total, 3),
            "frontend": round(frontend_s / total, 3),
            "encoder": round(encoder_s / total, 3),
            "store": round(store_s / total, 3),
        },
    }


def bench_index(n: int, names: list[str], precision: str, workers: int) -> dict:
    from earshot.index.build import Indexer
    from earshot.index.store import Catalogue

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_clips(Path(tmp) / "clips", n)
        for name in names:
            model = build(name)
            model.encode_audio(torch.zeros(2, model.config.audio.window_samples))  # warm-up
            with Catalogue(Path(tmp) / f"{name}.sqlite") as cat:
                t = time.perf_counter()
                s = Indexer(cat, model, workers=workers, precision=precision, progress=False).run(
                    [str(Path(tmp) / "clips")]
                )
                seconds = time.perf_counter() - t
            out[name] = {
                "files": s.added,
                "seconds": round(seconds, 2),
                "files_per_s": round(s.added / seconds, 2),
                "audio_hours_per_hour": round(s.audio_s / seconds, 1),
                "stages": stages(model, paths[: min(len(paths), 16)], precision, 8),
            }
            print(f"{name}: {out[name]['files_per_s']} files/s", file=sys.stderr)
    return out


def bench_reindex(n_files: int) -> dict:
    from earshot.index.build import Indexer, ScanEntry, _record
    from earshot.index.store import Catalogue
    from earshot.model.io import model_id
    from earshot.testing.audio import write_tone
    from earshot.testing.models import tiny_model

    model = tiny_model()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        template = write_tone(Path(tmp) / "t.wav", 0.05, 8000)
        data = template.read_bytes()
        paths = []
        for i in range(n_files):
            folder = root / f"d{i // 100:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            p = folder / f"f{i:05d}.wav"
            p.write_bytes(data)
            paths.append(p)
        vector = np.ones(model.config.joint_dim, dtype=np.float32)
        vector /= np.linalg.norm(vector)
        with Catalogue(Path(tmp) / "c.sqlite") as cat:
            cat.bind_model(model_id(model), model.config.joint_dim, {})
            # Fill the catalogue directly: embedding 10,000 files is not what is measured.
            for start in range(0, n_files, 1000):
                with cat.batch():
                    for p in paths[start : start + 1000]:
                        st = p.stat()
                        record = _record(
                            ScanEntry(str(p), st.st_size, st.st_mtime_ns), f"h{p.name}"
                        )
                        cat.put_file(record, [(0.0, 0.05, vector)])
            t = time.perf_counter()
            s = Indexer(cat, model, workers=1, progress=False).run([str(root)])
            seconds = time.perf_counter() - t
    return {
        "files": n_files,
        "unchanged": s.unchanged,
        "added": s.added,
        "seconds": round(seconds, 2),
        "target_s": 10.0,
        "meets_target": seconds <= 10.0,
    }


def bench_search_path(n_segments: int, queries: int) -> dict:
    """`Searcher.search_vector` in-process over a catalogue of `n_segments` windows: the ANN plus
    the SQLite look-ups and best-window-per-file grouping that bench_search.py leaves out."""
    from earshot.index.build import ScanEntry, _record
    from earshot.index.store import Catalogue
    from earshot.model.io import model_id
    from earshot.search import Filters, Searcher
    from earshot.testing.audio import write_tone
    from earshot.testing.models import tiny_model
    from earshot.testing.vectors import clustered_unit_vectors, put_synthetic_files

    model = tiny_model(joint_dim=300)
    per_file = 10  # windows per file: a 55 s recording at 10 s / 5 s hop
    with tempfile.TemporaryDirectory() as tmp:
        template = write_tone(Path(tmp) / "t.wav", 0.05, 8000)
        st = template.stat()
        record = _record(ScanEntry(str(template), st.st_size, st.st_mtime_ns), "h")
        vectors = clustered_unit_vectors(n_segments, seed=0).astype(np.float32)
        with Catalogue(Path(tmp) / "c.sqlite") as cat:
            cat.bind_model(model_id(model), 300, {})
            t = time.perf_counter()
            put_synthetic_files(
                cat, record, vectors, per_file, lambda n: f"/{'a' if n % 10 else 'b'}/f{n}.wav"
            )
            fill_s = time.perf_counter() - t
            searcher = Searcher(cat, model)
            searcher.search_vector(vectors[0], 10)  # builds and saves the ANN file
            rng = np.random.default_rng(1)
            qs = vectors[rng.integers(0, n_segments, queries)]
            qs = qs + 0.05 * rng.standard_normal(qs.shape).astype(np.float32)
            qs /= np.linalg.norm(qs, axis=1, keepdims=True)

            def timed(filters=None) -> dict:
                ms = []
                for q in qs:
                    t0 = time.perf_counter()
                    searcher.search_vector(q, 10, filters)
                    ms.append((time.perf_counter() - t0) * 1000)
                return {
                    "p50_ms": round(float(np.percentile(ms, 50)), 3),
                    "p99_ms": round(float(np.percentile(ms, 99)), 3),
                }

            return {
                "segments": n_segments,
                "files": n_segments // per_file,
                "catalogue_fill_s": round(fill_s, 1),
                "queries": queries,
                "search_vector": timed(),
                "search_vector_folder_filter_10pct": timed(Filters(folder="/b")),
            }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument("--models", default="cnn14,cnn10,cnn10_slim")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="bf16")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--tree", type=int, default=10_000, help="files in the re-index tree")
    ap.add_argument("--search-segments", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--parts", default="index,reindex,search", help="which of index,reindex,search to run"
    )
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    torch.set_num_threads(2)
    if args.quick:
        args.clips, args.models, args.tree, args.search_segments = 4, "cnn10_slim", 200, 2000
    result = {
        "benchmark": "earshot bench/bench_index.py",
        "env": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "precision": args.precision,
            "workers": args.workers,
            "clips": args.clips,
            "clip_s": 10.0,
        },
    }
    if "index" in parts:
        models = args.models.split(",")
        result["index"] = bench_index(args.clips, models, args.precision, args.workers)
    if "reindex" in parts:
        result["reindex"] = bench_reindex(args.tree)
    if "search" in parts:
        result["search"] = bench_search_path(args.search_segments, 50 if args.quick else 300)
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()

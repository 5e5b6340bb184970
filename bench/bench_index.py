"""Indexing throughput end to end, where its time goes, and re-indexing an unchanged tree.

Prints one JSON object:
- `index`: `earshot index` (the Indexer) over N synthetic 10 s clips (44.1 kHz stereo WAV and
  22.05 kHz mono Ogg, like real collections), for each model: files/s, audio hours per hour;
  and the same clips timed stage by stage in this process — decode + resample, log-mel,
  network + head (+ tag probabilities), catalogue writes (+ tags) — as shares of their sum.
  `--rounds R` indexes R times per model, rotating the order each round: files/s is the median
  and `ratios` the median of per-round ratios (each model to the first one listed, and
  `general/general_plain`), so a busy machine hits every model alike.
- `reindex`: a tree of 10,000 small files already in the catalogue, re-indexed unchanged:
  seconds for scan + diff (target ≤ 10 s).
- `search`: `Searcher.search_vector` in-process over a synthetic catalogue.

Models: `cnn14`, `cnn10`, `cnn10_slim` (random weights: speed does not depend on training);
`compact` (the packaged compact model: slim CNN10, 4 s windows, 2 s hop); `offline` (the
packaged student of the general model: the compact CNN10 read through its pooled statistics,
10 s windows, 5 s hop); `default` (what
`--model default` picks); `general` (EfficientAT's AudioSet mn04, frozen, + a linear head to
300-d, 10 s windows, 5 s hop, AudioSet tags stored per window): the packaged
earshot/models/general where it exists, else `--model-dir DIR`, else a folder written here
around the real backbone with random heads (speed does not depend on the heads; the tags come
from the backbone alone); `general_plain`: the same model with its MobileNet run by the plain
eager module (`JointModel.fast_inference = False`), the "before" of the fast path. Without the
backbone file (/work/shared/weights, the cache, $EARSHOT_WEIGHTS_DIR) the general models are
reported as skipped, with the reason, and the rest still runs.
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

# torch is imported where it is used: the Indexer's decode workers are spawned, and a spawned
# worker re-imports this script, which would otherwise cost each of them a torch import
# (seconds on a busy machine) that `earshot index`'s workers do not pay.

MODELS = {
    "cnn14": ("cnn14", None, None),
    "cnn10": ("cnn10", None, None),
    "cnn10_slim": ("cnn10", (16, 32, 64, 128), 128),
    "default": None,  # what `--model default` picks (general where it is packaged, else compact)
    "compact": None,  # the packaged compact model (slim CNN10, 4 s windows, 2 s hop)
    "offline": None,  # the packaged offline student (the compact CNN10 + pooled statistics, 10 s)
    "general": None,  # EfficientAT mn04 + heads, 10 s windows, 5 s hop, tags per window
    "general_plain": None,  # the same, the MobileNet run by the plain eager module
}
GENERAL = ("general", "general_plain")


class Skipped(Exception):
    """A model this machine cannot run (its backbone is not here); the message says why."""


def general_folder(tmp: Path, model_dir: str | None) -> tuple[Path, str]:
    """The general model's folder and where it came from; raises Skipped without the backbone."""
    from earshot.model.io import GENERAL_DIR, build_model, read_config, save_model
    from earshot.model.pretrained import attach_backbone, backbone_problem, pretrained_config

    if model_dir:
        folder, origin = Path(model_dir), "--model-dir"
    elif (GENERAL_DIR / "config.json").is_file():
        folder, origin = GENERAL_DIR, "packaged"
    else:
        folder, origin = tmp / "general-model", "written here: the mn04 backbone, random heads"
    config = read_config(folder) if folder.is_dir() else pretrained_config("mn04", joint_dim=300)
    problem = backbone_problem(config)
    if problem is not None:
        raise Skipped(problem)
    if not folder.is_dir():
        # What `earshot init-model DIR --efficientat mn04 --joint-dim 300` writes, less its
        # teacher heads (they need the text model; speed does not depend on them).
        model = build_model(config)
        attach_backbone(model, progress=False)
        save_model(model, folder)
    return folder, origin


def build(name: str, tmp: Path | None = None, model_dir: str | None = None):
    from earshot.config import EncoderConfig, ModelConfig
    from earshot.encoders.audio import STANDARD_ENCODERS
    from earshot.model.io import build_model, load_model

    if name in ("default", "compact", "offline"):
        return load_model(name, with_text=False)
    if name in GENERAL:
        folder, origin = general_folder(tmp, model_dir)
        model = load_model(folder, with_text=False)
        model.fast_inference = name == "general"
        model.bench_origin = origin
        return model
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
    """Each stage timed alone over the same files, in this process, as the Indexer runs it:
    a tagging model's encoder stage includes its tag probabilities and its store stage the
    tags (`tags` says what storing them cost)."""
    import torch

    from earshot.index.decoding import decode_entry
    from earshot.index.scan import ScanEntry
    from earshot.index.store import Catalogue
    from earshot.index.tag_blobs import MAX_TAGS, TAG_FLOOR

    audio = model.config.audio
    tag_names = tuple(getattr(model, "tag_names", ()))
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
        out = [model._embed_logmel(m, precision) for m in mels]  # what encode_audio_tagged runs
        vectors = torch.cat([v for v, _ in out]).float().numpy()
        tags = (
            torch.cat([torch.sigmoid(lg.float()) for _, lg in out]).numpy() if tag_names else None
        )
    encoder_s = time.perf_counter() - t

    def store(with_tags: bool) -> tuple[float, dict]:
        with tempfile.TemporaryDirectory() as tmp, Catalogue(Path(tmp) / "c.sqlite") as cat:
            cat.bind_model("bench", vectors.shape[1], {}, tag_names=tag_names if with_tags else ())
            t = time.perf_counter()
            at = 0
            with cat.batch():
                for d in decoded:
                    n = len(d.windows)
                    segs = zip(d.spans, vectors[at : at + n], strict=True)
                    cat.put_file(
                        d.record,
                        [(s, e, v) for (s, e), v in segs],
                        tags[at : at + n] if with_tags else None,
                    )
                    at += n
            return time.perf_counter() - t, cat.stats()

    store_s, stats = store(tags is not None)
    seconds = {"decode": decode_s, "frontend": frontend_s, "encoder": encoder_s, "store": store_s}
    total = sum(seconds.values())
    result = {
        "files": len(paths),
        "windows": len(waves),
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
        "ms_per_file": {k: round(1000 * v / len(paths), 2) for k, v in seconds.items()},
        "share": {k: round(v / total, 3) for k, v in seconds.items()},
    }
    if tags is not None:
        result["tags"] = {
            "store_without_tags_s": round(store(False)[0], 3),
            "vocabulary": stats["tag_names"],
            "stored_per_window": round(
                float(np.minimum((tags >= TAG_FLOOR).sum(axis=1), MAX_TAGS).mean()), 2
            ),
        }
    return result


def _median(values: list[float]) -> float:
    return float(np.median(values))


def _cpu_s() -> float:
    """CPU seconds (user + system) of this process and of its finished workers."""
    import resource

    own, workers = (
        resource.getrusage(resource.RUSAGE_SELF),
        resource.getrusage(resource.RUSAGE_CHILDREN),
    )
    return own.ru_utime + own.ru_stime + workers.ru_utime + workers.ru_stime


def _precision(precision: str, model) -> str:
    """What `earshot index --precision` resolves to for this model (an older tree's
    resolve_precision, run by --compare, takes no model: then what it gives without one)."""
    from earshot.model.dual import resolve_precision

    try:
        return resolve_precision(precision, model)
    except TypeError:
        return resolve_precision(precision)


def bench_index(
    n: int,
    names: list[str],
    precision: str,
    workers: int,
    rounds: int = 1,
    model_dir: str | None = None,
) -> dict:
    import torch

    from earshot.index.build import Indexer
    from earshot.index.store import Catalogue

    out: dict = {}
    runs: dict[str, list[float]] = {}  # files/s of each round
    cpu_runs: dict[str, list[float]] = {}  # CPU seconds per file (this process + its workers)
    cpu_per_wall: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        paths = write_clips(Path(tmp) / "clips", n)
        models = {}
        for name in names:
            try:
                model = build(name, Path(tmp), model_dir)
            except Skipped as e:
                out[name] = {"skipped": str(e)}
                print(f"{name}: skipped: {e}", file=sys.stderr)
                continue
            t = time.perf_counter()
            model.encode_audio(torch.zeros(2, model.config.audio.window_samples))  # warm-up
            models[name] = (model, round(time.perf_counter() - t, 2), _precision(precision, model))
            runs[name], cpu_runs[name], cpu_per_wall[name] = [], [], []
        order = list(models)
        summaries = {}
        for r in range(rounds):
            for name in order[r % len(order) :] + order[: r % len(order)] if order else []:
                model, _, resolved = models[name]
                db = Path(tmp) / f"{name}.sqlite"
                with Catalogue(db) as cat:
                    cpu = _cpu_s()
                    t = time.perf_counter()
                    s = Indexer(
                        cat,
                        model,
                        workers=workers,
                        precision=resolved,
                        progress=False,
                    ).run([str(Path(tmp) / "clips")])
                    seconds = time.perf_counter() - t
                    cpu = _cpu_s() - cpu
                for leftover in Path(tmp).glob(f"{name}.sqlite*"):
                    leftover.unlink()
                runs[name].append(s.added / seconds)
                cpu_runs[name].append(cpu / s.added)
                cpu_per_wall[name].append(cpu / seconds)
                summaries[name] = (s, seconds)
                print(f"{name} (round {r + 1}): {s.added / seconds:.2f} files/s", file=sys.stderr)
        for name, (model, warmup_s, resolved) in models.items():
            s, seconds = summaries[name]
            fps = _median(runs[name])
            entry = {
                "files": s.added,
                "windows_per_file": round(s.segments / max(1, s.added), 2),
                "seconds": round(s.added / fps, 2),
                "files_per_s": round(fps, 2),
                "files_per_s_runs": [round(x, 2) for x in runs[name]],
                "audio_hours_per_hour": round(s.audio_s / s.added * fps, 1),
                # CPU time is less sensitive to a busy machine than wall time: 1 / cpu_s_per_file
                # is what one core of its own would give a run with no overlap (workers 1).
                "cpu_ms_per_file": round(1000 * _median(cpu_runs[name]), 1),
                "files_per_cpu_s": round(1 / _median(cpu_runs[name]), 2),
                "cpu_per_wall": round(_median(cpu_per_wall[name]), 2),
                "warmup_s": warmup_s,
                "precision": resolved,
                "stages": stages(model, paths[: min(len(paths), 16)], resolved, 8),
            }
            if name in GENERAL:
                from earshot.model import dual

                fast = dual._FAST_MN.get(model.audio_encoder)
                entry["origin"] = model.bench_origin
                entry["fast_path"] = bool(fast and fast[1] is not None)
            out[name] = entry
        ratios = {}
        pairs = [(a, order[0]) for a in order[1:]]
        if "general" in models and "general_plain" in models:
            pairs.append(("general", "general_plain"))
        for a, b in dict.fromkeys(pairs):
            per_round = [x / y for x, y in zip(runs[a], runs[b], strict=True)]
            ratios[f"{a}/{b}"] = {
                "median": round(_median(per_round), 3),
                "runs": [round(x, 3) for x in per_round],
            }
        if ratios:
            out["ratios"] = ratios
    return out


def bench_reindex(n_files: int) -> dict:
    from earshot.index.build import Indexer
    from earshot.index.decoding import read_record
    from earshot.index.scan import ScanEntry
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
                        record = read_record(
                            ScanEntry(str(p), st.st_size, st.st_mtime_ns), f"h{p.name}"
                        )
                        cat.put_file(record, [(0.0, 0.05, vector)])
            t = time.perf_counter()
            s = Indexer(cat, model, workers=0, progress=False).run([str(root)])
            seconds = time.perf_counter() - t
    return {
        "files": n_files,
        "unchanged": s.unchanged,
        "added": s.added,
        "seconds": round(seconds, 2),
        "target_s": 10.0,
        "meets_target": seconds <= 10.0,
    }


NAME_WORDS = (
    "door", "slam", "rain", "roof", "footstep", "gravel", "glass", "break", "dog", "bark", "wind",
    "car", "engine", "bird", "water", "metal", "hit", "crowd", "take",
)  # fmt: skip
DECISION_QUERIES = (
    "a door slams", "rain on a tin roof", "footsteps on gravel", "a dog barking",
    "wind through trees", "an engine idling", "glass breaking", "a crowd cheers",
)  # fmt: skip


def _name(n: int) -> str:
    w = NAME_WORDS
    return f"{w[n % len(w)]}_{w[(n // len(w)) % len(w)]}_{n:05d}.wav"


def bench_search_path(n_segments: int, queries: int) -> dict:
    """`Searcher.search_vector` in-process over a catalogue of `n_segments` windows: the ANN plus
    the SQLite look-ups and best-window-per-file grouping that bench_search.py leaves out."""
    from earshot.filters import Filters
    from earshot.index.decoding import read_record
    from earshot.index.scan import ScanEntry
    from earshot.index.store import Catalogue
    from earshot.model.io import model_id
    from earshot.search import Searcher
    from earshot.testing.audio import write_tone
    from earshot.testing.models import tiny_model
    from earshot.testing.vectors import clustered_unit_vectors, put_synthetic_files

    model = tiny_model(joint_dim=300)
    per_file = 10  # windows per file: a 55 s recording at 10 s / 5 s hop
    with tempfile.TemporaryDirectory() as tmp:
        template = write_tone(Path(tmp) / "t.wav", 0.05, 8000)
        st = template.stat()
        record = read_record(ScanEntry(str(template), st.st_size, st.st_mtime_ns), "h")
        vectors = clustered_unit_vectors(n_segments, seed=0).astype(np.float32)
        with Catalogue(Path(tmp) / "c.sqlite") as cat:
            cat.bind_model(model_id(model), 300, {})
            t = time.perf_counter()
            put_synthetic_files(  # names of words, as sound libraries have: hybrid_by_default
                cat, record, vectors, per_file, lambda n: f"/{'a' if n % 10 else 'b'}/{_name(n)}"
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

            decided = []  # the hybrid default's decision, each text new to the cache
            for i, text in enumerate(DECISION_QUERIES * 4):
                t0 = time.perf_counter()
                searcher.hybrid_by_default(f"{text} {i}")
                decided.append((time.perf_counter() - t0) * 1000)
            return {
                "segments": n_segments,
                "hybrid_default_decision": {
                    "p50_ms": round(float(np.percentile(decided, 50)), 3),
                    "p99_ms": round(float(np.percentile(decided, 99)), 3),
                },
                "files": n_segments // per_file,
                "catalogue_fill_s": round(fill_s, 1),
                "queries": queries,
                "search_vector": timed(),
                "search_vector_folder_filter_10pct": timed(Filters(folder="/b")),
            }


def compare_trees(args, variants: list[str]) -> dict:
    """Paired rounds of the indexing part in fresh processes: this tree as run (`this`) beside
    each `NAME:key=value,...` variant (keys: `src`, another checkout's src folder, e.g. a git
    worktree of an earlier commit; `threads`; `workers`), the order rotating every round.
    Reports each one's files/s per round and median, and this tree's per-round ratio to each."""
    import subprocess

    here = str(Path(__file__).resolve().parents[1] / "src")
    runs = {"this": {"src": here, "threads": str(args.threads), "workers": str(args.workers)}}
    for spec in variants:
        name, _, rest = spec.partition(":")
        conf = dict(runs["this"])
        for pair in filter(None, rest.split(",")):
            key, _, value = pair.partition("=")
            if key not in conf:
                raise SystemExit(
                    f"--compare {spec}: unknown key '{key}' (known: {', '.join(conf)})"
                )
            conf[key] = value
        runs[name] = conf
    fps: dict[str, list[float]] = {name: [] for name in runs}
    loads = []
    order = list(runs)
    for r in range(args.rounds):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            conf = runs[name]
            env = dict(os.environ, PYTHONPATH=conf["src"])
            cmd = [sys.executable, __file__, "--parts", "index", "--rounds", "1", "--models",
                   args.models, "--clips", str(args.clips), "--threads", conf["threads"],
                   "--workers", conf["workers"], "--precision", args.precision]  # fmt: skip
            loads.append(round(os.getloadavg()[0], 2))
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
            got = json.loads(out.stdout)["index"][args.models.split(",")[0]]["files_per_s"]
            fps[name].append(got)
            print(f"{name} (round {r + 1}): {got:.2f} files/s", file=sys.stderr)
    result = {
        "variants": {
            name: {
                **runs[name],
                "files_per_s": round(_median(fps[name]), 2),
                "files_per_s_runs": fps[name],
            }
            for name in runs
        },
        "load_avg_1m_at_each_run": loads,
        "ratios": {},
    }
    for name in order[1:]:
        per_round = [a / b for a, b in zip(fps["this"], fps[name], strict=True)]
        result["ratios"][f"this/{name}"] = {
            "median": round(_median(per_round), 3),
            "runs": [round(x, 3) for x in per_round],
        }
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clips", type=int, default=32)
    ap.add_argument(
        "--models",
        help=f"comma-separated, of {', '.join(MODELS)} (default cnn14,cnn10,cnn10_slim; "
        "--quick: cnn10_slim)",
    )
    ap.add_argument(
        "--model-dir", help="the general model's folder (default: packaged, else built)"
    )
    ap.add_argument(
        "--precision",
        choices=["auto", "fp32", "bf16"],
        default="auto",
        help="auto (as earshot index): bf16 where the CPU has it natively, else fp32",
    )
    ap.add_argument(
        "--workers",
        type=int,
        default=0,
        help="Indexer decode processes (default 0: in the indexer, as on 2 cores)",
    )
    ap.add_argument("--threads", type=int, default=2, help="torch threads")
    ap.add_argument("--rounds", type=int, default=1, help="index runs per model, rotating")
    ap.add_argument("--tree", type=int, default=10_000, help="files in the re-index tree")
    ap.add_argument("--search-segments", type=int, default=100_000)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument(
        "--compare",
        action="append",
        metavar="NAME:KEY=VALUE,...",
        help="time the indexing part in fresh processes beside this tree, in rotating rounds: "
        "e.g. 'before:src=/path/to/old/checkout/src' or 't1:threads=1' (repeatable)",
    )
    ap.add_argument(
        "--parts",
        help="which of index,reindex,search to run (default: all; with --compare: index)",
    )
    args = ap.parse_args()
    parts = set((args.parts or ("index" if args.compare else "index,reindex,search")).split(","))
    import torch

    torch.set_num_threads(args.threads)
    if args.quick:
        args.clips, args.tree, args.search_segments = 4, 200, 2000
    if args.models is None:
        args.models = "cnn10_slim" if args.quick else "cnn14,cnn10,cnn10_slim"
    unknown = [m for m in args.models.split(",") if m not in MODELS]
    if unknown:
        ap.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(MODELS)}")
    result = {
        "benchmark": "earshot bench/bench_index.py",
        "env": {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "cpus": os.cpu_count(),
            "load_avg_start": [round(x, 2) for x in os.getloadavg()],
            "precision": args.precision,
            "workers": args.workers,
            "clips": args.clips,
            "clip_s": 10.0,
            "rounds": args.rounds,
        },
    }
    if args.compare:
        result["compare"] = compare_trees(args, args.compare)
    elif "index" in parts:
        models = args.models.split(",")
        result["index"] = bench_index(
            args.clips,
            models,
            args.precision,
            args.workers,
            args.rounds,
            args.model_dir,
        )
    if "reindex" in parts:
        result["reindex"] = bench_reindex(args.tree)
    if "search" in parts:
        result["search"] = bench_search_path(args.search_segments, 50 if args.quick else 300)
    result["env"]["load_avg_end"] = [round(x, 2) for x in os.getloadavg()]
    json.dump(result, sys.stdout, indent=2)
    print()


if __name__ == "__main__":
    main()

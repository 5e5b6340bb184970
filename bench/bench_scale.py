"""earshot[ray] against one process: indexing the same files, and scatter-gather search.

Prints one JSON object:
- `index`: N synthetic 10 s clips (44.1 kHz WAV) indexed into shards twice: by one
  `ShardWriter` in this process (the single-machine path: same decode, windows, batches and
  shard writes, no Ray), and by `earshot.scale.indexer.index_to_shards` on a local cluster of
  `--nodes` Ray nodes with one CPU each (`earshot.testing.scale.RayCluster`: real
  `ray start` processes on loopback). Files/s, seconds per stage (fetch, decode, embed,
  write: summed over the actors), peak RSS per actor, and `ratios` (cluster / one process).
  The cluster's time includes joining it and starting its actors (each loads torch and the
  model): on a machine with 2 cores a cluster cannot be faster, and this shows what it costs.
- `search`: `--windows` random unit vectors in `--shards` shards, searched by
  `ShardSearcher` with 1 and `--nodes` actors on the cluster and with the indexes in this
  process (address None): median latency of `--queries` queries (k = 10), and ratios.

- `recall`: what the 10M-file plan (docs/scale.md) rests on, measured at a smaller scale on
  `earshot.testing.vectors.clustered_unit_vectors` (synthetic, with the spectrum of real
  caption embeddings): FAISS IVF with float16 codes (what `earshot.index.ann` builds past
  50,000 windows) and over 8-bit codes (`index.ann`'s "8bit" quantizer), recall@10 against
  exact search, bytes per window, ms per query (one thread). (IVF-PQ is not here: training
  its 5-dimensional sub-quantizers on one shared core took more than 5 minutes at 50,000
  windows.)

`--parts index,search,recall` picks parts; `--quick`: small sizes, for a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))


def write_clips(root: Path, n: int) -> list[Path]:
    from earshot.testing.audio import write_tone

    root.mkdir(parents=True, exist_ok=True)
    return [
        write_tone(root / f"clip{i:04d}.wav", 10.0, 44100, freq=200.0 + 37 * i, seed=i)
        for i in range(n)
    ]


def index_single(model, root: Path, out: Path, files_per_shard: int) -> dict:
    from earshot.model.io import model_id
    from earshot.scale import shards as sh
    from earshot.scale.indexer import ShardWriter
    from earshot.scale.storage import Location, list_recordings

    t0 = time.perf_counter()
    listed, _ = list_recordings([str(root)])
    writer = ShardWriter.around(model, str(out))
    loc = Location(out)
    manifest = sh.Manifest(model_id(model), model.config.joint_dim, {}, [], len(listed) + 1)
    stages = dict.fromkeys(("fetch", "decode", "embed", "write"), 0.0)
    for at in range(0, len(listed), files_per_shard):
        plan = [
            (at + i + 1, f.uri, f.version) for i, f in enumerate(listed[at : at + files_per_shard])
        ]
        report = writer.write_shard(sh.shard_name(plan), [list(p) for p in plan])
        manifest.shards[report["name"]] = {"files": len(plan)}
        for k, v in report["stages"].items():
            stages[k] += v
    sh.save_manifest(loc, manifest)
    seconds = time.perf_counter() - t0
    return {
        "files": len(listed),
        "seconds": round(seconds, 2),
        "files_per_s": round(len(listed) / seconds, 2),
        "stages_s": {k: round(v, 3) for k, v in stages.items()},
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }


def index_cluster(model, root: Path, out: str, address: str, files_per_shard: int) -> dict:
    from earshot.scale.indexer import index_to_shards

    t0 = time.perf_counter()
    s = index_to_shards([str(root)], out, model, address=address, files_per_shard=files_per_shard)
    seconds = time.perf_counter() - t0
    d = s.as_dict()
    return {
        "files": d["added"],
        "seconds": round(seconds, 2),
        "files_per_s": round(d["added"] / seconds, 2),
        "stages_s": d["stages_s"],
        "actors": d["actors"],
    }


def synthetic_shards(out: Path, windows: int, shards: int, dim: int, seed: int = 0) -> str:
    from earshot.scale import shards as sh
    from earshot.scale.storage import Location

    rng = np.random.default_rng(seed)
    loc = Location(out)
    per_file = 12
    files = windows // per_file
    manifest = sh.Manifest("bench", dim, {}, [], files + 1)
    fid = 1
    for s in range(shards):
        n_files = files // shards
        ids = list(range(fid, fid + n_files))
        fid += n_files
        v = rng.standard_normal((n_files * per_file, dim)).astype(np.float32)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        meta = [
            sh.ShardFile(i, f"/bench/f{i}.wav", "1:1", f"h{i}", 60.0, 32000, 1, "WAV") for i in ids
        ]
        rows = [
            (i, w, 5.0 * w, 5.0 * w + 10, v[j * per_file + w], None)
            for j, i in enumerate(ids)
            for w in range(per_file)
        ]
        name = f"shard-{s:04d}.parquet"
        loc.write_bytes(name, sh.encode_shard("bench", dim, meta, rows))
        manifest.shards[name] = {"files": n_files}
    sh.save_manifest(loc, manifest)
    return loc.uri


class _VectorModel:  # what ShardSearcher asks of a model when given vectors
    model_id = "bench"


def search_latency(uri: str, address, actors: int, queries: np.ndarray) -> dict:
    from earshot.scale.search import ShardSearcher

    t0 = time.perf_counter()
    searcher = ShardSearcher(uri, _VectorModel(), address=address, actors=actors)
    load_s = time.perf_counter() - t0
    searcher.search_vector(queries[0], 10)  # warm
    times = []
    for q in queries:
        t = time.perf_counter()
        searcher.search_vector(q, 10)
        times.append(time.perf_counter() - t)
    stats = searcher.stats()
    searcher.close()
    return {
        "actors": actors,
        "load_s": round(load_s, 2),
        "median_ms": round(1000 * statistics.median(times), 2),
        "p90_ms": round(1000 * float(np.percentile(times, 90)), 2),
        "peak_rss_mb_per_actor": [s["peak_rss_mb"] for s in stats],
    }


def recall(n: int, nq: int, nlist: int) -> dict:
    import faiss

    from earshot.testing.vectors import clustered_unit_vectors

    # One thread throughout: OpenMP's spinning threads crawl on a shared 2-core machine, and
    # a shard actor answers on one thread.
    faiss.omp_set_num_threads(1)
    xb = clustered_unit_vectors(n, seed=3).astype(np.float32)
    xq = clustered_unit_vectors(nq, seed=3, stream=1).astype(np.float32)
    exact = faiss.IndexFlatIP(xb.shape[1])
    exact.add(xb)
    _, truth = exact.search(xq, 10)
    out: dict = {"windows": n, "queries": nq, "nlist": nlist, "dim": xb.shape[1], "indexes": {}}
    train = xb[np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)]
    for name, factory, probes in (
        ("ivf_sqfp16", f"IVF{nlist},SQfp16", (8, 32, 64)),
        ("ivf_sq8", f"IVF{nlist},SQ8", (8, 32, 64)),
    ):
        index = faiss.index_factory(xb.shape[1], factory, faiss.METRIC_INNER_PRODUCT)
        t = time.perf_counter()
        index.train(train)
        index.add(xb)
        build_s = time.perf_counter() - t
        code = {"ivf_sqfp16": 2 * xb.shape[1], "ivf_sq8": xb.shape[1]}[name]
        rows = []
        print(f"recall: {name} built in {build_s:.1f} s", file=sys.stderr, flush=True)
        for nprobe in probes:
            faiss.extract_index_ivf(index).nprobe = nprobe
            t = time.perf_counter()
            _, got = index.search(xq, 10)
            ms = 1000 * (time.perf_counter() - t) / nq
            hit = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)])
            rows.append(
                {"nprobe": nprobe, "recall_at_10": round(float(hit), 3), "ms": round(ms, 2)}
            )
        out["indexes"][name] = {
            "code_bytes_per_window": code,
            "build_s": round(build_s, 1),
            "runs": rows,
        }
    t = time.perf_counter()
    exact.search(xq, 10)
    out["exact_ms"] = round(1000 * (time.perf_counter() - t) / nq, 2)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--files-per-shard", type=int, default=8)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--windows", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument("--recall-windows", type=int, default=100_000)
    ap.add_argument("--parts", default="index,search,recall")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if args.quick:
        args.files, args.files_per_shard, args.windows, args.shards, args.queries = 4, 2, 2400, 4, 5
        args.recall_windows = 5000
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from earshot.model.io import load_model, save_model
    from earshot.testing.models import tiny_model
    from earshot.testing.scale import RayCluster

    base = Path(tempfile.mkdtemp(prefix="earshot-bench-scale-"))
    model_dir = save_model(tiny_model("cnn14"), base / "model")
    model = load_model(model_dir, with_text=False)
    root = base / "clips"
    write_clips(root, args.files)
    result: dict = {"machine": {"cpus": os.cpu_count()}, "model": "tiny cnn14 (random)"}
    if "recall" in parts:
        nlist = 64 if args.quick else 4 * int(np.sqrt(args.recall_windows))
        result["recall"] = recall(args.recall_windows, 20 if args.quick else 500, nlist)
    if not parts & {"index", "search"}:
        print(json.dumps(result, indent=2))
        return 0
    with RayCluster(nodes=args.nodes, cpus=1, object_store_mb=80) as rc:
        os.environ.update(rc.env)  # before Ray is imported: it reads its token once
        single = index_single(model, root, base / "single", args.files_per_shard)
        t = time.perf_counter()
        cluster = index_cluster(
            model, root, str(base / "cluster"), rc.address, args.files_per_shard
        )
        cluster["wall_s_with_connect"] = round(time.perf_counter() - t, 2)
        result["index"] = {
            "files": args.files,
            "clip_s": 10.0,
            "single_process": single,
            f"cluster_{args.nodes}_nodes": cluster,
            "ratios": {
                "files_per_s_cluster_over_single": round(
                    cluster["files_per_s"] / single["files_per_s"], 3
                ),
                "embed_s_cluster_over_single": round(
                    cluster["stages_s"]["embed"] / max(single["stages_s"]["embed"], 1e-9), 3
                ),
            },
        }
        uri = synthetic_shards(base / "synthetic", args.windows, args.shards, 300)
        rng = np.random.default_rng(1)
        q = rng.standard_normal((args.queries, 300)).astype(np.float32)
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        local = search_latency(uri, None, 1, q)
        one = search_latency(uri, rc.address, 1, q)
        many = search_latency(uri, rc.address, args.nodes, q)
        result["search"] = {
            "windows": args.windows,
            "shards": args.shards,
            "in_process_1_index": local,
            "ray_1_actor": one,
            f"ray_{args.nodes}_actors": many,
            "ratios": {
                "ray_1_actor_over_in_process": round(one["median_ms"] / local["median_ms"], 2),
                f"ray_{args.nodes}_actors_over_1": round(many["median_ms"] / one["median_ms"], 2),
            },
        }
        import ray

        ray.shutdown()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

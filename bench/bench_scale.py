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

- `recall`: what the 10M-file plan (docs/scale.md) rests on, measured at `--recall-windows`
  (comma-separated sizes) on `earshot.testing.vectors.clustered_unit_vectors` (synthetic,
  with the spectrum of real caption embeddings), one thread, nlist = 4·√n cells shared by
  every index: IVF over float16 codes (what `earshot.index.ann` builds past 50,000 windows,
  zero-padded to 304-d as it pads), over 8-bit codes (ann's "8bit" quantizer), and IVF-PQ
  (300-d, m = 30/60/75 sub-quantizers of 8 bits, residuals) alone and with its top R·k
  re-ranked by the windows' float16 vectors (R = 4, 10): recall@10 against exact search at
  nprobe 8/32/64, code and file bytes per window, build seconds, ms per query (p50/p90, one
  query per call as a shard actor answers). `pq_training`: why IVF-PQ once seemed too slow
  to train (polysemous training on, and FAISS's BLAS threshold for small batches), each
  side by side on the same points.

- `recall_real` (not in the default parts): the same indexes (IVF-float16, 8-bit, PQ60/75 with
  re-ranking, nprobe 8/32) on every Clotho caption in ../shared embedded as
  `bench_search.py`'s calibration embeds them, beside as many synthetic vectors: whether the
  synthetic set flatters PQ. Skipped without the captions.

`--parts index,search,recall` picks parts; `--quick`: small sizes, for a smoke run.
"""

from __future__ import annotations

import argparse
import contextlib
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
    from earshot.scale.shard_writer import ShardWriter
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


# Re-ranking: the top R·k of a PQ search are scored again by the float16 vectors (in the plan,
# read from the shards on local disk; here an array in memory).
RERANK_FACTORS = (4, 10)
PQ_MS = (30, 60, 75)  # sub-quantizers of 10, 5 and 4 dimensions: 300 = 30·10 = 60·5 = 75·4


@contextlib.contextmanager
def _blas_threshold(n: int):
    """FAISS's `distance_compute_blas_threshold` for a while (see `pq_training`)."""
    import faiss

    before = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = n
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


def pq_training(xb: np.ndarray, m_kmeans: int, m_polysemous: int) -> dict:
    """Why IVF-PQ once "ran past 5 minutes at 50,000 windows": not threads, two settings.

    - `polysemous`: `index_factory`'s "PQ{m}x8" turns on polysemous training (re-ordering each
      sub-quantizer's 256 centroids by simulated annealing so that Hamming distances between
      codes mean something), seconds per sub-quantizer whatever n is. It serves only
      polysemous (Hamming-filtered) search, which earshot does not use: "PQ{m}x8np" skips it.
    - `kmeans_blas`: FAISS 1.15 scores a batch of fewer than `distance_compute_blas_threshold`
      (128,000) vectors without BLAS, and for 5-dimensional sub-vectors that direct path is
      several times slower than one sgemm; PQ training is m k-means of every training point.
    """
    import faiss

    n = len(xb)
    out: dict = {"points": n}
    poly = {"m": m_polysemous}
    for name, on in (("on", True), ("off", False)):
        index = faiss.index_factory(
            xb.shape[1], f"IVF16,PQ{m_polysemous}x8", faiss.METRIC_INNER_PRODUCT
        )
        index.do_polysemous_training = on
        t = time.perf_counter()
        with _blas_threshold(20):
            index.train(xb)
        poly[f"{name}_s"] = round(time.perf_counter() - t, 2)
    poly["ratio_on_over_off"] = round(poly["on_s"] / max(poly["off_s"], 1e-9), 1)
    out["polysemous"] = poly
    km = {"m": m_kmeans, "default_threshold": int(faiss.cvar.distance_compute_blas_threshold)}
    for name, threshold in (("default", None), ("blas_from_20", 20)):
        pq = faiss.ProductQuantizer(xb.shape[1], m_kmeans, 8)
        pq.cp.max_points_per_centroid = 10**6  # train on exactly n points
        ctx = contextlib.nullcontext() if threshold is None else _blas_threshold(threshold)
        t = time.perf_counter()
        with ctx:
            pq.train(xb)
        km[f"{name}_s"] = round(time.perf_counter() - t, 2)
    km["ratio_default_over_blas"] = round(km["default_s"] / max(km["blas_from_20_s"], 1e-9), 1)
    out["kmeans_blas"] = km
    return out


def _file_bytes(index) -> int:
    import faiss

    return int(faiss.serialize_index(index).size)


def _timed_searches(search, xq: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """One query per call, as a shard actor answers: (ids (nq, 10), ms per query)."""
    search(xq[:1])  # warm
    got, times = [], []
    for q in xq:
        t = time.perf_counter()
        got.append(search(q[None]))
        times.append(1000 * (time.perf_counter() - t))
    return np.vstack(got), times


def _recall_at_10(got: np.ndarray, truth: np.ndarray) -> float:
    return round(
        float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, truth, strict=True)])), 3
    )


def recall(n: int, nq: int, nlist: int, probes=(8, 32, 64), pq_ms=PQ_MS, data=None) -> dict:
    """IVF over float16 codes, 8-bit codes and PQ codes (with and without re-ranking by the
    float16 vectors), recall@10 against exact search, bytes a window, build s, ms a query.
    Every index shares one coarse quantizer (the same cells), trained once. `data`: (windows
    (n, d) float16, queries (nq, d)) instead of `clustered_unit_vectors`."""
    import faiss

    from earshot.index.ann import padded_dim
    from earshot.testing.vectors import clustered_unit_vectors

    # One thread throughout: OpenMP's spinning threads crawl on a shared 2-core machine, and
    # a shard actor answers on one thread.
    faiss.omp_set_num_threads(1)
    if data is None:  # float16, as shards store them: the re-rank source
        data = (clustered_unit_vectors(n, seed=3), clustered_unit_vectors(nq, seed=3, stream=1))
    x16 = np.asarray(data[0], dtype=np.float16)
    xb = x16.astype(np.float32)
    xq = np.asarray(data[1], dtype=np.float32)
    dim, pdim = xb.shape[1], padded_dim(xb.shape[1])
    exact = faiss.IndexFlatIP(dim)
    exact.add(xb)
    t = time.perf_counter()
    _, truth = exact.search(xq, 10)
    out: dict = {"windows": n, "queries": nq, "nlist": nlist, "dim": dim, "indexes": {}}
    out["exact_batch_ms"] = round(1000 * (time.perf_counter() - t) / nq, 3)
    _, exact_times = _timed_searches(lambda q, ix=exact: ix.search(q, 10)[1], xq[: min(nq, 100)])
    out["exact_single_ms"] = _ms(exact_times)
    del exact
    train = xb[np.random.default_rng(0).choice(n, min(n, 40 * nlist), replace=False)]
    t = time.perf_counter()
    coarse = faiss.index_factory(dim, f"IVF{nlist},Flat", faiss.METRIC_INNER_PRODUCT)
    with _blas_threshold(20):
        coarse.train(train)
    centroids = faiss.extract_index_ivf(coarse).quantizer.reconstruct_n(0, nlist)
    out["coarse_train_s"] = round(time.perf_counter() - t, 1)
    print(f"recall {n}: {nlist} cells in {out['coarse_train_s']} s", file=sys.stderr, flush=True)
    variants = [  # name, codes, padded like index/ann (SQ's SIMD code needs a multiple of 16)
        ("ivf_sqfp16", "SQfp16", True),
        ("ivf_sq8", "SQ8", True),
    ] + [(f"ivf_pq{m}", f"PQ{m}x8np", False) for m in pq_ms]
    for name, codes, pad in variants:
        d = pdim if pad else dim
        pad_to = (lambda a, d=d: np.pad(a, ((0, 0), (0, d - dim)))) if pad else (lambda a: a)
        quantizer = faiss.IndexFlatIP(d)
        quantizer.add(pad_to(centroids))
        index = faiss.index_factory(d, f"IVF{nlist},{codes}", faiss.METRIC_INNER_PRODUCT)
        ivf = faiss.extract_index_ivf(index)
        ivf.quantizer = quantizer  # the shared cells: train() sees them trained and keeps them
        ivf.own_fields = False
        # PQ codes a window's residual from its cell's centroid (FAISS's default, and what
        # makes 5-d sub-vectors work); float16 / 8-bit codes the vector itself, as index/ann.
        ivf.by_residual = codes.startswith("PQ")
        t = time.perf_counter()
        with _blas_threshold(20):  # pq_training: BLAS for every k-means batch
            index.train(pad_to(train))
        train_s = time.perf_counter() - t
        for at in range(0, n, 65_536):
            index.add(pad_to(xb[at : at + 65_536]))
        build_s = time.perf_counter() - t
        print(f"recall {n}: {name} built in {build_s:.1f} s", file=sys.stderr, flush=True)
        entry = {
            "factory": f"IVF{nlist},{codes}",
            "dim": d,
            "code_bytes_per_window": int(ivf.code_size),
            "file_bytes_per_window": round(_file_bytes(index) / n, 1),
            "train_s": round(train_s, 1),
            "build_s_after_cells": round(build_s, 1),
            "runs": [],
        }
        queries = pad_to(xq)
        for nprobe in probes:
            ivf.nprobe = nprobe
            got, times = _timed_searches(lambda q, ix=index: ix.search(q, 10)[1], queries)
            row = {"nprobe": nprobe, "recall_at_10": _recall_at_10(got, truth), **_ms(times)}
            if codes.startswith("PQ"):
                for r in RERANK_FACTORS:
                    got, times = _timed_searches(
                        lambda q, r=r, ix=index: _reranked(ix, x16, q, 10, r), queries
                    )
                    row[f"rerank_{r}k"] = {"recall_at_10": _recall_at_10(got, truth), **_ms(times)}
            entry["runs"].append(row)
            print(f"recall {n}: {name} {row}", file=sys.stderr, flush=True)
        out["indexes"][name] = entry
        del index
    return out


def real_captions() -> tuple[np.ndarray, str] | None:
    """Every Clotho caption (development, validation, evaluation) embedded as
    `bench_search.py`'s calibration does (all-MiniLM-L6-v2, a seeded random 384 → 300
    projection standing in for the trained head, normalised); None without the data."""
    sys.path.insert(0, str(HERE))
    from bench_search import CAPTIONS, text_model

    files = [CAPTIONS.with_name(f"{part}.csv") for part in ("development", "validation")]
    files.append(CAPTIONS)
    if not all(f.is_file() for f in files):
        return None
    import csv

    captions = []
    for f in files:
        with open(f, newline="") as fh:
            captions += [row["raw_text"] for row in csv.DictReader(fh)]
    encoder, projection = text_model()
    x = encoder.encode(captions, batch_size=256).numpy() @ projection
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = np.random.default_rng(5).permutation(len(x))  # queries: 500 captions held out
    return x[rows].astype(np.float16), f"{len(captions)} Clotho captions"


def recall_real(probes=(8, 32), pq_ms=(60, 75)) -> dict:
    """The same indexes on real caption embeddings and on as many synthetic vectors, side by
    side: whether the synthetic set flatters PQ."""
    from earshot.testing.vectors import clustered_unit_vectors

    got = real_captions()
    if got is None:
        return {"skipped": "no Clotho captions in ../shared/data"}
    real, what = got
    n = len(real) - 500
    nlist = 4 * int(np.sqrt(n))
    synthetic = clustered_unit_vectors(len(real), seed=3)
    out = {"source": what}
    for name, x in (("clotho_captions", real), ("synthetic", synthetic)):
        print(f"recall_real: {name}", file=sys.stderr, flush=True)
        out[name] = recall(n, 500, nlist, probes, pq_ms, data=(x[500:], x[:500]))
    return out


def _ms(times: list[float]) -> dict:
    return {
        "ms_p50": round(statistics.median(times), 3),
        "ms_p90": round(float(np.percentile(times, 90)), 3),
    }


def _reranked(index, vectors16: np.ndarray, q: np.ndarray, k: int, factor: int) -> np.ndarray:
    """Top `factor`·k of `index`, scored again by their float16 vectors: the best k ids."""
    _, cand = index.search(q, factor * k)
    cand = cand[0][cand[0] >= 0]
    scores = vectors16[cand].astype(np.float32) @ q[0]
    best = np.argsort(-scores)[:k]
    return cand[best][None]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--files", type=int, default=48)
    ap.add_argument("--files-per-shard", type=int, default=8)
    ap.add_argument("--nodes", type=int, default=2)
    ap.add_argument("--windows", type=int, default=200_000)
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--queries", type=int, default=50)
    ap.add_argument(
        "--recall-windows", default="50000", help="sizes for the recall part, comma-separated"
    )
    ap.add_argument("--recall-queries", type=int, default=500)
    ap.add_argument("--parts", default="index,search,recall")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    parts = set(args.parts.split(","))
    if args.quick:
        args.files, args.files_per_shard, args.windows, args.shards, args.queries = 4, 2, 2400, 4, 5
        args.recall_windows, args.recall_queries = "5000", 20
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result: dict = {
        "machine": {"cpus": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2)},
        "model": "tiny cnn14 (random)",
    }
    if "recall" in parts:
        sizes = [int(s) for s in args.recall_windows.split(",") if s]
        result["recall"] = {"sizes": {}}
        for n in sizes:
            nlist = 64 if args.quick else 4 * int(np.sqrt(n))
            result["recall"]["sizes"][str(n)] = recall(
                n,
                args.recall_queries,
                nlist,
                probes=(8, 32) if args.quick else (8, 32, 64),
                pq_ms=(30,) if args.quick else PQ_MS,
            )
        from earshot.testing.vectors import clustered_unit_vectors

        xb = clustered_unit_vectors(2000 if args.quick else 10_000, seed=3).astype(np.float32)
        result["recall"]["pq_training"] = pq_training(
            xb, m_kmeans=10 if args.quick else 60, m_polysemous=1 if args.quick else 4
        )
        result["machine"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    if "recall_real" in parts:
        result["recall_real"] = recall_real()
    if not parts & {"index", "search"}:
        print(json.dumps(result, indent=2))
        return 0
    from earshot.model.io import load_model, save_model
    from earshot.testing.models import tiny_model
    from earshot.testing.scale import RayCluster

    base = Path(tempfile.mkdtemp(prefix="earshot-bench-scale-"))
    model_dir = save_model(tiny_model("cnn14"), base / "model")
    model = load_model(model_dir, with_text=False)
    root = base / "clips"
    write_clips(root, args.files)
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

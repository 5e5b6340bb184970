"""Speed, memory and recall of earshot's ANN index (`earshot.index.ann`); one query end to end.

Prints one JSON object on stdout (progress on stderr). On synthetic 300-d unit vectors
(`earshot.testing.vectors.clustered_unit_vectors`), for each of `--sizes` (default 10k, 100k,
1M):
  - `sizes.N.exact` and `sizes.N.ivf`, side by side: build seconds; bytes per segment, both as
    the saved file's size and as the RSS a fresh process gains by loading it; single-query
    latency p50/p99 (one query per `AnnIndex.search` call, k=10, `--queries` queries); ivf's
    recall@10 against exact. `chosen` names the kind `ann.choose_params(N)` picks.
  - `sweep.N` (at `--sweep-sizes`, default 100k and 1M): IVF settings (quantizer × nlist ×
    nprobe), each with build time, bytes per segment, recall@10 and latency. `fastest` is the
    lowest p50 among settings with recall@10 ≥ 0.98 and ≤ 800 bytes per segment;
    `sweep.chosen` is the one setting with recall@10 ≥ 0.99 (the target plus `RECALL_MARGIN`)
    at every swept size and the lowest worst p50, latencies within 0.1 ms of it counting as a
    tie that the quickest build wins: ann's IVF_NLIST / IVF_NPROBE.
  - `exact_kinds` (at 100k or the nearest size): IndexFlatIP (float32) against float16 codes at
    300-d and zero-padded to 304-d: why the exact kind is what it is.
  - `threshold`: exact p50 against n (prefixes of the largest set), and ann's IVF at the same
    n; `ann.EXACT_MAX` is the largest n whose exact p50 stays within `THRESHOLD_BUDGET_MS`.
  - `filtered`: search restricted by `allowed_ids` (random subsets) at the largest size: recall
    against exact over the same subset, and latency.
  - `end_to_end`: the real text encoder (all-MiniLM-L6-v2, offline) + a random 384 → 300
    projection standing in for the trained head + normalise + search of the largest chosen
    index, one real Clotho caption at a time.
  - `calibration`: the recall-against-nprobe curve of real caption embeddings (Clotho
    evaluation captions, same projection) next to synthetic vectors of the same count, the
    evidence that the synthetic set is not easier than real data.
`sweep`, `exact_kinds`, `threshold` and `calibration` are measured by `search_sweep.py`, beside
this script.
A full run takes about 8 minutes on 2 cores; `--quick` about 20 s.
Timings depend on what else runs: `env.load_avg_1m` says how busy the machine was.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from earshot.testing.vectors import clustered_unit_vectors
from search_sweep import (
    DIM,
    TARGETS,
    K,
    calibration,
    eligible,
    exact_kinds,
    latency,
    log,
    percentiles,
    pick_common,
    recall,
    sweep,
    threshold,
    timed_build,
)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CAPTIONS = SHARED / "clotho-captions" / "evaluation.csv"


# --- exact and IVF at each size, filtered search ------------------------------------------


_RSS_CHILD = """
import json, os, sys
from earshot.index.ann import load
def rss():
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
before = rss()
ann = load(sys.argv[1])
print(json.dumps({"rss_delta": rss() - before, "count": ann.count}))
"""


def memory(ann, workdir: Path) -> dict:
    """Bytes per segment: the saved file, and the RSS a fresh process gains by loading it."""
    path = workdir / f"{ann.params.kind}.ann"
    ann.save(path)
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(path)], capture_output=True, text=True
    )
    child = json.loads(out.stdout) if out.returncode == 0 else {"rss_delta": None}
    file_size = path.stat().st_size
    path.unlink()
    n = max(1, ann.count)
    rss = child["rss_delta"]
    return {
        "file_bytes_per_segment": round(file_size / n, 1),
        "rss_bytes_per_segment": None if rss is None else round(rss / n, 1),
        "rss_delta_mb": None if rss is None else round(rss / 2**20, 1),
    }


def measure_size(n, vectors, queries, args, workdir) -> tuple[dict, dict]:
    """Exact and IVF side by side at one size; returns the report and the built indexes."""
    from earshot.index import ann

    ids = np.arange(1, n + 1, dtype=np.int64)
    lat_queries = queries[: args.queries]
    exact, exact_s = timed_build(ids, vectors, ann.AnnParams("exact"))
    log(f"{n}: exact built in {exact_s} s; timing {len(lat_queries)} single queries")
    truth = exact.search(queries, K)[1]
    report = {"chosen": ann.choose_params(n).kind}
    report["exact"] = {"build_s": exact_s, **memory(exact, workdir)}
    report["exact"].update(latency(lambda q: exact.search(q, K), lat_queries))
    ivf_params = ivf_params_for(n)
    ivf, ivf_s = timed_build(ids, vectors, ivf_params)
    log(f"{n}: ivf {ivf_params} built in {ivf_s} s")
    report["ivf"] = {"params": vars(ivf_params), "build_s": ivf_s, **memory(ivf, workdir)}
    report["ivf"].update(latency(lambda q: ivf.search(q, K), lat_queries))
    report["ivf"]["recall_at_10"] = recall(ivf.search(queries, K)[1], truth)
    chosen = report[report["chosen"]]
    report["meets_targets"] = {
        "p50": chosen["p50_ms"] <= TARGETS["p50_ms"],
        "p99": chosen["p99_ms"] <= TARGETS["p99_ms"],
        "recall": chosen.get("recall_at_10", 1.0) >= TARGETS["recall_at_10"],
        "memory": (chosen["rss_bytes_per_segment"] or np.inf) <= TARGETS["bytes_per_segment"],
    }
    return report, {"exact": exact, "ivf": ivf, "truth": truth}


def ivf_params_for(n: int):
    """ann's IVF settings, with cells scaled down where n is too small to train them."""
    from earshot.index import ann

    nlist = ann.IVF_NLIST
    while nlist > 16 and n < 39 * nlist:
        nlist //= 2
    return ann.AnnParams("ivf", nlist=nlist, nprobe=min(ann.IVF_NPROBE, nlist))


def filtered(built: dict, queries: np.ndarray, n: int) -> dict:
    rng = np.random.default_rng(7)
    out = {"unfiltered_ivf": latency(lambda q: built["ivf"].search(q, K), queries[:100])}
    for fraction in (0.5, 0.1, 0.01, 0.001):
        allowed = np.sort(rng.choice(np.arange(1, n + 1), max(K, int(n * fraction)), replace=False))
        truth = built["exact"].search(queries[:200], K, allowed)[1]
        found = built["ivf"].search(queries[:200], K, allowed)[1]
        row = {"allowed": len(allowed), "ivf_recall_at_10": recall(found, truth)}
        row["all_allowed"] = bool(np.isin(found[found >= 0], allowed).all())
        row["ivf"] = latency(lambda q, a=allowed: built["ivf"].search(q, K, a), queries[:100])
        row["exact"] = latency(lambda q, a=allowed: built["exact"].search(q, K, a), queries[:100])
        out[str(fraction)] = row
    return out


# --- real text ----------------------------------------------------------------------------------


def read_captions(limit: int | None = None) -> list[str] | None:
    if not CAPTIONS.is_file():
        return None
    with open(CAPTIONS, newline="") as f:
        captions = [row["raw_text"] for row in csv.DictReader(f)]
    return captions[:limit] if limit else captions


def text_model():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    from earshot.encoders.text import load_text_encoder

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    encoder = load_text_encoder()
    projection = np.random.default_rng(0).standard_normal((encoder.dim, DIM)).astype(np.float32)
    return encoder, projection / np.sqrt(DIM)


def end_to_end(index, captions: list[str], encoder, projection) -> dict:
    """encode(1 caption) + project + normalise + search, one caption at a time."""
    encode_ms, total_ms = [], []
    for i, caption in enumerate(captions):
        start = time.perf_counter()
        v = encoder.encode([caption]).numpy() @ projection  # (1, 300)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
        encoded = time.perf_counter()
        index.search(v, K)
        if i >= 10:  # warm-up
            encode_ms.append((encoded - start) * 1e3)
            total_ms.append((time.perf_counter() - start) * 1e3)
    return {
        "index": repr(index),
        "queries": len(total_ms),
        "total": percentiles(total_ms),
        "encode": percentiles(encode_ms),
    }


# --- main -------------------------------------------------------------------------------------


def env_info() -> dict:
    import faiss

    from earshot.index import ann

    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")), "")
    return {
        "faiss": faiss.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": len(os.sched_getaffinity(0)),
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "ann": {
            "EXACT_MAX": ann.EXACT_MAX,
            "IVF_NLIST": ann.IVF_NLIST,
            "IVF_NPROBE": ann.IVF_NPROBE,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--sweep-sizes", default="100000,1000000", help="'' for none")
    parser.add_argument("--queries", type=int, default=1000, help="queries per measurement")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test")
    parser.add_argument("--no-text", action="store_true", help="skip end_to_end and calibration")
    parser.add_argument("--out", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.sweep_sizes, args.queries = "2000,5000", "5000", min(args.queries, 50)
    sizes = sorted(int(s) for s in args.sizes.split(",") if s)
    sweep_sizes = {int(s) for s in args.sweep_sizes.split(",") if s}
    nq = max(args.queries, 200)
    result: dict = {"env": env_info(), "targets": TARGETS, "sizes": {}, "sweep": {}}
    queries = clustered_unit_vectors(nq, stream=1).astype(np.float32)
    largest = None
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            log(f"{n}: generating vectors")
            vectors = clustered_unit_vectors(n)
            report, built = measure_size(n, vectors, queries, args, Path(tmp))
            result["sizes"][str(n)] = report
            if n in sweep_sizes:
                nlists = [256, 512, 1024, 2048] if n < 500_000 else [1024, 2048, 4096]
                if args.quick:
                    nlists = [32, 64]
                rows = sweep(n, vectors, queries, built["truth"], nlists, queries[:200])
                fastest = min(
                    (r for r in rows if eligible(r)), key=lambda r: r["p50_ms"], default=None
                )
                result["sweep"][str(n)] = {"settings": rows, "fastest": fastest}
            if n == min(sizes, key=lambda s: abs(s - 100_000)):
                log(f"{n}: exact kinds")
                result["exact_kinds"] = exact_kinds(vectors, queries)
            largest = (n, vectors, built)
        n, vectors, built = largest
        grid = [g for g in (10_000, 25_000, 50_000, 100_000, 200_000, 400_000) if g <= n]
        log("threshold")
        result["threshold"] = threshold(vectors, queries, grid or [n])
        log(f"{n}: filtered search")
        result["filtered"] = filtered(built, queries, n)
        del vectors
    sweeps = {n: v["settings"] for n, v in result["sweep"].items()}
    result["sweep"]["chosen"] = pick_common(sweeps)
    captions = None if args.no_text else read_captions()
    if captions is None:
        reason = "--no-text" if args.no_text else f"no captions at {CAPTIONS}"
        result["end_to_end"] = result["calibration"] = {"skipped": reason}
        log(f"end to end skipped: {reason}")
    else:
        log("end to end: loading the text encoder")
        encoder, projection = text_model()
        chosen = built[result["sizes"][str(n)]["chosen"]]
        result["end_to_end"] = end_to_end(chosen, captions[: max(nq, 50)], encoder, projection)
        log("calibration: embedding captions")
        result["calibration"] = calibration(
            captions[:2000] if args.quick else captions, encoder, projection
        )
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

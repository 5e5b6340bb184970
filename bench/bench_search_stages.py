"""What each stage of `Searcher.search_vector` costs, measured side by side on one catalogue.

Prints one JSON object on stdout (progress on stderr). A real catalogue (`Catalogue.put_file`
through `earshot.testing.vectors.put_synthetic_files`: `--windows` synthetic 300-d windows,
10 a file) searched in-process by `Searcher.search_vector(q, 10)` in variants that switch
stages off, on one Searcher each over the same catalogue and ANN file:
  - `full`: what earshot runs (confidence, duplicate grouping, spans);
  - `full_stats_over_sample`: full, with the query's score statistics computed as before
    `confidence.SampleMoments` (`score_stats`: the query against all 4096 sample windows);
  - `no_confidence`: no rating of hits (`_rate` returns them as they are) and no score
    statistics of the query over the window sample (`_query_stats`: the sample matmul);
  - `no_grouping`: no content-hash look-ups (`_one_per_content`, `_distinct`) and no copies
    read (`paths_by_hash`); the page's sample rate / channels are still read;
  - `no_spans`: each page hit keeps its best window (`_with_spans` reads no windows);
  - `bare`: all three off: the ANN, the segment rows, tags and metadata of the page only,
    close to the search before these stages existed.
Queries run in `--rounds` interleaved rounds (each round every variant answers the same block
of queries, the variants' order rotating), so machine load falls on all of them alike. Per
variant: p50 / p90 ms of wall time, p50 of CPU time (`time.process_time`, every thread of
this process: what the search costs whatever else runs), `ratios` (wall p50 of full over
each variant) and `cpu_ratios` (the same of CPU time). `profile_p50_ms`: p50
ms of each call's time per search inside full searches, timed by wrapping them (`index.search`
is the ANN; `_finish` holds the grouping of the page and `_with_spans`).
`same_files_as_full`: whether each variant finds the same files in the same order (it
should: the synthetic files are all distinct, so grouping merges nothing).
`--quick`: 5,000 windows, for a smoke run.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

VARIANTS = ("full", "full_stats_over_sample", "no_confidence", "no_grouping", "no_spans", "bare")
OFF = {
    "full": (),
    "full_stats_over_sample": ("moments",),
    "no_confidence": ("confidence",),
    "no_grouping": ("grouping",),
    "no_spans": ("spans",),
    "bare": ("confidence", "grouping", "spans"),
}
PROFILED = (  # (object, method) timed inside full searches
    ("searcher", "ann"),
    ("index", "search"),
    ("searcher", "sample"),
    ("searcher", "_rate"),
    ("searcher", "_finish"),
    ("searcher", "_query_stats"),
    ("searcher", "_one_per_content"),
    ("searcher", "_distinct"),
    ("searcher", "_with_spans"),
    ("cat", "segments"),
    ("cat", "segment_tags"),
    ("cat", "file_facts"),
    ("cat", "paths_by_hash"),
    ("cat", "files_windows"),
    ("cat", "file_meta"),
)


def log(message: str) -> None:
    print(f"[bench_search_stages] {message}", file=sys.stderr, flush=True)


def searcher_without(cat, model, off: tuple[str, ...]):
    """A Searcher over `cat` with the named stages switched off (instance attributes only)."""
    from dataclasses import replace

    from earshot.confidence import score_stats
    from earshot.search import Searcher

    s = Searcher(cat, model)
    if "moments" in off:  # before SampleMoments: the query scored against all 4096 windows
        s._query_stats = lambda query: score_stats(query, s.sample())
    if "confidence" in off:
        s._rate = lambda hits, query, kind: hits
        s._query_stats = lambda query: (0.0, 1.0)
    if "grouping" in off:
        s._one_per_content = lambda ranked, rows: ranked
        s._distinct = lambda best: len(best)
        real_cat = s.cat

        class _NoCopies:  # the catalogue, less the duplicate look-up
            def __getattr__(self, name):
                return getattr(real_cat, name)

            def paths_by_hash(self, hashes):
                return {}

        s.cat = _NoCopies()
    if "spans" in off:
        s._with_spans = lambda hits, query, n, kind, negative: [
            replace(h, spans=((h.start_s, h.end_s, h.shown_score),), more_spans=0) for h in hits
        ]
    return s


def build_catalogue(path: Path, windows: int):
    from earshot.index.decoding import read_record
    from earshot.index.scan import ScanEntry
    from earshot.index.store import Catalogue
    from earshot.model.io import model_id
    from earshot.testing.audio import write_tone
    from earshot.testing.models import tiny_model
    from earshot.testing.vectors import clustered_unit_vectors, put_synthetic_files

    model = tiny_model(joint_dim=300)
    template = write_tone(path.parent / "t.wav", 0.05, 8000)
    st = template.stat()
    record = read_record(ScanEntry(str(template), st.st_size, st.st_mtime_ns), "h")
    vectors = clustered_unit_vectors(windows, seed=0).astype(np.float32)
    cat = Catalogue(path)
    cat.bind_model(model_id(model), 300, {})
    t = time.perf_counter()
    put_synthetic_files(cat, record, vectors, 10, lambda n: f"/{'a' if n % 10 else 'b'}/f{n}.wav")
    return cat, model, vectors, round(time.perf_counter() - t, 1)


def queries_near(vectors: np.ndarray, n: int) -> np.ndarray:
    rng = np.random.default_rng(1)
    qs = vectors[rng.integers(0, len(vectors), n)]
    qs = qs + 0.05 * rng.standard_normal(qs.shape).astype(np.float32)
    return qs / np.linalg.norm(qs, axis=1, keepdims=True)


def pct(ms: list[float], cpu_ms: list[float]) -> dict:
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p90_ms": round(float(np.percentile(ms, 90)), 3),
        "cpu_p50_ms": round(float(np.percentile(cpu_ms, 50)), 3),
        "n": len(ms),
    }


def interleaved(searchers: dict, qs: np.ndarray, rounds: int) -> dict[str, tuple[list, list]]:
    """name → (wall ms, CPU ms of this process, all its threads) per query."""
    times: dict[str, tuple[list, list]] = {name: ([], []) for name in searchers}
    names = list(searchers)
    for r, block in enumerate(np.array_split(qs, rounds)):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            s = searchers[name]
            for q in block:
                c0, t0 = time.process_time(), time.perf_counter()
                s.search_vector(q, 10)
                times[name][0].append((time.perf_counter() - t0) * 1000)
                times[name][1].append((time.process_time() - c0) * 1000)
    return times


def profile(searcher, qs: np.ndarray) -> dict:
    """p50 ms per search of each stage's calls (summed within a search) over full searches."""
    spent: dict[str, float] = {}
    targets = {"searcher": searcher, "cat": searcher.cat, "index": searcher.ann()}
    for owner, name in PROFILED:
        obj = targets[owner]
        real = getattr(obj, name)

        def timed(*a, _real=real, _key=f"{owner}.{name}", **kw):
            t0 = time.perf_counter()
            try:
                return _real(*a, **kw)
            finally:
                spent[_key] = spent.get(_key, 0.0) + (time.perf_counter() - t0) * 1000

        setattr(obj, name, timed)
    per: dict[str, list[float]] = {f"{o}.{n}": [] for o, n in PROFILED}
    total = []
    try:
        for q in qs:
            spent.clear()
            t0 = time.perf_counter()
            searcher.search_vector(q, 10)
            total.append((time.perf_counter() - t0) * 1000)
            for key in per:
                per[key].append(spent.get(key, 0.0))
    finally:
        for owner, name in PROFILED:
            delattr(targets[owner], name)  # the instance attribute goes: the method is back
    out = {key: round(float(np.percentile(v, 50)), 3) for key, v in per.items()}
    out["search_vector"] = round(float(np.percentile(total, 50)), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--windows", type=int, default=50_000)
    ap.add_argument("--queries", type=int, default=300, help="per variant")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args(argv)
    if args.quick:
        args.windows, args.queries, args.rounds = 5000, 40, 4
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import faiss

    result: dict = {
        "env": {
            "cores": len(os.sched_getaffinity(0)),
            "faiss": faiss.__version__,
            "load_avg_1m": round(os.getloadavg()[0], 2),
            "date": time.strftime("%Y-%m-%d %H:%M"),
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        log(f"filling a catalogue of {args.windows} windows")
        cat, model, vectors, fill_s = build_catalogue(Path(tmp) / "c.sqlite", args.windows)
        with cat:
            searchers = {name: searcher_without(cat, model, OFF[name]) for name in VARIANTS}
            for s in searchers.values():
                s.search_vector(vectors[0], 10)  # loads (the first builds) the ANN file
            result["catalogue"] = {
                "windows": args.windows,
                "files": args.windows // 10,
                "fill_s": fill_s,
                "ann": repr(searchers["full"].ann()),
            }
            qs = queries_near(vectors, args.queries)
            warm = queries_near(vectors[::-1], 20)
            interleaved(searchers, warm, 1)
            log(f"{len(VARIANTS)} variants × {args.queries} queries in {args.rounds} rounds")
            times = interleaved(searchers, qs, args.rounds)
            result["variants"] = {name: pct(*t) for name, t in times.items()}
            full = result["variants"]["full"]["p50_ms"]
            full_cpu = result["variants"]["full"]["cpu_p50_ms"]
            result["ratios"] = {
                f"full_over_{name}": round(full / result["variants"][name]["p50_ms"], 2)
                for name in VARIANTS
                if name != "full"
            }
            result["cpu_ratios"] = {
                f"full_over_{name}": round(full_cpu / result["variants"][name]["cpu_p50_ms"], 2)
                for name in VARIANTS
                if name != "full"
            }

            # Each variant does less work, not other work: the same files in the same order.
            def paths(s, q):
                return [h.path for h in s.search_vector(q, 10)]

            result["same_files_as_full"] = {
                name: all(paths(s, q) == paths(searchers["full"], q) for q in qs[:20])
                for name, s in searchers.items()
            }
            log("profile of full searches")
            result["profile_p50_ms"] = profile(searchers["full"], qs[: min(len(qs), 200)])
    result["env"]["load_avg_1m_after"] = round(os.getloadavg()[0], 2)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
